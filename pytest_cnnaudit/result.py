"""Frozen results of an audit, and the JSON report built from them (schema ``cnnaudit-report/1``).

The JSON report is a contract (documented in README.md, section "JSON report"):
keys are only added within a schema version, never renamed or removed. Numbers
are rounded to 6 significant digits so that reports are byte-identical across
runs and machines whose float arithmetic differs in the last bits.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import InputSpec
from .stats import ChannelStats

SCHEMA = "cnnaudit-report/1"
Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Verdict:
    """One check on one layer (or on the whole model when ``layer`` is None)."""

    check: str
    layer: str | None
    outcome: Outcome
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def item_name(self) -> str:
        return f"{self.check}[{self.layer}]" if self.layer is not None else self.check


@dataclass(frozen=True)
class LayerResult:
    """What was measured for one conv layer."""

    id: str
    op: str
    activation: str | None
    channels: int
    stats: ChannelStats | None = field(default=None, repr=False, compare=False)

    @property
    def sparsity(self) -> float | None:
        return self.stats.sparsity if self.stats is not None else None

    @property
    def dead_channels(self) -> tuple[int, ...] | None:
        return self.stats.dead_channels if self.stats is not None else None

    def to_json(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "id": self.id,
            "op": self.op,
            "activation": self.activation,
            "channels": self.channels,
            "sparsity": _round(self.sparsity),
            "dead_channels": list(self.dead_channels) if self.dead_channels is not None else None,
            "channel_max": [_round(v) for v in stats.max] if stats is not None else None,
            "channel_mean": [_round(v) for v in stats.mean] if stats is not None else None,
        }


@dataclass(frozen=True)
class ModelAudit:
    """Everything the audit found for one model."""

    path: str
    format: str
    input: InputSpec | None
    probe: dict[str, Any]
    layers: tuple[LayerResult, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)  # per-check data for the report (colour profile, sweep)
    error: str | None = None
    # Picture data for the HTML report (pictures.py), captured only when asked; never in the JSON report.
    pictures: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def layer(self, layer_id: str) -> LayerResult:
        return next(layer for layer in self.layers if layer.id == layer_id)

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.outcome == "failed")

    def to_json(self, outcomes: dict[str, str] | None = None) -> dict[str, Any]:
        """``outcomes`` (item name -> pytest outcome) replaces the audit's own outcome where given."""
        outcomes = outcomes or {}
        return {
            "path": self.path,
            "format": self.format,
            "error": self.error,
            "input": dataclasses.asdict(self.input) if self.input is not None else None,
            "probe": self.probe,
            "layers": [layer.to_json() for layer in self.layers],
            "checks": [
                {
                    "check": v.check,
                    "layer": v.layer,
                    "outcome": outcomes.get(v.item_name, v.outcome),
                    "message": v.message,
                    "figures": _rounded(v.figures),
                }
                for v in self.verdicts
            ],
            **{key: _rounded(value) for key, value in sorted(self.extras.items())},
        }


@dataclass(frozen=True)
class AuditResult:
    """The audit of one or more models."""

    models: tuple[ModelAudit, ...]

    @property
    def passed(self) -> bool:
        return all(not m.failed and m.error is None for m in self.models)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "models": [m.to_json() for m in self.models]}

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(dump_json(self.to_json()), encoding="utf-8")


def dump_json(document: dict[str, Any]) -> str:
    """Stable text: sorted keys, fixed indentation, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{float(value):.6g}")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _rounded(value.item())
    return value
