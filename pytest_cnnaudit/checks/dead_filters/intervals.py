"""Interval bounds: the element-wise box every value of a tensor stays in, and how an op maps boxes.

Why intervals: a channel whose pre-activation has upper bound <= 0 over the whole input box
is zero for every image, which no probe set can show. Interval arithmetic (interval bound
propagation) is the cheapest sound bound: one pass over the graph at batch 1, two
convolutions per conv. It loosens with depth (a ResNet's bounds grow 12 to 20 times per
conv), so it proves channels dead where they are dead for a reason the weights show: a zero
or tiny filter under a negative bias, anywhere a ReLU6 caps the intervals, or in early layers.

How each op is bounded (``lower <= f(x) <= upper`` for every ``x`` in the box), in the rule
modules :mod:`.intervals_linear` and :mod:`.intervals_elementwise`:

* **linear in its data input, with constant weights** (Conv, ConvTranspose, Gemm, MatMul,
  BatchNormalization, Mul/Div by a constant, Neg): centre and radius, ``f(c) +- |f|(r)``;
  exact for one layer applied to a box, so the first conv's bounds are its true extremes;
* **non-decreasing in every non-constant input** (Relu, Clip, Sigmoid, MaxPool, AveragePool,
  Concat, Reshape, Transpose, ...): ``f(lower)`` and ``f(upper)``;
* **piecewise linear with a kink at 0** (LeakyRelu, PRelu): extremes at the ends or at 0;
* **falling then rising** (HardSwish, SiLU written ``x * Sigmoid(x)``, Gelu, Mish): the upper
  bound at an end, the lower bound the function's minimum when the interval holds it;
* **two bounded operands** (Add, Sub, Mul): the usual interval rules;
* nodes whose inputs are all constants (shape arithmetic, DequantizeLinear of weights) are
  folded by ``onnx.reference``; any other op gives **no bounds**, and the proof stops there.

Bounds are float64, except the convolutions, which run in float32 (twice as fast) with a
rigorous allowance for its rounding (``intervals_linear.conv_bounds``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

#: Unit roundoff of float32, the precision the interval convolutions and the runtimes compute in.
UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2
#: Falling-then-rising activations: (argmin, the minimum rounded down; GELU's covers its tanh form too).
MINIMA = {
    "silu": (-1.2785, -0.27847),
    "hardswish": (-1.5, -0.375),
    "gelu": (-0.7518, -0.171),
    "mish": (-1.1924, -0.30885),
}


@dataclass(frozen=True)
class Bounds:
    """Element-wise ``lower <= x <= upper``; a constant has ``lower is upper``."""

    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def point(cls, value: np.ndarray) -> Bounds:
        value = np.asarray(value)
        return cls(value, value)

    @classmethod
    def from_center(cls, center: np.ndarray, radius: np.ndarray) -> Bounds:
        return cls(center - radius, center + radius)

    @property
    def exact(self) -> bool:
        return self.lower is self.upper

    @property
    def center(self) -> np.ndarray:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> np.ndarray:
        return (self.upper - self.lower) / 2

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.lower).all() and np.isfinite(self.upper).all())


def as_float64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


@dataclass
class NodeCall:
    """One ONNX node with its input bounds (None: unbounded or absent) and the graph's producers."""

    node: onnx.NodeProto
    inputs: list[Bounds | None]
    producer: dict[str, onnx.NodeProto]

    def attribute(self, name: str, default: object = None) -> object:
        for attribute in self.node.attribute:
            if attribute.name == name:
                return onnx.helper.get_attribute_value(attribute)
        return default

    def constant(self, index: int) -> np.ndarray | None:
        """The exact value of input ``index``, or None when it is not a constant (or absent)."""
        if index >= len(self.inputs):
            return None
        value = self.inputs[index]
        return value.lower if value is not None and value.exact else None

    def run(self, values: list[np.ndarray | None]) -> list[np.ndarray]:
        """Evaluate the node on concrete inputs with onnx's reference implementation."""
        feeds = {name: value for name, value in zip(self.node.input, values) if name and value is not None}
        return ReferenceEvaluator(self.node).run(None, feeds)


#: Bounds of a node's outputs from its call (None where an output has none).
Rule = Callable[[NodeCall], list[Bounds | None]]


def rule_table(table: dict[str, Rule]) -> Callable[..., Callable[[Rule], Rule]]:
    """A decorator ``@rule("Conv", ...)`` that enters a function in ``table`` as the rule of those op types."""

    def rule(*op_types: str) -> Callable[[Rule], Rule]:
        def register(function: Rule) -> Rule:
            for op_type in op_types:
                table[op_type] = function
            return function

        return register

    return rule


def falling_then_rising(x: Bounds, function: Callable[[np.ndarray], np.ndarray], kind: str) -> Bounds:
    """Bounds of an activation that falls to its minimum, then rises (SiLU, HardSwish, GELU, Mish)."""
    argmin, minimum = MINIMA[kind]
    at_lower, at_upper = function(x.lower), function(x.upper)
    contains = (x.lower <= argmin) & (x.upper >= argmin)
    return Bounds(np.where(contains, minimum, np.minimum(at_lower, at_upper)), np.maximum(at_lower, at_upper))
