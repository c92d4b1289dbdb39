"""``--cnnaudit-init``: a starting cnnaudit.yaml that validates, passes as written, and catches a regression."""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from pathlib import Path

import jsonschema
import onnx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from modelbuilders import save, two_conv_model

from pytest_cnnaudit.config import AuditConfig, LrSanityCheck, parse_config
from pytest_cnnaudit.document import ColorFigures, LrModelFigures, LrSweep, ModelDocument, Verdict
from pytest_cnnaudit.report.init_config import flow, glob_escape, starting_config

pytest_plugins = ["pytester"]

#: An ONNX node name with glob metacharacters: as a glob it would match "stage1.conv2", not itself.
ODD_ID = "stage[1].conv2"


def planted_model(dead_conv2: tuple[int, ...]) -> onnx.ModelProto:
    model = two_conv_model(dead_conv2=dead_conv2)
    model.graph.node[2].name = ODD_ID
    return model


def validate(text: str) -> dict:
    """The file validates against the published JSON Schema and the plugin's own loader."""
    schema = json.loads((resources.files("pytest_cnnaudit") / "data" / "cnnaudit.schema.json").read_text())
    data = yaml.safe_load(text)
    jsonschema.Draft202012Validator(schema).validate(data)
    parse_config(text, "cnnaudit.yaml")
    return data


def test_init_then_audit_passes_and_a_new_dead_channel_fails(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "healthy.onnx")
    save(planted_model(dead_conv2=(1, 4)), pytester.path / "planted.onnx")
    pytester.makefile(".yaml", start="runtime: {isolate: false}\n")  # isolation is not what this test is about

    # The init run is a normal audit (planted.onnx's 2 of 6 dead channels fail the default 25%), then the file.
    result = pytester.runpytest(
        "--cnnaudit-init", "cnnaudit.yaml", "--cnnaudit-config", "start.yaml", "healthy.onnx", "planted.onnx"
    )
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(["cnnaudit: starting config written to cnnaudit.yaml; audit with: pytest --cnnaudit*"])
    text = (pytester.path / "cnnaudit.yaml").read_text()
    data = validate(text)
    assert [m["path"] for m in data["models"]] == ["healthy.onnx", "planted.onnx"]
    assert data["models"][0]["input"] == {
        "size": [16, 16],
        "layout": "NCHW",
        "channels": "RGB",
        "scale": 1,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    }
    assert data["layers"] == [{"match": "stage[[]1].conv2", "checks": {"dead_filters": {"max_count": 2}}}]
    assert data["runtime"] == {"isolate": False}
    assert "# stage[1].conv2: dead channels in planted.onnx [1, 4]" in text

    result = pytester.runpytest("--cnnaudit")  # cnnaudit.yaml in the rootdir lists both models
    result.assert_outcomes(passed=10)

    save(planted_model(dead_conv2=(1, 4, 5)), pytester.path / "planted.onnx")  # the next release: one more dead
    save(two_conv_model(dead_conv1=(3,)), pytester.path / "healthy.onnx")  # and one in a clean model
    result = pytester.runpytest("--cnnaudit", "-p", "no:xdist")
    result.stdout.fnmatch_lines(
        [
            "FAILED *healthy.onnx::dead_filters[[]conv1[]]*",
            "FAILED *planted.onnx::dead_filters[[]stage[[]1[]].conv2[]]*",
        ],
        consecutive=False,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


EXAMPLE_MODELS = sorted((Path(__file__).parent.parent / "example_models").glob("*.onnx"))


def test_init_on_the_example_models_writes_a_config_they_pass(pytester: pytest.Pytester) -> None:
    for model in EXAMPLE_MODELS:
        (pytester.path / model.name).write_bytes(model.read_bytes())
    pytester.makefile(".yaml", start="runtime: {isolate: false}\n")
    names = [model.name for model in EXAMPLE_MODELS]
    pytester.runpytest("--cnnaudit-init", "cnnaudit.yaml", "--cnnaudit-config", "start.yaml", *names, "-p", "no:xdist")
    validate((pytester.path / "cnnaudit.yaml").read_text())
    result = pytester.runpytest("--cnnaudit", "-p", "no:xdist")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_init_refuses_to_overwrite(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(".yaml", existing="probe: {count: 8}\n")
    result = pytester.runpytest("--cnnaudit-init", "existing.yaml", "healthy.onnx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cnnaudit-init existing.yaml exists" in result.stderr.str()


@given(st.text(min_size=1))
def test_an_escaped_layer_id_matches_itself_and_nothing_else(layer_id: str) -> None:
    assert fnmatch.fnmatchcase(layer_id, glob_escape(layer_id))
    assert not fnmatch.fnmatchcase(layer_id + "x", glob_escape(layer_id))


@pytest.mark.parametrize("value", [1e-05, 2.5e20, 0.35, 1, True, None, "a: [b]"])
def test_flow_values_read_back_the_same_in_yaml_1_1(value: object) -> None:
    assert yaml.safe_load(flow(value)) == value


def document(verdicts: list[Verdict], lr_sweep: LrSweep | None = None) -> ModelDocument:
    """A minimal model document with the given verdicts."""
    return ModelDocument(path="m.onnx", verdicts=tuple(verdicts), lr_sweep=lr_sweep)


def lr_model_figures(lr: float, max_safe_lr: float | None = None) -> LrModelFigures:
    return LrModelFigures(lr, 20, 1.0, 1.0, None, 0, max_safe_lr)


def model_checks(text: str) -> dict:
    validate(text)
    return yaml.safe_load(text)["models"][0].get("checks", {})


def lr_config() -> AuditConfig:
    return AuditConfig(checks=AuditConfig().checks.__class__(lr_sanity=LrSanityCheck(enabled=True, sweep=True)))


def test_the_sweeps_max_safe_rate_becomes_the_rate_to_check() -> None:
    sweep = LrSweep(grid=(), max_safe_lr=0.0316228, curve=())
    checks = [
        Verdict("lr_sanity", "conv1", "passed", ""),
        Verdict("lr_sanity", None, "failed", "", lr_model_figures(0.1, 0.0316228)),
    ]
    text = starting_config([document(checks, lr_sweep=sweep)], lr_config(), {"m.onnx": Path("m.onnx")}, Path())
    assert model_checks(text)["lr_sanity"] == {"enabled": True, "lr": 0.0316228, "sweep": True}
    assert "# the sweep's max safe learning rate (1e-05 .. 10); 0.01 was configured" in text


def test_a_failed_rate_without_sweep_is_turned_off_with_the_reason() -> None:
    config = AuditConfig(checks=AuditConfig().checks.__class__(lr_sanity=LrSanityCheck(enabled=True)))
    message = "fine-tuning at lr 0.01: the loss became non-finite"
    checks = [Verdict("lr_sanity", None, "failed", message, lr_model_figures(0.01))]
    text = starting_config([document(checks)], config, {"m.onnx": Path("m.onnx")}, Path())
    assert model_checks(text)["lr_sanity"] == {"enabled": False, "lr": 0.01}
    assert "the loss became non-finite; set sweep: true" in text


@pytest.mark.parametrize(
    ("share", "fraction", "expected"),
    [
        (0.01, 0.0, {"expect": "invariant"}),
        (0.6, 0.375, {"expect": "sensitive", "min_selective_fraction": 0.325}),
        (0.3, 0.02, None),  # neither: reported only
    ],
)
def test_the_first_layers_measured_colour_use_becomes_the_expectation(
    share: float, fraction: float, expected: dict | None
) -> None:
    figures = ColorFigures(channels=8, selective_count=3, selective_fraction=fraction, chromatic_share=share)
    text = starting_config(
        [document([Verdict("color", "conv1", "passed", "", figures)])],
        AuditConfig(),
        {"m.onnx": Path("m.onnx")},
        Path(),
    )
    colour = model_checks(text).get("color")
    assert (colour["first_layer"] if colour else None) == expected
