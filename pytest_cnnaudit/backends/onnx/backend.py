"""ONNX models through onnxruntime: every measured activation reduced inside the graph, one run per batch.

Two sessions, one alive at a time: the main pass's, whose graph reduces each measured
activation to (N, C) figures (:mod:`.reductions`), and, for the few runs that need whole
maps (the report's pictures, the colour check's pattern images), one with the activation
tensors as extra graph outputs. Those are the activations (not the Conv outputs), which keeps
onnxruntime's Conv+activation fusion intact. A quantised activation with no
``DequantizeLinear`` after it (QOperator graphs) gets one in the measuring copy, so statistics
see real values.

Memory: once the first session is made, the opened ``ModelProto`` and the graph index (numpy
copies of every weight) are dropped: a later session, or :attr:`OnnxBackend.graph`, reads the
file again (about 300 MB less for the whole audit of a resnet50).
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
from ..device import onnx_providers, onnx_session_note
from ..reductions import ReducedSink
from .first_conv import external_weight
from .graph import batch_norm_scale, conv_layers, first_conv_node
from .index import OnnxGraph, measuring_nodes
from .quantised import DEQUANTIZED_SUFFIX
from .reductions import ReducedOutputs, add_reductions
from .shapes import TensorType, tensor_types
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


def _starts_a_zip(path: Path) -> bool:
    """Whether the file opens with a zip entry's signature (no ModelProto can: it has no field 10)."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load_onnx_model(path: Path) -> onnx.ModelProto:
    """Parse, check external data, then load it; every failure is one clear line."""
    if _starts_a_zip(path):  # ONNX is one protobuf; torch.save, TorchScript and torch.export write zips
        raise ModelError(
            f"{path}: not an ONNX model but a zip archive, as torch.save, TorchScript and torch.export write: "
            "name it .pt (state_dict, TorchScript) or .pt2 (torch.export)"
        )
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
    """An ONNX model opened for measurement (``device``: a ``runtime.device`` value)."""

    format = "onnx"

    def __init__(self, path: Path, configured: InputSpec, threads: int | None = None, device: str = "cpu") -> None:
        self.path = path
        model = load_onnx_model(path)
        graph = OnnxGraph(model)
        inputs = graph.image_inputs
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
        self._types = tensor_types(model)  # one shape inference, for the graph walk and the reductions
        self.layers, self.channel_axes = conv_layers(graph, {n: list(t.dims or ()) for n, t in self._types.items()})
        if not self.layers:
            raise ModelError(f"{path}: the model has no Conv or ConvTranspose layer, so there is nothing to audit")
        self._measuring = measuring_nodes(graph, list(self.channel_axes))
        for tensor in self.channel_axes:  # a QOperator tensor's added DequantizeLinear: the integer's shape
            if tensor.endswith(DEQUANTIZED_SUFFIX) and tensor not in self._types:
                dims = self._types.get(tensor[: -len(DEQUANTIZED_SUFFIX)], TensorType(0, None)).dims
                self._types[tensor] = TensorType(onnx.TensorProto.FLOAT, dims)
        self._model_outputs = [o.name for o in model.graph.output if o.name not in self.channel_axes]
        self._graph: OnnxGraph | None = graph
        self._first_conv: FirstConv | BaseException | None = None
        self._threads, self._device = threads, device
        self.notes: tuple[str, ...] = ()
        self._session: Any = None
        self._session_kind: tuple[object, ...] | None = None
        self._reduced: dict[str, ReducedOutputs] = {}

    @property
    def graph(self) -> OnnxGraph:
        """The graph index: the opened one until the first session is made, then the file read again
        on each use (nothing of it is kept beside a session)."""
        return self._graph if self._graph is not None else OnnxGraph(load_onnx_model(self.path))

    def _opened_model(self) -> onnx.ModelProto:
        """A ModelProto the session may change: the opened one the first time (its graph index is then
        dropped, the first conv's weights read before), the file read again after."""
        if self._graph is None:
            return load_onnx_model(self.path)
        try:
            self._first_conv = self._read_first_conv(self._graph)
        except Exception as exc:  # raised again where first_conv() is asked for, not in the main pass
            self._first_conv = exc
        model, self._graph = self._graph.model, None
        return model

    def _session_for(self, kind: tuple[object, ...]) -> Any:
        """The session of ``kind`` ("reduced", eps) or ("whole",); the other one is dropped first, so
        only one session's memory is held at a time (the main pass's, then the pictures')."""
        if self._session_kind != kind:
            self._session = self._session_kind = None
            model = self._opened_model()
            model.graph.node.extend(self._measuring)
            if kind[0] == "whole":
                existing = {o.name for o in model.graph.output}
                model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.channel_axes if t not in existing)
            self._session = self._create_session(model, kind)
            self._session_kind = kind
        return self._session

    def _create_session(self, model: onnx.ModelProto, kind: tuple[object, ...]) -> Any:
        import onnxruntime as ort

        providers, note = onnx_providers(self._device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if kind[0] == "reduced":
            eps, cpu = float(kind[1]), providers[0] == "CPUExecutionProvider"  # type: ignore[arg-type]
            try:
                self._reduced = add_reductions(model, self.channel_axes, eps, self._types, pooled=cpu)
            except ValueError as exc:
                raise ModelError(f"{self.path}: cannot reduce an activation in the graph: {exc}") from None
            # The memory pattern plans one block for every intermediate of a run; with the reductions it grew
            # resnet50's peak from 1084 MB to 1588 MB at batch 32 (a bare pass: 936 MB with it, 728 MB without).
            options.enable_mem_pattern = False
        if self._threads:
            options.intra_op_num_threads = self._threads
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime cannot load the model: {first_line(exc)}") from None
        self._note(note or onnx_session_note(session, providers))
        return session

    def _note(self, note: str | None) -> None:
        if note is not None and note not in self.notes:
            self.notes = (*self.notes, note)

    def _run(self, session: Any, names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            outputs = session.run(names + self._model_outputs, {self.input_name: self._cast(batch)})
        except Exception as exc:
            message = first_line(exc)
            raise ModelError(
                f"{self.path}: onnxruntime failed on a batch of shape {list(batch.shape)}: {message}"
            ) from None
        check_finite_outputs(dict(zip(self._model_outputs, outputs[len(names) :])), str(self.path))
        return dict(zip(names, outputs))

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        names = list(self.channel_axes)
        values = self._run(self._session_for(("whole",)), names, batch)
        for name in names:
            sink(name, values.pop(name), self.channel_axes[name])

    def run_reduced(self, batch: np.ndarray, eps: float, sink: ReducedSink) -> None:
        session = self._session_for(("reduced", eps))
        values = self._run(session, [name for outputs in self._reduced.values() for name in outputs.names], batch)
        for tensor, outputs in self._reduced.items():
            sink(tensor, outputs.read(values))

    def _cast(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.uint8:
            return np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        return batch.astype(self.input_dtype, copy=False)

    def first_conv(self) -> FirstConv | None:
        """The first conv's weights on the external input (see :mod:`.first_conv`), BatchNorm after it
        folded in; its own weights when the path from the input is not one :mod:`.first_conv` reads."""
        if self._graph is not None:
            return self._read_first_conv(self._graph)
        if isinstance(self._first_conv, BaseException):
            raise self._first_conv
        return self._first_conv

    def _read_first_conv(self, graph: OnnxGraph) -> FirstConv | None:
        node = first_conv_node(graph, self.input_name)
        weight = graph.constant(node.input[1]) if node is not None else None
        if node is None or weight is None or weight.ndim != 4:
            return None
        layer = next(info for info in self.layers if info.id in (node.name, node.output[0]))
        channels = 1 if self.input_spec.channels == "GRAY" else 3
        external = external_weight(graph, node, weight, self.input_name, self.input_spec.layout, channels)
        weight = external if external is not None else weight.astype(np.float64)
        scale = batch_norm_scale(graph, node)
        if scale is not None:
            weight = weight * scale.reshape(-1, 1, 1, 1)
        return FirstConv(layer_id=layer.id, weight=weight.astype(np.float32))

    def model_graph(self) -> ModelGraph:
        """The model as its file has it (read again: the session's copy has measuring outputs and nodes)."""
        model = load_onnx_model(self.path)
        tensors = layer_tensors(OnnxGraph(model), self.layers, self.channel_axes)
        return ModelGraph("onnx", model, tensors, self.fixed_batch)

    def end_pass(self) -> None:
        """Drop the reducing session: its memory arena held the main pass's peak (resnet18 at batch 8: 479 MB
        while the checks judged, 421 MB without it); the pictures and the colour patterns make their own."""
        self._session = self._session_kind = None

    def close(self) -> None:
        self._session = self._session_kind = None
