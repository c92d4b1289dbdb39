"""Open a model and plan its items: which check gives a verdict for which layer, known before measuring.

Planning needs only the model's layout (its conv layers and what follows each), the config and
the baseline, so it can run in another process than the measurement: the pytest plugin plans
every model once, in an isolated child, and hands the layouts to pytest-xdist workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import open_backend
from ..backends.base import Backend
from ..checks import CHECKS
from ..config.model import AuditConfig, ModelSpec
from ..document import Baseline
from ..errors import CnnAuditError, one_line
from .check import ModelLayout, ModelPlan


@dataclass
class OpenedModel:
    """A model whose backend is open: its layers are known, nothing is measured yet."""

    name: str
    model: Path | Any
    spec: ModelSpec
    config: AuditConfig
    backend: Backend

    @property
    def layout(self) -> ModelLayout:
        backend = self.backend
        return ModelLayout(backend.format, backend.input_spec, backend.layers, backend.notes)

    def plan(self, baseline: Baseline | None = None) -> ModelPlan:
        return ModelPlan(self.name, self.spec, self.config, self.layout, baseline)


def model_name(model: Path | Any) -> str:
    """How reports call a model when no name is given: its path, or its module's class name."""
    return str(model) if isinstance(model, Path) else type(model).__name__


def model_spec(model: Path | Any, config: AuditConfig, name: str) -> ModelSpec:
    """The config's entry for a model file, or defaults (an in-memory module has no entry)."""
    return config.model_spec(model) if isinstance(model, Path) else ModelSpec(path=name)


def open_model(
    model: Path | Any, config: AuditConfig, spec: ModelSpec | None = None, name: str | None = None
) -> OpenedModel:
    """Open a model file (or ``nn.Module``); raises :class:`CnnAuditError` if it cannot be used.

    ``name`` is how reports call the model (the pytest plugin passes the path relative to the rootdir).
    """
    name = name or model_name(model)
    spec = spec or model_spec(model, config, name)
    backend = open_backend(model, spec, config.base_dir, config.probe.batch_size, config.runtime.device)
    return OpenedModel(name, model, spec, config, backend)


def named(name: str, message: str, model: Path | Any = None) -> str:
    """``message`` about a model, naming it as reports do: its file path replaced by ``name``, said once, first."""
    if isinstance(model, Path) and str(model) != name:
        message = message.replace(str(model), name)
    return message if message.startswith(name) else f"{name}: {message}"


def planned_items(plan: ModelPlan) -> list[tuple[str, str | None]]:
    """(check, layer id or None) of every verdict the audit will give: layer by layer in graph order, each
    layer's checks in :data:`~pytest_cnnaudit.checks.CHECKS` order, then the model-level items."""
    by_layer: dict[str | None, list[str]] = {layer.id: [] for layer in plan.layers}
    by_layer[None] = []
    for check in CHECKS:
        for layer_id in check.plan(plan):
            by_layer.setdefault(layer_id, []).append(check.name)
    return [(check, layer_id) for layer_id, checks in by_layer.items() for check in checks]


def open_or_reason(model: Path | Any, config: AuditConfig, spec: ModelSpec | None, name: str) -> OpenedModel | str:
    """The opened model, or the one line saying why it cannot be opened (never raises for the model's sake)."""
    try:
        return open_model(model, config, spec, name)
    except CnnAuditError as exc:
        return named(name, str(exc), model)
    except Exception as exc:  # the user's factory or module code, or a bug: this model only
        return f"{name}: opening the model raised {one_line(exc)}"


def layouts(
    config: AuditConfig, models: list[tuple[Path, ModelSpec, str]], found: Callable[[ModelLayout | str], None]
) -> None:
    """Open and close each model in turn, handing ``found`` its layout or the one line saying why it cannot be opened."""
    for model, spec, name in models:
        opened = open_or_reason(model, config, spec, name)
        if isinstance(opened, str):
            found(opened)
            continue
        found(opened.layout)
        opened.backend.close()
