"""Default limits by activation family, configured family limits, and layers too pooled to judge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelbuilders import conv_initializers, onnx_model

from pytest_cnnaudit.checks.dead_filters import dead_allowance
from pytest_cnnaudit.checks.sparsity import sparsity_bounds
from pytest_cnnaudit.config import DeadFiltersCheck, FamilyDeadFilters, FamilySparsity, SparsityCheck, parse_config
from pytest_cnnaudit.config.families import DEFAULT_SPARSITY_BOUNDS, RECTIFIERS
from pytest_cnnaudit.config.inputs import InputSpec
from pytest_cnnaudit.document import SparsityFigures
from pytest_cnnaudit.engine.audit import audit_model
from pytest_cnnaudit.engine.probes import default_probe_set, to_model_input
from pytest_cnnaudit.errors import ConfigError


def test_sparsity_bounds_most_specific_setting_first() -> None:
    assert sparsity_bounds(SparsityCheck(), "relu") == DEFAULT_SPARSITY_BOUNDS == (0.03, 0.97)
    assert sparsity_bounds(SparsityCheck(), "hardswish") == (0.0, 0.99)  # the family's measured default
    assert sparsity_bounds(SparsityCheck(min=0.1), "hardswish") == (0.1, 0.99)  # a configured bound wins
    family = SparsityCheck(min=0.1, by_activation={"hardswish": FamilySparsity(min=0.2)})
    assert sparsity_bounds(family, "hardswish") == (0.2, 0.99) and sparsity_bounds(family, "relu") == (0.1, 0.97)


def test_dead_allowance_most_specific_setting_first() -> None:
    assert dead_allowance(DeadFiltersCheck(), "relu", 40) == (10, "max_fraction 0.25")
    assert dead_allowance(DeadFiltersCheck(), "gelu", 40) == (20, "max_fraction 0.5")
    assert dead_allowance(DeadFiltersCheck(max_fraction=0.1), "gelu", 40) == (4, "max_fraction 0.1")
    assert dead_allowance(DeadFiltersCheck(max_count=0), "hardswish", 40) == (0, "max_count 0")
    family = DeadFiltersCheck(max_count=0, by_activation={"silu": FamilyDeadFilters(max_fraction=0.5)})
    assert dead_allowance(family, "silu", 40) == (0, "max_count 0")  # a count (here the check's) beats a fraction
    family = DeadFiltersCheck(by_activation={"silu": FamilyDeadFilters(max_count=3)})
    assert dead_allowance(family, "silu", 40) == (3, "max_count 3") and dead_allowance(family, "relu", 40)[0] == 10


def test_by_activation_names_only_known_families() -> None:
    config = parse_config("checks:\n  sparsity:\n    by_activation: {silu: {min: 0.1, max: 0.9}}\n")
    assert config.checks.sparsity.by_activation == {"silu": FamilySparsity(0.1, 0.9)}
    with pytest.raises(
        ConfigError, match=r"<config>:3: checks.sparsity.by_activation.silo: unknown name 'silo'; did you mean 'silu'\?"
    ):
        parse_config("checks:\n  sparsity:\n    by_activation: {silo: {min: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"checks.dead_filters.by_activation.gelu.max_fraction: got 1.5"):
        parse_config("checks:\n  dead_filters:\n    by_activation: {gelu: {max_fraction: 1.5}}\n")
    assert set(RECTIFIERS) >= {"relu", "hardswish", "silu", "gelu", "prelu"}


def _hardswish_model(bias: np.ndarray) -> object:
    """conv (8 ch) -> HardSwish -> conv (8 ch, 1x1 map after a global pool) -> ReLU."""
    weights = conv_initializers("c1", 8, 3) | conv_initializers("c2", 8, 8, kernel=1, seed=1, dead=(3,))
    weights["c1_b"] = bias.astype(np.float32)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 16, 16] image) => (float[N, 8, 1, 1] out) {
        [conv1] a = Conv <pads = [1, 1, 1, 1]> (image, c1_w, c1_b)
        h = HardSwish (a)
        p = GlobalAveragePool (h)
        [squeeze] s = Conv (p, c2_w, c2_b)
        out = Relu (s)
    }
    """
    return onnx_model(text, weights)


def test_hardswish_default_and_a_pooled_layer_left_unjudged(tmp_path: Path) -> None:
    """A HardSwish layer biased low is mostly inactive (0.97 < sparsity < 0.99): within its family's default,
    out of ReLU's; the squeeze conv on a 1x1 map is not judged for dead filters unless asked."""
    import onnx
    import onnxruntime

    # Biases that leave 98% of each channel's values <= 0 on the probe images (found with onnxruntime).
    spec = InputSpec(size=(16, 16), layout="NCHW", channels="RGB", scale=1, mean=(0.0,) * 3, std=(1.0,) * 3)
    images = to_model_input(next(default_probe_set((16, 16), 16).batches(16)), spec)
    unbiased = _hardswish_model(np.zeros(8))
    unbiased.graph.output.append(onnx.ValueInfoProto(name="a"))
    session = onnxruntime.InferenceSession(unbiased.SerializeToString(), providers=["CPUExecutionProvider"])
    pre = session.run(["a"], {"image": images})[0]
    bias = -np.quantile(pre.transpose(1, 0, 2, 3).reshape(8, -1), 0.98, axis=1)
    path = tmp_path / "m.onnx"
    onnx.save(_hardswish_model(bias), str(path))
    default = audit_model(path, parse_config("probe: {count: 16}\nchecks: {color: {enabled: false}}"))
    verdicts = {v.item_id: v for v in default.verdicts}
    figures = verdicts["sparsity[conv1]"].figures
    assert isinstance(figures, SparsityFigures) and 0.97 < figures.sparsity < 0.99 and figures.max == 0.99
    assert verdicts["sparsity[conv1]"].outcome == "passed"
    squeeze = verdicts["dead_filters[squeeze]"]
    assert squeeze.outcome == "skipped" and "1 value(s) per image and channel" in squeeze.message
    strict = audit_model(
        path,
        parse_config(
            "probe: {count: 16}\nchecks:\n  color: {enabled: false}\n  sparsity: {by_activation: {hardswish: {max: 0.97}}}\n"
            "  dead_filters: {min_positions: 1, max_count: 0}\n"
        ),
    )
    verdicts = {v.item_id: v for v in strict.verdicts}
    assert verdicts["sparsity[conv1]"].outcome == "failed" and "> max 0.97" in verdicts["sparsity[conv1]"].message
    biased = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pooled = biased.run(["out"], {"image": images})[0]  # (16, 8, 1, 1): the squeeze conv's ReLU, per image
    reference = tuple(int(c) for c in np.flatnonzero((pooled <= 0).all(axis=(0, 2, 3))))
    squeeze = verdicts["dead_filters[squeeze]"]
    assert 3 in reference and squeeze.outcome == "failed" and squeeze.figures.dead_channels == reference
