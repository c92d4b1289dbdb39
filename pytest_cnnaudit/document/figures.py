"""Typed figures: what each check measured for one item, as it travels to every report.

One frozen dataclass per kind of verdict. The check that measures builds it, the JSON
report writes its fields as the ``figures`` object, and :func:`figures_from_json` reads
them back strictly: a field renamed in one place is a ``TypeError`` here, not a chart that
silently comes out empty. Field names are the keys of schema ``cnnaudit-report/1``; they
are only ever added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .json_form import from_json_object, to_json_value


@dataclass(frozen=True)
class SparsityFigures:
    """``sparsity[<layer>]``: the layer's fraction of activation values <= 0 and its bounds."""

    sparsity: float
    min: float
    max: float
    channels: int


@dataclass(frozen=True)
class WitnessFigures:
    """A revivable channel's witness: the image the search found, from a probe image, that switches it on."""

    channel: int
    start_image: int  # the probe image the search started from
    steps: int  # gradient steps taken
    preactivation: float  # the channel's highest pre-activation on the witness (> 0: it fires)


@dataclass(frozen=True)
class DeadFiltersFigures:
    """``dead_filters[<layer>]``: channels never active on the probe set, their evidence, what they cost, and
    how many are allowed.

    ``evidence`` runs parallel to ``dead_channels``: ``provable`` (no input in the box can activate
    it), ``revivable`` (a witness image activates it), ``probe`` (no witness found). ``counting``
    says which evidence counts against the limits (``checks.dead_filters.evidence``), ``counted``
    how many channels it counted. The cost fields are None when the cost could not be counted.
    """

    dead_channels: tuple[int, ...]
    dead_count: int
    channels: int
    allowed: int
    evidence: tuple[str, ...] = ()
    provable_channels: tuple[int, ...] = ()
    revivable_channels: tuple[int, ...] = ()
    counting: str = "probe"
    counted: int | None = None
    upper_bound_reached: bool | None = None  # None: the bound proof did not run
    witnesses: tuple[WitnessFigures, ...] = ()
    dead_params: int | None = None
    dead_macs: int | None = None
    dead_param_share: float | None = None
    dead_mac_share: float | None = None


@dataclass(frozen=True)
class BaselineFigures:
    """``baseline[<layer>]``: the layer's figures in the saved baseline and now (old ones None when absent)."""

    old_sparsity: float | None
    new_sparsity: float
    old_dead_channels: tuple[int, ...] | None
    new_dead_channels: tuple[int, ...]


@dataclass(frozen=True)
class LrLayerFigures:
    """``lr_sanity[<layer>]``: dead channels before and after fine-tuning at ``lr``."""

    lr: float
    channels: int
    dead_before: int
    dead_after: int
    new_dead_channels: tuple[int, ...]
    allowed: int
    non_finite: bool


@dataclass(frozen=True)
class LrModelFigures:
    """``lr_sanity``: the fine-tuning run as a whole (and the sweep's max safe rate, when one ran)."""

    lr: float
    steps: int
    loss_start: float | None
    loss_end: float | None
    diverged_at_step: int | None
    new_dead: int
    max_safe_lr: float | None = None
    trainable_copy: str | None = None


@dataclass(frozen=True)
class ColorBoundFigures:
    """One ``checks.color.layers`` bound on a layer's share of CSI-selective channels."""

    channels: int
    defined: int
    csi_median: float | None
    selective_count: int
    selective_fraction: float | None
    match: str
    csi_threshold: float
    min_selective_fraction: float
    max_selective_fraction: float


@dataclass(frozen=True)
class ColorFigures:
    """``color[<layer>]``: the first conv's weight-based figures, when this is the first conv, and every bound.

    First-layer fields are None on other layers; ``bounds`` is empty when no bound matches. Two
    shares have two names: ``tuned_*`` counts the first conv's colour-tuned filters (from their
    weights), ``csi_selective_*`` the layer's CSI-selective channels (from activations). The older
    ``selective_*`` keys stay for readers of schema 1: the weight-based share on the first conv,
    the CSI-based one on other layers.
    """

    channels: int
    selective_count: int | None = None
    selective_fraction: float | None = None
    chromatic_share: float | None = None
    chromatic_fraction_median: float | None = None
    chromatic_fraction_max: float | None = None
    expect: str | None = None
    csi_threshold: float | None = None
    min_selective_fraction: float | None = None
    max_selective_fraction: float | None = None
    max_sensitivity: float | None = None
    csi_median: float | None = None
    csi_selective_fraction: float | None = None
    defined: int | None = None
    match: str | None = None
    bounds: tuple[ColorBoundFigures, ...] = ()
    tuned_count: int | None = None
    tuned_fraction: float | None = None
    csi_selective_count: int | None = None


Figures = SparsityFigures | DeadFiltersFigures | BaselineFigures | LrLayerFigures | LrModelFigures | ColorFigures


def figures_type(check: str, layer: str | None) -> type | None:
    """The figures class of a verdict of ``check`` (on a layer, or on the model when ``layer`` is None)."""
    if check == "lr_sanity":
        return LrLayerFigures if layer is not None else LrModelFigures
    if layer is None:
        return None  # model-level items of the other checks (nothing measured, not in the baseline) carry none
    return {
        "sparsity": SparsityFigures,
        "dead_filters": DeadFiltersFigures,
        "baseline": BaselineFigures,
        "color": ColorFigures,
    }.get(check)


def figures_to_json(figures: Figures | None) -> dict[str, Any]:
    """The ``figures`` object of the JSON report (``{}`` when the item measured nothing)."""
    return to_json_value(figures) if figures is not None else {}


def figures_from_json(check: str, layer: str | None, data: dict[str, Any]) -> Figures | None:
    """Read figures back; an unknown or missing field raises ``TypeError`` naming it."""
    if not data:
        return None
    cls = figures_type(check, layer)
    if cls is None:
        raise TypeError(f"{check}[{layer}]: a verdict of this kind carries no figures, got {sorted(data)}")
    return from_json_object(cls, data)
