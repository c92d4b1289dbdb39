"""Provably dead channels: no input in the box can switch them on. No image and no runtime pass.

The box is what the input spec allows: every pixel in [0, 1] before the model's own transform
(channel order, scale, mean/std, layout; :func:`~pytest_cnnaudit.engine.probes.to_model_input`),
so in model-input space each channel lies in ``[(0*scale - mean)/std, (1*scale - mean)/std]``
(a GRAY input's luma of [0, 1] pixels lies in [0, 1] too). Bounds of each conv layer's
pre-activation (the tensor its activation reads, after any BatchNorm, residual Add or MaxPool
the graph walk stepped over) come from the ONNX evaluator (:mod:`.intervals_onnx`, numpy) or,
for torch models, from the same rules over the exported graph (:mod:`.intervals_torch`).

A channel is provably dead when its upper bound, over every position, is at or below 0, less a
margin for the runtime's own float32 rounding, and its activation outputs at most 0 wherever
its input is at most 0 (ReLU, ReLU6, Clip(0, ...), HardSwish, SiLU, GELU, Mish; not LeakyReLU or
PReLU, whose slopes may be negative, nor the ELU family). A layer is *reached* when its
pre-activation (its conv's output, when no activation follows) has finite bounds: past an op
without a rule, or where the bounds overflow, the proof says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backends.base import ModelGraph
from ...backends.reductions import single_threaded_blas
from ...config.model import InputSpec

#: Activations whose output is <= 0 wherever their input is <= 0.
ZERO_AT_NON_POSITIVE = frozenset({"relu", "relu6", "clip", "hardswish", "silu", "gelu", "mish"})
#: Relative margin for the runtime's float32 rounding: a bound this close to 0 proves nothing.
ROUNDING_MARGIN = 1e-5
#: Every pixel of a probe image lies in this range before the input spec's transform.
PIXEL_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class LayerCertificate:
    """What the input box proves about one conv layer."""

    layer_id: str
    # (C,) highest pre-activation (the conv's output when no activation follows) over the box and every
    # position; None: not reached
    upper: np.ndarray | None
    provably_dead: tuple[int, ...]

    @property
    def reached(self) -> bool:
        return self.upper is not None


@dataclass(frozen=True)
class Certificate:
    """Every layer's certificate, and the nodes the proof could not pass (why a layer is not reached)."""

    layers: dict[str, LayerCertificate]
    stopped: tuple[str, ...]


def input_box(spec: InputSpec, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every image the spec allows, in model-input space: (lower, upper), each of the input's full shape."""
    channels = 1 if spec.channels == "GRAY" else 3
    mean = np.broadcast_to(np.asarray(spec.mean if spec.mean is not None else 0.0, np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec.std if spec.std is not None else 1.0, np.float64), (channels,))
    low, high = ((np.float64(p) * spec.scale - mean) / std for p in PIXEL_RANGE)
    height, width = spec.size  # type: ignore[misc]
    nchw = spec.layout != "NHWC"
    shape = (batch, channels, 1, 1) if nchw else (batch, 1, 1, channels)
    full = (batch, channels, height, width) if nchw else (batch, height, width, channels)
    return np.broadcast_to(low.reshape(shape), full).copy(), np.broadcast_to(high.reshape(shape), full).copy()


def dead_channels(lower: np.ndarray, upper: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(per channel, the highest upper bound over every other axis; channels whose upper bound stays
    below 0 by more than the rounding margin)."""
    axes = tuple(a for a in range(upper.ndim) if a != axis)
    magnitude = np.maximum(np.abs(lower), np.abs(upper)).max(axis=axes)
    highest = upper.max(axis=axes)
    return highest, tuple(int(c) for c in np.flatnonzero(highest <= -ROUNDING_MARGIN * (magnitude + 1)))


def certify(graph: ModelGraph, spec: InputSpec, activations: dict[str, str | None]) -> Certificate:
    """Bounds from the input box for every layer of ``graph``.

    ``activations`` maps layer ids to their activation kind (``LayerInfo.activation``); only
    layers whose pre-activation is known and whose kind is in :data:`ZERO_AT_NON_POSITIVE` can
    have channels proved dead; every layer can be reached.
    """
    bounded = {layer_id: layer.preactivation or layer.conv for layer_id, layer in graph.layers.items()}
    wanted = set(bounded.values())
    lower, upper = input_box(spec, graph.fixed_batch or 1)
    with single_threaded_blas():
        if graph.kind == "onnx":
            bounds, stopped = _onnx_bounds(graph, lower, upper, wanted)
        else:
            bounds, stopped = _torch_bounds(graph, lower, upper, wanted)
    layers = {}
    for layer_id, tensors in graph.layers.items():
        found = bounds.get(bounded[layer_id])
        if found is None or not (np.isfinite(found[0]).all() and np.isfinite(found[1]).all()):
            layers[layer_id] = LayerCertificate(layer_id, None, ())
            continue
        highest, dead = dead_channels(*found, tensors.channel_axis)
        provable = tensors.preactivation is not None and activations.get(layer_id) in ZERO_AT_NON_POSITIVE
        layers[layer_id] = LayerCertificate(layer_id, highest, dead if provable else ())
    return Certificate(layers, stopped)


def _onnx_bounds(
    graph: ModelGraph, lower: np.ndarray, upper: np.ndarray, wanted: set[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    from ...backends.onnx.index import OnnxGraph
    from .intervals import Bounds
    from .intervals_onnx import propagate

    (image,) = OnnxGraph(graph.graph).image_inputs
    found = propagate(graph.graph, {image.name: Bounds(lower, upper)}, keep=wanted)
    return {name: (value.lower, value.upper) for name, value in found.items()}, found.stopped


def _torch_bounds(
    graph: ModelGraph, lower: np.ndarray, upper: np.ndarray, wanted: set[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    import torch

    from .intervals_torch import propagate

    found, stopped = propagate(graph.graph, torch.from_numpy(lower), torch.from_numpy(upper), wanted)
    return {name: (value.lower.numpy(), value.upper.numpy()) for name, value in found.items()}, stopped
