"""Reading single ONNX nodes: attributes, constant payloads, the operand beside a tensor.

Kept apart from the graph walk so that the activation patterns, the quantisation view and
the constant folder can share them without importing each other.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of attribute ``name`` of ``node``, or ``default`` when it is not set."""
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The tensor a ``Constant`` node holds, whichever of its attributes carries it."""
    if not node.attribute:
        return None
    entry = node.attribute[0]
    if entry.name == "value":
        return numpy_helper.to_array(entry.t)
    if entry.name in ("value_float", "value_int"):
        return np.array(onnx.helper.get_attribute_value(entry))
    if entry.name in ("value_floats", "value_ints"):
        return np.array(list(onnx.helper.get_attribute_value(entry)))
    return None


def other_input(node: onnx.NodeProto, name: str) -> str:
    """The operand of a binary ``node`` that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]


def has_subgraph(node: onnx.NodeProto) -> bool:
    """If, Loop, Scan and custom ops carry graphs in their attributes."""
    return any(entry.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for entry in node.attribute)


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) of every graph ``node`` carries: an If's two branches, a Loop's body."""
    found: list[tuple[str, onnx.GraphProto]] = []
    for entry in node.attribute:
        if entry.type == onnx.AttributeProto.GRAPH:
            found.append((entry.name, entry.g))
        elif entry.type == onnx.AttributeProto.GRAPHS:
            found.extend((entry.name, graph) for graph in entry.graphs)
    return found
