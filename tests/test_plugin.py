"""End-to-end tests of the pytest plugin, run the way users run it (pytester)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from modelbuilders import save, two_conv_model

pytest_plugins = ["pytester"]

XDIST_MODES = {
    "xdist-active": ["-n", "2", "--dist", "loadgroup"],
    "xdist-inactive": ["-n", "0"],
    "xdist-disabled": ["-p", "no:xdist"],
}


#: Isolation is not what these tests are about: measuring in-process saves a child per model.
IN_PROCESS = "runtime: {isolate: false}\n"


@pytest.fixture(autouse=True)
def in_process(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS)


@pytest.fixture
def healthy(pytester: pytest.Pytester) -> Path:
    return save(two_conv_model(), pytester.path / "healthy.onnx")


@pytest.fixture
def planted(pytester: pytest.Pytester) -> Path:
    """conv2's channels 1 and 4 are dead by construction."""
    return save(two_conv_model(dead_conv2=(1, 4)), pytester.path / "planted.onnx")


def strict_dead_config(pytester: pytest.Pytester) -> Path:
    return pytester.makefile(".yaml", cnnaudit=IN_PROCESS + "checks:\n  dead_filters: {max_count: 0}\n")


def test_collect_only_lists_one_item_per_check_and_layer(pytester: pytest.Pytester, healthy: Path) -> None:
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "healthy.onnx::sparsity[[]conv1[]]",
            "healthy.onnx::dead_filters[[]conv1[]]",
            "healthy.onnx::sparsity[[]conv2[]]",
            "healthy.onnx::dead_filters[[]conv2[]]",
        ]
    )


@pytest.mark.parametrize("mode", list(XDIST_MODES))
def test_planted_dead_channels_fail_exactly_their_item(
    pytester: pytest.Pytester, healthy: Path, planted: Path, mode: str
) -> None:
    strict_dead_config(pytester)
    result = pytester.runpytest(
        "--cnnaudit", "healthy.onnx", "planted.onnx", "--cnnaudit-json", "r.json", *XDIST_MODES[mode]
    )
    result.assert_outcomes(passed=9, failed=1)  # 4 items + color[conv1] per model
    result.stdout.fnmatch_lines(
        [
            "*planted.onnx :: dead_filters[[]conv2[]]: 2 of 6 channels never active (33.3%) > max_count 0*channels [[]1 (provable), 4 (provable)[]]*"
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())
    outcomes = {(m["path"], c["check"], c["layer"]): c["outcome"] for m in report["models"] for c in m["checks"]}
    assert outcomes[("planted.onnx", "dead_filters", "conv2")] == "failed"
    assert sum(o == "failed" for o in outcomes.values()) == 1
    layers = {layer["id"]: layer for layer in report["models"][1]["layers"]}
    assert layers["conv2"]["dead_channels"] == [1, 4] and layers["conv1"]["dead_channels"] == []


def test_report_is_identical_with_and_without_xdist(pytester: pytest.Pytester, healthy: Path, planted: Path) -> None:
    texts = []
    for mode in XDIST_MODES.values():
        pytester.runpytest("--cnnaudit", "healthy.onnx", "planted.onnx", "--cnnaudit-json", "r.json", *mode)
        texts.append((pytester.path / "r.json").read_text())
    assert texts[0] == texts[1] == texts[2]


def test_healthy_model_passes_at_defaults_and_summary_shows_layers(pytester: pytest.Pytester, healthy: Path) -> None:
    (pytester.path / "cnnaudit.yaml").unlink()  # the defaults, isolation included
    result = pytester.runpytest("--cnnaudit", "healthy.onnx")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*cnnaudit 0.*: config defaults*seed 0*", "*= cnnaudit =*", "healthy.onnx", "*conv1*8*"]
    )


def test_k_selects_items_by_layer(pytester: pytest.Pytester, planted: Path) -> None:
    strict_dead_config(pytester)
    result = pytester.runpytest("--cnnaudit", "planted.onnx", "-k", "conv1")
    result.assert_outcomes(passed=3)  # sparsity, dead_filters, color
    result = pytester.runpytest("--cnnaudit", "planted.onnx", "-m", "cnnaudit", "-k", "dead_filters and conv2")
    result.assert_outcomes(failed=1)


def test_yaml_typo_is_a_usage_error_with_line_and_suggestion(pytester: pytest.Pytester, healthy: Path) -> None:
    pytester.makefile(".yaml", cnnaudit="probe:\n  count: 8\nchecks:\n  dead_filters:\n    max_cont: 0\n")
    result = pytester.runpytest("--cnnaudit", "healthy.onnx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*cnnaudit.yaml:5: checks.dead_filters.max_cont: unknown key 'max_cont'; did you mean 'max_count'?*"]
    )


def test_impossible_threshold_is_a_usage_error(pytester: pytest.Pytester, healthy: Path) -> None:
    pytester.makefile(".yaml", cnnaudit="checks:\n  sparsity:\n    min: 0.8\n    max: 0.2\n")
    result = pytester.runpytest("--cnnaudit", "healthy.onnx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cnnaudit.yaml:3: checks.sparsity.min: min 0.8 > max 0.2*"])


def test_output_option_without_cnnaudit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cnnaudit-json", "r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnnaudit-json needs --cnnaudit*"])


def test_without_the_flag_model_files_are_not_collected(pytester: pytest.Pytester, healthy: Path) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_baseline_save_then_compare_catches_a_regression(pytester: pytest.Pytester, healthy: Path) -> None:
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--cnnaudit-save-baseline", "base.json")
    result.assert_outcomes(passed=5)
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--cnnaudit-baseline", "base.json")
    result.assert_outcomes(passed=7)
    save(two_conv_model(dead_conv2=(1, 4)), pytester.path / "healthy.onnx")  # the next release regressed
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--cnnaudit-baseline", "base.json")
    # dead_filters[conv2] (2 of 6 > 25%) and baseline[conv2] fail
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(["*baseline[[]conv2[]]: dead channels grew from 0 to 2 (new: [[]1, 4[]]*"])


def test_models_listed_in_the_yaml_are_audited(pytester: pytest.Pytester, planted: Path) -> None:
    pytester.makefile(
        ".yaml", cnnaudit=IN_PROCESS + "models:\n  - path: planted.onnx\n    checks: {dead_filters: {max_count: 0}}\n"
    )
    result = pytester.runpytest("--cnnaudit", "planted.onnx")
    result.assert_outcomes(passed=4, failed=1)
    result = pytester.runpytest("--cnnaudit", "-p", "no:xdist")
    result.assert_outcomes(passed=4, failed=1)


def test_junit_xml_carries_the_measurements(pytester: pytest.Pytester, planted: Path) -> None:
    strict_dead_config(pytester)
    pytester.runpytest("--cnnaudit", "planted.onnx", "--junitxml", "junit.xml")
    tree = ET.parse(pytester.path / "junit.xml")
    case = next(c for c in tree.iter("testcase") if c.get("name") == "dead_filters[conv2]")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["cnnaudit_dead_channels"] == "[1, 4]"
    assert properties["cnnaudit_dead_count"] == "2"


def test_a_broken_model_fails_its_load_item_and_others_still_run(pytester: pytest.Pytester, healthy: Path) -> None:
    (pytester.path / "broken.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "broken.onnx")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        ["broken.onnx :: load: broken.onnx: not a readable ONNX model*", "FAILED broken.onnx::load*"]
    )
    assert "Traceback" not in result.stdout.str()
