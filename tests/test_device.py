"""``runtime.device``: which device a model runs on, tested on a CPU-only machine.

The selection logic is checked against faked runtimes (onnxruntime with a CUDA provider, torch with
two GPUs); the end-to-end tests ask for CUDA where there is none and expect the CPU's verdicts with a
one-line note in the model's document.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from modelbuilders import save, two_conv_model

from pytest_cnnaudit.backends import device as device_module
from pytest_cnnaudit.backends.device import onnx_providers, onnx_session_note, torch_device
from pytest_cnnaudit.config import InputSpec, ModelSpec, parse_config
from pytest_cnnaudit.engine.audit import audit_document
from pytest_cnnaudit.errors import ConfigError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", "tpu"])
def test_a_device_that_is_not_one_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.device: .* is not a device: auto, cpu, cuda or cuda:N"):
        parse_config(f"runtime: {{device: '{value}'}}\n")


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_every_device_form_is_accepted(value: str) -> None:
    assert parse_config(f"runtime: {{device: '{value}'}}\n").runtime.device == value


def test_onnx_without_a_cuda_provider_runs_on_the_cpu_and_says_so_only_when_cuda_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert onnx_providers("cpu") == ([CPU], None)
    assert onnx_providers("auto") == ([CPU], None)
    providers, note = onnx_providers("cuda:1")
    assert providers == [CPU]
    assert note is not None and note.startswith("runtime.device cuda:1: this onnxruntime has no CUDA provider")
    assert "pip install onnxruntime-gpu" in note


def test_onnx_with_a_cuda_provider_takes_the_asked_gpu_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert onnx_providers("auto") == ([(CUDA, {"device_id": 0}), CPU], None)
    assert onnx_providers("cuda") == ([(CUDA, {"device_id": 0}), CPU], None)
    assert onnx_providers("cuda:2") == ([(CUDA, {"device_id": 2}), CPU], None)
    assert onnx_providers("cpu") == ([CPU], None)  # cpu means cpu even where a GPU is


class FakeSession:
    def __init__(self, providers: list[str]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return self.providers


def test_a_cuda_provider_that_did_not_load_is_noted() -> None:
    """onnxruntime falls back to the CPU silently when its CUDA libraries are missing."""
    asked = [(CUDA, {"device_id": 0}), CPU]
    assert "did not load" in (onnx_session_note(FakeSession([CPU]), asked) or "")
    assert onnx_session_note(FakeSession([CUDA, CPU]), asked) is None
    assert onnx_session_note(FakeSession([CPU]), [CPU]) is None


def test_torch_device_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("cpu") == ("cpu", None)
    assert torch_device("auto") == ("cpu", None)
    device, note = torch_device("cuda")
    assert (
        device == "cpu"
        and note == "runtime.device cuda: torch has no such CUDA device here, so the model ran on the CPU"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("auto") == ("cuda:0", None)
    assert torch_device("cuda:1") == ("cuda:1", None)
    assert torch_device("cuda:2")[0] == "cpu"  # no third GPU
    assert torch_device("cpu") == ("cpu", None)


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    return save(two_conv_model(), tmp_path / "m.onnx")


def _audit(model: Path | torch.nn.Module, device: str, spec: ModelSpec | None = None):
    config = parse_config(f"runtime: {{isolate: false, device: '{device}'}}\nchecks: {{color: {{enabled: false}}}}\n")
    document, _ = audit_document(model, config, spec)
    return document


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA: nothing falls back")
def test_an_onnx_model_asked_onto_cuda_without_one_gets_the_cpu_verdicts_and_a_note(onnx_model: Path) -> None:
    on_cpu, asked = _audit(onnx_model, "cpu"), _audit(onnx_model, "cuda:1")
    assert on_cpu.error is None and asked.error is None
    assert asked.verdicts == on_cpu.verdicts
    assert [layer.dead_channels for layer in asked.layers] == [layer.dead_channels for layer in on_cpu.layers]
    assert on_cpu.notes == ()
    assert asked.notes == (
        "runtime.device cuda:1: this onnxruntime has no CUDA provider, so the model ran on the CPU "
        f"({device_module.ONNX_GPU_INSTALL})",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing falls back")
def test_a_torch_model_asked_onto_cuda_without_one_gets_the_cpu_verdicts_and_a_note() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU())
    spec = ModelSpec(path="net", input=InputSpec(size=(16, 16)))
    on_cpu, asked = _audit(module.eval(), "cpu", spec), _audit(module.eval(), "cuda", spec)
    assert asked.verdicts == on_cpu.verdicts
    assert np.allclose([layer.sparsity for layer in asked.layers], [layer.sparsity for layer in on_cpu.layers])
    assert asked.notes == ("runtime.device cuda: torch has no such CUDA device here, so the model ran on the CPU",)
