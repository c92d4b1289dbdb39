"""Interval rules of the ONNX ops linear in their data input: Conv, ConvTranspose, Gemm, MatMul, BatchNorm.

Centre and radius: ``f(c) +- |f|(r)`` for a box of centre ``c`` and radius ``r``, which is the
exact range of one linear layer over a box (positive weights meet the top of the range,
negative weights the bottom).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .intervals import UNIT_ROUNDOFF, Bounds, NodeCall, Rule, as_float64, rule_table

#: This module's rules, by ONNX op type.
RULES: dict[str, Rule] = {}
rule = rule_table(RULES)

#: Most bytes of unfolded input patches held at once; larger layers are unfolded a band of rows at a time.
PATCH_BYTES = 64 << 20


def conv_geometry(call: NodeCall, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[list, list, list]:
    """Strides, dilations and (begin, end) pads per spatial axis, ``auto_pad`` resolved."""
    rank = len(spatial)
    strides = list(call.attribute("strides", [1] * rank))
    dilations = list(call.attribute("dilations", [1] * rank))
    pads = list(call.attribute("pads", [0] * 2 * rank))
    auto_pad = call.attribute("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for axis in range(rank):
            out = -(-spatial[axis] // strides[axis])
            extent = (kernel[axis] - 1) * dilations[axis] + 1
            total = max(0, (out - 1) * strides[axis] + extent - spatial[axis])
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + rank] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0] * 2 * rank
    return strides, dilations, [(pads[a], pads[a + rank]) for a in range(rank)]


def conv2d(x: np.ndarray, weight: np.ndarray, strides, dilations, pads, group: int) -> np.ndarray:
    """NCHW convolution in numpy.

    Depthwise as one multiply-add per kernel offset; the rest as one matrix product
    (O x C*kh*kw) @ (C*kh*kw x positions) per group and band of rows, which keeps BLAS busy
    even for a 3-channel stem.
    """
    if any(before or after for before, after in pads):
        x = np.pad(x, ((0, 0), (0, 0), *pads))
    out_channels, group_in, kh, kw = weight.shape
    (sh, sw), (dh, dw) = strides, dilations
    windows = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, out_h, out_w, kh, kw), a view
    batch, channels, out_h, out_w = windows.shape[:4]
    out = np.zeros((batch, out_channels, out_h, out_w), dtype=np.result_type(x, weight))
    if group == channels and group_in == 1 and out_channels == channels:
        for i in range(kh):
            for j in range(kw):
                out += weight[:, 0, i, j].reshape(1, -1, 1, 1) * windows[..., i, j]
        return out
    per_group = out_channels // group
    rows = max(1, PATCH_BYTES // (out_w * group_in * kh * kw * out.itemsize))
    for n in range(batch):
        for g in range(group):
            kernel = weight[g * per_group : (g + 1) * per_group].reshape(per_group, -1)
            for top in range(0, out_h, rows):
                band = windows[n, g * group_in : (g + 1) * group_in, top : top + rows]  # (C, r, out_w, kh, kw)
                patches = band.transpose(0, 3, 4, 1, 2).reshape(group_in * kh * kw, -1)
                out[n, g * per_group : (g + 1) * per_group, top : top + rows] = (kernel @ patches).reshape(
                    per_group, -1, out_w
                )
    return out


def rounding_allowance(terms: int) -> float:
    """gamma_K = K*u / (1 - K*u): a float32 sum of K products is within gamma_K * sum |products| of the exact one."""
    return terms * UNIT_ROUNDOFF / (1 - terms * UNIT_ROUNDOFF)


@rule("Conv")
def conv_bounds(call: NodeCall) -> list[Bounds | None]:
    """Centre through W, radius through |W|, both in float32 with a rigorous rounding allowance.

    A float32 dot product of length K is within gamma_K * |W|.|c| of the exact one, whatever the
    summation order; casting c, r and W to float32 adds a few u more. Folding that allowance into
    the radius's input (``r + gamma*|c|``) costs no extra convolution, and the radius's own sum of
    non-negative terms is widened by (1 + 2 gamma).
    """
    x, weight, bias = call.inputs[0], call.constant(1), call.constant(2)
    has_bias = len(call.node.input) > 2 and bool(call.node.input[2])
    if x is None or weight is None or weight.ndim != 4 or (has_bias and bias is None):
        return [None]  # weights computed at run time, or not a 2-d conv: no bounds
    strides, dilations, pads = conv_geometry(call, x.lower.shape[2:], weight.shape[2:])
    group = int(call.attribute("group", 1))
    gamma = rounding_allowance(int(np.prod(weight.shape[1:])) + 4)
    weight32 = weight.astype(np.float32)
    spread = (x.radius * (1 + 4 * UNIT_ROUNDOFF) + gamma * np.abs(x.center)).astype(np.float32)
    center = conv2d(x.center.astype(np.float32), weight32, strides, dilations, pads, group).astype(np.float64)
    radius = conv2d(spread, np.abs(weight32), strides, dilations, pads, group).astype(np.float64) * (1 + 2 * gamma)
    if bias is not None:
        center += as_float64(bias).reshape(1, -1, 1, 1)
    return [Bounds.from_center(center, radius)]


def _linear_by_reference(call: NodeCall, weight_index: int, bias_index: int | None) -> list[Bounds | None]:
    """A node linear in input 0 with constant weights: the centre through it, the radius through |weights|."""
    x, weight = call.inputs[0], call.constant(weight_index)
    if x is None or weight is None:
        return [None]
    values: list[np.ndarray | None] = [call.constant(i) for i in range(len(call.inputs))]
    values[0], values[weight_index] = x.center, as_float64(weight)
    (center,) = call.run(values)
    values[0], values[weight_index] = x.radius, np.abs(as_float64(weight))
    if bias_index is not None and bias_index < len(values) and values[bias_index] is not None:
        values[bias_index] = np.zeros_like(as_float64(values[bias_index]))
    (radius,) = call.run(values)
    return [Bounds.from_center(center, radius)]


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, strides, dilations, pads, output_padding, group: int):
    """NCHW transposed convolution: per group one matrix product (C_out*kh*kw x C_in) @ (C_in x positions),
    then each kernel offset's plane added at its strided place, then the pads cropped."""
    batch, _, height, width = x.shape
    group_in, per_group, kh, kw = weight.shape[0] // group, weight.shape[1], weight.shape[2], weight.shape[3]
    (sh, sw), (dh, dw) = strides, dilations
    full_h = sh * (height - 1) + (kh - 1) * dh + 1 + output_padding[0]
    full_w = sw * (width - 1) + (kw - 1) * dw + 1 + output_padding[1]
    out = np.zeros((batch, per_group * group, full_h, full_w), dtype=np.result_type(x, weight))
    for g in range(group):
        kernel = weight[g * group_in : (g + 1) * group_in].reshape(group_in, -1).T  # (per_group*kh*kw, C_in)
        for n in range(batch):
            planes = (kernel @ x[n, g * group_in : (g + 1) * group_in].reshape(group_in, -1)).reshape(
                per_group, kh, kw, height, width
            )
            target = out[n, g * per_group : (g + 1) * per_group]
            for i in range(kh):
                for j in range(kw):
                    target[
                        :, i * dh : i * dh + sh * (height - 1) + 1 : sh, j * dw : j * dw + sw * (width - 1) + 1 : sw
                    ] += planes[:, i, j]
    (top, bottom), (left, right) = pads
    return out[:, :, top : full_h - bottom, left : full_w - right]


@rule("ConvTranspose")
def _conv_transpose(call: NodeCall) -> list[Bounds | None]:
    """As :func:`conv_bounds`, in numpy; ``auto_pad`` and ``output_shape`` through the reference evaluator."""
    x, weight, bias = call.inputs[0], call.constant(1), call.constant(2)
    if x is None or weight is None or weight.ndim != 4:
        return [None]
    if call.attribute("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or call.attribute("output_shape"):
        return _linear_by_reference(call, 1, 2)
    pads = list(call.attribute("pads", [0] * 4))
    geometry = (
        list(call.attribute("strides", [1, 1])),
        list(call.attribute("dilations", [1, 1])),
        [(pads[0], pads[2]), (pads[1], pads[3])],
        list(call.attribute("output_padding", [0, 0])),
        int(call.attribute("group", 1)),  # type: ignore[arg-type]
    )
    gamma = rounding_allowance(int(np.prod(weight.shape[2:])) * weight.shape[0] // geometry[4] + 4)
    weight32 = weight.astype(np.float32)
    spread = (x.radius * (1 + 4 * UNIT_ROUNDOFF) + gamma * np.abs(x.center)).astype(np.float32)
    center = conv_transpose2d(x.center.astype(np.float32), weight32, *geometry).astype(np.float64)
    radius = conv_transpose2d(spread, np.abs(weight32), *geometry).astype(np.float64) * (1 + 2 * gamma)
    if bias is not None:
        center += as_float64(bias).reshape(1, -1, 1, 1)
    return [Bounds.from_center(center, radius)]


@rule("Gemm")
def _gemm(call: NodeCall) -> list[Bounds | None]:
    if call.attribute("transA", 0) or float(call.attribute("alpha", 1.0)) < 0:  # type: ignore[arg-type]
        return [None]  # exporters write neither; the centre-radius form assumes alpha >= 0 on input 0
    return _linear_by_reference(call, 1, 2)


@rule("MatMul")
def _matmul(call: NodeCall) -> list[Bounds | None]:
    if call.constant(1) is not None:
        return _linear_by_reference(call, 1, None)
    left, right = call.constant(0), call.inputs[1]
    if left is None or right is None:
        return [None]
    return [Bounds.from_center(as_float64(left) @ right.center, np.abs(as_float64(left)) @ right.radius)]


@rule("BatchNormalization")
def _batch_norm(call: NodeCall) -> list[Bounds | None]:
    x = call.inputs[0]
    parameters = [call.constant(i) for i in range(1, 5)]
    if x is None or any(p is None for p in parameters):
        return [None]
    gamma, beta, mean, variance = (as_float64(p) for p in parameters)  # type: ignore[arg-type]
    scale = gamma / np.sqrt(variance + float(call.attribute("epsilon", 1e-5)))  # type: ignore[arg-type]
    shape = (1, -1) + (1,) * (x.lower.ndim - 2)
    scale, shift = scale.reshape(shape), (beta - mean * scale).reshape(shape)
    return [Bounds.from_center(x.center * scale + shift, x.radius * np.abs(scale))]
