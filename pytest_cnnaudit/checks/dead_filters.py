"""Dead filters: channels that are zero for every probe input and position."""

from __future__ import annotations

import math

from ..config import DeadFiltersCheck
from ..result import LayerResult, Verdict


def allowed_dead(limits: DeadFiltersCheck, channels: int) -> int:
    """``max_count`` when set, else ``max_fraction`` of the layer's channels (rounded down)."""
    if limits.max_count is not None:
        return limits.max_count
    return math.floor(limits.max_fraction * channels + 1e-9)


def format_channels(channels: tuple[int, ...], limit: int = 32) -> str:
    shown = ", ".join(map(str, channels[:limit]))
    return f"[{shown}{', ...' if len(channels) > limit else ''}]"


def check_dead_filters(layer: LayerResult, limits: DeadFiltersCheck) -> Verdict:
    """Fail when more channels are never active than allowed, naming them."""
    assert layer.stats is not None
    dead = layer.stats.dead_channels
    allowed = allowed_dead(limits, layer.channels)
    rule = f"max_count {limits.max_count}" if limits.max_count is not None else f"max_fraction {limits.max_fraction}"
    figures = {"dead_channels": list(dead), "dead_count": len(dead), "channels": layer.channels, "allowed": allowed}
    fraction = len(dead) / layer.channels if layer.channels else 0.0
    summary = f"{len(dead)} of {layer.channels} channels never active ({fraction:.1%})"
    if len(dead) > allowed:
        message = f"{summary} > {rule} (allowed {allowed}): channels {format_channels(dead)}"
        return Verdict("dead_filters", layer.id, "failed", message, figures)
    detail = f": channels {format_channels(dead)}" if dead else ""
    return Verdict("dead_filters", layer.id, "passed", f"{summary}, allowed {allowed}{detail}", figures)
