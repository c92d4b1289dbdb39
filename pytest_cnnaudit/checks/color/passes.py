"""The colour check's extra passes: the achromatic twins of the probe images, and the data-free patterns.

Each pass reduces every activation batch as it arrives (per image and channel) and drops it,
as the main pass does, so memory does not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ...backends.base import Backend, LayerInfo
from ...engine.measure import run_padded
from ...engine.probes import ProbeSet, grayscale, pattern_probes, to_model_input
from .measures import per_image_max, per_image_modulation

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
