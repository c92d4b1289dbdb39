"""Rebuild the example models: small CNNs trained on synthetic images, with known audit results.

    python example_models/build.py                          # all models, into example_models/
    python example_models/build.py --only healthy --out DIR  # one model, into DIR

Why a script and not just binaries: the shipped files must be reproducible and
reviewable. Training is deterministic on the CPU (fixed seeds, deterministic
algorithms, two threads), the data is generated in code (synthetic.py), and every
property the README promises is measured here with plain forward hooks,
independently of the package, and asserted before anything is written.

Each model is written as NAME.onnx (Conv nodes named after the torch modules),
NAME.pt (a state_dict for ``arch:SmallCNN``) and NAME.yaml (its audit config);
healthy also as healthy.torchscript.pt, high_lr with high_lr.expected.json (its
dead channels).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import itertools
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
import synthetic
import torch
from arch import SmallCNN
from torch import nn
from torch.nn.utils import parametrize

HERE = Path(__file__).resolve().parent
#: Layer id (the conv module's name) -> the ReLU module that follows it.
RELU_AFTER = {"conv1": "relu1", "conv2": "relu2", "conv3": "relu3"}
BATCH_SIZE = 64
#: Training batches re-run to check that high_lr's dead channels are dead on its own training data.
TRAINING_CHECK_BATCHES = 32
HELD_OUT_SEED = 10_000
HELD_OUT_BATCHES = 16
OPSET = 17
INPUT_SPEC = "{size: [64, 64], layout: NCHW, channels: RGB, scale: 1, mean: [0, 0, 0], std: [1, 1, 1]}"


@dataclasses.dataclass(frozen=True)
class LayerActivity:
    """One layer's ReLU output over a set of images."""

    zero_fraction: float
    dead_channels: list[int]
    #: Per channel, the largest input to the ReLU: how far below zero a dead channel stays.
    peak_preactivation: list[float]

    def margin(self) -> float:
        """Distance of the channel nearest to the dead/alive boundary: small means fragile."""
        return min(abs(peak) for peak in self.peak_preactivation)


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the build knows about a trained model; the recipes' properties are judged on it."""

    accuracy: float
    probe: dict[str, LayerActivity]
    #: The same figures on the first training batches: dead there too means dead by its weights.
    training: dict[str, LayerActivity]
    conv1_weight: np.ndarray

    def dead_on_probe(self) -> dict[str, list[int]]:
        return {layer: activity.dead_channels for layer, activity in self.probe.items()}


Property = Callable[[Measurements], "str | None"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Training from scratch: Adam with a one-cycle learning rate (warm-up, then cosine decay to ~0).

    No weight decay: conv1 and conv2 feed BatchNorm, which makes their weights'
    scale irrelevant, so decay would only shrink them and raise the effective
    learning rate until filters die.
    """

    task: str
    seed: int
    peak_lr: float
    steps: int
    gray_first_layer: bool = False


@dataclasses.dataclass(frozen=True)
class Spike:
    """Fine-tuning a trained model at a too-high learning rate (no warm-up), then a cosine
    decay from ``recovery_lr`` to 0 that restores accuracy; filters killed by the spike stay dead."""

    lr: float
    steps: int
    recovery_lr: float
    recovery_steps: int


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one example model is trained, what it must show, and how its config reads."""

    name: str
    schedule: Schedule
    about: str
    properties: tuple[Property, ...]
    spike: Spike | None = None
    checks_yaml: str = ""
    torchscript: bool = False
    record_dead: bool = False


# --------------------------------------------------------------------------- properties


def min_accuracy(limit: float) -> Property:
    def check(measured: Measurements) -> str | None:
        return None if measured.accuracy >= limit else f"accuracy {measured.accuracy:.3f} < {limit}"

    return check


def no_dead_channels(measured: Measurements) -> str | None:
    dead = {layer: channels for layer, channels in measured.dead_on_probe().items() if channels}
    return f"never-active channels on the probe images: {dead}" if dead else None


def zero_fraction_within(low: float, high: float) -> Property:
    def check(measured: Measurements) -> str | None:
        outside = {
            layer: round(activity.zero_fraction, 4)
            for layer, activity in measured.probe.items()
            if not low <= activity.zero_fraction <= high
        }
        return f"zero fraction outside [{low}, {high}]: {outside}" if outside else None

    return check


def dead_share_at_least(share: float) -> Property:
    """Some layer has at least ``share`` of its channels dead: a clear finding, not a borderline one."""

    def check(measured: Measurements) -> str | None:
        shares = {layer: len(a.dead_channels) / len(a.peak_preactivation) for layer, a in measured.probe.items()}
        return None if max(shares.values()) >= share else f"dead share per layer {shares} < {share} everywhere"

    return check


def dead_on_training_data_too(measured: Measurements) -> str | None:
    """Dead channels must be a property of the weights, not of the probe images."""
    training = {layer: activity.dead_channels for layer, activity in measured.training.items()}
    probe = measured.dead_on_probe()
    return None if training == probe else f"dead on probe images {probe} but on training data {training}"


def first_layer_colour_selective(min_fraction: float) -> Property:
    def check(measured: Measurements) -> str | None:
        fraction = float((chromatic_fraction(measured.conv1_weight) > 0.5).mean())
        return (
            None if fraction >= min_fraction else f"{fraction:.2f} of conv1 filters colour-selective < {min_fraction}"
        )

    return check


def first_layer_colour_blind(measured: Measurements) -> str | None:
    weight = measured.conv1_weight
    equal = np.array_equal(weight[:, 0], weight[:, 1]) and np.array_equal(weight[:, 0], weight[:, 2])
    return None if equal else "conv1's red, green and blue weight slices differ"


def chromatic_fraction(conv1_weight: np.ndarray) -> np.ndarray:
    """Per filter, the share of its weight energy off the achromatic (1, 1, 1) axis.

    0 for a filter that weights R, G and B equally (it sees R+G+B only); about 2/3
    for random weights.
    """
    achromatic = np.square(conv1_weight.sum(axis=1)).sum(axis=(1, 2)) / 3.0
    total = np.square(conv1_weight).sum(axis=(1, 2, 3))
    return 1.0 - achromatic / total


SHAPES = Schedule(task="shapes", seed=1, peak_lr=2e-3, steps=600)
RECIPES = (
    Recipe(
        name="healthy",
        schedule=SHAPES,
        about="shape classifier trained at a sane learning rate",
        properties=(min_accuracy(0.9), no_dead_channels, zero_fraction_within(0.03, 0.97)),
        checks_yaml="  dead_filters: {max_count: 0}\n",
        torchscript=True,
    ),
    Recipe(
        name="high_lr",
        schedule=SHAPES,
        spike=Spike(lr=1e-2, steps=30, recovery_lr=1e-3, recovery_steps=300),
        about="healthy, then 30 steps at 5x its peak learning rate: some filters died",
        properties=(
            min_accuracy(0.9),
            dead_share_at_least(0.03),
            dead_on_training_data_too,
            zero_fraction_within(0.03, 0.97),
        ),
        checks_yaml="  dead_filters: {max_count: 0}  # as strict as healthy's: these items fail\n",
        record_dead=True,
    ),
    Recipe(
        name="hue_task",
        schedule=Schedule(task="hue", seed=1, peak_lr=2e-3, steps=300),
        about="classes differ only by hue, so conv1 is colour-selective",
        properties=(min_accuracy(0.9), first_layer_colour_selective(0.5), zero_fraction_within(0.03, 0.97)),
        checks_yaml="  color: {first_layer: {expect: sensitive}}\n",
    ),
    Recipe(
        name="grayscale",
        schedule=dataclasses.replace(SHAPES, gray_first_layer=True),
        about="conv1 weights R, G and B equally by construction: colour-blind",
        properties=(min_accuracy(0.9), first_layer_colour_blind, zero_fraction_within(0.03, 0.97)),
        checks_yaml="  color: {first_layer: {expect: invariant}}\n",
    ),
)


# --------------------------------------------------------------------------- training


class RepeatOverRgb(nn.Module):
    """Parametrise a first-layer weight as one gray kernel repeated over R, G and B.

    Training the single kernel keeps the three slices bitwise equal at every step,
    so the exported model is an ordinary 3-channel Conv that sees only R+G+B.
    """

    def forward(self, gray_kernel: torch.Tensor) -> torch.Tensor:
        return gray_kernel.repeat(1, 3, 1, 1)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.mean(dim=1, keepdim=True)


def training_batch(schedule: Schedule, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the schedule's data stream: a pure function of its seed and the step."""
    images, labels = synthetic.batch(schedule.task, schedule.seed, step, BATCH_SIZE)
    return torch.from_numpy(images), torch.from_numpy(labels)


def take_step(model: SmallCNN, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One cross-entropy step."""
    images, labels = batch
    loss = nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@functools.cache
def trained_weights(schedule: Schedule) -> dict[str, torch.Tensor]:
    """Train from scratch; cached because high_lr starts from healthy's weights."""
    torch.manual_seed(schedule.seed)
    model = SmallCNN(num_classes=synthetic.NUM_CLASSES).train()
    if schedule.gray_first_layer:
        parametrize.register_parametrization(model.conv1, "weight", RepeatOverRgb())
    optimizer = torch.optim.Adam(model.parameters())
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=schedule.peak_lr, total_steps=schedule.steps)
    for step in range(schedule.steps):
        take_step(model, optimizer, training_batch(schedule, step))
        one_cycle.step()
    if schedule.gray_first_layer:
        parametrize.remove_parametrizations(model.conv1, "weight", leave_parametrized=True)
    return model.state_dict()


def fine_tune_too_fast(model: SmallCNN, schedule: Schedule, spike: Spike) -> None:
    """The spike, then the recovery; the data stream goes on where training stopped."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=spike.lr)
    stream = itertools.count(schedule.steps)
    for _ in range(spike.steps):
        take_step(model, optimizer, training_batch(schedule, next(stream)))
    for step in range(spike.recovery_steps):
        for group in optimizer.param_groups:
            group["lr"] = spike.recovery_lr * 0.5 * (1 + math.cos(math.pi * step / spike.recovery_steps))
        take_step(model, optimizer, training_batch(schedule, next(stream)))


def train(recipe: Recipe) -> SmallCNN:
    """The recipe's model in eval mode: its schedule's weights, then its spike if it has one."""
    model = SmallCNN(num_classes=synthetic.NUM_CLASSES)
    model.load_state_dict(trained_weights(recipe.schedule))
    if recipe.spike is not None:
        fine_tune_too_fast(model, recipe.schedule, recipe.spike)
    return model.eval()


# --------------------------------------------------------------------------- measuring


def relu_activity(model: SmallCNN, batches: Iterable[torch.Tensor]) -> dict[str, LayerActivity]:
    """Per layer: the fraction of exactly-zero ReLU outputs and the channels that are zero everywhere."""
    zeros = dict.fromkeys(RELU_AFTER, 0)
    sizes = dict.fromkeys(RELU_AFTER, 0)
    peaks: dict[str, torch.Tensor] = {}

    def recorder(layer: str) -> Callable[[nn.Module, tuple[torch.Tensor], torch.Tensor], None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            zeros[layer] += int((output == 0).sum())
            sizes[layer] += output.numel()
            peak = inputs[0].amax(dim=(0, 2, 3))
            peaks[layer] = torch.maximum(peaks[layer], peak) if layer in peaks else peak

        return record

    handles = [getattr(model, relu).register_forward_hook(recorder(layer)) for layer, relu in RELU_AFTER.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {
        layer: LayerActivity(
            zero_fraction=zeros[layer] / sizes[layer],
            # A ReLU output is zero exactly where its input is <= 0.
            dead_channels=[int(c) for c in torch.nonzero(peaks[layer] <= 0).flatten()],
            peak_preactivation=[float(p) for p in peaks[layer]],
        )
        for layer in RELU_AFTER
    }


def probe_batches() -> list[torch.Tensor]:
    """The package's default probe images (32 seeded photo crops), NCHW, in batches of 16."""
    try:
        from pytest_cnnaudit.engine.probes import default_probe_set
    except ImportError:  # a checkout without the package installed
        sys.path.insert(0, str(HERE.parent))
        from pytest_cnnaudit.engine.probes import default_probe_set
    probes = default_probe_set(size=(64, 64), count=32, seed=0)
    return [torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))) for batch in probes.batches(16)]


def accuracy(model: SmallCNN, task: str) -> float:
    """Top-1 accuracy on held-out batches (a seed no recipe trains on)."""
    correct = 0
    with torch.no_grad():
        for index in range(HELD_OUT_BATCHES):
            images, labels = synthetic.batch(task, HELD_OUT_SEED, index, BATCH_SIZE)
            correct += int((model(torch.from_numpy(images)).argmax(dim=1).numpy() == labels).sum())
    return correct / (HELD_OUT_BATCHES * BATCH_SIZE)


def measure(model: SmallCNN, recipe: Recipe, probes: list[torch.Tensor]) -> Measurements:
    training = (training_batch(recipe.schedule, step)[0] for step in range(TRAINING_CHECK_BATCHES))
    return Measurements(
        accuracy=accuracy(model, recipe.schedule.task),
        probe=relu_activity(model, probes),
        training=relu_activity(model, training),
        conv1_weight=model.conv1.weight.detach().numpy().copy(),
    )


# --------------------------------------------------------------------------- writing


def export_onnx(model: SmallCNN, path: Path) -> None:
    """ONNX with a dynamic batch, input ``image``, and each Conv node named after its torch module.

    The TorchScript-based exporter (``dynamo=False``) names nodes by module scope
    (``/conv2/Conv``), which is where the module names are read from; it also folds
    bn1 and bn2 into conv1 and conv2, so each ONNX Conv node outputs what the torch
    BatchNorm after it does, and is followed directly by its Relu. The export goes
    through memory and is saved in one piece: no external data file.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter is deprecated, not broken
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, synthetic.SIZE, synthetic.SIZE),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    name_conv_nodes(proto)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def name_conv_nodes(proto: onnx.ModelProto) -> None:
    """Rename each Conv node from ``/conv1/Conv`` to ``conv1`` so layer ids match the torch model's."""
    for node in proto.graph.node:
        if node.op_type == "Conv":
            node.name = node.name.split("/")[1]
    names = sorted(node.name for node in proto.graph.node if node.op_type == "Conv")
    if names != sorted(RELU_AFTER):
        raise RuntimeError(f"ONNX Conv nodes are {names}, expected {sorted(RELU_AFTER)}")


def export_torchscript(model: SmallCNN, path: Path) -> None:
    """A traced TorchScript archive, for the package's TorchScript loader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, and still what users ship
        torch.jit.trace(model, torch.zeros(1, 3, synthetic.SIZE, synthetic.SIZE)).save(str(path))


def config_text(recipe: Recipe, files: list[str]) -> str:
    """The audit config (the package's YAML schema) for every file of one model."""
    lines = [f"# {recipe.name}: {recipe.about}.", "# Written by example_models/build.py; see README.md.", "models:"]
    for name in files:
        lines.append(f"  - path: {name}")
        if name.endswith(".pt") and not name.endswith(".torchscript.pt"):
            lines += ["    factory: arch:SmallCNN", f"    factory_kwargs: {{num_classes: {synthetic.NUM_CLASSES}}}"]
        lines.append(f"    input: {INPUT_SPEC}")
    text = "\n".join(lines) + "\n"
    if recipe.checks_yaml:
        return text + "checks:\n" + recipe.checks_yaml
    return text + "# checks: the package defaults.\n"


def write_model(model: SmallCNN, recipe: Recipe, measured: Measurements, out: Path) -> None:
    """Every file of one model, its config and, for high_lr, its expected dead channels."""
    model_files = [f"{recipe.name}.onnx", f"{recipe.name}.pt"]
    export_onnx(model, out / model_files[0])
    torch.save(model.state_dict(), out / model_files[1])
    if recipe.torchscript:
        model_files.append(f"{recipe.name}.torchscript.pt")
        export_torchscript(model, out / model_files[-1])
    (out / f"{recipe.name}.yaml").write_text(config_text(recipe, model_files))
    if recipe.record_dead:
        expected = json.dumps({"dead_channels": measured.dead_on_probe()}, indent=2)
        (out / f"{recipe.name}.expected.json").write_text(expected + "\n")


# --------------------------------------------------------------------------- main


def summary(recipe: Recipe, measured: Measurements, seconds: float) -> str:
    """One line per model: what the README's claims rest on."""
    layers = "  ".join(
        f"{layer} zero {activity.zero_fraction:.3f} dead {activity.dead_channels}"
        for layer, activity in measured.probe.items()
    )
    selective = int((chromatic_fraction(measured.conv1_weight) > 0.5).sum())
    margins = [
        min(activity.margin() for activity in figures.values()) for figures in (measured.probe, measured.training)
    ]
    return (
        f"{recipe.name}: accuracy {measured.accuracy:.3f}  {layers}  "
        f"colour-selective conv1 filters {selective}/{len(measured.conv1_weight)}  "
        f"nearest to dead/alive: {margins[0]:.2f} probe, {margins[1]:.2f} training  ({seconds:.0f} s)"
    )


def build(recipe: Recipe, out: Path, probes: list[torch.Tensor]) -> None:
    """Train, measure, assert the recipe's properties, then write; nothing is written for a failed recipe."""
    started = time.perf_counter()
    model = train(recipe)
    measured = measure(model, recipe, probes)
    print(summary(recipe, measured, time.perf_counter() - started), flush=True)
    problems = [problem for check in recipe.properties if (problem := check(measured)) is not None]
    if problems:
        raise SystemExit(f"{recipe.name} lacks its promised properties: " + "; ".join(problems))
    write_model(model, recipe, measured, out)


def main(argv: list[str] | None = None) -> None:
    names = [recipe.name for recipe in RECIPES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=names, help="build only this model (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: example_models/)")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.out.resolve() != HERE:
        # The configs name the factory arch:SmallCNN, imported from the config's own folder.
        shutil.copy(HERE / "arch.py", args.out / "arch.py")
    probes = probe_batches()
    started = time.perf_counter()
    for recipe in RECIPES:
        if args.only is None or recipe.name in args.only:
            build(recipe, args.out, probes)
    print(f"built in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
