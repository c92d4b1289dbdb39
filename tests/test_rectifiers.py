"""Every rectifier in every exported form, measured with one definition: inactive where the output is <= 0.

Each model is one conv with channels 2 and 5 planted dead (zero weights, bias -50) and one
activation form after it. The reference is independent of the audit: onnxruntime runs the
model with the activation's output exposed by name, and numpy counts its values <= 0 on the
same probe images; the backend must find that tensor itself and report the same counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelbuilders import PLANTED, conv_then, inactive_reference, measured, probe_inputs, run_exposing, save_onnx

from pytest_cnnaudit.backends.base import RECTIFIERS, SATURATING
from pytest_cnnaudit.backends.onnx.graph import OnnxGraph, conv_layers
from pytest_cnnaudit.config import ModelSpec, parse_config
from pytest_cnnaudit.engine.audit import audit_model

SQRT2 = np.float32(np.sqrt(2.0))
SCALARS = {
    "one": np.float32(1.0),
    "half": np.float32(0.5),
    "three": np.float32(3.0),
    "sqrt2": SQRT2,
    "inv_sqrt2": np.float32(1 / np.sqrt(2.0)),
    "cubic": np.float32(0.044715),
    "sqrt_2_pi": np.float32(np.sqrt(2 / np.pi)),
    "slope": np.full((8, 1, 1), 0.25, np.float32),
    "beta": np.float32(1.0),
}

#: id -> (body reading ``c`` and writing ``out``, opset, activation kind the backend must report)
RECTIFIER_FORMS = {
    "relu": ("out = Relu (c)", 17, "relu"),
    "relu6-clip": (
        "lo = Constant <value = float {0.0}> ()\nhi = Constant <value = float {6.0}> ()\nout = Clip (c, lo, hi)",
        17,
        "relu6",
    ),
    "hardswish-op": ("out = HardSwish (c)", 17, "hardswish"),
    "silu-x*sigmoid": ("g = Sigmoid (c)\nout = Mul (c, g)", 17, "silu"),
    "swish-x*sigmoid(beta*x) (paddle2onnx)": ("b = Mul (c, beta)\ng = Sigmoid (b)\nout = Mul (c, g)", 17, "silu"),
    "gelu-op": ("out = Gelu (c)", 20, "gelu"),
    "gelu-op-tanh": ('out = Gelu <approximate = "tanh"> (c)', 20, "gelu"),
    "gelu-erf-div": (
        "d = Div (c, sqrt2)\ne = Erf (d)\na = Add (e, one)\nm = Mul (c, a)\nout = Mul (m, half)",
        17,
        "gelu",
    ),
    "gelu-erf-mul-half-first": (
        "d = Mul (c, inv_sqrt2)\ne = Erf (d)\na = Add (one, e)\nh = Mul (a, half)\nout = Mul (h, c)",
        17,
        "gelu",
    ),
    "gelu-erf-half-x": (
        "h = Mul (c, half)\nd = Div (c, sqrt2)\ne = Erf (d)\na = Add (e, one)\nout = Mul (h, a)",
        17,
        "gelu",
    ),
    "gelu-tanh-pow": (
        "p = Pow (c, three)\nq = Mul (p, cubic)\ns = Add (c, q)\nt = Mul (s, sqrt_2_pi)\nth = Tanh (t)\n"
        "a = Add (th, one)\nh = Mul (c, half)\nout = Mul (h, a)",
        17,
        "gelu",
    ),
    "gelu-tanh-mul": (
        "x2 = Mul (c, c)\nx3 = Mul (x2, c)\nq = Mul (cubic, x3)\ns = Add (c, q)\nt = Mul (sqrt_2_pi, s)\n"
        "th = Tanh (t)\na = Add (one, th)\nm = Mul (c, a)\nout = Mul (m, half)",
        17,
        "gelu",
    ),
    "mish-op": ("out = Mish (c)", 18, "mish"),
    "mish-x*tanh(softplus)": ("sp = Softplus (c)\nth = Tanh (sp)\nout = Mul (th, c)", 17, "mish"),
    "elu": ("out = Elu <alpha = 1.0> (c)", 17, "elu"),
    "selu": ("out = Selu (c)", 17, "selu"),
    "celu": ("out = Celu <alpha = 0.5> (c)", 17, "celu"),
    "leaky_relu": ("out = LeakyRelu <alpha = 0.1> (c)", 17, "leaky_relu"),
    "prelu": ("out = PRelu (c, slope)", 17, "prelu"),
    "thresholded_relu": ("out = ThresholdedRelu <alpha = 0.02> (c)", 17, "thresholded_relu"),
}


def rectifier_model(form: str):
    body, opset, _ = RECTIFIER_FORMS[form]
    return conv_then(
        body, opset, {name: value for name, value in SCALARS.items() if f"{name})" in body or f"{name}," in body}
    )


@pytest.mark.parametrize("form", RECTIFIER_FORMS)
def test_rectifier_form_measured_at_its_output(form: str, tmp_path: Path) -> None:
    model = rectifier_model(form)
    layers, _ = conv_layers(OnnxGraph(model))
    assert [(layer.activation, layer.tensor) for layer in layers] == [(RECTIFIER_FORMS[form][2], "out")]
    assert layers[0].activation in RECTIFIERS and layers[0].definition == "output <= zero_eps"
    _, stats = measured(save_onnx(model, tmp_path / "model.onnx"))
    (activation,) = run_exposing(model, ["out"], probe_inputs())
    dead, sparsity = inactive_reference(activation)
    assert dead == PLANTED
    assert stats["out"].dead_channels == dead
    assert stats["out"].sparsity == sparsity  # the same counts, not approximately
    assert 0.2 < sparsity < 0.8  # the live channels have both active and inactive units


#: Activations after which nothing is measured, with the words their skip reason must hold.
NOT_RECTIFIERS = {
    "sigmoid": ("out = Sigmoid (c)", {}, "saturates"),
    "tanh": ("out = Tanh (c)", {}, "saturates"),
    "hard_sigmoid": ("out = HardSigmoid (c)", {}, "saturates"),
    "softplus": ("out = Softplus (c)", {}, "saturates"),
    "softmax": ("out = Softmax <axis = 1> (c)", {}, "saturates"),
    "leaky_relu(negative alpha)": ("out = LeakyRelu <alpha = -0.1> (c)", {}, "not a rectifier"),
}


@pytest.mark.parametrize("kind", NOT_RECTIFIERS)
def test_saturating_and_sign_flipping_activations_are_not_judged(kind: str, tmp_path: Path) -> None:
    body, extra, words = NOT_RECTIFIERS[kind]
    path = save_onnx(conv_then(body, 17, extra), tmp_path / "model.onnx")
    config = parse_config(
        "probe: {count: 4, batch_size: 4}\nchecks: {color: {enabled: false}}", str(tmp_path / "c.yaml")
    )
    result = audit_model(path, config, ModelSpec(path=str(path)))
    (layer,) = result.layers
    assert layer.activation == kind and (kind in SATURATING) == (words == "saturates")
    verdicts = [v for v in result.verdicts if v.check in ("sparsity", "dead_filters") and v.layer is not None]
    assert [v.outcome for v in verdicts] == ["skipped", "skipped"]
    assert all(words in v.message and kind in v.message for v in verdicts)
    # The model's only layer cannot be measured: each check's model item fails (nothing measured is no pass).
    model_items = [v for v in result.verdicts if v.layer is None and v.check in ("sparsity", "dead_filters")]
    assert [(v.outcome, "allow_unmeasured: true" in v.message) for v in model_items] == [("failed", True)] * 2


def test_prelu_with_negative_slopes_is_measured_before_the_activation(tmp_path: Path) -> None:
    """Trained PReLUs (MTCNN) have negative slopes on many channels: their output is > 0 on both sides of 0
    there, so the layer is measured on its pre-activation, where <= 0 is inactive for every channel."""
    slope = np.array([0.25, -0.1, 0.25, -0.6, 0.25, 0.25, 0.25, 0.25], np.float32).reshape(8, 1, 1)
    model = conv_then("out = PRelu (c, slope)", 17, {"slope": slope})
    layers, _ = conv_layers(OnnxGraph(model))
    assert [(layer.activation, layer.tensor) for layer in layers] == [("prelu", "c")]
    assert layers[0].definition is not None and layers[0].definition.startswith("pre-activation <= zero_eps")
    _, stats = measured(save_onnx(model, tmp_path / "model.onnx"))
    (pre_activation,) = run_exposing(model, ["c"], probe_inputs())
    dead, sparsity = inactive_reference(pre_activation)
    assert dead == PLANTED  # the planted channels (2, 5), next to live channels with negative slopes (1, 3)
    assert stats["c"].dead_channels == dead and stats["c"].sparsity == sparsity


def test_relu_counts_are_the_exact_zero_counts(tmp_path: Path) -> None:
    """For ReLU the definition is the one the audit always had: output == 0, bit for bit."""
    model = rectifier_model("relu")
    _, stats = measured(save_onnx(model, tmp_path / "model.onnx"))
    (activation,) = run_exposing(model, ["out"], probe_inputs())
    zeros = (activation == 0).sum(axis=(0, 2, 3))
    np.testing.assert_array_equal(stats["out"].inactive, zeros)


def test_zero_eps_moves_the_threshold(tmp_path: Path) -> None:
    """With zero_eps > 0 a unit counts as inactive at or below it (GELU's small positive outputs, say)."""
    model = rectifier_model("gelu-erf-div")
    _, stats = measured(save_onnx(model, tmp_path / "model.onnx"), zero_eps=0.05)
    (activation,) = run_exposing(model, ["out"], probe_inputs())
    np.testing.assert_array_equal(stats["out"].inactive, (activation <= np.float32(0.05)).sum(axis=(0, 2, 3)))
