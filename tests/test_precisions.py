"""One network in float32, float16, int8 QDQ, int8 QOperator and dynamically quantised (ConvInteger).

The network (:func:`modelbuilders.mixed_network`) has channels planted dead behind a ReLU
the quantiser folds after a conv and after a residual Add, and behind a SiLU. References are
onnxruntime outputs read with numpy: the float activations, the QDQ graph's dequantised
tensors, and the QOperator graph's integer outputs dequantised by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelbuilders import (
    MIXED_ACTIVATIONS,
    MIXED_LAYERS,
    inactive_reference,
    measured,
    mixed_network,
    onnx_model,
    planted_conv,
    probe_inputs,
    quantised,
    run_exposing,
    save_onnx,
    to_float16,
)
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.config import InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.document import ModelDocument
from pytest_cnnaudit.engine.audit import audit_model
from pytest_cnnaudit.errors import ModelError

#: How far sparsity moves with precision, measured on this network (8 probes; 32 give the same picture):
#: float16 vs float32 at most 2e-4. int8 vs float32: 0.0007 where the quantiser folded the ReLU into the
#: conv's own output quantisation (calibrated on [0, max]), but +0.26 and +0.23 where it quantised a
#: pre-activation tensor (conv2's output before the residual Add, conv3's before the SiLU): a channel
#: planted dead by bias -50 stretches that tensor's single int8 range to -50, so its step grows to ~0.2
#: and every smaller value rounds to zero. That is the int8 model's own behaviour (the QDQ and QOperator
#: tests below read it exactly), not a measuring error; the dead channels stay exact.
FLOAT16_TOLERANCE = 2e-3
FOLDED_RELU_TOLERANCE = 0.01
QDQ_VS_QOPERATOR_TOLERANCE = 0.005


@pytest.fixture(scope="module", autouse=True)
def quiet_quantiser() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantiser advises pre-processing on every call


@pytest.fixture(scope="module")
def precisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precisions")
    network = mixed_network()
    return {
        "float32": save_onnx(network, folder / "float32.onnx"),
        "float16": save_onnx(to_float16(network), folder / "float16.onnx"),
        "qdq": quantised(network, folder, "qdq", quant_format=QuantFormat.QDQ, per_channel=True),
        "qoperator": quantised(network, folder, "qoperator", quant_format=QuantFormat.QOperator, per_channel=True),
    }


def audited(path: Path) -> ModelDocument:
    config = parse_config(
        "probe: {count: 8, batch_size: 4}\nchecks: {color: {first_layer: {expect: sensitive}}}",
        str(path.parent / "cnnaudit.yaml"),
    )
    return audit_model(path, config, ModelSpec(path=str(path)))


@pytest.fixture(scope="module")
def float_reference() -> dict[str, tuple[tuple[int, ...], float]]:
    """(dead channels, sparsity) of each layer's float32 activation, from onnxruntime and numpy."""
    values = run_exposing(mixed_network(), list(MIXED_ACTIVATIONS.values()), probe_inputs())
    return {layer: inactive_reference(value) for layer, value in zip(MIXED_ACTIVATIONS, values)}


def test_the_same_network_in_four_precisions_reports_the_same(
    precisions: dict[str, Path], float_reference: dict[str, tuple[tuple[int, ...], float]]
) -> None:
    """Same layer ids and activations, the planted dead channels exactly, sparsity as close as the
    precision allows (see the tolerances above), and the same colour verdict from the first conv's
    weights read through their dequantisation."""
    audits = {name: audited(path) for name, path in precisions.items()}
    for name, audit in audits.items():
        assert [(layer.id, layer.activation) for layer in audit.layers] == [
            (layer, kind) for layer, (kind, _) in MIXED_LAYERS.items()
        ], name
        for layer in audit.layers[:3]:
            assert layer.dead_channels == float_reference[layer.id][0] == MIXED_LAYERS[layer.id][1], (name, layer.id)
    sparsity = {name: [layer.sparsity for layer in audit.layers[:3]] for name, audit in audits.items()}
    reference = [float_reference[layer][1] for layer in MIXED_ACTIVATIONS]
    np.testing.assert_allclose(sparsity["float32"], reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sparsity["float16"], reference, rtol=0, atol=FLOAT16_TOLERANCE)
    assert abs(sparsity["qdq"][0] - reference[0]) <= FOLDED_RELU_TOLERANCE
    np.testing.assert_allclose(sparsity["qoperator"], sparsity["qdq"], rtol=0, atol=QDQ_VS_QOPERATOR_TOLERANCE)
    weights = {name: OnnxBackend(path, InputSpec()).first_conv().weight for name, path in precisions.items()}  # type: ignore[union-attr]
    step = np.abs(weights["float32"]).max(axis=(1, 2, 3), keepdims=True) / 127  # per-channel int8 symmetric
    for name in ("qdq", "qoperator"):
        assert (np.abs(weights[name] - weights["float32"]) <= step / 2 + 1e-7).all(), name
    colour = {name: next(v for v in audit.verdicts if v.item_id == "color[conv1]") for name, audit in audits.items()}
    for name, verdict in colour.items():
        assert verdict.outcome == colour["float32"].outcome, name
        share = verdict.figures.selective_fraction
        assert share == pytest.approx(colour["float32"].figures.selective_fraction, abs=0.13), name  # 1 of 8


def test_float16_statistics_match_float16_activations(precisions: dict[str, Path]) -> None:
    """fp16 input is fed as fp16; the statistics are the float64 counts of the fp16 activations."""
    path = precisions["float16"]
    backend, stats = measured(path)
    assert backend.input_dtype == np.float16
    values = run_exposing(onnx.load(str(path)), list(MIXED_ACTIVATIONS.values()), probe_inputs().astype(np.float16))
    for layer, value in zip(MIXED_ACTIVATIONS, values):
        tensor = next(info.tensor for info in backend.layers if info.id == layer)
        assert value.dtype == np.float16
        dead, sparsity = inactive_reference(value)
        assert (stats[tensor].dead_channels, stats[tensor].sparsity) == (dead, sparsity), layer
        np.testing.assert_array_equal(stats[tensor].max, value.astype(np.float64).max(axis=(0, 2, 3)))


def _dequantized_after(model: onnx.ModelProto, tensor: str) -> str:
    """The output of the DequantizeLinear that reads the QuantizeLinear of ``tensor``."""
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return next(
        n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == quantize.output[0]
    )


@pytest.mark.parametrize("keep_relu", [False, True])
def test_qdq_measures_the_dequantised_activation(keep_relu: bool, tmp_path: Path) -> None:
    """onnxruntime folds a ReLU after a quantised op into the output's zero point unless told to keep it;
    either way the measured tensor is the dequantised activation the next layer reads."""
    path = quantised(
        mixed_network(),
        tmp_path,
        "qdq",
        quant_format=QuantFormat.QDQ,
        extra_options={"QDQKeepRemovableActivations": keep_relu},
    )
    model = onnx.load(str(path))
    assert ("Relu" in {n.op_type for n in model.graph.node}) == keep_relu
    backend, stats = measured(path)
    # Which float tensor each layer's output quantisation reads: the ReLU's, or the op the ReLU was folded into
    # (the quantiser renames that op's output to the ReLU's name).
    expected = {layer: _dequantized_after(model, tensor) for layer, tensor in MIXED_ACTIVATIONS.items()}
    values = run_exposing(model, list(expected.values()), probe_inputs())
    for info, value in zip(backend.layers, values):
        assert info.tensor == expected[info.id]
        assert info.definition is not None and info.definition.startswith("dequantised output <= zero_eps")
        assert ("folded" in info.definition) == (info.activation == "relu" and not keep_relu)
        dead, sparsity = inactive_reference(value)
        assert (stats[info.tensor].dead_channels, stats[info.tensor].sparsity) == (dead, sparsity), info.id
        assert dead == MIXED_LAYERS[info.id][1]


def test_qoperator_outputs_are_read_through_their_zero_point(precisions: dict[str, Path]) -> None:
    """QLinearConv/QLinearAdd/QLinearMul outputs are uint8 or int8: the reference dequantises them by hand,
    ``(q - zero_point) * scale``, so inactive means ``q <= zero_point``."""
    path = precisions["qoperator"]
    model = onnx.load(str(path))
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {n.output[0]: n for n in model.graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearMul"} <= {n.op_type for n in model.graph.node}
    assert [n.name for n in model.graph.node if n.op_type == "QLinearConv"] == [
        f"{layer}_quant" for layer in MIXED_LAYERS
    ]
    integers = {layer: f"{tensor}_quantized" for layer, tensor in {"conv1": "a1", "conv2": "s2", "conv3": "m3"}.items()}
    backend, stats = measured(path)
    assert [info.id for info in backend.layers] == list(MIXED_LAYERS)  # the quantiser's "_quant" suffix dropped
    values = run_exposing(model, list(integers.values()), probe_inputs())
    for info, value in zip(backend.layers, values):
        producer = producers[integers[info.id]]
        scale, zero_point = (stored[name] for name in producer.input[6:8])
        assert np.issubdtype(value.dtype, np.integer)
        dead, sparsity = inactive_reference((value.astype(np.float64) - zero_point) * scale)
        assert (stats[info.tensor].dead_channels, stats[info.tensor].sparsity) == (dead, sparsity), info.id
        assert dead == MIXED_LAYERS[info.id][1]


def test_conv_integer_layers_are_conv_layers(tmp_path: Path) -> None:
    """Dynamic quantisation: ConvInteger -> Cast -> Mul (scales) -> Add (bias) -> the float activation."""
    source = save_onnx(mixed_network(), tmp_path / "float.onnx")
    path = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(source), str(path), weight_type=QuantType.QUInt8)
    model = onnx.load(str(path))
    assert [n.name for n in model.graph.node if n.op_type == "ConvInteger"] == [
        f"{layer}_quant" for layer in MIXED_LAYERS
    ]
    backend, stats = measured(path)
    assert [(info.id, info.activation, info.channels) for info in backend.layers] == [
        ("conv1", "relu", 8),
        ("conv2", "relu", 8),
        ("conv3", "silu", 8),
        ("head", None, 6),
    ]
    values = run_exposing(model, list(MIXED_ACTIVATIONS.values()), probe_inputs())
    for info, value in zip(backend.layers, values):
        assert info.tensor == MIXED_ACTIVATIONS[info.id]
        assert stats[info.tensor].dead_channels == inactive_reference(value)[0] == MIXED_LAYERS[info.id][1]
    first = backend.first_conv()
    assert first is not None and first.weight.shape == (8, 3, 3, 3)


# --------------------------------------------------------------------------- input element types

CAST_INPUTS = {
    "float64": ("double[N, 3, 16, 16] image", "x = Cast <to = 1> (image)", {}),
    "uint8": ("uint8[N, 3, 16, 16] image", "f = Cast <to = 1> (image)\nx = Div (f, full)", {"full": np.float32(255.0)}),
}


def _typed_input_model(kind: str) -> onnx.ModelProto:
    image, prelude, extra = CAST_INPUTS[kind]
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    net ({image}) => (float[N, 8, 16, 16] out) {{
        {prelude}
        [c] c = Conv <pads = [1, 1, 1, 1]> (x, c_w, c_b)
        out = Relu (c)
    }}"""
    return onnx_model(text, {**planted_conv("c", 8, 3, (2, 5)), **extra})


@pytest.mark.parametrize("kind", CAST_INPUTS)
def test_probe_batches_are_cast_to_the_input_type(kind: str, tmp_path: Path) -> None:
    model = _typed_input_model(kind)
    path = save_onnx(model, tmp_path / f"{kind}.onnx")
    spec = {"scale": 255} if kind == "uint8" else {}
    backend, stats = measured(path, **spec)
    assert backend.input_dtype == np.dtype(kind)
    pixels = probe_inputs()
    reference_input = np.rint(pixels * 255).astype(np.uint8) if kind == "uint8" else pixels.astype(np.float64)
    (relu,) = run_exposing(model, ["out"], reference_input)
    dead, sparsity = inactive_reference(relu)
    assert (stats["out"].dead_channels, stats["out"].sparsity) == (dead, sparsity) and dead == (2, 5)


def test_uint8_input_needs_the_0_255_scale(tmp_path: Path) -> None:
    path = save_onnx(_typed_input_model("uint8"), tmp_path / "uint8.onnx")
    with pytest.raises(ModelError, match=r"uint8 pixels; set models\[\]\.input\.scale: 255"):
        OnnxBackend(path, InputSpec())
    first = OnnxBackend(path, InputSpec(scale=255)).first_conv()
    weight = numpy_helper.to_array(next(t for t in _typed_input_model("uint8").graph.initializer if t.name == "c_w"))
    assert first is not None
    np.testing.assert_allclose(first.weight, weight / 255.0, rtol=1e-6)  # the in-graph Div folded in
