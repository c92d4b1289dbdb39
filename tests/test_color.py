"""Colour sensitivity: opponent decomposition, normalisation folding, CSI, verdicts, items.

Models are built here with planted first-layer weights whose colour use is known by
construction: equal R, G, B weights see only intensity; R-minus-G filters see only colour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from modelbuilders import conv_bias, conv_weight
from torch import nn

from pytest_cnnaudit.checks.color.measures import (
    GRAY_INPUT_REASON,
    OPPONENT_BASIS,
    chromatic_fraction,
    colour_selectivity,
    effective_rgb_weights,
    opponent_energy,
)
from pytest_cnnaudit.checks.color.verdicts import check_first_layer
from pytest_cnnaudit.config import FirstLayerColor, InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.document import ColorProfileLayer, ModelDocument, Verdict
from pytest_cnnaudit.document.json_form import to_json_value
from pytest_cnnaudit.engine.audit import audit_model
from pytest_cnnaudit.engine.planning import open_model, planned_items

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")

SIZE = 32
EXAMPLES = Path(__file__).resolve().parent.parent / "example_models"
#: ImageNet normalisation on the 0-255 scale, RGB order.
MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)


# --------------------------------------------------------------------------- models with planted first layers


class ColourNet(nn.Module):
    """conv1 (3->8, 3x3, no padding) + ReLU, conv2 (8->8) + ReLU, global average pool, linear.

    conv1 has no padding so that a model folding mean/std into its weights computes
    exactly what its [0, 1] twin computes, borders included. ``channels_last`` models
    take NHWC input.
    """

    def __init__(self, first_weight: np.ndarray, first_bias: np.ndarray | None = None, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.conv1 = nn.Conv2d(first_weight.shape[1], 8, 3)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.from_numpy(np.ascontiguousarray(first_weight, dtype=np.float32)))
            self.conv1.bias.copy_(torch.from_numpy(conv_bias(8) if first_bias is None else first_bias))
            self.conv2.weight.copy_(torch.from_numpy(conv_weight(8, 8, seed=1)))
            self.conv2.bias.copy_(torch.from_numpy(conv_bias(8, seed=1)))
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)
        x = self.relu2(self.conv2(self.relu1(self.conv1(image))))
        return self.head(x.mean(dim=(2, 3)))


def equal_rgb() -> np.ndarray:
    """Each filter applies one zero-mean edge detector to R, G and B alike: it sees R+G+B only."""
    return np.repeat(conv_weight(8, 1, seed=2), 3, axis=1)


def red_minus_green() -> np.ndarray:
    """Each filter applies an edge detector to R minus G and ignores B: a red-green opponent filter."""
    base = conv_weight(8, 1, seed=3)[:, 0]
    return np.stack([base, -base, np.zeros_like(base)], axis=1)


def mixed() -> np.ndarray:
    """Unstructured random filters on R, G, B."""
    return conv_weight(8, 3, seed=4)


def export(net: ColourNet, path: Path, **options: Any) -> Path:
    """ONNX with a dynamic batch; Conv nodes renamed to their module names (conv1, conv2).

    ``options`` go to ``torch.onnx.export`` (``do_constant_folding=False`` keeps BatchNorm apart).
    """
    shape = (1, SIZE, SIZE, 3) if net.channels_last else (1, 3, SIZE, SIZE)
    torch.onnx.export(
        net,
        (torch.zeros(shape),),
        str(path),
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
        dynamo=False,
        **options,
    )
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Conv":
            node.name = node.name.strip("/").split("/")[0]
    onnx.save(model, str(path))
    return path


def run(model: ColourNet | Path, yaml: str = "", **input_fields: Any) -> ModelDocument:
    """Audit a module or an ONNX file with 16 probe images and the given config and input fields."""
    config = parse_config("probe: {count: 16}\n" + yaml)
    size = (SIZE, SIZE) if isinstance(model, nn.Module) else None
    spec = ModelSpec(path=str(model) if isinstance(model, Path) else "net", input=InputSpec(size=size, **input_fields))
    return audit_model(model, config, spec)


def colour(audit: ModelDocument, layer: str = "conv1") -> Verdict:
    return next(v for v in audit.verdicts if v.check == "color" and v.layer == layer)


def profile(audit: ModelDocument, layer: str = "conv1") -> ColorProfileLayer:
    assert audit.color_profile is not None
    return next(entry for entry in audit.color_profile.layers if entry.id == layer)


def numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a nested figures/profile structure, by its path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}.{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{prefix}[{i}]").items()}
    return {prefix: float(value)} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def assert_same_colour_figures(one: ModelDocument, other: ModelDocument) -> None:
    assert [(v.item_id, v.outcome, v.message) for v in one.verdicts if v.check == "color"] == [
        (v.item_id, v.outcome, v.message) for v in other.verdicts if v.check == "color"
    ]
    first, second = numbers(to_json_value(one.color_profile)), numbers(to_json_value(other.color_profile))
    assert first.keys() == second.keys()
    assert first == pytest.approx(second, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- pure numpy


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.just(3), st.integers(1, 4), st.integers(1, 4)),
        elements=st.floats(-10, 10),
    )
)
def test_opponent_decomposition_is_orthonormal_and_keeps_the_energy(weight: np.ndarray) -> None:
    np.testing.assert_allclose(OPPONENT_BASIS @ OPPONENT_BASIS.T, np.eye(3), atol=1e-12)
    energy = opponent_energy(weight)
    np.testing.assert_allclose(energy.sum(axis=1), np.square(weight).sum(axis=(1, 2, 3)), rtol=1e-9, atol=1e-9)
    fraction = chromatic_fraction(energy)
    assert np.all((fraction >= 0) & (fraction <= 1 + 1e-12))
    # A BGR model with reversed input channels has the same effective RGB weights.
    bgr = InputSpec(channels="BGR", scale=1, std=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(effective_rgb_weights(weight[:, ::-1], bgr), weight)


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 8), st.integers(1, 5)),
        # Activations of 0 or well above float32's subnormal range, where gray = colour * scale is exact enough.
        elements=st.one_of(st.just(0.0), st.floats(0.0010000000474974513, 10, width=32)),
    ),
    st.floats(0, 2),
)
def test_csi_lies_in_the_unit_interval_and_is_undefined_without_response(colour: np.ndarray, gray_scale: float) -> None:
    gray = colour * np.float32(gray_scale)
    csi = colour_selectivity(colour, gray)
    silent = colour.sum(axis=0) == 0
    assert np.all(np.isnan(csi[silent]))
    defined = csi[~silent]
    assert np.all((defined >= 0) & (defined <= 1))
    np.testing.assert_allclose(defined, np.clip(1 - gray_scale, 0, 1), atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=40),
    st.sampled_from(["sensitive", "invariant", None]),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_first_layer_verdict_agrees_with_its_limits(
    fractions: list[float], expect: str | None, minimum: float, share: float
) -> None:
    limits = FirstLayerColor(expect=expect, min_selective_fraction=minimum, max_sensitivity=0.05)
    verdict = check_first_layer("conv1", np.array(fractions), share, limits)
    selective = sum(f > limits.csi_threshold for f in fractions) / len(fractions)
    failed = {"sensitive": selective < minimum, "invariant": share > 0.05, None: False}[expect]
    assert verdict.outcome == ("failed" if failed else "passed")
    assert verdict.figures.selective_fraction == pytest.approx(selective)


# --------------------------------------------------------------------------- planted models


def test_equal_channel_weights_are_colour_blind() -> None:
    blind = ColourNet(equal_rgb())
    audit = run(blind)
    verdict = colour(audit)
    assert verdict.outcome == "passed" and verdict.figures.chromatic_share == pytest.approx(0, abs=1e-12)
    assert verdict.figures.selective_count == 0
    assert profile(audit).csi_median < 0.02
    assert colour(run(blind, "checks: {color: {first_layer: {expect: invariant}}}")).outcome == "passed"
    sensitive = colour(run(blind, "checks: {color: {first_layer: {expect: sensitive}}}"))
    assert sensitive.outcome == "failed"
    assert sensitive.message.startswith("0 of 8 filters colour-tuned (0.0%) < min 20%")


def test_red_minus_green_filters_are_colour_sensitive() -> None:
    opponent = ColourNet(red_minus_green())
    sensitive = colour(run(opponent, "checks: {color: {first_layer: {expect: sensitive}}}"))
    assert sensitive.outcome == "passed", sensitive.message
    assert sensitive.figures.selective_count == 8 and sensitive.figures.chromatic_share == pytest.approx(1)
    assert sensitive.figures.csi_median > 0.9  # the gray twin has R == G: these filters see nothing in it
    invariant = colour(run(opponent, "checks: {color: {first_layer: {expect: invariant}}}"))
    assert invariant.outcome == "failed"
    assert invariant.message.startswith("chromatic energy share 1.000 > max_sensitivity 0.05")


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_rgb_model_and_its_bgr_twin_get_the_same_figures(backend: str, tmp_path: Path) -> None:
    rgb, bgr = ColourNet(mixed()), ColourNet(mixed()[:, ::-1])
    if backend == "onnx":
        rgb, bgr = export(rgb, tmp_path / "rgb.onnx"), export(bgr, tmp_path / "bgr.onnx")
    yaml = "checks: {color: {first_layer: {expect: sensitive}, layers: [{match: '*'}]}}"
    assert_same_colour_figures(run(rgb, yaml), run(bgr, yaml, channels="BGR"))


def test_nhwc_bgr_twin_gets_the_same_figures_as_nchw_rgb(tmp_path: Path) -> None:
    nchw = export(ColourNet(mixed()), tmp_path / "nchw.onnx")
    nhwc = export(ColourNet(mixed()[:, ::-1], channels_last=True), tmp_path / "nhwc.onnx")
    twin = run(nhwc, channels="BGR")
    assert twin.input.layout == "NHWC"
    assert_same_colour_figures(run(nchw), twin)


class NormedColourNet(ColourNet):
    """ColourNet with a BatchNorm after conv1 whose scales differ strongly between filters."""

    def __init__(self, first_weight: np.ndarray):
        super().__init__(first_weight)
        self.bn1 = nn.BatchNorm2d(8)
        with torch.no_grad():
            self.bn1.weight.copy_(torch.linspace(0.2, 3.0, 8))
            self.bn1.running_var.copy_(torch.linspace(4.0, 0.5, 8))
            self.bn1.running_mean.copy_(torch.linspace(-0.5, 0.5, 8))
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(image)))))
        return self.head(x.mean(dim=(2, 3)))


def test_batch_norm_after_the_first_conv_counts_whether_or_not_it_is_folded(tmp_path: Path) -> None:
    """Exporters fold BatchNorm into conv1 or keep it; the torch graph keeps it: one set of figures."""
    net = NormedColourNet(mixed())
    folded = export(net, tmp_path / "folded.onnx")
    kept = export(net, tmp_path / "kept.onnx", do_constant_folding=False)
    assert "BatchNormalization" in [node.op_type for node in onnx.load(str(kept)).graph.node]
    reference = colour(run(folded)).figures.chromatic_share
    assert colour(run(kept)).figures.chromatic_share == pytest.approx(reference, abs=1e-6)
    assert colour(run(net)).figures.chromatic_share == pytest.approx(reference, abs=1e-6)
    # The BatchNorm scales matter here: without them conv1 alone has another energy share.
    assert colour(run(ColourNet(mixed()))).figures.chromatic_share != pytest.approx(reference, abs=1e-3)


def test_normalisation_folded_into_the_model_gives_the_same_figures() -> None:
    """A model on 0-255 input with ImageNet mean/std whose first conv undoes them == its [0, 1] twin."""
    weight, bias = mixed(), conv_bias(8)
    std, mean = np.array(STD_255), np.array(MEAN_255)
    folded_weight = weight * (std / 255.0)[None, :, None, None]
    folded_bias = bias + (weight * (mean / 255.0)[None, :, None, None]).sum(axis=(1, 2, 3))
    plain = run(ColourNet(weight, bias))
    folded = run(ColourNet(folded_weight, folded_bias.astype(np.float32)), scale=255, mean=MEAN_255, std=STD_255)
    assert_same_colour_figures(plain, folded)
    # Without the spec the folded model looks different: the check really reads mean/std.
    assert colour(run(ColourNet(folded_weight, folded_bias.astype(np.float32)))).figures != colour(plain).figures


def test_one_channel_input_is_skipped_with_the_reason() -> None:
    gray = ColourNet(conv_weight(8, 1, seed=2))
    config = parse_config("probe: {count: 4}")
    opened = open_model(gray, config, ModelSpec(path="gray", input=InputSpec(size=(SIZE, SIZE), channels="GRAY")))
    assert ("color", "conv1") in planned_items(opened.plan())
    audit = audit_model(gray, config, opened.spec)
    verdict = colour(audit)
    assert verdict.outcome == "skipped" and verdict.message == GRAY_INPUT_REASON
    assert audit.color_profile is None


def test_layer_bounds_add_items_judged_by_csi() -> None:
    yaml = "checks: {color: {layers: [{match: 'conv2', min_selective_fraction: 0.5}]}}"
    blind = run(ColourNet(equal_rgb()), yaml)
    assert [v.item_id for v in blind.verdicts if v.check == "color"] == ["color[conv1]", "color[conv2]"]
    failed = colour(blind, "conv2")
    assert failed.outcome == "failed"
    assert failed.message.startswith("0 of 8 channels CSI-selective (0.0%, CSI > 0.5; median CSI 0.0")
    assert failed.message.endswith("< min 50% (bound 'conv2')")
    assert colour(run(ColourNet(red_minus_green()), yaml), "conv2").outcome == "passed"


def test_a_bound_on_the_first_layer_is_judged_in_its_one_item() -> None:
    yaml = "checks: {color: {first_layer: {expect: sensitive}, layers: [{match: '*', max_selective_fraction: 0.1}]}}"
    audit = run(ColourNet(red_minus_green()), yaml)
    verdict = colour(audit)
    assert [v.item_id for v in audit.verdicts if v.check == "color"] == ["color[conv1]", "color[conv2]"]
    assert verdict.outcome == "failed" and "> max 10% (bound '*')" in verdict.message
    assert verdict.figures.selective_count == 8 and len(verdict.figures.bounds) == 1


def test_profile_covers_every_layer_and_is_plain_json() -> None:
    audit = run(ColourNet(mixed()))
    document = json.loads(json.dumps(audit.to_json()))
    colour_profile = document["color_profile"]
    assert [entry["id"] for entry in colour_profile["layers"]] == ["conv1", "conv2"]
    assert len(colour_profile["first_layer"]["chromatic_fraction"]) == 8
    for entry in colour_profile["layers"]:
        assert 0 <= entry["csi_median"] <= 1 and 0 <= entry["isoluminant_share"] <= 1
        assert len(entry["hue_response"]) == 8


def test_disabled_colour_check_plans_and_measures_nothing() -> None:
    audit = run(ColourNet(mixed()), "checks: {color: {enabled: false}}")
    assert not [v for v in audit.verdicts if v.check == "color"] and audit.color_profile is None


# --------------------------------------------------------------------------- example models


def test_hue_task_model_is_colour_sensitive() -> None:
    verdict = colour(run(EXAMPLES / "hue_task.onnx", "checks: {color: {first_layer: {expect: sensitive}}}"))
    assert verdict.outcome == "passed", verdict.message


def test_grayscale_model_is_colour_invariant() -> None:
    invariant = colour(run(EXAMPLES / "grayscale.onnx", "checks: {color: {first_layer: {expect: invariant}}}"))
    assert invariant.outcome == "passed", invariant.message
    sensitive = colour(run(EXAMPLES / "grayscale.onnx", "checks: {color: {first_layer: {expect: sensitive}}}"))
    assert sensitive.outcome == "failed"


# --------------------------------------------------------------------------- the plugin, end to end


def test_expect_invariant_fails_a_colour_model_end_to_end(pytester: pytest.Pytester) -> None:
    export(ColourNet(red_minus_green()), pytester.path / "opponent.onnx")
    pytester.makefile(
        ".yaml",
        cnnaudit="probe: {count: 8}\nruntime: {isolate: false}\nchecks:\n  color: {first_layer: {expect: invariant}}\n",
    )
    result = pytester.runpytest("--cnnaudit", "opponent.onnx", "--cnnaudit-config", "cnnaudit.yaml", "-p", "no:xdist")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*opponent.onnx :: color[[]conv1[]]: chromatic energy share 1.000 > max_sensitivity 0.05 "
            "(8 of 8 filters colour-tuned): the layer's filters weight red, green and blue unequally",
            "  colour  median CSI  CSI-selective  isoluminant",
            "  conv1        0.9*         100.0%        1.000",
        ]
    )
