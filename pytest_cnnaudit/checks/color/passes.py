"""The colour check's one extra run: the data-free pattern images, whose activation maps it reads whole.

The achromatic twins of the probe images are no longer a pass of their own: the main pass runs
them (``engine.measure``, ``checks.color.profile_images`` of them) and keeps each channel's top
images' twin maxima. The 10 pattern images need each map's spatial spread away from the borders,
which no in-runtime reduction gives, so they run with whole activations, a few at a time
(:data:`WHOLE_SHARE` of the main batch), each batch reduced as it arrives and dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...backends.base import Backend, LayerInfo
from ...engine.measure import run_padded
from ...engine.probes import pattern_probes, to_model_input
from .measures import per_image_modulation

Reduction = Callable[[np.ndarray], np.ndarray]


#: Pattern images per run, as a share of the main pass's batch: whole activations (each copied out of the
#: runtime) weigh several times what a reduced batch holds at its peak, so a quarter keeps the main pass's peak.
WHOLE_SHARE = 4


def run_whole(backend: Backend, images: np.ndarray, reductions: dict[str, Reduction], size: int) -> dict:
    """Run RGB ``images`` through the model ``size`` at a time; ``{tensor key: {name: (images, C) reduction}}``."""
    parts: dict[str, dict[str, list[np.ndarray]]] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        values = np.moveaxis(activation, channel_axis, 1)
        slot = parts.setdefault(key, {name: [] for name in reductions})
        for name, reduce in reductions.items():
            slot[name].append(reduce(values))

    for start in range(0, len(images), size):
        run_padded(backend, to_model_input(images[start : start + size], backend.input_spec), sink)
    return {key: {name: np.concatenate(chunks) for name, chunks in slot.items()} for key, slot in parts.items()}


def pattern_pass(backend: Backend, batch_size: int) -> tuple[dict[str, dict[str, np.ndarray]], tuple[str, ...]]:
    """Modulation and mean response of every measured tensor to :func:`probes.pattern_probes`, run with whole
    activations (:data:`WHOLE_SHARE`) next to a main pass of ``batch_size``."""
    images, names = pattern_probes(backend.input_spec.size)  # type: ignore[arg-type]
    reductions: dict[str, Reduction] = {
        "modulation": per_image_modulation,
        "mean": lambda values: values.reshape(values.shape[0], values.shape[1], -1).mean(axis=2),
    }
    size = backend.fixed_batch or max(1, batch_size // WHOLE_SHARE)
    return run_whole(backend, images, reductions, size), names


def first_conv_id(layers: tuple[LayerInfo, ...]) -> str | None:
    """The first Conv layer in graph order: known before measuring, so it can name an item."""
    return next((layer.id for layer in layers if layer.op == "Conv"), None)
