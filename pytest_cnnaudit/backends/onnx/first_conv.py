"""The first conv's weights on the model's *external* input channels.

Between the image input and the first conv a graph may normalise the input itself
(``Sub`` a per-channel mean, ``Div`` by or ``Mul`` by a per-channel scale), reorder
channels (``Gather``, a ``Slice`` with step -1 for BGR), change the layout (``Transpose``),
or rearrange space into channels (YOLOv5/YOLOX "Focus": four ``Slice`` with step 2 and a
``Concat`` on channels, or ``SpaceToDepth``): 12 conv input channels are 4 x RGB. The
path is traced back from the conv's input to the image input, recording for each conv
input channel which external channel it reads, at which scale and at which offset of
the 2x2 space-to-depth block. The weights are then re-expressed on the external input:
the scale folds into them (a mean only shifts the bias), and a space-to-depth conv with a
k x k kernel becomes the equivalent 2k x 2k kernel on the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from .index import OnnxGraph
from .nodes import attribute

#: Ops between the input and the first conv that change neither channels nor their values.
PASS_THROUGH = frozenset({"Identity", "Cast", "Dropout", "Pad"})
AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})


@dataclass(frozen=True)
class InputChannel:
    """One channel of a traced tensor: ``scale * input[source]`` sampled at (2h + dy, 2w + dx) in blocks."""

    source: int
    scale: float = 1.0
    dy: int = 0
    dx: int = 0


@dataclass(frozen=True)
class InputLink:
    """A tensor between the image input and the first conv, in terms of the input."""

    axes: tuple[int, ...]  # axis i of the tensor is axis axes[i] of the input
    channels: tuple[InputChannel, ...]  # along the tensor's channel axis
    block: int = 1  # space-to-depth block size (1: none)

    def axis_of(self, input_axis: int) -> int:
        return self.axes.index(input_axis)


class _Tracer:
    def __init__(self, graph: OnnxGraph, input_name: str, layout: str, input_channels: int) -> None:
        self.graph = graph
        self.input_name = input_name
        self.channel_axis = 1 if layout == "NCHW" else 3
        self.spatial_axes = (2, 3) if layout == "NCHW" else (1, 2)
        self.input_channels = input_channels

    def link(self, tensor: str, depth: int = 0) -> InputLink | None:
        if tensor == self.input_name:
            return InputLink((0, 1, 2, 3), tuple(InputChannel(c) for c in range(self.input_channels)))
        node = self.graph.producer.get(tensor)
        if node is None or depth > 32:
            return None
        op = node.op_type
        if op in PASS_THROUGH:
            return self.link(node.input[0], depth + 1)
        if op == "Transpose":
            source = self.link(node.input[0], depth + 1)
            perm = list(attribute(node, "perm", []))  # type: ignore[arg-type]
            return replace(source, axes=tuple(source.axes[p] for p in perm)) if source and perm else None
        if op in AFFINE:
            return self._affine(node, depth)
        if op == "Slice":
            return self._slice(node, depth)
        if op == "Concat":
            return self._concat(node, depth)
        if op == "Gather":
            return self._gather(node, depth)
        if op == "SpaceToDepth":
            return self._space_to_depth(node, depth)
        return None

    def _per_channel(self, value: np.ndarray, link: InputLink) -> np.ndarray | None:
        """A constant broadcast against a 4-d tensor, as one value per channel (None: varies elsewhere)."""
        if value.ndim > 4:
            return None
        shape = (1,) * (4 - value.ndim) + value.shape
        axis = link.axis_of(self.channel_axis)
        if any(size != 1 for i, size in enumerate(shape) if i != axis):
            return None
        vector = np.asarray(value, np.float64).reshape(-1)
        return np.broadcast_to(vector, (len(link.channels),)) if vector.size in (1, len(link.channels)) else None

    def _affine(self, node: onnx.NodeProto, depth: int) -> InputLink | None:
        constants = [self.graph.constant(name) for name in node.input]
        if len(node.input) != 2 or sum(c is None for c in constants) != 1:
            return None
        data_at = 0 if constants[0] is None else 1
        source = self.link(node.input[data_at], depth + 1)
        value = constants[1 - data_at]
        vector = self._per_channel(value, source) if source is not None and value is not None else None
        if source is None or vector is None:
            return None
        if node.op_type in ("Add", "Sub"):
            factor = -np.ones_like(vector) if node.op_type == "Sub" and data_at == 1 else np.ones_like(vector)
        elif node.op_type == "Mul":
            factor = vector
        elif data_at == 0:  # x / s
            factor = 1.0 / vector
        else:  # s / x is not affine
            return None
        channels = tuple(replace(c, scale=c.scale * float(f)) for c, f in zip(source.channels, factor))
        return replace(source, channels=channels)

    def _slice(self, node: onnx.NodeProto, depth: int) -> InputLink | None:
        source = self.link(node.input[0], depth + 1)
        if source is None:
            return None
        if len(node.input) > 1:
            parts = [self.graph.constant(name) for name in node.input] + [None, None]
            starts, ends = parts[1], parts[2]
            if starts is None or ends is None:
                return None
            axes = parts[3] if parts[3] is not None else np.arange(starts.size)
            steps = parts[4] if parts[4] is not None else np.ones(starts.size, np.int64)
        else:  # opset < 10: attributes, step 1
            starts, ends = attribute(node, "starts"), attribute(node, "ends")
            axes = attribute(node, "axes", list(range(len(starts))))  # type: ignore[arg-type]
            steps = [1] * len(starts)  # type: ignore[arg-type]
        link = source
        for start, end, axis, step in zip(*(np.asarray(v).tolist() for v in (starts, ends, axes, steps))):
            link = self._slice_axis(link, int(start), int(end), int(axis) % 4, int(step))
            if link is None:
                return None
        return link

    def _slice_axis(self, link: InputLink, start: int, end: int, axis: int, step: int) -> InputLink | None:
        """Channels sliced (any step); a spatial axis cropped (step 1) or sampled every other pixel (step 2)."""
        input_axis = link.axes[axis]
        if input_axis == self.channel_axis:
            return replace(link, channels=tuple(link.channels[slice(start, end, step)]))
        if input_axis not in self.spatial_axes:
            return None
        if step == 1:
            return link  # a crop: every pixel keeps its channels
        if step != 2 or start not in (0, 1) or link.block not in (1, 2):
            return None
        field = "dy" if input_axis == self.spatial_axes[0] else "dx"
        if any(getattr(c, field) for c in link.channels):
            return None
        return replace(link, block=2, channels=tuple(replace(c, **{field: start}) for c in link.channels))

    def _concat(self, node: onnx.NodeProto, depth: int) -> InputLink | None:
        parts = [self.link(name, depth + 1) for name in node.input]
        if any(p is None for p in parts):
            return None
        first = parts[0]
        axis = int(attribute(node, "axis", 1)) % 4  # type: ignore[arg-type]
        if first.axes[axis] != self.channel_axis or any(p.axes != first.axes for p in parts):  # type: ignore[union-attr]
            return None
        # One block size for all parts: space-to-depth parts concatenated with plain ones are no one conv on the image.
        blocks = {p.block for p in parts}  # type: ignore[union-attr]
        if len(blocks) != 1:
            return None
        return replace(first, channels=tuple(c for p in parts for c in p.channels))  # type: ignore[union-attr]

    def _gather(self, node: onnx.NodeProto, depth: int) -> InputLink | None:
        source = self.link(node.input[0], depth + 1)
        indices = self.graph.constant(node.input[1])
        axis = int(attribute(node, "axis", 0)) % 4  # type: ignore[arg-type]
        if source is None or indices is None or indices.ndim != 1 or source.axes[axis] != self.channel_axis:
            return None
        return replace(source, channels=tuple(source.channels[int(i)] for i in indices))

    def _space_to_depth(self, node: onnx.NodeProto, depth: int) -> InputLink | None:
        source = self.link(node.input[0], depth + 1)
        size = int(attribute(node, "blocksize", 0))  # type: ignore[arg-type]
        if source is None or size != 2 or source.block != 1 or source.axes != (0, 1, 2, 3) or self.channel_axis != 1:
            return None
        channels = tuple(replace(c, dy=dy, dx=dx) for dy in range(2) for dx in range(2) for c in source.channels)
        return replace(source, channels=channels, block=2)


def external_weight(
    graph: OnnxGraph, conv: onnx.NodeProto, weight: np.ndarray, input_name: str, layout: str, input_channels: int
) -> np.ndarray | None:
    """``weight`` (out, in, kh, kw) re-expressed on the image input, or None when the path is not traceable."""
    tracer = _Tracer(graph, input_name, layout, input_channels)
    link = tracer.link(conv.input[0])
    expected = (tracer.channel_axis, *tracer.spatial_axes)
    if link is None or tuple(link.axes[1:]) != expected or len(link.channels) != weight.shape[1]:
        return None
    out, _, height, width = weight.shape
    block = link.block
    unfolded = np.zeros((out, input_channels, block * height, block * width), np.float64)
    for index, channel in enumerate(link.channels):
        rows = slice(channel.dy, block * height, block)
        columns = slice(channel.dx, block * width, block)
        unfolded[:, channel.source, rows, columns] += channel.scale * weight[:, index].astype(np.float64)
    return unfolded
