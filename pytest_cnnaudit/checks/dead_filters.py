"""Dead filters: channels never active (output never > 0) for any probe image and position."""

from __future__ import annotations

import math

from ..backends.base import LayerInfo
from ..config.checks import DeadFiltersCheck, FamilyDeadFilters
from ..config.families import DEAD_FRACTION, DEFAULT_DEAD_FRACTION, first_set
from ..document import DeadFiltersFigures, Verdict
from ..engine.check import AuditContext, CheckResult, ModelPlan, Need
from ..engine.stats import ChannelStats
from .layers import format_channels, judge_layers, layer_items

CHECK = "dead_filters"


def dead_allowance(limits: DeadFiltersCheck, activation: str | None, channels: int) -> tuple[int, str]:
    """(dead channels allowed, the rule that says so) for a layer of this activation: a count when the
    family or the check sets one, else a fraction of the layer (the family's, the check's, the defaults)."""
    family = limits.by_activation.get(activation or "", FamilyDeadFilters())
    count = first_set(family.max_count, limits.max_count)
    if count is not None:
        return int(count), f"max_count {count}"
    default = DEAD_FRACTION.get(activation or "", DEFAULT_DEAD_FRACTION)
    fraction = float(first_set(family.max_fraction, limits.max_fraction, default))  # type: ignore[arg-type]
    return math.floor(fraction * channels + 1e-9), f"max_fraction {fraction}"


def judge_dead_filters(layer: LayerInfo, stats: ChannelStats, model: ModelPlan) -> Verdict:
    """Fail when more channels are never active than allowed, naming them."""
    limits = model.checks_for(layer.id).dead_filters
    positions = stats.count // max(1, stats.images)
    if positions < limits.min_positions:
        message = (
            f"not judged: {positions} value(s) per image and channel (a pooled map, e.g. a squeeze-and-excitation "
            f"conv) are too few to show a channel is dead; checks.dead_filters.min_positions: 1 judges it"
        )
        return Verdict(CHECK, layer.id, "skipped", message)
    dead = stats.dead_channels
    allowed, rule = dead_allowance(limits, layer.activation, layer.channels)
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
