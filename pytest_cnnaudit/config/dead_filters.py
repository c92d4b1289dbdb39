"""The ``checks.dead_filters`` section of ``cnnaudit.yaml``: limits, and which evidence counts against them.

A field's ``metadata`` carries its documentation and, for numbers, the allowed range, as in
:mod:`.model`; the validator and the JSON Schema read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

UNMEASURED_DOC = "pass (as skipped) a model none of whose layers can be measured, instead of failing it"


@dataclass(frozen=True)
class DeadFiltersCheck:
    """No layer has more never-active channels than allowed.

    Defaults: trained ImageNet CNNs have 0.3-10% never-active channels overall, so
    "none at all" is a team's choice (``max_count: 0``), not a default; 25% per layer
    is beyond what those networks show and catches a collapsed layer. Every never-active
    channel counts (``evidence: probe``), whatever its evidence.

    Evidence: the bound proof (``certify``) costs at most about one bare forward batch. The witness
    search only tells ``revivable`` from ``probe`` (it never changes what counts): up to
    ``witness_steps`` forward-backward passes of ``witness_channels`` images, after one pass of up to
    16 probe images that picks each channel's start. Measured: the example model high_lr's two dead
    channels revive after 22 and 24 steps, a saturated-green filter after 15; in two trained PaddleOCR
    classifiers, 42 of the 43 probe-dead channels searched revive, 41 within 7 steps (the slowest
    after 15), so 32 steps leave room. Each searched channel costs about as much as the main pass
    of a few probe images (8 channels on a 320x320 YOLOv8n: 5 s on 2 cores, its main pass 2 s), so
    8 are searched, early layers first. ``certify``, ``witness_steps`` and ``witness_channels`` are
    read per model, not per layer.
    """

    enabled: bool = field(default=True, metadata={"doc": "run this check"})
    max_count: int | None = field(default=None, metadata={"doc": "most dead channels allowed per layer", "low": 0})
    max_fraction: float = field(
        default=0.25, metadata={"doc": "largest dead fraction allowed per layer", "low": 0.0, "high": 1.0}
    )
    allow_unmeasured: bool = field(default=False, metadata={"doc": UNMEASURED_DOC})
    evidence: Literal["probe", "provable"] = field(
        default="probe",
        metadata={
            "doc": "which dead channels count against the limits: probe (never active on the probe set) or "
            "provable (no input in the box can activate them)"
        },
    )
    certify: bool = field(
        default=True, metadata={"doc": "prove channels dead from the input box by interval bounds (no image needed)"}
    )
    witness_steps: int = field(
        default=32,
        metadata={
            "doc": "gradient steps searching for an image that revives a probe-dead channel; 0: no search",
            "low": 0,
            "high": 1000,
        },
    )
    witness_channels: int = field(
        default=8,
        metadata={
            "doc": "most probe-dead channels searched per model (each layer's closest to firing first)",
            "low": 0,
            "high": 100000,
        },
    )
