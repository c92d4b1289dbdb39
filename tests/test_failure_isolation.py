"""Failures stay where they happen, and the reports tell the same story as pytest.

A model that cannot be opened, a factory that raises, a check that raises, a child that crashes
or hangs: each fails its own items with one line, every other model and check still runs, and
the JSON and HTML reports carry the outcomes pytest printed (baseline items included).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from modelbuilders import save, two_conv_model

from pytest_cnnaudit.config import parse_config
from pytest_cnnaudit.document import AuditDocument
from pytest_cnnaudit.engine.audit import audit_document
from pytest_cnnaudit.engine.isolation import ChildFailed, run_in_child

pytest_plugins = ["pytester"]

RAISING_FACTORY = """
import torch

def build():
    raise ValueError("width must be positive")

def small():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
"""

THREE_MODELS = """\
probe: {count: 8}
models:
  - path: broken.onnx
  - path: raising.pt
    factory: arch:build
    input: {size: [16, 16]}
  - path: healthy.onnx
"""


@pytest.fixture
def three_models(pytester: pytest.Pytester) -> Path:
    """One model that is not a model, one whose factory raises, one healthy; the config lists all three."""
    (pytester.path / "broken.onnx").write_bytes(b"not a model at all")
    pytester.makepyfile(arch=RAISING_FACTORY)
    torch.save(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(), pytester.path / "raising.pt"
    )
    save(two_conv_model(), pytester.path / "healthy.onnx")
    return pytester.makefile(".yaml", cnnaudit=THREE_MODELS)


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_three_models_two_broken_give_three_documents(
    pytester: pytest.Pytester, three_models: Path, xdist: list[str]
) -> None:
    result = pytester.runpytest(
        "--cnnaudit", "--cnnaudit-json", "r.json", "--cnnaudit-html", "r.html", "-p", "no:cacheprovider", *xdist
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=5, failed=2)  # healthy: 2 layers x 2 checks + color[conv1]; one load item each
    result.stdout.fnmatch_lines(["*raising.pt :: load: *raised ValueError: width must be positive*"])
    report = AuditDocument.from_json(json.loads((pytester.path / "r.json").read_text()))
    models = {model.path: model for model in report.models}
    assert sorted(models) == ["broken.onnx", "healthy.onnx", "raising.pt"]
    assert "not a readable ONNX model" in (models["broken.onnx"].error or "")
    assert "ValueError: width must be positive" in (models["raising.pt"].error or "")
    assert models["healthy.onnx"].error is None
    assert {v.outcome for v in models["healthy.onnx"].verdicts} == {"passed"}
    for broken in ("broken.onnx", "raising.pt"):
        assert [(v.check, v.outcome) for v in models[broken].verdicts] == [("load", "failed")]
    page = (pytester.path / "r.html").read_text()
    for name, state in (("broken.onnx", "failed"), ("raising.pt", "failed"), ("healthy.onnx", "passed")):
        assert f'data-model="{name}"><h2>{name} <span class="badge {state}">' in page


def test_a_regression_against_the_baseline_is_a_failed_verdict_in_the_json(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "model.onnx")
    pytester.makefile(".yaml", cnnaudit="probe: {count: 8}\nchecks: {color: {enabled: false}}\n")
    pytester.runpytest("--cnnaudit", "model.onnx", "--cnnaudit-save-baseline", "base.json").assert_outcomes(passed=4)
    save(two_conv_model(dead_conv2=(3,)), pytester.path / "model.onnx")  # the next release kills a channel
    result = pytester.runpytest(
        "--cnnaudit", "model.onnx", "--cnnaudit-baseline", "base.json", "--cnnaudit-json", "r.json"
    )
    result.assert_outcomes(passed=5, failed=1)
    (model,) = json.loads((pytester.path / "r.json").read_text())["models"]
    baseline = {check["layer"]: check for check in model["checks"] if check["check"] == "baseline"}
    assert baseline["conv2"]["outcome"] == "failed" and "dead channels grew from 0 to 1" in baseline["conv2"]["message"]
    assert baseline["conv2"]["figures"]["new_dead_channels"] == [3]
    assert baseline["conv1"]["outcome"] == "passed"


def test_a_model_missing_from_the_baseline_gets_a_visible_item(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "old.onnx")
    pytester.makefile(".yaml", cnnaudit="probe: {count: 8}\nchecks: {color: {enabled: false}}\n")
    pytester.runpytest("--cnnaudit", "old.onnx", "--cnnaudit-save-baseline", "base.json").assert_outcomes(passed=4)
    (pytester.path / "old.onnx").rename(pytester.path / "new.onnx")

    result = pytester.runpytest("--cnnaudit", "new.onnx", "--cnnaudit-baseline", "base.json", "-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*model new.onnx is not in the baseline (first release?*"])

    pytester.makefile(
        ".yaml", strict="probe: {count: 8}\nchecks: {color: {enabled: false}}\nbaseline: {require: true}\n"
    )
    result = pytester.runpytest(
        "--cnnaudit", "new.onnx", "--cnnaudit-baseline", "base.json", "--cnnaudit-config", "strict.yaml"
    )
    result.assert_outcomes(passed=4, failed=1)

    pytester.makefile(
        ".yaml",
        renamed="probe: {count: 8}\nchecks: {color: {enabled: false}}\nbaseline: {require: true}\n"
        "models:\n  - {path: new.onnx, name: old.onnx}\n",
    )
    result = pytester.runpytest("--cnnaudit", "--cnnaudit-baseline", "base.json", "--cnnaudit-config", "renamed.yaml")
    result.assert_outcomes(passed=6)  # 4 items + baseline[conv1], baseline[conv2], judged against old.onnx's


class SequenceModel(torch.nn.Module):
    """A CTC-style head: its output is [T, N, C], batch second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(image)).mean(dim=2)  # (N, C, W)
        return features.permute(2, 0, 1)


SEQUENCE_CONFIG = parse_config(
    "probe: {count: 4}\nmodels: [{path: seq, input: {size: [16, 16]}}]\n"
    "checks: {lr_sanity: {enabled: true, steps: 2, batch_size: 2}}"
)


def test_a_model_whose_output_is_not_batch_first_gets_its_lr_verdicts() -> None:
    document, _ = audit_document(SequenceModel().eval(), SEQUENCE_CONFIG, SEQUENCE_CONFIG.models[0], "seq")
    lr = {v.item_id: v for v in document.verdicts if v.check == "lr_sanity"}
    assert set(lr) == {"lr_sanity[conv]", "lr_sanity"}
    assert lr["lr_sanity"].outcome == "passed", lr["lr_sanity"].message
    assert lr["lr_sanity"].figures is not None and lr["lr_sanity"].figures.steps == 2


def test_a_check_that_raises_fails_only_its_own_items(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_cnnaudit.checks.lr_sanity import probe as probe_module

    def broken_training_set(*args: object, **kwargs: object) -> object:
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(probe_module, "training_set", broken_training_set)
    document, _ = audit_document(SequenceModel().eval(), SEQUENCE_CONFIG, SEQUENCE_CONFIG.models[0], "seq")
    outcomes = {v.item_id: (v.outcome, v.message) for v in document.verdicts}
    assert outcomes["sparsity[conv]"][0] == outcomes["dead_filters[conv]"][0] == "passed"
    expected = "check lr_sanity raised IndexError: tuple index out of range (a bug in cnnaudit: please report it)"
    assert outcomes["lr_sanity"] == outcomes["lr_sanity[conv]"] == ("failed", expected)


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang() -> None:
    time.sleep(60)


def _raise() -> None:
    raise ValueError("bad value")


@pytest.mark.parametrize(
    ("function", "timeout", "how", "line"),
    [
        (_segfault, 30.0, "crashed", "the runtime crashed while measuring the model (signal 11 (SIGSEGV))"),
        (_hang, 1.0, "timed out", "measuring the model did not finish within runtime.timeout_s (1 s)"),
        (_raise, 30.0, "raised", "measuring the model raised ValueError: bad value"),
    ],
)
def test_a_child_that_ends_badly_is_one_line(function: object, timeout: float, how: str, line: str) -> None:
    with pytest.raises(ChildFailed) as failed:
        run_in_child(function, (), timeout)  # type: ignore[arg-type]
    assert failed.value.how == how
    assert failed.value.describe("measuring the model").startswith(line)


HANGING_FACTORY = """
import time

import torch

def build():
    time.sleep(120)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
"""


def test_a_hanging_model_fails_after_runtime_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(slow_arch=HANGING_FACTORY)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(), pytester.path / "slow.pt")
    save(two_conv_model(), pytester.path / "ok.onnx")
    pytester.makefile(
        ".yaml",
        cnnaudit="probe: {count: 8}\nruntime: {timeout_s: 20}\n"
        "models:\n  - {path: slow.pt, factory: 'slow_arch:build', input: {size: [16, 16]}}\n",
    )
    started = time.monotonic()
    result = pytester.runpytest("--cnnaudit", "ok.onnx", "-p", "no:xdist")
    assert time.monotonic() - started < 100
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*slow.pt: opening the model did not finish within runtime.timeout_s (20 s)*"])


COUNTING_FACTORY = """
from pathlib import Path

import torch

def build():
    with open(Path(__file__).with_name("opened.log"), "a") as log:
        log.write("opened\\n")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
"""


@pytest.mark.parametrize(
    ("isolate", "xdist", "opens"),
    [("true", ["-n", "2"], 2), ("false", ["-p", "no:xdist"], 1)],
    ids=["xdist-isolated", "serial-in-process"],
)
def test_each_model_is_opened_once_for_planning_and_once_for_measuring(
    pytester: pytest.Pytester, isolate: str, xdist: list[str], opens: int
) -> None:
    """Under xdist the controller plans and one worker measures: two opens, not one per worker and more;
    in-process the planned model is measured as it is: one open."""
    pytester.makepyfile(counting_arch=COUNTING_FACTORY)
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(), pytester.path / "m.pt")
    pytester.makefile(
        ".yaml",
        cnnaudit=f"probe: {{count: 4}}\nruntime: {{isolate: {isolate}}}\n"
        "models:\n  - {path: m.pt, factory: 'counting_arch:build', input: {size: [16, 16]}}\n",
    )
    result = pytester.runpytest_subprocess("--cnnaudit", *xdist)
    result.assert_outcomes(passed=3)  # sparsity, dead_filters, color of the one conv
    assert (pytester.path / "opened.log").read_text().count("opened") == opens
