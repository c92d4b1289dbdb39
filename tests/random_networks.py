"""Random small CNNs written in ONNX, for property tests of the interval bounds.

A network is drawn from a seed: a stem conv, then a few blocks (conv, residual block,
max or average pool, a concatenation of two branches), then global pooling and a Gemm
head. Conv biases mix ordinary values with strongly negative ones, so that some channels
are provably dead, and ``tight_channel`` plants one first-layer channel whose bias puts
its exact maximum a hair below zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ACTIVATIONS = ("Relu", "Relu6", "LeakyRelu", "PRelu", "HardSwish", "SiLU")
BLOCKS = ("conv", "residual", "maxpool", "avgpool", "concat")


@dataclass
class NetworkBuilder:
    """Appends nodes and weights; names are unique by a running counter."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    weights: list[onnx.TensorProto] = field(default_factory=list)
    count: int = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, value: np.ndarray, stem: str) -> str:
        name = self.name(stem)
        self.weights.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: object) -> str:
        name = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def biases(self, channels: int, fan_in: int) -> np.ndarray:
        """Ordinary biases, a few strongly negative ones (provably dead), a few just negative (borderline)."""
        bias = self.rng.normal(0, 0.5, channels)
        kind = self.rng.choice(["ordinary", "dead", "borderline"], size=channels, p=[0.6, 0.2, 0.2])
        bias[kind == "dead"] = -self.rng.uniform(5, 60, (kind == "dead").sum()) * np.sqrt(fan_in) / 3
        bias[kind == "borderline"] = -self.rng.uniform(0.5, 4, (kind == "borderline").sum())
        return bias

    def conv(
        self, x: str, channels_in: int, channels_out: int, kernel: int, stride: int, pad: int, group: int = 1
    ) -> str:
        fan_in = channels_in // group * kernel * kernel
        weight = self.rng.normal(0, 1 / np.sqrt(fan_in), (channels_out, channels_in // group, kernel, kernel))
        weight[self.rng.random(channels_out) < 0.1] *= 0.0  # some zero filters: their bound is the bias alone
        inputs = [x, self.constant(weight, "w"), self.constant(self.biases(channels_out, fan_in), "b")]
        return self.node(
            "Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, group=group
        )

    def batch_norm(self, x: str, channels: int) -> str:
        gamma = self.rng.normal(0, 1, channels)  # negative scales too: BatchNorm may flip a channel
        parameters = [
            gamma,
            self.rng.normal(0, 0.5, channels),
            self.rng.normal(0, 0.5, channels),
            self.rng.uniform(0.1, 2, channels),
        ]
        return self.node("BatchNormalization", [x, *(self.constant(p, "bn") for p in parameters)], epsilon=1e-5)

    def activation(self, x: str, kind: str, channels: int) -> str:
        if kind == "Relu6":
            return self.node("Clip", [x, self.constant(np.float32(0), "lo"), self.constant(np.float32(6), "hi")])
        if kind == "LeakyRelu":
            return self.node("LeakyRelu", [x], alpha=float(self.rng.choice([0.01, 0.2, -0.5])))
        if kind == "PRelu":
            return self.node("PRelu", [x, self.constant(self.rng.normal(0, 0.5, (channels, 1, 1)), "slope")])
        if kind == "SiLU":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        return self.node(kind, [x])


@dataclass(frozen=True)
class RandomNetwork:
    model: onnx.ModelProto
    input_shape: tuple[int, int, int]  # (C, H, W)
    first_conv: str  # output tensor of the stem conv
    tight_channel: int  # a stem channel whose exact maximum over the box is just below 0


def random_network(seed: int, size: int = 16, low: float = -1.0, high: float = 1.0) -> RandomNetwork:
    """A random CNN for inputs of shape (N, 3, size, size) in [low, high]."""
    rng = np.random.default_rng(seed)
    build = NetworkBuilder(rng)
    channels, spatial = int(rng.integers(2, 7)), size
    act = str(rng.choice(ACTIVATIONS))
    kernel, stride = int(rng.choice([1, 3, 5])), int(rng.choice([1, 2]))
    pad = int(rng.integers(0, kernel // 2 + 1))
    x = build.conv("image", 3, channels, kernel, stride, pad)
    spatial = (spatial + 2 * pad - kernel) // stride + 1
    stem = build.nodes[-1]
    tight = _tighten(build, stem, low, high, int(rng.integers(channels)))
    x = build.activation(build.batch_norm(x, channels) if rng.random() < 0.5 else x, act, channels)
    for block in rng.choice(BLOCKS, size=int(rng.integers(1, 5))):
        act = str(rng.choice(ACTIVATIONS))
        x, channels, spatial = _block(build, str(block), x, channels, spatial, act)
    pooled = build.node("Flatten", [build.node("GlobalAveragePool", [x])])
    head = [pooled, build.constant(rng.normal(0, 1, (4, channels)), "fc"), build.constant(rng.normal(0, 1, 4), "fcb")]
    logits = build.node("Gemm", head, transB=1)
    graph = helper.make_graph(
        build.nodes,
        f"random_{seed}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 4])],
        build.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return RandomNetwork(model, (3, size, size), stem.output[0], tight)


def _tighten(build: NetworkBuilder, stem: onnx.NodeProto, low: float, high: float, channel: int) -> int:
    """Set one stem channel's bias so that its exact maximum (at an interior position) is -1e-3."""
    weights = {t.name: t for t in build.weights}
    weight = numpy_helper.to_array(weights[stem.input[1]]).astype(np.float64)
    bias = numpy_helper.to_array(weights[stem.input[2]]).copy()
    best = np.where(weight[channel] > 0, weight[channel] * high, weight[channel] * low).sum()
    bias[channel] = np.float32(-best - 1e-3)
    weights[stem.input[2]].CopyFrom(numpy_helper.from_array(bias, stem.input[2]))
    return channel


def _block(build: NetworkBuilder, block: str, x: str, channels: int, spatial: int, act: str) -> tuple[str, int, int]:
    """Append one block; (output, its channels, its height and width). Small maps keep their size."""
    rng = build.rng
    kernel = int(rng.choice([1, 3])) if block == "conv" else int(rng.integers(2, 4))
    stride, pad = (int(rng.integers(1, 3)), int(rng.integers(0, kernel // 2 + 1))) if spatial >= 5 else (1, kernel // 2)
    shrunk = (spatial + 2 * pad - kernel) // stride + 1
    if block == "conv":
        out = int(rng.integers(2, 9))
        group = channels if out == channels and rng.random() < 0.3 else 1
        y = build.conv(x, channels, out, kernel, stride, pad, group)
        return build.activation(build.batch_norm(y, out) if rng.random() < 0.5 else y, act, out), out, shrunk
    if block == "residual":
        y = build.activation(build.batch_norm(_same_conv(build, x, channels), channels), act, channels)
        y = build.batch_norm(_same_conv(build, y, channels), channels)
        return build.activation(build.node("Add", [y, x]), act, channels), channels, spatial
    if block == "concat":
        left = build.activation(_same_conv(build, x, channels), act, channels)
        right = build.activation(_same_conv(build, x, channels), act, channels)
        return build.node("Concat", [left, right], axis=1), 2 * channels, spatial
    geometry = {"kernel_shape": [kernel] * 2, "strides": [stride] * 2, "pads": [pad] * 4}
    if block == "maxpool":
        ceil_mode = int(rng.integers(0, 2)) if spatial >= 5 else 0
        out = -(-(spatial + 2 * pad - kernel) // stride) + 1 if ceil_mode else shrunk
        return build.node("MaxPool", [x], ceil_mode=ceil_mode, **geometry), channels, out
    include_pad = int(rng.integers(0, 2))
    return build.node("AveragePool", [x], count_include_pad=include_pad, **geometry), channels, shrunk


def _same_conv(build: NetworkBuilder, x: str, channels: int) -> str:
    """A 3x3 conv with padding 1: same shape out as in (a residual Add needs it)."""
    weight = build.rng.normal(0, 1 / np.sqrt(9 * channels), (channels, channels, 3, 3))
    bias = build.biases(channels, 9 * channels)
    return build.node(
        "Conv", [x, build.constant(weight, "w"), build.constant(bias, "b")], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
    )
