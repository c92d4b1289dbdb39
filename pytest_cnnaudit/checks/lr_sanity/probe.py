"""The fine-tuning probe: train a torch copy of the model for a few steps, then count dead filters again.

Imported only when ``checks.lr_sanity`` is enabled (it imports torch).

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

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...config.checks import LrSanityCheck
from ...config.inputs import InputSpec
from ...engine.check import AuditContext
from ...engine.cpus import usable_cpus
from ...engine.measure import measure
from ...engine.probes import IMAGE_SUFFIXES, ProbeSet, to_model_input
from ...errors import ProbeError
from .network import ProbeNetwork, onnx_network, torch_network
from .verdicts import TrainingRun

#: Most threads the probe trains with; a fixed count fixes the order in which float sums add up.
MAX_THREADS = 8
aten = torch.ops.aten


def probe_threads() -> int:
    """The probe's thread count: the CPUs this process may run on, at most :data:`MAX_THREADS`."""
    return min(MAX_THREADS, usable_cpus())


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


# --------------------------------------------------------------------------- training


@dataclass
class TrainingSet:
    """Model inputs and targets of the training images, and the loss between outputs and targets.

    ``targets`` holds one target per image (class labels, indexed like ``inputs``) or, for models
    that are not classifiers, one target per step: the whole output of that step's batch, so no
    assumption is made about where the batch axis of an output is (a CTC head emits [T, N, C]).
    """

    inputs: torch.Tensor
    targets: torch.Tensor | list[torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``step``-th batch, cycling through the images in order."""
        rows = step_rows(step, size, len(self.inputs))
        targets = self.targets[step] if isinstance(self.targets, list) else self.targets[rows]
        return self.inputs[rows], targets


def step_rows(step: int, size: int, count: int) -> torch.Tensor:
    return torch.arange(step * size, (step + 1) * size) % count


def outputs_by_step(network: ProbeNetwork, inputs: torch.Tensor, steps: int, size: int) -> list[torch.Tensor]:
    """The model's own output (at its starting weights, in eval mode) on each training step's batch."""
    network.set_batch_norm_training(False)
    with torch.no_grad():
        return [network.forward(inputs[step_rows(step, size, len(inputs))]).detach() for step in range(steps)]


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


def training_set(
    context: AuditContext, settings: LrSanityCheck, network: ProbeNetwork, outputs: torch.Tensor, count: int, size: int
) -> TrainingSet:
    """The objective's training images and targets; ``outputs`` are the model's own on the probe images,
    batch first: a classifier's (N, classes) scores, read only when they have that shape."""
    spec = context.backend.input_spec
    classes = int(outputs.shape[1]) if outputs.ndim == 2 and outputs.shape[1] > 1 else None
    if settings.objective in ("self", "random"):
        inputs = probe_inputs(context.probes, count, spec)
        generator = np.random.default_rng(context.probes.seed)
        if classes is not None:
            labels = outputs[:count].argmax(dim=1)
            if settings.objective == "random":
                labels = torch.from_numpy(generator.integers(0, classes, count))
            return TrainingSet(inputs, labels, F.cross_entropy)
        own = outputs_by_step(network, inputs, settings.steps, size)
        if settings.objective == "random":  # random targets on the scale of the model's own outputs
            own = [
                t.mean() + t.std() * torch.from_numpy(generator.standard_normal(t.shape).astype(np.float32))
                for t in own
            ]
        return TrainingSet(inputs, own, F.mse_loss)
    if classes is None:
        raise ProbeError(
            "checks.lr_sanity.objective labels needs class scores of shape (N, classes); "
            f"the model's first output has shape {list(outputs.shape)}"
        )
    config_dir = context.plan.config.base_dir
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
        self.zero_eps = context.plan.config.probe.zero_eps
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
        outputs = self.network.outputs
        self.network.outputs = None
        # Batch first only for a classifier's (N, classes) scores; other outputs are read per step.
        scores = torch.cat(outputs)[: len(self.probes)] if all(o.ndim == 2 for o in outputs) else outputs[0]
        count = min(len(self.probes), settings.steps * self.batch_size)
        self.data = training_set(context, settings, self.network, scores, count, self.batch_size)

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
