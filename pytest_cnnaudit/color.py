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
  Vanrell). For each channel, its top :data:`stats.TOP_IMAGES` probe images by per-image
  maximum activation (kept by the main pass, not rerun) are run again as their
  achromatic twins (each pixel replaced by its Rec. 601 luma, :func:`probes.grayscale`),
  and ``CSI = 1 - sum(gray maxima) / sum(colour maxima)``, clipped to [0, 1]. A channel
  whose colour sum is not positive has no defined CSI and is left out of the profile.

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

The first half of this module is pure numpy; :class:`ColorAnalysis` runs the extra
passes and turns the figures into verdicts with :mod:`pytest_cnnaudit.checks.color`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.base import Backend, LayerInfo
from .checks.color import check_first_layer, check_layer_bound, combine
from .config import AuditConfig, InputSpec, LayerColorBound, ModelSpec
from .measure import run_padded
from .probes import ProbeSet, grayscale, pattern_probes, to_model_input
from .result import Verdict
from .stats import TOP_IMAGES

if TYPE_CHECKING:
    from .audit import AuditContext

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


def csi_summary(csi: np.ndarray, threshold: float) -> dict[str, Any]:
    """Median CSI and the fraction of channels above ``threshold``, over channels whose CSI is defined."""
    defined = csi[~np.isnan(csi)]
    selective = int((defined > threshold).sum())
    return {
        "channels": int(csi.size),
        "defined": int(defined.size),
        "csi_median": float(np.median(defined)) if defined.size else None,
        "selective_count": selective,
        "selective_fraction": selective / defined.size if defined.size else None,
    }


def per_image_max(values: np.ndarray) -> np.ndarray:
    """(n, C) spatial maxima of an (n, C, *spatial) activation batch."""
    return values.reshape(values.shape[0], values.shape[1], -1).max(axis=2).astype(np.float32)


def per_image_modulation(values: np.ndarray) -> np.ndarray:
    """(n, C) spatial standard deviation away from the borders (where zero padding makes edges of its own)."""
    if values.ndim == 4:
        height, width = values.shape[2:]
        values = values[:, :, height // 8 : height - height // 8, width // 8 : width - width // 8]
    return values.reshape(values.shape[0], values.shape[1], -1).std(axis=2).astype(np.float32)


def pattern_figures(modulation: np.ndarray, mean: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Per-layer figures from the pattern probes' (images, C) modulation and mean response.

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
    return {
        "isoluminant_share": isoluminant / total if total > 0 else None,
        "hue_response": {name: float(mean[index[name]].mean()) for name in hues},
    }


# --------------------------------------------------------------------------- the extra passes


Reduction = Callable[[np.ndarray], np.ndarray]


def run_reduced(backend: Backend, batches: Iterable[np.ndarray], reductions: dict[str, Reduction]) -> dict:
    """Run RGB batches through the model; ``{tensor key: {name: (images, C) reduction}}``.

    Each activation batch is reduced as it arrives and dropped, as in the main pass.
    """
    parts: dict[str, dict[str, list[np.ndarray]]] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        values = np.moveaxis(activation, channel_axis, 1)
        slot = parts.setdefault(key, {name: [] for name in reductions})
        for name, reduce in reductions.items():
            slot[name].append(reduce(values))

    for batch in batches:
        run_padded(backend, to_model_input(batch, backend.input_spec), sink)
    return {key: {name: np.concatenate(chunks) for name, chunks in slot.items()} for key, slot in parts.items()}


def _chunks(images: np.ndarray | list[int], size: int) -> Iterator[Any]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


def gray_pass(backend: Backend, probes: ProbeSet, indices: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """(len(indices), C) per-image maxima of every measured tensor on the achromatic twins of probe ``indices``."""
    size = backend.fixed_batch or batch_size
    batches = (grayscale(np.stack([probes.image(int(i)) for i in chunk])) for chunk in _chunks(indices, size))
    return {key: value["max"] for key, value in run_reduced(backend, batches, {"max": per_image_max}).items()}


def pattern_pass(backend: Backend, batch_size: int) -> tuple[dict[str, dict[str, np.ndarray]], tuple[str, ...]]:
    """Modulation and mean response of every measured tensor to :func:`probes.pattern_probes`."""
    images, names = pattern_probes(backend.input_spec.size)  # type: ignore[arg-type]
    reductions: dict[str, Reduction] = {
        "modulation": per_image_modulation,
        "mean": lambda values: values.reshape(values.shape[0], values.shape[1], -1).mean(axis=2),
    }
    return run_reduced(backend, _chunks(images, backend.fixed_batch or batch_size), reductions), names


def first_conv_id(layers: tuple[LayerInfo, ...]) -> str | None:
    """The first Conv layer in graph order: known before measuring, so it can name an item."""
    return next((layer.id for layer in layers if layer.op == "Conv"), None)


class ColorAnalysis:
    """``color[<first conv>]`` plus ``color[<layer>]`` for layers matched by ``checks.color.layers``.

    Costs one extra pass of the achromatic twins of the probe images that are top
    images of some channel (with many channels, all of them) and one small batch of
    pattern probes; reuses the main pass's per-image maxima for the colour side.
    """

    name = "color"

    def plan(self, config: AuditConfig, spec: ModelSpec, layers: tuple[LayerInfo, ...]) -> list[str | None]:
        first = first_conv_id(layers)
        planned: list[str | None] = []
        for layer in layers:
            colour = config.checks_for(spec, layer.id).color
            if colour.enabled and (layer.id == first or _bounds_for(colour.layers, layer.id)):
                planned.append(layer.id)
        return planned

    def run(self, context: AuditContext) -> tuple[list[Verdict], dict[str, Any]]:
        backend = context.backend
        planned = self.plan(context.config, context.spec, backend.layers)
        if not (planned or context.config.checks_for(context.spec).color.enabled):
            return [], {}
        if backend.input_spec.channels == "GRAY":
            return [Verdict("color", layer_id, "skipped", GRAY_INPUT_REASON) for layer_id in planned], {}
        csi, gray_images = self._csi(context)
        patterns, names = pattern_pass(backend, context.batch_size)
        first = self._first_layer(backend, first_conv_id(backend.layers))
        profile = {**self._profile(context, csi, patterns, names, first), "gray_images": gray_images}
        verdicts = [self._verdict(context, layer_id, csi, first) for layer_id in planned]  # type: ignore[arg-type]
        return verdicts, {"color_profile": profile}

    @staticmethod
    def _csi(context: AuditContext) -> tuple[dict[str, np.ndarray], int]:
        """Every measured layer's (C,) CSI, and how many achromatic twins the one extra pass ran."""
        measured = [layer for layer in context.layers if layer.stats is not None]
        if not measured:
            return {}, 0
        needed = np.unique(np.concatenate([layer.stats.top_images.ravel() for layer in measured]))
        gray_max = gray_pass(context.backend, context.probes, needed, context.batch_size)
        row = np.full(context.probes.count, -1)
        row[needed] = np.arange(needed.size)
        tensors = {info.id: info.tensor for info in context.backend.layers}
        csi = {}
        for layer in measured:
            top = layer.stats.top_images  # (k, C)
            channels = np.arange(top.shape[1])[None, :]
            gray = gray_max[tensors[layer.id]][row[top], channels]
            csi[layer.id] = colour_selectivity(layer.stats.top_max, gray)
        return csi, int(needed.size)

    @staticmethod
    def _first_layer(backend: Backend, planned_id: str | None) -> np.ndarray | str:
        """The first conv's (out, 3) opponent-axis energies of its weights on raw RGB, or why there are none."""
        found = backend.first_conv()
        if found is None:
            return "the first conv's weights are not constants of a 2-d conv, so they cannot be read"
        if found.layer_id != planned_id:
            return f"the image input reaches conv {found.layer_id} first, not {planned_id}"
        if found.weight.shape[1] != 3:
            return f"the first conv's filters see {found.weight.shape[1]} input channels, not 3 (a grouped conv?)"
        return opponent_energy(effective_rgb_weights(found.weight, backend.input_spec))

    @staticmethod
    def _profile(
        context: AuditContext,
        csi: dict[str, np.ndarray],
        patterns: dict[str, dict[str, np.ndarray]],
        names: tuple[str, ...],
        first: np.ndarray | str,
    ) -> dict[str, Any]:
        layers = []
        for info in context.backend.layers:
            threshold = context.config.checks_for(context.spec, info.id).color.first_layer.csi_threshold
            entry: dict[str, Any] = {"id": info.id, "csi_threshold": threshold}
            if info.id in csi:
                entry.update(csi_summary(csi[info.id], threshold))
            else:
                entry.update(channels=info.channels, defined=0, csi_median=None, selective_fraction=None)
            if info.tensor in patterns:
                reduced = patterns[info.tensor]
                entry.update(pattern_figures(reduced["modulation"], reduced["mean"], names))
            layers.append(entry)
        profile: dict[str, Any] = {
            "axes": dict(zip(OPPONENT_AXES, OPPONENT_BASIS.tolist())),
            "gray": "Rec. 601 luma on all three channels",
            "top_images": min(TOP_IMAGES, context.probes.count),
            "layers": layers,
        }
        if not isinstance(first, str):
            profile["first_layer"] = {
                "id": first_conv_id(context.backend.layers),
                "chromatic_fraction": chromatic_fraction(first).tolist(),
                "chromatic_share": chromatic_share(first),
                "axis_share": dict(zip(OPPONENT_AXES, (first.sum(axis=0) / max(first.sum(), 1e-300)).tolist())),
            }
        return profile

    @staticmethod
    def _verdict(context: AuditContext, layer_id: str, csi: dict[str, np.ndarray], first: np.ndarray | str) -> Verdict:
        skip = context.config.skip_reason(layer_id)
        if skip is not None:
            return Verdict("color", layer_id, "skipped", f"skipped by the config: {skip}")
        colour = context.config.checks_for(context.spec, layer_id).color
        threshold = colour.first_layer.csi_threshold
        summary = csi_summary(csi[layer_id], threshold) if layer_id in csi else None
        first_verdict = None
        if layer_id == first_conv_id(context.backend.layers):
            if isinstance(first, str):
                first_verdict = Verdict("color", layer_id, "skipped", f"not measurable: {first}")
            else:
                first_verdict = check_first_layer(
                    layer_id, chromatic_fraction(first), chromatic_share(first), colour.first_layer, summary
                )
        bounds = [
            check_layer_bound(layer_id, summary, bound, threshold)
            if summary is not None
            else Verdict("color", layer_id, "skipped", "not measurable: its activation was not measured")
            for bound in _bounds_for(colour.layers, layer_id)
        ]
        return combine(layer_id, first_verdict, bounds)


def _bounds_for(bounds: tuple[LayerColorBound, ...], layer_id: str) -> list[LayerColorBound]:
    return [bound for bound in bounds if fnmatch.fnmatchcase(layer_id, bound.match)]
