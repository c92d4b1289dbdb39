"""The in-graph reductions (``backends/onnx/reductions.py``) against numpy on hand-made activations.

The activation is the model's input passed through a Relu-free ``Identity`` chain, so the test
writes every value the reductions see: zeros of both signs, subnormals, ``eps`` and its float
neighbours, huge values, NaN, maps past the float32 counting limits, every opset from 6 to 21.
The reference is :func:`numpy_reductions`, the numpy path, checked itself against plain numpy.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pytest_cnnaudit.backends.onnx.reductions import POOLED_COUNT_LIMIT, ReducedOutputs, add_reductions, indicator_gain
from pytest_cnnaudit.backends.onnx.shapes import TensorType, tensor_types
from pytest_cnnaudit.backends.reductions import PerImageReductions, numpy_reductions

TINY = np.float32(1.4e-45)  # the smallest subnormal float32
FORMS = {"pooled": True, "float64": False}


def passthrough_model(shape: list[int | str | None], opset: int, element: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """``a = Identity(x)`` measured, ``y = Identity(a)`` the output: the activation is the input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])],
        "passthrough",
        [helper.make_tensor_value_info("x", element, shape)],
        [helper.make_tensor_value_info("y", element, shape)],
    )
    ir = 3 if opset < 7 else 8
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def reduced(
    model: onnx.ModelProto, x: np.ndarray, eps: float, pooled: bool, channel_axis: int = 1, types: bool = True
) -> tuple[PerImageReductions, ReducedOutputs]:
    """The reductions of tensor ``a`` for input ``x``, through onnxruntime."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    outputs = add_reductions(copy, {"a": channel_axis}, eps, tensor_types(copy) if types else {}, pooled)
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(outputs["a"].names)
    return outputs["a"].read(dict(zip(names, session.run(names, {"x": x})))), outputs["a"]


def assert_same(got: PerImageReductions, want: PerImageReductions, sum_rtol: float) -> None:
    assert got.positions == want.positions
    np.testing.assert_array_equal(got.max, want.max)
    np.testing.assert_array_equal(got.active, want.active)
    np.testing.assert_allclose(got.sum, want.sum, rtol=sum_rtol, atol=sum_rtol * np.abs(want.sum).max())


def boundary_batch(eps: float, shape: tuple[int, ...] = (3, 4, 5, 7)) -> np.ndarray:
    """Values at and around ``eps``, zeros of both signs and subnormals, in every channel."""
    rng = np.random.default_rng(0)
    values = np.array(
        [
            0.0,
            -0.0,
            TINY,
            -TINY,
            2 * TINY,
            eps,
            np.nextafter(np.float32(eps), np.float32(1)),
            np.nextafter(np.float32(eps), np.float32(-1)),
            1.0,
            -2.5,
            1e30,  # large, yet 35 of them still sum within float32
        ],
        dtype=np.float32,
    )
    x = rng.choice(values, size=shape).astype(np.float32)
    x[0, 1] = 0.0  # a channel without an active value in one image
    return x


def test_numpy_reductions_are_numpys_own_figures() -> None:
    """The reference: per image and channel the maximum, the count above eps and the float64 sum."""
    x = boundary_batch(0.05)
    got = numpy_reductions(x, 1, 0.05)
    flat = x.reshape(3, 4, -1)
    np.testing.assert_array_equal(got.max, flat.max(axis=2))
    np.testing.assert_array_equal(got.active, (flat > np.float32(0.05)).sum(axis=2))
    np.testing.assert_allclose(got.sum, flat.astype(np.float64).sum(axis=2), rtol=1e-15)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.5])
def test_counts_and_maxima_match_numpy_at_the_boundaries(form: str, eps: float) -> None:
    x = boundary_batch(eps)
    got, outputs = reduced(passthrough_model(["N", 4, 5, 7], 17), x, eps, FORMS[form])
    assert outputs.pooled == FORMS[form]
    assert_same(got, numpy_reductions(x, 1, eps), 1e-6 if FORMS[form] else 1e-12)


@pytest.mark.parametrize("opset", [6, 7, 11, 12, 13, 17, 18, 21])
def test_every_opset_takes_the_reductions(opset: int) -> None:
    """Axes are an attribute before opset 13 (ReduceSum) or 18 (ReduceMax), an input after; opset 6 is
    converted to 7 (onnxruntime has no Greater-6)."""
    x = boundary_batch(0.0)
    for pooled in FORMS.values():
        got, _ = reduced(passthrough_model(["N", 4, 5, 7], opset), x, 0.0, pooled)
        assert_same(got, numpy_reductions(x, 1, 0.0), 1e-6)


def test_subnormal_activations_count_as_active_in_both_forms() -> None:
    """The pooled count turns any x > eps into 1 (two HardSigmoid steps with a power-of-two gain)."""
    x = np.full((1, 2, 3, 3), TINY, np.float32)
    x[0, 1] = -TINY
    for pooled in FORMS.values():
        got, _ = reduced(passthrough_model(["N", 2, 3, 3], 17), x, 0.0, pooled)
        assert got.active.tolist() == [[9, 0]]
    assert indicator_gain(0.0) == 2.0**127
    assert np.isfinite(np.float32(indicator_gain(1e6) * 1e6))


def test_maps_past_the_pooled_limit_take_the_float64_form_and_count_exactly() -> None:
    """2**22 positions and more: a count recovered from a float32 mean is no longer exact."""
    side = 2049  # 2049**2 > 2**22
    x = np.ones((1, 1, side, side), np.float32)
    x[0, 0, 0, :7] = 0.0
    got, outputs = reduced(passthrough_model(["N", 1, side, side], 17), x, 0.0, pooled=True)
    assert side * side >= POOLED_COUNT_LIMIT and not outputs.pooled
    assert got.active[0, 0] == side * side - 7


def test_a_map_of_more_than_2_to_the_24_positions_is_counted_in_int32() -> None:
    """float32 partial sums stop being exact integers at 2**24 (measured: 24999992 for 24999993)."""
    x = np.ones((1, 1, 4100, 4100), np.float32)
    x[0, 0, 0, :7] = 0.0
    got, _ = reduced(passthrough_model(["N", 1, 4100, 4100], 17), x, 0.0, pooled=True)
    assert got.active[0, 0] == 4100 * 4100 - 7


def test_channels_last_and_unknown_shapes_take_the_float64_form() -> None:
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(2, 5, 6, 3)), 0).astype(np.float32)  # NHWC, channels last
    got, outputs = reduced(passthrough_model(["N", 5, 6, 3], 17), x, 0.0, pooled=True, channel_axis=3)
    assert not outputs.pooled
    assert_same(got, numpy_reductions(x, 3, 0.0), 1e-12)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    got, outputs = reduced(passthrough_model(["N", 3, "H", "W"], 17), nchw, 0.0, pooled=True)
    assert not outputs.pooled and outputs.positions is None and outputs.shape is not None  # read per batch
    assert_same(got, numpy_reductions(nchw, 1, 0.0), 1e-12)
    got, outputs = reduced(passthrough_model(["N", 3, 5, 6], 17), nchw, 0.0, pooled=True, types=False)  # rank unknown
    assert outputs.shape is not None
    assert_same(got, numpy_reductions(nchw, 1, 0.0), 1e-12)


def test_float16_and_float64_activations_are_compared_in_their_own_precision() -> None:
    """eps rounded to the activation's type, as numpy compares them; maxima in that type."""
    rng = np.random.default_rng(2)
    for element, dtype in ((TensorProto.FLOAT16, np.float16), (TensorProto.DOUBLE, np.float64)):
        x = rng.normal(0.0, 0.1, (2, 3, 4, 4)).astype(dtype)
        x[0, 0, 0, :3] = dtype(0.1)  # eps itself, rounded to the type: inactive
        model = passthrough_model(["N", 3, 4, 4], 17, element)
        got, outputs = reduced(model, x, 0.1, pooled=True)
        assert not outputs.pooled and got.max.dtype == dtype
        assert_same(got, numpy_reductions(x, 1, 0.1), 1e-12)
        assert got.itemsize == np.dtype(dtype).itemsize


def test_nan_and_inf_reach_the_sum_in_both_forms() -> None:
    """onnxruntime's maximum skips NaN; the sum is where a non-finite activation shows."""
    x = np.ones((2, 2, 3, 3), np.float32)
    x[1, 0, 1, 1] = np.nan
    x[1, 1, 0, 0] = -np.inf
    for pooled in FORMS.values():
        got, _ = reduced(passthrough_model(["N", 2, 3, 3], 17), x, 0.0, pooled)
        assert np.isfinite(got.sum[0]).all() and not np.isfinite(got.sum[1]).any()


def test_a_measured_tensor_that_is_a_model_output_is_still_an_output() -> None:
    model = passthrough_model(["N", 2, 3, 3], 17)
    model.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2, 3, 3]))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    outputs = add_reductions(copy, {"a": 1}, 0.0, tensor_types(copy))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(36, dtype=np.float32).reshape(2, 2, 3, 3) - 10
    a, *values = session.run(["a", *outputs["a"].names], {"x": x})
    np.testing.assert_array_equal(a, x)
    assert_same(outputs["a"].read(dict(zip(outputs["a"].names, values))), numpy_reductions(x, 1, 0.0), 1e-6)


def test_tensor_types_know_shapes_and_element_types() -> None:
    types = tensor_types(passthrough_model(["N", 4, 5, 7], 17, TensorProto.FLOAT16))
    assert types["a"] == TensorType(TensorProto.FLOAT16, (None, 4, 5, 7))
    assert types["a"].positions(1) == 35 and types["a"].positions(3) == 20


@pytest.mark.parametrize("output", ["pooled", "a3"])
def test_each_layers_reductions_run_right_after_it(output: str, tmp_path: Path) -> None:
    """The reductions of a layer run before the next layer's Conv, so its activation is freed early (peak
    memory near a bare pass's), whether the model's output is a pooling of the last activation or that
    activation itself. onnxruntime's node order, not a contract: this pins it."""
    rng = np.random.default_rng(0)
    nodes, weights, previous, axes = [], [], "x", {}
    for layer in range(4):
        weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
        weights.append(onnx.numpy_helper.from_array(weight, f"w{layer}"))
        nodes += [
            helper.make_node("Conv", [previous, f"w{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{layer}"], [f"a{layer}"]),
        ]
        previous, axes[f"a{layer}"] = f"a{layer}", 1
    if output == "pooled":
        nodes.append(helper.make_node("GlobalAveragePool", [previous], ["pooled"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 32, 32])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for form, pooled in FORMS.items():
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        add_reductions(copy, axes, 0.0, tensor_types(copy), pooled)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp_path / f"{form}-{output}")
        session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((2, 16, 32, 32), np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds = [e["args"]["op_name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        convs = [i for i, kind in enumerate(kinds) if kind == "Conv"]
        for before, after in itertools.pairwise(convs):
            assert after - before > 2, (form, " ".join(kinds))  # reductions of ours between each pair of convs


def test_shape_inference_without_the_weights_types_every_tensor_as_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The light copy keeps what shape inference reads (dims, small constants) and shares nothing."""
    from modelbuilders import mixed_network

    from pytest_cnnaudit.backends.onnx import shapes
    from pytest_cnnaudit.backends.onnx.shapes import without_weights

    monkeypatch.setattr(shapes, "SHAPE_VALUES", 8)  # this small model's weights go as dims only
    model = mixed_network()
    assert any(np.prod(t.dims) > 8 for t in model.graph.initializer)
    assert all(
        not t.raw_data and not t.float_data for t in without_weights(model).graph.initializer if np.prod(t.dims) > 8
    )
    full = onnx.shape_inference.infer_shapes(model)
    expected = {
        info.name: TensorType(
            info.type.tensor_type.elem_type,
            tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in info.type.tensor_type.shape.dim
            ),
        )
        for info in [*full.graph.value_info, *full.graph.output, *full.graph.input]
    }
    assert tensor_types(model) == expected
    light = without_weights(model)
    light.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 7
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value != 7
