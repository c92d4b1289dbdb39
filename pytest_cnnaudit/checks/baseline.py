"""Release gating against the last release's baseline: a layer regresses when it gained more dead channels
than ``baseline.dead_growth`` allows or its sparsity moved more than ``baseline.sparsity_tolerance``.

A model absent from the baseline (new, or renamed without ``models[].name``) gets one visible
``baseline`` item, and a layer absent from it a ``baseline[<layer>]`` item saying so: skipped by
default ("first release?"), failed under ``baseline: {require: true}``. Without a baseline the
check plans nothing.
"""

from __future__ import annotations

from ..backends.base import LayerInfo
from ..document import BaselineFigures, Verdict
from ..engine.check import AuditContext, CheckResult, ModelPlan, Need
from ..engine.stats import ChannelStats
from .layers import format_channels, layer_verdict_or_skip, unmeasurable_reason

CHECK = "baseline"


def _absent(model: ModelPlan, layer_id: str | None, what: str) -> Verdict:
    outcome = "failed" if model.config.baseline.require else "skipped"
    hint = "" if outcome == "failed" else " (first release? failed under baseline: {require: true})"
    return Verdict(CHECK, layer_id, outcome, f"{what} is not in the baseline{hint}")


def compare_layer(model: ModelPlan, layer: LayerInfo, stats: ChannelStats) -> Verdict:
    """Fail when the layer's dead channels grew or its sparsity moved beyond the tolerance."""
    assert model.baseline is not None
    old = model.baseline.models.get(model.spec.name or model.name, {}).get(layer.id)
    if old is None:
        return _absent(model, layer.id, f"layer {layer.id}")
    limits = model.config.baseline
    new_dead = stats.dead_channels
    grown = sorted(set(new_dead) - set(old.dead_channels))
    moved = abs(stats.sparsity - old.sparsity)
    figures = BaselineFigures(old.sparsity, stats.sparsity, old.dead_channels, new_dead)
    problems = []
    if len(grown) > limits.dead_growth:
        problems.append(
            f"dead channels grew from {len(old.dead_channels)} to {len(new_dead)} "
            f"(new: {format_channels(tuple(grown))}; allowed growth {limits.dead_growth})"
        )
    if moved > limits.sparsity_tolerance:
        problems.append(
            f"sparsity moved from {old.sparsity:.3f} to {stats.sparsity:.3f} "
            f"(|change| {moved:.3f} > tolerance {limits.sparsity_tolerance})"
        )
    if problems:
        return Verdict(CHECK, layer.id, "failed", "; ".join(problems), figures)
    return Verdict(CHECK, layer.id, "passed", "within the baseline", figures)


class BaselineChecker:
    """``baseline[<layer>]`` for every measurable layer, or ``baseline`` for a model the baseline lacks."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        if model.baseline is None:
            return []
        if (model.spec.name or model.name) not in model.baseline.models:
            return [None]
        return [layer.id for layer in model.layers if unmeasurable_reason(layer) is None]

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        model = context.plan
        verdicts = []
        for layer_id in self.plan(model):
            if layer_id is None:
                verdicts.append(_absent(model, None, f"model {model.spec.name or model.name}"))
                continue
            layer = next(info for info in model.layers if info.id == layer_id)
            stats = context.stats.get(layer_id)
            skipped = layer_verdict_or_skip(model, CHECK, layer, stats)
            verdicts.append(skipped if skipped is not None else compare_layer(model, layer, stats))  # type: ignore[arg-type]
        return CheckResult(verdicts)
