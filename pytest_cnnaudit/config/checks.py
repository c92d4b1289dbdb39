"""The ``checks:`` section of cnnaudit.yaml: one frozen dataclass per check, with its limits and defaults.

Part of the configuration contract (:mod:`.model` holds the file's other sections); the limits'
defaults per activation family, and the measurements they come from, are in :mod:`.families`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .families import RECTIFIERS
from .rules import described as _doc
from .rules import require as _check


@dataclass(frozen=True)
class FamilySparsity:
    """Sparsity bounds for the layers of one activation family (unset: the check's own, then the defaults)."""

    min: float | None = field(default=None, metadata=_doc("lowest allowed sparsity", 0.0, 1.0))
    max: float | None = field(default=None, metadata=_doc("highest allowed sparsity", 0.0, 1.0))


@dataclass(frozen=True)
class SparsityCheck:
    """Each layer's sparsity (fraction of activation values <= 0) lies in [min, max].

    Defaults (config/families.py, from trained networks of each family): [0.03, 0.97], which passes
    every layer measured and still flags all-inactive or never-inactive maps; HardSwish [0.0, 0.99].
    """

    enabled: bool = field(default=True, metadata=_doc("run this check"))
    min: float | None = field(
        default=None, metadata=_doc("lowest allowed sparsity (unset: 0.03; HardSwish 0.0)", 0.0, 1.0)
    )
    max: float | None = field(
        default=None, metadata=_doc("highest allowed sparsity (unset: 0.97; HardSwish 0.99)", 0.0, 1.0)
    )
    by_activation: dict[str, FamilySparsity] = field(
        default_factory=dict,
        metadata=_doc("bounds for the layers of one activation family, by its name", keys=RECTIFIERS),
    )
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc("pass (as skipped) a model none of whose layers can be measured, instead of failing it"),
    )

    def __post_init__(self) -> None:
        low, high = self.min, self.max
        _check(low is None or high is None or low <= high, "min", f"min {low} > max {high}")


@dataclass(frozen=True)
class FamilyDeadFilters:
    """The dead channels allowed in the layers of one activation family."""

    max_count: int | None = field(default=None, metadata=_doc("most dead channels allowed per layer", 0, None))
    max_fraction: float | None = field(default=None, metadata=_doc("largest dead fraction allowed per layer", 0.0, 1.0))


@dataclass(frozen=True)
class DeadFiltersCheck:
    """No layer has more never-active channels than allowed.

    Defaults (config/families.py): trained networks have 0.2-1% never-active channels overall, so
    "none at all" is a team's choice (``max_count: 0``), not a default; a quarter of a layer is beyond
    what healthy ReLU, SiLU and PReLU layers show (HardSwish 0.3, GELU 0.5). A layer with fewer than
    ``min_positions`` values per image and channel (a pooled 1x1 map) is not judged. Every dead
    channel counts (``evidence: probe``), whatever its evidence.

    Evidence: the bound proof (``certify``) costs at most about one bare forward batch. The witness
    search only tells ``revivable`` from ``probe`` (it never changes what counts), so it runs only on
    layers with more dead channels than they allow: up to
    ``witness_steps`` forward-backward passes of ``witness_channels`` images, after one pass of up to
    16 probe images that picks each channel's start. Measured: the example model high_lr's two dead
    channels revive after 22 and 24 steps, a saturated-green filter after 15; in two trained PaddleOCR
    classifiers, 42 of the 43 probe-dead channels searched revive, 41 within 7 steps (the slowest
    after 15), so 32 steps leave room. Each searched channel costs about as much as the main pass
    of a few probe images (for 8 channels of a trained 320x320 YOLOv8n detector the evidence took
    12 s on 2 cores, its main pass 2.2 s), so 8 are searched, early layers first. ``certify``, ``witness_steps`` and ``witness_channels`` are
    read per model, not per layer.
    """

    enabled: bool = field(default=True, metadata=_doc("run this check"))
    max_count: int | None = field(default=None, metadata=_doc("most dead channels allowed per layer", 0, None))
    max_fraction: float | None = field(
        default=None,
        metadata=_doc("largest dead fraction allowed per layer (unset: 0.25; HardSwish 0.3, GELU 0.5)", 0.0, 1.0),
    )
    by_activation: dict[str, FamilyDeadFilters] = field(
        default_factory=dict,
        metadata=_doc("limits for the layers of one activation family, by its name", keys=RECTIFIERS),
    )
    min_positions: int = field(
        default=2,
        metadata=_doc(
            "judge a layer only when each image gives it at least this many values per channel: a pooled 1x1 "
            "map (squeeze-and-excitation) gives one, too few to show a channel is dead",
            1,
            None,
        ),
    )
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc("pass (as skipped) a model none of whose layers can be measured, instead of failing it"),
    )
    evidence: Literal["probe", "provable"] = field(
        default="probe",
        metadata=_doc(
            "which dead channels count against the limits: probe (never active on the probe set) or provable "
            "(no input in the box can activate them)"
        ),
    )
    certify: bool = field(
        default=True, metadata=_doc("prove channels dead from the input box by interval bounds (no image needed)")
    )
    witness_steps: int = field(
        default=32,
        metadata=_doc("gradient steps searching for an image that revives a probe-dead channel; 0: no search", 0, 1000),
    )
    witness_channels: int = field(
        default=8,
        metadata=_doc(
            "most probe-dead channels searched per model, in layers over their allowance (each layer's closest "
            "to firing first)",
            0,
            100000,
        ),
    )


@dataclass(frozen=True)
class LrSanityCheck:
    """A short fine-tuning probe at ``lr`` must not kill filters (off unless its section is given: it trains).

    Defaults: SGD with momentum 0.9 at 0.01 is the usual fine-tuning recipe of ImageNet
    CNNs (they train from scratch at 0.1); a rate that kills filters does so within the
    first few updates, so 20 steps of 8 images find it at the cost of 20 training steps;
    a healthy rate kills none in that time, so none may die (``max_new_dead: 0``).
    """

    enabled: bool = field(
        default=False,
        metadata=_doc(
            "run the fine-tuning probe (costs training steps); giving the section at the top level or in a model "
            "turns it on unless it says enabled: false"
        ),
    )
    lr: float = field(default=0.01, metadata=_doc("learning rate the team intends to fine-tune with", 0.0, None))
    optimizer: Literal["sgd", "adam", "adamw"] = field(default="sgd", metadata=_doc("optimizer of the probe"))
    momentum: float = field(
        default=0.9, metadata=_doc("SGD momentum (adam and adamw use their default betas)", 0.0, 1.0)
    )
    weight_decay: float = field(default=0.0, metadata=_doc("weight decay (decoupled for adamw)", 0.0, None))
    steps: int = field(default=20, metadata=_doc("training steps of the probe", 1, 100000))
    batch_size: int = field(
        default=8,
        metadata=_doc("images per training step (a model with a fixed batch size uses its own)", 1, 4096),
    )
    objective: Literal["self", "labels", "random"] = field(
        default="self",
        metadata=_doc(
            "self: cross-entropy to the model's own argmax (MSE to its own outputs if not a classifier); "
            "labels: labels_dir; random: seeded random labels (seeded random targets, MSE, if not a classifier)"
        ),
    )
    labels_dir: str | None = field(
        default=None,
        metadata=_doc("folder with one subfolder of images per class (sorted names are class 0, 1, ...)"),
    )
    max_new_dead: float = field(
        default=0,
        metadata=_doc("newly dead filters allowed per layer: a count (whole number >= 1) or a fraction (< 1)", 0, None),
    )
    sweep: bool = field(default=False, metadata=_doc("sweep a log grid of rates and report the max safe rate"))
    sweep_range: tuple[float, float] = field(
        default=(1e-5, 10.0), metadata=_doc("lowest and highest rate of the sweep", 1e-12, None)
    )
    sweep_per_decade: int = field(
        default=2, metadata=_doc("rates per decade of the sweep (2: 1, 3.16, 10, ...)", 1, 100)
    )
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc("pass (as skipped) a model none of whose layers can be measured, instead of failing it"),
    )

    def __post_init__(self) -> None:
        _check(self.objective != "labels" or self.labels_dir is not None, "labels_dir", "objective labels needs it")
        _check(
            self.max_new_dead < 1 or float(self.max_new_dead).is_integer(),
            "max_new_dead",
            f"{self.max_new_dead} is neither a whole count nor a fraction below 1",
        )
        low, high = self.sweep_range
        _check(low < high, "sweep_range", f"lowest rate {low} is not below highest rate {high}")


@dataclass(frozen=True)
class FirstLayerColor:
    """What the first conv layer's colour use must be, judged from its weights.

    A filter is colour-tuned when more than ``csi_threshold`` of its weight energy
    (input normalisation folded in, on raw RGB) lies on the red-green and blue-yellow
    opponent axes rather than the achromatic one. Defaults: trained ImageNet CNNs have
    20-40% such filters in their first layer (random filters put two thirds of their
    energy there on average), so ``sensitive`` asks for 20%; ``invariant`` allows 5% of
    the whole layer's energy on the opponent axes (filters with equal R, G, B weights: 0).
    """

    expect: Literal["sensitive", "invariant"] | None = field(
        default=None, metadata=_doc("expected colour use; unset: measured and reported only")
    )
    min_selective_fraction: float = field(
        default=0.2,
        metadata=_doc("sensitive: least fraction of colour-tuned filters (trained nets: 20-40%)", 0.0, 1.0),
    )
    max_sensitivity: float = field(
        default=0.05,
        metadata=_doc("invariant: largest chromatic energy share of the layer (opponent-axis / total)", 0.0, 1.0),
    )
    csi_threshold: float = field(
        default=0.5,
        metadata=_doc(
            "a first-layer filter is colour-tuned above this chromatic energy fraction of its weights; any "
            "layer's channel is CSI-selective above this CSI (profile and bounds)",
            0.0,
            1.0,
        ),
    )


@dataclass(frozen=True)
class LayerColorBound:
    """Per-layer bound on the fraction of CSI-selective channels (CSI > ``first_layer.csi_threshold``).

    Each layer whose id matches gets an item ``color[<layer>]``.
    """

    match: str = field(default="*", metadata=_doc("glob on layer ids"))
    min_selective_fraction: float = field(default=0.0, metadata=_doc("least CSI-selective fraction", 0.0, 1.0))
    max_selective_fraction: float = field(default=1.0, metadata=_doc("largest CSI-selective fraction", 0.0, 1.0))

    def __post_init__(self) -> None:
        _check(
            self.min_selective_fraction <= self.max_selective_fraction,
            "min_selective_fraction",
            f"{self.min_selective_fraction} > max_selective_fraction {self.max_selective_fraction}",
        )


@dataclass(frozen=True)
class ColorCheck:
    """Colour sensitivity of the first conv layer, and a colour profile of every layer."""

    enabled: bool = field(default=True, metadata=_doc("run this check"))
    first_layer: FirstLayerColor = field(default_factory=FirstLayerColor, metadata=_doc("first conv layer"))
    layers: tuple[LayerColorBound, ...] = field(default=(), metadata=_doc("optional per-layer bounds"))
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc(
            "with first_layer.expect set: skip, instead of failing, when the first conv's weights cannot be read"
        ),
    )
    profile_images: int = field(
        default=32,
        metadata=_doc(
            "probe images (evenly spaced) whose achromatic twins the main pass also runs for the CSI profile; "
            "each channel's top images are chosen among them (all probe images when there are at most this many)",
            1,
            100000,
        ),
    )


@dataclass(frozen=True)
class ChecksConfig:
    """Thresholds of every check."""

    sparsity: SparsityCheck = field(default_factory=SparsityCheck, metadata=_doc("activation sparsity"))
    dead_filters: DeadFiltersCheck = field(default_factory=DeadFiltersCheck, metadata=_doc("never-active channels"))
    lr_sanity: LrSanityCheck = field(default_factory=LrSanityCheck, metadata=_doc("learning-rate probe"))
    color: ColorCheck = field(default_factory=ColorCheck, metadata=_doc("colour sensitivity"))
