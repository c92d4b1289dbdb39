"""The fine-tuning probe: train a torch copy of the model for a few steps, then count dead filters again.

Imported only when ``checks.lr_sanity`` is enabled (it imports torch).

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
(:func:`~pytest_cnnaudit.backends.onnx_graph.conv_layers` on the same file, so the ids
are the main pass's Conv node names), and each measured activation is tapped by its ONNX
tensor name through the mapping onnx2torch attaches to every module it creates. Module
names are not used: onnx2torch strips the leading '/' of node names, renames duplicates
and names unnamed nodes itself, and which tensor follows which Conv stays the ONNX graph
walker's decision. Exporting the trained copy back to ONNX was rejected: the exporter
renames nodes and may fold BatchNorm into Conv, so ids could only be matched by position.

**Training** is what fine-tuning does, minus the randomness: BatchNorm normalises with
batch statistics, dropout is off (ONNX exporters remove it, so a model's ONNX and torch
forms train the same network), batches cycle through the probe images in order. BatchNorm's
running statistics are left as they are: re-estimated on a few probe images they move
borderline filters across zero at any rate, even 0, and the probe judges what the rate does.
Dead channels are counted before and after on the probe's own copy, both by
:func:`~pytest_cnnaudit.measure.measure` over the probe set in eval mode, so a rounding
difference between onnxruntime and torch never shows up as a newly dead filter.

**Determinism**: deterministic kernels, a fixed thread count and ``torch.manual_seed``
(probe seed) before every run, all restored afterwards. **Memory**: the copy, its
starting weights and the training images (at most ``steps x batch_size``) live only
inside :func:`fine_tuning_probe`.
"""

from __future__ import annotations

import copy
import gc
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .backends.base import ActivationSink, LayerInfo
from .backends.torch import TorchBackend, export_graph, getattr_path, instrument, load_torch_module
from .checks.lr_sanity import TrainingRun
from .config import InputSpec, LrSanityCheck
from .cpus import usable_cpus
from .errors import ModelError, ProbeError
from .measure import measure
from .probes import IMAGE_SUFFIXES, ProbeSet, to_model_input

if TYPE_CHECKING:
    from .audit import AuditContext

#: Most threads the probe trains with; a fixed count fixes the order in which float sums add up.
MAX_THREADS = 8
aten = torch.ops.aten


def probe_threads() -> int:
    """The probe's thread count: the CPUs this process may run on, at most :data:`MAX_THREADS`."""
    return min(MAX_THREADS, usable_cpus())


class ProbeUnavailable(Exception):
    """The model has no trainable torch form, or the form cannot run; the message says why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Deterministic kernels, ``threads`` threads, a seeded generator; the previous settings restored after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(previous_threads)
        torch.set_rng_state(rng_state)


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
                f"the trainable copy failed on a batch of shape {list(inputs.shape)}: {_first_line(exc)}"
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
    config_dir = Path(context.config.source).parent if context.config.source else Path.cwd()
    return load_torch_module(context.model, context.spec, config_dir)[0]


def _example(spec: InputSpec, batch: int) -> torch.Tensor:
    channels = 1 if spec.channels == "GRAY" else 3
    height, width = spec.size  # type: ignore[misc]
    shape = (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)
    return torch.zeros((batch, *shape), dtype=torch.float32)


def torch_network(context: AuditContext, batch_size: int) -> ProbeNetwork:
    """A private, trainable copy of a torch model's exported graph, tapped like the main pass.

    The main pass's graph is copied when it can be; a TorchScript model is loaded and
    exported again, at the training batch size.
    """
    tap = _Tap()
    backend = context.backend
    graph_module = backend.trainable_copy(tap.record) if isinstance(backend, TorchBackend) else None
    if graph_module is not None:
        layers, fixed_batch, source = backend.layers, backend.fixed_batch, None
    else:
        source = _fresh_copy(context)
        try:
            graph_module, fixed_batch = export_graph(source, _example(backend.input_spec, batch_size), context.name)
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


def _tap_onnx_tensors(module: torch.fx.GraphModule, tap: _Tap) -> None:
    """Call ``tap.record(name, value)`` after the converted module that produces each measured ONNX tensor."""
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        outputs = module.get_submodule(node.target).onnx_mapping.outputs
        for index, tensor in enumerate(outputs):
            if tensor not in tap.channel_axes:
                continue
            value = node
            if len(outputs) > 1:
                with graph.inserting_after(node):
                    value = graph.call_function(operator.getitem, (node, index))
            with graph.inserting_after(value):
                graph.call_function(tap.record, (tensor, value))
    module.recompile()


def _set_module_batch_norm(module: torch.nn.Module, training: bool) -> None:
    """Eval mode everywhere (dropout off); when training, BatchNorm on batch statistics, running ones untouched."""
    module.eval()
    for child in module.modules():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            child.train(training)
            child.track_running_stats = not training  # BatchNorm then passes no running statistics to update


def onnx_network(context: AuditContext) -> ProbeNetwork:
    """An onnx2torch conversion of the ONNX file, tapped at the main pass's activation tensors."""
    from .backends.onnx import load_onnx_model
    from .backends.onnx_graph import OnnxGraph, conv_layers

    try:
        import onnx2torch
    except ImportError:
        raise ProbeUnavailable("training an ONNX model needs onnx2torch (pip install onnx2torch)") from None
    model = load_onnx_model(context.model)
    layers, channel_axes = conv_layers(OnnxGraph(model))
    try:
        module = onnx2torch.convert(model, attach_onnx_mapping=True)
    except Exception as exc:
        raise ProbeUnavailable(f"onnx2torch cannot convert the model to torch: {_first_line(exc)}") from None
    tap = _Tap(channel_axes)
    _tap_onnx_tensors(module, tap)
    return ProbeNetwork(
        module=module,
        layers=layers,
        tap=tap,
        input_spec=context.backend.input_spec,
        fixed_batch=context.backend.fixed_batch,
        trainable=list(module.parameters()),
        set_batch_norm_training=lambda training: _set_module_batch_norm(module, training),
        description=f"onnx2torch {metadata.version('onnx2torch')} conversion of the ONNX model",
    )


# --------------------------------------------------------------------------- training


@dataclass
class TrainingSet:
    """Model inputs and targets of the training images, and the loss between outputs and targets."""

    inputs: torch.Tensor
    targets: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``step``-th batch, cycling through the images in order."""
        rows = torch.arange(step * size, (step + 1) * size) % len(self.inputs)
        return self.inputs[rows], self.targets[rows]


def probe_inputs(probes: ProbeSet, count: int, spec: InputSpec) -> torch.Tensor:
    """The first ``count`` probe images as one tensor of model input."""
    images = np.stack([probes.image(i) for i in range(count)])
    return torch.from_numpy(to_model_input(images, spec))


def labelled_images(folder: Path, spec: InputSpec, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(inputs, labels, classes) of up to ``count`` images of an ImageFolder-style folder, in seeded order."""
    if not folder.is_dir():
        raise ProbeError(f"checks.lr_sanity.labels_dir: {folder} is not a folder")
    class_folders = sorted(path for path in folder.iterdir() if path.is_dir())
    files = [
        (str(path), label)
        for label, class_folder in enumerate(class_folders)
        for path in sorted(class_folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise ProbeError(f"checks.lr_sanity.labels_dir: {folder} has no class subfolders with images")
    order = np.random.default_rng(seed).permutation(len(files))[:count]
    chosen = [files[i] for i in order]
    images = ProbeSet(str(folder), spec.size, len(chosen), seed, tuple(path for path, _ in chosen))  # type: ignore[arg-type]
    labels = torch.tensor([label for _, label in chosen])
    return probe_inputs(images, len(chosen), spec), labels, len(class_folders)


def training_set(context: AuditContext, settings: LrSanityCheck, outputs: torch.Tensor, count: int) -> TrainingSet:
    """The objective's training images and targets; ``outputs`` are the model's own on the probe images."""
    spec = context.backend.input_spec
    classes = int(outputs.shape[1]) if outputs.ndim == 2 and outputs.shape[1] > 1 else None
    if settings.objective == "self":
        inputs = probe_inputs(context.probes, count, spec)
        if classes is not None:
            return TrainingSet(inputs, outputs[:count].argmax(dim=1), F.cross_entropy)
        return TrainingSet(inputs, outputs[:count].clone(), F.mse_loss)
    if settings.objective == "random":
        generator = np.random.default_rng(context.probes.seed)
        inputs = probe_inputs(context.probes, count, spec)
        if classes is not None:
            return TrainingSet(inputs, torch.from_numpy(generator.integers(0, classes, count)), F.cross_entropy)
        own = outputs[:count]
        noise = torch.from_numpy(generator.standard_normal(tuple(own.shape)).astype(np.float32))
        return TrainingSet(inputs, own.mean() + own.std() * noise, F.mse_loss)  # random targets, outputs' scale
    if classes is None:
        raise ProbeError(
            "checks.lr_sanity.objective labels needs class scores of shape (N, classes); "
            f"the model's first output has shape {list(outputs.shape)}"
        )
    config_dir = Path(context.config.source).parent if context.config.source else Path.cwd()
    inputs, labels, label_classes = labelled_images(
        config_dir / (settings.labels_dir or ""), spec, count, context.probes.seed
    )
    if label_classes > classes:
        raise ProbeError(
            f"checks.lr_sanity.labels_dir: {settings.labels_dir} has {label_classes} classes, "
            f"but the model scores only {classes}"
        )
    return TrainingSet(inputs, labels, F.cross_entropy)


def make_optimizer(settings: LrSanityCheck, lr: float, tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(tensors, lr=lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    optimizer = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    return optimizer(tensors, lr=lr, weight_decay=settings.weight_decay)


class FineTuningProbe:
    """A trainable copy of one model: its dead channels before training, and runs from its weights."""

    def __init__(self, context: AuditContext, settings: LrSanityCheck) -> None:
        self.settings = settings
        self.probes = context.probes
        self.zero_eps = context.config.probe.zero_eps
        self.measure_batch = context.batch_size  # the main pass's, fitted to the memory budget
        self.seed = context.probes.seed
        if context.backend.format == "onnx":
            self.network = onnx_network(context)
        else:
            self.network = torch_network(context, settings.batch_size)
        self.batch_size = self.network.fixed_batch or settings.batch_size
        self.description = self.network.description
        self.start = {key: value.clone() for key, value in self.network.module.state_dict().items()}
        self.network.outputs = []
        self.dead_before, _ = self.dead_channels()
        outputs = torch.cat(self.network.outputs)[: len(self.probes)]
        self.network.outputs = None
        count = min(len(self.probes), settings.steps * self.batch_size)
        self.data = training_set(context, settings, outputs, count)

    def dead_channels(self) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
        """Dead channels per layer id on the probe set, in eval mode, and the layers with NaN/inf activations."""
        network = self.network
        network.set_batch_norm_training(False)
        network.tap.non_finite = set()
        stats = measure(network, self.probes, self.measure_batch, self.zero_eps)
        dead = {layer.id: stats[layer.tensor].dead_channels for layer in network.layers if layer.tensor in stats}
        return dead, tuple(layer.id for layer in network.layers if layer.tensor in network.tap.non_finite)

    def _restore_start(self) -> None:
        with torch.no_grad():
            for key, value in self.network.module.state_dict().items():
                value.copy_(self.start[key])

    def train(self, lr: float) -> TrainingRun:
        """Train ``steps`` steps at ``lr`` from the starting weights (stopping at a non-finite loss)."""
        self._restore_start()
        torch.manual_seed(self.seed)
        network = self.network
        optimizer = make_optimizer(self.settings, lr, network.trainable)
        losses: list[float] = []
        network.set_batch_norm_training(True)
        for step in range(self.settings.steps):
            inputs, targets = self.data.batch(step, self.batch_size)
            loss = self.data.loss(network.forward(inputs), targets)
            losses.append(float(loss.item()))
            if not math.isfinite(losses[-1]):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        dead, non_finite = self.dead_channels()
        return TrainingRun(lr, tuple(losses), dead, non_finite)

    def close(self) -> None:
        self.network.close()
        self.start = {}
        self.data = None  # type: ignore[assignment]


@contextmanager
def fine_tuning_probe(context: AuditContext, settings: LrSanityCheck) -> Iterator[FineTuningProbe]:
    """A :class:`FineTuningProbe` under deterministic torch settings; its memory is released on exit.

    Raises :class:`ProbeUnavailable` when the model has no trainable torch form.
    """
    with deterministic_torch(context.probes.seed, probe_threads()):
        probe = FineTuningProbe(context, settings)
        try:
            yield probe
        finally:
            probe.close()
            del probe
            gc.collect()
