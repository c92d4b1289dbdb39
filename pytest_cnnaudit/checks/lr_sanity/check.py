"""The learning-rate check: fine-tune a copy of the model at ``lr`` (and over the sweep's grid), then count
dead filters again.

Its plan is pure; its judgement imports :mod:`.probe` (and with it torch) only when the check is
enabled, so auditing an ONNX model without it never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...document import Verdict
from ...engine.check import AuditContext, CheckResult, ModelPlan, Need
from ...errors import CnnAuditError
from ..layers import nothing_measurable, unmeasurable_reason, unmeasured_verdict
from .verdicts import (
    CHECK,
    TrainingRun,
    allowed_new_dead,
    check_lr_layer,
    check_lr_model,
    is_safe,
    new_dead_count,
    sweep_rates,
    sweep_report,
)

TORCH_MISSING = (
    "checks.lr_sanity trains a torch copy of the model and needs torch: pip install 'pytest-cnnaudit[torch]'"
)


class LrSanityChecker:
    """``lr_sanity[<layer>]`` for every judged layer, and ``lr_sanity`` for the run as a whole."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        if not model.checks_for().lr_sanity.enabled:
            return []
        judged: list[str | None] = [
            layer.id
            for layer in model.layers
            if unmeasurable_reason(layer) is None and model.checks_for(layer.id).lr_sanity.enabled
        ]
        return [*judged, None]

    def needs(self, model: ModelPlan) -> Need:
        return Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        model = context.plan
        planned = self.plan(model)
        if not planned:
            return CheckResult([])
        settings = model.checks_for().lr_sanity
        if nothing_measurable(model, model.layers):
            return CheckResult([unmeasured_verdict(model, CHECK, settings.allow_unmeasured)])
        try:
            from .network import ProbeUnavailable
            from .probe import fine_tuning_probe
        except ImportError:
            raise CnnAuditError(TORCH_MISSING) from None
        allowed = self._allowed(context, [layer for layer in planned if layer is not None])
        try:
            with fine_tuning_probe(context, settings) as probe:
                before = probe.dead_before
                run = probe.train(settings.lr)
                sweep = self._sweep(probe, settings, before, allowed) if settings.sweep else None
                copy_description = probe.description
        except ProbeUnavailable as exc:
            return CheckResult(
                [Verdict(CHECK, layer, "skipped", f"the fine-tuning probe cannot run: {exc}") for layer in planned]
            )
        verdicts = [self._layer_verdict(context, layer, before, run) for layer in planned if layer is not None]
        verdicts.append(check_lr_model(run, new_dead_count(run, before, allowed), sweep, copy_description))
        sections = {"lr_sweep": sweep_report(sweep, settings)} if sweep is not None else {}
        return CheckResult(verdicts, sections)

    @staticmethod
    def _allowed(context: AuditContext, layer_ids: list[str]) -> dict[str, int]:
        """Newly dead filters allowed per judged layer (layers skipped by the config are not judged)."""
        model = context.plan
        allowed = {}
        for layer in model.layers:
            if layer.id in layer_ids and model.skip_reason(layer.id) is None:
                limits = model.checks_for(layer.id).lr_sanity
                allowed[layer.id] = allowed_new_dead(limits.max_new_dead, layer.channels)
        return allowed

    @staticmethod
    def _sweep(
        probe: Any, settings: Any, before: Mapping[str, Sequence[int]], allowed: Mapping[str, int]
    ) -> list[tuple[TrainingRun, int, bool]]:
        """Train at each rate of the grid from the same weights, up to the first unsafe rate."""
        curve = []
        for rate in sweep_rates(settings):
            run = probe.train(rate)
            safe = is_safe(run, before, allowed)
            curve.append((run, new_dead_count(run, before, allowed), safe))
            if not safe:
                break
        return curve

    @staticmethod
    def _layer_verdict(
        context: AuditContext, layer_id: str, before: Mapping[str, tuple[int, ...]], run: TrainingRun
    ) -> Verdict:
        model = context.plan
        skip = model.skip_reason(layer_id)
        if skip is not None:
            return Verdict(CHECK, layer_id, "skipped", f"skipped by the config: {skip}")
        if layer_id not in run.dead or layer_id not in before:
            return Verdict(CHECK, layer_id, "skipped", "its activation was not found in the trainable copy")
        channels = next(layer.channels for layer in model.layers if layer.id == layer_id)
        limits = model.checks_for(layer_id).lr_sanity
        return check_lr_layer(
            layer_id,
            channels,
            before[layer_id],
            run.dead[layer_id],
            limits.max_new_dead,
            run.lr,
            layer_id in run.non_finite,
        )
