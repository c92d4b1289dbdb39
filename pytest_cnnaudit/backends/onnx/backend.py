"""ONNX models through onnxruntime: every measured activation comes out of one run per batch.

Why extra graph outputs: the activation tensors (not the Conv outputs) are added
as outputs, which keeps onnxruntime's Conv+activation fusion intact; exposing
pre-activation tensors as well would break it (measured: 1.67x vs 1.29x of a bare
pass on resnet50). A quantised activation with no ``DequantizeLinear`` after it
(QOperator graphs) gets one in the measuring copy, so statistics see real values.
Loading is safe: external data is checked to stay inside the model's folder before
onnx or onnxruntime reads a byte of it.

Probe batches are float32; a model declaring a float16, float64 or uint8 input gets
them cast to that type (uint8: pixels on the 0-255 scale, rounded). Statistics are
accumulated in float64 whatever the activations' type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ...config.model import InputSpec
from ...errors import ModelError, first_line
from ..base import ActivationSink, FirstConv, ModelGraph, check_finite_outputs, resolve_input_spec
from .first_conv import external_weight
from .graph import batch_norm_scale, conv_layers, first_conv_node
from .index import OnnxGraph, measuring_nodes
from .tensors import layer_tensors

#: Input element types a probe batch is cast to.
INPUT_TYPES = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.UINT8: np.dtype(np.uint8),
}
#: Inputs of networks that are not image CNNs, by their number of dimensions.


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external data whose location leaves the model's folder (``..``, absolute, symlinks out)."""
    folder = path.resolve().parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(
                f"{path}: external data {location!r} of tensor {tensor.name!r} lies outside the model's folder"
            )
        if not target.is_file():
            raise ModelError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing")


def load_onnx_model(path: Path) -> onnx.ModelProto:
    """Parse, check external data, then load it; every failure is one clear line."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (the graph has no nodes; truncated or not ONNX?)")
    _check_external_data(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.resolve().parent))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read its external data: {exc}") from None
    return model


def _input_shape(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def _input_dtype(value: onnx.ValueInfoProto, path: Path) -> np.dtype:
    elem_type = value.type.tensor_type.elem_type
    if elem_type == onnx.TensorProto.UNDEFINED:
        return INPUT_TYPES[onnx.TensorProto.FLOAT]
    if elem_type not in INPUT_TYPES:
        name = onnx.TensorProto.DataType.Name(elem_type).lower()
        raise ModelError(f"{path}: the image input is {name}; cnnaudit feeds float32, float16, float64 or uint8 images")
    return INPUT_TYPES[elem_type]


def _check_uint8_spec(spec: InputSpec, path: Path) -> None:
    if spec.scale != 255 or any(m != 0 for m in spec.mean or ()) or any(s != 1 for s in spec.std or ()):
        raise ModelError(
            f"{path}: the image input is uint8 pixels; set models[].input.scale: 255 and leave mean/std unset"
        )


class OnnxBackend:
    """An ONNX model opened for measurement."""

    format = "onnx"
    notes: tuple[str, ...] = ()

    def __init__(self, path: Path, configured: InputSpec, threads: int | None = None) -> None:
        self.path = path
        model = load_onnx_model(path)
        self.graph = OnnxGraph(model)
        inputs = self.graph.image_inputs
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"{path}: expected one image input, found {len(inputs)} ({names})")
        self.input_name = inputs[0].name
        shape = _input_shape(inputs[0]) or None  # a model may declare no input shape at all
        self.input_dtype = _input_dtype(inputs[0], path)
        self.fixed_batch = shape[0] if shape else None
        self.input_spec = resolve_input_spec(configured, shape, str(path))
        if self.input_dtype == np.uint8:
            _check_uint8_spec(self.input_spec, path)
        self.layers, self.channel_axes = conv_layers(self.graph)
        if not self.layers:
            raise ModelError(f"{path}: the model has no Conv or ConvTranspose layer, so there is nothing to audit")
        self._model, self._threads = model, threads
        self._session_handle: Any = None

    @property
    def session(self) -> Any:
        """Created on first use: listing layers (pytest collection) never starts onnxruntime."""
        if self._session_handle is None:
            self._session_handle = self._create_session(self._model, self._threads)
        return self._session_handle

    def _create_session(self, model: onnx.ModelProto, threads: int | None):
        import onnxruntime as ort

        model.graph.node.extend(measuring_nodes(self.graph, list(self.channel_axes)))
        existing = {o.name for o in model.graph.output}
        for tensor in self.channel_axes:
            if tensor not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=tensor))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime cannot load the model: {first_line(exc)}") from None

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        names = list(self.channel_axes)
        model_outputs = [o.name for o in self.graph.model.graph.output if o.name not in self.channel_axes]
        try:
            outputs = self.session.run(names + model_outputs, {self.input_name: self._cast(batch)})
        except Exception as exc:
            message = first_line(exc)
            raise ModelError(
                f"{self.path}: onnxruntime failed on a batch of shape {list(batch.shape)}: {message}"
            ) from None
        for name, value in zip(names, outputs):
            sink(name, value, self.channel_axes[name])
        check_finite_outputs(dict(zip(model_outputs, outputs[len(names) :])), str(self.path))

    def _cast(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.uint8:
            return np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        return batch.astype(self.input_dtype, copy=False)

    def first_conv(self) -> FirstConv | None:
        """The first conv's weights on the external input (see :mod:`.first_conv`), BatchNorm after it
        folded in; its own weights when the path from the input is not one :mod:`.first_conv` reads."""
        node = first_conv_node(self.graph, self.input_name)
        weight = self.graph.constant(node.input[1]) if node is not None else None
        if node is None or weight is None or weight.ndim != 4:
            return None
        layer = next(info for info in self.layers if info.id in (node.name, node.output[0]))
        channels = 1 if self.input_spec.channels == "GRAY" else 3
        external = external_weight(self.graph, node, weight, self.input_name, self.input_spec.layout, channels)
        weight = external if external is not None else weight.astype(np.float64)
        scale = batch_norm_scale(self.graph, node)
        if scale is not None:
            weight = weight * scale.reshape(-1, 1, 1, 1)
        return FirstConv(layer_id=layer.id, weight=weight.astype(np.float32))

    def model_graph(self) -> ModelGraph:
        """The model as its file has it (read again: the session's copy has measuring outputs and nodes)."""
        model = load_onnx_model(self.path)
        tensors = layer_tensors(OnnxGraph(model), self.layers, self.channel_axes)
        return ModelGraph("onnx", model, tensors, self.fixed_batch)

    def close(self) -> None:
        self._session_handle = None
