"""The model as a ``torch.export`` graph: conv layers found by walking it, recording calls inserted.

Why ``torch.export``: one graph representation for every torch format, in which
the activation that follows each conv is found by walking the graph (as for
ONNX), never guessed from module order; a ReLU module reused twice (ResNet's
BasicBlock) is two graph nodes. A recording call is inserted after each
activation node of a private copy of the graph, so statistics are computed as
the forward pass goes and the user's module is never touched. TorchScript
archives are converted with torch's own TorchScript-to-export converter.
Which ops make an activation, in each form it is written, is :mod:`.activations`'.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import ModelError, first_line
from ..base import RECTIFIERS, LayerInfo
from .activations import Activation, activation_of

aten = torch.ops.aten
#: Convolutions: (op name as on the ONNX side, argument positions of "transposed" and "groups").
CONV_TARGETS = {
    aten.conv1d.default: ("Conv", None, 6),
    aten.conv2d.default: ("Conv", None, 6),
    aten.conv3d.default: ("Conv", None, 6),
    aten.conv_transpose1d.default: ("ConvTranspose", None, 6),
    aten.conv_transpose2d.input: ("ConvTranspose", None, 6),
    aten.conv_transpose3d.input: ("ConvTranspose", None, 6),
    aten.convolution.default: ("Conv", 6, 8),
}
# positions of (weight, running_var, eps) in each eval-mode batch-norm op's arguments
_BATCH_NORM_ARGS = {
    aten.batch_norm.default: (1, 4, 7),
    aten._native_batch_norm_legit_no_training.default: (1, 4, 6),
}
#: Ops whose output channel c is made from input channel c (and other tensors), walked through to the activation.
CHANNEL_PRESERVING_TARGETS = {
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
    aten.group_norm.default,
    aten.instance_norm.default,
    *(getattr(aten, op).Tensor for op in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")),
    *(getattr(aten, op).Scalar for op in ("add", "sub", "mul", "div")),  # TorchScript's scalar forms
    aten.dropout.default,
    aten.clone.default,
    # max-pooling commutes with a rectifier after it: the same units are dead either way
    aten.max_pool1d.default,
    aten.max_pool2d.default,
    aten.max_pool3d.default,
}
#: Ops walked from a conv to its activation at most: real chains are a few ops long.
WALK_DEPTH = 32


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
        message = first_line(exc)
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


def find_activation(conv: torch.fx.Node) -> Activation | None:
    """The activation that follows ``conv`` through channel-preserving ops."""
    found = activation_and_input(conv)
    return found[0] if found is not None else None


def activation_and_input(conv: torch.fx.Node) -> tuple[Activation, torch.fx.Node] | None:
    """The activation that follows ``conv`` through channel-preserving ops, and the node it reads.

    Breadth first, so a residual ``Add`` whose output feeds both a ``Mul`` and the next ``Add``
    is followed on both paths: the nearest activation is the one, unless two differ at the same
    distance (then none is, rather than a guess).
    """
    frontier, seen = [conv], {conv}
    for _ in range(WALK_DEPTH):
        found: dict[torch.fx.Node, tuple[Activation, torch.fx.Node]] = {}
        following = []
        for node in frontier:
            activation = activation_of(node)
            if activation is not None:
                found.setdefault(activation.node, (activation, node))
                continue
            for user in node.users:
                if user.target in CHANNEL_PRESERVING_TARGETS and user not in seen:
                    seen.add(user)
                    following.append(user)
        if found:
            return next(iter(found.values())) if len(found) == 1 else None
        if not following:
            return None
        frontier = following
    return None


def conv_kind(node: torch.fx.Node) -> str:
    """ "Conv" or "ConvTranspose" (``aten.convolution`` says which in an argument)."""
    name, transposed_at, _ = CONV_TARGETS[node.target]
    if transposed_at is not None and len(node.args) > transposed_at and node.args[transposed_at]:
        return "ConvTranspose"
    return name


def _conv_channels(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> int:
    """Output channels, from the stored weight (0 when the weight is computed in the graph)."""
    weight = node.args[1]
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr"):
        return 0
    shape = getattr_path(graph_module, str(weight.target)).shape
    if conv_kind(node) == "Conv":
        return int(shape[0])
    groups_at = CONV_TARGETS[node.target][2]
    groups = node.args[groups_at] if len(node.args) > groups_at else 1
    return int(shape[1]) * int(groups)


def instrument(
    graph_module: torch.fx.GraphModule, record: Callable[[str, torch.Tensor], None]
) -> tuple[LayerInfo, ...]:
    """Insert ``record(key, activation)`` after each conv's activation; return the layers found."""
    layers: list[LayerInfo] = []
    recorded: set[str] = set()
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target not in CONV_TARGETS:
            continue
        found = find_activation(node)
        measured = found.node if found is not None else None
        definition = "output <= zero_eps" if found is not None and found.kind in RECTIFIERS else None
        if found is not None and negative_slope_prelu(graph_module, found.node):
            measured = found.node.args[0]  # the pre-activation: "<= 0" is inactive whatever a channel's slope
            definition = "pre-activation <= zero_eps (a PReLU with negative slopes: its output is > 0 on both sides)"
        key = measured.name if measured is not None else None
        if measured is not None and key not in recorded:
            recorded.add(key)
            with graph_module.graph.inserting_after(measured):
                graph_module.graph.call_function(record, (key, measured))
        layers.append(
            LayerInfo(
                id=layer_id(node),
                op=conv_kind(node),
                activation=found.kind if found is not None else None,
                channels=_conv_channels(graph_module, node),
                tensor=key,
                definition=definition,
            )
        )
    graph_module.recompile()
    return tuple(layers)


def negative_slope_prelu(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """An ``aten.prelu`` whose learned slope is negative on some channel (MTCNN's are, on 6-95% of them)."""
    if node.target not in (aten.prelu.default, aten._prelu_kernel.default) or len(node.args) < 2:
        return False
    slope = node.args[1]
    if not (isinstance(slope, torch.fx.Node) and slope.op == "get_attr"):
        return False
    return bool((getattr_path(graph_module, str(slope.target)) < 0).any())


def getattr_path(module: torch.nn.Module, dotted: str) -> torch.Tensor:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
