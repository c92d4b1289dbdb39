"""Interval bounds for the tensors of an ONNX graph, from a box of inputs: numpy only, no runtime, no torch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .intervals import Bounds, NodeCall, Rule, as_float64
from .intervals_elementwise import RULES as ELEMENTWISE_RULES
from .intervals_linear import RULES as LINEAR_RULES

#: ONNX op type -> its interval rule.
RULES: dict[str, Rule] = {**LINEAR_RULES, **ELEMENTWISE_RULES}


def _evaluate(
    node: onnx.NodeProto, inputs: list[Bounds | None], producer: dict[str, onnx.NodeProto]
) -> list[Bounds | None]:
    call = NodeCall(node, inputs, producer)
    if node.op_type == "Constant":
        (value,) = ReferenceEvaluator(node).run(None, {})
        return [Bounds.point(value)]
    if node.op_type == "Shape" and inputs[0] is not None:
        (shape,) = call.run([inputs[0].lower])
        return [Bounds.point(shape)]
    present = [b for name, b in zip(node.input, inputs) if name]
    if present and all(b is not None and b.exact for b in present):
        try:
            return [Bounds.point(value) for value in call.run([None if b is None else b.lower for b in inputs])]
        except Exception:
            return [None] * len(node.output)
    bound = RULES.get(node.op_type)
    if bound is None:
        return [None] * len(node.output)
    try:
        return bound(call)
    except Exception:  # an attribute combination the rule does not handle: no bounds, as for an unknown op
        return [None] * len(node.output)


def _has_nan(value: np.ndarray) -> bool:
    return value.dtype.kind == "f" and bool(np.isnan(value).any())


class Propagation(dict[str, Bounds]):
    """Tensor name -> bounds, and the nodes where the proof stopped (every input bounded, an output not)."""

    stopped: tuple[str, ...] = ()


def propagate(model: onnx.ModelProto, box: dict[str, Bounds], keep: Iterable[str] | None = None) -> Propagation:
    """Bounds of the tensors in ``keep`` (default: all) for inputs anywhere in ``box``.

    A tensor missing from the result has no bounds: an op on its path has no rule, or a graph
    input other than those in ``box`` feeds it; ``stopped`` names the first such nodes
    (``"Softmax /head/Softmax"``). Tensors nobody needs any more are dropped as the walk
    goes, so memory stays at a few layers' worth.
    """
    graph = model.graph
    keep_all = keep is None
    wanted = set() if keep is None else set(keep)
    bounds: dict[str, Bounds] = {t.name: Bounds.point(numpy_helper.to_array(t)) for t in graph.initializer}
    bounds.update({name: Bounds(as_float64(b.lower), as_float64(b.upper)) for name, b in box.items()})
    producer = {out: node for node in graph.node for out in node.output}
    pending = Counter(name for node in graph.node for name in node.input if name)
    stopped = []
    for node in graph.node:
        inputs = [bounds.get(name) if name else None for name in node.input]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            outputs = _evaluate(node, inputs, producer)
        for name, value in zip(node.output, outputs):
            if value is not None and not (_has_nan(value.lower) or _has_nan(value.upper)):
                bounds[name] = value  # NaN (inf - inf, 0 * inf) bounds nothing: the proof stops there
        if all(bounds.get(name) is not None for name in node.input if name) and node.output[0] not in bounds:
            stopped.append(f"{node.op_type} {node.name or node.output[0]}")
        for name in node.input:
            pending[name] -= 1
            unneeded = name and pending[name] == 0 and not keep_all and name not in wanted
            if unneeded and name in bounds and not bounds[name].exact:  # constants are small: keep them
                del bounds[name]
    result = Propagation(bounds if keep_all else {name: bounds[name] for name in wanted if name in bounds})
    result.stopped = tuple(stopped)
    return result
