"""Per-image, per-channel reductions of the measured activations, computed inside the ONNX graph.

Why in the graph: an activation that is a graph output is kept whole until ``run`` returns (a
batch of every measured layer at once) and, on CPU, is copied back from onnxruntime's blocked
NCHWc layout into a fresh NCHW array (measured: resnet50 at batch 32 peaked at 4.6x a bare pass's
memory). Reduced inside the graph, only (N, C) arrays leave the runtime and each activation is
freed as soon as the next layer and its reductions are done.

Per measured tensor, over every axis but the batch and the channel axis, two forms:

- ``pooled`` (CPU, NCHW, known maps under :data:`POOLED_COUNT_LIMIT` positions): ops onnxruntime
  runs on its blocked layout, so no activation is reordered or copied: ``GlobalMaxPool``; the
  active count as the mean of a 0/1 map (``HardSigmoid`` with a huge gain, twice, see
  :func:`indicator_gain`), ``round(mean x positions)`` being exact below 2**22 positions; the sum
  as a float32 ``GlobalAveragePool`` (means agree with float64 numpy to about 1e-7 relative).
- ``float64`` (NHWC tensors, larger or unknown maps, float64 activations, CUDA): ``ReduceMax``; the
  count as ``ReduceSum(Cast(Greater(x, eps)))``, cast to float below 2**24 positions (every partial
  sum is then an exact integer; 2.5x cheaper than int32 on CPU), to int32 above; the sum as
  ``ReduceSum(Cast(x, double))``, what numpy's float64 sum gives.
- ``whole`` (float16 and other narrow activations): the activation itself as a graph output, reduced
  in numpy. onnxruntime's CPU kernels compute in float32 around casts it inserts and then removes
  in pairs, so a reduction of ours reading a float16 activation may see it unrounded (counts at
  ``eps`` and maxima differed from the fp16 model's own output); a graph output is the fp16 tensor.


A maximum is exact in any precision; onnxruntime's ``ReduceMax`` skips NaN, so non-finite
activations are found on the sum, which every NaN and inf reaches.

Order matters for memory: onnxruntime orders nodes by a depth-first walk back from the nodes whose
outputs nobody consumes, taking the one of highest index first. The reductions are appended after
the model's nodes in reverse layer order (each ending in a node onnxruntime keeps: a ``Flatten``
after a pooling op, which it replaces), and each model output is read by a ``ReduceMax`` of ours
placed before them (:func:`_anchor_outputs`), so each layer's reductions run right after the layer. This is
onnxruntime's behaviour, not a documented contract: a test pins it.

The ops keep the model's opset: axes are an attribute before opset 13 (``ReduceSum``) or 18
(``ReduceMax``) and an input from then on. A model below opset 7 is converted to opset 7 first
(onnxruntime has no kernel for ``Greater``-1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..reductions import PerImageReductions, numpy_reductions
from .shapes import TensorType

#: Below this many positions per map a float32 count is exact (every partial sum is an integer < 2**24).
FLOAT_COUNT_LIMIT = 2**24
#: Below this many positions a count recovered as round(float32 mean x positions) is exact.
POOLED_COUNT_LIMIT = 2**22
#: onnxruntime has no kernel for Greater before opset 7.
MIN_OPSET = 7
#: Bytes per value of the element types an activation may have (others: float32's).
ITEMSIZE = {TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8}
#: Model output types a ``ReduceMax`` reads (the anchors of :func:`_anchor_outputs`).
ANCHORED = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64})
#: Activations reduced in the graph, in their own precision (eps rounded to it, as numpy compares them);
#: unknown element types are taken for float32. Any other type is a ``whole`` output (module docstring).
IN_GRAPH = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.DOUBLE: np.dtype(np.float64)}


@dataclass(frozen=True)
class ReducedOutputs:
    """The graph outputs of one measured tensor's reductions, and how to read them back."""

    form: str  # "pooled", "float64" or "whole" (module docstring)
    max: str  # whole: the activation itself
    active: str
    sum: str  # pooled: the mean; float64: the sum
    shape: str | None  # the activation's shape, an output only where shape inference left the positions unknown
    channel_axis: int
    itemsize: int
    positions: int | None  # values per image and channel, when shape inference knows them
    eps: float

    @property
    def pooled(self) -> bool:
        return self.form == "pooled"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in (self.max, self.active, self.sum, self.shape) if name)

    def read(self, values: dict[str, np.ndarray]) -> PerImageReductions:
        """The (N, C) reductions from this batch's output ``values`` (by output name)."""
        if self.form == "whole":
            return numpy_reductions(values[self.max], self.channel_axis, self.eps)
        positions = self.positions
        if positions is None:
            shape = values[self.shape]  # type: ignore[index]
            positions = int(np.prod(shape, dtype=np.int64)) // int(shape[0] * shape[self.channel_axis])
        maxima = values[self.max]
        maxima = maxima.reshape(maxima.shape[:2])
        active, first = values[self.active].reshape(maxima.shape), values[self.sum].reshape(maxima.shape)
        if self.pooled:  # means: NaN activations make a NaN mean, which the sum reports
            active = np.rint(np.nan_to_num(active.astype(np.float64)) * positions)
            sums = first.astype(np.float64) * positions
        else:
            sums = first.astype(np.float64)
        return PerImageReductions(positions, maxima, active.astype(np.int64), sums, self.itemsize)


class _NodeWriter:
    """Writes nodes for one opset, named so that they cannot clash with the model's."""

    def __init__(self, opset: int, prefix: str) -> None:
        self.opset = opset
        self.prefix = prefix
        self.written: list[onnx.NodeProto] = []
        self._count = 0

    def take(self) -> list[onnx.NodeProto]:
        """The nodes written since the last call."""
        taken, self.written = self.written, []
        return taken

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{self._count}_{hint}"

    def constant(self, value: np.ndarray, hint: str) -> str:
        """A Constant node, not an initializer: IR < 4 wants every initializer listed as a graph input."""
        return self.node("Constant", [], hint, value=numpy_helper.from_array(value))

    def node(self, op: str, inputs: list[str], hint: str, output: str | None = None, **attributes: object) -> str:
        output = output or self._name(hint)
        self.written.append(helper.make_node(op, inputs, [output], name=self._name(op), **attributes))
        return output

    def reduce(self, op: str, data: str, axes: list[int], output: str) -> str:
        """``op`` over ``axes`` (keepdims 0), in whichever form this opset takes the axes."""
        if self.opset >= (13 if op == "ReduceSum" else 18):
            axes_name = self.constant(np.array(axes, dtype=np.int64), "axes")
            return self.node(op, [data, axes_name], op, output, keepdims=0)
        return self.node(op, [data], op, output, axes=axes, keepdims=0)


def indicator_gain(eps: float) -> float:
    """A power of two ``g`` for which ``clip(g * (x - eps), 0, 1)`` is 1 for every float32 ``x > eps`` above
    ``eps + 2**-127`` and ``g * eps`` is finite; applied twice, also for the subnormal ``x`` when ``eps`` is 0.

    A power of two scales exactly, so ``g * x - g * eps`` has the sign of ``x - eps``, and the
    smallest nonzero ``x - eps`` (2**-149) becomes 2**-22 after the first step, 2**105 after the second.
    """
    gain = 2.0**127
    while gain * eps > 2.0**126:
        gain /= 2.0
    return gain


def _pooled(writer: _NodeWriter, data: str, eps: float, names: ReducedOutputs) -> None:
    """The pooled form (module docstring). Each pooled (N, C, 1, ...) result is flattened to (N, C) by
    a node of ours: onnxruntime replaces pooling nodes by blocked-layout ones, and only nodes it keeps
    hold the execution order."""
    gain = indicator_gain(eps)
    writer.node("Flatten", [writer.node("GlobalMaxPool", [data], "max")], "max", names.max, axis=1)
    step = writer.node("HardSigmoid", [data], "step", alpha=gain, beta=-gain * eps)
    step = writer.node("HardSigmoid", [step], "step", alpha=2.0**127, beta=0.0)
    writer.node("Flatten", [writer.node("GlobalAveragePool", [step], "active")], "active", names.active, axis=1)
    writer.node("Flatten", [writer.node("GlobalAveragePool", [data], "mean")], "mean", names.sum, axis=1)


def _float64(
    writer: _NodeWriter, data: str, axes: list[int], eps: float, dtype: np.dtype, names: ReducedOutputs
) -> None:
    """The float64 form (module docstring), compared with ``eps`` rounded to the activation's ``dtype``."""
    writer.reduce("ReduceMax", data, axes, names.max)
    above = writer.node("Greater", [data, writer.constant(np.array(eps, dtype=dtype), "eps")], "above")
    exact_in_float = names.positions is not None and names.positions < FLOAT_COUNT_LIMIT
    counted = writer.node("Cast", [above], "counted", to=TensorProto.FLOAT if exact_in_float else TensorProto.INT32)
    writer.reduce("ReduceSum", counted, axes, names.active)
    writer.reduce("ReduceSum", writer.node("Cast", [data], "wide", to=TensorProto.DOUBLE), axes, names.sum)


def _reduce_tensor(writer: _NodeWriter, tensor: str, known: TensorType, eps: float, names: ReducedOutputs) -> None:
    if names.form == "pooled":
        _pooled(writer, tensor, eps, names)
        return
    data, dtype = tensor, IN_GRAPH.get(known.element, np.dtype(np.float32))
    if known.dims is not None:
        axes = [axis for axis in range(len(known.dims)) if axis not in (0, names.channel_axis)]
    elif names.channel_axis == 1:
        flat_shape = writer.constant(np.array([0, 0, -1], dtype=np.int64), "flat_shape")
        data, axes = writer.node("Reshape", [data, flat_shape], "flat"), [2]
    else:
        raise ValueError(f"{tensor}: rank unknown and channel axis {names.channel_axis}: cannot choose the axes")
    if not axes:  # (N, C) already; empty axes would mean "every axis"
        raise ValueError(f"{tensor}: has no spatial axis to reduce")
    _float64(writer, data, axes, eps, dtype, names)
    if names.shape is not None:  # a Shape of a blocked NCHWc tensor would reorder it: only where it is needed
        writer.node("Shape", [tensor], "shape", names.shape)


def _anchor_outputs(writer: _NodeWriter, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """A ``ReduceMax`` of ours reading each model output, itself a (scalar) graph output, written ahead of
    the reductions.

    onnxruntime may replace the node producing a model output (a Conv + Relu becomes a blocked Conv
    and a ReorderOutput, with a new, higher index); left a leaf, the walk would start from it and
    run the whole network before any reduction. Read by a node of ours placed before every
    reduction, it is no longer a leaf. The model output stays what it is: routing it through an
    ``Identity`` instead changed what onnxruntime fuses (a tanh GELU whose output is the model's
    became its ``FastGelu``, one float32 ulp away from the model's own output).
    """
    produced = {name for node in graph.node for name in node.output}
    for index, output in enumerate(graph.output):
        if output.name in produced and output.type.tensor_type.elem_type in ANCHORED:
            writer.node("ReduceMax", [output.name], "anchor", f"cnnaudit_anchor_{index}", keepdims=0)
    return writer.take()


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def add_reductions(
    model: onnx.ModelProto, tensors: dict[str, int], eps: float, types: dict[str, TensorType], pooled: bool = True
) -> dict[str, ReducedOutputs]:
    """Add to ``model`` (in place: the audit's own copy), per measured tensor (name -> channel axis),
    its reductions as graph outputs after the model's own; ``pooled`` False: the float64 form for all.

    ``types`` come from :func:`tensor_types`. A tensor of unknown rank is reduced through a
    ``Reshape`` to (N, C, -1) when its channel axis is 1; otherwise ValueError.
    """
    if default_opset(model) < MIN_OPSET:
        from onnx import version_converter

        model.CopyFrom(version_converter.convert_version(model, MIN_OPSET))
    writer = _NodeWriter(default_opset(model), "cnnaudit_reduce_")
    anchors = _anchor_outputs(writer, model.graph)
    outputs: dict[str, ReducedOutputs] = {}
    chunks: list[list[onnx.NodeProto]] = []
    for index, (tensor, channel_axis) in enumerate(tensors.items()):
        known = types.get(tensor, TensorType(0, None))
        positions = known.positions(channel_axis)
        names = ReducedOutputs(
            _form(known, channel_axis, pooled),
            *(f"cnnaudit_{kind}_{index}" for kind in ("max", "active", "sum")),
            shape=None if positions is not None else f"cnnaudit_shape_{index}",
            channel_axis=channel_axis,
            itemsize=ITEMSIZE.get(known.element, 4),  # type: ignore[call-overload]
            positions=positions,
            eps=eps,
        )
        if names.form == "whole":
            names = replace(names, max=tensor, active="", sum="", shape=None)
            if names.max not in {output.name for output in model.graph.output}:
                model.graph.output.append(helper.make_empty_tensor_value_info(names.max))
        else:
            _reduce_tensor(writer, tensor, known, eps, names)
        chunks.append(writer.take())
        outputs[tensor] = names
    # Reversed: see "Order matters for memory" in the module docstring.
    model.graph.output.extend(helper.make_empty_tensor_value_info(node.output[0]) for node in anchors)
    model.graph.node.extend([*anchors, *(node for chunk in reversed(chunks) for node in chunk)])
    for names in reversed(outputs.values()):
        if names.form != "whole":
            model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in reversed(names.names))
    return outputs


def _form(known: TensorType, channel_axis: int, pooled: bool) -> str:
    if known.element not in (*IN_GRAPH, 0):
        return "whole"
    positions = known.positions(channel_axis)
    small = positions is not None and positions < POOLED_COUNT_LIMIT
    return "pooled" if pooled and known.element == TensorProto.FLOAT and channel_axis == 1 and small else "float64"
