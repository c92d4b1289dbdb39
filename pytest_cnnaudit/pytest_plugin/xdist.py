"""pytest-xdist scheduling that keeps each model's items on one worker.

Why not just the ``xdist_group`` mark: xdist implements groups by rewriting
``item._nodeid``, which pytest 9 no longer reads, so ``--dist loadgroup``
spreads a group over workers there and each worker would measure the model
again. Scheduling by model file does not depend on that.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xdist.scheduler import LoadGroupScheduling

from ..backends import MODEL_SUFFIXES


class ModelGroupScheduling(LoadGroupScheduling):
    """``loadgroup``, with every item of a model file in the model's own group."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if PurePosixPath(path).suffix.lower() in MODEL_SUFFIXES:
            return f"cnnaudit:{path}"
        return super()._split_scope(nodeid)
