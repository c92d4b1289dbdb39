"""Indexes over one ONNX graph: producers, consumers, folded constants and its quantisation.

What the graph walk (:mod:`.graph`) and activation recognition (:mod:`.activations`) read; the
graph is indexed in its float view (:mod:`.quantised`), so int8 graphs read like the float
graphs they came from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .constants import ConstantFolder
from .nodes import constant_node_value
from .quantised import DEQUANTIZED_SUFFIX, dequantizing_node, float_view


class StoredConstants(Mapping[str, np.ndarray]):
    """Initializers and ``Constant`` node values by name, read into numpy when asked for.

    Why lazily: a numpy copy of every weight beside the ModelProto doubled the memory of an
    opened model (resnet50: 100 MB more). Small values (shapes, scales, biases, BatchNorm
    parameters) are kept once read; a weight larger than :data:`CACHED_BYTES` is read again
    each time (the graph walk reads each conv weight once or twice).
    """

    CACHED_BYTES = 1 << 20

    def __init__(self, initializers: list[onnx.TensorProto]) -> None:
        self._tensors = {tensor.name: tensor for tensor in initializers}
        self._values: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._values:
            return self._values[name]
        value = numpy_helper.to_array(self._tensors[name])
        if value.nbytes <= self.CACHED_BYTES:
            self._values[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._tensors), **dict.fromkeys(self._values)})

    def __len__(self) -> int:
        return len(self._tensors.keys() | self._values.keys())

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Values computed here rather than stored (``Constant`` nodes, the float view's dequantised weights)."""
        self._values.update(values)


def _producers_and_consumers(
    nodes: Iterable[onnx.NodeProto],
) -> tuple[dict[str, onnx.NodeProto], defaultdict[str, list[onnx.NodeProto]]]:
    """Each tensor's producing node, and the nodes reading it (in graph order)."""
    producer: dict[str, onnx.NodeProto] = {}
    consumers: defaultdict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in nodes:
        for name in node.output:
            producer[name] = node
        for name in node.input:
            if name:
                consumers[name].append(node)
    return producer, consumers


@dataclass
class OnnxGraph:
    """Indexes over one graph's float view (producers, consumers), its constants and its quantisation."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.constants = StoredConstants(list(graph.initializer))
        self.graph_producer, self.graph_consumers = _producers_and_consumers(graph.node)
        for node in graph.node:
            value = constant_node_value(node) if node.op_type == "Constant" else None
            if value is not None:
                self.constants.update({node.output[0]: value})
        self.producer: dict[str, onnx.NodeProto] = {}  # the float view's, filled once it exists
        opsets = {entry.domain or "": entry.version for entry in self.model.opset_import}
        self._folder = ConstantFolder(self._any_producer, self.constants, opsets)
        view = float_view(list(graph.node), self._folder.is_constant, self.constant)
        self.constants.update(view.constants)
        self.nodes, self.clamped, self.quantised = view.nodes, view.clamped, view.quantised
        self.producer, self.consumers = _producers_and_consumers(self.nodes)

    def _any_producer(self, name: str) -> onnx.NodeProto | None:
        return self.producer.get(name) or self.graph_producer.get(name)

    @property
    def image_inputs(self) -> list[onnx.ValueInfoProto]:
        """Graph inputs that are not initializers (old IR versions list weights as inputs too)."""
        return [i for i in self.model.graph.input if i.name not in self.constants]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is computed from constants only (folded once, then cached)."""
        return self._folder.value(name) if name else None

    def scalar(self, name: str) -> float | None:
        value = self.constant(name) if name else None
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def measured_tensor(self, tensor: str) -> str:
        """The graph tensor holding ``tensor``'s value as the next layer receives it.

        An activation quantised after it (QDQ) is read after its ``DequantizeLinear``; an integer
        tensor without one (QOperator) through a ``DequantizeLinear`` the measuring copy adds.
        """
        for quantize in self.graph_consumers.get(tensor, []):
            if quantize.op_type == "QuantizeLinear":
                return self._dequantized(quantize.output[0])
        return self._dequantized(tensor) if tensor in self.quantised else tensor

    def _dequantized(self, integer: str) -> str:
        for node in self.graph_consumers.get(integer, []):
            if node.op_type == "DequantizeLinear":
                return node.output[0]
        return integer + DEQUANTIZED_SUFFIX


def measuring_nodes(graph: OnnxGraph, tensors: list[str]) -> list[onnx.NodeProto]:
    """The ``DequantizeLinear`` nodes the measuring copy of the graph needs to expose ``tensors``."""
    nodes = []
    for tensor in tensors:
        if tensor in graph.graph_producer or not tensor.endswith(DEQUANTIZED_SUFFIX):
            continue
        integer = tensor[: -len(DEQUANTIZED_SUFFIX)]
        nodes.append(dequantizing_node(graph.graph_producer[integer], integer))
    return nodes
