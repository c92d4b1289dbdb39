"""Tiny ONNX models written in ONNX text syntax, with planted weights (no torch needed).

A bias of -50 on a ReLU'd channel whose weights are zero kills that channel for
every input, so the dead channels of these models are known by construction.
"""

from __future__ import annotations

from pathlib import Path

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
