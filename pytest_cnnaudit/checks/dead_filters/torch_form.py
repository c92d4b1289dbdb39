"""The differentiable torch form the witness search ascends: model input -> pre-activation tensors by key.

Torch models: a copy of the graph the backend measures (``torch.export``, with a dynamic batch
where the export allowed one). ONNX models: the onnx2torch conversion the learning-rate probe
trains (:mod:`~pytest_cnnaudit.checks.lr_sanity.network`), tapped at the pre-activation
tensors by their ONNX names. A recording call after each tapped node keeps a copy of its value
(autograd graph intact: an in-place activation next, torchvision's ``ReLU(inplace=True)``,
would overwrite it); the graph's own outputs stay as they are, and a pass stops as soon as
every tapped tensor is recorded (a search for an early layer's channel never runs the rest).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from ...backends.base import ModelGraph
from ...errors import CnnAuditError, first_line
from .witness import PreactivationNetwork


class TorchFormUnavailable(CnnAuditError):
    """The model has no torch form the search can run; the message says why."""


class _AllRecorded(Exception):
    """Raised by the last recording call of a pass: the rest of the network is not run."""


def preactivation_network(graph: ModelGraph, keys: Iterable[str]) -> tuple[PreactivationNetwork, str]:
    """The network returning the tensors named in ``keys`` (or those of them a call names), and what it is
    (for the report)."""
    values: dict[str, torch.Tensor] = {}
    wanted = set(keys)
    needed: set[str] = set()

    def record(key: str, value: torch.Tensor) -> None:
        values[key] = value.clone()
        if needed <= values.keys():
            raise _AllRecorded  # what follows the deepest tensor this pass needs is never used: stop there

    if graph.kind == "onnx":
        module, description = _converted(graph, wanted, record)
    else:
        module = copy.deepcopy(graph.graph)
        for node in [node for node in module.graph.nodes if node.name in wanted]:
            with module.graph.inserting_after(node):
                module.graph.call_function(record, (node.name, node))
        module.recompile()
        description = "a copy of the torch.export graph the audit measured"
    for parameter in module.parameters():
        parameter.requires_grad_(False)  # gradients are wanted for the input only

    def network(inputs: torch.Tensor, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        values.clear()
        needed.clear()
        needed.update(wanted if keys is None else keys)
        try:
            module(inputs)
        except _AllRecorded:
            pass
        except Exception as exc:
            text = first_line(exc)
            raise TorchFormUnavailable(
                f"the torch form failed on a batch of shape {list(inputs.shape)}: {text}"
            ) from None
        missing = needed - set(values)
        if missing:
            raise TorchFormUnavailable(f"the torch form computes no tensor named {sorted(missing)[0]!r}")
        return dict(values)

    return network, description


def _converted(graph: ModelGraph, wanted: set[str], record) -> tuple[torch.nn.Module, str]:
    from ..lr_sanity.network import ProbeUnavailable, converted_onnx, onnx2torch_version, tap_onnx_tensors

    try:
        module = converted_onnx(graph.graph)
    except ProbeUnavailable as exc:
        raise TorchFormUnavailable(str(exc)) from None
    tap_onnx_tensors(module, wanted, record)
    return module.eval(), f"the onnx2torch {onnx2torch_version()} conversion of the ONNX model"
