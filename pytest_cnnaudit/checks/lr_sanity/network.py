"""Trainable torch copies of a model, tapped after every measured activation like the main pass.

**The trainable copy.** Every torch format becomes the same kind of network: the model
(a deep copy of an in-memory one, or a fresh load of its file: a state_dict re-instantiated
through its factory, a ``torch.export`` archive, a TorchScript archive) goes through the
main pass's own :func:`~pytest_cnnaudit.backends.torch.export_graph` and
:func:`~pytest_cnnaudit.backends.torch.instrument`, so the layers and their ids are the
main pass's. An exported graph bakes BatchNorm's eval mode into its calls
(:class:`GraphBatchNorm` rewrites them into their training form for the training steps,
and back for measuring). A converted TorchScript graph holds its weights as buffers; those that were
parameters of the script module are trained. Every parameter is trained, frozen ones too.

**ONNX** models are converted with onnx2torch. The layer table is the ONNX one
(:func:`~pytest_cnnaudit.backends.onnx.graph.conv_layers` on the same file, so the ids
are the main pass's Conv node names), and each measured activation is tapped by its ONNX
tensor name through the mapping onnx2torch attaches to every module it creates. Module
names are not used: onnx2torch strips the leading '/' of node names, renames duplicates
and names unnamed nodes itself, and which tensor follows which Conv stays the ONNX graph
walker's decision. Exporting the trained copy back to ONNX was rejected: the exporter
renames nodes and may fold BatchNorm into Conv, so ids could only be matched by position.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ...backends.base import ActivationSink, LayerInfo, sample_shape
from ...backends.onnx import load_onnx_model
from ...backends.onnx.graph import OnnxGraph, conv_layers
from ...backends.torch import TorchBackend, export_graph, getattr_path, instrument, load_torch_module
from ...config.model import InputSpec
from ...engine.check import AuditContext
from ...errors import ModelError, first_line

aten = torch.ops.aten


class ProbeUnavailable(Exception):
    """The model has no trainable torch form, or the form cannot run; the message says why."""


class _Tap:
    """Hands tapped activations to the current sink; does nothing while training.

    A copy trained at too high a rate may compute NaN or infinite activations: their
    tensors are noted in ``non_finite`` and reach the sink as ones, active rather than
    dead, so that the layers around them are still counted.
    """

    def __init__(self, channel_axes: dict[str, int] | None = None) -> None:
        self.sink: ActivationSink | None = None
        self.channel_axes = channel_axes or {}
        self.non_finite: set[str] = set()

    def record(self, key: str, activation: torch.Tensor) -> None:
        if self.sink is None:
            return
        values = activation.detach().numpy()
        if not np.isfinite(values).all():
            self.non_finite.add(key)
            values = np.nan_to_num(values, nan=1.0, posinf=1.0, neginf=-1.0)
        self.sink(key, values, self.channel_axes.get(key, 1))


@dataclass
class ProbeNetwork:
    """A trainable torch copy of the model, tapped after every measured activation.

    It is also a :class:`~pytest_cnnaudit.backends.base.Backend`, so that
    :func:`~pytest_cnnaudit.measure.measure` counts its dead channels as the main pass does.
    """

    module: torch.nn.Module
    layers: tuple[LayerInfo, ...]
    tap: _Tap
    input_spec: InputSpec
    fixed_batch: int | None
    trainable: list[torch.Tensor]
    set_batch_norm_training: Callable[[bool], None]
    description: str
    format: str = "probe"
    outputs: list[torch.Tensor] | None = None  # when a list, run() appends each batch's model output

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's first output (a classifier's logits)."""
        try:
            output = self.module(inputs)
        except Exception as exc:
            raise ProbeUnavailable(
                f"the trainable copy failed on a batch of shape {list(inputs.shape)}: {first_line(exc)}"
            ) from None
        while not isinstance(output, torch.Tensor):  # a tuple, list or dict of outputs: the first one
            output = next(iter(output.values())) if isinstance(output, dict) else output[0]
        return output

    def run(self, batch: np.ndarray, sink: ActivationSink) -> None:
        self.tap.sink = sink
        try:
            with torch.no_grad():
                output = self.forward(torch.from_numpy(batch))
        finally:
            self.tap.sink = None
        if self.outputs is not None:
            self.outputs.append(output)

    def first_conv(self) -> None:
        return None

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
        self.trainable = []


# --------------------------------------------------------------------------- torch models


def _training_form(target: Any, args: tuple) -> tuple[Any, tuple]:
    """An exported BatchNorm call that normalises with batch statistics and leaves the running ones alone."""
    if target == aten.batch_norm.default:
        return target, (*args[:3], None, None, True, *args[6:])
    momentum, eps = args[5:7]  # _native_batch_norm_legit_no_training(input, weight, bias, mean, var, momentum, eps)
    return aten._native_batch_norm_legit.no_stats, (*args[:3], True, momentum, eps)


class GraphBatchNorm:
    """Switches an exported graph's BatchNorm calls between their exported (eval) form and a training form."""

    EVAL_TARGETS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        self.graph_module = graph_module
        self.exported = {
            node: (node.target, node.args)
            for node in graph_module.graph.nodes
            if node.op == "call_function" and node.target in self.EVAL_TARGETS
        }

    def __call__(self, training: bool) -> None:
        if not self.exported:
            return
        for node, (target, args) in self.exported.items():
            node.target, node.args = _training_form(target, args) if training else (target, args)
        self.graph_module.recompile()


def _trainable_tensors(graph_module: torch.nn.Module, source: Any) -> list[torch.Tensor]:
    """Parameters of the graph, and the buffers that were parameters of a TorchScript source."""
    names = {name for name, _ in graph_module.named_parameters()}
    if isinstance(source, torch.jit.ScriptModule):
        names |= {name for name, _ in source.named_parameters()}
    tensors = []
    for name in graph_module.state_dict():
        if name in names:
            tensor = getattr_path(graph_module, name)
            tensors.append(tensor.requires_grad_(True))
    return tensors


def _fresh_copy(context: AuditContext) -> Any:
    """A copy of the model nobody else holds: a deep copy in memory, or the file loaded again."""
    if not isinstance(context.model, Path):
        return copy.deepcopy(context.model)
    config_dir = context.plan.config.base_dir
    return load_torch_module(context.model, context.plan.spec, config_dir)[0]


def _example(spec: InputSpec, batch: int) -> torch.Tensor:
    return torch.zeros((batch, *sample_shape(spec)), dtype=torch.float32)


def torch_network(context: AuditContext, batch_size: int) -> ProbeNetwork:
    """A private, trainable copy of a torch model's exported graph, tapped like the main pass.

    The main pass's graph is copied when it can be; a TorchScript model is loaded and
    exported again, at the training batch size.
    """
    tap = _Tap()
    backend = context.backend
    graph_module = backend.trainable_copy(tap.record) if isinstance(backend, TorchBackend) else None
    if graph_module is not None:
        graph_module.to("cpu")  # the probe trains on the CPU whatever runtime.device (README: Runtime)
        layers, fixed_batch, source = backend.layers, backend.fixed_batch, None
    else:
        source = _fresh_copy(context)
        try:
            graph_module, fixed_batch = export_graph(
                source, _example(backend.input_spec, batch_size), context.plan.name
            )
        except ModelError as exc:
            raise ProbeUnavailable(str(exc)) from None
        layers = instrument(graph_module, tap.record)
    return ProbeNetwork(
        module=graph_module,
        layers=layers,
        tap=tap,
        input_spec=backend.input_spec,
        fixed_batch=fixed_batch,
        trainable=_trainable_tensors(graph_module, source),
        set_batch_norm_training=GraphBatchNorm(graph_module),
        description=f"torch.export graph of a copy of the {backend.format}",
    )


# --------------------------------------------------------------------------- ONNX models


def tap_onnx_tensors(
    module: torch.fx.GraphModule, tensors: Iterable[str], record: Callable[[str, torch.Tensor], None]
) -> None:
    """Call ``record(name, value)`` after the converted module that produces each of the ONNX ``tensors``."""
    graph = module.graph
    wanted = set(tensors)
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        outputs = module.get_submodule(node.target).onnx_mapping.outputs
        for index, tensor in enumerate(outputs):
            if tensor not in wanted:
                continue
            value = node
            if len(outputs) > 1:
                with graph.inserting_after(node):
                    value = graph.call_function(operator.getitem, (node, index))
            with graph.inserting_after(value):
                graph.call_function(record, (tensor, value))
    module.recompile()


def constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``Constant`` tensors are initializers: onnx2torch reads a conv's weights
    from the initializers only, and exporters such as Paddle's write them as ``Constant`` nodes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = []
    for node in copy.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None:
            kept.append(node)
            continue
        value.name = node.output[0]
        copy.graph.initializer.append(value)
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    return copy


def converted_onnx(model: onnx.ModelProto) -> torch.fx.GraphModule:
    """onnx2torch's conversion of ``model``, each module mapped to its ONNX tensors (``onnx_mapping``)."""
    try:
        import onnx2torch
    except ImportError:
        raise ProbeUnavailable(
            "a torch form of an ONNX model needs onnx2torch: pip install 'pytest-cnnaudit[torch]'"
        ) from None
    try:
        return onnx2torch.convert(constants_as_initializers(model), attach_onnx_mapping=True)
    except Exception as exc:
        raise ProbeUnavailable(f"onnx2torch cannot convert the model to torch: {first_line(exc)}") from None


def onnx2torch_version() -> str:
    return metadata.version("onnx2torch")


def _set_module_batch_norm(module: torch.nn.Module, training: bool) -> None:
    """Eval mode everywhere (dropout off); when training, BatchNorm on batch statistics, running ones untouched."""
    module.eval()
    for child in module.modules():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            child.train(training)
            child.track_running_stats = not training  # BatchNorm then passes no running statistics to update


def onnx_network(context: AuditContext) -> ProbeNetwork:
    """An onnx2torch conversion of the ONNX file, tapped at the main pass's activation tensors."""
    model = load_onnx_model(context.model)
    layers, channel_axes = conv_layers(OnnxGraph(model))
    module = converted_onnx(model)
    tap = _Tap(channel_axes)
    tap_onnx_tensors(module, channel_axes, tap.record)
    return ProbeNetwork(
        module=module,
        layers=layers,
        tap=tap,
        input_spec=context.backend.input_spec,
        fixed_batch=context.backend.fixed_batch,
        trainable=list(module.parameters()),
        set_batch_norm_training=lambda training: _set_module_batch_norm(module, training),
        description=f"onnx2torch {onnx2torch_version()} conversion of the ONNX model",
    )
