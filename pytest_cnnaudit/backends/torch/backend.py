"""The torch backend: an exported, instrumented graph of the model, run batch by batch."""

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
    check_finite_outputs,
    resolve_input_spec,
    sample_shape,
)
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
    ) -> None:
        self.format = format
        self.name = name
        self.notes = notes
        self.input_spec = resolve_input_spec(configured, self._declared_shape(model), name)
        example = torch.zeros((batch_size, *sample_shape(self.input_spec)), dtype=torch.float32)
        self.graph_module, self.fixed_batch = export_graph(model, example, name)
        self._sink: ActivationSink | None = None
        self.layers = instrument(self.graph_module, self._record)
        if not self.layers:
            raise ModelError(f"{name}: the model has no convolution layer, so there is nothing to audit")

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
            self._sink(key, activation.detach().numpy(), 1)

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        self._sink = sink
        try:
            with torch.no_grad():
                output = self.graph_module(torch.from_numpy(batch))
        except ModelError:
            raise
        except Exception as exc:
            message = first_line(exc)
            raise ModelError(
                f"{self.name}: the model failed on a batch of shape {list(batch.shape)}: {message}"
            ) from None
        finally:
            self._sink = None
        leaves = torch.utils._pytree.tree_leaves(output)
        tensors = {f"output {i}": t.detach().numpy() for i, t in enumerate(leaves) if isinstance(t, torch.Tensor)}
        check_finite_outputs(tensors, self.name)

    def first_conv(self) -> FirstConv | None:
        for node in self.graph_module.graph.nodes:
            if node.op == "call_function" and node.target in CONV_TARGETS:
                name = weight_name(node)
                if name is None:
                    return None
                weight = getattr_path(self.graph_module, f"{name}.weight").detach().numpy().astype(np.float64)
                if weight.ndim != 4:
                    return None
                scale = batch_norm_scale(self.graph_module, node)
                if scale is not None:
                    weight = weight * scale.reshape(-1, 1, 1, 1)
                return FirstConv(layer_id=layer_id(node), weight=weight.astype(np.float32))
        return None

    def model_graph(self) -> ModelGraph:
        """A deep copy of the measured graph without its recording calls, and each layer's nodes by name."""
        copied = copy.deepcopy(self.graph_module)
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

    def close(self) -> None:
        self.graph_module = None  # type: ignore[assignment]
