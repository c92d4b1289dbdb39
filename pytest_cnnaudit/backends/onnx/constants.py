"""Values computed from constants alone: a conv weight behind ``DequantizeLinear``, ``Cast``, ``Reshape``...

Exporters and quantisers often write a weight as a small subgraph over initializers
(``DequantizeLinear(int8 initializer, scale, zero point)``, ``Cast`` of a float16 initializer,
``ConstantOfShape``, a ``Reshape`` or ``Transpose`` of a stored array). Such a subgraph is
evaluated once with onnx's reference evaluator (``onnx.reference``, maintained with the
operator specifications, exact in numpy) so that weight-based checks read the values the
runtime computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from .nodes import has_subgraph

#: Ops whose output is not a function of their inputs: never folded.
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
#: Domains the reference evaluator implements.
STANDARD_DOMAINS = ("", "ai.onnx")


def _foldable(node: onnx.NodeProto) -> bool:
    return node.domain in STANDARD_DOMAINS and node.op_type not in NONDETERMINISTIC and not has_subgraph(node)


def _older_opset_ops() -> list[type]:
    """``DequantizeLinear`` for opsets 10-18, which the reference evaluator implements from 19 only.

    Opset 19 added float8 inputs and 21 blocked quantisation; for the integer inputs of
    opsets 10-18 the arithmetic, ``(x - zero_point) * scale`` per tensor or along ``axis``, is
    the same, so the reference implementation of opset 23 (whose attributes the evaluator passes) computes them exactly.
    """
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_23

    class DequantizeLinear(DequantizeLinear_23):
        op_domain = ""

    return [DequantizeLinear]


class ConstantFolder:
    """Answers "is this tensor a constant, and what is it?" for every tensor of one graph.

    ``producer`` maps a tensor to the node computing it; ``stored`` holds initializers and
    ``Constant`` node values. A tensor is constant when every path up from it ends in stored
    values through deterministic standard ops; graph inputs are never constant.
    """

    def __init__(
        self,
        producer: Callable[[str], onnx.NodeProto | None],
        stored: Mapping[str, np.ndarray],
        opsets: dict[str, int],
    ) -> None:
        self._producer = producer
        self._stored = stored
        self._opsets = opsets
        self._constant: dict[str, bool] = {}
        self._folded: dict[str, np.ndarray | None] = {}

    def value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is computed from constants only, else None."""
        if name in self._stored:
            return self._stored[name]
        if name not in self._folded:
            self._folded[name] = self._evaluate(name) if self.is_constant(name) else None
        return self._folded[name]

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` depends on stored values only; an iterative post-order over producers
        (graphs are deeper than Python's recursion limit)."""
        stack = [name]
        while stack:
            tensor = stack[-1]
            if tensor in self._constant:
                stack.pop()
                continue
            if tensor in self._stored:
                self._constant[tensor] = True
                stack.pop()
                continue
            node = self._producer(tensor)
            if node is None or not _foldable(node):
                self._constant[tensor] = False
                stack.pop()
                continue
            pending = [i for i in node.input if i and i not in self._constant]
            if pending:
                stack.extend(pending)
                continue
            self._constant[tensor] = all(self._constant[i] for i in node.input if i)
            stack.pop()
        return self._constant[name]

    def _subgraph(self, name: str) -> tuple[list[onnx.NodeProto], set[str]]:
        """The nodes computing ``name`` in dependency order, and the stored tensors they read."""
        ordered: list[onnx.NodeProto] = []
        leaves: set[str] = set()
        done: set[str] = set()
        stack: list[tuple[str, bool]] = [(name, False)]
        while stack:
            tensor, expanded = stack.pop()
            if tensor in done:
                continue
            if tensor in self._stored:
                leaves.add(tensor)
                done.add(tensor)
                continue
            node = self._producer(tensor)
            assert node is not None  # is_constant said so
            if expanded:
                ordered.append(node)
                done.update(node.output)
                continue
            stack.append((tensor, True))
            stack.extend((i, False) for i in node.input if i and i not in done)
        return ordered, leaves

    def _evaluate(self, name: str) -> np.ndarray | None:
        from onnx.reference import ReferenceEvaluator

        nodes, leaves = self._subgraph(name)
        older = self._opsets.get("", 0) < 19
        graph = onnx.helper.make_graph(
            nodes,
            "fold",
            inputs=[],
            outputs=[onnx.helper.make_empty_tensor_value_info(name)],
            initializer=[numpy_helper.from_array(np.asarray(self._stored[leaf]), leaf) for leaf in sorted(leaves)],
        )
        try:
            evaluator = ReferenceEvaluator(graph, opsets=self._opsets, new_ops=_older_opset_ops() if older else None)
            (result,) = evaluator.run(None, {})
        except Exception:  # an op the reference evaluator lacks, or a malformed subgraph: not readable
            return None
        return np.asarray(result)
