"""Dead filters: channels never active (output never > zero_eps) for any probe image and position.

Each dead channel carries its evidence (:mod:`.evidence`): ``provable`` (no input in the box
can activate it), ``revivable`` (a witness image does), or ``probe`` (dead on the probe set, no
witness found). ``checks.dead_filters.evidence`` says which count against the limits: every
dead channel (``probe``, the default) or only the provably dead ones (``provable``). The
verdict also says what the dead channels cost (:mod:`.cost`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...backends.base import LayerInfo
from ...config.checks import DeadFiltersCheck, FamilyDeadFilters
from ...config.families import DEAD_FRACTION, DEFAULT_DEAD_FRACTION, first_set
from ...document import DeadFiltersFigures, Verdict, WitnessFigures
from ...engine.check import AuditContext, CheckResult, ModelPlan, Need
from ...engine.stats import ChannelStats
from ..layers import judge_layers, layer_items, layer_verdict_or_skip
from .evidence import PROVABLE, LayerEvidence
from .findings import Findings, gather_findings

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


def format_evidence(channels: Sequence[int], evidence: Sequence[str], limit: int = 32) -> str:
    """``[3 (provable), 7 (revivable), 9 (probe)]``, cut after ``limit`` channels."""
    shown = ", ".join(f"{channel} ({kind})" for channel, kind in zip(channels[:limit], evidence))
    return f"[{shown}{', ...' if len(channels) > limit else ''}]"


def _figures(
    layer: LayerInfo, dead: tuple[int, ...], limits: DeadFiltersCheck, counted: int, findings: Findings
) -> DeadFiltersFigures:
    proof = findings.layer(layer.id)
    cost = findings.layer_cost(layer.id)
    priced = findings.cost is not None
    return DeadFiltersFigures(
        dead_channels=dead,
        dead_count=len(dead),
        channels=layer.channels,
        allowed=dead_allowance(limits, layer.activation, layer.channels)[0],
        evidence=tuple(proof.of(channel) for channel in dead),
        provable_channels=tuple(c for c in dead if c in proof.provable),
        revivable_channels=tuple(c for c in dead if c in proof.witnesses),
        counting=limits.evidence,
        counted=counted,
        upper_bound_reached=proof.reached,
        witnesses=tuple(
            WitnessFigures(c, w.start_image, w.steps, w.preactivation) for c, w in sorted(proof.witnesses.items())
        ),
        dead_params=(cost.dead_params if cost else 0) if priced else None,
        dead_macs=(cost.dead_macs if cost else 0) if priced else None,
        dead_param_share=(cost.param_share if cost else 0.0) if priced else None,
        dead_mac_share=(cost.mac_share if cost else 0.0) if priced else None,
    )


def _proof_gap(proof: LayerEvidence, limits: DeadFiltersCheck) -> str:
    """Why no channel of the layer can count as provably dead, when none can."""
    if limits.evidence != PROVABLE or proof.reached:
        return ""
    if proof.reached is None:
        return " (the bound proof did not run)"
    return " (the bound proof does not reach this layer)"


def _spend(figures: DeadFiltersFigures) -> str:
    if not figures.dead_count or figures.dead_params is None or figures.dead_macs is None:
        return ""
    return (
        f"; they spend {figures.dead_params:,} parameters ({figures.dead_param_share:.1%} of the model) and "
        f"{figures.dead_macs:,} multiply-adds per image ({figures.dead_mac_share:.1%})"
    )


def judge_dead_filters(layer: LayerInfo, stats: ChannelStats, model: ModelPlan, findings: Findings) -> Verdict:
    """Fail when more channels count as dead than allowed, naming every dead channel with its evidence."""
    limits = model.checks_for(layer.id).dead_filters
    skipped = too_few_positions(layer, stats, limits)
    if skipped is not None:
        return skipped
    dead = stats.dead_channels
    proof = findings.layer(layer.id)
    counted = dead if limits.evidence != PROVABLE else tuple(c for c in dead if c in proof.provable)
    figures = _figures(layer, dead, limits, len(counted), findings)
    allowed, rule = dead_allowance(limits, layer.activation, layer.channels)
    alive = [c for c in proof.provable if c not in dead]
    if alive:
        message = (
            f"channels {alive} are proved dead by the interval bounds but were active on the probe set: "
            "a bug in cnnaudit's bound proof (please report it)"
        )
        return Verdict(CHECK, layer.id, "failed", message, figures)
    fraction = len(dead) / layer.channels if layer.channels else 0.0
    summary = f"{len(dead)} of {layer.channels} channels never active ({fraction:.1%})"
    if limits.evidence == PROVABLE:
        summary += f", {len(counted)} provably dead{_proof_gap(proof, limits)}"
    listed = f": channels {format_evidence(dead, figures.evidence)}{_spend(figures)}" if dead else ""
    if len(counted) > allowed:
        return Verdict(CHECK, layer.id, "failed", f"{summary} > {rule} (allowed {allowed}){listed}", figures)
    return Verdict(CHECK, layer.id, "passed", f"{summary}, allowed {allowed}{listed}", figures)


def too_few_positions(layer: LayerInfo, stats: ChannelStats, limits: DeadFiltersCheck) -> Verdict | None:
    """The skipped verdict of a layer whose maps are too small to show a channel dead (``min_positions``)."""
    positions = stats.count // max(1, stats.images)
    if positions >= limits.min_positions:
        return None
    message = (
        f"not judged: {positions} value(s) per image and channel (a pooled map, e.g. a squeeze-and-excitation "
        f"conv) are too few to show a channel is dead; checks.dead_filters.min_positions: 1 judges it"
    )
    return Verdict(CHECK, layer.id, "skipped", message)


def judged_dead_channels(context: AuditContext) -> dict[str, tuple[int, ...]]:
    """The dead channels of every layer this check will judge on its statistics, in graph order."""
    model = context.plan
    by_id = {layer.id: layer for layer in model.layers}
    dead = {}
    for layer_id in layer_items(model, CHECK):
        if layer_id is None:
            continue
        layer, stats = by_id[layer_id], context.stats.get(layer_id)
        if stats is None or layer_verdict_or_skip(model, CHECK, layer, stats) is not None:
            continue
        if too_few_positions(layer, stats, model.checks_for(layer_id).dead_filters) is None:
            dead[layer_id] = stats.dead_channels
    return dead


def over_limit(model: ModelPlan, dead: dict[str, tuple[int, ...]]) -> set[str]:
    """The layers with more dead channels than they allow, whatever their evidence: the layers whose
    verdict fails when every dead channel counts."""
    by_id = {layer.id: layer for layer in model.layers}
    return {
        layer_id
        for layer_id, channels in dead.items()
        if len(channels)
        > dead_allowance(model.checks_for(layer_id).dead_filters, by_id[layer_id].activation, by_id[layer_id].channels)[
            0
        ]
    }


class DeadFiltersChecker:
    """``dead_filters[<layer>]`` for every layer, and ``dead_filters`` when no layer could be measured.

    Sections: ``dead_evidence`` (the bound proof's reach, the witness search) and ``dead_cost``;
    picture material: the witnesses, for the HTML report.
    """

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        return layer_items(model, CHECK)

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        dead = judged_dead_channels(context)
        findings = gather_findings(context, dead, over_limit(context.plan, dead)) if dead else Findings(None, None)

        def judge(layer: LayerInfo, stats: ChannelStats, model: ModelPlan) -> Verdict:
            return judge_dead_filters(layer, stats, model, findings)

        verdicts = judge_layers(context, CHECK, judge)
        sections = findings.sections if dead else {}
        return CheckResult(verdicts, sections, pictures={"witnesses": findings.witnesses})
