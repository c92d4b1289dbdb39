"""The audit engine end to end, without pytest in the loop: known answers, clear errors, the JSON report."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from modelbuilders import export_onnx, small_convnet

import pytest_cnnaudit
from pytest_cnnaudit.config import AuditConfig, InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.document import SCHEMA, AuditDocument, ModelDocument, Verdict, dump_json
from pytest_cnnaudit.engine.audit import audit_model
from pytest_cnnaudit.errors import CnnAuditError

SIZE = (32, 32)
PROBE = "probe: {count: 7, batch_size: 4}"  # 7: fixed-batch formats pad their last batch
PLANTED = {"conv2": (1, 5)}
EXPECTED_DEAD = [(), (1, 5), ()]  # conv1, conv2, conv3
LAYER_CHECKS = ("sparsity", "dead_filters")


def audit_module(module: torch.nn.Module, config: AuditConfig | None = None) -> ModelDocument:
    config = config or parse_config(PROBE)
    return audit_model(module, config, ModelSpec(path=type(module).__name__, input=InputSpec(size=SIZE)))


def layer_verdicts(result: ModelDocument) -> list[Verdict]:
    """The verdicts of the per-layer checks of the main pass (sparsity, dead filters)."""
    return [v for v in result.verdicts if v.check in LAYER_CHECKS]


def write_config(folder: Path, models: str = "") -> Path:
    """``cnnaudit.yaml`` in ``folder`` with the test probe settings and the given ``models:`` entries."""
    path = folder / "cnnaudit.yaml"
    path.write_text(f"{PROBE}\nmodels:\n{textwrap.dedent(models)}" if models else PROBE, encoding="utf-8")
    return path


def one_line_error(call: Callable[[], object], *fragments: str) -> str:
    """Run ``call``; it must raise a one-line CnnAuditError containing every fragment."""
    with pytest.raises(CnnAuditError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- planted dead channels, every format


def save_onnx_export(module: torch.nn.Module, folder: Path) -> tuple[Path, str]:
    return export_onnx(module, folder / "net.onnx", SIZE), ""


def save_torchscript(module: torch.nn.Module, folder: Path) -> tuple[Path, str]:
    path = folder / "net.pt"  # a TorchScript archive is recognised by its content, not its suffix
    torch.jit.script(module).save(str(path))
    return path, "- {path: net.pt, input: {size: [32, 32]}}"


def save_torch_export(module: torch.nn.Module, folder: Path) -> tuple[Path, str]:
    path = folder / "net.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(2, 3, *SIZE),)), str(path))
    return path, ""  # the archive records its input shape


def save_state_dict(module: torch.nn.Module, folder: Path) -> tuple[Path, str]:
    path = folder / "net.pth"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, path)
    (folder / "core_test_factory.py").write_text(
        "from modelbuilders import SmallConvNet\n\n\ndef build(width):\n    return SmallConvNet(width=width)\n"
    )
    entry = """\
    - path: net.pth
      factory: core_test_factory:build
      factory_kwargs: {width: 8}
      input: {size: [32, 32]}
    """
    return path, entry


SAVERS = {
    "onnx": save_onnx_export,
    "torchscript": save_torchscript,
    "torch.export": save_torch_export,
    "state_dict": save_state_dict,
}


def test_planted_dead_channels_in_torch_module() -> None:
    result = audit_module(small_convnet(PLANTED))
    assert [layer.id for layer in result.layers] == ["conv1", "conv2", "conv3"]
    assert [layer.activation for layer in result.layers] == ["relu"] * 3
    assert [layer.dead_channels for layer in result.layers] == EXPECTED_DEAD
    verdict = next(v for v in result.verdicts if v.item_id == "dead_filters[conv2]")
    assert verdict.outcome == "passed"  # 2 of 8 is within the default 25%
    assert "channels [1 (provable), 5 (provable)]" in verdict.message


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", SAVERS)
def test_planted_dead_channels_in_every_file_format(fmt: str, tmp_path: Path) -> None:
    module = small_convnet(PLANTED)
    path, entry = SAVERS[fmt](module, tmp_path)
    result = pytest_cnnaudit.audit(str(path), write_config(tmp_path, entry))
    (model,) = result.models
    assert model.format == fmt
    assert [layer.dead_channels for layer in model.layers] == EXPECTED_DEAD
    assert [layer.channels for layer in model.layers] == [8, 8, 8]
    assert model.probe is not None and model.probe.count == 7
    if fmt == "onnx":
        assert [layer.id for layer in model.layers] == ["/conv1/Conv", "/conv2/Conv", "/conv3/Conv"]
    else:
        assert [layer.id for layer in model.layers] == ["conv1", "conv2", "conv3"]
    reference = audit_module(module)
    for layer, expected in zip(model.layers, reference.layers):
        assert layer.sparsity == pytest.approx(expected.sparsity, abs=1e-4)
    assert result.passed


def test_pickled_module_is_refused_unless_trusted(tmp_path: Path) -> None:
    torch.save(small_convnet(PLANTED), tmp_path / "whole.pt")
    untrusted = write_config(tmp_path, "- {path: whole.pt, input: {size: [32, 32]}}")
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "whole.pt", untrusted), "whole.pt", "trust_pickle")
    trusted = write_config(tmp_path, "- {path: whole.pt, trust_pickle: true, input: {size: [32, 32]}}")
    (model,) = pytest_cnnaudit.audit(tmp_path / "whole.pt", trusted).models
    assert model.format == "module"
    assert [layer.dead_channels for layer in model.layers] == EXPECTED_DEAD


def test_state_dict_without_factory_asks_for_one(tmp_path: Path) -> None:
    torch.save(small_convnet().state_dict(), tmp_path / "weights.pth")
    config = write_config(tmp_path, "- {path: weights.pth, input: {size: [32, 32]}}")
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "weights.pth", config), "weights.pth", "factory")


def test_state_dict_that_does_not_fit_the_factory(tmp_path: Path) -> None:
    path, entry = save_state_dict(small_convnet(width=4), tmp_path)
    config = write_config(tmp_path, entry)
    one_line_error(lambda: pytest_cnnaudit.audit(path, config), "net.pth", "does not fit factory")


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("fmt", ["module", "onnx"])
def test_healthy_model_passes_default_checks(fmt: str, tmp_path: Path) -> None:
    module = small_convnet()
    if fmt == "module":
        result = audit_module(module, AuditConfig())
    else:
        (result,) = pytest_cnnaudit.audit(export_onnx(module, tmp_path / "net.onnx", SIZE)).models
    assert [layer.dead_channels for layer in result.layers] == [(), (), ()]
    assert len(layer_verdicts(result)) == 6
    assert {v.outcome for v in layer_verdicts(result)} == {"passed"}
    assert result.failed == ()
    assert all(0.03 <= layer.sparsity <= 0.97 for layer in result.layers)


@pytest.mark.parametrize("fmt", ["module", "onnx"])
def test_collapsed_layer_fails_naming_the_layer(fmt: str, tmp_path: Path) -> None:
    module = small_convnet({"conv3": range(8)})
    if fmt == "module":
        result, layer = audit_module(module), "conv3"
    else:
        (result,), layer = pytest_cnnaudit.audit(export_onnx(module, tmp_path / "net.onnx", SIZE)).models, "/conv3/Conv"
    failed = {v.item_id: v for v in layer_verdicts(result) if v.outcome == "failed"}
    assert set(failed) == {f"sparsity[{layer}]", f"dead_filters[{layer}]"}
    assert failed[f"sparsity[{layer}]"].layer == layer
    assert "sparsity 1.000 > max 0.97" in failed[f"sparsity[{layer}]"].message
    assert "8 of 8 channels never active" in failed[f"dead_filters[{layer}]"].message
    assert failed[f"dead_filters[{layer}]"].figures.dead_channels == tuple(range(8))


def test_always_active_layer_fails_min_sparsity() -> None:
    module = small_convnet()
    with torch.no_grad():
        module.conv1.weight.zero_()
        module.conv1.bias.fill_(1.0)
    result = audit_module(module)
    verdict = next(v for v in result.verdicts if v.item_id == "sparsity[conv1]")
    assert verdict.outcome == "failed"
    assert "sparsity 0.000 < min 0.03" in verdict.message


def test_stricter_limits_from_the_config_fail_planted_channels() -> None:
    config = parse_config(f"{PROBE}\nchecks: {{dead_filters: {{max_count: 0}}}}")
    result = audit_module(small_convnet(PLANTED), config)
    failed = [v for v in layer_verdicts(result) if v.outcome == "failed"]
    assert [v.item_id for v in failed] == ["dead_filters[conv2]"]
    assert "channels [1 (provable), 5 (provable)]" in failed[0].message


# --------------------------------------------------------------------------- clear errors


def test_missing_file(tmp_path: Path) -> None:
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "absent.onnx"), "absent.onnx", "no such model file")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "model.onnx"), "model.onnx", "folder")


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n")
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "model.h5"), "model.h5", "unknown model format", ".onnx")


@pytest.mark.parametrize(
    "content", [b"", b"hello", np.random.default_rng(0).bytes(4096)], ids=["empty", "text", "noise"]
)
@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".pth"])
@pytest.mark.parametrize("trust_pickle", [False, True])
def test_bytes_that_are_no_model(content: bytes, suffix: str, trust_pickle: bool, tmp_path: Path) -> None:
    """Not a model, whatever the suffix and however trusted: never mistaken for a pickled module."""
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(content)
    config = write_config(tmp_path, f"- {{path: junk{suffix}, trust_pickle: {str(trust_pickle).lower()}}}")
    one_line_error(lambda: pytest_cnnaudit.audit(path, config), str(path), "not a readable")


def test_trusted_pickle_of_a_class_that_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vanishing_arch.py").write_text(
        "from modelbuilders import SmallConvNet\n\n\nclass Vanishing(SmallConvNet):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_arch

    torch.save(vanishing_arch.Vanishing(), tmp_path / "whole.pt")
    monkeypatch.delitem(sys.modules, "vanishing_arch")
    (tmp_path / "vanishing_arch.py").unlink()
    config = write_config(tmp_path, "- {path: whole.pt, trust_pickle: true, input: {size: [32, 32]}}")
    one_line_error(lambda: pytest_cnnaudit.audit(tmp_path / "whole.pt", config), "whole.pt", "vanishing_arch")


def test_truncated_onnx_at_any_length(tmp_path: Path) -> None:
    data = export_onnx(small_convnet(), tmp_path / "full.onnx", SIZE).read_bytes()
    path = tmp_path / "cut.onnx"
    for length in [*range(0, 64, 7), *range(64, len(data), 97), len(data) - 1]:
        path.write_bytes(data[:length])
        one_line_error(lambda: pytest_cnnaudit.audit(path), str(path))


def test_onnx_without_conv(tmp_path: Path) -> None:
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 13]>\n'
        "net (float[N, 3, 8, 8] image) => (float[N, 3, 8, 8] out) { out = Relu (image) }"
    )
    path = tmp_path / "noconv.onnx"
    onnx.save(model, str(path))
    one_line_error(lambda: pytest_cnnaudit.audit(path), str(path), "no Conv")


def test_torch_module_without_conv() -> None:
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4), torch.nn.ReLU())
    one_line_error(lambda: audit_module(module), "Sequential", "no convolution layer")


def test_nn_module_without_input_size_asks_for_it() -> None:
    one_line_error(lambda: pytest_cnnaudit.audit(small_convnet()), "input.size")


# --------------------------------------------------------------------------- ONNX external data


@pytest.fixture
def external_data_model(tmp_path: Path) -> tuple[Path, onnx.ModelProto]:
    """An ONNX model in ``tmp_path/model`` whose weights live in ``weights.bin`` beside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(export_onnx(small_convnet(PLANTED), tmp_path / "inline.onnx", SIZE)))
    path = folder / "net.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path, onnx.load(str(path), load_external_data=False)


def relocate_external_data(model: onnx.ModelProto, location: str, path: Path) -> None:
    """Point every external tensor of ``model`` at ``location`` and write the graph (not the data) to ``path``."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


def test_external_data_inside_the_folder_loads(external_data_model: tuple[Path, onnx.ModelProto]) -> None:
    path, _ = external_data_model
    (model,) = pytest_cnnaudit.audit(path).models
    assert [layer.dead_channels for layer in model.layers] == EXPECTED_DEAD


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(
    where: str, external_data_model: tuple[Path, onnx.ModelProto]
) -> None:
    path, model = external_data_model
    outside = path.parent.parent / "x.bin"
    outside.write_bytes((path.parent / "weights.bin").read_bytes())  # a real file: refused for where it is
    location = {"parent": "../x.bin", "absolute": str(outside), "symlink": "link.bin"}[where]
    if where == "symlink":
        (path.parent / "link.bin").symlink_to(outside)
    relocate_external_data(model, location, path)
    one_line_error(lambda: pytest_cnnaudit.audit(path), str(path), repr(location), "outside the model's folder")


def test_missing_external_data_file(external_data_model: tuple[Path, onnx.ModelProto]) -> None:
    path, model = external_data_model
    relocate_external_data(model, "gone.bin", path)
    one_line_error(lambda: pytest_cnnaudit.audit(path), str(path), "'gone.bin'", "missing")


# --------------------------------------------------------------------------- no torch for ONNX, the JSON report


def test_auditing_onnx_does_not_import_torch(tmp_path: Path) -> None:
    export_onnx(small_convnet(PLANTED), tmp_path / "m.onnx", SIZE)
    script = (
        "import sys, pytest_cnnaudit\n"
        "result = pytest_cnnaudit.audit('m.onnx')\n"
        "assert [layer.dead_channels for layer in result.models[0].layers] == [(), (1, 5), ()]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


LAYER_KEYS = {"id", "op", "activation", "channels", "sparsity", "dead_channels"}
MODEL_KEYS = {"path", "format", "input", "probe", "layers", "checks"}
CHECK_KEYS = {"check", "layer", "outcome", "message"}


def test_json_report_has_the_documented_keys_and_is_stable(tmp_path: Path) -> None:
    path = export_onnx(small_convnet(PLANTED), tmp_path / "net.onnx", SIZE)
    config = write_config(tmp_path)
    first = pytest_cnnaudit.audit(path, config)
    document = first.to_json()
    assert set(document) == {"schema", "models"} and document["schema"] == SCHEMA == "cnnaudit-report/1"
    (model,) = document["models"]
    assert set(model) >= MODEL_KEYS
    assert model["format"] == "onnx" and model["path"] == str(path)
    assert model["input"]["size"] in ([32, 32], (32, 32)) and model["probe"]["count"] == 7
    assert all(set(layer) >= LAYER_KEYS for layer in model["layers"])
    assert [layer["dead_channels"] for layer in model["layers"]] == [[], [1, 5], []]
    assert all(set(check) >= CHECK_KEYS for check in model["checks"])
    assert {check["outcome"] for check in model["checks"] if check["check"] in LAYER_CHECKS} == {"passed"}
    first.write_json(tmp_path / "first.json")
    pytest_cnnaudit.audit(path, config).write_json(tmp_path / "second.json")
    assert (tmp_path / "first.json").read_bytes() == (tmp_path / "second.json").read_bytes()
    assert (tmp_path / "first.json").read_text(encoding="utf-8") == dump_json(document)


def test_json_report_of_a_module_is_stable() -> None:
    first = dump_json(AuditDocument(models=(audit_module(small_convnet(PLANTED)),)).to_json())
    second = dump_json(AuditDocument(models=(audit_module(small_convnet(PLANTED)),)).to_json())
    assert first == second
    assert '"format": "module"' in first
