"""Dead filters: channels never active (output never > 0) for any probe image and position."""

from __future__ import annotations

import math

from ..backends.base import LayerInfo
from ..config.model import DeadFiltersCheck
from ..document import DeadFiltersFigures, Verdict
from ..engine.check import AuditContext, CheckResult, ModelPlan, Need
from ..engine.stats import ChannelStats
from .layers import format_channels, judge_layers, layer_items

CHECK = "dead_filters"


def allowed_dead(limits: DeadFiltersCheck, channels: int) -> int:
    """``max_count`` when set, else ``max_fraction`` of the layer's channels (rounded down)."""
    if limits.max_count is not None:
        return limits.max_count
    return math.floor(limits.max_fraction * channels + 1e-9)


def judge_dead_filters(layer: LayerInfo, stats: ChannelStats, model: ModelPlan) -> Verdict:
    """Fail when more channels are never active than allowed, naming them."""
    limits = model.checks_for(layer.id).dead_filters
    dead = stats.dead_channels
    allowed = allowed_dead(limits, layer.channels)
    rule = f"max_count {limits.max_count}" if limits.max_count is not None else f"max_fraction {limits.max_fraction}"
    figures = DeadFiltersFigures(dead_channels=dead, dead_count=len(dead), channels=layer.channels, allowed=allowed)
    fraction = len(dead) / layer.channels if layer.channels else 0.0
    summary = f"{len(dead)} of {layer.channels} channels never active ({fraction:.1%})"
    if len(dead) > allowed:
        message = f"{summary} > {rule} (allowed {allowed}): channels {format_channels(dead)}"
        return Verdict(CHECK, layer.id, "failed", message, figures)
    detail = f": channels {format_channels(dead)}" if dead else ""
    return Verdict(CHECK, layer.id, "passed", f"{summary}, allowed {allowed}{detail}", figures)


class DeadFiltersChecker:
    """``dead_filters[<layer>]`` for every layer, and ``dead_filters`` when no layer could be measured."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        return layer_items(model, CHECK)

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        return CheckResult(judge_layers(context, CHECK, judge_dead_filters))
