"""Model-level sections of the audit document beyond the verdicts: the colour profile, the lr sweep, and the
dead channels' evidence and cost."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColorProfileLayer:
    """One layer's colour profile: CSI over its channels' top images, and the pattern probes' figures."""

    id: str
    csi_threshold: float
    channels: int
    defined: int  # channels with a defined CSI (active on some probe image)
    csi_median: float | None
    selective_fraction: float | None
    selective_count: int | None = None
    isoluminant_share: float | None = None
    hue_response: dict[str, float] | None = None


@dataclass(frozen=True)
class FirstLayerProfile:
    """The first conv's weights on the opponent colour axes."""

    id: str
    chromatic_fraction: tuple[float, ...]  # per filter
    chromatic_share: float  # the whole layer
    axis_share: dict[str, float]  # energy share of each opponent axis


@dataclass(frozen=True)
class ColorProfile:
    """The colour profile of every layer (JSON ``color_profile``)."""

    axes: dict[str, tuple[float, ...]]  # the opponent basis, in RGB
    gray: str  # how the achromatic twins were made
    top_images: int  # images per channel the CSI uses
    gray_images: int  # achromatic twins run
    layers: tuple[ColorProfileLayer, ...]
    first_layer: FirstLayerProfile | None = None


@dataclass(frozen=True)
class SweepPoint:
    """One rate of the learning-rate sweep."""

    lr: float
    new_dead: int
    loss_start: float | None
    loss_end: float | None
    diverged_at_step: int | None
    non_finite_layers: tuple[str, ...]
    safe: bool


@dataclass(frozen=True)
class LrSweep:
    """The learning-rate sweep (JSON ``lr_sweep``): the grid, the rates run up to the first unsafe one."""

    grid: tuple[float, ...]
    max_safe_lr: float | None
    curve: tuple[SweepPoint, ...]


@dataclass(frozen=True)
class DeadEvidence:
    """How the dead channels' evidence was gathered (JSON ``dead_evidence``).

    The bound proof propagates the input box (every pixel in ``pixel_range`` before the input
    spec's transform) through the graph; ``reached`` lists the layers whose pre-activation it
    bounds, ``stopped`` the ops it could not pass. The witness search ran on ``torch_form``.
    """

    pixel_range: tuple[float, float]
    certified: bool  # the bound proof ran (checks.dead_filters.certify)
    layers: int  # layers of the model
    layers_reached: int
    reached: tuple[str, ...]
    stopped: tuple[str, ...]
    witness_steps: int
    witness_channels: int
    searched: int  # probe-dead channels searched for a witness
    torch_form: str | None  # what the witness search ran on; None when it did not run
    notes: tuple[str, ...] = ()  # why a search or the cost count could not run, and what was left out


@dataclass(frozen=True)
class DeadLayerCost:
    """What one layer's dead channels cost: their filters and the input slices of the layers reading them."""

    id: str
    dead_channels: tuple[int, ...]
    dead_params: int
    dead_macs: int  # multiply-adds per image
    param_share: float  # of the model's parameters
    mac_share: float  # of the model's multiply-adds


@dataclass(frozen=True)
class DeadCost:
    """What the model's dead channels cost (JSON ``dead_cost``): each weight counted once, so the layers add up."""

    dead_params: int
    dead_macs: int
    model_params: int  # stored float numbers: weights, biases, BatchNorm's four numbers per channel
    model_macs: int  # multiply-adds per image of the conv and dense layers
    param_share: float
    mac_share: float
    layers: tuple[DeadLayerCost, ...]
