"""The one measurement pass: probe batches through a backend into per-tensor accumulators."""

from __future__ import annotations

import numpy as np

from .backends.base import ActivationSink, Backend
from .probes import ProbeSet, to_model_input
from .stats import ChannelAccumulator, ChannelStats


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


def measure(backend: Backend, probes: ProbeSet, batch_size: int, zero_eps: float) -> dict[str, ChannelStats]:
    """Statistics of every measured activation tensor, keyed by the backend's tensor key.

    Each batch is reduced inside the sink and dropped, so peak memory is one
    batch of activations however many probe images there are.
    """
    accumulators: dict[str, ChannelAccumulator] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        accumulators.setdefault(key, ChannelAccumulator(zero_eps)).update(activation, channel_axis)

    if backend.fixed_batch is not None:
        batch_size = backend.fixed_batch
    for batch in probes.batches(batch_size):
        run_padded(backend, to_model_input(batch, backend.input_spec), sink)
    return {key: accumulator.result() for key, accumulator in accumulators.items()}
