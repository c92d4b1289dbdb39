"""PyTorch models: TorchScript, ``torch.export`` archives, state_dicts with a factory, nn.Modules.

Why ``torch.export``: one graph representation for every torch format, in which
the activation that follows each conv is found by walking the graph (as for
ONNX), never guessed from module order; a ReLU module reused twice (ResNet's
BasicBlock) is two graph nodes. A recording call is inserted after each
activation node of a private copy of the graph, so statistics are computed as
the forward pass goes and the user's module is never touched. TorchScript
archives are converted with torch's own TorchScript-to-export converter.

Loading is safe: ``torch.load(weights_only=True)`` always, and a pickled whole
module is refused unless the config says ``trust_pickle: true``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import InputSpec, ModelSpec
from ..errors import ModelError
from .base import ActivationSink, FirstConv, LayerInfo, check_finite_outputs, resolve_input_spec

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


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding a ``code/`` folder; state_dicts hold only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _import_from(config_dir: Path, module_name: str) -> Any:
    """A module file beside the config is loaded from there, under a name of its own: two
    configs whose folders both hold an ``arch.py`` must not share whichever was imported first."""
    candidate = config_dir.joinpath(*module_name.split(".")).with_suffix(".py")
    if not candidate.is_file():
        return importlib.import_module(module_name)
    unique = f"_cnnaudit_factory_{abs(hash(str(candidate.resolve())))}_{module_name.replace('.', '_')}"
    if unique not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(unique, candidate)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[unique]
            raise
    return sys.modules[unique]


def _import_factory(spec: ModelSpec, config_dir: Path) -> Callable[..., torch.nn.Module]:
    """Import ``module:callable``, looking in the config file's folder first."""
    module_name, _, attribute = (spec.factory or "").partition(":")
    if not module_name or not attribute:
        raise ModelError(f"{spec.path}: factory {spec.factory!r} must look like 'module:callable'")
    sys.path.insert(0, str(config_dir))
    try:
        module = _import_from(config_dir, module_name)
    except Exception as exc:
        raise ModelError(
            f"{spec.path}: cannot import factory module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(str(config_dir))
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModelError(f"{spec.path}: {module_name} has no callable {attribute!r}")
    return factory


def _state_dict_of(loaded: Any) -> dict[str, torch.Tensor] | None:
    """A state_dict, also inside the common ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints."""
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in loaded:
                return _state_dict_of(loaded[key])
    return None


def _load_file(path: Path, spec: ModelSpec) -> Any:
    """What a torch file holds, loaded safely."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(
                f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
            ) from None
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a readable safetensors file: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Only "Unsupported global" means a pickle of Python objects; corrupt bytes also fail the
        # weights-only unpickler, with a message that mentions weights_only too.
        if "Unsupported global" not in str(exc):
            raise ModelError(f"{path}: not a readable torch file ({_load_failure(exc)})") from None
        if not spec.trust_pickle:
            raise ModelError(
                f"{path}: holds pickled Python objects (a whole module?), which can run code when loaded; "
                "save a state_dict and name a factory, or set trust_pickle: true for this model if you trust the file"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # the user opted in
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle the file ({_load_failure(exc)})") from None


def _load_failure(exc: Exception) -> str:
    """The unpickler's own complaint, not torch's advice to turn weights_only off."""
    lines = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_torch_module(path: Path, spec: ModelSpec, config_dir: Path) -> tuple[torch.nn.Module | Any, str]:
    """(module or ExportedProgram or ScriptModule, format name)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)), "torch.export"
        except Exception as exc:
            raise ModelError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc})") from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; the user's archive is still valid.
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu"), "torchscript"
        except Exception as exc:
            raise ModelError(f"{path}: not a readable TorchScript archive ({type(exc).__name__})") from None
    loaded = _load_file(path, spec)
    if isinstance(loaded, torch.nn.Module):
        return loaded, "module"
    state_dict = _state_dict_of(loaded)
    if state_dict is None:
        raise ModelError(f"{path}: holds neither a state_dict nor a module (got {type(loaded).__name__})")
    if spec.factory is None:
        raise ModelError(f"{path}: is a state_dict; name the architecture with models[].factory: 'module:callable'")
    module = _import_factory(spec, config_dir)(**spec.factory_kwargs)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        factory = f"{spec.factory} (factory_kwargs {spec.factory_kwargs})" if spec.factory_kwargs else spec.factory
        detail = _state_dict_mismatch(module.state_dict(), state_dict) or " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: does not fit factory {factory}: {detail}") from None
    return module, "state_dict"


def _state_dict_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """Where a file's tensors and the factory's module differ, in one short clause per kind.

    torch's own message lists every mismatch over many lines; the first of each kind and a
    count say what is wrong (usually the wrong factory_kwargs or the wrong architecture).
    """

    def first(keys: list[str], noun: str) -> str:
        more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        return f"{noun} {keys[0]}{more}"

    shapes = [key for key in expected if key in found and tuple(expected[key].shape) != tuple(found[key].shape)]
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    clauses = []
    if shapes:
        key = shapes[0]
        others = len(shapes) - 1
        more = f" (and {others} more tensor{'s' if others > 1 else ''})" if others else ""
        clauses.append(f"{key} is {list(found[key].shape)} in the file, {list(expected[key].shape)} in the model{more}")
    if missing:
        clauses.append(first(missing, "the file lacks"))
    if unexpected:
        clauses.append(first(unexpected, "the model has no"))
    return "; ".join(clauses)


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


def _weight_name(node: torch.fx.Node) -> str | None:
    weight = node.args[1] if len(node.args) > 1 else None
    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
        return str(weight.target).removesuffix(".weight")
    return None


def _batch_norm_scale(graph_module: torch.fx.GraphModule, conv: torch.fx.Node) -> np.ndarray | None:
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


def _layer_id(node: torch.fx.Node) -> str:
    """The conv module's qualified name, from its weight (works for TorchScript too)."""
    name = _weight_name(node)
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
            LayerInfo(id=_layer_id(node), op=CONV_TARGETS[node.target], activation=kind, channels=channels, tensor=key)
        )
    graph_module.recompile()
    return tuple(layers)


def getattr_path(module: torch.nn.Module, dotted: str) -> torch.Tensor:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class TorchBackend:
    """A torch model opened for measurement."""

    def __init__(self, model: Any, format: str, configured: InputSpec, name: str, batch_size: int) -> None:
        self.format = format
        self.name = name
        self.input_spec = resolve_input_spec(configured, self._declared_shape(model), name)
        example = torch.zeros((batch_size, *self._chw()), dtype=torch.float32)
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

    def _chw(self) -> tuple[int, int, int]:
        spec = self.input_spec
        channels = 1 if spec.channels == "GRAY" else 3
        height, width = spec.size  # type: ignore[misc]
        return (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)

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
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
                name = _weight_name(node)
                if name is None:
                    return None
                weight = getattr_path(self.graph_module, f"{name}.weight").detach().numpy().astype(np.float64)
                if weight.ndim != 4:
                    return None
                scale = _batch_norm_scale(self.graph_module, node)
                if scale is not None:
                    weight = weight * scale.reshape(-1, 1, 1, 1)
                return FirstConv(layer_id=_layer_id(node), weight=weight.astype(np.float32))
        return None

    def close(self) -> None:
        self.graph_module = None  # type: ignore[assignment]
