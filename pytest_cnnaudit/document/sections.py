"""Model-level sections of the audit document beyond the verdicts: the colour profile and the lr sweep."""

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
