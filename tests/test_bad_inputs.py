"""A catalogue of hostile and broken inputs: each gives one clear line, never a traceback.

Model problems raise a :class:`CnnAuditError` naming the file and the problem
(in pytest: a failed item for that model only); config and command-line
problems end the run with pytest's usage-error code before any model loads.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelbuilders import save, two_conv_model
from onnx import numpy_helper
from PIL import Image

from pytest_cnnaudit import CnnAuditError, ConfigError, audit
from pytest_cnnaudit.config import parse_config

pytest_plugins = ["pytester"]


def _graph(text: str, initializers: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in (initializers or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    return model


def _conv_weights(out: int = 4, inp: int = 3) -> dict[str, np.ndarray]:
    return {"w": np.random.default_rng(0).normal(0, 0.5, (out, inp, 3, 3)), "b": np.zeros(out)}


HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def no_conv(tmp: Path) -> Path:
    return save(
        _graph(f"{HEADER} net (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) {{ y = Relu(x) }}"), tmp / "m.onnx"
    )


def dynamic_size(tmp: Path) -> Path:
    text = f"{HEADER} net (float[N, 3, H, W] x) => (float[N, 4, H, W] y) {{ a = Conv(x, w, b) y = Relu(a) }}"
    return save(_graph(text, _conv_weights()), tmp / "m.onnx")


def nan_weights(tmp: Path) -> Path:
    weights = _conv_weights()
    weights["w"][2] = np.nan
    text = f"{HEADER} net (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y) {{ a = Conv(x, w, b) y = Relu(a) }}"
    return save(_graph(text, weights), tmp / "m.onnx")


def nan_output(tmp: Path) -> Path:
    text = f"""{HEADER} net (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y) {{
        a = Conv(x, w, b)
        r = Relu(a)
        zero = Constant <value = float {{0.0}}> ()
        y = Div(r, zero)
    }}"""
    return save(_graph(text, _conv_weights()), tmp / "m.onnx")


def two_inputs(tmp: Path) -> Path:
    text = f"""{HEADER} net (float[N, 3, 8, 8] x, float[N, 3, 8, 8] z) => (float[N, 4, 6, 6] y) {{
        s = Add(x, z)
        a = Conv(s, w, b)
        y = Relu(a)
    }}"""
    return save(_graph(text, _conv_weights()), tmp / "m.onnx")


def fails_at_run(tmp: Path) -> Path:
    text = f"""{HEADER} net (float[N, 3, 8, 8] x) => (float[7, 5] y) {{
        a = Conv(x, w, b)
        r = Relu(a)
        shape = Constant <value = int64[2] {{7, 5}}> ()
        y = Reshape(r, shape)
    }}"""
    return save(_graph(text, _conv_weights()), tmp / "m.onnx")


def five_channel_clip(tmp: Path) -> Path:
    text = f"{HEADER} net (float[N, 5, 4, 8, 8] x) => (float[N, 4, 2, 6, 6] y) {{ a = Conv(x, w, b) y = Relu(a) }}"
    weights = {"w": np.zeros((4, 5, 3, 3, 3)), "b": np.zeros(4)}
    return save(_graph(text, weights), tmp / "m.onnx")


def gray_input(tmp: Path) -> Path:
    text = f"{HEADER} net (float[N, 1, 8, 8] x) => (float[N, 4, 6, 6] y) {{ a = Conv(x, w, b) y = Relu(a) }}"
    return save(_graph(text, _conv_weights(inp=1)), tmp / "m.onnx")


def external_data(location: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        model = two_conv_model()
        weight = next(t for t in model.graph.initializer if t.name == "w1")
        weight.data_location = onnx.TensorProto.EXTERNAL
        del weight.external_data[:]
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
        weight.ClearField("raw_data")
        weight.ClearField("float_data")
        return save(model, tmp / "m.onnx")

    return build


def written(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name

    return build


def truncated(tmp: Path) -> Path:
    data = two_conv_model().SerializeToString()
    (tmp / "m.onnx").write_bytes(data[: len(data) // 2])
    return tmp / "m.onnx"


def folder(tmp: Path) -> Path:
    (tmp / "m.onnx").mkdir()
    return tmp / "m.onnx"


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def _torch_saved(path: Path) -> Path:
    import torch

    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)  # a zip archive, as TorchScript and torch.export write
    return path


MODEL_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # name: (build, config YAML, expected message fragment)
    "missing file": (lambda tmp: tmp / "absent.onnx", "", "no such model file"),
    "empty file": (written("m.onnx", b""), "", "not a readable ONNX model"),
    "random bytes": (written("m.onnx", os.urandom(512)), "", "not a readable ONNX model"),
    "truncated": (truncated, "", "not a readable ONNX model"),
    "a PNG named .onnx": (written("m.onnx", PNG_BYTES), "", "not a readable ONNX model"),
    "wrong extension": (written("m.h5", b"HDF"), "", "unknown model format '.h5'"),
    "a folder": (folder, "", "is a folder, not a model file"),
    "no conv layer": (no_conv, "", "has no Conv or ConvTranspose layer"),
    "dynamic size, none configured": (dynamic_size, "", "set models[].input.size"),
    "NaN weights": (nan_weights, "", "activation of layer"),
    "NaN output": (nan_output, "", "output 'y' is NaN or infinite"),
    "size does not fit": (
        lambda tmp: save(two_conv_model(), tmp / "m.onnx"),
        "models: [{path: m.onnx, input: {size: [32, 32]}}]",
        "input.size [32, 32] does not fit the model's fixed input [16, 16]",
    ),
    "two image inputs": (two_inputs, "", "expected one image input, found 2 (x, z)"),
    "fails when run": (fails_at_run, "", "onnxruntime failed on a batch"),
    "clip of five channels, no probe arrays": (
        five_channel_clip,
        "",
        "no default probe for an input of shape [N, 5, 4, 8, 8]: set probe.images: arrays.npy",
    ),
    "gray model told RGB": (
        gray_input,
        "models: [{path: m.onnx, input: {channels: RGB}}]",
        "input has 1 channels but input.channels is RGB",
    ),
    "three means for a gray model": (
        gray_input,
        "models: [{path: m.onnx, input: {mean: [0.5, 0.5, 0.5]}}]",
        "input.mean has 3 values but the model's input has 1 channel(s) (GRAY): give 1 value",
    ),
    "external data outside": (external_data("../outside.bin"), "", "lies outside the model's folder"),
    "external data absolute": (external_data("/etc/passwd"), "", "lies outside the model's folder"),
    "external data missing": (external_data("weights.bin"), "", "external data file 'weights.bin'"),
    "one image over the memory budget": (
        dynamic_size,
        "models: [{path: m.onnx, input: {size: [4096, 4096]}}]\nruntime: {memory_budget_mb: 64}",
        "over runtime.memory_budget_mb 64",
    ),
    "torch file named .onnx": (
        lambda tmp: _torch_saved(tmp / "m.onnx"),
        "",
        "not an ONNX model but a zip archive, as torch.save, TorchScript and torch.export write: name it .pt",
    ),
    "empty .pt": (written("m.pt", b""), "", "not a readable torch file"),
    "random .pt": (written("m.pt", os.urandom(300)), "", "not a readable torch file"),
    "corrupt .pt2": (written("m.pt2", os.urandom(300)), "", "not a readable torch.export archive"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_gives_one_clear_line(tmp_path: Path, case: str) -> None:
    build, config_text, expected = MODEL_CASES[case]
    path = build(tmp_path)
    (tmp_path / "cnnaudit.yaml").write_text(config_text + "\nchecks: {color: {enabled: false}}\n")
    with pytest.raises(CnnAuditError) as error:
        audit(path, tmp_path / "cnnaudit.yaml")
    message = str(error.value)
    assert expected in message
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{path}: "), message  # every model error names its model first


def _torch_files(tmp: Path) -> None:
    import torch

    (tmp / "arch.py").write_text(
        "import torch\n"
        "def net():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
        "def other():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5), torch.nn.ReLU())\n"
        "def wide(width):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU())\n"
        "def named():\n"
        "    module = torch.nn.Module()\n"
        "    module.conv = torch.nn.Conv2d(3, 4, 3)\n"
        "    return module\n"
    )
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    torch.save(module.state_dict(), tmp / "weights.pt")
    torch.save(module, tmp / "module.pt")
    torch.save({"weights": module.state_dict(), "hook": CallsOsSystem()}, tmp / "evil.pt")
    torch.save({"hook": CallsOsSystem()}, tmp / "evil_legacy.pt", _use_new_zipfile_serialization=False)
    (tmp / "pickled.pt").write_bytes(pickle.dumps(module.state_dict(), protocol=4))
    torch.save(module.state_dict(), tmp / "legacy.pt", _use_new_zipfile_serialization=False)


class CallsOsSystem:
    """A pickle that runs a shell command when loaded (it only echoes)."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo this pickle ran a command",))


TORCH_CASES = {
    "pickled module without opt-in": (
        "module.pt",
        "",
        "which can run code when loaded; save a state_dict and name a factory, or set trust_pickle: true for this "
        "model if you trust the file",
    ),
    "pickle calling os.system": (
        "evil.pt",
        "",
        "calls posix.system, which no model file needs: refused, even with trust_pickle: true",
    ),
    "pickle calling os.system, trusted": (
        "evil.pt",
        "trust_pickle: true",
        "calls posix.system, which no model file needs: refused, even with trust_pickle: true",
    ),
    "old-format pickle calling os.system": (
        "evil_legacy.pt",
        "",
        "calls posix.system, which no model file needs: refused, even with trust_pickle: true",
    ),
    "state_dict written by pickle.dump": (
        "pickled.pt",
        "factory: arch:net",
        "a plain Python pickle (pickle.dump), not a torch.save file: cnnaudit does not unpickle it (it can run "
        "code); save the weights with torch.save(model.state_dict(), path)",
    ),
    "legacy-format state_dict without factory": ("legacy.pt", "", "name the architecture with models[].factory"),
    "state_dict without factory": ("weights.pt", "", "name the architecture with models[].factory"),
    "state_dict, wrong factory": ("weights.pt", "factory: arch:other", "does not fit factory arch:other"),
    "state_dict, wrong factory_kwargs": (
        "weights.pt",
        "factory: arch:wide, factory_kwargs: {width: 6}",
        "does not fit factory arch:wide (factory_kwargs {'width': 6}): 0.weight is [4, 3, 3, 3] in the file, "
        "[6, 3, 3, 3] in the model (and 1 more tensor)",
    ),
    "state_dict, other layer names": (
        "weights.pt",
        "factory: arch:named",
        "does not fit factory arch:named: the file lacks conv.weight and 1 more; the model has no 0.weight and 1 more",
    ),
    "factory module missing": ("weights.pt", "factory: nosuchmodule:net", "cannot import factory module"),
    "factory malformed": ("weights.pt", "factory: arch.net", "must look like 'module:callable'"),
    "factory not callable": ("weights.pt", "factory: arch:torch", "arch has no callable 'torch'"),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_bad_torch_model_gives_one_clear_line(tmp_path: Path, case: str) -> None:
    _torch_files(tmp_path)
    name, extra, expected = TORCH_CASES[case]
    spec = f"{{path: {name}, input: {{size: [8, 8]}}{', ' + extra if extra else ''}}}"
    (tmp_path / "cnnaudit.yaml").write_text(f"models: [{spec}]\nchecks: {{color: {{enabled: false}}}}\n")
    with pytest.raises(CnnAuditError) as error, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        audit(tmp_path / name, tmp_path / "cnnaudit.yaml")
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not [w for w in warned if "pickle" in str(w.message)]  # torch's warnings on the way are not the message


CONFIG_CASES: dict[str, tuple[str, list[str], str]] = {
    # name: (cnnaudit.yaml, extra command-line arguments, expected line on stderr)
    "typo": (
        "checks:\n  sparsity:\n    mn: 0.1\n",
        [],
        "*cnnaudit.yaml:3: checks.sparsity.mn: unknown key 'mn'; did you mean 'min'?*",
    ),
    "wrong type": (
        "probe:\n  count: lots\n",
        [],
        "*cnnaudit.yaml:2: probe.count: got str 'lots', expected an integer*",
    ),
    "min > max": ("checks:\n  sparsity: {min: 0.9, max: 0.1}\n", [], "*checks.sparsity.min: min 0.9 > max 0.1*"),
    "fraction > 1": (
        "checks:\n  dead_filters: {max_fraction: 2}\n",
        [],
        "*max_fraction: got 2.0, expected a value in 0.0 .. 1.0*",
    ),
    "unknown check": ("checks:\n  sharpness: {}\n", [], "*cnnaudit.yaml:2: checks.sharpness: unknown key 'sharpness'*"),
    "unknown layer glob": (
        "layers:\n  - match: 'layr4.*'\n    skip: old\n",
        [],
        "*layers[[]0[]].match 'layr4.*' matches no layer*",
    ),
    "bad probe directory": ("probe: {images: no_such_dir}\n", [], "*probe.images: *no_such_dir does not exist*"),
    "empty probe directory": ("probe: {images: empty}\n", [], "*probe.images: *empty holds no image files*"),
    "unreadable image": ("probe: {images: broken}\n", [], "*probe.images: *bad.png is not a readable image*"),
    "probe array of wrong shape": (
        "probe: {images: flat.npy}\n",
        [],
        "*flat.npy has shape (4, 5), expected (N, H, W, 3) RGB*",
    ),
    "model in yaml missing": ("models:\n  - path: gone.onnx\n", [], "*models: gone.onnx does not exist*"),
    "not YAML": ("checks: [unclosed\n", [], "*cnnaudit.yaml:*: not valid YAML*"),
    "config flag to a missing file": ("", ["--cnnaudit-config", "nope.yaml"], "*config file nope.yaml does not exist*"),
    "baseline missing": (
        "",
        ["--cnnaudit-baseline", "old.json"],
        "*--cnnaudit-baseline old.json: cannot read the baseline*",
    ),
    "baseline of another kind": ("", ["--cnnaudit-baseline", "other.json"], "*not a cnnaudit-baseline/1 file*"),
    "save and compare one file": (
        "",
        ["--cnnaudit-baseline", "b.json", "--cnnaudit-save-baseline", "b.json"],
        "*name the same file*",
    ),
    # Values that reached a model before failing, or passed (issue 14): each refused before any model loads.
    "NaN max_fraction": (
        "checks:\n  dead_filters: {max_fraction: .nan}\n",
        [],
        "*cnnaudit.yaml:2: checks.dead_filters.max_fraction: got nan, expected a finite number (allowed: 0.0 .. 1.0)",
    ),
    "NaN max_sensitivity": (
        "checks:\n  color:\n    first_layer: {expect: invariant, max_sensitivity: .nan}\n",
        [],
        "*cnnaudit.yaml:3: checks.color.first_layer.max_sensitivity: got nan, expected a finite number*",
    ),
    "NaN min_selective_fraction": (
        "checks:\n  color:\n    first_layer: {expect: sensitive, min_selective_fraction: .nan}\n",
        [],
        "*cnnaudit.yaml:3: checks.color.first_layer.min_selective_fraction: got nan, expected a finite number*",
    ),
    "NaN lr": (
        "checks:\n  lr_sanity: {lr: .nan}\n",
        [],
        "*cnnaudit.yaml:2: checks.lr_sanity.lr: got nan, expected a finite number (allowed: 0.0 .. inf)",
    ),
    "infinite zero_eps": (
        "probe: {zero_eps: .inf}\n",
        [],
        "*cnnaudit.yaml:1: probe.zero_eps: got inf, expected a finite number (allowed: 0.0 .. inf)",
    ),
    "NaN in a model's colour bound": (
        "models:\n  - path: m.onnx\n    checks:\n      color: {layers: [{match: '*', max_selective_fraction: .nan}]}\n",
        [],
        "*cnnaudit.yaml:4: models[[]0[]].checks.color.layers[[]0[]].max_selective_fraction: got nan, expected a finite*",
    ),
    "two means for an RGB model": (
        "models:\n  - path: m.onnx\n    input: {mean: [0.5, 0.5]}\n",
        [],
        "*cnnaudit.yaml:3: models[[]0[]].input.mean: got 2 values, expected 1 or 3: input.channels is unset, "
        "so the model's input (1 or 3 channels) decides",
    ),
    "a model's override breaks the top level's": (
        "checks:\n  sparsity: {min: 0.5}\nmodels:\n  - path: m.onnx\n    checks:\n      sparsity: {max: 0.4}\n",
        [],
        "*cnnaudit.yaml:6: models[[]0[]].checks.sparsity.min: min 0.5 > max 0.4 (applied over the top-level checks)",
    ),
    "layer rule for a check that is off": (
        "layers:\n  - match: '*'\n    checks: {lr_sanity: {max_new_dead: 1}}\n",
        [],
        "*cnnaudit.yaml:3: layers[[]0[]].checks.lr_sanity: lr_sanity is off for every model, so this rule would "
        "change nothing*",
    ),
    "probe array with no image": (
        "probe: {images: zero.npy}\n",
        [],
        "*probe.images: *zero.npy has shape (0, 8, 8, 3): it holds no image",
    ),
    "probe array with NaN pixels": (
        "probe: {images: nan.npy}\n",
        [],
        "*probe.images: *nan.npy: image 1 has NaN or infinite pixels",
    ),
    "probe image of floats beyond 1": (
        "probe: {images: hdr}\n",
        [],
        "*probe.images: probe image *hdr.tiff: float pixels range 3.5 .. 3.5, expected within [[]0, 1[]]",
    ),
    "fewer probe images than count, crops refused": (
        "probe: {images: few, count: 5, augment: none}\n",
        [],
        "*probe.images: *few holds 2 images, fewer than probe.count 5; lower the count, or set probe.augment: crops*",
    ),
    "augment none for the shipped photographs": (
        "probe: {augment: none}\n",
        [],
        "*cnnaudit.yaml:1: probe.augment: none needs probe.images: the shipped photographs are always cropped",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_or_flag_is_a_usage_error_before_models_load(pytester: pytest.Pytester, case: str) -> None:
    text, arguments, expected = CONFIG_CASES[case]
    save(two_conv_model(), pytester.path / "m.onnx")
    pytester.makefile(".yaml", cnnaudit=text)
    (pytester.path / "empty").mkdir()
    (pytester.path / "broken").mkdir()
    (pytester.path / "broken" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    np.save(pytester.path / "flat.npy", np.zeros((4, 5)))
    np.save(pytester.path / "zero.npy", np.zeros((0, 8, 8, 3), np.uint8))
    np.save(pytester.path / "nan.npy", np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), np.nan)]))
    (pytester.path / "hdr").mkdir()
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(pytester.path / "hdr" / "hdr.tiff")
    (pytester.path / "few").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pytester.path / "few" / name)
    (pytester.path / "other.json").write_text(json.dumps({"schema": "something/1"}))
    result = pytester.runpytest("--cnnaudit", "m.onnx", *arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_flag_without_cnnaudit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cnnaudit-save-baseline", "b.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnnaudit-save-baseline needs --cnnaudit*"])


CRASHING_FACTORY = """
import multiprocessing, os, signal
import torch

def net():
    if multiprocessing.parent_process() is not None:  # inside cnnaudit's measuring child only
        os.kill(os.getpid(), signal.SIGSEGV)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
"""


def test_a_crashing_runtime_fails_only_its_model(pytester: pytest.Pytester) -> None:
    import torch

    pytester.makepyfile(crash_arch=CRASHING_FACTORY)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(), pytester.path / "c.pt")
    save(two_conv_model(), pytester.path / "ok.onnx")
    pytester.makefile(
        ".yaml",
        cnnaudit="models:\n  - path: c.pt\n    factory: crash_arch:net\n    input: {size: [16, 16]}\n"
        "checks: {color: {enabled: false}}\n",
    )
    result = pytester.runpytest("--cnnaudit", "ok.onnx", "c.pt", "--cnnaudit-json", "r.json")
    result.assert_outcomes(passed=4, failed=1)  # the crash happens while opening: c.pt's one load item fails
    result.stdout.fnmatch_lines(
        ["*c.pt :: load: c.pt: the runtime crashed while opening the model (signal 11 (SIGSEGV))*"]
    )
    models = {model["path"]: model for model in json.loads((pytester.path / "r.json").read_text())["models"]}
    assert "the runtime crashed" in models["c.pt"]["error"]
    assert models["ok.onnx"]["error"] is None and {c["outcome"] for c in models["ok.onnx"]["checks"]} == {"passed"}


def test_json_report_is_byte_identical_over_runs_and_under_xdist(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "a.onnx")
    save(two_conv_model(dead_conv2=(2,), seed=1), pytester.path / "b.onnx")
    reports = []
    for run in range(5):
        pytester.runpytest("--cnnaudit", "a.onnx", "b.onnx", "--cnnaudit-json", f"r{run}.json", "-p", "no:xdist")
        reports.append((pytester.path / f"r{run}.json").read_bytes())
    pytester.runpytest("--cnnaudit", "a.onnx", "b.onnx", "--cnnaudit-json", "rx.json", "-n", "2", "--dist", "loadgroup")
    reports.append((pytester.path / "rx.json").read_bytes())
    assert len(set(reports)) == 1
    assert json.loads(reports[0])["models"][1]["layers"][1]["dead_channels"] == [2]


@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".onnx", ".pt", ".pt2", ".pth"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_model_bytes_give_only_clear_errors(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    with pytest.raises(CnnAuditError) as error:
        audit(path, parse_config("models: [{path: x, input: {size: [8, 8]}}]"))
    assert "\n" not in str(error.value)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2), st.text(max_size=6))
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
config_keys = st.sampled_from(["models", "probe", "checks", "layers", "baseline", "runtime", "sparsity", "count"])


@given(document=st.dictionaries(config_keys, yaml_values, max_size=3))
@settings(max_examples=150, deadline=None)
def test_generated_configs_load_or_fail_with_a_located_config_error(document: dict) -> None:
    import yaml

    try:
        parse_config(yaml.safe_dump(document), "fuzz.yaml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.yaml:")
        assert "\n" not in str(error)
    else:  # accepted: then it held only known sections (a stray key must never pass silently)
        assert set(document) <= {"models", "probe", "checks", "layers", "baseline", "runtime"}
