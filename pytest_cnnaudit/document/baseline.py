"""The baseline file (``cnnaudit-baseline/1``): each model's per-layer figures at the last release.

Written from audit documents (``--cnnaudit-save-baseline``) and read by the baseline check
(``--cnnaudit-baseline``, or ``audit(..., baseline=...)``). Models are keyed by their
baseline name (``models[].name``, else the model's path as reports name it), so a renamed
file keeps its baseline when its entry keeps the name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .json_form import from_json_value, to_json_value
from .model import ModelDocument, dump_json

BASELINE_SCHEMA = "cnnaudit-baseline/1"


@dataclass(frozen=True)
class BaselineLayer:
    """One measured layer at the last release."""

    sparsity: float
    dead_channels: tuple[int, ...]


@dataclass(frozen=True)
class Baseline:
    """Per model (by baseline name), per layer id, the figures a new run is compared with."""

    models: dict[str, dict[str, BaselineLayer]] = field(default_factory=dict)

    @classmethod
    def from_documents(cls, documents: Iterable[ModelDocument]) -> Baseline:
        """The measured layers of every model that was audited (models with an error are left out)."""
        models = {}
        for document in documents:
            if document.error is not None:
                continue
            models[document.baseline_name] = {
                layer.id: BaselineLayer(layer.sparsity, layer.dead_channels)
                for layer in document.layers
                if layer.sparsity is not None and layer.dead_channels is not None
            }
        return cls(models)

    def to_json(self) -> dict[str, object]:
        return {"schema": BASELINE_SCHEMA, "models": to_json_value(self.models)}

    def write(self, path: Path) -> None:
        path.write_text(dump_json(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Baseline:
        """Read a saved baseline; a missing, foreign or malformed file is a :class:`ConfigError`."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--cnnaudit-baseline {path}: cannot read the baseline: {exc}") from None
        if not isinstance(document, dict) or document.get("schema") != BASELINE_SCHEMA:
            raise ConfigError(
                f"--cnnaudit-baseline {path}: not a {BASELINE_SCHEMA} file (write one with --cnnaudit-save-baseline)"
            )
        try:
            models = from_json_value(dict[str, dict[str, BaselineLayer]], document.get("models", {}))
        except (TypeError, AttributeError) as exc:
            raise ConfigError(f"--cnnaudit-baseline {path}: malformed baseline: {exc}") from None
        return cls(models)
