"""Find conv layers and their activations in an ONNX graph (pure graph walking, no runtime).

Exporters are messy, so the walk from a Conv's output goes through channel-preserving
ops (BatchNormalization, a residual Add, Mul/Div, Identity, Cast, Transpose that keeps
track of the channel axis) until it meets an activation (:mod:`.activations`
recognises them, decomposed ones included). Quantised graphs are walked in their float
view (:mod:`.quantised`). Weights may be initializers, ``Constant`` nodes,
initializers that are also listed as graph inputs (old IR versions), or any subgraph over
constants (:mod:`.constants`).

Residual branches: a tensor may have several consumers (a residual ``Add``'s output feeds
the next block's conv and the block's own ``Mul -> Add -> Relu``). At each tensor, an
activation applied to that tensor itself ends the walk (it is the nearest); otherwise the
walk follows every channel-preserving consumer, and a path ends at its first activation or
where it meets any other op (a conv, an average pooling, a reshape). The conv's activation
is the one activation those paths reach; when they reach several different ones, the layer
is not measured and its ``reason`` names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..base import RECTIFIERS, LayerInfo
from .activations import decomposed_activation, direct_activation, negative_slope_prelu
from .index import OnnxGraph
from .nodes import attribute, has_subgraph, subgraphs
from .quantised import QUANTISED_CONV_WEIGHT
from .shapes import without_weights

CONV_OPS = ("Conv", "ConvTranspose")
#: Ops that keep one value per channel in place (the channel axis moves only through Transpose).
CHANNEL_PRESERVING = frozenset(
    {
        "BatchNormalization",
        "InstanceNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Identity",
        "Dropout",
        "Cast",  # ConvInteger's int32 output is cast to float before its scale and bias
        "Transpose",
        "MaxPool",  # max-pooling commutes with a ReLU after it: the same units are dead either way
    }
)
#: A bound against pathological graphs: tensors visited by one walk (real chains are a few ops long).
WALK_LIMIT = 64


@dataclass(frozen=True)
class Found:
    """An activation a conv's output reaches, and the channel axis of its output."""

    kind: str
    tensor: str  # in the float view
    channel_axis: int
    folded: bool = False  # a ReLU folded into an output quantisation
    pre_activation: bool = False  # measured before the activation (a PReLU with negative slopes)


def _at(graph: OnnxGraph, tensor: str, channel_axis: int) -> Found | None:
    """The activation applied to ``tensor`` itself, if any."""
    decomposed = decomposed_activation(graph, tensor)
    if decomposed is not None:
        return Found(decomposed.kind, decomposed.output, channel_axis)
    for node in graph.consumers.get(tensor, []):
        kind = direct_activation(graph, node)
        if kind is not None and negative_slope_prelu(graph, node):
            return Found(kind, tensor, channel_axis, pre_activation=True)
        if kind is not None:
            return Found(kind, node.output[0], channel_axis)
    if tensor in graph.clamped:
        return Found("relu", tensor, channel_axis, folded=True)
    return None


def reached_activations(graph: OnnxGraph, tensor: str, channel_axis: int = 1) -> list[Found]:
    """Every distinct activation reached from ``tensor`` along channel-preserving ops (module docstring)."""
    found: list[Found] = []
    stack, visited = [(tensor, channel_axis)], set()
    while stack and len(visited) < WALK_LIMIT:
        current, axis = stack.pop()
        if current in visited:
            continue
        visited.add(current)
        activation = _at(graph, current, axis)
        if activation is not None:
            if activation not in found:
                found.append(activation)
            continue
        for node in reversed(graph.consumers.get(current, [])):
            if node.op_type not in CHANNEL_PRESERVING:
                continue
            next_axis = axis
            if node.op_type == "Transpose":
                perm = list(attribute(node, "perm", []))  # type: ignore[arg-type]
                if axis not in perm:
                    continue
                next_axis = perm.index(axis)
            stack.append((node.output[0], next_axis))
    return found


def _weight(graph: OnnxGraph, node: onnx.NodeProto) -> np.ndarray | None:
    return graph.constant(node.input[1]) if len(node.input) > 1 else None


def _conv_channels(graph: OnnxGraph, node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int | None:
    weight = _weight(graph, node)
    if weight is not None and weight.ndim >= 3:
        if node.op_type == "ConvTranspose":
            return int(weight.shape[1]) * int(attribute(node, "group", 1))  # type: ignore[arg-type]
        return int(weight.shape[0])
    shape = shapes.get(node.output[0])
    return shape[1] if shape and len(shape) > 1 else None


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes from ONNX shape inference (unknown dims as None); empty when inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(without_weights(model))
    except Exception:
        return {}
    shapes: dict[str, list[int | None]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _definition(found: Found, measured: str) -> str | None:
    """What sparsity and dead filters count for this layer, in words (None: nothing, not a rectifier)."""
    if found.kind not in RECTIFIERS:
        return None
    if found.pre_activation:
        return "pre-activation <= zero_eps (a PReLU with negative slopes: its output is > 0 on both sides)"
    value = "output" if measured == found.tensor else "dequantised output"
    folded = " (a ReLU folded into its output quantisation: zero point at the integer minimum)"
    return f"{value} <= zero_eps{folded if found.folded else ''}"


class _LayerIds:
    """Node names as layer ids; an unnamed node is called by its output, a repeated name gets it appended."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, node: onnx.NodeProto) -> str:
        layer_id = node.name or node.output[0]
        if layer_id in self.seen:
            layer_id = f"{layer_id}:{node.output[0]}"
        self.seen.add(layer_id)
        return layer_id


def _conv_layer(
    graph: OnnxGraph, node: onnx.NodeProto, shapes: dict[str, list[int | None]], layer_id: str
) -> tuple[LayerInfo, int]:
    reached = reached_activations(graph, node.output[0])
    channels = _conv_channels(graph, node, shapes) or 0
    if len(reached) != 1:
        reason = None
        if reached:
            kinds = ", ".join(f"{found.kind} ({found.tensor})" for found in reached)
            reason = f"its output reaches {len(reached)} different activations ({kinds}): none is measured"
        return LayerInfo(layer_id, node.op_type, None, channels, None, reason=reason), 1
    found = reached[0]
    measured = graph.measured_tensor(found.tensor)
    info = LayerInfo(layer_id, node.op_type, found.kind, channels, measured, _definition(found, measured))
    return info, found.channel_axis


def _control_flow_convs(graph: OnnxGraph, node: onnx.NodeProto, ids: _LayerIds) -> list[LayerInfo]:
    """Convs inside an If/Loop/Scan (nested ones too): listed, not measured."""
    layers = []
    for name, body in subgraphs(node):
        where = f"inside the {name} of {node.op_type} {node.name or node.output[0]!r}"
        stored = {t.name: numpy_helper.to_array(t) for t in body.initializer}
        for inner in body.node:
            if inner.op_type in (*CONV_OPS, *QUANTISED_CONV_WEIGHT):
                weight_name = inner.input[QUANTISED_CONV_WEIGHT.get(inner.op_type, 1)]
                weight = stored.get(weight_name, graph.constant(weight_name))
                channels = int(weight.shape[0]) if weight is not None and weight.ndim >= 3 else 0
                reason = f"{where}: convs in control-flow bodies are not measured"
                layers.append(LayerInfo(ids(inner), inner.op_type, None, channels, None, reason=reason))
            elif has_subgraph(inner):
                layers.extend(_control_flow_convs(graph, inner, ids))
    return layers


def conv_layers(
    graph: OnnxGraph, shapes: dict[str, list[int | None]] | None = None
) -> tuple[tuple[LayerInfo, ...], dict[str, int]]:
    """Every conv layer with its activation, and each measured tensor's channel axis.

    Convs inside control-flow bodies come last, listed with the reason they are not measured.
    ``shapes``: from :func:`tensor_shapes`, when the caller ran shape inference already.
    """
    shapes = tensor_shapes(graph.model) if shapes is None else shapes
    ids = _LayerIds()
    layers: list[LayerInfo] = []
    unmeasured: list[LayerInfo] = []
    axes: dict[str, int] = {}
    for node in graph.nodes:
        if node.op_type in CONV_OPS:
            info, axis = _conv_layer(graph, node, shapes, ids(node))
            layers.append(info)
            if info.tensor is not None:
                axes[info.tensor] = axis
        elif has_subgraph(node):
            unmeasured.extend(_control_flow_convs(graph, node, ids))
    return tuple(layers + unmeasured), axes


def batch_norm_scale(graph: OnnxGraph, conv: onnx.NodeProto) -> np.ndarray | None:
    """Per-channel scale of a BatchNormalization that alone consumes ``conv``'s output, if any.

    Exporters fold BatchNorm into the Conv before it or keep it separate; weight-based verdicts
    scale the conv weights by this so both forms of one network give the same figures.
    """
    consumers = graph.consumers.get(conv.output[0], [])
    if len(consumers) != 1 or consumers[0].op_type != "BatchNormalization":
        return None
    norm = consumers[0]
    gamma, variance = graph.constant(norm.input[1]), graph.constant(norm.input[4])
    if gamma is None or variance is None:
        return None
    epsilon = float(attribute(norm, "epsilon", 1e-5))  # type: ignore[arg-type]
    return (gamma / np.sqrt(variance + epsilon)).astype(np.float64)


def first_conv_node(graph: OnnxGraph, input_name: str) -> onnx.NodeProto | None:
    """The first Conv the image input reaches (breadth-first through any op)."""
    frontier, visited = [input_name], set()
    while frontier:
        tensor = frontier.pop(0)
        for node in graph.consumers.get(tensor, []):
            if node.op_type == "Conv":
                return node
            for out in node.output:
                if out not in visited:
                    visited.add(out)
                    frontier.append(out)
    return None
