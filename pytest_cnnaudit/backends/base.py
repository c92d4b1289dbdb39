"""The one narrow interface every backend (ONNX, torch) implements.

A backend knows how to open a model, which conv layers it has and which
activation tensor follows each, and how to run one batch in two ways: handing each
measured activation whole to a sink (pictures, one image at a time), or handing
its (N, C) reductions (:mod:`.reductions`), computed where the runtime keeps it (the
main pass). Everything else (probe images, statistics, checks) is backend-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..config import families
from ..config.inputs import InputSpec
from .reductions import ReducedSink

#: Rectifiers: a unit is inactive where the output is <= ``probe.zero_eps`` (0 by default) and a channel
#: dead when its output never exceeds it (for ReLU: the exact-zero count). Saturating activations have
#: no inactive region. The one list of both lives with the config's activation families.
RECTIFIERS = frozenset(families.RECTIFIERS)
SATURATING = frozenset(families.SATURATING)

#: Called with (tensor key, activation batch, channel axis) during a forward pass.
ActivationSink = Callable[[str, np.ndarray, int], None]


@dataclass(frozen=True)
class LayerInfo:
    """One conv layer and the activation measured for it."""

    id: str  # ONNX: Conv node name (or its output); torch: module qualified name
    op: str  # "Conv", "ConvTranspose"
    activation: str | None  # "relu", "relu6", "hardswish", "silu", ...; None: no activation follows
    channels: int
    tensor: str | None  # backend key of the measured activation tensor; shared by layers feeding one Add
    definition: str | None = None  # what counts as inactive, e.g. "output <= zero_eps"; None: not a rectifier
    reason: str | None = None  # why a conv is not measured when the activation alone does not say it


@dataclass(frozen=True)
class FirstConv:
    """The first conv layer the image input reaches, with weights on the model's input channels."""

    layer_id: str
    #: (out, in, kh, kw): weights on the model's *external* input channels, in the model's own order.
    #: In-graph input normalisation is folded in (its scale; a mean only shifts the bias), and a
    #: space-to-depth first layer is unfolded (12 channels = 4 x RGB become 3 channels, 2x the kernel).
    weight: np.ndarray


@dataclass(frozen=True)
class LayerTensors:
    """Where one conv layer sits in a :class:`ModelGraph`: tensor keys (ONNX tensor names, torch.fx node names)."""

    conv: str  # the conv's output
    activation: str | None  # the measured activation (``LayerInfo.tensor``)
    preactivation: str | None  # the tensor the activation reads; None when none follows or its input is not known
    channel_axis: int = 1


@dataclass(frozen=True)
class ModelGraph:
    """A private copy of the model's graph, without the measuring taps, for reading it rather than running it.

    What the dead-filter evidence needs: bounds propagated from the input box (no runtime), a
    differentiable torch form for the witness search, the weights each dead channel spends.
    """

    kind: str  # "onnx" (``graph`` is an onnx.ModelProto) or "torch.fx" (a torch.fx.GraphModule)
    graph: Any
    layers: dict[str, LayerTensors]  # by layer id
    fixed_batch: int | None  # the only batch size the graph accepts, if it has one


class Backend(Protocol):
    """An opened model, ready to measure."""

    format: str  # "onnx", "torchscript", "torch.export", "state_dict", "module"
    layers: tuple[LayerInfo, ...]
    fixed_batch: int | None  # the only batch size the model accepts, if it has one
    input_spec: InputSpec  # every field resolved (from the model, the config or defaults)
    notes: tuple[str, ...]  # one-line remarks on how the model was read (a stripped key prefix, ...)

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        """Run one batch of model input (``fixed_batch`` rows if set); call ``sink`` per measured tensor."""

    def run_reduced(self, batch: np.ndarray, eps: float, sink: ReducedSink) -> None:
        """Run one batch; call ``sink`` with each measured tensor's (N, C) reductions (active: ``> eps``)."""

    def first_conv(self) -> FirstConv | None:
        """The first conv layer's weights, or None when they are not constants."""

    def model_graph(self) -> ModelGraph:
        """A copy of the graph with each layer's conv, activation and pre-activation tensors."""

    def end_pass(self) -> None:
        """The main pass is over: drop what only it needs, so that it is not held while the checks judge
        (a later run makes what it needs again)."""

    def close(self) -> None:
        """Release runtime resources."""


def check_finite_outputs(outputs: dict[str, np.ndarray], model: str) -> None:
    """A model whose output is NaN or infinite is broken whatever its activations say."""
    from ..errors import ModelError

    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise ModelError(f"{model}: the model's output {name!r} is NaN or infinite for some probe images")


def resolve_input_spec(configured: InputSpec, shape: tuple[int | None, ...] | None, model: str) -> InputSpec:
    """Fill the unset fields of ``configured`` from the model's input shape (None for unknown dims).

    An image input (4-d): layout NHWC when the last dim is 1 or 3 and dim 1 is not, NCHW otherwise.
    A signal (N, C, L) or clip (N, C, T, H, W) input, from the model's shape or ``input.shape``:
    :func:`resolve_signal_spec`.
    """
    from ..errors import ModelError

    if configured.shape is not None or (shape is not None and len(shape) in (3, 5)):
        return resolve_signal_spec(configured, shape, model)
    layout = configured.layout
    channels_dim: int | None = None
    size: tuple[int, int] | None = None
    if shape is not None:
        if len(shape) != 4:
            raise ModelError(f"{model}: image input has shape {list(shape)}, expected 4 dimensions (N, C, H, W)")
        if layout is None:
            layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
        channels_dim, height, width = (
            (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
        )
        if height is not None and width is not None:
            size = (height, width)
    layout = layout or "NCHW"
    if configured.size is not None:
        if size is not None and tuple(configured.size) != size:
            raise ModelError(
                f"{model}: input.size {list(configured.size)} does not fit the model's fixed input {list(size)}"
            )
        size = configured.size
    if size is None:
        raise ModelError(f"{model}: the input size is not fixed in the model; set models[].input.size: [H, W]")
    channels = configured.channels
    if channels is None:
        channels = "GRAY" if channels_dim == 1 else "RGB"
    wanted = 1 if channels == "GRAY" else 3
    if channels_dim is not None and channels_dim != wanted:
        raise ModelError(f"{model}: input has {channels_dim} channels but input.channels is {channels}")
    for key, values in (("mean", configured.mean), ("std", configured.std)):
        if values is not None and len(values) not in (1, wanted):
            give = "give 1 value" if wanted == 1 else f"give {wanted} values, or 1 for all"
            raise ModelError(
                f"{model}: input.{key} has {len(values)} values but the model's input has {wanted} channel(s) "
                f"({channels}): {give}"
            )
    mean = configured.mean or (0.0,) * wanted
    std = configured.std or (1.0,) * wanted
    return InputSpec(
        size=size,
        layout=layout,
        channels=channels,
        scale=configured.scale,
        mean=tuple(mean) * (wanted // len(mean)),
        std=tuple(std) * (wanted // len(std)),
    )


def resolve_signal_spec(configured: InputSpec, shape: tuple[int | None, ...] | None, model: str) -> InputSpec:
    """A signal or clip input's shape without the batch axis, every dim known (the model's or ``input.shape``).

    A clip of 1 or 3 channels keeps the image fields (channel order, scale, mean, std), applied to each
    frame of the generated clips; a signal's probe is used as it is.
    """
    from ..errors import ModelError

    declared = tuple(shape[1:]) if shape is not None else None
    wanted = configured.shape
    fits = declared is None or wanted is None
    fits = fits or (len(declared) == len(wanted) and all(d is None or d == w for d, w in zip(declared, wanted)))
    if not fits:
        raise ModelError(f"{model}: input.shape {list(wanted)} does not fit the model's input {list(declared)}")  # type: ignore[arg-type]
    dims = wanted or declared
    if dims is None or any(d is None for d in dims):
        given = f"has shape {['N', *(d if d is not None else '?' for d in declared)]}" if declared else "is a signal"
        raise ModelError(
            f"{model}: the model's input {given}: set models[].input.shape: [C, L] (signal) or [C, T, H, W] (clip)"
        )
    channels = configured.channels
    if len(dims) == 4 and dims[0] in (1, 3):  # a clip of gray or colour frames: the image fields apply per frame
        channels = channels or ("GRAY" if dims[0] == 1 else "RGB")
        count = 1 if channels == "GRAY" else 3
        mean, std = configured.mean or (0.0,), configured.std or (1.0,)
        return InputSpec(
            channels=channels,
            scale=configured.scale,
            mean=tuple(mean) * (count // len(mean)),
            std=tuple(std) * (count // len(std)),
            shape=tuple(int(d) for d in dims),  # type: ignore[arg-type]
        )
    return InputSpec(shape=tuple(int(d) for d in dims))  # type: ignore[arg-type]


def sample_shape(spec: InputSpec) -> tuple[int, ...]:
    """One model input's shape without the batch axis: an image's (C, H, W) or (H, W, C), a signal's or clip's own."""
    if spec.shape is not None:
        return tuple(spec.shape)
    channels = 1 if spec.channels == "GRAY" else 3
    height, width = spec.size  # type: ignore[misc]
    return (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)
