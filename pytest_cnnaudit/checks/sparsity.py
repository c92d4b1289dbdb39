"""Activation sparsity: each layer's fraction of activation values <= 0 lies in [min, max].

Every rectifier is inactive exactly where its output is <= 0 (for ReLU: where it is 0), so
the fraction of such values is the layer's sparsity whatever its activation. An all-zero
map (sparsity near 1) or one that never switches off (near 0) is a symptom of a broken layer.
"""

from __future__ import annotations

from ..backends.base import LayerInfo
from ..document import SparsityFigures, Verdict
from ..engine.check import AuditContext, CheckResult, ModelPlan, Need
from ..engine.stats import ChannelStats
from .layers import judge_layers, layer_items

CHECK = "sparsity"


def judge_sparsity(layer: LayerInfo, stats: ChannelStats, model: ModelPlan) -> Verdict:
    """Fail when the layer's sparsity leaves [min, max]."""
    limits = model.checks_for(layer.id).sparsity
    sparsity = stats.sparsity
    figures = SparsityFigures(sparsity=sparsity, min=limits.min, max=limits.max, channels=layer.channels)
    where = f"{layer.channels} channels, {layer.op}+{layer.activation}"
    if sparsity < limits.min:
        message = f"sparsity {sparsity:.3f} < min {limits.min} ({where}): the activation map is almost never inactive"
        return Verdict(CHECK, layer.id, "failed", message, figures)
    if sparsity > limits.max:
        message = f"sparsity {sparsity:.3f} > max {limits.max} ({where}): the activation map is almost all inactive"
        return Verdict(CHECK, layer.id, "failed", message, figures)
    return Verdict(CHECK, layer.id, "passed", f"sparsity {sparsity:.3f} in [{limits.min}, {limits.max}]", figures)


class SparsityChecker:
    """``sparsity[<layer>]`` for every layer, and ``sparsity`` when no layer could be measured."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        return layer_items(model, CHECK)

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        return CheckResult(judge_layers(context, CHECK, judge_sparsity))
