"""Where each conv layer sits in an ONNX graph, for reading the graph rather than running it.

The graph walk (:mod:`.graph`) finds the activation tensor each layer is measured at; bound
propagation needs the tensor that activation *reads* (its pre-activation: after a BatchNorm,
a residual Add or a MaxPool the walk stepped over), and the cost count the conv's own output.
An activation whose input is not recognised here gives no pre-activation: nothing is proved
about that layer, which is always sound.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from ..base import LayerInfo, LayerTensors
from .graph import CONV_OPS
from .index import OnnxGraph

#: Activations applied by one op to its first input.
SINGLE_OPS = frozenset(
    {"Relu", "Clip", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid", "Gelu", "Mish", "Elu", "Selu", "Celu"}
    | {"Sigmoid", "Tanh", "Softplus", "ThresholdedRelu"}
)
#: How far back a gate ``g(x)`` of ``x * g(x)`` is searched for ``x`` (a HardSwish gate is 3 ops deep).
GATE_DEPTH = 8


def layer_tensors(
    graph: OnnxGraph, layers: Iterable[LayerInfo], channel_axes: dict[str, int]
) -> dict[str, LayerTensors]:
    """Each layer's conv output, measured activation and pre-activation, by layer id."""
    convs = conv_outputs(graph, layers)
    found = {}
    for layer in layers:
        if layer.id not in convs:
            continue
        preactivation = activation_input(graph, layer.tensor) if layer.tensor is not None else None
        axis = channel_axes.get(layer.tensor, 1) if layer.tensor is not None else 1
        found[layer.id] = LayerTensors(convs[layer.id], layer.tensor, preactivation, axis)
    return found


def conv_outputs(graph: OnnxGraph, layers: Iterable[LayerInfo]) -> dict[str, str]:
    """Each layer's conv output tensor, by layer id (the node's name, else its output; a repeated name
    with its output appended), matched in graph order."""
    ids = {layer.id for layer in layers}
    found: dict[str, str] = {}
    for node in graph.model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        name = node.name or node.output[0]
        for candidate in (name, f"{name}:{node.output[0]}", node.output[0]):
            if candidate in ids and candidate not in found:
                found[candidate] = node.output[0]
                break
    return found


def activation_input(graph: OnnxGraph, activation: str) -> str | None:
    """The tensor the activation producing ``activation`` reads: ``x`` of ``Relu(x)``, of ``x * g(x)``
    (after a trailing division or product by a positive constant), else None."""
    node = _producer(graph, activation)
    if node is None:
        return None
    if node.op_type in ("Div", "Mul") and _positive_scalar(graph, node.input[1]):
        before = _producer(graph, node.input[0])
        if before is not None and before.op_type == "Mul":
            node = before  # x * gate / 6: the product before the scaling
    if node.op_type in SINGLE_OPS:
        return node.input[0]
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    first, second = node.input
    if first in _ancestors(graph, second):
        return first
    if second in _ancestors(graph, first):
        return second
    return None


def _producer(graph: OnnxGraph, tensor: str) -> onnx.NodeProto | None:
    """The node computing ``tensor``: in the graph's float view (a quantised graph read as the float graph it
    came from), else in the graph itself. A tensor only the float view has gets no bounds: no proof, never a
    wrong one."""
    return graph.producer.get(tensor) or graph.graph_producer.get(tensor)


def _positive_scalar(graph: OnnxGraph, name: str) -> bool:
    value = graph.scalar(name) if name else None
    return value is not None and value > 0


def _ancestors(graph: OnnxGraph, tensor: str) -> set[str]:
    found: set[str] = set()
    frontier = [tensor]
    for _ in range(GATE_DEPTH):
        producers = [node for node in (_producer(graph, t) for t in frontier) if node is not None]
        frontier = [name for node in producers for name in node.input if name and name not in found]
        found.update(frontier)
    return found
