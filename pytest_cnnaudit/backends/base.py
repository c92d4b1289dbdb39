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
from typing import Protocol

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

    def close(self) -> None:
        """Release runtime resources."""


def check_finite_outputs(outputs: dict[str, np.ndarray], model: str) -> None:
    """A model whose output is NaN or infinite is broken whatever its activations say."""
    from ..errors import ModelError

    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise ModelError(f"{model}: the model's output {name!r} is NaN or infinite for some probe images")


def resolve_input_spec(configured: InputSpec, shape: tuple[int | None, ...] | None, model: str) -> InputSpec:
    """Fill the unset fields of ``configured`` from a 4-d input shape (None for unknown dims).

    Layout: NHWC when the last dim is 1 or 3 and dim 1 is not; NCHW otherwise.
    """
    from ..errors import ModelError

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
