"""The colour check's one extra run: the data-free pattern images, whose activation maps it reads whole.

The achromatic twins of the probe images are no longer a pass of their own: the main pass runs
them (``engine.measure``, ``checks.color.profile_images`` of them) and keeps each channel's top
images' twin maxima. The 10 pattern images need each map's spatial spread away from the borders,
which no in-runtime reduction gives, so they run one image at a time with whole activations
(one image's maps in memory, reduced as they arrive and dropped).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...backends.base import Backend, LayerInfo
from ...engine.measure import run_padded
from ...engine.probes import pattern_probes, to_model_input
from .measures import per_image_modulation

Reduction = Callable[[np.ndarray], np.ndarray]


def run_whole(backend: Backend, images: np.ndarray, reductions: dict[str, Reduction]) -> dict:
    """Run RGB ``images`` through the model one at a time; ``{tensor key: {name: (images, C) reduction}}``."""
    parts: dict[str, dict[str, list[np.ndarray]]] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        values = np.moveaxis(activation, channel_axis, 1)
        slot = parts.setdefault(key, {name: [] for name in reductions})
        for name, reduce in reductions.items():
            slot[name].append(reduce(values))

    for image in images:
        run_padded(backend, to_model_input(image[None], backend.input_spec), sink)
    return {key: {name: np.concatenate(chunks) for name, chunks in slot.items()} for key, slot in parts.items()}


def pattern_pass(backend: Backend) -> tuple[dict[str, dict[str, np.ndarray]], tuple[str, ...]]:
    """Modulation and mean response of every measured tensor to :func:`probes.pattern_probes`."""
    images, names = pattern_probes(backend.input_spec.size)  # type: ignore[arg-type]
    reductions: dict[str, Reduction] = {
        "modulation": per_image_modulation,
        "mean": lambda values: values.reshape(values.shape[0], values.shape[1], -1).mean(axis=2),
    }
    return run_whole(backend, images, reductions), names


def first_conv_id(layers: tuple[LayerInfo, ...]) -> str | None:
    """The first Conv layer in graph order: known before measuring, so it can name an item."""
    return next((layer.id for layer in layers if layer.op == "Conv"), None)
