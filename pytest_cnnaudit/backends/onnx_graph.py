"""Find conv layers and their activations in an ONNX graph (pure graph walking, no runtime).

Exporters are messy, so the walk from a Conv's output goes through channel-
preserving ops (BatchNormalization, a residual Add, Mul/Div by constants,
Identity, Transpose that keeps track of the channel axis) until it meets an
activation. Decomposed activations are recognised as a whole: SiLU as
``x * Sigmoid(x)``, HardSwish as ``x * Clip(x + 3, 0, 6) / 6`` or
``x * HardSigmoid(x)``; the Clip inside a HardSwish is not a ReLU6.
Weights may be initializers, ``Constant`` nodes, or initializers that are also
listed as graph inputs (old IR versions).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .base import LayerInfo

CONV_OPS = ("Conv", "ConvTranspose")
#: ONNX op -> activation kind, for ops that are an activation on their own.
ACTIVATION_OPS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "PRelu": "prelu",
    "HardSwish": "hardswish",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hard_sigmoid",
    "Elu": "elu",
    "Selu": "selu",
    "Celu": "celu",
    "Gelu": "gelu",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Mish": "mish",
    "ThresholdedRelu": "thresholded_relu",
}
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
        "Transpose",
        "MaxPool",  # max-pooling commutes with a ReLU after it: the same units are dead either way
    }
)


@dataclass
class OnnxGraph:
    """Indexes over one graph: producers, consumers and constant values."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            if node.op_type == "Constant" and node.attribute:
                self.constants[node.output[0]] = _constant_value(node)

    @property
    def image_inputs(self) -> list[onnx.ValueInfoProto]:
        """Graph inputs that are not initializers (old IR versions list weights as inputs too)."""
        return [i for i in self.model.graph.input if i.name not in self.constants]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant, looking through Identity/Cast nodes."""
        while name not in self.constants:
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Cast") or not node.input:
                return None
            name = node.input[0]
        return self.constants[name]

    def scalar(self, name: str) -> float | None:
        value = self.constant(name) if name else None
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attribute = node.attribute[0]
    if attribute.name == "value":
        return numpy_helper.to_array(attribute.t)
    if attribute.name in ("value_float", "value_int"):
        return np.array(onnx.helper.get_attribute_value(attribute))
    if attribute.name in ("value_floats", "value_ints"):
        return np.array(list(onnx.helper.get_attribute_value(attribute)))
    return np.array([])


def _attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _clip_bounds(graph: OnnxGraph, node: onnx.NodeProto) -> tuple[float | None, float | None]:
    """Clip's min/max: inputs since opset 11, attributes before."""
    if len(node.input) > 1 or _attribute(node, "min") is None:
        low = graph.scalar(node.input[1]) if len(node.input) > 1 else None
        high = graph.scalar(node.input[2]) if len(node.input) > 2 else None
        return low, high
    return _attribute(node, "min"), _attribute(node, "max")  # type: ignore[return-value]


def _only(nodes: list[onnx.NodeProto], op_type: str) -> list[onnx.NodeProto]:
    return [n for n in nodes if n.op_type == op_type]


def _other_input(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _decomposed_activation(graph: OnnxGraph, tensor: str) -> tuple[str, str] | None:
    """SiLU / HardSwish written as primitive ops on ``tensor``: (kind, output tensor)."""
    consumers = graph.consumers.get(tensor, [])
    for gate in consumers:
        if gate.op_type in ("Sigmoid", "HardSigmoid"):
            for mul in _only(graph.consumers.get(gate.output[0], []), "Mul"):
                if tensor in mul.input:
                    return ("silu" if gate.op_type == "Sigmoid" else "hardswish"), mul.output[0]
        if gate.op_type == "Add" and graph.scalar(_other_input(gate, tensor)) == 3.0:
            for clip in graph.consumers.get(gate.output[0], []):
                bounds = _clip_bounds(graph, clip) if clip.op_type == "Clip" else None
                if bounds != (0.0, 6.0):
                    continue
                for mul in _only(graph.consumers.get(clip.output[0], []), "Mul"):
                    if tensor in mul.input:
                        return "hardswish", _after_scaling(graph, mul.output[0])
    for mul in _only(consumers, "Mul"):
        # x * (Clip(x + 3, 0, 6) / 6): the gate is divided before the product.
        gate = graph.producer.get(_other_input(mul, tensor))
        if gate is not None and gate.op_type in ("Div", "Mul"):
            clip = graph.producer.get(gate.input[0])
            if clip is not None and clip.op_type == "Clip" and _clip_bounds(graph, clip) == (0.0, 6.0):
                return "hardswish", mul.output[0]
    return None


def _after_scaling(graph: OnnxGraph, tensor: str) -> str:
    """Step over the trailing ``/ 6`` (or ``* 1/6``) of a decomposed HardSwish."""
    consumers = graph.consumers.get(tensor, [])
    single = consumers[0] if len(consumers) == 1 else None
    if (
        single is not None
        and single.op_type in ("Div", "Mul")
        and graph.scalar(_other_input(single, tensor)) is not None
    ):
        return single.output[0]
    return tensor


def _direct_activation(graph: OnnxGraph, node: onnx.NodeProto) -> str | None:
    if node.op_type in ACTIVATION_OPS:
        return ACTIVATION_OPS[node.op_type]
    if node.op_type == "Clip":
        low, high = _clip_bounds(graph, node)
        if low == 0.0:
            return "relu6" if high == 6.0 else "clip"
    return None


def find_activation(graph: OnnxGraph, tensor: str, channel_axis: int = 1) -> tuple[str, str, int] | None:
    """Walk from a conv output to its activation: (kind, activation tensor, channel axis)."""
    for _ in range(32):  # a bound against pathological graphs; real chains are a few ops long
        decomposed = _decomposed_activation(graph, tensor)
        if decomposed is not None:
            return decomposed[0], decomposed[1], channel_axis
        consumers = graph.consumers.get(tensor, [])
        activations = [(n, _direct_activation(graph, n)) for n in consumers]
        activations = [(n, kind) for n, kind in activations if kind is not None]
        if activations:
            node, kind = activations[0]
            return kind, node.output[0], channel_axis
        if len(consumers) != 1 or consumers[0].op_type not in CHANNEL_PRESERVING:
            return None
        node = consumers[0]
        if node.op_type == "Transpose":
            perm = list(_attribute(node, "perm", []))  # type: ignore[arg-type]
            if channel_axis not in perm:
                return None
            channel_axis = perm.index(channel_axis)
        tensor = node.output[0]
    return None


def _conv_channels(graph: OnnxGraph, node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int | None:
    weight = graph.constant(node.input[1])
    if weight is not None and weight.ndim >= 3:
        if node.op_type == "ConvTranspose":
            return int(weight.shape[1]) * int(_attribute(node, "group", 1))  # type: ignore[arg-type]
        return int(weight.shape[0])
    shape = shapes.get(node.output[0])
    return shape[1] if shape and len(shape) > 1 else None


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes from ONNX shape inference (unknown dims as None); empty when inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    shapes: dict[str, list[int | None]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def conv_layers(graph: OnnxGraph) -> tuple[tuple[LayerInfo, ...], dict[str, int]]:
    """Every Conv/ConvTranspose with its activation, and each measured tensor's channel axis."""
    shapes = tensor_shapes(graph.model)
    layers: list[LayerInfo] = []
    axes: dict[str, int] = {}
    seen: set[str] = set()
    for node in graph.model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        layer_id = node.name or node.output[0]
        if layer_id in seen:
            layer_id = f"{layer_id}:{node.output[0]}"
        seen.add(layer_id)
        found = find_activation(graph, node.output[0])
        kind, tensor, axis = found if found is not None else (None, None, 1)
        if tensor is not None:
            axes[tensor] = axis
        channels = _conv_channels(graph, node, shapes) or 0
        layers.append(LayerInfo(id=layer_id, op=node.op_type, activation=kind, channels=channels, tensor=tensor))
    return tuple(layers), axes


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
    epsilon = float(_attribute(norm, "epsilon", 1e-5))  # type: ignore[arg-type]
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
