"""Recognise the activation applied to a tensor, as an op or in the primitive ops exporters write it.

Exported forms recognised as a whole (the measured tensor is the last op's output):

- SiLU: ``x * Sigmoid(x)``, and Swish ``x * Sigmoid(beta * x)`` with a constant beta > 0;
- HardSwish: ``x * HardSigmoid(x)``, ``x * Clip(x + 3, 0, 6) / 6`` in its operand orders;
  the Clip inside is not a ReLU6;
- GELU: the ``Gelu`` op (opset 20); ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` with ``Div`` by
  sqrt(2) or ``Mul`` by 1/sqrt(2), the three factors multiplied in any order; the tanh
  approximation ``0.5 x (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` with ``Pow`` or ``Mul``;
- Mish: the ``Mish`` op, or ``x * Tanh(Softplus(x))``.

A leaky activation whose negative side is not negative (``LeakyRelu`` alpha, ``Elu``/``Celu``
alpha below zero; ``Selu`` gamma below zero) is not a rectifier: its kind carries the reason,
e.g. ``leaky_relu(negative alpha)``, and it is not measured. A ``PRelu`` learns one slope per
channel, and trained networks (MTCNN) have negative slopes on 6-95% of a layer's channels: such a
layer is measured on its *input*, the pre-activation, where "<= 0" is the inactive region for
every channel whatever its slope (:func:`negative_slope_prelu`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import onnx

from .index import OnnxGraph
from .nodes import attribute, other_input

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
    "Softmax": "softmax",
    "Mish": "mish",
    "ThresholdedRelu": "thresholded_relu",
}
#: The attribute (and its default) whose sign decides whether a leaky activation rectifies.
NEGATIVE_SIDE = {"LeakyRelu": ("alpha", 0.01), "Elu": ("alpha", 1.0), "Celu": ("alpha", 1.0), "Selu": ("gamma", 1.0507)}
#: Constants of the exported GELU forms (float32 exporters write them to about 7 digits).
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_GELU_CUBIC = 0.044715


class Activation(NamedTuple):
    kind: str
    output: str  # the tensor the activation writes (the last op of a decomposed form)


def _close(value: float | None, target: float) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=1e-3)


def clip_bounds(graph: OnnxGraph, node: onnx.NodeProto) -> tuple[float | None, float | None]:
    """Clip's min/max: inputs since opset 11, attributes before."""
    if len(node.input) > 1 or attribute(node, "min") is None:
        low = graph.scalar(node.input[1]) if len(node.input) > 1 else None
        high = graph.scalar(node.input[2]) if len(node.input) > 2 else None
        return low, high
    return attribute(node, "min"), attribute(node, "max")  # type: ignore[return-value]


def _rectifying(graph: OnnxGraph, node: onnx.NodeProto) -> str | None:
    """Why a leaky activation does not rectify (its negative side is not <= 0), or None when it does."""
    if node.op_type == "PRelu":
        return "slope not constant" if graph.constant(node.input[1]) is None else None
    if node.op_type == "ThresholdedRelu":
        return "negative threshold" if float(attribute(node, "alpha", 1.0)) < 0 else None  # type: ignore[arg-type]
    if node.op_type in NEGATIVE_SIDE:
        name, default = NEGATIVE_SIDE[node.op_type]
        return f"negative {name}" if float(attribute(node, name, default)) < 0 else None  # type: ignore[arg-type]
    return None


def negative_slope_prelu(graph: OnnxGraph, node: onnx.NodeProto) -> bool:
    """A ``PRelu`` with a negative slope on some channel: its output is > 0 on both sides of 0 there."""
    slope = graph.constant(node.input[1]) if node.op_type == "PRelu" else None
    return slope is not None and bool((slope < 0).any())


def direct_activation(graph: OnnxGraph, node: onnx.NodeProto) -> str | None:
    """The activation kind ``node`` is on its own, or None."""
    if node.op_type in ACTIVATION_OPS:
        kind = ACTIVATION_OPS[node.op_type]
        problem = _rectifying(graph, node)
        return f"{kind}({problem})" if problem else kind
    if node.op_type == "Clip":
        low, high = clip_bounds(graph, node)
        if low == 0.0:
            return "relu6" if high == 6.0 else "clip"
    return None


def _consumers(graph: OnnxGraph, tensor: str, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in graph.consumers.get(tensor, []) if n.op_type == op_type]


def _product_with(graph: OnnxGraph, gate: str, tensor: str) -> str | None:
    """The output of ``tensor * gate`` when a Mul computes it."""
    for mul in _consumers(graph, gate, "Mul"):
        if tensor in mul.input:
            return mul.output[0]
    return None


def _swish_gates(graph: OnnxGraph, tensor: str) -> list[onnx.NodeProto]:
    """Sigmoids of ``beta * tensor`` for a constant beta > 0 (Swish; paddle2onnx writes SiLU so, beta 1)."""
    gates = []
    for scaled in _consumers(graph, tensor, "Mul"):
        beta = graph.scalar(other_input(scaled, tensor))
        if beta is not None and beta > 0:
            gates.extend(_consumers(graph, scaled.output[0], "Sigmoid"))
    return gates


def _silu_or_hardswish(graph: OnnxGraph, tensor: str) -> Activation | None:
    for gate in graph.consumers.get(tensor, []) + _swish_gates(graph, tensor):
        if gate.op_type in ("Sigmoid", "HardSigmoid"):
            product = _product_with(graph, gate.output[0], tensor)
            if product is not None:
                return Activation("silu" if gate.op_type == "Sigmoid" else "hardswish", product)
        if gate.op_type == "Add" and graph.scalar(other_input(gate, tensor)) == 3.0:
            for clip in _consumers(graph, gate.output[0], "Clip"):
                if clip_bounds(graph, clip) != (0.0, 6.0):
                    continue
                product = _product_with(graph, clip.output[0], tensor)
                if product is not None:
                    return Activation("hardswish", _after_scaling(graph, product))
    for mul in _consumers(graph, tensor, "Mul"):
        # x * (Clip(x + 3, 0, 6) / 6): the gate is divided before the product.
        gate = graph.producer.get(other_input(mul, tensor))
        if gate is not None and gate.op_type in ("Div", "Mul"):
            clip = graph.producer.get(gate.input[0])
            if clip is not None and clip.op_type == "Clip" and clip_bounds(graph, clip) == (0.0, 6.0):
                return Activation("hardswish", mul.output[0])
    return None


def _after_scaling(graph: OnnxGraph, tensor: str) -> str:
    """Step over the trailing ``/ 6`` (or ``* 1/6``) of a decomposed HardSwish."""
    consumers = graph.consumers.get(tensor, [])
    single = consumers[0] if len(consumers) == 1 else None
    if (
        single is not None
        and single.op_type in ("Div", "Mul")
        and graph.scalar(other_input(single, tensor)) is not None
    ):
        return single.output[0]
    return tensor


def _mish(graph: OnnxGraph, tensor: str) -> Activation | None:
    for softplus in _consumers(graph, tensor, "Softplus"):
        for tanh in _consumers(graph, softplus.output[0], "Tanh"):
            product = _product_with(graph, tanh.output[0], tensor)
            if product is not None:
                return Activation("mish", product)
    return None


def _half_x_times(graph: OnnxGraph, tensor: str, one_plus: str) -> str | None:
    """The output of ``x * 0.5 * one_plus`` multiplied in any order, ``x`` being ``tensor``."""
    frontier = [(one_plus, frozenset())]
    for _ in range(2):
        grown = []
        for value, factors in frontier:
            for mul in _consumers(graph, value, "Mul"):
                operand = other_input(mul, value)
                found = set(factors)
                if operand == tensor:
                    found.add("x")
                elif _close(graph.scalar(operand), 0.5):
                    found.add("half")
                else:
                    half_x = graph.producer.get(operand)
                    if half_x is None or half_x.op_type != "Mul" or tensor not in half_x.input:
                        continue
                    if not _close(graph.scalar(other_input(half_x, tensor)), 0.5):
                        continue
                    found |= {"x", "half"}
                if found == {"x", "half"}:
                    return mul.output[0]
                grown.append((mul.output[0], frozenset(found)))
        frontier = grown
    return None


def _plus_one(graph: OnnxGraph, tensor: str) -> str | None:
    for add in _consumers(graph, tensor, "Add"):
        if graph.scalar(other_input(add, tensor)) == 1.0:
            return add.output[0]
    return None


def _erf_gelu(graph: OnnxGraph, tensor: str) -> Activation | None:
    for scaled in graph.consumers.get(tensor, []):
        factor = graph.scalar(other_input(scaled, tensor)) if len(scaled.input) == 2 else None
        by_div = scaled.op_type == "Div" and scaled.input[0] == tensor and _close(factor, SQRT2)
        if not (by_div or (scaled.op_type == "Mul" and _close(factor, 1 / SQRT2))):
            continue
        for erf in _consumers(graph, scaled.output[0], "Erf"):
            one_plus = _plus_one(graph, erf.output[0])
            output = _half_x_times(graph, tensor, one_plus) if one_plus is not None else None
            if output is not None:
                return Activation("gelu", output)
    return None


#: Ops of the tanh-GELU polynomial ``sqrt(2/pi) * (x + 0.044715 * x^3)``.
POLYNOMIAL_OPS = ("Pow", "Mul", "Add")


def _tanh_gelu(graph: OnnxGraph, tensor: str) -> Activation | None:
    """Find a Tanh fed by a polynomial of ``tensor`` holding both tanh-GELU constants."""
    seen: set[str] = set()
    frontier, constants = [tensor], []
    for _ in range(6):
        grown = []
        for value in frontier:
            for node in graph.consumers.get(value, []):
                if node.op_type == "Tanh":
                    if not any(_close(c, TANH_GELU_CUBIC) for c in constants):
                        continue
                    if not any(_close(c, SQRT_2_OVER_PI) for c in constants):
                        continue
                    one_plus = _plus_one(graph, node.output[0])
                    output = _half_x_times(graph, tensor, one_plus) if one_plus is not None else None
                    if output is not None:
                        return Activation("gelu", output)
                elif node.op_type in POLYNOMIAL_OPS and node.output[0] not in seen:
                    seen.add(node.output[0])
                    constants.extend(v for v in (graph.scalar(i) for i in node.input) if v is not None)
                    grown.append(node.output[0])
        frontier = grown
    return None


def decomposed_activation(graph: OnnxGraph, tensor: str) -> Activation | None:
    """An activation written as primitive ops on ``tensor``."""
    for recognise in (_silu_or_hardswish, _mish, _erf_gelu, _tanh_gelu):
        found = recognise(graph, tensor)
        if found is not None:
            return found
    return None
