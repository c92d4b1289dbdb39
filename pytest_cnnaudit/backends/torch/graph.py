"""The model as a ``torch.export`` graph: conv layers found by walking it, recording calls inserted.

Why ``torch.export``: one graph representation for every torch format, in which
the activation that follows each conv is found by walking the graph (as for
ONNX), never guessed from module order; a ReLU module reused twice (ResNet's
BasicBlock) is two graph nodes. A recording call is inserted after each
activation node of a private copy of the graph, so statistics are computed as
the forward pass goes and the user's module is never touched. TorchScript
archives are converted with torch's own TorchScript-to-export converter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import ModelError
from ..base import LayerInfo

aten = torch.ops.aten
CONV_TARGETS = {
    aten.conv1d.default: "Conv",
    aten.conv2d.default: "Conv",
    aten.conv3d.default: "Conv",
    aten.convolution.default: "Conv",
    aten.conv_transpose2d.input: "ConvTranspose",
}
ACTIVATION_TARGETS = {
    aten.relu.default: "relu",
    aten.relu_.default: "relu",
    aten.relu6.default: "relu6",
    aten.hardswish.default: "hardswish",
    aten.hardswish_.default: "hardswish",
    aten.silu.default: "silu",
    aten.silu_.default: "silu",
    aten.leaky_relu.default: "leaky_relu",
    aten.leaky_relu_.default: "leaky_relu",
    aten.prelu.default: "prelu",
    aten._prelu_kernel.default: "prelu",
    aten.sigmoid.default: "sigmoid",
    aten.gelu.default: "gelu",
    aten.elu.default: "elu",
    aten.tanh.default: "tanh",
    aten.mish.default: "mish",
    aten.hardsigmoid.default: "hard_sigmoid",
}
# positions of (weight, running_var, eps) in each eval-mode batch-norm op's arguments
_BATCH_NORM_ARGS = {
    aten.batch_norm.default: (1, 4, 7),
    aten._native_batch_norm_legit_no_training.default: (1, 4, 6),
}
CHANNEL_PRESERVING_TARGETS = {
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
    aten.add.Tensor,
    aten.add_.Tensor,
    aten.mul.Tensor,
    aten.sub.Tensor,
    aten.div.Tensor,
    aten.dropout.default,
    aten.clone.default,
    aten.max_pool2d.default,  # commutes with a ReLU after it: the same units are dead either way
}


def export_graph(model: Any, example: torch.Tensor, name: str) -> tuple[torch.fx.GraphModule, int | None]:
    """A private GraphModule of the model (the user's module is not modified) and its fixed
    batch size: a dynamic batch dimension where torch.export allows one, else the example's."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module(), _fixed_batch_of(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(model, torch.jit.ScriptModule):
                from torch._export.converter import TS2EPConverter

                return TS2EPConverter(model, (example,)).convert().module(), example.shape[0]
            dynamic = ({0: torch.export.Dim.AUTO},)
            return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic).module(), None
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: torch.export cannot trace the model: {message}") from None


def _fixed_batch_of(program: torch.export.ExportedProgram) -> int | None:
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            value = node.meta.get("val")
            if value is not None and isinstance(value.shape[0], int):
                return int(value.shape[0])
    return None


def weight_name(node: torch.fx.Node) -> str | None:
    weight = node.args[1] if len(node.args) > 1 else None
    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
        return str(weight.target).removesuffix(".weight")
    return None


def batch_norm_scale(graph_module: torch.fx.GraphModule, conv: torch.fx.Node) -> np.ndarray | None:
    """Per-channel scale of an eval-mode BatchNorm that alone consumes ``conv``, if any.

    The ONNX export of the same network usually has it folded into the conv; scaling by it here
    makes weight-based verdicts agree between the two forms.
    """
    users = list(conv.users)
    if len(users) != 1 or users[0].target not in _BATCH_NORM_ARGS:
        return None
    norm = users[0]
    gamma_at, variance_at, eps_at = _BATCH_NORM_ARGS[norm.target]
    gamma, variance = (_constant(graph_module, norm.args[at]) for at in (gamma_at, variance_at))
    if variance is None or (gamma is None and norm.args[gamma_at] is not None):
        return None
    return (1.0 if gamma is None else gamma) / np.sqrt(variance + float(norm.args[eps_at]))  # affine=False: 1


def _constant(graph_module: torch.fx.GraphModule, arg: Any) -> np.ndarray | None:
    """The float64 value of a graph argument that is a stored tensor (a parameter or buffer), else None."""
    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
        return getattr_path(graph_module, str(arg.target)).detach().double().numpy()
    return None


def layer_id(node: torch.fx.Node) -> str:
    """The conv module's qualified name, from its weight (works for TorchScript too)."""
    name = weight_name(node)
    if name:
        return name
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else node.name


def _find_activation(node: torch.fx.Node) -> tuple[str, torch.fx.Node] | None:
    """Walk from a conv node through channel-preserving ops to its activation."""
    for _ in range(32):
        users = list(node.users)
        for user in users:
            if user.target in ACTIVATION_TARGETS:
                kind = ACTIVATION_TARGETS[user.target]
                if kind == "sigmoid":  # x * sigmoid(x) is SiLU
                    product = next((u for u in user.users if u.target == aten.mul.Tensor and node in u.args), None)
                    if product is not None:
                        return "silu", product
                return kind, user
            if user.target in (aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default):
                low, high = [*user.args[1:3], None, None][:2]
                if low == 0:
                    return ("relu6" if high == 6 else "clip"), user
        if len(users) != 1 or users[0].target not in CHANNEL_PRESERVING_TARGETS:
            return None
        node = users[0]
    return None


def instrument(
    graph_module: torch.fx.GraphModule, record: Callable[[str, torch.Tensor], None]
) -> tuple[LayerInfo, ...]:
    """Insert ``record(key, activation)`` after each conv's activation; return the layers found."""
    layers: list[LayerInfo] = []
    recorded: set[str] = set()
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target not in CONV_TARGETS:
            continue
        weight = node.args[1]
        channels = 0
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
            tensor = getattr_path(graph_module, str(weight.target))
            transposed = CONV_TARGETS[node.target] == "ConvTranspose"
            channels = int(tensor.shape[1] if transposed else tensor.shape[0])
        found = _find_activation(node)
        kind, activation = found if found is not None else (None, None)
        key = activation.name if activation is not None else None
        if activation is not None and key not in recorded:
            recorded.add(key)
            with graph_module.graph.inserting_after(activation):
                graph_module.graph.call_function(record, (key, activation))
        layers.append(
            LayerInfo(id=layer_id(node), op=CONV_TARGETS[node.target], activation=kind, channels=channels, tensor=key)
        )
    graph_module.recompile()
    return tuple(layers)


def getattr_path(module: torch.nn.Module, dotted: str) -> torch.Tensor:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
