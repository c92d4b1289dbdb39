"""Graph shapes real networks have: residual branches, control flow, 1-d and 3-d convs, weights
computed from constants, space-to-depth first layers and input normalisation inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from modelbuilders import (
    PLANTED,
    conv_initializers,
    inactive_reference,
    measured,
    onnx_model,
    planted_conv,
    probe_inputs,
    run_exposing,
    save_onnx,
)

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.onnx.graph import OnnxGraph, conv_layers
from pytest_cnnaudit.config import InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.engine.audit import audit_model

PAD = "<pads = [1, 1, 1, 1]>"


def graph(
    body: str, image: str = "float[N, 3, 16, 16] image", output: str = "float[N, 8, 16, 16] out", opset: int = 17
) -> str:
    return f'<ir_version: 8, opset_import: ["" : {opset}]>\nnet ({image}) => ({output}) {{\n{body}\n}}'


def layer_table(model: onnx.ModelProto) -> list[tuple[str, str | None, str | None]]:
    layers, _ = conv_layers(OnnxGraph(model))
    return [(layer.id, layer.activation, layer.tensor) for layer in layers]


# --------------------------------------------------------------------------- residual branches

RESIDUAL_BODY = f"""
    [a] a = Conv {PAD} (image, c_w, c_b)
    r = Relu (a)
    [b] b = Conv {PAD} (r, b_w, b_b)
    s = Add (b, r)
    m = Mul (s, gamma)
    t = Add (m, r)
    u = Relu (t)
    [next] n = Conv {PAD} (s, n_w, n_b)
    v = Relu (n)
    out = Add (u, v)"""
RESIDUAL_WEIGHTS = {
    **planted_conv("c", 8, 3, ()),
    **planted_conv("b", 8, 8, (1, 6), seed=1),
    **planted_conv("n", 8, 8, (), seed=2),
    "gamma": np.full((8, 1, 1), 0.5, np.float32),
}


def test_activation_found_through_an_add_with_several_consumers(tmp_path: Path) -> None:
    """``b -> Add -> Mul -> Add -> Relu``, the first Add's output also feeding the next block's conv:
    the only channel-preserving path from b ends at the Relu, which is what b's channels feed."""
    model = onnx_model(graph(RESIDUAL_BODY), RESIDUAL_WEIGHTS)
    assert layer_table(model) == [("a", "relu", "r"), ("b", "relu", "u"), ("next", "relu", "v")]
    _, stats = measured(save_onnx(model, tmp_path / "residual.onnx"))
    (relu,) = run_exposing(model, ["u"], probe_inputs())
    dead, sparsity = inactive_reference(relu)
    assert stats["u"].dead_channels == dead == (1, 6)  # bias -50 outweighs the skip's r and m
    assert stats["u"].sparsity == sparsity


def test_two_activations_reached_is_unmeasured_with_the_reason() -> None:
    """One path through a Mul to a Relu, another through a MaxPool to a HardSwish: which one b feeds is
    not defined. (An activation applied to a tensor itself ends the walk there: it is the nearest.)"""
    body = f"""
    [b] b = Conv {PAD} (image, c_w, c_b)
    s = Add (b, shift)
    m = Mul (s, shift)
    u = Relu (m)
    p = MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [1, 1]> (s)
    h = HardSwish (p)
    out = Add (u, h)"""
    model = onnx_model(graph(body), {**planted_conv("c", 8, 3, ()), "shift": np.full((8, 1, 1), 0.1, np.float32)})
    layers, axes = conv_layers(OnnxGraph(model))
    (layer,) = layers
    assert layer.activation is None and layer.tensor is None and axes == {}
    assert layer.reason is not None and "2 different activations" in layer.reason
    assert "relu (u)" in layer.reason and "hardswish (h)" in layer.reason


def test_paths_ending_at_other_ops_do_not_count() -> None:
    """A branch into a Conv, a Resize or a Reshape ends there: it is no second activation."""
    body = f"""
    [b] b = Conv {PAD} (image, c_w, c_b)
    s = Add (b, shift)
    [side] d = Conv {PAD} (s, d_w, d_b)
    out = Relu (s)
    flat = Flatten (d)"""
    model = onnx.parser.parse_model(graph(body, output="float[N, 8, 16, 16] out, float[N, 2048] flat"))
    for name, value in {
        **planted_conv("c", 8, 3, ()),
        **planted_conv("d", 8, 8, ()),
        "shift": np.zeros((8, 1, 1), np.float32),
    }.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    assert layer_table(model) == [("b", "relu", "out"), ("side", None, None)]


# --------------------------------------------------------------------------- control flow


def _conv_graph(name: str, weights: str, output: str) -> onnx.GraphProto:
    conv = onnx.helper.make_node("Conv", ["image", weights], [output], name=name, pads=[1, 1, 1, 1])
    value = onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_graph([conv], f"{name}_body", [], [value])


def test_convs_inside_if_and_loop_are_listed_with_their_reason() -> None:
    weights = conv_initializers("c", 8, 3)
    main = onnx.helper.make_node("Conv", ["image", "c_w", "c_b"], ["c"], name="main", pads=[1, 1, 1, 1])
    relu = onnx.helper.make_node("Relu", ["c"], ["r"])
    branch = onnx.helper.make_node(
        "If",
        ["flag"],
        ["chosen"],
        name="branch",
        then_branch=_conv_graph("then_conv", "c_w", "t"),
        else_branch=_conv_graph("else_conv", "c_w", "e"),
    )
    flag = onnx.helper.make_node("Constant", [], ["flag"], value=onnx.numpy_helper.from_array(np.array(True)))
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [flag, main, relu, branch],
            "net",
            [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
            [
                onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, None),
                onnx.helper.make_tensor_value_info("chosen", onnx.TensorProto.FLOAT, None),
            ],
            [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    layers, _ = conv_layers(OnnxGraph(model))
    assert (layers[0].id, layers[0].activation, layers[0].reason) == ("main", "relu", None)
    listed = {layer.id: (layer.activation, layer.tensor, layer.channels, layer.reason) for layer in layers[1:]}
    reason = "inside the {} of If 'branch': convs in control-flow bodies are not measured"
    assert listed == {
        "then_conv": (None, None, 8, reason.format("then_branch")),
        "else_conv": (None, None, 8, reason.format("else_branch")),
    }


def test_conv_inside_a_loop_body() -> None:
    body = f"""
    [main] c = Conv {PAD} (image, c_w, c_b)
    r = Relu (c)
    out = Identity (r)"""
    model = onnx_model(graph(body), conv_initializers("c", 8, 3))
    loop_body = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            onnx.helper.make_node("Conv", ["image", "c_w"], ["y"], name="looped", pads=[1, 1, 1, 1]),
        ],
        "body",
        [
            onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
        ],
        [
            onnx.helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None),
        ],
    )
    model.graph.node.append(onnx.helper.make_node("Loop", ["", ""], ["ys"], name="repeat", body=loop_body))
    layers, _ = conv_layers(OnnxGraph(model))
    assert [(layer.id, layer.reason) for layer in layers] == [
        ("main", None),
        ("looped", "inside the body of Loop 'repeat': convs in control-flow bodies are not measured"),
    ]


# --------------------------------------------------------------------------- 1-d and 3-d convs


def test_conv1d_and_conv3d_layers_are_found_with_channels_on_axis_1() -> None:
    conv1d = onnx_model(
        graph(
            "[c] c = Conv <pads = [1, 1]> (image, w, b)\nout = Relu (c)",
            "float[N, 2, 100] image",
            "float[N, 8, 100] out",
        ),
        {"w": np.ones((8, 2, 3), np.float32), "b": np.zeros(8, np.float32)},
    )
    conv3d = onnx_model(
        graph(
            "[c] c = Conv (image, w, b)\nout = Relu (c)", "float[N, 3, 4, 16, 16] image", "float[N, 8, 2, 14, 14] out"
        ),
        {"w": np.ones((8, 3, 3, 3, 3), np.float32), "b": np.zeros(8, np.float32)},
    )
    for model in (conv1d, conv3d):
        layers, axes = conv_layers(OnnxGraph(model))
        assert [(layer.id, layer.activation, layer.channels) for layer in layers] == [("c", "relu", 8)]
        assert axes == {"out": 1}


# --------------------------------------------------------------------------- weights through constant subgraphs


def _weight_graph(nodes: str, extra: dict[str, np.ndarray]) -> onnx.ModelProto:
    return onnx_model(
        graph(f"{nodes}\n[c] c = Conv {PAD} (image, w, b)\nout = Relu (c)"), {"b": np.zeros(8, np.float32), **extra}
    )


WEIGHT = conv_initializers("x", 8, 3)["x_w"]
QUANTISED = np.clip(np.round(WEIGHT / 0.01), -127, 127).astype(np.int8)
#: id -> (nodes computing ``w``, their initializers, the weight numpy computes from them)
WEIGHT_SUBGRAPHS = {
    "dequantize-per-channel": (
        "w = DequantizeLinear <axis = 0> (q, scale, zero)",
        {"q": QUANTISED, "scale": np.full(8, 0.01, np.float32), "zero": np.zeros(8, np.int8)},
        (QUANTISED.astype(np.float32) - 0) * np.float32(0.01),
    ),
    "cast-float16": (
        "w = Cast <to = 1> (half)",
        {"half": WEIGHT.astype(np.float16)},
        WEIGHT.astype(np.float16).astype(np.float32),
    ),
    "identity": ("w = Identity (stored)", {"stored": WEIGHT}, WEIGHT),
    "reshape-of-flat": (
        "w = Reshape (flat, shape)",
        {"flat": WEIGHT.reshape(-1), "shape": np.array([8, 3, 3, 3])},
        WEIGHT,
    ),
    "transpose-mul": (
        "t = Transpose <perm = [1, 0, 2, 3]> (swapped)\nw = Mul (t, two)",
        {"swapped": WEIGHT.transpose(1, 0, 2, 3).copy(), "two": np.float32(2.0)},
        WEIGHT * 2,
    ),
    "constant-of-shape": (
        "s = Constant <value = int64[4] {8, 3, 3, 3}> ()\nw = ConstantOfShape <value = float[1] {0.25}> (s)",
        {},
        np.full((8, 3, 3, 3), 0.25, np.float32),
    ),
}


@pytest.mark.parametrize("form", WEIGHT_SUBGRAPHS)
def test_weights_computed_from_constants_are_folded(form: str, tmp_path: Path) -> None:
    nodes, extra, expected = WEIGHT_SUBGRAPHS[form]
    model = _weight_graph(nodes, extra)
    onnx_graph = OnnxGraph(model)
    np.testing.assert_array_equal(onnx_graph.constant("w"), expected)
    assert [layer.channels for layer in conv_layers(onnx_graph)[0]] == [8]
    first = OnnxBackend(save_onnx(model, tmp_path / "model.onnx"), InputSpec()).first_conv()
    assert first is not None and first.layer_id == "c"
    np.testing.assert_allclose(first.weight, expected, rtol=1e-6)


def test_tensors_depending_on_the_input_are_not_constants() -> None:
    model = _weight_graph("w = Identity (stored)", {"stored": WEIGHT})
    onnx_graph = OnnxGraph(model)
    assert (
        onnx_graph.constant("c") is None and onnx_graph.constant("out") is None and onnx_graph.constant("image") is None
    )


# --------------------------------------------------------------------------- the first conv on the external input


def _focus_model(kind: str) -> onnx.ModelProto:
    """YOLOv5's Focus (four step-2 Slices and a Concat) or SpaceToDepth, then a 12-channel conv."""
    if kind == "slices":
        slices = "\n".join(
            f"s{i} = Slice (image, start{dy}{dx}, ends, axes, steps)"
            for i, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])
        )
        space = f"{slices}\nz = Concat <axis = 1> (s0, s1, s2, s3)"
    else:
        space = "z = SpaceToDepth <blocksize = 2> (image)"
    body = f"{space}\n[focus] c = Conv {PAD} (z, c_w, c_b)\nout = Relu (c)"
    constants = {f"start{dy}{dx}": np.array([dy, dx]) for dy in (0, 1) for dx in (0, 1)}
    constants |= {"ends": np.array([2**62, 2**62]), "axes": np.array([2, 3]), "steps": np.array([2, 2])}
    text = graph(body, output="float[N, 8, 8, 8] out")
    return onnx_model(text, {**conv_initializers("c", 8, 12), **{k: v for k, v in constants.items() if k in text}})


def _space_to_depth_reference(image: np.ndarray, kind: str) -> np.ndarray:
    """(C*4, H/2, W/2) of a (C, H, W) image, the way each graph arranges the channels."""
    if kind == "slices":
        return np.concatenate([image[:, dy::2, dx::2] for dy, dx in [(0, 0), (1, 0), (0, 1), (1, 1)]])
    channels, height, width = image.shape
    blocks = image.reshape(channels, height // 2, 2, width // 2, 2)
    return blocks.transpose(2, 4, 0, 1, 3).reshape(channels * 4, height // 2, width // 2)


def _valid_conv(image: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    out, _, kh, kw = weight.shape
    rows = (image.shape[1] - kh) // stride + 1
    cols = (image.shape[2] - kw) // stride + 1
    result = np.zeros((out, rows, cols))
    for i in range(rows):
        for j in range(cols):
            patch = image[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            result[:, i, j] = np.tensordot(weight, patch, axes=3)
    return result


@pytest.mark.parametrize("kind", ["slices", "space_to_depth"])
def test_space_to_depth_first_conv_is_unfolded_to_rgb(kind: str, tmp_path: Path) -> None:
    """The unfolded (8, 3, 6, 6) filters at stride 2 on the image equal the 12-channel conv on the
    rearranged image: checked on a random image, without padding, in float64."""
    model = _focus_model(kind)
    first = OnnxBackend(save_onnx(model, tmp_path / "focus.onnx"), InputSpec()).first_conv()
    assert first is not None and first.layer_id == "focus" and first.weight.shape == (8, 3, 6, 6)
    image = np.random.default_rng(0).random((3, 16, 16))
    weight = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "c_w")).astype(np.float64)
    expected = _valid_conv(_space_to_depth_reference(image, kind), weight, stride=1)
    unfolded = _valid_conv(image, first.weight.astype(np.float64), stride=2)
    np.testing.assert_allclose(unfolded[:, : expected.shape[1], : expected.shape[2]], expected, rtol=1e-5, atol=1e-6)


def test_space_to_depth_first_conv_gets_a_colour_verdict(tmp_path: Path) -> None:
    path = save_onnx(_focus_model("slices"), tmp_path / "focus.onnx")
    config = parse_config(
        "probe: {count: 4, batch_size: 4}\nchecks: {color: {first_layer: {expect: sensitive}}}",
        str(tmp_path / "c.yaml"),
    )
    verdict = next(
        v for v in audit_model(path, config, ModelSpec(path=str(path))).verdicts if v.item_id == "color[focus]"
    )
    assert verdict.outcome in ("passed", "failed") and "grouped" not in verdict.message


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
NORMALISATIONS = {
    "sub-div NCHW": (
        "float[N, 3, 16, 16] image",
        "n = Sub (image, mean)\nx = Div (n, std)",
        {"mean": MEAN.reshape(1, 3, 1, 1), "std": STD.reshape(1, 3, 1, 1)},
    ),
    "sub-mul NCHW": (
        "float[N, 3, 16, 16] image",
        "n = Sub (image, mean)\nx = Mul (n, inv)",
        {"mean": MEAN.reshape(3, 1, 1), "inv": (1 / STD).reshape(3, 1, 1)},
    ),
    "sub-div NHWC, then transpose": (
        "float[N, 16, 16, 3] image",
        "n = Sub (image, mean)\nd = Div (n, std)\nx = Transpose <perm = [0, 3, 1, 2]> (d)",
        {"mean": MEAN, "std": STD},
    ),
    "bgr slice step -1": (
        "float[N, 3, 16, 16] image",
        "x = Slice (image, first, last, channel_axis, back)",
        {"first": np.array([2]), "last": np.array([-(2**62)]), "channel_axis": np.array([1]), "back": np.array([-1])},
    ),
    "bgr gather": ("float[N, 3, 16, 16] image", "x = Gather <axis = 1> (image, order)", {"order": np.array([2, 1, 0])}),
}


@pytest.mark.parametrize("form", NORMALISATIONS)
def test_in_graph_normalisation_is_folded_into_the_first_conv(form: str, tmp_path: Path) -> None:
    """The folded weights applied to the raw input give the conv's output on the normalised input,
    up to a per-channel constant (the mean moves only the bias)."""
    image, prelude, constants = NORMALISATIONS[form]
    weights = conv_initializers("c", 8, 3)
    model = onnx_model(
        graph(f"{prelude}\n[c] c = Conv (x, c_w, c_b)\nout = Relu (c)", image, "float[N, 8, 14, 14] out"),
        {**weights, **constants},
    )
    backend = OnnxBackend(save_onnx(model, tmp_path / "model.onnx"), InputSpec())
    first = backend.first_conv()
    assert first is not None and first.weight.shape == (8, 3, 3, 3)
    layout = backend.input_spec.layout
    raw = probe_inputs(2, layout)
    (conv,) = run_exposing(model, ["c"], raw)
    nchw = raw if layout == "NCHW" else raw.transpose(0, 3, 1, 2)
    folded = np.stack([_valid_conv(x.astype(np.float64), first.weight.astype(np.float64), 1) for x in nchw])
    difference = conv - folded
    np.testing.assert_allclose(difference, difference[:, :, :1, :1].repeat(14, 2).repeat(14, 3), atol=2e-4)
    if "sub" in form:
        assert not np.allclose(first.weight, weights["c_w"])  # something was folded


def test_planted_dead_channels_of_a_focus_network(tmp_path: Path) -> None:
    model = _focus_model("slices")
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    assert model.graph.initializer[0].name == "c_w" and w.shape == (8, 12, 3, 3)
    planted = planted_conv("c", 8, 12, PLANTED)
    for initializer in model.graph.initializer:
        if initializer.name in planted:
            initializer.CopyFrom(onnx.numpy_helper.from_array(planted[initializer.name], initializer.name))
    _, stats = measured(save_onnx(model, tmp_path / "focus.onnx"))
    (relu,) = run_exposing(model, ["out"], probe_inputs())
    assert stats["out"].dead_channels == inactive_reference(relu)[0] == PLANTED
