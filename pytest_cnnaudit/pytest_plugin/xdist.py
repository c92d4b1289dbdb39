"""pytest-xdist scheduling that keeps each model's items on one worker, so each model is measured once.

Used for ``-n N`` (xdist's ``load``) and ``--dist loadgroup``. Why not the ``xdist_group`` mark:
xdist implements groups by rewriting ``item._nodeid``, which pytest 9 no longer reads, so a marked
group is spread over workers there. Scheduling by model file does not depend on that, so the
items carry no ``xdist_group`` mark; other tests are grouped (or not) as xdist would.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xdist.scheduler import LoadGroupScheduling

from ..backends import MODEL_SUFFIXES


class ModelGroupScheduling(LoadGroupScheduling):
    """``loadgroup``, with every item of a model file in the model's own group; other items as xdist groups them."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if PurePosixPath(path).suffix.lower() in MODEL_SUFFIXES:
            return f"cnnaudit:{path}"
        return super()._split_scope(nodeid)
