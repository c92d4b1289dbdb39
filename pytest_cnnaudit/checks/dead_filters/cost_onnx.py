"""An ONNX graph as the cost count reads it (:class:`~.cost.CostGraph`): shapes from ONNX shape inference."""

from __future__ import annotations

import numpy as np
import onnx

from ...backends.onnx.index import OnnxGraph
from ...backends.onnx.shapes import without_weights
from .cost import CostGraph, Use, WeightedOp

#: Ops through which a zero channel stays in place and zero (or a constant a consumer can fold).
KEEPS_ZERO = frozenset(
    {"Relu", "Clip", "LeakyRelu", "PRelu", "HardSwish", "Identity", "Dropout", "MaxPool", "AveragePool", "Pad"}
    | {"Resize", "Upsample", "BatchNormalization", "Mul", "Div"}
)
#: Ops that pool every position of a channel into one value, keeping the channel axis.
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"})
FLATTENING = frozenset({"Flatten", "Reshape", "Squeeze"})
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    found = next((a for a in node.attribute if a.name == name), None)
    return int(onnx.helper.get_attribute_value(found)) if found is not None else default


def inferred_shapes(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape for one image of ``input_shape`` (the declared input dims replaced first)."""
    copy = without_weights(model)  # a copy without the large weights' values (shape inference needs none)
    (image,) = OnnxGraph(copy).image_inputs
    for dim, size in zip(image.type.tensor_type.shape.dim, input_shape):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    shapes = {t.name: tuple(t.dims) for t in copy.graph.initializer}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def _positions(shape: tuple[int, ...]) -> int:
    """Positions per image of an (N, C, ...) tensor."""
    return int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1


def _weighted(graph: OnnxGraph, node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> WeightedOp | None:
    value = graph.constant(node.input[1]) if len(node.input) > 1 else None
    if value is None:
        return None
    weight = tuple(int(n) for n in value.shape)
    has_bias = int(len(node.input) > 2 and bool(node.input[2]))
    if node.op_type in ("Gemm", "MatMul"):
        if len(weight) != 2:
            return None
        transposed = node.op_type == "Gemm" and _attribute(node, "transB", 0)
        return WeightedOp("dense", weight if transposed else weight[::-1], 1, 1, has_bias)
    if node.output[0] not in shapes or node.input[0] not in shapes:
        return None
    consumers = graph.graph_consumers.get(node.output[0], [])
    kept_norm = 4 if len(consumers) == 1 and consumers[0].op_type == "BatchNormalization" else 0
    groups = _attribute(node, "group", 1)
    if node.op_type == "Conv":
        return WeightedOp("conv", weight, groups, _positions(shapes[node.output[0]]), has_bias + kept_norm)
    # every input position of a ConvTranspose scatters a whole filter
    return WeightedOp("conv_transpose", weight, groups, _positions(shapes[node.input[0]]), has_bias + kept_norm)


def _use(graph: OnnxGraph, node: onnx.NodeProto, name: str, shapes: dict[str, tuple[int, ...]]) -> Use | None:
    """How ``node`` reads tensor ``name``, when the walk can follow it."""
    op, output = node.op_type, node.output[0]
    if op == "Concat":
        rank = len(shapes.get(name, ()))
        if not rank or _attribute(node, "axis", 1) % rank != 1 or any(i not in shapes for i in node.input):
            return None
        offset = sum(shapes[i][1] for i in node.input[: list(node.input).index(name)])
        return Use("concat", output, offset)
    if node.input[0] != name:
        return None
    if op in KEEPS_ZERO:
        constant_factor = op not in ("Mul", "Div") or graph.constant(node.input[1]) is not None
        return Use("keeps_zero", output) if constant_factor else None
    if op in GLOBAL_POOLS:
        return Use("global_pool", output)
    if op in FLATTENING:
        return Use("flatten", output)
    return None


def onnx_cost_graph(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> CostGraph:
    """The cost view of ``model`` at one image of ``input_shape``; ops keyed by their first output."""
    graph = OnnxGraph(model)
    shapes = inferred_shapes(model, input_shape)
    ops: dict[str, WeightedOp] = {}
    uses: dict[str, list[Use]] = {}
    for node in model.graph.node:
        weighted = (
            _weighted(graph, node, shapes) if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") else None
        )
        if weighted is not None:
            ops[node.output[0]] = weighted
            uses.setdefault(node.input[0], []).append(Use("weighted", node.output[0]))
            continue
        for name in dict.fromkeys(i for i in node.input if i):
            use = _use(graph, node, name, shapes)
            if use is not None:
                uses.setdefault(name, []).append(use)
    return CostGraph(ops, uses, _stored_floats(model))


def _stored_floats(model: onnx.ModelProto) -> int:
    """Float numbers stored in the model: initializers and Constant nodes' tensors."""
    tensors = [*model.graph.initializer]
    tensors += [
        a.t for node in model.graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value"
    ]
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in tensors if t.data_type in FLOATS)
