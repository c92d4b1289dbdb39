"""The audit document: models, layers and one verdict per item, with typed figures (schema ``cnnaudit-report/1``).

One document serves every consumer: the engine builds it, pytest items read their verdict
from it, and the JSON, HTML, terminal summary, ``--cnnaudit-init`` and the baseline file are
all written from it. It survives pytest-xdist and the isolation pipe as its JSON form
(:meth:`ModelDocument.to_json` / :meth:`ModelDocument.from_json`), so what a worker measured
and what the controller reports are the same object.

The JSON report is a contract (README.md, "JSON report"): keys are only added within a
schema version, never renamed or removed. Numbers are rounded to 6 significant digits and
keys sorted, so the same model, config and version give a byte-identical report.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config.model import InputSpec
from .figures import Figures, figures_from_json, figures_to_json
from .json_form import from_json_object, to_json_value
from .sections import ColorProfile, DeadCost, DeadEvidence, LrSweep

SCHEMA = "cnnaudit-report/1"
#: A verdict's outcome; in the report, pytest's outcome for the item, or "not run" when it was deselected.
Outcome = Literal["passed", "failed", "skipped", "not run"]
#: The check of the one item a model that could not be opened gets.
LOAD_CHECK = "load"


def item_id(check: str, layer: str | None) -> str:
    """The item's name after the model's node id: ``dead_filters[conv2]``, or ``lr_sanity`` for the model."""
    return f"{check}[{layer}]" if layer is not None else check


@dataclass(frozen=True)
class Verdict:
    """One check on one layer (or on the whole model when ``layer`` is None): one pytest item."""

    check: str
    layer: str | None
    outcome: Outcome
    message: str
    figures: Figures | None = None

    @property
    def item_id(self) -> str:
        return item_id(self.check, self.layer)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "layer": self.layer,
            "outcome": self.outcome,
            "message": self.message,
            "figures": figures_to_json(self.figures),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        figures = figures_from_json(data["check"], data["layer"], data.get("figures") or {})
        return cls(data["check"], data["layer"], data["outcome"], data["message"], figures)


@dataclass(frozen=True)
class LayerDocument:
    """One conv layer: what follows it, and what the main pass measured (None where nothing was)."""

    id: str
    op: str
    activation: str | None
    channels: int
    sparsity: float | None = None
    dead_channels: tuple[int, ...] | None = None
    channel_max: tuple[float, ...] | None = None
    channel_mean: tuple[float, ...] | None = None
    unmeasured: str | None = None  # why the zero-based checks could not measure this layer
    definition: str | None = None  # what counts as inactive, e.g. "output <= zero_eps"


@dataclass(frozen=True)
class ProbeInfo:
    """The probe set a model was measured with."""

    description: str
    count: int
    seed: int
    batch_size: int
    zero_eps: float


@dataclass(frozen=True)
class ModelDocument:
    """Everything the audit found for one model; ``error`` is one line when it could not be audited."""

    path: str  # how reports name the model: its node id (path relative to the rootdir), or the file
    format: str | None = None
    input: InputSpec | None = None
    probe: ProbeInfo | None = None
    error: str | None = None
    layers: tuple[LayerDocument, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    color_profile: ColorProfile | None = None
    lr_sweep: LrSweep | None = None
    name: str | None = None  # the name baselines know the model by (models[].name), when it differs from path
    notes: tuple[str, ...] = ()  # one-line remarks on how the model was read (e.g. a stripped key prefix)
    dead_evidence: DeadEvidence | None = None
    dead_cost: DeadCost | None = None

    @property
    def baseline_name(self) -> str:
        return self.name or self.path

    def layer(self, layer_id: str) -> LayerDocument | None:
        return next((layer for layer in self.layers if layer.id == layer_id), None)

    def verdict(self, check: str, layer: str | None) -> Verdict | None:
        return next((v for v in self.verdicts if v.check == check and v.layer == layer), None)

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.outcome == "failed")

    def with_outcomes(self, outcomes: dict[str, str]) -> ModelDocument:
        """The document with each verdict's outcome replaced by pytest's (item id -> outcome), "not run" when absent."""
        verdicts = tuple(dataclasses.replace(v, outcome=outcomes.get(v.item_id, "not run")) for v in self.verdicts)
        return dataclasses.replace(self, verdicts=verdicts)

    def to_json(self) -> dict[str, Any]:
        document = {
            key: to_json_value(getattr(self, key))
            for key in ("path", "format", "input", "probe", "error", "layers", "name", "notes")
        }
        document["checks"] = [verdict.to_json() for verdict in self.verdicts]
        for key in ("color_profile", "lr_sweep", "dead_evidence", "dead_cost"):
            if getattr(self, key) is not None:
                document[key] = to_json_value(getattr(self, key))
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelDocument:
        """Read a model document back; unknown or missing keys raise ``TypeError``."""
        plain = {key: value for key, value in data.items() if key != "checks"}
        document = from_json_object(cls, {**plain, "verdicts": []})
        return dataclasses.replace(document, verdicts=tuple(Verdict.from_json(v) for v in data.get("checks", [])))


@dataclass(frozen=True)
class AuditDocument:
    """The audit of one or more models."""

    models: tuple[ModelDocument, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(not model.failed and model.error is None for model in self.models)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "models": [model.to_json() for model in self.models]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditDocument:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {data.get('schema')!r})")
        return cls(models=tuple(ModelDocument.from_json(model) for model in data["models"]))

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(dump_json(self.to_json()), encoding="utf-8")


def dump_json(document: dict[str, Any]) -> str:
    """Stable text: sorted keys, fixed indentation, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
