"""Interval rules of the ONNX ops that are not linear layers: arithmetic, activations, pooling, reshaping."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from .intervals import Bounds, NodeCall, Rule, as_float64, falling_then_rising, rule_table
from .intervals_linear import conv_geometry

#: This module's rules, by ONNX op type.
RULES: dict[str, Rule] = {}
rule = rule_table(RULES)

# ----------------------------------------------------------------------------- arithmetic


def _affine(x: Bounds, factor: np.ndarray) -> Bounds:
    factor = as_float64(factor)
    return Bounds.from_center(x.center * factor, x.radius * np.abs(factor))


@rule("Add")
def _add(call: NodeCall) -> list[Bounds | None]:
    a, b = call.inputs
    return [None if a is None or b is None else Bounds(a.lower + b.lower, a.upper + b.upper)]


@rule("Sub")
def _sub(call: NodeCall) -> list[Bounds | None]:
    a, b = call.inputs
    return [None if a is None or b is None else Bounds(a.lower - b.upper, a.upper - b.lower)]


@rule("Neg")
def _neg(call: NodeCall) -> list[Bounds | None]:
    (x,) = call.inputs
    return [None if x is None else Bounds(-x.upper, -x.lower)]


def _silu_operand(call: NodeCall) -> int | None:
    """Index of ``x`` when this Mul is ``x * Sigmoid(x)``, the way exporters write SiLU."""
    for index in (0, 1):
        gate = call.producer.get(call.node.input[1 - index])
        if gate is not None and gate.op_type == "Sigmoid" and gate.input[0] == call.node.input[index]:
            return index
    return None


@rule("Mul")
def _mul(call: NodeCall) -> list[Bounds | None]:
    a, b = call.inputs
    if a is None or b is None:
        return [None]
    if a.exact or b.exact:
        x, factor = (b, a.lower) if a.exact else (a, b.lower)
        return [_affine(x, factor)]
    silu = _silu_operand(call)
    if silu is not None:
        return [falling_then_rising(call.inputs[silu], _silu, "silu")]  # type: ignore[arg-type]
    corners = [a.lower * b.lower, a.lower * b.upper, a.upper * b.lower, a.upper * b.upper]
    return [Bounds(np.minimum.reduce(corners), np.maximum.reduce(corners))]


@rule("Div")
def _div(call: NodeCall) -> list[Bounds | None]:
    x, divisor = call.inputs[0], call.constant(1)
    if x is None or divisor is None or not np.all(divisor != 0):
        return [None]
    return [_affine(x, 1.0 / as_float64(divisor))]


# ----------------------------------------------------------------------------- activations

ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Relu": lambda x: np.maximum(x, 0),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),  # exp overflows to inf for very negative x, giving 0
    "Tanh": np.tanh,
}


@rule(*ELEMENTWISE)
def _elementwise(call: NodeCall) -> list[Bounds | None]:
    """The common non-decreasing activations, in numpy (onnx.reference's Sigmoid gives NaN far out)."""
    x, function = call.inputs[0], ELEMENTWISE[call.node.op_type]
    return [None if x is None else Bounds(function(x.lower), function(x.upper))]


@rule("LeakyRelu", "PRelu")
def _kinked(call: NodeCall) -> list[Bounds | None]:
    """Piecewise linear with one kink at 0 (any slope sign): the extremes are at the ends or at 0."""
    x = call.inputs[0]
    slope = call.constant(1) if call.node.op_type == "PRelu" else np.float64(call.attribute("alpha", 0.01))  # type: ignore[arg-type]
    if x is None or slope is None:
        return [None]

    def leaky(value: np.ndarray) -> np.ndarray:
        return np.where(value >= 0, value, value * as_float64(slope))

    ends = [leaky(x.lower), leaky(x.upper)]
    lower, upper = np.minimum(*ends), np.maximum(*ends)
    straddles = (x.lower < 0) & (x.upper > 0)
    return [Bounds(np.where(straddles, np.minimum(lower, 0), lower), np.where(straddles, np.maximum(upper, 0), upper))]


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


_ERF = np.frompyfunc(math.erf, 1, 1)
#: The falling-then-rising activations ONNX has as single ops.
UNIMODAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "gelu": lambda x: 0.5 * x * (1 + _ERF(x / np.sqrt(2)).astype(np.float64)),
    "mish": lambda x: x * np.tanh(np.logaddexp(0, x)),
}


@rule("HardSwish", "Gelu", "Mish")
def _unimodal(call: NodeCall) -> list[Bounds | None]:
    x = call.inputs[0]
    if x is None or (call.node.op_type == "Gelu" and call.attribute("approximate", b"none") not in (b"none", "none")):
        return [None]
    kind = call.node.op_type.lower()
    return [falling_then_rising(x, UNIMODAL[kind], kind)]


# ----------------------------------------------------------------------------- pooling


def _pool_geometry(call: NodeCall, x: np.ndarray) -> tuple[tuple[int, ...], list, list, list]:
    kernel = tuple(call.attribute("kernel_shape"))  # type: ignore[arg-type]
    strides, dilations, pads = conv_geometry(call, x.shape[2:], kernel)
    if call.attribute("ceil_mode", 0):
        for axis, size in enumerate(x.shape[2:]):
            extent = (kernel[axis] - 1) * dilations[axis] + 1
            padded = size + pads[axis][0] + pads[axis][1]
            out = -(-(padded - extent) // strides[axis]) + 1
            if (out - 1) * strides[axis] >= size + pads[axis][0]:
                out -= 1  # the last window must start inside the input or its begin padding
            pads[axis] = (pads[axis][0], max(pads[axis][1], (out - 1) * strides[axis] + extent - size - pads[axis][0]))
    return kernel, strides, dilations, pads


def _windows(x: np.ndarray, kernel, strides, dilations) -> Iterable[np.ndarray]:
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield x[:, :, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]


def max_pool2d(x: np.ndarray, call: NodeCall) -> np.ndarray:
    kernel, strides, dilations, pads = _pool_geometry(call, x)
    padded = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    return np.maximum.reduce(list(_windows(padded, kernel, strides, dilations)))


def average_pool2d(x: np.ndarray, call: NodeCall) -> np.ndarray:
    kernel, strides, dilations, pads = _pool_geometry(call, x)
    total = sum(_windows(np.pad(x, ((0, 0), (0, 0), *pads)), kernel, strides, dilations))
    if call.attribute("count_include_pad", 0):
        return total / (kernel[0] * kernel[1])
    ones = np.pad(np.ones((1, 1, *x.shape[2:])), ((0, 0), (0, 0), *pads))
    return total / sum(_windows(ones, kernel, strides, dilations))


@rule("MaxPool", "AveragePool")
def _pool(call: NodeCall) -> list[Bounds | None]:
    x = call.inputs[0]
    if x is None or x.lower.ndim != 4 or (call.node.op_type == "MaxPool" and len(call.node.output) > 1):
        return [None] * len(call.node.output)  # MaxPool's indices output has no bounds worth having
    pool = max_pool2d if call.node.op_type == "MaxPool" else average_pool2d
    return [Bounds(pool(x.lower, call), pool(x.upper, call))]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(call: NodeCall) -> list[Bounds | None]:
    x = call.inputs[0]
    if x is None:
        return [None]
    reduce = np.mean if call.node.op_type == "GlobalAveragePool" else np.max
    axes = tuple(range(2, x.lower.ndim))
    return [Bounds(reduce(x.lower, axis=axes, keepdims=True), reduce(x.upper, axis=axes, keepdims=True))]


# ----------------------------------------------------------------------------- non-decreasing ops

#: Ops non-decreasing in the inputs listed (None: in all of them); every other input must be a constant.
NON_DECREASING: dict[str, tuple[int, ...] | None] = {
    **dict.fromkeys(("Softplus", "Erf", "Exp", "Log", "Sqrt", "Floor", "Ceil", "Round"), (0,)),
    **dict.fromkeys(("Identity", "Dropout", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Reshape"), (0,)),
    **dict.fromkeys(("Slice", "Gather", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace"), (0,)),
    **dict.fromkeys(("SpaceToDepth", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "Cast", "Clip"), (0,)),
    **dict.fromkeys(("Concat", "Max", "Min", "Sum", "Mean", "Split"), None),
    **dict.fromkeys(("Elu", "Selu", "Celu", "HardSigmoid", "QuantizeLinear", "DequantizeLinear"), (0,)),
    "Pad": (0, 2),
}


def _is_non_decreasing(call: NodeCall) -> bool:
    op = call.node.op_type
    if op in ("Elu", "Celu", "Selu", "HardSigmoid"):  # monotone only for the usual, non-negative parameters
        return all(float(a.f) >= 0 for a in call.node.attribute if a.name in ("alpha", "gamma"))
    if op in ("QuantizeLinear", "DequantizeLinear"):
        scale = call.constant(1)
        return scale is not None and bool(np.all(scale > 0))
    if op == "Cast":
        return onnx.helper.tensor_dtype_to_np_dtype(int(call.attribute("to"))).kind == "f"  # type: ignore[arg-type]
    return True


def _monotone(call: NodeCall) -> list[Bounds | None]:
    data = NON_DECREASING[call.node.op_type]
    bounded = [i for i, b in enumerate(call.inputs) if b is not None and not b.exact]
    absent = [i for i, name in enumerate(call.node.input) if name and call.inputs[i] is None]
    if absent or (data is not None and any(i not in data for i in bounded)) or not _is_non_decreasing(call):
        return [None] * len(call.node.output)
    lows = call.run([None if b is None else b.lower for b in call.inputs])
    highs = call.run([None if b is None else b.upper for b in call.inputs])
    outputs: list[Bounds | None] = [Bounds(low, high) for low, high in zip(lows, highs)]
    if call.node.op_type == "Dropout":
        outputs[1:] = [None] * (len(outputs) - 1)  # the mask
    return outputs


for _op in NON_DECREASING:
    RULES.setdefault(_op, _monotone)
