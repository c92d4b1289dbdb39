"""Which activation a torch graph applies to a tensor, in each form it is written.

torch.export keeps most activations as one aten op (``aten.silu``, ``aten.hardswish``); people and
torch's own decompositions also write them out, and each form is recognised as a whole:

- a **clamp** from 0: ``hardtanh(x, 0, 6)``, ``clamp(x, 0, 6)``, ``relu6(x)`` are ReLU6; another
  upper bound (or none) is ``clip``, as the ONNX side calls ``Clip(x, 0, b)``;
- a **gated product** ``x * g(x)``, ``g`` computed from ``x`` alone (``x`` possibly scaled by a
  positive constant, the product possibly divided by one): ``g`` holding a sigmoid is SiLU, a
  hard sigmoid or a clamp (``relu6(x + 3) / 6``) HardSwish, an erf or a tanh of a cubic GELU,
  a tanh of a softplus Mish;
- a **selection** ``where(x > 0, x, f(x))``: ``f`` a product with a learned weight is PReLU, with
  a constant LeakyReLU, an exponential ELU (CELU when ``x`` is divided first).

The gate's sub-ops (the sigmoid of a SiLU, the clamp inside a HardSwish) are never taken for
activations of their own: the forms above are tried on a tensor before its single-op users.
Kinds are named as on the ONNX side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

aten = torch.ops.aten

#: Ops that are one activation on their own (ELU's variants and clamps are decided by their arguments).
SINGLE_OPS = {
    aten.relu.default: "relu",
    aten.relu_.default: "relu",
    aten.relu6.default: "relu6",
    aten.hardswish.default: "hardswish",
    aten.hardswish_.default: "hardswish",
    aten.silu.default: "silu",
    aten.silu_.default: "silu",
    aten.gelu.default: "gelu",
    aten.gelu_.default: "gelu",
    aten.mish.default: "mish",
    aten.mish_.default: "mish",
    aten.selu.default: "selu",
    aten.selu_.default: "selu",
    aten.celu.default: "celu",
    aten.celu_.default: "celu",
    aten.leaky_relu.default: "leaky_relu",
    aten.leaky_relu_.default: "leaky_relu",
    aten.prelu.default: "prelu",
    aten._prelu_kernel.default: "prelu",
    # saturating: no value is an inactive unit's, so nothing to count (the checks say so)
    aten.sigmoid.default: "sigmoid",
    aten.sigmoid_.default: "sigmoid",
    aten.tanh.default: "tanh",
    aten.tanh_.default: "tanh",
    aten.hardsigmoid.default: "hard_sigmoid",
    aten.hardsigmoid_.default: "hard_sigmoid",
    aten.softplus.default: "softplus",
    aten.softmax.int: "softmax",
    aten._softmax.default: "softmax",
}
ELU_OPS = (aten.elu.default, aten.elu_.default)
#: Clamp-like ops: (name, position, default) of the lower and of the upper bound.
CLAMP_OPS = {
    aten.hardtanh.default: (("min_val", 1, -1.0), ("max_val", 2, 1.0)),
    aten.hardtanh_.default: (("min_val", 1, -1.0), ("max_val", 2, 1.0)),
    aten.clamp.default: (("min", 1, None), ("max", 2, None)),
    aten.clamp_.default: (("min", 1, None), ("max", 2, None)),
    aten.clamp_min.default: (("min", 1, None), ("max", None, None)),
    aten.clamp_min_.default: (("min", 1, None), ("max", None, None)),
}
MUL_OPS = (aten.mul.Tensor, aten.mul.Scalar)
DIV_OPS = (aten.div.Tensor, aten.div.Scalar)
#: Ops a gate or a selection's negative branch may be built of, by the name classification reads.
GATE_OPS: dict[Any, str] = {
    **{op: "arithmetic" for op in (aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar)},
    **{op: "arithmetic" for op in (aten.rsub.Scalar, aten.neg.default)},
    **{op: "mul" for op in MUL_OPS},
    **{op: "div" for op in DIV_OPS},
    aten.pow.Tensor_Scalar: "pow",
    aten.erf.default: "erf",
    aten.tanh.default: "tanh",
    aten.sigmoid.default: "sigmoid",
    aten.hardsigmoid.default: "hard_sigmoid",
    aten.softplus.default: "softplus",
    aten.exp.default: "exp",
    aten.expm1.default: "exp",
    aten.log1p.default: "log1p",
    aten.relu6.default: "clamp",
    **{op: "clamp" for op in CLAMP_OPS},
    aten.clamp_max.default: "clamp",
    aten.where.self: "where",
    aten.gt.Scalar: "compare",
    aten.view.default: "reshape",
    aten.reshape.default: "reshape",
    aten.expand.default: "reshape",
}
#: At most this many ops in a gate: real ones have up to eight (tanh-GELU), and the search stays local.
GATE_SIZE = 16
#: SELU's fixed constants (alpha, scale), as torch decomposes ``selu`` into ``elu``.
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


@dataclass(frozen=True)
class Activation:
    """An activation kind and the node whose output is measured."""

    kind: str
    node: Node


def activation_of(x: Node) -> Activation | None:
    """The activation applied to ``x``: a gated product, a selection, a hard sigmoid, or a single op using it."""
    return _gated(x) or _selected(x) or _hard_sigmoid(x) or _single(x)


def _single(x: Node) -> Activation | None:
    for user in x.users:
        if user.args and user.args[0] is x:
            kind = _single_op_kind(user)
            if kind is not None:
                return Activation(kind, user)
    return None


def _single_op_kind(node: Node) -> str | None:
    if node.target in SINGLE_OPS:
        return SINGLE_OPS[node.target]
    if node.target in ELU_OPS:
        alpha, scale, input_scale = (float(_argument(node, name, at, 1.0)) for name, at in _ELU_ARGUMENTS)
        if math.isclose(alpha, SELU_ALPHA) and math.isclose(scale, SELU_SCALE):
            return "selu"
        return "celu" if input_scale != 1.0 else "elu"
    if node.target in CLAMP_OPS:
        low, high = (_argument(node, name, at, default) for name, at, default in CLAMP_OPS[node.target])
        if low is not None and float(low) == 0.0:
            return "relu6" if high is not None and float(high) == 6.0 else "clip"
    return None


_ELU_ARGUMENTS = (("alpha", 1), ("scale", 2), ("input_scale", 3))


def _argument(node: Node, name: str, at: int | None, default: Any) -> Any:
    """An op's argument given by position or by name."""
    if at is not None and len(node.args) > at:
        return node.args[at]
    return node.kwargs.get(name, default)


def _gated(x: Node) -> Activation | None:
    """``x * g(x)``: SiLU, HardSwish, GELU or Mish by what the gate ``g`` is made of."""
    for scaled in _positive_multiples(x):
        for product in scaled.users:
            if product.target not in MUL_OPS or len(product.args) < 2:
                continue
            gate = product.args[1] if product.args[0] is scaled else product.args[0]
            ops = _ops_between(gate, x) if isinstance(gate, Node) else None
            kind = _gate_kind(ops) if ops is not None else None
            if kind is not None:
                return Activation(kind, _after_positive_scaling(product))
    return None


def _gate_kind(ops: set[str]) -> str | None:
    """What the gate's ops make of ``x * g(x)``; GELU's gate is ``1 + erf(..)`` or ``1 + tanh(cubic)``
    (``x * erf(x)`` and ``x * tanh(x)`` are never negative: no rectifier)."""
    if "tanh" in ops and ops & {"softplus", "log1p"}:
        return "mish"
    if "arithmetic" in ops and ("erf" in ops or ops >= {"tanh", "pow"}):
        return "gelu"
    if "sigmoid" in ops:
        return "silu"
    if ops & {"hard_sigmoid", "clamp"}:
        return "hardswish"
    return None


def _selected(x: Node) -> Activation | None:
    """``where(x > 0, x, f(x))``: PReLU, LeakyReLU, ELU or CELU by what ``f`` is made of; Softplus
    as torch decomposes it (``where(x > 20, x, log1p(exp(x)))``) is recognised too, to be named."""
    for choice in x.users:
        if choice.target != aten.where.self or len(choice.args) != 3 or choice.args[1] is not x:
            continue
        test, negative = choice.args[0], choice.args[2]
        if not (isinstance(test, Node) and test.target == aten.gt.Scalar and test.args[0] in _positive_multiples(x)):
            continue
        ops = _ops_between(negative, x) if isinstance(negative, Node) else None
        if ops is None:
            continue
        kind = _negative_branch_kind(ops) if _scalar(test.args[1]) == 0.0 else None
        if kind is None and {"exp", "log1p"} <= ops:
            kind = "softplus"
        if kind is not None:
            return Activation(kind, choice)
    return None


def _hard_sigmoid(x: Node) -> Activation | None:
    """``clamp(x + 3, 0, 6) / 6`` with no product by ``x`` after it: a hard sigmoid, not a ReLU6 of its own."""
    for shifted in x.users:
        if shifted.target not in (aten.add.Tensor, aten.add.Scalar) or shifted.args[0] is not x:
            continue
        if _scalar(shifted.args[1]) != 3.0:
            continue
        node = shifted
        while len(users := list(node.users)) == 1 and GATE_OPS.get(users[0].target) == "clamp":
            node = users[0]
        if node is not shifted:
            return Activation("hard_sigmoid", _after_positive_scaling(node))
    return None


def _negative_branch_kind(ops: set[str]) -> str | None:
    if "exp" in ops:
        return "celu" if "div" in ops else "elu"
    if ops <= {"mul", "reshape", "parameter"} and "mul" in ops:
        return "prelu" if "parameter" in ops else "leaky_relu"
    return None


def _ops_between(end: Node, x: Node) -> set[str] | None:
    """The kinds of op computing ``end`` from ``x`` and constants alone (None if anything else enters)."""
    ops: set[str] = set()
    reaches_x = False
    stack, seen = [end], set()
    while stack:
        node = stack.pop()
        if node is x:
            reaches_x = True
            continue
        if node in seen:
            continue
        seen.add(node)
        if node.op == "get_attr":
            if _scalar(node) is None:
                ops.add("parameter")
            continue
        if node.op != "call_function" or node.target not in GATE_OPS or len(seen) > GATE_SIZE:
            return None
        ops.add(GATE_OPS[node.target])
        stack.extend(arg for arg in node.all_input_nodes)
    return ops if reaches_x else None


def _positive_multiples(x: Node) -> list[Node]:
    """``x`` and its products with (or quotients by) a positive constant: GELU's ``x * 0.5``."""
    found = [x]
    for user in x.users:
        if user.target not in (*MUL_OPS, *DIV_OPS) or len(user.args) != 2:
            continue
        if user.args[0] is x:
            other = user.args[1]
        elif user.target in MUL_OPS:
            other = user.args[0]
        else:
            continue  # c / x is no multiple of x
        value = _scalar(other)
        if value is not None and value > 0:
            found.append(user)
    return found


def _after_positive_scaling(node: Node) -> Node:
    """Step over a trailing division or product by a positive constant (HardSwish's ``/ 6``)."""
    users = list(node.users)
    if len(users) == 1 and users[0].target in (*MUL_OPS, *DIV_OPS) and users[0].args[0] is node:
        value = _scalar(users[0].args[1])
        if value is not None and value > 0:
            return users[0]
    return node


def _scalar(arg: Any) -> float | None:
    """A number, or a graph constant holding one value that is not a learned parameter."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return float(arg)
    if isinstance(arg, Node) and arg.op == "get_attr" and arg.graph.owning_module is not None:
        value: Any = arg.graph.owning_module
        for part in str(arg.target).split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(value, torch.nn.Parameter):
            return float(value)
    return None
