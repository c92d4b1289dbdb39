"""The one measurement pass: probe batches through a backend into per-tensor accumulators."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends.base import ActivationSink, Backend
from ..errors import ModelError
from .probes import ProbeSet, to_model_input
from .stats import TOP_IMAGES, ChannelAccumulator, ChannelStats, NonFiniteActivations, single_threaded_blas


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


#: Peak memory of a batch, as a multiple of the measured activations it emits: the runtime's
#: other intermediates and the reductions' one-image temporaries come on top of them.
ACTIVATION_OVERHEAD = 2.0


def fit_batch_size(backend: Backend, probes: ProbeSet, batch_size: int, budget_mb: int) -> int:
    """The largest batch size up to ``batch_size`` whose activations fit ``budget_mb``.

    One probe image is run to weigh the activations a single image emits; a model
    whose single image (or fixed batch) does not fit is refused with the figures.
    """
    emitted = 0

    def weigh(key: str, activation: np.ndarray, channel_axis: int) -> None:
        nonlocal emitted
        emitted += activation.nbytes

    first = next(probes.batches(1))
    run_padded(backend, to_model_input(first, backend.input_spec), weigh)
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


def measure(
    backend: Backend,
    probes: ProbeSet,
    batch_size: int,
    zero_eps: float,
    progress: Callable[[int, int], None] | None = None,
    top_images: int = TOP_IMAGES,
) -> dict[str, ChannelStats]:
    """Statistics of every measured activation tensor, keyed by the backend's tensor key.

    Each batch is reduced inside the sink and dropped, so peak memory is one
    batch of activations however many probe images there are. ``progress(done, total)``
    is called before the first batch and after each one. ``top_images``: how many top images
    each channel keeps (0 when no check needs them).
    """
    accumulators: dict[str, ChannelAccumulator] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        try:
            accumulators.setdefault(key, ChannelAccumulator(zero_eps, top_images)).update(activation, channel_axis)
        except NonFiniteActivations as exc:
            layers = ", ".join(layer.id for layer in backend.layers if layer.tensor == key)
            raise ModelError(
                f"the activation of layer {layers} is NaN or infinite for {exc.images} probe image(s): "
                "NaN/inf weights or an input the model cannot take (check input.scale, mean, std)"
            ) from None

    if backend.fixed_batch is not None:
        batch_size = backend.fixed_batch
    done = 0
    if progress is not None:
        progress(done, probes.count)
    with single_threaded_blas():
        for batch in probes.batches(batch_size):
            run_padded(backend, to_model_input(batch, backend.input_spec), sink)
            done += batch.shape[0]
            if progress is not None:
                progress(done, probes.count)
    return {key: accumulator.result() for key, accumulator in accumulators.items()}
