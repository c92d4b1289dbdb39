"""The torch backend: an exported, instrumented graph of the model, run batch by batch.

On the CPU the recording calls hand each activation over as a zero-copy numpy view and the
reductions are numpy's (:func:`~pytest_cnnaudit.backends.reductions.numpy_reductions`: 8x
faster there than torch's, 28 ms against 241 ms on a 98 MB activation). On a CUDA device the
recording calls reduce each activation with torch ops where it lives, and the batch's (N, C)
figures cross to the host once, after the forward pass: no activation leaves the GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...config.model import InputSpec
from ...errors import ModelError, first_line
from ..base import (
    ActivationSink,
    FirstConv,
    LayerTensors,
    ModelGraph,
    resolve_input_spec,
    sample_shape,
)
from ..device import torch_device
from ..reductions import PerImageReductions, ReducedSink, numpy_reductions
from .graph import (
    CONV_TARGETS,
    activation_and_input,
    batch_norm_scale,
    export_graph,
    getattr_path,
    instrument,
    layer_id,
    weight_name,
)


class TorchBackend:
    """A torch model opened for measurement.

    ``notes`` are one-line remarks for the report on what loading the file took (a stripped key
    prefix, the checkpoint key the weights came from); empty when nothing needed saying.
    """

    def __init__(
        self,
        model: Any,
        format: str,
        configured: InputSpec,
        name: str,
        batch_size: int,
        notes: tuple[str, ...] = (),
        device: str = "cpu",
    ) -> None:
        self.format = format
        self.name = name
        self.notes = notes
        self.input_spec = resolve_input_spec(configured, self._declared_shape(model), name)
        example = torch.zeros((batch_size, *sample_shape(self.input_spec)), dtype=torch.float32)
        self.graph_module, self.fixed_batch = export_graph(model, example, name)
        self._sink: ActivationSink | None = None
        self._pending: dict[str, tuple[int, tuple[torch.Tensor, ...]]] | None = None
        self._eps = 0.0
        self.layers = instrument(self.graph_module, self._record)
        if not self.layers:
            raise ModelError(f"{name}: the model has no convolution layer, so there is nothing to audit")
        self._requested_device = device
        self._device: str | None = None  # resolved, and the graph moved there, at the first run

    @property
    def device(self) -> str:
        """The torch device the model runs on ("cpu", "cuda:N"), the graph moved there on first use.

        Not at opening: planning opens every model to list its layers, and a CUDA context costs seconds.
        """
        if self._device is None:
            device, note = torch_device(self._requested_device)
            if note is not None:
                self.notes = (*self.notes, note)
            if device != "cpu":
                self.graph_module.to(device)
            self._device = device
        return self._device

    def trainable_copy(self, record: Callable[[str, torch.Tensor], None]) -> torch.fx.GraphModule | None:
        """A deep copy of the measured graph, weights included, whose recording calls go to ``record``.

        It saves the learning-rate probe a second ``torch.export`` of the model (about half a
        second for a resnet18). None for a converted TorchScript model, whose graph is fixed to
        the main pass's batch size: the probe exports its own at the training batch size.
        """
        if self.format == "torchscript":
            return None
        copied = copy.deepcopy(self.graph_module)
        for node in copied.graph.nodes:
            if node.op == "call_function" and node.target == self._record:
                node.target = record
        copied.recompile()
        return copied

    @staticmethod
    def _declared_shape(model: Any) -> tuple[int | None, ...] | None:
        """An ExportedProgram records its example input's shape; other formats do not."""
        if isinstance(model, torch.export.ExportedProgram):
            for node in model.graph.nodes:
                if node.op == "placeholder" and node.name in model.graph_signature.user_inputs:
                    value = node.meta.get("val")
                    if value is not None:
                        return (None, *(int(d) if isinstance(d, int) else None for d in value.shape[1:]))
        return None

    def _record(self, key: str, activation: torch.Tensor) -> None:
        if self._sink is not None:
            self._sink(key, activation.detach().cpu().numpy(), 1)
        elif self._pending is not None:
            self._pending[key] = (activation[0, 0].numel(), torch_reductions(activation.detach(), self._eps))

    def _forward(self, batch: np.ndarray) -> None:
        try:
            with torch.no_grad():
                output = self.graph_module(torch.from_numpy(batch).to(self.device))
        except ModelError:
            raise
        except Exception as exc:
            message = first_line(exc)
            raise ModelError(
                f"{self.name}: the model failed on a batch of shape {list(batch.shape)}: {message}"
            ) from None
        for i, leaf in enumerate(torch.utils._pytree.tree_leaves(output)):
            # Checked where the output lives: a segmentation model's maps need not cross to the host for it.
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not bool(leaf.isfinite().all()):
                raise ModelError(
                    f"{self.name}: the model's output 'output {i}' is NaN or infinite for some probe images"
                )

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        self._sink = sink
        try:
            self._forward(batch)
        finally:
            self._sink = None

    @property
    def reduces_on_device(self) -> bool:
        """Whether the recording calls reduce each activation with torch ops where it lives (a CUDA device),
        rather than handing it to numpy as a zero-copy view (the CPU)."""
        return self.device != "cpu"

    def run_reduced(self, batch: np.ndarray, eps: float, sink: ReducedSink) -> None:
        if not self.reduces_on_device:
            self.run(batch, lambda key, activation, axis: sink(key, numpy_reductions(activation, axis, eps)))
            return
        self._pending, self._eps = {}, eps
        try:
            self._forward(batch)
            pending = self._pending
        finally:
            self._pending = None
        for key, (positions, reduced) in pending.items():
            maxima, active, sums = (tensor.cpu().numpy() for tensor in reduced)
            sink(key, PerImageReductions(positions, maxima, active, sums, reduced[0].element_size()))

    def first_conv(self) -> FirstConv | None:
        for node in self.graph_module.graph.nodes:
            if node.op == "call_function" and node.target in CONV_TARGETS:
                name = weight_name(node)
                if name is None:
                    return None
                weight = getattr_path(self.graph_module, f"{name}.weight").detach().cpu().numpy().astype(np.float64)
                if weight.ndim != 4:
                    return None
                scale = batch_norm_scale(self.graph_module, node)
                if scale is not None:
                    weight = weight * scale.reshape(-1, 1, 1, 1)
                return FirstConv(layer_id=layer_id(node), weight=weight.astype(np.float32))
        return None

    def model_graph(self) -> ModelGraph:
        """A deep copy of the measured graph without its recording calls, and each layer's nodes by name;
        on the CPU, where the bound proof, the cost and the witness search read it."""
        copied = copy.deepcopy(self.graph_module).to("cpu")
        for node in list(copied.graph.nodes):
            if node.op == "call_function" and node.target == self._record:
                copied.graph.erase_node(node)
        copied.recompile()
        tensors: dict[str, LayerTensors] = {}
        for node in copied.graph.nodes:
            if node.op == "call_function" and node.target in CONV_TARGETS:
                found = activation_and_input(node)
                activation, preactivation = (found[0].node.name, found[1].name) if found else (None, None)
                tensors.setdefault(layer_id(node), LayerTensors(node.name, activation, preactivation))
        return ModelGraph("torch.fx", copied, tensors, self.fixed_batch)

    def end_pass(self) -> None:
        """Nothing: the checks run the same graph module again."""

    def close(self) -> None:
        self.graph_module = None  # type: ignore[assignment]


def torch_reductions(activation: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, active, sum) of an (N, C, ...) activation over its positions, each (N, C), where it lives.

    The sum accumulates in float64 as numpy's does; ``active`` is int64 (a map has fewer than 2**63 values).
    """
    flat = activation.flatten(2)
    return flat.amax(dim=2), (flat > eps).sum(dim=2), flat.double().sum(dim=2)
