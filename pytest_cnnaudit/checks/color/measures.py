"""Colour sensitivity: the first conv layer's colour use, and a colour profile of every layer.

Two measures, each deciding one thing:

- **Chromatic energy fraction** (the first conv layer, from its weights alone). The
  input normalisation (channel order, scale, mean/std) is folded into the weights,
  giving effective weights on raw RGB in [0, 1]. Each filter's RGB weight vector at
  each spatial position is written in the orthonormal opponent basis of
  :data:`OPPONENT_BASIS`: achromatic ``(1, 1, 1)/sqrt3``, red-green ``(1, -1, 0)/sqrt2``,
  blue-yellow ``(1, 1, -2)/sqrt6`` (the "opponent colour space" of van de Sande et al.;
  orthonormal, so the energies on the three axes add up to the filter's energy). A
  filter's chromatic energy fraction is its energy on the two opponent axes over its
  total energy. Random filters put two thirds of their energy there on average (two of
  three axes); the first layers of trained ImageNet CNNs have 20-40% of their filters
  above one half.
- **Colour selectivity index** (every measured layer, from activations; Rafegas &
  Vanrell). The main pass also runs the achromatic twins (each pixel replaced by its
  Rec. 601 luma, :func:`probes.grayscale`) of ``checks.color.profile_images`` evenly spaced
  probe images (all of them when there are no more); for each channel, its top
  :data:`stats.TOP_IMAGES` of those images by per-image maximum activation are kept with
  their twins' maxima, and ``CSI = 1 - sum(gray maxima) / sum(colour maxima)``, clipped to
  [0, 1]. A channel whose colour sum is not positive has no defined CSI and is left out of
  the profile.

"Colour-selective" means, for both, that colour carries more than ``csi_threshold``
(default one half) of it: of a first-layer filter's weight energy, or of a channel's
response to its top images. The first layer's verdict uses the weights (exact, and
independent of the probe images); the per-layer profile and bounds use the CSI.

Why the achromatic axis is (1, 1, 1) and not the Rec. 601 luma direction: it makes
the basis the standard orthonormal opponent space and "equal weights on R, G, B" the
colour-blind filter. A filter weighting R, G, B by luma (0.299, 0.587, 0.114) sees only
luminance yet has 25% of its energy on the opponent axes; conversely an equal-weight
filter answers the gray twin slightly differently from the colour image, so its CSI is
near, not exactly, 0.

The data-free pattern probes (uniform hue fields, achromatic and isoluminant gratings)
are reported as figures only: per layer, how strongly the channels are modulated by the
isoluminant grating relative to the achromatic one, and the mean response to each hue.

This module is pure numpy; :mod:`.passes` runs the extra passes, :mod:`.check` turns the
figures into verdicts with :mod:`.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...config.model import InputSpec

#: Rows: the achromatic, red-green and blue-yellow axes, in RGB. Orthonormal.
OPPONENT_BASIS = np.array(
    [
        np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0),
        np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0),
        np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0),
    ]
)
OPPONENT_AXES = ("achromatic", "red_green", "blue_yellow")
GRAY_INPUT_REASON = "one-channel input: colour sensitivity does not apply"


# --------------------------------------------------------------------------- pure numpy


def effective_rgb_weights(weight: np.ndarray, spec: InputSpec) -> np.ndarray:
    """First-conv weights (out, in, kh, kw) in the model's channel order, as weights on raw RGB in [0, 1].

    The model sees ``(pixel * scale - mean) / std``: the mean only shifts the output (a
    bias), the per-channel factor ``scale / std`` multiplies the weights, and a BGR
    model's input channels are put back in RGB order.
    """
    factor = spec.scale / np.asarray(spec.std, dtype=np.float64)
    rgb = weight.astype(np.float64) * factor[None, :, None, None]
    return rgb[:, ::-1] if spec.channels == "BGR" else rgb


def opponent_energy(rgb_weights: np.ndarray) -> np.ndarray:
    """(out, 3): each filter's energy on the achromatic, red-green and blue-yellow axes."""
    coefficients = np.einsum("ac,ochw->oahw", OPPONENT_BASIS, rgb_weights)
    return np.square(coefficients).sum(axis=(2, 3))


def chromatic_fraction(energy: np.ndarray) -> np.ndarray:
    """(out,): opponent-axis energy / total energy; 0 for an all-zero filter (it sees nothing)."""
    total = energy.sum(axis=1)
    chromatic = energy[:, 1:].sum(axis=1)
    return np.divide(chromatic, total, out=np.zeros_like(total), where=total > 0)


def chromatic_share(energy: np.ndarray) -> float:
    """The whole layer's opponent-axis energy over its total energy (filters weighted by their energy)."""
    total = float(energy.sum())
    return float(energy[:, 1:].sum()) / total if total > 0 else 0.0


def colour_selectivity(colour: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """(C,) CSI from (k, C) activations on colour images and on their achromatic twins.

    ``1 - sum(gray) / sum(colour)`` clipped to [0, 1]: 0 when removing colour does not
    lower the response, 1 when it silences it. NaN (undefined) where the colour sum is
    not positive: a channel that never responds has no selectivity to measure.
    """
    colour_sum = colour.sum(axis=0, dtype=np.float64)
    gray_sum = gray.sum(axis=0, dtype=np.float64)
    ratio = np.divide(gray_sum, colour_sum, out=np.full_like(colour_sum, np.nan), where=colour_sum > 0)
    return np.clip(1.0 - ratio, 0.0, 1.0)


@dataclass(frozen=True)
class CsiSummary:
    """A layer's CSI over its channels whose CSI is defined."""

    channels: int
    defined: int
    csi_median: float | None
    selective_count: int
    selective_fraction: float | None


def csi_summary(csi: np.ndarray, threshold: float) -> CsiSummary:
    """Median CSI and the fraction of channels above ``threshold``, over channels whose CSI is defined."""
    defined = csi[~np.isnan(csi)]
    selective = int((defined > threshold).sum())
    return CsiSummary(
        channels=int(csi.size),
        defined=int(defined.size),
        csi_median=float(np.median(defined)) if defined.size else None,
        selective_count=selective,
        selective_fraction=selective / defined.size if defined.size else None,
    )


def per_image_modulation(values: np.ndarray) -> np.ndarray:
    """(n, C) spatial standard deviation away from the borders (where zero padding makes edges of its own)."""
    if values.ndim == 4:
        height, width = values.shape[2:]
        values = values[:, :, height // 8 : height - height // 8, width // 8 : width - width // 8]
    return values.reshape(values.shape[0], values.shape[1], -1).std(axis=2).astype(np.float32)


def pattern_figures(
    modulation: np.ndarray, mean: np.ndarray, names: tuple[str, ...]
) -> tuple[float | None, dict[str, float]]:
    """Per-layer figures from the pattern probes' (images, C) modulation and mean response:
    (isoluminant share, hue response).

    ``isoluminant_share``: the channels' mean modulation by the isoluminant grating over the
    sum of that and their modulation by the achromatic grating; 0 for a luminance-only layer,
    1 for one that sees only colour contrast, undefined (None) when neither modulates it.
    ``hue_response``: the channels' mean response to each uniform hue field.
    """
    index = {name: i for i, name in enumerate(names)}
    achromatic = float(modulation[index["achromatic_grating"]].mean())
    isoluminant = float(modulation[index["isoluminant_grating"]].mean())
    hues = [name for name in names if name.startswith("hue_field")]
    total = achromatic + isoluminant
    share = isoluminant / total if total > 0 else None
    return share, {name: float(mean[index[name]].mean()) for name in hues}
