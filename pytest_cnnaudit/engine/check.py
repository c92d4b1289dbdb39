"""The one protocol every check implements, and what a check sees of a model.

A check is two questions. **Before measuring** (pytest collection, from the model's layout
and the config alone): which items will it give a verdict for, and what must the main pass
keep for it? **After measuring**: what is the verdict of each of those items? Sparsity, dead
filters, colour, the learning-rate probe and the baseline comparison all answer them the same
way, so the engine runs them in one loop, and one check that raises fails only its own items.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..backends.base import Backend, LayerInfo
from ..config.checks import ChecksConfig
from ..config.model import AuditConfig, InputSpec, ModelSpec
from ..document import Baseline, Verdict
from .probes import ProbeSet
from .stats import ChannelStats


class Need(enum.Flag):
    """What a check needs the engine to keep beyond the main pass's per-channel statistics."""

    NONE = 0
    # each channel's top probe images, their maxima and their achromatic twins' maxima (the colour CSI): the main
    # pass then also runs the twins of checks.color.profile_images of the probe images
    TOP_IMAGES = enum.auto()


@dataclass(frozen=True)
class ModelLayout:
    """What opening a model tells: its format, resolved input spec and conv layers. JSON-able, so a plan
    made in one process (the controller, a planning child) serves pytest-xdist workers too."""

    format: str
    input: InputSpec
    layers: tuple[LayerInfo, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPlan:
    """A model as the checks see it before measuring: its layout, its config, the baseline to compare with."""

    name: str  # how reports name it
    spec: ModelSpec
    config: AuditConfig
    layout: ModelLayout
    baseline: Baseline | None = None

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        return self.layout.layers

    def checks_for(self, layer_id: str | None = None) -> ChecksConfig:
        return self.config.checks_for(self.spec, layer_id)

    def skip_reason(self, layer_id: str) -> str | None:
        return self.config.skip_reason(layer_id)


@dataclass(frozen=True)
class AuditContext:
    """What a check may use after the main pass: the open model, the probes, the statistics."""

    plan: ModelPlan
    model: Path | Any  # the model file, or the in-memory module
    backend: Backend
    probes: ProbeSet
    stats: dict[str, ChannelStats]  # by layer id, for every measured layer
    batch_size: int  # the probe batch size that fits the memory budget


@dataclass(frozen=True)
class CheckResult:
    """A check's verdicts, the model-document sections it fills (``color_profile``, ``lr_sweep``), and the
    picture material it found for the HTML report (``witnesses``; :mod:`.pictures` makes it display-ready)."""

    verdicts: list[Verdict]
    sections: dict[str, Any] = field(default_factory=dict)
    pictures: dict[str, Any] = field(default_factory=dict)


class Check(Protocol):
    """One audit check: sparsity, dead filters, colour, learning-rate sanity, baseline."""

    name: str

    def plan(self, model: ModelPlan) -> list[str | None]:
        """The layer ids (None: the model as a whole) it gives a verdict for, in item order."""

    def needs(self, model: ModelPlan) -> Need:
        """What the main pass must keep for it."""

    def judge(self, context: AuditContext) -> CheckResult:
        """One verdict for each planned item (raising fails those items, and only those)."""


#: Called as ``(images done, total)`` while the main pass runs.
Progress = Callable[[int, int], None]
