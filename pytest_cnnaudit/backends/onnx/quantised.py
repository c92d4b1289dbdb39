"""Quantised graphs seen as the float graph they were made from, and their activations read dequantised.

Why a float view: the activation patterns (ReLU, SiLU as ``x * Sigmoid(x)``, a residual
``Add``...) are the same in an int8 graph, only interleaved with quantisation. In the view,

- ``QuantizeLinear`` / ``DequantizeLinear`` of a computed tensor (QDQ format) and
  ``DynamicQuantizeLinear`` are dropped: their output is the tensor they quantise;
- QOperator ops (``QLinearConv``, ``com.microsoft`` ``QLinearAdd``, ``QLinearSigmoid``...)
  become the float op on their data inputs, keeping the node and output names; a
  ``QLinearConv``'s or ``ConvInteger``'s weights go through a ``DequantizeLinear`` of the
  view, so they are read (and folded) like any float weight;
- a tensor whose output quantisation clamps at zero (zero point at the integer type's
  minimum) is recorded as *clamped*: the quantiser folded a ReLU into it
  (onnxruntime removes ``Relu``/``Clip`` after a quantised op this way).

What is measured is the value the next layer receives: the dequantised tensor after an
activation's output quantisation. Where the graph has no ``DequantizeLinear`` there (a
``QLinearConv`` feeding another QOperator op), the measuring copy of the graph gets one.
onnxruntime's quantisers name a ``QLinearConv``/``ConvInteger`` after the float node with
``_quant`` appended (``onnxruntime/quantization/operators/conv.py``); the view drops that
suffix, so layer ids match the float model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from .nodes import attribute

#: onnxruntime's quantisers append this to a quantised node's name.
QUANT_NAME_SUFFIX = "_quant"
#: Suffix of a tensor the measuring copy of a graph adds: the dequantised form of a quantised one.
DEQUANTIZED_SUFFIX = "/cnnaudit_dequantized"


@dataclass(frozen=True)
class QLinearOp:
    """A QOperator op: the float op it computes, its data inputs, and its output's (scale, zero point) inputs."""

    float_op: str
    data: tuple[int, ...]
    output_quantisation: tuple[int, int]


QLINEAR_OPS = {
    "QLinearConv": QLinearOp("Conv", (0,), (6, 7)),
    "QLinearAdd": QLinearOp("Add", (0, 3), (6, 7)),
    "QLinearMul": QLinearOp("Mul", (0, 3), (6, 7)),
    "QLinearSigmoid": QLinearOp("Sigmoid", (0,), (3, 4)),
    "QLinearLeakyRelu": QLinearOp("LeakyRelu", (0,), (3, 4)),
    "QLinearSoftmax": QLinearOp("Softmax", (0,), (3, 4)),
    "QLinearAveragePool": QLinearOp("AveragePool", (0,), (3, 4)),
    "QLinearGlobalAveragePool": QLinearOp("GlobalAveragePool", (0,), (3, 4)),
}
#: Conv-like ops of quantised graphs, with the input index of their (integer) weights.
QUANTISED_CONV_WEIGHT = {"QLinearConv": 3, "ConvInteger": 1}


def clamps_at_zero(zero_point: np.ndarray | None, output_dtype: int | None = None) -> bool:
    """Whether dequantised values of this quantisation are never negative: every zero point
    at its integer type's minimum (no zero point: uint8, or ``output_dtype``, with zero point 0)."""
    if zero_point is None:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)
        return np.issubdtype(dtype, np.integer) and np.iinfo(dtype).min == 0
    if not np.issubdtype(zero_point.dtype, np.integer):
        return False  # float8 types: zero point 0, symmetric
    return bool((zero_point == np.iinfo(zero_point.dtype).min).all())


@dataclass
class FloatView:
    """The analysed form of a graph: its nodes, and what the quantisation of each tensor says."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # synthetic constants the view's nodes read
    clamped: set[str] = field(default_factory=set)  # tensors whose output quantisation folds a ReLU
    quantised: set[str] = field(default_factory=set)  # tensors of the view that are integers in the graph


class _ViewBuilder:
    def __init__(self, is_constant: Callable[[str], bool], constant: Callable[[str], np.ndarray | None]) -> None:
        self.is_constant = is_constant
        self.constant = constant
        self.view = FloatView()
        self.alias: dict[str, str] = {}

    def root(self, name: str) -> str:
        return self.alias.get(name, name)

    def add(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if op == "QuantizeLinear" and not self.is_constant(node.input[0]):
            self._drop(node, node.input[0])
            zero_point = self.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if clamps_at_zero(zero_point, attribute(node, "output_dtype")):  # type: ignore[arg-type]
                self.view.clamped.add(self.root(node.input[0]))
        elif op == "DequantizeLinear" and not self.is_constant(node.input[0]):
            self._drop(node, node.input[0])
        elif op == "DynamicQuantizeLinear":
            self.alias[node.output[0]] = self.root(node.input[0])
        elif op in QLINEAR_OPS:
            self._qlinear(node, QLINEAR_OPS[op])
        elif op == "ConvInteger":
            self._conv_integer(node)
        elif all(self.root(i) == i for i in node.input):
            self.view.nodes.append(node)
        else:  # a copy reading the tensors the dropped quantisation read
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [self.root(i) for i in node.input]
            self.view.nodes.append(copy)

    def _drop(self, node: onnx.NodeProto, source: str) -> None:
        self.alias[node.output[0]] = self.root(source)

    def _qlinear(self, node: onnx.NodeProto, spec: QLinearOp) -> None:
        inputs = [self.root(node.input[i]) for i in spec.data]
        if node.op_type == "QLinearConv":  # weight, its scale and zero point at 3, 4, 5
            inputs.append(self._dequantized_weight(node, scale=node.input[4], zero_point=node.input[5]))
        float_node = onnx.helper.make_node(spec.float_op, inputs, [node.output[0]], _float_name(node))
        float_node.attribute.extend(a for a in node.attribute if a.name != "domain")
        self.view.nodes.append(float_node)
        self.view.quantised.add(node.output[0])
        _, zero_point_at = spec.output_quantisation
        zero_point = self.constant(node.input[zero_point_at]) if len(node.input) > zero_point_at else None
        if zero_point is not None and clamps_at_zero(zero_point):
            self.view.clamped.add(node.output[0])

    def _conv_integer(self, node: onnx.NodeProto) -> None:
        """ConvInteger's float weights are (w - w_zero_point); the weight scale sits in the Mul after it
        and is the same for every filter of a layer (onnxruntime's dynamic quantiser), so ratios hold."""
        zero_point = node.input[3] if len(node.input) > 3 and node.input[3] else None
        ones = None
        if zero_point is not None:
            value = self.constant(zero_point)
            ones = f"{node.input[1]}{DEQUANTIZED_SUFFIX}/scale"
            self.view.constants[ones] = np.ones(value.shape if value is not None else (), np.float32)
        weight = self._dequantized_weight(node, scale=ones, zero_point=zero_point)
        float_node = onnx.helper.make_node("Conv", [self.root(node.input[0]), weight], [node.output[0]])
        float_node.name = _float_name(node)
        float_node.attribute.extend(node.attribute)
        self.view.nodes.append(float_node)

    def _dequantized_weight(self, node: onnx.NodeProto, scale: str | None, zero_point: str | None = None) -> str:
        weight = node.input[QUANTISED_CONV_WEIGHT[node.op_type]]
        output = f"{weight}{DEQUANTIZED_SUFFIX}"
        if scale is None:
            self.view.nodes.append(onnx.helper.make_node("Cast", [weight], [output], to=onnx.TensorProto.FLOAT))
        else:
            inputs = [weight, scale] + ([zero_point] if zero_point else [])
            self.view.nodes.append(onnx.helper.make_node("DequantizeLinear", inputs, [output], axis=0))
        return output


def _float_name(node: onnx.NodeProto) -> str:
    if node.name.endswith(QUANT_NAME_SUFFIX):
        return node.name[: -len(QUANT_NAME_SUFFIX)]
    return node.name


def float_view(
    nodes: list[onnx.NodeProto], is_constant: Callable[[str], bool], constant: Callable[[str], np.ndarray | None]
) -> FloatView:
    """The float view of ``nodes`` (in graph order)."""
    builder = _ViewBuilder(is_constant, constant)
    for node in nodes:
        builder.add(node)
    return builder.view


def dequantizing_node(producer: onnx.NodeProto, tensor: str) -> onnx.NodeProto:
    """A ``DequantizeLinear`` reading ``tensor`` (an integer output of ``producer``) through its quantisation."""
    if producer.op_type == "QuantizeLinear":
        inputs = [tensor, *producer.input[1:3]]
    else:
        scale_at, zero_point_at = QLINEAR_OPS[producer.op_type].output_quantisation
        inputs = [tensor, producer.input[scale_at], producer.input[zero_point_at]]
    return onnx.helper.make_node("DequantizeLinear", inputs, [tensor + DEQUANTIZED_SUFFIX])
