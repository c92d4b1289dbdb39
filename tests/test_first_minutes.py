"""What a new user meets in the first ten minutes (issue 14), run as users run it (pytester).

Finding the models and the config, a configured check that runs, progress that keeps pytest's row
whole, nothing measured never reading as a pass, the two colour shares named apart, and a
starting config that stays a sane size.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx.parser
import pytest
from modelbuilders import save, two_conv_model
from onnx import numpy_helper

pytest_plugins = ["pytester"]

IN_PROCESS = "runtime: {isolate: false}\n"
NO_MODEL_HINT = (
    "name them on the command line (pytest --cnnaudit model.onnx, or a folder of models: pytest --cnnaudit "
    "models/) or list them in cnnaudit.yaml: models: [{path: model.onnx}]"
)


def sigmoid_model() -> onnx.ModelProto:
    """One conv followed by a Sigmoid: it saturates instead of switching off, so no layer can be measured."""
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> net (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y)'
        " { a = Conv(x, w, b) y = Sigmoid(a) }"
    )
    rng = np.random.default_rng(0)
    for name, value in (("w", rng.normal(0, 0.5, (4, 3, 3, 3))), ("b", np.zeros(4))):
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    model.graph.node[0].name = "conv1"
    return model


# --------------------------------------------------------------------------- finding the models and the config


def test_nothing_to_audit_is_a_usage_error_showing_both_ways_to_name_models(pytester: pytest.Pytester) -> None:
    """Before: ``collected 0 items``, exit 5, no hint."""
    result = pytester.runpytest("--cnnaudit")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: cnnaudit: no model file to audit (no cnnaudit.yaml found); {NO_MODEL_HINT}" in result.stderr.str()
    config = pytester.makefile(".yaml", cnnaudit="probe: {count: 8}\n")
    result = pytester.runpytest("--cnnaudit")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"no model file to audit ({config} lists no models:); {NO_MODEL_HINT}" in result.stderr.str()


@pytest.fixture
def elsewhere(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user stands in ``here/`` (with its cnnaudit.yaml); the model, with one dead channel of 6 in conv2
    (17%: within the default 25%, beyond max_count 0), lies in ``../m``. pytest puts the rootdir at the
    common folder of both, which holds no cnnaudit.yaml."""
    here, models = pytester.mkdir("here"), pytester.mkdir("m")
    save(two_conv_model(dead_conv2=(3,)), models / "model.onnx")
    (here / "cnnaudit.yaml").write_text(IN_PROCESS + "probe: {count: 8}\nchecks: {dead_filters: {max_count: 0}}\n")
    monkeypatch.chdir(here)
    return pytester.path


def test_the_invocation_folders_config_is_used_when_the_rootdir_moves(
    pytester: pytest.Pytester, elsewhere: Path
) -> None:
    """Before: the rootdir moved to ../m, cnnaudit.yaml here was ignored, the model passed on the defaults."""
    result = pytester.runpytest("--cnnaudit", "../m/model.onnx")
    result.stdout.fnmatch_lines(
        [
            "cnnaudit *: config here/cnnaudit.yaml (from the invocation folder: the rootdir * has no "
            "cnnaudit.yaml); probe shipped photographs, count 8, seed 0",
            "m/model.onnx :: dead_filters[[]conv2[]]: 1 of 6 channels never active (16.7%) > max_count 0*",
        ]
    )
    result.assert_outcomes(passed=4, failed=1)


def test_the_header_says_when_the_invocation_folders_config_is_not_used(
    pytester: pytest.Pytester, elsewhere: Path
) -> None:
    (elsewhere / "cnnaudit.yaml").write_text(IN_PROCESS + "probe: {count: 4}\n")  # the rootdir's
    result = pytester.runpytest("--cnnaudit", "../m/model.onnx")
    result.stdout.fnmatch_lines(
        [
            "cnnaudit *: config cnnaudit.yaml; cnnaudit.yaml in the invocation folder not used (name it with "
            "--cnnaudit-config); probe shipped photographs, count 4, seed 0"
        ]
    )
    result.assert_outcomes(passed=5)


def test_a_model_listed_in_a_config_outside_the_rootdir_is_named_by_its_path(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: its node id and its name in every message were empty. (The rootdir is pinned: pytest would put
    it above the config's folder, whose path it takes for a test path.)"""
    save(two_conv_model(dead_conv2=(3,)), pytester.mkdir("models") / "planted.onnx")
    config = pytester.mkdir("cfg") / "audit.yaml"
    config.write_text(IN_PROCESS + "models: [{path: ../models/planted.onnx}]\nchecks: {dead_filters: {max_count: 0}}\n")
    monkeypatch.chdir(pytester.mkdir("run"))
    outside = ("--cnnaudit", "--cnnaudit-config", "../cfg/audit.yaml", "--rootdir", ".")
    listed = pytester.runpytest(*outside, "--collect-only", "-q")
    listed.stdout.fnmatch_lines(
        ["../models/planted.onnx::sparsity[[]conv1[]]", "../models/planted.onnx::color[[]conv1[]]"]
    )
    result = pytester.runpytest(*outside)
    result.stdout.fnmatch_lines(
        ["../models/planted.onnx :: dead_filters[[]conv2[]]: 1 of 6 channels never active (16.7%) > max_count 0*"]
    )
    result.assert_outcomes(passed=4, failed=1)


# --------------------------------------------------------------------------- a configured check runs


def test_a_given_lr_sanity_section_runs_the_probe(pytester: pytest.Pytester) -> None:
    """Before: ``checks: {lr_sanity: {lr: 0.01}}`` did nothing without ``enabled: true``."""
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS + "checks: {lr_sanity: {lr: 0.01}}\n")
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["healthy.onnx::lr_sanity[[]conv1[]]", "healthy.onnx::lr_sanity"])
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS + "checks: {lr_sanity: {lr: 0.01, enabled: false}}\n")
    assert "lr_sanity" not in pytester.runpytest("--cnnaudit", "healthy.onnx", "--collect-only", "-q").stdout.str()


def test_colour_bounds_given_per_model_and_per_layer_are_planned(pytester: pytest.Pytester) -> None:
    """Before: collection crashed with ``'dict' object has no attribute 'match'``."""
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(
        ".yaml",
        cnnaudit=IN_PROCESS + "models:\n  - path: healthy.onnx\n    checks:\n"
        "      color: {layers: [{match: conv2, max_selective_fraction: 0.9}]}\n"
        "layers:\n  - match: 'conv*'\n    checks:\n      color: {layers: [{match: '*', min_selective_fraction: 0.0}]}\n",
    )
    result = pytester.runpytest("--cnnaudit", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["healthy.onnx::color[[]conv1[]]", "healthy.onnx::color[[]conv2[]]"])


# --------------------------------------------------------------------------- output


def test_progress_lines_leave_the_result_row_whole(pytester: pytest.Pytester) -> None:
    """Before, the first item's result landed alone under the progress lines (``.`` on its own line)."""
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS + "probe: {count: 256, batch_size: 64}\n")
    result = pytester.runpytest("--cnnaudit", "healthy.onnx")
    result.assert_outcomes(passed=5)
    lines = result.stdout.lines
    last = max(i for i, line in enumerate(lines) if "256/256 probe images" in line)
    assert re.fullmatch(r"healthy\.onnx \.{5} +\[100%\]", lines[last + 1]), lines[last - 3 : last + 3]
    assert not any(re.fullmatch(r"[.FsE]+", line) for line in lines)


def test_nothing_measured_fails_in_red_and_is_never_a_passed_badge(pytester: pytest.Pytester) -> None:
    save(sigmoid_model(), pytester.path / "sigmoid.onnx")
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS)
    result = pytester.runpytest("--cnnaudit", "sigmoid.onnx", "--color=yes", "-p", "no:xdist")
    result.assert_outcomes(passed=1, failed=2, skipped=2)
    red = "\x1b[31m  sparsity: failed: no layer of the model could be measured (1 layer(s): its activation (sigmoid)"
    assert red in result.stdout.str()
    allowed = "checks: {sparsity: {allow_unmeasured: true}, dead_filters: {allow_unmeasured: true}}\n"
    pytester.makefile(".yaml", cnnaudit=IN_PROCESS + allowed)
    result = pytester.runpytest("--cnnaudit", "sigmoid.onnx", "--cnnaudit-html", "r.html", "-p", "no:xdist")
    assert result.ret == pytest.ExitCode.OK  # allowed: skipped, but the page must not say passed
    page = (pytester.path / "r.html").read_text()
    assert '<span class="badge not-measured">not measured</span></h2>' in page
    assert 'class="badge passed">passed</span></h2>' not in page and "1 where nothing was measured" in page


def test_the_two_colour_shares_have_two_names_everywhere(pytester: pytest.Pytester) -> None:
    """Weights: colour-tuned filters of the first conv; activations: CSI-selective channels of every layer."""
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(
        ".yaml", cnnaudit=IN_PROCESS + "checks: {color: {layers: [{match: conv2, max_selective_fraction: 1.0}]}}\n"
    )
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--cnnaudit-json", "r.json", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["  colour  median CSI  CSI-selective  isoluminant"])
    checks = {c["layer"]: c for c in json.loads((pytester.path / "r.json").read_text())["models"][0]["checks"]}
    first, bound = checks["conv1"], checks["conv2"]
    assert "filters colour-tuned" in first["message"] and "channels CSI-selective" in bound["message"]
    assert first["figures"]["tuned_count"] == first["figures"]["selective_count"]  # the old key keeps its meaning
    assert first["figures"]["tuned_fraction"] == first["figures"]["selective_fraction"]
    assert bound["figures"]["csi_selective_fraction"] == bound["figures"]["selective_fraction"]
    assert bound["figures"]["tuned_fraction"] is None


def test_activation_maps_keep_their_aspect_and_their_titles_fit() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pytest_cnnaudit.document.pictures import EncodedArray, LayerMaps
    from pytest_cnnaudit.engine.pictures import MAP_SIDE, block_mean, to_uint8
    from pytest_cnnaudit.report.charts import maps_grid

    cases = [((1, 8, 64), "backbone.stage1.block0.conv_with_a_long_name"), ((5, 40, 10), "c"), ((1, 3, 3), "f.0")]
    for shape, name in cases:
        small = block_mean(np.random.default_rng(0).random(shape), MAP_SIDE)
        assert small.shape[1] / small.shape[2] == pytest.approx(shape[1] / shape[2], rel=0.15)
        maps = LayerMaps(
            name,
            "first conv",
            tuple(range(shape[0])),
            shape[0],
            (),
            shape[1:],
            EncodedArray.encode(to_uint8(small, (1, 2))),
        )
        figure = maps_grid(maps)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        width, height = canvas.get_width_height()
        title = figure._suptitle.get_window_extent(renderer)
        assert title.x0 >= 0 and title.x1 <= width and title.y1 <= height, (shape, title, width)
        image = figure.axes[0].images[0]
        drawn = image.get_window_extent(renderer)
        rows, columns = image.get_array().shape[:2]
        assert drawn.width / drawn.height == pytest.approx(columns / rows, rel=0.02), shape


# --------------------------------------------------------------------------- the starting config


def test_init_refuses_a_config_that_aliases_would_blow_up(pytester: pytest.Pytester) -> None:
    """Before: a 415-byte config with aliases in factory_kwargs was written out as 254 MB."""
    save(two_conv_model(), pytester.path / "m.onnx")
    levels = ["a: &a [xx, xx, xx, xx, xx, xx, xx, xx, xx, xx]"]
    for level in "bcdef":
        previous = chr(ord(level) - 1)
        levels.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 10)}]")
    kwargs = "\n".join(f"      {line}" for line in levels)
    pytester.makefile(".yaml", cnnaudit=f"{IN_PROCESS}models:\n  - path: m.onnx\n    factory_kwargs:\n{kwargs}\n")
    assert len((pytester.path / "cnnaudit.yaml").read_bytes()) < 700
    result = pytester.runpytest("--cnnaudit", "--cnnaudit-init", "init.yaml", "-p", "no:xdist")
    result.stdout.fnmatch_lines(
        [
            "cnnaudit: init.yaml was not written: the starting config would be larger than 1,000,000 characters "
            "(YAML aliases in factory_kwargs?)"
        ]
    )
    assert not (pytester.path / "init.yaml").exists()


# --------------------------------------------------------------------------- without torch


BLOCK_TORCH = "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def run_without_torch(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in a fresh interpreter where ``import torch`` fails, as on a base install."""
    command = [sys.executable, "-c", BLOCK_TORCH, "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)


def test_without_torch_lr_sanity_is_a_usage_error_naming_the_extra(tmp_path: Path) -> None:
    save(two_conv_model(), tmp_path / "m.onnx")
    (tmp_path / "cnnaudit.yaml").write_text("checks: {lr_sanity: {lr: 0.01}}\n")
    done = run_without_torch(tmp_path, "--cnnaudit", "m.onnx")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert (
        "ERROR: cnnaudit: checks.lr_sanity trains a torch copy of the model and needs torch: "
        "pip install 'pytest-cnnaudit[torch]'"
    ) in done.stderr


def test_without_torch_a_torch_model_fails_its_load_item_in_one_line(tmp_path: Path) -> None:
    save(two_conv_model(), tmp_path / "m.onnx")
    (tmp_path / "w.pt").write_bytes(b"not read: torch is missing")
    (tmp_path / "cnnaudit.yaml").write_text(IN_PROCESS)
    done = run_without_torch(tmp_path, "--cnnaudit", "m.onnx", "w.pt", "-p", "no:xdist")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert (
        "w.pt :: load: w.pt: a PyTorch model needs torch, which is not installed: pip install 'pytest-cnnaudit[torch]'"
    ) in done.stdout
    assert "1 failed, 5 passed" in done.stdout
