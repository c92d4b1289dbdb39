"""Interval bounds hold every value the runtime computes in the box, and are exact where they should be.

Checked against onnxruntime (ONNX evaluator) and torch's own forward pass (torch evaluator),
never against the evaluator itself: random networks (hypothesis), one op at a time, the input box
against the probe transform, and torchvision architectures with real BatchNorm statistics.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from dead_models import box_samples, export, imagenet_spec, runtime_values, with_batch_norm_statistics
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from random_networks import random_network

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.torch import TorchBackend
from pytest_cnnaudit.checks.dead_filters.certify import certify, input_box
from pytest_cnnaudit.checks.dead_filters.intervals import Bounds
from pytest_cnnaudit.checks.dead_filters.intervals_onnx import propagate
from pytest_cnnaudit.checks.dead_filters.intervals_torch import propagate as propagate_torch
from pytest_cnnaudit.config import InputSpec
from pytest_cnnaudit.engine.probes import to_model_input


def tolerance(bounds: Bounds) -> float:
    """onnxruntime computes in float32: allow its rounding, relative to the size of the values."""
    return 1e-5 * (1 + float(np.abs(bounds.lower).max()) + float(np.abs(bounds.upper).max()))


def assert_contains(bounds: Bounds, values: np.ndarray, name: str) -> None:
    slack = tolerance(bounds)
    assert (values >= bounds.lower - slack).all(), f"{name}: below its lower bound by {(bounds.lower - values).max()}"
    assert (values <= bounds.upper + slack).all(), f"{name}: above its upper bound by {(values - bounds.upper).max()}"


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=st.floats(-3, 0), width=st.floats(0.1, 5))
def test_bounds_contain_every_runtime_value_of_random_networks(seed: int, low: float, width: float) -> None:
    """Random CNNs (conv, BatchNorm with negative scales, six activations, residual Add, max and average
    pools with pads and ceil_mode, Concat, depthwise, GAP + Gemm): every tensor onnxruntime computes on
    64 points of the box lies within its bounds."""
    network = random_network(seed, low=low, high=low + width)
    shape = (1, *network.input_shape)
    box = Bounds(np.full(shape, low), np.full(shape, low + width))
    bounds = propagate(network.model, {"image": box})
    tensors = [out for node in network.model.graph.node for out in node.output]
    assert set(tensors) <= set(bounds), f"no bounds for {sorted(set(tensors) - set(bounds))}"
    inputs = box_samples(box.lower[0], box.upper[0], 64, seed)
    for name, values in runtime_values(network.model, tensors, inputs).items():
        assert_contains(bounds[name], values, name)


@pytest.mark.parametrize("seed", range(10))
def test_first_conv_bound_is_attained_at_a_corner(seed: int) -> None:
    """One affine layer over a box reaches its bound: the image with every pixel at the top of the range
    where the weight is positive and at the bottom where it is negative hits it (up to the float32
    rounding allowance)."""
    network = random_network(seed, low=-1.0, high=1.0)
    stem = next(node for node in network.model.graph.node if node.op_type == "Conv")
    weights = {t.name: numpy_helper.to_array(t) for t in network.model.graph.initializer}
    weight = weights[stem.input[1]][network.tight_channel]
    kernel = weight.shape[-1]
    pad, stride = (next(a.ints[0] for a in stem.attribute if a.name == key) for key in ("pads", "strides"))
    position = -(-pad // stride)  # the first output whose window lies inside the image
    start = position * stride - pad
    corner = np.zeros((1, *network.input_shape))
    corner[0, :, start : start + kernel, start : start + kernel] = np.where(weight > 0, 1.0, -1.0)
    box = Bounds(np.full(corner.shape, -1.0), np.full(corner.shape, 1.0))
    upper = propagate(network.model, {"image": box})[stem.output[0]].upper[0, network.tight_channel, position, position]
    reached = runtime_values(network.model, [stem.output[0]], corner)[stem.output[0]]
    reached = reached[0, network.tight_channel, position, position]
    assert reached == pytest.approx(-1e-3, abs=2e-6)
    assert reached <= upper < reached + 1e-4


# ----------------------------------------------------------------------------- one op at a time

SINGLE_OPS = {
    "relu": "y = Relu(x)",
    "clip": "lo = Constant<value = float {0.0}>()\n hi = Constant<value = float {6.0}>()\n y = Clip(x, lo, hi)",
    "leaky_negative_slope": "y = LeakyRelu<alpha = -0.5>(x)",
    "prelu": "s = Constant<value = float[3,1,1] {0.25, -1.0, 0.0}>()\n y = PRelu(x, s)",
    "sigmoid": "y = Sigmoid(x)",
    "hardswish": "y = HardSwish(x)",
    "silu": "g = Sigmoid(x)\n y = Mul(x, g)",
    "mish": "y = Mish(x)",
    "gelu": "y = Gelu(x)",
    "max_pool_ceil": "y = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1], ceil_mode = 1>(x)",
    "average_pool_excluding_pads": "y = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)",
    "average_pool_same_upper": 'y = AveragePool<kernel_shape = [2, 2], strides = [2, 2], auto_pad = "SAME_UPPER">(x)',
    "global_average_pool": "y = GlobalAveragePool(x)",
    "batch_norm_negative_scale": (
        "g = Constant<value = float[3] {2.0, -1.0, 0.5}>()\n b = Constant<value = float[3] {0.1, 0.2, -0.3}>()\n"
        " m = Constant<value = float[3] {0.5, -0.5, 0.0}>()\n v = Constant<value = float[3] {1.0, 4.0, 0.25}>()\n"
        " y = BatchNormalization(x, g, b, m, v)"
    ),
    "flatten_by_shape_arithmetic": (
        "s = Shape(x)\n i = Constant<value = int64[1] {0}>()\n n = Gather(s, i)\n"
        " m = Constant<value = int64[1] {-1}>()\n t = Concat<axis = 0>(n, m)\n y = Reshape(x, t)"
    ),
    "transpose_concat": "t = Transpose<perm = [0, 2, 3, 1]>(x)\n u = Neg(t)\n y = Concat<axis = 3>(t, u)",
    "sub_of_two_bounded": "t = Transpose<perm = [0, 1, 3, 2]>(x)\n y = Sub(x, t)",
    "mul_of_two_bounded": "t = Transpose<perm = [0, 1, 3, 2]>(x)\n y = Mul(x, t)",
    "div_by_constant": "k = Constant<value = float[3,1,1] {2.0, -4.0, 0.5}>()\n y = Div(x, k)",
}


def single_op_model(body: str) -> onnx.ModelProto:
    text = f"""
    <ir_version: 8, opset_import: ["" : 20]>
    g (float[N, 3, 7, 7] x) => (float y) {{
        {body}
    }}
    """
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("name", sorted(SINGLE_OPS))
def test_single_op_bounds_contain_runtime_values(name: str) -> None:
    model = single_op_model(SINGLE_OPS[name])
    low = np.random.default_rng(1).uniform(-4, 1, (3, 7, 7))
    high = low + np.random.default_rng(2).uniform(0, 4, (3, 7, 7))
    bounds = propagate(model, {"x": Bounds(low[None], high[None])})
    inputs = box_samples(low, high, 400, seed=3)
    assert_contains(bounds["y"], runtime_values(model, ["y"], inputs)["y"], name)


@pytest.mark.parametrize(
    "name",
    [
        "relu",
        "clip",
        "sigmoid",
        "max_pool_ceil",
        "average_pool_excluding_pads",
        "average_pool_same_upper",
        "global_average_pool",
        "batch_norm_negative_scale",
    ],
)
def test_monotone_or_affine_op_bounds_are_attained(name: str) -> None:
    """Element-wise or per-channel affine ops of a box reach their bounds at a corner."""
    model = single_op_model(SINGLE_OPS[name])
    low, high = np.full((1, 3, 7, 7), -2.0), np.full((1, 3, 7, 7), 1.5)
    bounds = propagate(model, {"x": Bounds(low, high)})["y"]
    values = runtime_values(model, ["y"], np.concatenate([low, high]))["y"]
    assert np.allclose(np.minimum(values[0], values[1]), bounds.lower[0], atol=1e-5)
    assert np.allclose(np.maximum(values[0], values[1]), bounds.upper[0], atol=1e-5)


@pytest.mark.parametrize(
    "attributes",
    [
        "strides = [2, 2]",
        "strides = [2, 2], pads = [1, 0, 1, 2], output_padding = [1, 0]",
        "group = 3, dilations = [2, 1]",
        'strides = [2, 2], auto_pad = "SAME_UPPER"',
    ],
)
def test_conv_transpose_bounds_contain_runtime_values_and_match_the_reference(attributes: str) -> None:
    """The numpy transposed convolution against onnxruntime: every value in the box lies within the bounds,
    and the box's centre maps to the bounds' midpoint (a linear layer's bounds are symmetric around it)."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 5, 6] x, float[3, 2, 3, 3] w, float[{outputs}] b) => (float y) {
        y = ConvTranspose<{attributes}>(x, w, b)
    }
    """.replace("{attributes}", attributes)
    outputs = 6 if "group = 3" in attributes else 2  # weight (in, out / group, kh, kw)
    model = onnx.parser.parse_model(text.replace("{outputs}", str(outputs)))
    rng = np.random.default_rng(4)
    weight, bias = rng.normal(0, 1, (3, 2, 3, 3)), rng.normal(0, 1, outputs)
    model.graph.initializer.extend(
        [numpy_helper.from_array(weight.astype(np.float32), "w"), numpy_helper.from_array(bias.astype(np.float32), "b")]
    )
    del model.graph.input[1:]
    onnx.checker.check_model(model)
    low = rng.uniform(-2, 0, (3, 5, 6))
    high = low + rng.uniform(0, 2, (3, 5, 6))
    bounds = propagate(model, {"x": Bounds(low[None], high[None])})["y"]
    assert_contains(bounds, runtime_values(model, ["y"], box_samples(low, high, 200, seed=5))["y"], attributes)
    centre = runtime_values(model, ["y"], ((low + high) / 2)[None])["y"]
    assert np.allclose(bounds.center, centre, atol=1e-4)


def test_an_op_without_a_rule_stops_the_proof_for_what_depends_on_it() -> None:
    model = single_op_model(
        "w = Constant<value = float[2,3,1,1] {1.0, 1.0, 1.0, -1.0, -1.0, -1.0}>()\n"
        " a = Conv(x, w)\n"
        " s = Softmax<axis = 1>(a)\n"
        " v = Constant<value = float[1,2,1,1] {1.0, 1.0}>()\n"
        " y = Conv(s, v)"
    )
    bounds = propagate(model, {"x": Bounds(np.zeros((1, 3, 7, 7)), np.ones((1, 3, 7, 7)))})
    assert "a" in bounds and "s" not in bounds and "y" not in bounds
    assert bounds.stopped == ("Softmax s",)


def test_weights_from_dequantize_linear_are_folded() -> None:
    """A QDQ model's conv weights are int8 constants dequantized in the graph: still constants."""
    model = single_op_model(
        "wq = Constant<value = int8[1,3,1,1] {100, -50, 25}>()\n sc = Constant<value = float {0.01}>()\n"
        " zp = Constant<value = int8 {0}>()\n w = DequantizeLinear(wq, sc, zp)\n y = Conv(x, w)"
    )
    bounds = propagate(model, {"x": Bounds(np.zeros((1, 3, 7, 7)), np.ones((1, 3, 7, 7)))})["y"]
    assert bounds.upper.max() == pytest.approx(1.25, rel=1e-5) and bounds.lower.min() == pytest.approx(-0.5, rel=1e-5)


def test_a_tensor_nobody_needs_is_dropped_but_kept_ones_stay() -> None:
    model = single_op_model("a = Relu(x)\n b = Sigmoid(a)\n y = Neg(b)")
    kept = propagate(model, {"x": Bounds(np.zeros((1, 3, 7, 7)), np.ones((1, 3, 7, 7)))}, keep=["a", "y"])
    assert set(kept) == {"a", "y"}


# ----------------------------------------------------------------------------- the input box


@st.composite
def input_specs(draw: st.DrawFn) -> InputSpec:
    channels = draw(st.sampled_from(["RGB", "BGR", "GRAY"]))
    count = 1 if channels == "GRAY" else 3
    scale = draw(st.sampled_from([1, 255]))
    mean = tuple(draw(st.lists(st.floats(-1, 1), min_size=count, max_size=count)))
    std = tuple(draw(st.lists(st.floats(0.05, 2), min_size=count, max_size=count)))
    return InputSpec(
        size=(5, 4),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        channels=channels,
        scale=scale,
        mean=tuple(m * scale for m in mean),
        std=tuple(s * scale for s in std),
    )


@settings(max_examples=200, deadline=None)
@given(spec=input_specs(), seed=st.integers(0, 2**16))
def test_input_box_holds_every_image_the_probe_transform_makes(spec: InputSpec, seed: int) -> None:
    """Against the probe's own ``to_model_input``: random images fall inside, black and white images reach
    the two ends of the box."""
    lower, upper = input_box(spec)
    pixels = np.random.default_rng(seed).random((16, 5, 4, 3)).astype(np.float32)
    pixels[0], pixels[1] = 0.0, 1.0
    inputs = to_model_input(pixels, spec)
    slack = 1e-5 * (1 + np.abs(lower).max() + np.abs(upper).max())
    assert (inputs >= lower - slack).all() and (inputs <= upper + slack).all()
    ends = np.minimum(inputs[0], inputs[1]), np.maximum(inputs[0], inputs[1])
    assert np.allclose(ends[0], lower[0], atol=slack) and np.allclose(ends[1], upper[0], atol=slack)


# ----------------------------------------------------------------------------- torch graphs

SIZE = 48


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def torchvision_network(request: pytest.FixtureRequest) -> torch.nn.Module:
    return with_batch_norm_statistics(request.param, SIZE)


@pytest.mark.slow
def test_torch_bounds_contain_what_torch_computes(torchvision_network: torch.nn.Module) -> None:
    """Every ReLU's input, captured by forward pre-hooks on the eager module in call order, lies within the
    bounds of the pre-activation the exported graph computes at that point."""
    backend = TorchBackend(torchvision_network, "module", imagenet_spec(SIZE), "net", 2)
    graph = backend.model_graph()
    keys = {layer.preactivation for layer in graph.layers.values() if layer.preactivation}
    lower, upper = input_box(backend.input_spec)
    bounds, stopped = propagate_torch(graph.graph, torch.from_numpy(lower), torch.from_numpy(upper), keys)
    assert set(bounds) == keys and stopped == ()
    inputs: list[torch.Tensor] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
        for module in torchvision_network.modules()
        if isinstance(module, (torch.nn.ReLU, torch.nn.ReLU6))
    ]
    with torch.no_grad():
        torchvision_network(torch.from_numpy(box_samples(lower[0], upper[0], 16, seed=0)).float())
    for hook in hooks:
        hook.remove()
    in_order = [node.name for node in graph.graph.graph.nodes if node.name in keys]
    assert len(in_order) == len(inputs)
    for key, value in zip(in_order, inputs):
        found = bounds[key]
        slack = 1e-4 * (1 + float(found.upper.abs().max()))
        assert (value.double() <= found.upper + slack).all(), key
        assert (value.double() >= found.lower - slack).all(), key


@pytest.mark.slow
def test_torch_and_onnx_evaluators_agree(torchvision_network: torch.nn.Module, tmp_path) -> None:
    """One network, BatchNorm kept (torch) or folded (ONNX): the same per-channel upper bounds, up to the
    float32 rounding allowance (about 2e-4 relative per conv, deeper layers more)."""
    spec = imagenet_spec(SIZE)
    torch_backend = TorchBackend(torchvision_network, "module", spec, "net", 2)
    onnx_backend = OnnxBackend(export(torchvision_network, tmp_path / "m.onnx", SIZE, names_from_modules=False), spec)
    kinds = {layer.id: layer.activation for layer in torch_backend.layers}
    torch_graph = torch_backend.model_graph()
    from_torch = certify(torch_graph, spec, kinds).layers
    from_onnx = certify(onnx_backend.model_graph(), spec, {layer.id: layer.activation for layer in onnx_backend.layers})
    assert len(from_onnx.layers) == len(from_torch)
    pairs = list(zip(from_torch.values(), from_onnx.layers.values()))
    compared = 0
    for depth, (torch_layer, onnx_layer) in enumerate(pairs, start=1):
        if torch_graph.layers[torch_layer.layer_id].preactivation is None:
            continue  # a linear projection: ONNX folds its BatchNorm into the conv, torch bounds the conv alone
        assert torch_layer.reached and onnx_layer.reached, onnx_layer.layer_id
        scale = np.abs(onnx_layer.upper).max()
        assert np.abs(onnx_layer.upper - torch_layer.upper).max() <= 1e-3 * depth * scale, onnx_layer.layer_id
        compared += 1
    assert compared >= len(pairs) // 2
