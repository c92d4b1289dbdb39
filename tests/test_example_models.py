"""The shipped example models report what ``example_models/README.md`` says, and a rebuild agrees.

These are known-answer tests on trained networks: ``high_lr``'s dead channels were
recorded by the build (``high_lr.expected.json``) from its own forward hooks, so the
audit must name exactly those; ``healthy`` must pass every check of its config.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_cnnaudit import audit
from pytest_cnnaudit.document import ModelDocument, Verdict

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "example_models"
NAMES = ("healthy", "high_lr", "hue_task", "grayscale")
#: Rebuilding on another CPU or torch version may round differently during training.
#: Agreement asked of a rebuilt model: each layer's zero fraction within this much ...
SPARSITY_TOLERANCE = 0.02
#: ... each layer's dead-channel count within this many channels, and the first layer's
#: colour-tuned filter count within this many filters (of 16).
DEAD_COUNT_TOLERANCE = 1
SELECTIVE_COUNT_TOLERANCE = 2


def expected_dead(folder: Path) -> dict[str, list[int]]:
    return json.loads((folder / "high_lr.expected.json").read_text())["dead_channels"]


def dead_channels(model: ModelDocument) -> dict[str, list[int]]:
    return {layer.id: list(layer.dead_channels) for layer in model.layers}


def first_layer_colour(model: ModelDocument) -> Verdict:
    return next(v for v in model.verdicts if v.check == "color" and v.layer == "conv1")


def audited(folder: Path, name: str, suffix: str) -> ModelDocument:
    return audit(folder / f"{name}{suffix}", folder / f"{name}.yaml").models[0]


def test_shipped_binaries_stay_small() -> None:
    files = [path for path in EXAMPLES.iterdir() if path.suffix in (".onnx", ".pt")]
    assert len(files) >= 9  # 4 x (onnx + state_dict) + healthy's TorchScript
    assert sum(path.stat().st_size for path in files) < 5 * 2**20


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_audit_names_exactly_the_dead_channels_the_build_recorded(suffix: str) -> None:
    assert dead_channels(audited(EXAMPLES, "high_lr", suffix)) == expected_dead(EXAMPLES)
    assert any(expected_dead(EXAMPLES).values())  # the recorded list is not empty


@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".torchscript.pt"])
def test_healthy_has_no_dead_channel(suffix: str) -> None:
    model = audited(EXAMPLES, "healthy", suffix)
    assert dead_channels(model) == {"conv1": [], "conv2": [], "conv3": []}
    assert all(verdict.outcome == "passed" for verdict in model.verdicts)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_and_state_dict_forms_get_the_same_figures(name: str) -> None:
    """BatchNorm is folded into the ONNX convs and kept apart in torch: the figures agree anyway."""
    onnx_form, torch_form = audited(EXAMPLES, name, ".onnx"), audited(EXAMPLES, name, ".pt")
    assert dead_channels(onnx_form) == dead_channels(torch_form)
    for a, b in zip(onnx_form.layers, torch_form.layers, strict=True):
        assert a.sparsity == pytest.approx(b.sparsity, abs=1e-3)
    assert [(v.check, v.layer, v.outcome) for v in onnx_form.verdicts] == [
        (v.check, v.layer, v.outcome) for v in torch_form.verdicts
    ]
    shares = [first_layer_colour(model).figures.chromatic_share for model in (onnx_form, torch_form)]
    assert shares[0] == pytest.approx(shares[1], abs=1e-4)


def literal_brackets(pattern: str) -> str:
    """An fnmatch pattern whose ``[`` and ``]`` match themselves (``*`` stays a wildcard)."""
    return "".join({"[": "[[]", "]": "[]]"}.get(char, char) for char in pattern)


@pytest.fixture
def examples(pytester: pytest.Pytester) -> Path:
    """A copy of example_models/ as the test's working directory.

    The runs below are subprocesses, as a user's are: an in-process pytester run drops the
    modules it imported (torch.export's among them), and importing them again fails.
    """
    for path in EXAMPLES.iterdir():
        if path.is_file():
            shutil.copy(path, pytester.path / path.name)
    return pytester.path


@pytest.mark.parametrize("name", ["healthy", "hue_task", "grayscale"])
def test_first_command_passes_on_the_examples_that_should_pass(
    examples: Path, pytester: pytest.Pytester, name: str
) -> None:
    result = pytester.runpytest_subprocess("--cnnaudit", f"{name}.onnx", "--cnnaudit-config", f"{name}.yaml")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes["passed"] >= 14 and "failed" not in outcomes
    result.stdout.fnmatch_lines([f"cnnaudit *: config {name}.yaml; probe shipped photographs, count 32, seed 0"])
    # The summary's title, then straight the first model's table (no stray blank line).
    result.stdout.fnmatch_lines(["*= cnnaudit =*", f"{name}.onnx", "  layer  channels  sparsity *"], consecutive=True)


def test_high_lr_config_fails_naming_the_dead_channels(examples: Path, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--cnnaudit", "high_lr.onnx", "--cnnaudit-config", "high_lr.yaml")
    assert result.ret == 1
    channels = expected_dead(examples)["conv3"]
    listed = ", ".join(f"{channel} (*)" for channel in channels)  # each with its evidence
    finding = f"dead_filters[conv3]: {len(channels)} of 32 channels never active (*) > * channels [{listed}]*"
    result.stdout.fnmatch_lines([literal_brackets(f"{name} :: {finding}") for name in ("high_lr.onnx", "high_lr.pt")])
    assert result.parseoutcomes()["failed"] == 2


@pytest.mark.slow
def test_a_rebuilt_model_agrees_with_the_shipped_one(tmp_path: Path) -> None:
    """``build.py --only high_lr`` (about a minute): the audit figures of both agree within the tolerances above."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "build.py"), "--only", "high_lr", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rebuilt, shipped = audited(tmp_path, "high_lr", ".onnx"), audited(EXAMPLES, "high_lr", ".onnx")
    # The rebuilt model's own record is exact: the build measured it independently of this package.
    assert dead_channels(rebuilt) == expected_dead(tmp_path)
    for new, old in zip(rebuilt.layers, shipped.layers, strict=True):
        assert new.id == old.id
        assert new.sparsity == pytest.approx(old.sparsity, abs=SPARSITY_TOLERANCE), new.id
        assert abs(len(new.dead_channels) - len(old.dead_channels)) <= DEAD_COUNT_TOLERANCE, new.id
    selective = [first_layer_colour(model).figures.selective_count for model in (rebuilt, shipped)]
    assert abs(selective[0] - selective[1]) <= SELECTIVE_COUNT_TOLERANCE
