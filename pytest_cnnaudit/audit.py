"""The audit of one model: open it, measure once, judge every layer with every check.

This is the engine both the Python API (:func:`audit`) and the pytest plugin
use; it never imports pytest. Checks that need more than the main pass (the
colour probes, the fine-tuning probe) are *analyses*: functions of an
:class:`AuditContext` that return their verdicts and report extras.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .backends import open_backend
from .backends.base import Backend, LayerInfo
from .checks import unmeasurable_reason
from .checks.dead_filters import check_dead_filters
from .checks.lr_sanity import LrSanityAnalysis
from .checks.sparsity import check_sparsity
from .color import ColorAnalysis
from .config import AuditConfig, ModelSpec, load_config
from .errors import ModelError
from .measure import fit_batch_size, measure
from .pictures import picture_payload
from .probes import ProbeSet, default_probe_set, user_probe_set
from .result import AuditResult, LayerResult, ModelAudit, Verdict
from .stats import ChannelStats

#: Per-layer checks over the main pass's statistics, in item order.
LAYER_CHECKS: dict[str, Callable[[LayerResult, Any], Verdict]] = {
    "sparsity": check_sparsity,
    "dead_filters": check_dead_filters,
}


@dataclass(frozen=True)
class AuditContext:
    """What an analysis may use: the open model, the main pass, the configuration."""

    name: str
    model: Path | Any
    backend: Backend
    config: AuditConfig
    spec: ModelSpec
    probes: ProbeSet
    layers: tuple[LayerResult, ...]
    batch_size: int  # the probe batch size that fits the memory budget


class Analysis(Protocol):
    """A model-level analysis beyond the main pass (colour probes, fine-tuning probe)."""

    name: str

    def plan(self, config: AuditConfig, spec: ModelSpec, layers: tuple[LayerInfo, ...]) -> list[str | None]:
        """Layer ids (None: the model as a whole) it will give a verdict for, known before measuring."""

    def run(self, context: AuditContext) -> tuple[list[Verdict], dict[str, Any]]:
        """Its verdicts and the extras it adds to the report."""


#: Model-level analyses, run after the main pass in this order.
ANALYSES: list[Analysis] = [ColorAnalysis(), LrSanityAnalysis()]


@dataclass
class OpenedModel:
    """A model whose backend is open: its layers are known, nothing is measured yet."""

    name: str
    model: Path | Any
    spec: ModelSpec
    config: AuditConfig
    backend: Backend

    def planned_items(self) -> list[tuple[str, str | None]]:
        """(check, layer id or None) of every verdict the audit will give, in report order."""
        items: list[tuple[str, str | None]] = []
        for layer in self.backend.layers:
            checks = self.config.checks_for(self.spec, layer.id)
            items.extend((name, layer.id) for name in LAYER_CHECKS if getattr(checks, name).enabled)
        for analysis in ANALYSES:
            items.extend(
                (analysis.name, layer_id) for layer_id in analysis.plan(self.config, self.spec, self.backend.layers)
            )
        return items


def probe_set_for(config: AuditConfig, size: tuple[int, int]) -> ProbeSet:
    """The configured probe images at the model's input size."""
    probe = config.probe
    if probe.images is None:
        return default_probe_set(size, probe.count, probe.seed)
    base = Path(config.source).parent if config.source else Path.cwd()
    return user_probe_set(base / probe.images, size, probe.count, probe.seed)


def layer_verdicts(config: AuditConfig, spec: ModelSpec, layer: LayerResult) -> list[Verdict]:
    """Every per-layer check's verdict for ``layer`` (skipped ones with their reason)."""
    checks = config.checks_for(spec, layer.id)
    skip = config.skip_reason(layer.id)
    unmeasurable = unmeasurable_reason(layer, config.probe.zero_eps)
    verdicts = []
    for name, check in LAYER_CHECKS.items():
        limits = getattr(checks, name)
        if not limits.enabled:
            continue
        if skip is not None:
            verdicts.append(Verdict(name, layer.id, "skipped", f"skipped by the config: {skip}"))
        elif unmeasurable is not None:
            verdicts.append(Verdict(name, layer.id, "skipped", f"not measurable: {unmeasurable}"))
        else:
            verdicts.append(check(layer, limits))
    return verdicts


def _layer_results(backend: Backend, stats: dict[str, ChannelStats]) -> tuple[LayerResult, ...]:
    return tuple(
        LayerResult(
            id=info.id,
            op=info.op,
            activation=info.activation,
            channels=info.channels,
            stats=stats.get(info.tensor) if info.tensor is not None else None,
        )
        for info in backend.layers
    )


def open_model(
    model: Path | Any, config: AuditConfig, spec: ModelSpec | None = None, name: str | None = None
) -> OpenedModel:
    """Open a model file (or ``nn.Module``); raises :class:`CnnAuditError` if it cannot be used.

    ``name`` is how reports call the model (the pytest plugin passes the path relative to the rootdir).
    """
    name = name or (str(model) if isinstance(model, Path) else type(model).__name__)
    if spec is None:
        spec = config.model_spec(model) if isinstance(model, Path) else ModelSpec(path=name)
    config_dir = Path(config.source).parent if config.source else Path.cwd()
    backend = open_backend(model, spec, config_dir, config.probe.batch_size)
    return OpenedModel(name, model, spec, config, backend)


def run_audit(
    opened: OpenedModel, pictures: bool = False, progress: Callable[[int, int], None] | None = None
) -> ModelAudit:
    """Measure once, then judge every layer with every check; closes the backend.

    ``pictures``: also capture the HTML report's picture data (:mod:`pytest_cnnaudit.pictures`);
    ``progress(done, total)`` follows the main pass's probe images.
    """
    config, spec, backend = opened.config, opened.spec, opened.backend
    try:
        probes = probe_set_for(config, backend.input_spec.size)  # type: ignore[arg-type]
        try:
            batch_size = fit_batch_size(backend, probes, config.probe.batch_size, config.runtime.memory_budget_mb)
            stats = measure(backend, probes, batch_size, config.probe.zero_eps, progress)
        except ModelError as exc:
            message = str(exc)
            raise ModelError(message if opened.name in message else f"{opened.name}: {message}") from None
        layers = _layer_results(backend, stats)
        verdicts = [v for layer in layers for v in layer_verdicts(config, spec, layer)]
        extras: dict[str, Any] = {}
        context = AuditContext(opened.name, opened.model, backend, config, spec, probes, layers, batch_size)
        for analysis in ANALYSES:
            more_verdicts, more_extras = analysis.run(context)
            verdicts.extend(more_verdicts)
            extras.update(more_extras)
        picture_data = picture_payload(context) if pictures else None
    finally:
        backend.close()
    return ModelAudit(
        path=opened.name,
        format=backend.format,
        input=backend.input_spec,
        probe={
            "description": probes.description,
            "count": probes.count,
            "seed": probes.seed,
            "batch_size": batch_size,
            "zero_eps": config.probe.zero_eps,
        },
        layers=layers,
        verdicts=tuple(verdicts),
        extras=extras,
        pictures=picture_data,
    )


def audit_model(model: Path | Any, config: AuditConfig, spec: ModelSpec | None = None) -> ModelAudit:
    """Open, measure and judge one model."""
    return run_audit(open_model(model, config, spec))


def audit(model: Path | str | Any, config: AuditConfig | Path | str | None = None) -> AuditResult:
    """Audit one model: a file path (ONNX or torch) or an ``nn.Module``.

    ``config`` is an :class:`AuditConfig`, a path to ``cnnaudit.yaml``, or None
    for the defaults. Raises :class:`CnnAuditError` with a one-line message when
    the model or the configuration cannot be used.
    """
    if not isinstance(config, AuditConfig):
        config = load_config(config)
    if isinstance(model, str):
        model = Path(model)
    return AuditResult(models=(audit_model(model, config),))
