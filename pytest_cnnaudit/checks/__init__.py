"""Checks: pure functions from measured statistics and limits to a :class:`Verdict`.

One module per check. The helpers here decide whether a layer can be judged at all.
"""

from __future__ import annotations

from ..backends.base import ZERO_PRODUCING
from ..result import LayerResult


def unmeasurable_reason(layer: LayerResult, zero_eps: float) -> str | None:
    """Why zero-based checks cannot judge ``layer``, or None when they can."""
    if layer.activation is None:
        return "no activation follows this conv (a linear projection), so it has no zeros to count"
    if layer.activation not in ZERO_PRODUCING and zero_eps <= 0:
        return (
            f"its activation ({layer.activation}) has no true zeros; set probe.zero_eps > 0 to count near-zero values"
        )
    if layer.stats is None:
        return "its activation was not measured"
    return None
