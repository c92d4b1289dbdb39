"""What ONNX shape inference says of a model's tensors, asked without the weights' values.

Shape inference serialises the whole model and returns a copy of it: asked with the weights, it
held three copies of them at once (resnet50: 300 MB over an opened model's 100). It reads a weight's
type and dims only, and the values of small constants (shapes, axes), so every initializer larger
than :data:`SHAPE_VALUES` goes to it as its name, type and dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx


@dataclass(frozen=True)
class TensorType:
    """What shape inference knows of one tensor."""

    element: int  # onnx.TensorProto element type; 0 when unknown
    dims: tuple[int | None, ...] | None  # None: rank unknown

    def positions(self, channel_axis: int) -> int | None:
        """Values per image and channel, when every spatial dimension is known."""
        if self.dims is None:
            return None
        spatial = [d for axis, d in enumerate(self.dims) if axis not in (0, channel_axis)]
        return None if any(d is None for d in spatial) else int(np.prod(spatial, dtype=np.int64))


#: Initializers with more values than this go to shape inference without their values.
SHAPE_VALUES = 1024


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each large initializer replaced by its name, type and dims (module docstring); it
    shares nothing with ``model``, so changing it leaves ``model`` as it was."""
    graph = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions)
    light.graph.CopyFrom(onnx.GraphProto(node=graph.node, input=graph.input, output=graph.output, name=graph.name))
    light.graph.value_info.extend(graph.value_info)
    for tensor in graph.initializer:
        if np.prod(tensor.dims, dtype=np.int64) <= SHAPE_VALUES:
            light.graph.initializer.append(tensor)
        else:
            light.graph.initializer.append(
                onnx.TensorProto(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type)
            )
    return light


def tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Element type and dims of every tensor that shape inference types (empty when it fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(without_weights(model))
    except Exception:
        return {}
    found: dict[str, TensorType] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        tensor_type = info.type.tensor_type
        dims = (
            tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim)
            if tensor_type.HasField("shape")
            else None
        )
        found[info.name] = TensorType(tensor_type.elem_type, dims)
    return found
