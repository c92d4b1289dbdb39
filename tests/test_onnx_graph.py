"""Conv layers and their activations in ONNX graphs the way real exporters write them.

Hand-written graphs (ONNX text syntax) cover one exporter habit each; exported
torchvision architectures check that the ONNX audit agrees with the torch audit
of the same module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from modelbuilders import conv_bias, conv_initializers, conv_weight, export_onnx, onnx_model, save_onnx

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.onnx.graph import OnnxGraph, conv_layers
from pytest_cnnaudit.config import InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.document import ModelDocument, Verdict
from pytest_cnnaudit.engine.audit import audit_model, measure_model
from pytest_cnnaudit.engine.planning import open_model
from pytest_cnnaudit.engine.stats import ChannelStats
from pytest_cnnaudit.errors import ModelError

IMAGE = "float[N, 3, 16, 16] image"
OUT8 = "float[N, 8, 16, 16] out"
PAD = "<pads = [1, 1, 1, 1]>"


def graph(body: str, *, image: str = IMAGE, output: str = OUT8, opset: int = 13, ir_version: int = 8) -> str:
    """A one-graph model in ONNX text syntax around ``body`` (one node per line)."""
    return f'<ir_version: {ir_version}, opset_import: ["" : {opset}]>\nnet ({image}) => ({output}) {{\n{body}\n}}'


def found(model: onnx.ModelProto) -> list[tuple[str, str | None, int]]:
    """(id, activation, channels) of every conv layer the graph walk finds."""
    layers, _ = conv_layers(OnnxGraph(model))
    return [(layer.id, layer.activation, layer.channels) for layer in layers]


def measured_tensors(model: onnx.ModelProto) -> dict[str, str | None]:
    layers, _ = conv_layers(OnnxGraph(model))
    return {layer.id: layer.tensor for layer in layers}


def audit_onnx(
    model: onnx.ModelProto, folder: Path, name: str = "model.onnx", probe: str = "count: 8, batch_size: 4", **input_spec
) -> ModelDocument:
    """Save ``model`` in ``folder`` and audit it with the given probe settings."""
    path = save_onnx(model, folder / name)
    config = parse_config(f"probe: {{{probe}}}", str(folder / "cnnaudit.yaml"))
    return audit_model(path, config, ModelSpec(path=str(path), input=InputSpec(**input_spec)))


def measure_onnx(
    model: onnx.ModelProto, folder: Path, name: str = "model.onnx", probe: str = "count: 8, batch_size: 4", **input_spec
) -> dict[str, ChannelStats]:
    """The engine's statistics of each measured layer (the main pass alone), for what the document leaves out."""
    path = save_onnx(model, folder / name)
    config = parse_config(f"probe: {{{probe}}}", str(folder / "cnnaudit.yaml"))
    opened = open_model(path, config, ModelSpec(path=str(path), input=InputSpec(**input_spec)))
    try:
        return measure_model(opened).stats
    finally:
        opened.backend.close()


LAYER_CHECKS = ("sparsity", "dead_filters")


def layer_verdicts(result: ModelDocument) -> list[Verdict]:
    """The verdicts of the per-layer checks of the main pass (sparsity, dead filters)."""
    return [v for v in result.verdicts if v.check in LAYER_CHECKS]


def stats_equal(a: ModelDocument, b: ModelDocument, rtol: float = 1e-5) -> None:
    assert len(a.layers) == len(b.layers)
    for left, right in zip(a.layers, b.layers):
        assert left.dead_channels == right.dead_channels, (left.id, right.id)
        assert left.sparsity == pytest.approx(right.sparsity, abs=1e-6), (left.id, right.id)
        np.testing.assert_allclose(left.channel_max, right.channel_max, rtol=rtol, atol=1e-6)
        np.testing.assert_allclose(left.channel_mean, right.channel_mean, rtol=rtol, atol=1e-6)


CONV8 = conv_initializers("c1", 8, 3)


# --------------------------------------------------------------------------- ReLU6 as Clip


def test_relu6_clip_bounds_as_initializers() -> None:
    model = onnx_model(
        graph(f"c = Conv {PAD} (image, c1_w, c1_b)\nout = Clip (c, lo, hi)"),
        {**CONV8, "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)},
    )
    assert found(model) == [("c", "relu6", 8)]
    assert measured_tensors(model) == {"c": "out"}


def test_relu6_clip_bounds_as_constant_nodes() -> None:
    body = f"""
    lo = Constant <value = float {{0.0}}> ()
    hi = Constant <value = float {{6.0}}> ()
    c = Conv {PAD} (image, c1_w, c1_b)
    out = Clip (c, lo, hi)"""
    assert found(onnx_model(graph(body), CONV8)) == [("c", "relu6", 8)]


def test_relu6_clip_bounds_through_cast() -> None:
    """Exporters sometimes cast the bounds (double constants for a float graph)."""
    body = f"""
    lo64 = Constant <value = double {{0.0}}> ()
    hi64 = Constant <value = double {{6.0}}> ()
    lo = Cast <to = 1> (lo64)
    hi = Cast <to = 1> (hi64)
    c = Conv {PAD} (image, c1_w, c1_b)
    out = Clip (c, lo, hi)"""
    assert found(onnx_model(graph(body), CONV8)) == [("c", "relu6", 8)]


def test_relu6_clip_bounds_as_attributes_opset6(tmp_path: Path) -> None:
    """Opset < 11 Clip has min/max attributes; IR 3 also lists initializers as graph inputs."""
    text = graph(
        f"c = Conv {PAD} (image, c1_w, c1_b)\nout = Clip <min = 0.0, max = 6.0> (c)",
        image=f"{IMAGE}, float[8, 3, 3, 3] c1_w, float[8] c1_b",
        opset=6,
        ir_version=3,
    )
    model = onnx_model(text, CONV8)
    assert [i.name for i in OnnxGraph(model).image_inputs] == ["image"]
    assert found(model) == [("c", "relu6", 8)]
    result = audit_onnx(model, tmp_path)
    assert result.layers[0].activation == "relu6"
    assert max(result.layers[0].channel_max) <= 6.0
    assert [v.outcome for v in layer_verdicts(result)] == ["passed", "passed"]


def test_clip_with_other_bounds_is_not_relu6() -> None:
    model = onnx_model(
        graph(f"c = Conv {PAD} (image, c1_w, c1_b)\nout = Clip (c, lo, hi)"),
        {**CONV8, "lo": np.array(0.0, np.float32), "hi": np.array(1.0, np.float32)},
    )
    assert found(model) == [("c", "clip", 8)]


def test_clip_with_negative_floor_is_no_activation() -> None:
    model = onnx_model(
        graph(f"c = Conv {PAD} (image, c1_w, c1_b)\nout = Clip (c, lo, hi)"),
        {**CONV8, "lo": np.array(-1.0, np.float32), "hi": np.array(1.0, np.float32)},
    )
    assert found(model) == [("c", None, 8)]


# --------------------------------------------------------------------------- HardSwish and SiLU

THREE_SIX = {"three": np.array(3.0, np.float32), "six": np.array(6.0, np.float32), "zero": np.array(0.0, np.float32)}
HARDSWISH_BODIES = {
    "x*clip(x+3)/6": """
    s = Add (c, three)
    g = Clip (s, zero, six)
    p = Mul (c, g)
    out = Div (p, six)""",
    "clip(3+x)*x*(1/6)": """
    s = Add (three, c)
    g = Clip (s, zero, six)
    p = Mul (g, c)
    out = Mul (p, sixth)""",
    "x*(clip(x+3)/6)": """
    s = Add (c, three)
    g = Clip (s, zero, six)
    q = Div (g, six)
    out = Mul (c, q)""",
    "x*hardsigmoid(x)": """
    q = HardSigmoid <alpha = 0.16666667, beta = 0.5> (c)
    out = Mul (c, q)""",
}


@pytest.fixture(scope="module")
def hardswish_op_audit(tmp_path_factory: pytest.TempPathFactory) -> ModelDocument:
    """The same conv followed by the HardSwish op (opset 14): the reference statistics."""
    model = onnx_model(graph(f"c = Conv {PAD} (image, c1_w, c1_b)\nout = HardSwish (c)", opset=14), CONV8)
    assert found(model) == [("c", "hardswish", 8)]
    return audit_onnx(model, tmp_path_factory.mktemp("hardswish"))


@pytest.mark.parametrize("body", HARDSWISH_BODIES.values(), ids=HARDSWISH_BODIES.keys())
def test_decomposed_hardswish(body: str, tmp_path: Path, hardswish_op_audit: ModelDocument) -> None:
    """The Clip(x + 3, 0, 6) inside a HardSwish is not a ReLU6, and the measured tensor is the product."""
    constants = {**CONV8, **THREE_SIX, "sixth": np.array(1 / 6, np.float32)}
    text = graph(f"c = Conv {PAD} (image, c1_w, c1_b)\n{body}")
    model = onnx_model(text, {k: v for k, v in constants.items() if k in text})
    assert found(model) == [("c", "hardswish", 8)]
    assert measured_tensors(model) == {"c": "out"}
    result = audit_onnx(model, tmp_path)
    stats_equal(result, hardswish_op_audit, rtol=1e-4)


def test_decomposed_hardswish_after_batchnorm() -> None:
    bn = {
        "scale": np.full(8, 2.0, np.float32),
        "shift": np.full(8, 0.1, np.float32),
        "mu": np.zeros(8, np.float32),
        "var": np.ones(8, np.float32),
    }
    body = f"""
    c = Conv {PAD} (image, c1_w, c1_b)
    n = BatchNormalization (c, scale, shift, mu, var)
    q = HardSigmoid <alpha = 0.16666667, beta = 0.5> (n)
    out = Mul (n, q)"""
    model = onnx_model(graph(body), {**CONV8, **bn})
    assert found(model) == [("c", "hardswish", 8)]


def test_silu_as_x_times_sigmoid(tmp_path: Path) -> None:
    model = onnx_model(graph(f"c = Conv {PAD} (image, c1_w, c1_b)\ng = Sigmoid (c)\nout = Mul (g, c)"), CONV8)
    assert found(model) == [("c", "silu", 8)]
    assert measured_tensors(model) == {"c": "out"}
    result = audit_onnx(model, tmp_path)
    assert [v.outcome for v in layer_verdicts(result)] == ["passed", "passed"]
    assert result.layers[0].activation == "silu" and result.layers[0].sparsity is not None


def test_sigmoid_gate_of_another_tensor_is_sigmoid() -> None:
    """A squeeze-excitation gate: Sigmoid(conv2(x)) multiplies x, not conv2's own output."""
    body = f"""
    c = Conv {PAD} (image, c1_w, c1_b)
    r = Relu (c)
    e = Conv (r, e_w, e_b)
    g = Sigmoid (e)
    out = Mul (r, g)"""
    model = onnx_model(graph(body), {**CONV8, **conv_initializers("e", 8, 8, kernel=1)})
    assert found(model) == [("c", "relu", 8), ("e", "sigmoid", 8)]


# --------------------------------------------------------------------------- other exporter habits


def test_batchnorm_between_conv_and_relu(tmp_path: Path) -> None:
    bn = {
        "scale": np.ones(8, np.float32),
        "shift": np.zeros(8, np.float32),
        "mu": np.zeros(8, np.float32),
        "var": np.ones(8, np.float32),
    }
    bn["shift"][3] = -100.0  # channel 3 is pushed below zero for every input
    body = f"""
    c = Conv {PAD} (image, c1_w, c1_b)
    n = BatchNormalization <epsilon = 0.0> (c, scale, shift, mu, var)
    out = Relu (n)"""
    model = onnx_model(graph(body), {**CONV8, **bn})
    assert found(model) == [("c", "relu", 8)]
    assert measured_tensors(model) == {"c": "out"}
    assert audit_onnx(model, tmp_path).layers[0].dead_channels == (3,)


def test_conv_weights_in_constant_nodes(tmp_path: Path) -> None:
    text = graph(
        f"w = Constant <value_float = 0.0> ()\nc = Conv {PAD} (image, w)\nout = Relu (c)",
        output="float[N, 6, 16, 16] out",
    )
    model = onnx.parser.parse_model(text)
    weight = onnx.numpy_helper.from_array(conv_weight(6, 3), "w")
    model.graph.node[0].attribute[0].CopyFrom(onnx.helper.make_attribute("value", weight))
    onnx.checker.check_model(model, full_check=True)
    assert found(model) == [("c", "relu", 6)]
    assert measure_onnx(model, tmp_path)["c"].channels == 6


def test_node_names_are_layer_ids_and_unnamed_nodes_use_their_output() -> None:
    body = f"""
    [conv1] c = Conv {PAD} (image, c1_w, c1_b)
    r = Relu (c)
    d = Conv {PAD} (r, c2_w, c2_b)
    out = Relu (d)"""
    model = onnx_model(graph(body), {**CONV8, **conv_initializers("c2", 8, 8)})
    model.graph.node[0].name = "/features/conv1/Conv"  # exporter-style scope names are not valid text syntax
    assert found(model) == [("/features/conv1/Conv", "relu", 8), ("d", "relu", 8)]


def test_duplicate_node_names_stay_distinct() -> None:
    body = f"""
    [conv] c = Conv {PAD} (image, c1_w, c1_b)
    r = Relu (c)
    [conv] d = Conv {PAD} (r, c2_w, c2_b)
    out = Relu (d)"""
    model = onnx_model(graph(body), {**CONV8, **conv_initializers("c2", 8, 8)})
    ids = [layer_id for layer_id, _, _ in found(model)]
    assert len(set(ids)) == 2 and ids[0] == "conv"


BATCH_BODY = f"""
    c = Conv {PAD} (image, c1_w, c1_b)
    r = Relu (c)
    d = Conv {PAD} (r, c2_w, c2_b)
    out = Relu (d)"""
BATCH_WEIGHTS = {**conv_initializers("c1", 8, 3, dead=(2,)), **conv_initializers("c2", 8, 8, seed=1)}


@pytest.mark.parametrize("fixed_batch", [1, 4])
def test_fixed_batch_padding_does_not_change_statistics(fixed_batch: int, tmp_path: Path) -> None:
    """10 probe images through a batch-4 model: the last batch is padded, the padding is not counted."""
    dynamic = onnx_model(graph(BATCH_BODY), BATCH_WEIGHTS)
    fixed = onnx_model(
        graph(
            BATCH_BODY, image=f"float[{fixed_batch}, 3, 16, 16] image", output=f"float[{fixed_batch}, 8, 16, 16] out"
        ),
        BATCH_WEIGHTS,
    )
    probe = "count: 10, batch_size: 3"
    reference = measure_onnx(dynamic, tmp_path, "dynamic.onnx", probe)
    result = measure_onnx(fixed, tmp_path, "fixed.onnx", probe)
    assert OnnxBackend(tmp_path / "fixed.onnx", InputSpec()).fixed_batch == fixed_batch
    assert list(result) == list(reference) == ["c", "d"]
    for left, right in zip(result.values(), reference.values()):
        assert left.count == right.count == 10 * 16 * 16
        np.testing.assert_array_equal(left.inactive, right.inactive)
        np.testing.assert_allclose(left.mean, right.mean, rtol=1e-5)
        np.testing.assert_array_equal(left.top_images, right.top_images)  # padding rows never count
        assert left.top_images.max() < 10
    assert result["c"].dead_channels == (2,)


NCHW_BODY = f"c = Conv {PAD} (image, c1_w, c1_b)\nout = Relu (c)"
PLANTED = conv_initializers("c1", 8, 3, dead=(2, 6))


@pytest.fixture(scope="module")
def nchw_audit(tmp_path_factory: pytest.TempPathFactory) -> ModelDocument:
    return audit_onnx(onnx_model(graph(NCHW_BODY), PLANTED), tmp_path_factory.mktemp("nchw"))


def test_nhwc_input_through_leading_transpose(tmp_path: Path, nchw_audit: ModelDocument) -> None:
    body = f"x = Transpose <perm = [0, 3, 1, 2]> (image)\n{NCHW_BODY.replace('(image,', '(x,')}"
    model = onnx_model(graph(body, image="float[N, 16, 16, 3] image"), PLANTED)
    assert found(model) == [("c", "relu", 8)]
    result = audit_onnx(model, tmp_path)
    assert result.input.layout == "NHWC" and result.input.size == (16, 16)
    stats_equal(result, nchw_audit)
    assert result.layers[0].dead_channels == (2, 6)


def test_channel_axis_follows_a_transpose_after_the_conv(tmp_path: Path, nchw_audit: ModelDocument) -> None:
    body = f"c = Conv {PAD} (image, c1_w, c1_b)\nt = Transpose <perm = [0, 2, 3, 1]> (c)\nout = Relu (t)"
    model = onnx_model(graph(body, output="float[N, 16, 16, 8] out"), PLANTED)
    assert found(model) == [("c", "relu", 8)]
    _, axes = conv_layers(OnnxGraph(model))
    assert axes == {"out": 3}
    result = audit_onnx(model, tmp_path)
    stats_equal(result, nchw_audit)
    assert result.layers[0].dead_channels == (2, 6)


def test_two_convs_into_one_add_share_one_activation(tmp_path: Path) -> None:
    body = f"""
    a = Conv {PAD} (image, c1_w, c1_b)
    b = Conv (image, p_w, p_b)
    s = Add (a, b)
    out = Relu (s)"""
    model = onnx_model(graph(body), {**CONV8, **conv_initializers("p", 8, 3, kernel=1, seed=3)})
    assert found(model) == [("a", "relu", 8), ("b", "relu", 8)]
    assert measured_tensors(model) == {"a": "out", "b": "out"}
    stats = measure_onnx(model, tmp_path)
    assert stats["a"] is stats["b"]


def test_residual_block_with_identity_skip() -> None:
    body = f"""
    a = Conv {PAD} (image, c1_w, c1_b)
    x = Relu (a)
    b = Conv {PAD} (x, c2_w, c2_b)
    bn = BatchNormalization (b, scale, shift, mu, var)
    s = Add (x, bn)
    out = Relu (s)"""
    bn = {"scale": np.ones(8, np.float32), "shift": np.zeros(8, np.float32)}
    bn |= {"mu": np.zeros(8, np.float32), "var": np.ones(8, np.float32)}
    model = onnx_model(graph(body), {**CONV8, **conv_initializers("c2", 8, 8), **bn})
    assert found(model) == [("a", "relu", 8), ("b", "relu", 8)]
    assert measured_tensors(model) == {"a": "x", "b": "out"}


def test_conv_without_activation_is_linear_and_skipped(tmp_path: Path) -> None:
    body = f"""
    c = Conv {PAD} (image, c1_w, c1_b)
    r = Relu (c)
    out = Conv (r, p_w, p_b)"""
    model = onnx_model(graph(body, output="float[N, 4, 16, 16] out"), {**CONV8, **conv_initializers("p", 4, 8, 1)})
    assert found(model) == [("c", "relu", 8), ("out", None, 4)]
    result = audit_onnx(model, tmp_path)
    linear = result.layers[1]
    assert linear.activation is None and linear.sparsity is None and linear.unmeasured is not None
    verdicts = {v.item_id: v for v in layer_verdicts(result)}
    assert {verdicts[f"{check}[out]"].outcome for check in ("sparsity", "dead_filters")} == {"skipped"}
    assert "linear" in verdicts["sparsity[out]"].message
    assert verdicts["sparsity[c]"].outcome == "passed"


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_channels(group: int, tmp_path: Path) -> None:
    """ConvTranspose weights are (in, out / group, kh, kw)."""
    weights = {"t_w": conv_weight(8, 6 // group), "t_b": conv_bias(6)}
    body = f"c = Conv {PAD} (image, c1_w, c1_b)\nr = Relu (c)\nt = ConvTranspose <group = {group}> (r, t_w, t_b)\nout = Relu (t)"
    model = onnx_model(graph(body, output="float[N, 6, 18, 18] out"), {**CONV8, **weights})
    assert found(model) == [("c", "relu", 8), ("t", "relu", 6)]
    layer = audit_onnx(model, tmp_path).layers[1]
    assert layer.op == "ConvTranspose" and len(layer.channel_max) == 6


def test_dynamic_spatial_size_needs_input_size(tmp_path: Path) -> None:
    model = onnx_model(graph(NCHW_BODY, image="float[N, 3, H, W] image", output="float[N, 8, H, W] out"), PLANTED)
    path = save_onnx(model, tmp_path / "anysize.onnx")
    with pytest.raises(ModelError, match=r"input.size") as info:
        OnnxBackend(path, InputSpec())
    assert str(path) in str(info.value)
    result = audit_onnx(model, tmp_path, size=(20, 12))
    assert result.input.size == (20, 12) and measure_onnx(model, tmp_path, size=(20, 12))["c"].count == 8 * 20 * 12
    assert result.layers[0].dead_channels == (2, 6)


def test_single_channel_input_is_gray(tmp_path: Path) -> None:
    body = f"c = Conv {PAD} (image, g_w, g_b)\nout = Relu (c)"
    model = onnx_model(graph(body, image="float[N, 1, 16, 16] image"), conv_initializers("g", 8, 1, dead=(0,)))
    result = audit_onnx(model, tmp_path)
    assert (result.input.channels, result.input.layout) == ("GRAY", "NCHW")
    assert result.layers[0].dead_channels == (0,)


def test_model_without_conv_is_a_model_error_naming_the_file(tmp_path: Path) -> None:
    model = onnx_model(graph("out = Relu (image)", output="float[N, 3, 16, 16] out"))
    path = save_onnx(model, tmp_path / "noconv.onnx")
    with pytest.raises(ModelError, match="no Conv") as info:
        OnnxBackend(path, InputSpec())
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- exported torchvision models

#: (architecture, opsets): mobilenet_v2 at opset 10 writes Clip bounds as attributes, at 17 as inputs;
#: mobilenet_v3_small at opset 13 decomposes HardSwish into x * HardSigmoid(x); efficientnet's SiLU is x * Sigmoid(x).
ARCHITECTURES = {
    "resnet18": (11, 17),
    "mobilenet_v2": (10, 17),
    "mobilenet_v3_small": (13, 17),
    "efficientnet_b0": (17,),
}
SIZE = (64, 64)
NORMALISED = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
PROBE = "probe: {count: 8, batch_size: 8}\nchecks: {color: {enabled: false}}  # compared here: the main pass"


Exported = tuple[ModelDocument, dict[int, Path]]


@pytest.fixture(scope="session")
def torchvision_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """Per architecture, made once on first use: the torch audit of a random-init module
    and its ONNX exports by opset."""
    folder = tmp_path_factory.mktemp("torchvision")
    config = parse_config(PROBE, str(folder / "cnnaudit.yaml"))

    @functools.cache
    def export(name: str) -> Exported:
        torch.manual_seed(0)
        module = getattr(torchvision.models, name)(weights=None).eval()
        spec = ModelSpec(path=name, input=InputSpec(size=SIZE, **NORMALISED))
        torch_audit = audit_model(module, config, spec)
        paths = {
            opset: export_onnx(module, folder / f"{name}-{opset}.onnx", SIZE, opset) for opset in ARCHITECTURES[name]
        }
        return torch_audit, paths

    return export


def clip_bounds_style(model: onnx.ModelProto) -> set[str]:
    return {"attributes" if node.attribute else "inputs" for node in model.graph.node if node.op_type == "Clip"}


#: What each export must look like for the comparison to cover the exporter habit it is there for.
EXPORT_HABITS: dict[tuple[str, int], Callable[[onnx.ModelProto, set[str]], bool]] = {
    ("resnet18", 11): lambda model, ops: {"Add", "Relu"} <= ops,
    ("resnet18", 17): lambda model, ops: {"Add", "Relu"} <= ops,
    ("mobilenet_v2", 10): lambda model, ops: clip_bounds_style(model) == {"attributes"},
    ("mobilenet_v2", 17): lambda model, ops: clip_bounds_style(model) == {"inputs"},
    ("mobilenet_v3_small", 13): lambda model, ops: "HardSwish" not in ops and {"HardSigmoid", "Mul"} <= ops,
    ("mobilenet_v3_small", 17): lambda model, ops: "HardSwish" in ops,
    ("efficientnet_b0", 17): lambda model, ops: {"Sigmoid", "Mul"} <= ops,
}


EXPECTED_KINDS = {
    "resnet18": {"relu"},
    "mobilenet_v2": {"relu6", None},
    "mobilenet_v3_small": {"relu", "hardswish", "hard_sigmoid", None},
    "efficientnet_b0": {"silu", "sigmoid", None},
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "opset"), [(name, opset) for name, opsets in ARCHITECTURES.items() for opset in opsets]
)
def test_onnx_audit_agrees_with_torch_audit(
    name: str, opset: int, torchvision_export: Callable[[str], Exported]
) -> None:
    torch_audit, paths = torchvision_export(name)
    path = paths[opset]
    exported = onnx.load(str(path))
    assert EXPORT_HABITS[name, opset](exported, {node.op_type for node in exported.graph.node})
    config = parse_config(PROBE, str(path.parent / "cnnaudit.yaml"))
    onnx_audit = audit_model(path, config, ModelSpec(path=str(path), input=InputSpec(**NORMALISED)))
    assert onnx_audit.input.size == SIZE
    assert len(onnx_audit.layers) == len(torch_audit.layers)
    assert {layer.activation for layer in torch_audit.layers} == EXPECTED_KINDS[name]
    for onnx_layer, torch_layer in zip(onnx_audit.layers, torch_audit.layers):
        where = (onnx_layer.id, torch_layer.id)
        assert torch_layer.id.endswith(onnx_layer.id.split("/")[-2]), where  # /layer1/layer1.0/conv1/Conv
        assert (onnx_layer.op, onnx_layer.activation, onnx_layer.channels) == (
            torch_layer.op,
            torch_layer.activation,
            torch_layer.channels,
        ), where
        if torch_layer.sparsity is None:
            assert onnx_layer.sparsity is None, where
            continue
        assert onnx_layer.sparsity == pytest.approx(torch_layer.sparsity, abs=1e-4), where
        assert onnx_layer.dead_channels == torch_layer.dead_channels, where
    assert [v.outcome for v in layer_verdicts(onnx_audit)] == [v.outcome for v in layer_verdicts(torch_audit)]
