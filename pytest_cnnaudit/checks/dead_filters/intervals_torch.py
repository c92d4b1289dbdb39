"""Interval bounds over a ``torch.export`` graph (ATen ops), for torch models: an fx Interpreter.

The same rules as the ONNX evaluator (:mod:`.intervals`), on the graph the torch backend
measures, with torch's own kernels: convolutions in float32 with the same rigorous rounding
allowance (float64 convolutions are several times slower on CPU), everything else in float64;
eval-mode BatchNorm as a per-channel affine map, non-decreasing ops applied to both ends,
SiLU/HardSwish/GELU by their minimum. An op without a rule gives no bounds, and nothing
computed from it is reached.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .intervals import MINIMA, UNIT_ROUNDOFF
from .intervals_linear import rounding_allowance

aten = torch.ops.aten


class TorchBounds:
    """Element-wise ``lower <= x <= upper`` (float64 tensors)."""

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        self.lower, self.upper = lower, upper

    @classmethod
    def from_center(cls, center: torch.Tensor, radius: torch.Tensor) -> TorchBounds:
        return cls(center - radius, center + radius)

    @property
    def center(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2


def _ends(args: tuple, end: str) -> tuple:
    """``args`` with every bound replaced by its lower or upper end (lists too, for cat)."""

    def pick(value: Any) -> Any:
        if isinstance(value, TorchBounds):
            return getattr(value, end)
        if isinstance(value, (list, tuple)):
            return type(value)(pick(v) for v in value)
        return value

    return tuple(pick(a) for a in args)


def _cloned(args: tuple) -> tuple:
    return tuple(TorchBounds(a.lower.clone(), a.upper.clone()) if isinstance(a, TorchBounds) else a for a in args)


def _conv(x: TorchBounds, weight: torch.Tensor, bias: torch.Tensor | None = None, *geometry: Any) -> TorchBounds:
    """conv2d(x, weight, bias, stride, padding, dilation, groups) in float32, with the ONNX rule's allowance."""
    gamma = rounding_allowance(int(weight[0].numel()) + 4)
    weight32 = weight.detach().float()
    spread = (x.radius * (1 + 4 * UNIT_ROUNDOFF) + gamma * x.center.abs()).float()
    center = F.conv2d(x.center.float(), weight32, None, *geometry).double()
    radius = F.conv2d(spread, weight32.abs(), None, *geometry).double() * (1 + 2 * gamma)
    if bias is not None:
        center = center + bias.detach().double().reshape(1, -1, 1, 1)
    return TorchBounds.from_center(center, radius)


def _convolution(x: TorchBounds, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """``aten.convolution`` (TorchScript's form): a plain 2-d conv only."""
    if transposed or weight.dim() != 4:
        return UNBOUNDED
    return _conv(x, weight, bias, stride, padding, dilation, groups)


def _conv2d(x: TorchBounds, weight: torch.Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        return UNBOUNDED  # "same"/"valid" strings: rare in exported graphs
    return _conv(x, weight, bias, stride, padding, dilation, groups)


def _linear(x: TorchBounds, weight: torch.Tensor, bias: torch.Tensor | None = None) -> TorchBounds:
    weight = weight.detach().double()
    center = F.linear(x.center, weight, None if bias is None else bias.detach().double())
    return TorchBounds.from_center(center, F.linear(x.radius, weight.abs()))


def _batch_norm(x: TorchBounds, weight, bias, mean, var, *rest) -> TorchBounds:
    eps = rest[-1]  # batch_norm: (..., training, momentum, eps, cudnn); _legit_no_training: (..., momentum, eps)
    if isinstance(eps, bool):
        eps = rest[-2]
    scale = (weight.detach().double() if weight is not None else 1.0) / torch.sqrt(var.double() + eps)
    shift = (bias.detach().double() if bias is not None else 0.0) - mean.double() * scale
    shape = (1, -1) + (1,) * (x.lower.dim() - 2)
    scale, shift = torch.as_tensor(scale).reshape(shape), torch.as_tensor(shift).reshape(shape)
    return TorchBounds.from_center(x.center * scale + shift, x.radius * scale.abs())


def _bounds(value: Any) -> TorchBounds:
    if isinstance(value, TorchBounds):
        return value
    value = torch.as_tensor(value, dtype=torch.float64)
    return TorchBounds(value, value)


def _add(a: Any, b: Any, alpha: float = 1) -> TorchBounds:
    a, b = _bounds(a), _bounds(b)
    low_b, high_b = (b.lower * alpha, b.upper * alpha) if alpha >= 0 else (b.upper * alpha, b.lower * alpha)
    return TorchBounds(a.lower + low_b, a.upper + high_b)


def _sub(a: Any, b: Any, alpha: float = 1) -> TorchBounds:
    return _add(a, b, -alpha)


def _mul(a: Any, b: Any) -> TorchBounds:
    if not isinstance(a, TorchBounds):
        a, b = b, a
    if not isinstance(b, TorchBounds):
        factor = torch.as_tensor(b, dtype=torch.float64)
        return TorchBounds.from_center(a.center * factor, a.radius * factor.abs())
    corners = torch.stack([a.lower * b.lower, a.lower * b.upper, a.upper * b.lower, a.upper * b.upper])
    return TorchBounds(corners.amin(0), corners.amax(0))


def _div(a: Any, b: Any) -> Any:
    if isinstance(b, TorchBounds) or not isinstance(a, TorchBounds):
        return UNBOUNDED
    divisor = torch.as_tensor(b, dtype=torch.float64)
    return UNBOUNDED if bool((divisor == 0).any()) else _mul(a, 1.0 / divisor)


def _falling_then_rising(function: Callable[[torch.Tensor], torch.Tensor], kind: str) -> Callable[..., TorchBounds]:
    argmin, minimum = MINIMA[kind]

    def bound(x: TorchBounds, *rest: Any, **options: Any) -> TorchBounds:
        at_lower, at_upper = function(x.lower, *rest, **options), function(x.upper, *rest, **options)
        contains = (x.lower <= argmin) & (x.upper >= argmin)
        lower = torch.where(contains, torch.full_like(at_lower, minimum), torch.minimum(at_lower, at_upper))
        return TorchBounds(lower, torch.maximum(at_lower, at_upper))

    return bound


#: Ops non-decreasing in every bounded argument: applied to the lower ends, then to the upper ends.
NON_DECREASING = {
    *(aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default, aten.hardtanh_.default),
    *(aten.clamp.default, aten.clamp_min.default, aten.sigmoid.default, aten.tanh.default, aten.hardsigmoid.default),
    *(aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim),
    *(aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten.cat.default, aten.dropout.default),
    *(aten.clone.default, aten.contiguous.default, aten.permute.default, aten.upsample_nearest2d.vec),
    aten.pad.default,
}
RULES: dict[Any, Callable[..., Any]] = {
    aten.conv2d.default: _conv2d,
    aten.convolution.default: _convolution,
    aten.linear.default: _linear,
    aten.batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    **{op: _add for op in (aten.add.Tensor, aten.add_.Tensor, aten.add.Scalar)},
    **{op: _sub for op in (aten.sub.Tensor, aten.sub.Scalar)},
    **{op: _mul for op in (aten.mul.Tensor, aten.mul.Scalar)},
    **{op: _div for op in (aten.div.Tensor, aten.div.Scalar)},
    aten.neg.default: lambda x: TorchBounds(-x.upper, -x.lower),
    aten.silu.default: _falling_then_rising(F.silu, "silu"),
    aten.silu_.default: _falling_then_rising(F.silu, "silu"),
    aten.hardswish.default: _falling_then_rising(F.hardswish, "hardswish"),
    aten.hardswish_.default: _falling_then_rising(F.hardswish, "hardswish"),
    aten.gelu.default: _falling_then_rising(F.gelu, "gelu"),
}
#: Ops that read only a bounded tensor's shape.
SHAPE_OF = {aten.sym_size.int, aten.size.default}
#: Ops whose result is a tuple whose first element is the output.
TUPLE_RESULTS = {aten._native_batch_norm_legit_no_training.default}


class _Unbounded:
    """A value the interpreter cannot bound; everything computed from it is unbounded too."""


UNBOUNDED = _Unbounded()


class IntervalInterpreter(torch.fx.Interpreter):
    """Runs a GraphModule on :class:`TorchBounds`; a node without a rule gives ``UNBOUNDED``."""

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        flat = [x for v in (*args, *kwargs.values()) for x in (v if isinstance(v, (list, tuple)) else (v,))]
        if any(isinstance(v, _Unbounded) for v in flat):
            return UNBOUNDED
        if not any(isinstance(v, TorchBounds) for v in flat):
            return super().call_function(target, args, kwargs)  # constants: shape arithmetic, weights
        if target is operator.getitem:  # batch_norm's (out, mean, var) tuple
            return args[0][args[1]]
        if target in SHAPE_OF:
            return target(*_ends(args, "lower"), **kwargs)
        if target in RULES:
            result = RULES[target](*args, **kwargs)
            return (result, None, None) if target in TUPLE_RESULTS and result is not UNBOUNDED else result
        if target in NON_DECREASING:
            if target._schema.name.endswith("_"):  # relu_, hardtanh_: never overwrite bounds kept for a layer
                args = _cloned(args)
            return TorchBounds(target(*_ends(args, "lower"), **kwargs), target(*_ends(args, "upper"), **kwargs))
        return UNBOUNDED

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target == "_guards_fn":  # torch.export's check of the input's shape: bounds have the right shape
            return None
        if any(isinstance(v, (TorchBounds, _Unbounded)) for v in args):
            return UNBOUNDED
        return super().call_module(target, args, kwargs)


def propagate(
    module: torch.fx.GraphModule, lower: torch.Tensor, upper: torch.Tensor, keep: set[str]
) -> tuple[dict[str, TorchBounds], tuple[str, ...]]:
    """Bounds of the nodes named in ``keep`` for inputs in the box [lower, upper], and where the proof
    stopped (nodes with every input bounded and no bounds of their own)."""
    found: dict[str, TorchBounds] = {}
    stopped: list[str] = []
    interpreter = IntervalInterpreter(module)
    original = interpreter.run_node

    def run_node(node: torch.fx.Node) -> Any:
        value = original(node)
        if isinstance(value, TorchBounds) and bool(value.lower.isnan().any() or value.upper.isnan().any()):
            value = UNBOUNDED  # inf - inf, 0 * inf: bounds nothing
        if value is UNBOUNDED and node.op == "call_function":
            inputs = [interpreter.env.get(n) for n in node.all_input_nodes]
            if not any(isinstance(v, _Unbounded) for v in inputs):
                stopped.append(f"{getattr(node.target, '__name__', node.target)} {node.name}")
        if node.name in keep and isinstance(value, TorchBounds):
            found[node.name] = value
        return value

    interpreter.run_node = run_node  # type: ignore[method-assign]
    with torch.no_grad():
        interpreter.run(TorchBounds(lower.double(), upper.double()))
    return found, tuple(stopped)
