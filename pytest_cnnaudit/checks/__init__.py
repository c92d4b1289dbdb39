"""Checks: pure functions from measured statistics and limits to a :class:`Verdict`.

One module per check. The helpers here decide whether a layer can be judged at all.
"""

from __future__ import annotations

from ..backends.base import RECTIFIERS, SATURATING
from ..result import LayerResult


def unmeasurable_reason(layer: LayerResult, zero_eps: float) -> str | None:
    """Why zero-based checks cannot judge ``layer``, or None when they can.

    Only rectifiers are judged (``backends.base.RECTIFIERS``); ``zero_eps`` moves their
    threshold but makes no other activation measurable.
    """
    kind = layer.activation
    if kind is None:
        return "no activation follows this conv (a linear projection), so it has no zeros to count"
    if kind in SATURATING:
        return (
            f"its activation ({kind}) saturates and has no inactive region: no output value means a unit is off, "
            "so sparsity and dead filters are not defined for it"
        )
    if kind not in RECTIFIERS:
        return f"its activation ({kind}) is not a rectifier: an output <= 0 does not mean the unit is off"
    if layer.stats is None:
        return "its activation was not measured"
    return None
