"""The audit of one model: open it, measure once, let every check judge, write the document.

This is the engine the Python API (:func:`audit`) and the pytest plugin share; it never imports
pytest. Failures stay where they happen: a model that cannot be opened or measured gets a
document whose ``error`` says why (its planned items fail with that line); a check that raises
fails its own items and no other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import CHECKS
from ..checks.layers import unmeasurable_reason
from ..config.inputs import InputSpec
from ..config.loading import load_config
from ..config.model import AuditConfig, ModelSpec
from ..document import (
    LOAD_CHECK,
    AuditDocument,
    Baseline,
    LayerDocument,
    ModelDocument,
    ProbeInfo,
    Verdict,
    item_id,
)
from ..document.pictures import Pictures
from ..errors import CnnAuditError, ModelError, one_line
from .check import AuditContext, ModelPlan, Need, Progress
from .measure import fit_batch_size, measure
from .pictures import picture_payload
from .planning import OpenedModel, model_name, named, open_or_reason, planned_items
from .probes import ProbeSet, default_probe_set, user_probe_set
from .signals import SignalProbeSet, signal_probe_set
from .stats import TOP_IMAGES, ChannelStats


def probe_set_for(config: AuditConfig, spec: InputSpec) -> ProbeSet | SignalProbeSet:
    """The configured probe images at the model's input size (or a signal or clip model's probes)."""
    probe = config.probe
    images = config.base_dir / probe.images if probe.images is not None else None
    if spec.shape is not None:
        return signal_probe_set(spec, images, probe.count, probe.seed)
    size = spec.size or (1, 1)
    if images is None:
        return default_probe_set(size, probe.count, probe.seed)
    return user_probe_set(images, size, probe.count, probe.seed, probe.augment)


def load_error_document(name: str, message: str, spec: ModelSpec | None = None) -> ModelDocument:
    """A model that could not be opened: its one ``load`` item fails with the reason."""
    return ModelDocument(
        path=name,
        error=message,
        verdicts=(Verdict(LOAD_CHECK, None, "failed", message),),
        name=spec.name if spec is not None else None,
    )


def failed_plan_document(plan: ModelPlan, message: str) -> ModelDocument:
    """A model that opened but could not be measured: every planned item fails with the reason."""
    verdicts = tuple(Verdict(check, layer, "failed", message) for check, layer in planned_items(plan))
    return dataclasses.replace(_document(plan, None, {}), error=message, verdicts=verdicts)


def _layer_documents(plan: ModelPlan, stats: dict[str, ChannelStats]) -> tuple[LayerDocument, ...]:
    """Each layer with what the main pass measured; a layer the checks cannot judge (a saturating or no
    activation) says why and shows no sparsity or dead channels, though its tensor may have been measured."""
    layers = []
    for info in plan.layers:
        reason = unmeasurable_reason(info)
        measured = stats.get(info.id) if reason is None else None
        if reason is None and measured is None:
            reason = "its activation was not measured"
        layers.append(
            LayerDocument(
                id=info.id,
                op=info.op,
                activation=info.activation,
                channels=info.channels,
                sparsity=measured.sparsity if measured is not None else None,
                dead_channels=measured.dead_channels if measured is not None else None,
                channel_max=tuple(measured.max.tolist()) if measured is not None else None,
                channel_mean=tuple(measured.mean.tolist()) if measured is not None else None,
                unmeasured=reason,
                definition=info.definition,
            )
        )
    return tuple(layers)


def _document(plan: ModelPlan, probe: ProbeInfo | None, stats: dict[str, ChannelStats]) -> ModelDocument:
    return ModelDocument(
        path=plan.name,
        format=plan.layout.format,
        input=plan.layout.input,
        probe=probe,
        layers=_layer_documents(plan, stats),
        name=plan.spec.name,
        notes=plan.layout.notes,
    )


def _judge(context: AuditContext) -> tuple[list[Verdict], dict[str, Any], dict[str, Any]]:
    """Every check's verdicts, sections and picture material; a check that raises fails each of its planned
    items with one line."""
    verdicts: list[Verdict] = []
    sections: dict[str, Any] = {}
    material: dict[str, Any] = {}
    for check in CHECKS:
        planned = check.plan(context.plan)
        try:
            result = check.judge(context)
        except CnnAuditError as exc:
            message = f"check {check.name} could not run: {exc}"
            verdicts.extend(Verdict(check.name, layer, "failed", message) for layer in planned)
            continue
        except Exception as exc:  # a bug in that check: its items say so, the other checks still count
            message = f"check {check.name} raised {one_line(exc)} (a bug in cnnaudit: please report it)"
            verdicts.extend(Verdict(check.name, layer, "failed", message) for layer in planned)
            continue
        verdicts.extend(result.verdicts)
        sections.update(result.sections)
        material.update(result.pictures)
    return verdicts, sections, material


def _in_plan_order(plan: ModelPlan, verdicts: list[Verdict]) -> tuple[Verdict, ...]:
    """One verdict per planned item, in item order; an item no check answered fails (a bug)."""
    given = {verdict.item_id: verdict for verdict in verdicts}
    ordered = []
    for check, layer in planned_items(plan):
        verdict = given.get(item_id(check, layer))
        if verdict is None:
            message = f"check {check} gave no verdict for this item (a bug in cnnaudit: please report it)"
            verdict = Verdict(check, layer, "failed", message)
        ordered.append(verdict)
    return tuple(ordered)


@dataclass(frozen=True)
class MainPass:
    """What the one measurement pass gives: the probes, the batch size that fit, each measured layer's statistics."""

    probes: ProbeSet
    batch_size: int
    stats: dict[str, ChannelStats]  # by layer id

    def probe_info(self, zero_eps: float) -> ProbeInfo:
        probes = self.probes
        return ProbeInfo(probes.description, probes.count, probes.seed, self.batch_size, zero_eps)


def measure_model(
    opened: OpenedModel, top_images: int = TOP_IMAGES, progress: Progress | None = None, gray_twins: int = 0
) -> MainPass:
    """Run the probe set through the open model once (with the achromatic twins of ``gray_twins`` of the
    images, see :func:`measure`); raises :class:`CnnAuditError` when it cannot be measured."""
    config, backend = opened.config, opened.backend
    probes = probe_set_for(config, backend.input_spec)
    batch_size = fit_batch_size(backend, probes, config.probe.batch_size, config.runtime.memory_budget_mb)
    by_tensor = measure(backend, probes, batch_size, config.probe.zero_eps, progress, top_images, gray_twins)
    backend.end_pass()
    stats = {info.id: by_tensor[info.tensor] for info in backend.layers if info.tensor in by_tensor}
    return MainPass(probes, batch_size, stats)


def run_audit(
    opened: OpenedModel,
    baseline: Baseline | None = None,
    pictures: bool = False,
    progress: Progress | None = None,
) -> tuple[ModelDocument, Pictures | None]:
    """Measure once, then let every check judge; closes the backend.

    A failure of the measurement itself becomes the document's ``error``; ``pictures``: also
    capture the HTML report's picture data; ``progress(done, total)`` follows the main pass.
    """
    plan = opened.plan(baseline)
    top = TOP_IMAGES if any(Need.TOP_IMAGES in check.needs(plan) for check in CHECKS) else 0
    # The colour profile's achromatic twins; a one-channel model sees no colour, and no twin could differ;
    # a signal or a clip has no colour check.
    spec = plan.layout.input
    colour = top and spec.channels != "GRAY" and spec.shape is None
    twins = plan.checks_for().color.profile_images if colour else 0
    try:
        try:
            main = measure_model(opened, top, progress, twins)
        except CnnAuditError as exc:
            return failed_plan_document(plan, named(plan.name, str(exc), opened.model)), None
        except Exception as exc:  # a bug, or the model's own code raising: this model only
            return failed_plan_document(plan, f"{plan.name}: measuring the model raised {one_line(exc)}"), None
        context = AuditContext(plan, opened.model, opened.backend, main.probes, main.stats, main.batch_size)
        verdicts, sections, material = _judge(context)
        picture_data = picture_payload(context, material) if pictures else None
    finally:
        opened.backend.close()
    document = _document(plan, main.probe_info(opened.config.probe.zero_eps), main.stats)
    # Notes measuring added (a CUDA device asked for and not found) after the planning ones.
    notes = (*document.notes, *(note for note in opened.backend.notes if note not in document.notes))
    return dataclasses.replace(document, verdicts=_in_plan_order(plan, verdicts), notes=notes, **sections), picture_data


def audit_document(
    model: Path | Any,
    config: AuditConfig,
    spec: ModelSpec | None = None,
    name: str | None = None,
    baseline: Baseline | None = None,
    pictures: bool = False,
    progress: Progress | None = None,
) -> tuple[ModelDocument, Pictures | None]:
    """Open, measure and judge one model; never raises for a problem of the model (its document says it)."""
    name = name or model_name(model)
    opened = open_or_reason(model, config, spec, name)
    if isinstance(opened, str):
        return load_error_document(name, opened, spec), None
    return run_audit(opened, baseline, pictures, progress)


def audit_model(
    model: Path | Any, config: AuditConfig, spec: ModelSpec | None = None, baseline: Baseline | None = None
) -> ModelDocument:
    """:func:`audit_document` for the Python API: a model that cannot be opened or measured raises
    :class:`ModelError` with its one line."""
    document, _ = audit_document(model, config, spec, baseline=baseline)
    if document.error is not None:
        raise ModelError(document.error)
    return document


def audit(
    model: Path | str | Any,
    config: AuditConfig | Path | str | None = None,
    baseline: Baseline | Path | str | None = None,
) -> AuditDocument:
    """Audit one model: a file path (ONNX or torch) or an ``nn.Module``.

    ``config`` is an :class:`AuditConfig`, a path to ``cnnaudit.yaml``, or None for the
    defaults; ``baseline`` a :class:`Baseline` or the path of a saved one, to gate against.
    Raises :class:`CnnAuditError` with a one-line message when the config cannot be used or
    the model cannot be opened or measured; a check that fails is a failed verdict
    (``document.passed`` is False), not an exception.
    """
    if not isinstance(config, AuditConfig):
        config = load_config(config)
    if isinstance(baseline, (str, Path)):
        baseline = Baseline.load(Path(baseline))
    if isinstance(model, str):
        model = Path(model)
    return AuditDocument(models=(audit_model(model, config, baseline=baseline),))
