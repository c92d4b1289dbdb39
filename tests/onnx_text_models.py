"""Tiny ONNX models written in ONNX text syntax, with planted weights (no torch needed).

A bias of -50 on a ReLU'd channel whose weights are zero kills that channel for
every input, so the dead channels of these models are known by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

SIZE = 16


def two_conv_model(
    dead_conv1: tuple[int, ...] = (), dead_conv2: tuple[int, ...] = (), seed: int = 0
) -> onnx.ModelProto:
    """image (N,3,16,16) -> conv1 (8 ch) -> Relu -> conv2 (6 ch) -> Relu -> GlobalAveragePool.

    Channels listed in ``dead_conv1`` / ``dead_conv2`` get zero weights and bias -50.
    """
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, {SIZE}, {SIZE}] image) => (float[N, 6, 1, 1] pooled) {{
        a1 = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
        r1 = Relu (a1)
        a2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
        r2 = Relu (a2)
        pooled = GlobalAveragePool (r2)
    }}
    """
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b1 = np.full(8, 0.05, np.float32)
    w2 = rng.normal(0, 0.3, (6, 8, 3, 3)).astype(np.float32)
    b2 = np.full(6, 0.05, np.float32)
    for channel in dead_conv1:
        w1[channel], b1[channel] = 0.0, -50.0
    for channel in dead_conv2:
        w2[channel], b2[channel] = 0.0, -50.0
    for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    for node, name in zip(model.graph.node[:3:2], ("conv1", "conv2")):
        node.name = name
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- rectifier and precision tests

#: Channels of the first conv planted dead in the rectifier and precision tests (zero weights, bias -50).
PLANTED = (2, 5)
PLANTED_BIAS = -50.0


def planted_conv(
    prefix: str, out_channels: int, in_channels: int, dead: tuple[int, ...], seed: int = 0
) -> dict[str, np.ndarray]:
    """``{prefix_w, prefix_b}``: zero-mean random filters, ``dead`` channels with zero weights and bias -50."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, np.sqrt(2.0 / (in_channels * 9)), (out_channels, in_channels, 3, 3))
    weight -= weight.mean(axis=(1, 2, 3), keepdims=True)
    bias = rng.uniform(-0.05, 0.05, out_channels)
    weight[list(dead)], bias[list(dead)] = 0.0, PLANTED_BIAS
    return {f"{prefix}_w": weight.astype(np.float32), f"{prefix}_b": bias.astype(np.float32)}


def conv_then(body: str, opset: int = 17, extra: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """image (N,3,16,16) -> conv ``c`` (8 channels, :data:`PLANTED` dead) -> ``body`` (reads ``c``, writes ``out``)."""
    text = f"""
    <ir_version: 10, opset_import: ["" : {opset}]>
    net (float[N, 3, {SIZE}, {SIZE}] image) => (float[N, 8, {SIZE}, {SIZE}] out) {{
        [c] c = Conv <pads = [1, 1, 1, 1]> (image, c_w, c_b)
        {body}
    }}
    """
    model = onnx.parser.parse_model(text)
    for name, value in {**planted_conv("c", 8, 3, PLANTED), **(extra or {})}.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def probe_inputs(count: int = 8, layout: str = "NCHW") -> np.ndarray:
    """The default probe set at 16x16 as float32 RGB in [0, 1] (what the audit feeds a model with no
    normalisation configured), in one array."""
    from pytest_cnnaudit.engine.probes import default_probe_set

    images = next(default_probe_set((SIZE, SIZE), count, 0).batches(count))
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) if layout == "NCHW" else images, np.float32)


def run_exposing(model: onnx.ModelProto, tensors: list[str], inputs: np.ndarray) -> list[np.ndarray]:
    """The values of ``tensors`` for ``inputs``, read with onnxruntime from a copy exposing them as outputs."""
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(tensors, {model.graph.input[0].name: inputs})


def inactive_reference(activation: np.ndarray) -> tuple[tuple[int, ...], float]:
    """(dead channels, sparsity) of an (N, C, ...) activation by the definition, in float64 numpy."""
    values = activation.astype(np.float64)
    inactive = values <= 0.0
    per_channel = inactive.reshape(values.shape[0], values.shape[1], -1).all(axis=(0, 2))
    return tuple(int(c) for c in np.flatnonzero(per_channel)), float(inactive.mean())


def measured(path: Path, count: int = 8, zero_eps: float = 0.0, **input_spec: Any) -> tuple[Any, dict[str, Any]]:
    """The ONNX backend opened on ``path`` and the statistics of one measurement pass over ``count`` probes."""
    from pytest_cnnaudit.backends.onnx import OnnxBackend
    from pytest_cnnaudit.config import InputSpec
    from pytest_cnnaudit.engine.measure import measure
    from pytest_cnnaudit.engine.probes import default_probe_set

    backend = OnnxBackend(path, InputSpec(**input_spec))
    stats = measure(backend, default_probe_set(backend.input_spec.size, count, 0), 4, zero_eps)
    return backend, stats


#: Layers of :func:`mixed_network`, its activation after each, and the channels planted dead in each.
MIXED_LAYERS = {"conv1": ("relu", (2, 5)), "conv2": ("relu", (3,)), "conv3": ("silu", (1, 6)), "head": (None, ())}


def mixed_network() -> onnx.ModelProto:
    """image -> conv1 -> Relu -> conv2 -> residual Add -> Relu -> conv3 -> SiLU -> head (linear) -> pool.

    The shapes a quantiser treats differently: a ReLU it folds after a conv and after an Add,
    a SiLU it quantises op by op, a conv with no activation.
    """
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, {SIZE}, {SIZE}] image) => (float[N, 6, 1, 1] pooled) {{
        [conv1] a1 = Conv <pads = [1, 1, 1, 1]> (image, c1_w, c1_b)
        r1 = Relu (a1)
        [conv2] a2 = Conv <pads = [1, 1, 1, 1]> (r1, c2_w, c2_b)
        s2 = Add (a2, r1)
        r2 = Relu (s2)
        [conv3] a3 = Conv <pads = [1, 1, 1, 1]> (r2, c3_w, c3_b)
        g3 = Sigmoid (a3)
        m3 = Mul (a3, g3)
        [head] a4 = Conv (m3, c4_w, c4_b)
        pooled = GlobalAveragePool (a4)
    }}
    """
    weights = {
        **planted_conv("c1", 8, 3, MIXED_LAYERS["conv1"][1]),
        **planted_conv("c2", 8, 8, MIXED_LAYERS["conv2"][1], seed=1),
        **planted_conv("c3", 8, 8, MIXED_LAYERS["conv3"][1], seed=2),
        **planted_conv("c4", 6, 8, (), seed=3),
    }
    weights["c4_w"] = weights["c4_w"][:, :, 1:2, 1:2].copy()  # a 1x1 head
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


#: Float activations of :func:`mixed_network` whose values each layer's statistics describe.
MIXED_ACTIVATIONS = {"conv1": "r1", "conv2": "r2", "conv3": "m3"}


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph in float16 end to end: float16 weights, input and output."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    for tensor in half.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32:
            tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float16), tensor.name))
    for value in list(half.graph.input) + list(half.graph.output):
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.checker.check_model(half, full_check=True)
    return half


def quantised(model: onnx.ModelProto, folder: Path, name: str, **options: Any) -> Path:
    """``model`` quantised by onnxruntime's ``quantize_static`` (``options``: its keyword arguments),
    calibrated on 8 probe images; the path of the quantised file."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class ProbeImages(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": batch} for batch in np.split(probe_inputs(8), 4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    source = save(model, folder / f"{name}-float.onnx")
    target = folder / f"{name}.onnx"
    quantize_static(str(source), str(target), ProbeImages(), **options)
    return target
