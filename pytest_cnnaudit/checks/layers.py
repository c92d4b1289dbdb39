"""Which layers a check can judge, and the items of a per-layer check, shared by every check.

A layer can be judged when an activation follows its conv whose inactive region is exactly
"output <= 0" (every rectifier: ReLU, ReLU6, HardSwish, SiLU, GELU, Mish, ELU, LeakyReLU,
PReLU, ...). Saturating activations (Sigmoid, Tanh alone) and a conv with no activation after
it (a linear projection) cannot be; their items are skipped with the reason. When a check is
enabled and *no* layer of a model can be judged, the check gets one more item for the model as
a whole, which fails (nothing measured must never read as a pass) unless the config says
``allow_unmeasured: true`` for that check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..backends.base import RECTIFIERS, SATURATING, LayerInfo
from ..document import Verdict
from ..engine.check import AuditContext, ModelPlan
from ..engine.stats import ChannelStats


def unmeasurable_reason(layer: LayerInfo) -> str | None:
    """Why zero-based checks cannot judge ``layer`` (from the graph walk alone), or None when they can.

    Only rectifiers are judged (``backends.base.RECTIFIERS``); ``probe.zero_eps`` moves their
    threshold but makes no other activation measurable.
    """
    if layer.reason:
        return layer.reason
    kind = layer.activation
    if kind is None:
        return "no activation follows this conv (a linear projection), so it has no inactive region"
    if kind in SATURATING:
        return (
            f"its activation ({kind}) saturates and has no inactive region: no output value means a unit is off, "
            "so sparsity and dead filters are not defined for it"
        )
    if kind not in RECTIFIERS:
        return f"its activation ({kind}) is not a rectifier: an output <= 0 does not mean the unit is off"
    if layer.tensor is None:
        return "its activation was not found in the graph"
    return None


def format_channels(channels: Sequence[int], limit: int = 32) -> str:
    """``[1, 4, 7]``, cut after ``limit`` channels."""
    shown = ", ".join(map(str, channels[:limit]))
    return f"[{shown}{', ...' if len(channels) > limit else ''}]"


def layer_items(model: ModelPlan, check: str) -> list[str | None]:
    """Every layer whose ``check`` is enabled, plus the model item when none of them can be measured."""
    enabled = [layer for layer in model.layers if getattr(model.checks_for(layer.id), check).enabled]
    items: list[str | None] = [layer.id for layer in enabled]
    if nothing_measurable(model, enabled):
        items.append(None)
    return items


def nothing_measurable(model: ModelPlan, layers: Sequence[LayerInfo]) -> bool:
    """Layers the config does not skip exist, and none of them can be measured."""
    considered = [layer for layer in layers if model.skip_reason(layer.id) is None]
    return bool(considered) and all(unmeasurable_reason(layer) is not None for layer in considered)


def unmeasured_verdict(model: ModelPlan, check: str, allow: bool, what: str = "layer") -> Verdict:
    """The model item of a check that measured nothing: failed, or skipped under ``allow_unmeasured``."""
    reasons: dict[str, int] = {}
    for layer in model.layers:
        reason = unmeasurable_reason(layer)
        if reason is not None and model.skip_reason(layer.id) is None:
            reasons[reason] = reasons.get(reason, 0) + 1
    why = "; ".join(f"{count} layer(s): {reason}" for reason, count in reasons.items())
    message = f"no {what} of the model could be measured ({why})"
    if allow:
        return Verdict(check, None, "skipped", f"{message}; allowed by checks.{check}.allow_unmeasured")
    return Verdict(check, None, "failed", f"{message}; if that is expected, set checks.{check}.allow_unmeasured: true")


def layer_verdict_or_skip(model: ModelPlan, check: str, layer: LayerInfo, stats: ChannelStats | None) -> Verdict | None:
    """The skipped verdict of a layer the config skips or that was not measured; None when it can be judged."""
    skip = model.skip_reason(layer.id)
    if skip is not None:
        return Verdict(check, layer.id, "skipped", f"skipped by the config: {skip}")
    reason = unmeasurable_reason(layer)
    if reason is None and stats is None:
        reason = "its activation was not measured"
    if reason is not None:
        return Verdict(check, layer.id, "skipped", f"not measurable: {reason}")
    return None


#: Judges one measurable layer: (layer, its statistics, the plan) -> verdict.
LayerJudge = Callable[[LayerInfo, ChannelStats, ModelPlan], Verdict]


def judge_layers(context: AuditContext, check: str, judge: LayerJudge) -> list[Verdict]:
    """The verdicts of a per-layer check's planned items: skips with their reason, the model item when
    nothing could be measured, and ``judge`` for every measured layer."""
    model = context.plan
    verdicts = []
    for layer_id in layer_items(model, check):
        if layer_id is None:
            allow = getattr(model.checks_for(), check).allow_unmeasured
            verdicts.append(unmeasured_verdict(model, check, allow))
            continue
        layer = next(info for info in model.layers if info.id == layer_id)
        stats = context.stats.get(layer_id)
        skipped = layer_verdict_or_skip(model, check, layer, stats)
        verdicts.append(skipped if skipped is not None else judge(layer, stats, model))  # type: ignore[arg-type]
    return verdicts
