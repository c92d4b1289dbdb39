"""A torch.fx graph (the torch backend's ``torch.export`` graph) as the cost count reads it (:class:`~.cost.CostGraph`).

Shapes come from the export's own shape records (``node.meta["val"]``), or from one pass of a
zero input through the graph when a node has none. Stored float numbers are the parameters and
the floating buffers (BatchNorm's running mean and variance), as an ONNX export stores them.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch.fx import Node

from ...backends.torch.graph import CONV_TARGETS, conv_kind, getattr_path
from .cost import CostGraph, Use, WeightedOp

aten = torch.ops.aten
BATCH_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
#: Ops through which a zero channel stays in place and zero (or a constant a consumer can fold).
KEEPS_ZERO = {
    *BATCH_NORMS,
    *(aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default, aten.hardtanh_.default),
    *(aten.leaky_relu.default, aten.leaky_relu_.default, aten.hardswish.default, aten.hardswish_.default),
    *(aten.silu.default, aten.silu_.default, aten.gelu.default, aten.mish.default, aten.prelu.default),
    *(aten.max_pool2d.default, aten.avg_pool2d.default, aten.dropout.default, aten.clone.default),
    *(aten.contiguous.default, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec),
}
SCALED = {aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar}
ADAPTIVE_POOLS = {aten.adaptive_avg_pool2d.default, aten.adaptive_max_pool2d.default}
REDUCTIONS = {aten.mean.dim, aten.amax.default}
FLATTENING = {aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten.squeeze.dims}


def _shape(node: Any) -> tuple[int, ...] | None:
    value = node.meta.get("val") if isinstance(node, Node) else None
    if value is None and isinstance(node, Node) and "tensor_meta" in node.meta:
        value = node.meta["tensor_meta"]
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    return tuple(int(d) if isinstance(d, int) else -1 for d in shape)  # -1: a symbolic (batch) size


def _record_shapes(module: torch.fx.GraphModule, example: torch.Tensor) -> None:
    """Shapes for graphs without the export's records: one pass of a zero input."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(module).propagate(example)


def _positions(shape: tuple[int, ...] | None) -> int:
    return int(np.prod(shape[2:], dtype=np.int64)) if shape is not None and len(shape) > 2 else 1


def _weighted(module: torch.fx.GraphModule, node: Node) -> WeightedOp | None:
    weight = node.args[1] if len(node.args) > 1 else None
    if not (isinstance(weight, Node) and weight.op == "get_attr"):
        return None
    shape = tuple(int(n) for n in getattr_path(module, str(weight.target)).shape)
    bias = int(len(node.args) > 2 and node.args[2] is not None)
    if node.target == aten.linear.default:
        return WeightedOp("dense", shape, 1, 1, bias) if len(shape) == 2 else None
    groups_at = CONV_TARGETS[node.target][2]
    groups = int(node.args[groups_at]) if len(node.args) > groups_at else 1
    users = list(node.users)
    kept_norm = 4 if len(users) == 1 and users[0].target in BATCH_NORMS else 0
    if conv_kind(node) == "Conv":
        return WeightedOp("conv", shape, groups, _positions(_shape(node)), bias + kept_norm)
    return WeightedOp("conv_transpose", shape, groups, _positions(_shape(node.args[0])), bias + kept_norm)


def _use(node: Node, source: Node) -> Use | None:
    """How ``node`` reads ``source``, when the walk can follow it."""
    target, first = node.target, node.args[0] if node.args else None
    if target == aten.cat.default:
        tensors = list(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        shapes = [_shape(t) for t in tensors]
        if any(s is None for s in shapes) or int(dim) % len(shapes[0]) != 1:  # type: ignore[arg-type]
            return None
        offset = sum(s[1] for s in shapes[: tensors.index(source)])  # type: ignore[index]
        return Use("concat", node.name, offset)
    if first is not source:
        return None
    if target in KEEPS_ZERO or (target is operator.getitem and node.args[1] == 0):
        return Use("keeps_zero", node.name)
    if target in SCALED and not isinstance(node.args[1], Node):
        return Use("keeps_zero", node.name)
    if target in ADAPTIVE_POOLS:
        return Use("global_pool" if list(node.args[1]) in ([1, 1], [1]) else "keeps_zero", node.name)  # type: ignore[arg-type]
    if target in REDUCTIONS and _over_positions(node):
        return Use("global_pool", node.name)
    if target in FLATTENING:
        return Use("flatten", node.name)
    return None


def _over_positions(node: Node) -> bool:
    """A mean or max over every position of an (N, C, ...) tensor, keeping the channel axis."""
    shape = _shape(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else None
    if shape is None or not isinstance(dims, (list, tuple)):
        return False
    return {int(d) % len(shape) for d in dims} == set(range(2, len(shape)))


def torch_cost_graph(module: torch.fx.GraphModule, example: torch.Tensor) -> CostGraph:
    """The cost view of ``module``; ops keyed by their node name. ``example``: a zero input, run only when
    the graph lacks shape records."""
    nodes = [node for node in module.graph.nodes if node.op == "call_function"]
    if any(_shape(node) is None for node in nodes if node.target in CONV_TARGETS):
        _record_shapes(module, example)
    ops: dict[str, WeightedOp] = {}
    uses: dict[str, list[Use]] = {}
    for node in nodes:
        weighted = (
            _weighted(module, node) if node.target in CONV_TARGETS or node.target == aten.linear.default else None
        )
        if weighted is not None:
            ops[node.name] = weighted
            uses.setdefault(node.args[0].name, []).append(Use("weighted", node.name))  # type: ignore[union-attr]
            continue
        for source in dict.fromkeys(node.all_input_nodes):
            use = _use(node, source)
            if use is not None:
                uses.setdefault(source.name, []).append(use)
    stored = sum(t.numel() for t in module.state_dict().values() if t.is_floating_point())
    return CostGraph(ops, uses, int(stored))
