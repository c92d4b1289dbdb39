"""The one measurement pass: probe batches through a backend into per-tensor accumulators.

The backend reduces each batch where its runtime keeps the activations (in the ONNX graph, on
the torch device) and hands over only (N, C) figures per measured tensor, so peak memory stays
near a bare pass's whatever the number of probe images. When the colour check is on, the
achromatic twins of an evenly spaced subset of the probe images are made beside their colour
images and run, in batches of the main pass's size, through the same runtime as they gather:
the colour profile costs that subset, not a second pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends.base import ActivationSink, Backend
from ..backends.reductions import PerImageReductions, ReducedSink, numpy_reductions, single_threaded_blas
from ..errors import ModelError
from .probes import ProbeSet, prefetched_batches, to_model_input
from .stats import TOP_IMAGES, ChannelAccumulator, ChannelStats, NonFiniteActivations


def run_padded(backend: Backend, batch: np.ndarray, sink: ActivationSink) -> None:
    """Run ``batch``; a model with a fixed batch size gets the short last batch padded
    with copies of its last image, and the padded rows never reach the statistics."""
    real = batch.shape[0]
    if backend.fixed_batch is None or real == backend.fixed_batch:
        backend.run(batch, sink)
        return
    padding = np.repeat(batch[-1:], backend.fixed_batch - real, axis=0)

    def real_rows(key: str, activation: np.ndarray, channel_axis: int) -> None:
        sink(key, activation[:real], channel_axis)

    backend.run(np.concatenate([batch, padding]), real_rows)


def run_padded_reduced(backend: Backend, batch: np.ndarray, eps: float, sink: ReducedSink) -> None:
    """:func:`run_padded` for the reductions. A runner that only hands over whole activations (the
    learning-rate probe's trainable copy) has them reduced in numpy as they arrive."""
    real = batch.shape[0]
    if backend.fixed_batch is not None and real != backend.fixed_batch:
        batch = np.concatenate([batch, np.repeat(batch[-1:], backend.fixed_batch - real, axis=0)])
    run_reduced = getattr(backend, "run_reduced", None)
    if run_reduced is None:
        backend.run(batch, lambda key, activation, axis: sink(key, numpy_reductions(activation[:real], axis, eps)))
    else:
        run_reduced(batch, eps, lambda key, reduced: sink(key, reduced.rows(real)))


#: Peak memory of a batch, as a multiple of the measured activations one image has: the runtime's
#: other intermediates and the reductions' temporaries come on top of them. Kept from when whole
#: activations left the runtime, so the budget picks the batch sizes it did; the reduced pass needs less.
ACTIVATION_OVERHEAD = 2.0


def fit_batch_size(backend: Backend, probes: ProbeSet, batch_size: int, budget_mb: int) -> int:
    """The largest batch size up to ``batch_size`` whose activations fit ``budget_mb``.

    One probe image is run to weigh the activations a single image has (from the reductions'
    shapes: positions x channels x bytes per value); a model whose single image (or fixed batch)
    does not fit is refused with the figures.
    """
    emitted = 0

    def weigh(key: str, reduced: PerImageReductions) -> None:
        nonlocal emitted
        emitted += reduced.positions * reduced.channels * reduced.itemsize

    first = next(probes.batches(1))
    run_padded_reduced(backend, to_model_input(first, backend.input_spec), 0.0, weigh)
    if emitted == 0:  # nothing measurable is emitted: the batch size only bounds the model's own memory
        return backend.fixed_batch or batch_size
    per_image = ACTIVATION_OVERHEAD * emitted * (backend.fixed_batch or 1) / 2**20
    if backend.fixed_batch is not None:
        if per_image > budget_mb:
            raise ModelError(
                f"one batch of this model (fixed at {backend.fixed_batch} images) needs about {per_image:.0f} MB "
                f"of activations, over runtime.memory_budget_mb {budget_mb}"
            )
        return backend.fixed_batch
    if per_image > budget_mb:
        size = "x".join(map(str, backend.input_spec.size or ()))
        raise ModelError(
            f"one {size} image needs about {per_image:.0f} MB of activations, over runtime.memory_budget_mb "
            f"{budget_mb}: raise the budget or lower models[].input.size"
        )
    return max(1, min(batch_size, int(budget_mb // per_image)))


def profile_indices(count: int, budget: int) -> np.ndarray:
    """``min(count, budget)`` probe indices spread evenly over ``range(count)``, ascending: the images
    whose achromatic twins the colour profile runs (all of them when there are at most ``budget``)."""
    if count <= budget:
        return np.arange(count)
    return np.unique(np.floor(np.arange(budget) * (count / budget)).astype(np.int64))


def non_finite(backend: Backend, key: str, images: int) -> ModelError:
    """The one line for NaN or infinite activations of tensor ``key`` in ``images`` probe images."""
    layers = ", ".join(layer.id for layer in backend.layers if layer.tensor == key)
    return ModelError(
        f"the activation of layer {layers} is NaN or infinite for {images} probe image(s): "
        "NaN/inf weights or an input the model cannot take (check input.scale, mean, std)"
    )


class _GrayTwins:
    """The colour profile's achromatic twins, gathered as their batches pass and run in batches of the main
    pass's size (not a few at a time after each batch: a runtime's cost per image falls with the batch)."""

    def __init__(self, backend: Backend, eps: float, batch_size: int, accumulators: dict[str, ChannelAccumulator]):
        self.backend, self.eps, self.batch_size, self.accumulators = backend, eps, batch_size, accumulators
        self.images = np.arange(0)
        self.inputs: list[np.ndarray] = []
        self.colour: dict[str, list[np.ndarray]] = {}

    def add(self, images: np.ndarray, inputs: np.ndarray, colour: dict[str, np.ndarray]) -> None:
        """Probe ``images`` (ascending, after every image added before), their twins' model ``inputs`` and
        the colour images' (n, C) maxima per tensor; runs every full batch gathered."""
        self.images = np.concatenate([self.images, images])
        self.inputs.append(inputs)
        for key, maxima in colour.items():
            self.colour.setdefault(key, []).append(maxima)
        while self.images.size >= self.batch_size:
            self.run(self.batch_size)

    def run(self, count: int | None = None) -> None:
        """Run the first ``count`` gathered twins (all of them: None) and merge them into the top images."""
        inputs = np.concatenate(self.inputs) if self.inputs else np.empty((0,))
        count = self.images.size if count is None else count
        if count == 0:
            return
        images, self.images = self.images[:count], self.images[count:]
        colour = {key: np.concatenate(parts) for key, parts in self.colour.items()}
        self.inputs = [inputs[count:]]
        self.colour = {key: [maxima[count:]] for key, maxima in colour.items()}

        def sink(key: str, reduced: PerImageReductions) -> None:
            if not (np.isfinite(reduced.sum).all() and np.isfinite(reduced.max).all()):
                raise non_finite(self.backend, key, count)
            self.accumulators[key].keep_top(images, colour[key][:count], reduced.max)

        run_padded_reduced(self.backend, inputs[:count], self.eps, sink)


def measure(
    backend: Backend,
    probes: ProbeSet,
    batch_size: int,
    zero_eps: float,
    progress: Callable[[int, int], None] | None = None,
    top_images: int = TOP_IMAGES,
    gray_twins: int = 0,
) -> dict[str, ChannelStats]:
    """Statistics of every measured activation tensor, keyed by the backend's tensor key.

    Each batch is reduced by the backend and dropped, so peak memory is one batch's however many
    probe images there are. ``progress(done, total)`` is called before the first batch and after
    each one. ``top_images``: how many top images each channel keeps (0 when no check needs them).
    ``gray_twins`` > 0: the achromatic twins of that many evenly spaced probe images
    (:func:`profile_indices`) run in the main pass too, and each channel's top images are chosen
    among those images, with their twins' maxima (``ChannelStats.top_gray``).
    """
    accumulators: dict[str, ChannelAccumulator] = {}
    profiled = profile_indices(probes.count, gray_twins) if gray_twins and top_images else np.arange(0)
    if backend.fixed_batch is not None:
        batch_size = backend.fixed_batch
    twins = _GrayTwins(backend, zero_eps, batch_size, accumulators)
    colour: dict[str, np.ndarray] = {}

    def sink(key: str, reduced: PerImageReductions) -> None:
        accumulator = accumulators.setdefault(key, ChannelAccumulator(zero_eps, top_images))
        try:
            accumulator.update_reduced(reduced, keep_top=not profiled.size)
        except NonFiniteActivations as exc:
            raise non_finite(backend, key, exc.images) from None
        if rows.size:
            colour[key] = reduced.max[rows]

    done = 0
    if progress is not None:
        progress(done, probes.count)
    with single_threaded_blas():
        batches = prefetched_batches(probes, batch_size, backend.input_spec, frozenset(profiled.tolist()))
        for model_input, twin_input in batches:
            members = profiled[(profiled >= done) & (profiled < done + model_input.shape[0])]
            rows = members - done
            run_padded_reduced(backend, model_input, zero_eps, sink)
            if rows.size:
                twins.add(members, twin_input, colour)
            done += model_input.shape[0]
            if progress is not None:
                progress(done, probes.count)
        twins.run()
    return {key: accumulator.result() for key, accumulator in accumulators.items()}
