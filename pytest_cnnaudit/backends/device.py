"""Which device a model runs on: ``runtime.device`` (auto, cpu, cuda, cuda:N) against what is installed.

``auto`` takes CUDA when the runtime has it and says nothing otherwise; an explicit ``cuda`` that
cannot be had runs on the CPU with a one-line note in the model's document, rather than failing
an audit that a CPU can still do. onnxruntime's CUDA provider comes with the ``onnxruntime-gpu``
package, which installs the same ``onnxruntime`` module as the CPU package and replaces it.
"""

from __future__ import annotations

from typing import Any

#: How a user gets onnxruntime's CUDA provider (the two packages must not be installed together).
ONNX_GPU_INSTALL = "pip uninstall onnxruntime && pip install onnxruntime-gpu"


def _index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


def onnx_providers(device: str) -> tuple[list[Any], str | None]:
    """onnxruntime's providers for ``device``, and a note when CUDA was asked for and is not installed."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"], None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": _index(device)}), "CPUExecutionProvider"], None
    if device == "auto":
        return ["CPUExecutionProvider"], None
    return ["CPUExecutionProvider"], (
        f"runtime.device {device}: this onnxruntime has no CUDA provider, so the model ran on the CPU "
        f"({ONNX_GPU_INSTALL})"
    )


def onnx_session_note(session: Any, providers: list[Any]) -> str | None:
    """A note when the CUDA provider was asked for but did not load (onnxruntime then runs on the CPU
    silently: its CUDA or cuDNN libraries are missing or do not match)."""
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if wanted != "CUDAExecutionProvider" or session.get_providers()[0] == "CUDAExecutionProvider":
        return None
    return (
        "onnxruntime's CUDA provider did not load (CUDA or cuDNN libraries missing or of another version), "
        "so the model ran on the CPU"
    )


def torch_device(device: str) -> tuple[str, str | None]:
    """The torch device for ``device`` ("cpu" or "cuda:N"), and a note when CUDA was asked for and is missing."""
    import torch

    if device == "cpu":
        return "cpu", None
    if torch.cuda.is_available() and _index(device) < torch.cuda.device_count():
        return f"cuda:{_index(device)}", None
    if device == "auto":
        return "cpu", None
    return "cpu", f"runtime.device {device}: torch has no such CUDA device here, so the model ran on the CPU"
