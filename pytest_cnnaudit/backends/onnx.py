"""ONNX models through onnxruntime: every measured activation comes out of one run per batch.

Why extra graph outputs: the activation tensors (not the Conv outputs) are added
as outputs, which keeps onnxruntime's Conv+activation fusion intact; exposing
pre-activation tensors as well would break it (measured: 1.67x vs 1.29x of a bare
pass on resnet50). Loading is safe: external data is checked to stay inside the
model's folder before onnx or onnxruntime reads a byte of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..config import InputSpec
from ..errors import ModelError
from .base import ActivationSink, FirstConv, ModelGraph, check_finite_outputs, resolve_input_spec
from .onnx_graph import OnnxGraph, batch_norm_scale, conv_layers, first_conv_node
from .onnx_tensors import layer_tensors


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
        self.fixed_batch = shape[0] if shape else None
        self.input_spec = resolve_input_spec(configured, shape, str(path))
        self.layers, self.channel_axes = conv_layers(self.graph)
        if not self.layers:
            raise ModelError(f"{path}: the model has no Conv or ConvTranspose layer, so there is nothing to audit")
        self._model, self._threads = model, threads
        self._session_handle: Any = None
        self._added_outputs = 0  # activations appended to the graph's outputs when the session was made

    @property
    def session(self) -> Any:
        """Created on first use: listing layers (pytest collection) never starts onnxruntime."""
        if self._session_handle is None:
            self._session_handle = self._create_session(self._model, self._threads)
        return self._session_handle

    def _create_session(self, model: onnx.ModelProto, threads: int | None):
        import onnxruntime as ort

        existing = {o.name for o in model.graph.output}
        for tensor in self.channel_axes:
            if tensor not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=tensor))
                self._added_outputs += 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: onnxruntime cannot load the model: {first_line}") from None

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        names = list(self.channel_axes)
        model_outputs = [o.name for o in self.graph.model.graph.output if o.name not in self.channel_axes]
        try:
            outputs = self.session.run(names + model_outputs, {self.input_name: batch})
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{self.path}: onnxruntime failed on a batch of shape {list(batch.shape)}: {message}"
            ) from None
        for name, value in zip(names, outputs):
            sink(name, value, self.channel_axes[name])
        check_finite_outputs(dict(zip(model_outputs, outputs[len(names) :])), str(self.path))

    def first_conv(self) -> FirstConv | None:
        node = first_conv_node(self.graph, self.input_name)
        weight = self.graph.constant(node.input[1]) if node is not None else None
        if node is None or weight is None or weight.ndim != 4:
            return None
        layer = next(info for info in self.layers if info.id in (node.name, node.output[0]))
        scale = batch_norm_scale(self.graph, node)
        if scale is not None:
            weight = weight * scale.reshape(-1, 1, 1, 1)
        return FirstConv(layer_id=layer.id, weight=weight.astype(np.float32))

    def model_graph(self) -> ModelGraph:
        """A copy of the model without the measured activations added as outputs."""
        model = onnx.ModelProto()
        model.CopyFrom(self.graph.model)
        del model.graph.output[len(model.graph.output) - self._added_outputs :]
        tensors = layer_tensors(OnnxGraph(model), self.layers, self.channel_axes)
        return ModelGraph("onnx", model, tensors, self.fixed_batch)

    def close(self) -> None:
        self._session_handle = None
