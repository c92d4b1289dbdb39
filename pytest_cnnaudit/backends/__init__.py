"""Open a model with the right backend; the only place that picks one.

Imports are lazy so that auditing an ONNX model never imports torch (seconds of
start-up and gigabytes of libraries a pure-ONNX CI job does not need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.model import ModelSpec
from ..errors import ModelError
from .base import Backend, FirstConv, LayerInfo

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".torchscript", ".safetensors", ".bin", ".ckpt")
MODEL_SUFFIXES = ONNX_SUFFIXES + TORCH_SUFFIXES
#: The one line a PyTorch model file gets when torch is not installed (the base install audits ONNX).
TORCH_MODEL_MISSING = "a PyTorch model needs torch, which is not installed: pip install 'pytest-cnnaudit[torch]'"


def open_backend(model: Path | Any, spec: ModelSpec, config_dir: Path, batch_size: int, device: str = "cpu") -> Backend:
    """A ready backend for a model file (by extension) or an in-memory ``torch.nn.Module``; ``device``: a
    ``runtime.device`` value, taken when the model first runs."""
    if not isinstance(model, Path):
        from .torch import TorchBackend

        return TorchBackend(model, "module", spec.input, type(model).__name__, batch_size, device=device)
    if not model.exists():
        raise ModelError(f"{model}: no such model file")
    if model.is_dir():
        raise ModelError(f"{model}: is a folder, not a model file")
    if model.suffix.lower() in ONNX_SUFFIXES:
        from .onnx import OnnxBackend

        return OnnxBackend(model, spec.input, device=device)
    if model.suffix.lower() in TORCH_SUFFIXES:
        try:
            from .torch import TorchBackend, load_torch_module
        except ImportError as exc:
            if exc.name is None or exc.name.partition(".")[0] != "torch":
                raise
            raise ModelError(f"{model}: {TORCH_MODEL_MISSING}") from None
        loaded = load_torch_module(model, spec, config_dir)
        return TorchBackend(loaded.model, loaded.format, spec.input, str(model), batch_size, loaded.notes, device)
    raise ModelError(f"{model}: unknown model format {model.suffix!r} (expected one of {', '.join(MODEL_SUFFIXES)})")


__all__ = ["Backend", "FirstConv", "LayerInfo", "MODEL_SUFFIXES", "open_backend"]
