"""Activation sparsity: each layer's fraction of activation values <= 0 lies in [min, max].

Every rectifier is inactive exactly where its output is <= 0 (for ReLU: where it is 0), so
the fraction of such values is the layer's sparsity whatever its activation. An all-zero
map (sparsity near 1) or one that never switches off (near 0) is a symptom of a broken layer.
"""

from __future__ import annotations

from ..backends.base import LayerInfo
from ..config.checks import FamilySparsity, SparsityCheck
from ..config.families import DEFAULT_SPARSITY_BOUNDS, SPARSITY_BOUNDS, first_set
from ..document import SparsityFigures, Verdict
from ..engine.check import AuditContext, CheckResult, ModelPlan, Need
from ..engine.stats import ChannelStats
from .layers import judge_layers, layer_items

CHECK = "sparsity"


def sparsity_bounds(limits: SparsityCheck, activation: str | None) -> tuple[float, float]:
    """[min, max] for a layer of this activation: the family's configured bounds, the check's, then the
    family's default (:mod:`pytest_cnnaudit.config.families`)."""
    family = limits.by_activation.get(activation or "", FamilySparsity())
    default_min, default_max = SPARSITY_BOUNDS.get(activation or "", DEFAULT_SPARSITY_BOUNDS)
    low = first_set(family.min, limits.min, default_min)
    high = first_set(family.max, limits.max, default_max)
    return float(low), float(high)  # type: ignore[arg-type]


def judge_sparsity(layer: LayerInfo, stats: ChannelStats, model: ModelPlan) -> Verdict:
    """Fail when the layer's sparsity leaves [min, max]."""
    low, high = sparsity_bounds(model.checks_for(layer.id).sparsity, layer.activation)
    sparsity = stats.sparsity
    figures = SparsityFigures(sparsity=sparsity, min=low, max=high, channels=layer.channels)
    where = f"{layer.channels} channels, {layer.op}+{layer.activation}"
    if sparsity < low:
        message = f"sparsity {sparsity:.3f} < min {low} ({where}): the activation map is almost never inactive"
        return Verdict(CHECK, layer.id, "failed", message, figures)
    if sparsity > high:
        message = f"sparsity {sparsity:.3f} > max {high} ({where}): the activation map is almost all inactive"
        return Verdict(CHECK, layer.id, "failed", message, figures)
    return Verdict(CHECK, layer.id, "passed", f"sparsity {sparsity:.3f} in [{low}, {high}]", figures)


class SparsityChecker:
    """``sparsity[<layer>]`` for every layer, and ``sparsity`` when no layer could be measured."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        return layer_items(model, CHECK)

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        return CheckResult(judge_layers(context, CHECK, judge_sparsity))
