"""The one module of models for tests, built in code: ONNX graphs from text syntax and small torch CNNs
with planted weights (every builder plants dead channels the same way: :func:`plant_dead`).

Why planted weights: a test that asserts "channels 1 and 5 of conv2 are dead" must
know the answer without running the code under test. A channel whose filter is
all zeros and whose bias is negative outputs a negative constant, so its ReLU is
zero for every input. Every other filter is zero-mean, so it answers edges with
both signs and is active on any textured image.

Import from a test module as ``from modelbuilders import ...`` (pytest puts
``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import torch
from onnx import numpy_helper
from torch import nn

#: Bias of a planted dead channel: with an all-zero filter its output is this constant, far below zero, so
#: every rectifier's output is <= 0 there (ReLU and HardSwish exactly 0, SiLU/GELU/Mish a tiny negative, ELU
#: about -1) for every input.
DEAD_BIAS = -50.0


# --------------------------------------------------------------------------- ONNX


def onnx_model(text: str, initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse a model written in ONNX text syntax, add ``initializers`` (name -> array), check it.

    Weights go in ``initializers`` rather than the text so that a test reads as a graph,
    not as a wall of numbers.
    """
    model = onnx.parser.parse_model(text)
    for name, value in (initializers or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` and return the path."""
    onnx.save(model, str(path))
    return path


def conv_weight(out_channels: int, in_channels: int, kernel: int = 3, seed: int = 0) -> np.ndarray:
    """(out, in, k, k) float32 filters, each zero-mean (an edge detector), He-scaled."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(
        0.0, np.sqrt(2.0 / (in_channels * kernel * kernel)), (out_channels, in_channels, kernel, kernel)
    )
    weight -= weight.mean(axis=(1, 2, 3), keepdims=True)
    return weight.astype(np.float32)


def conv_bias(out_channels: int, seed: int = 0) -> np.ndarray:
    """Small random biases (|b| <= 0.05): units stay on both sides of zero."""
    return np.random.default_rng(seed + 1000).uniform(-0.05, 0.05, out_channels).astype(np.float32)


def plant_dead(weight: np.ndarray, bias: np.ndarray, channels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Copies of (weight, bias) in which ``channels`` output :data:`DEAD_BIAS` for every input."""
    weight, bias = weight.copy(), bias.copy()
    weight[list(channels)] = 0.0
    bias[list(channels)] = DEAD_BIAS
    return weight, bias


def conv_initializers(
    prefix: str, out_channels: int, in_channels: int, kernel: int = 3, seed: int = 0, dead: Sequence[int] = ()
) -> dict[str, np.ndarray]:
    """``{prefix + "_w": weight, prefix + "_b": bias}`` for one conv, with ``dead`` channels planted."""
    weight, bias = plant_dead(conv_weight(out_channels, in_channels, kernel, seed), conv_bias(out_channels, seed), dead)
    return {f"{prefix}_w": weight, f"{prefix}_b": bias}


#: Alias of :func:`save_onnx`, the name many tests call it by.
save = save_onnx


# --------------------------------------------------------------------------- ONNX text models: two convs, rectifiers, precisions

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
    w1, b1 = plant_dead(w1, b1, dead_conv1)
    w2, b2 = plant_dead(w2, b2, dead_conv2)
    for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    for node, name in zip(model.graph.node[:3:2], ("conv1", "conv2")):
        node.name = name
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- rectifier and precision tests

#: Channels of the first conv planted dead in the rectifier and precision tests.
PLANTED = (2, 5)


def planted_conv(
    prefix: str, out_channels: int, in_channels: int, dead: tuple[int, ...], seed: int = 0
) -> dict[str, np.ndarray]:
    """``{prefix_w, prefix_b}``: zero-mean random filters, ``dead`` channels with zero weights and bias -50."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, np.sqrt(2.0 / (in_channels * 9)), (out_channels, in_channels, 3, 3))
    weight -= weight.mean(axis=(1, 2, 3), keepdims=True)
    bias = rng.uniform(-0.05, 0.05, out_channels)
    weight, bias = plant_dead(weight.astype(np.float32), bias.astype(np.float32), dead)
    return {f"{prefix}_w": weight, f"{prefix}_b": bias}


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


# --------------------------------------------------------------------------- torch


class SmallConvNet(nn.Module):
    """conv1 (3->w) + ReLU, conv2 (w->w) + ReLU, conv3 (w->w) + ReLU, global average pool, linear (w->4).

    Takes NCHW RGB in [0, 1]; each ReLU is its own module, every conv has a bias.
    """

    CONVS = ("conv1", "conv2", "conv3")

    def __init__(self, width: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(width, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(image))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def small_convnet(
    dead: Mapping[str, Sequence[int]] | None = None, width: int = 8, seed: int = 0, in_channels: int = 3
) -> SmallConvNet:
    """A :class:`SmallConvNet` with zero-mean filters and, per layer name, planted dead channels.

    ``dead={"conv2": (1, 5)}`` makes exactly channels 1 and 5 of ``conv2`` never active;
    every other channel of every layer is active on textured images.
    """
    net = SmallConvNet(width=width, in_channels=in_channels)
    dead = dict(dead or {})
    unknown = set(dead) - set(SmallConvNet.CONVS)
    if unknown:
        raise ValueError(f"no conv layer named {sorted(unknown)} (layers: {SmallConvNet.CONVS})")
    with torch.no_grad():
        for index, name in enumerate(SmallConvNet.CONVS):
            conv = getattr(net, name)
            out_channels, fan_in = conv.weight.shape[:2]
            weight, bias = plant_dead(
                conv_weight(out_channels, fan_in, conv.weight.shape[-1], seed + index),
                conv_bias(out_channels, seed + index),
                dead.get(name, ()),
            )
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
    return net.eval()


def export_onnx(
    module: torch.nn.Module, path: Path, size: tuple[int, int] = (32, 32), opset: int = 17, batch: int | None = None
) -> Path:
    """Export with torch's TorchScript-based exporter (what most deployed ONNX files come from).

    The input is named ``image``; ``batch=None`` leaves the batch dimension dynamic.
    """
    example = torch.zeros(batch or 1, 3, *size)
    dynamic_axes = {"image": {0: "batch"}} if batch is None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    return path


# --------------------------------------------------------------------------- checkpoints as training code saves them


class AttributeDict(dict):
    """Lightning's hyper-parameter dict, pickled under Lightning's own name (Lightning is not installed here)."""

    def __getattr__(self, key: str) -> object:
        return self[key]


#: Where Lightning 2.x keeps :class:`AttributeDict`; the name a checkpoint's pickle refers to.
LIGHTNING_DATA_MODULE = "lightning.fabric.utilities.data"


def save_lightning_like(state_dict: Mapping[str, torch.Tensor], path: Path, prefix: str = "model.") -> Path:
    """A checkpoint laid out as Lightning's ModelCheckpoint writes it (lightning 2.x), saved to ``path``.

    The LightningModule holds the network as ``self.model``, so every key gains ``prefix``. Beside
    the weights: loop and callback state, an optimizer and scheduler state, and hyper-parameters
    holding what plain ``torch.load(weights_only=True)`` refuses (an AttributeDict, an
    argparse.Namespace, a PosixPath, a numpy scalar, a timedelta).
    """
    import argparse
    import datetime
    import pathlib
    import sys
    import types

    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    parameter.grad = torch.ones(2)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"{prefix}{key}": value for key, value in state_dict.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.25),
                "best_model_path": "/runs/epoch=3.ckpt",
                "dirpath": pathlib.PosixPath("/runs"),
                "kth_value": torch.tensor(float("inf")),
            },
            "Timer": {"time_elapsed": {"train": datetime.timedelta(minutes=3).total_seconds()}},
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(
            lr=0.1,
            width=np.float64(8.0),
            args=argparse.Namespace(batch_size=32),
            budget=datetime.timedelta(hours=1),
        ),
    }
    parts = LIGHTNING_DATA_MODULE.split(".")
    names = [".".join(parts[: i + 1]) for i in range(len(parts))]
    fakes = {name: types.ModuleType(name) for name in names}
    fakes[LIGHTNING_DATA_MODULE].AttributeDict = AttributeDict  # type: ignore[attr-defined]
    AttributeDict.__module__ = LIGHTNING_DATA_MODULE
    sys.modules.update(fakes)
    try:
        torch.save(checkpoint, path)
    finally:
        AttributeDict.__module__ = __name__
        for name in names:
            del sys.modules[name]
    return path


# --------------------------------------------------------------------------- every rectifier, every form


class Elementwise(nn.Module):
    """An activation written as a function (``lambda x: x * torch.sigmoid(x)``), as a module so hooks see it."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class ActivationNet(nn.Module):
    """conv1 (3->w) + act1, conv2 (w->w) + act2, global average pool, linear (w->4).

    ``make_activation()`` is called once per place (a PReLU has weights of its own).
    """

    CONVS = ("conv1", "conv2")

    def __init__(self, make_activation: Callable[[], nn.Module], width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act1 = make_activation()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act2 = make_activation()
        self.head = nn.Linear(width, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(image))))
        return self.head(x.mean(dim=(2, 3)))


def plant_convs(net: nn.Module, dead: Mapping[str, Sequence[int]], seed: int = 0) -> nn.Module:
    """Zero-mean filters in every ``nn.Conv*`` of ``net`` (in module order); ``dead`` channels (by
    conv name) get zero weights and :data:`DEAD_BIAS`. Returns ``net`` in eval mode."""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    unknown = set(dead) - {name for name, _ in convs}
    if unknown:
        raise ValueError(f"no conv named {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, conv in convs:
            fan_in = int(np.prod(conv.weight.shape[1:]))
            weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), tuple(conv.weight.shape))
            weight -= weight.reshape(weight.shape[0], -1).mean(axis=1).reshape(-1, *[1] * (weight.ndim - 1))
            bias = rng.uniform(-0.05, 0.05, conv.weight.shape[0])
            weight, bias = plant_dead(weight, bias, dead.get(name, ()))
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
    return net.eval()


class ResidualChainNet(nn.Module):
    """conv1 + ReLU, then conv2 into ``a = conv2 + x``, ``relu(a * 0.5 + a)``: the sum has two users."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(width, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(image))
        a = self.conv2(x) + x
        y = self.act2(a * 0.5 + a)
        return self.head(y.mean(dim=(2, 3)))


class SequenceNet(nn.Module):
    """A Conv1d (audio) or Conv3d (video) network: conv1 + ReLU, conv2 + SiLU, pool, linear."""

    def __init__(self, dims: int, in_channels: int, width: int = 8) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
        self.dims = dims
        self.conv1 = conv(in_channels, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = conv(width, width, 3, padding=1)
        self.act2 = nn.SiLU()
        self.head = nn.Linear(width, 4)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(signal))))
        return self.head(x.mean(dim=tuple(range(2, 2 + self.dims))))
