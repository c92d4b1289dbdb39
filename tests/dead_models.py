"""Models and runtime helpers for the dead-channel evidence tests.

- :class:`GreenNet`: a first-layer channel that fires only on saturated green (dead on the
  shipped photographs, revivable) and one planted dead (zero filter, bias -50: provable);
- :class:`Branchy`: widths as arguments, so pruning k channels is the same network k narrower;
- torchvision architectures with real BatchNorm statistics (random weights, nothing downloaded);
- onnxruntime run with any tensors as outputs, and points of an input box: the independent
  computations the tests check the code under test against.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pytest_cnnaudit.config import InputSpec
from pytest_cnnaudit.engine.probes import default_probe_set, to_model_input

#: Pixels in [0, 1] become (pixel - 0.5) / 0.25 in GreenNet's input.
GREEN_SPEC = InputSpec(
    size=(64, 64), layout="NCHW", channels="RGB", scale=1, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
)
GREEN, PLANTED = 0, 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GreenNet(nn.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> global pool -> fc; conv1's channel 0 a saturated-green detector.

    Channel 0 averages G - R - B over a 3x3 patch and subtracts 0.9, so it needs a patch of nearly
    pure green (G near 1, R and B near 0): the shipped photographs have none (their G - R - B never
    exceeds 0.01). Its upper bound over the box is exactly 1 - 0.9 = 0.1: not provably dead.
    Channel 1 is dead on every input (zero filter, bias -50).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            # the model sees (pixel - 0.5) / 0.25: on pixels the filter is w * 4, its bias shifted by -0.5 * 4 * sum(w)
            rgb = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1) / 9 / 4
            self.conv1.weight[GREEN] = rgb.expand(3, 3, 3)
            self.conv1.bias[GREEN] = -0.9 + 0.5 * 4 * float(self.conv1.weight[GREEN].sum())
            self.conv1.weight[PLANTED] = 0.0
            self.conv1.bias[PLANTED] = -50.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(image))))
        return self.fc(x.mean(dim=(2, 3)))


class Branchy(nn.Module):
    """conv1 -> ReLU -> MaxPool -> [conv2 -> ReLU, conv3 -> ReLU] -> Concat -> depthwise -> ReLU -> GAP -> fc.

    The depthwise conv has no bias: a zero input channel gives a zero output channel, dead in turn.
    """

    def __init__(self, a: int = 8, b: int = 12, c: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, a, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(a, b, 3, padding=1)
        self.conv3 = nn.Conv2d(a, c, 1)
        self.depthwise = nn.Conv2d(b + c, b + c, 3, padding=1, groups=b + c, bias=False)
        self.fc = nn.Linear(b + c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.cat([torch.relu(self.conv2(x)), torch.relu(self.conv3(x))], dim=1)
        x = torch.relu(self.depthwise(x))
        return self.fc(x.mean(dim=(2, 3)))


def export(module: nn.Module, path: Path, size: int, names_from_modules: bool = True) -> Path:
    """TorchScript-based ONNX export (folds BatchNorm into the conv), dynamic batch, input ``image``;
    with ``names_from_modules``, Conv nodes are named after their (top-level) module, ``/conv1/Conv`` ->
    ``conv1``, as in the example models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
        )
    if names_from_modules:
        model = onnx.load(str(path))
        for node in model.graph.node:
            if node.op_type == "Conv":
                node.name = node.name.strip("/").split("/")[-2]
        onnx.save(model, str(path))
    return path


def runtime_values(model: onnx.ModelProto, tensors: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What onnxruntime computes for ``tensors`` on ``inputs`` (the model's one image input)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    for name in tensors:
        exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    initializers = {t.name for t in model.graph.initializer}
    (image,) = [i.name for i in model.graph.input if i.name not in initializers]
    return dict(zip(tensors, session.run(tensors, {image: inputs.astype(np.float32)})))


def box_samples(low: np.ndarray, high: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` points of the box [low, high] (arrays of one input's shape): uniform ones, random corners,
    and the two extreme corners."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(0, 1, (count // 2, *low.shape))
    corners = rng.integers(0, 2, (count - count // 2 - 2, *low.shape)).astype(np.float64)
    fractions = np.concatenate([uniform, corners, np.zeros((1, *low.shape)), np.ones((1, *low.shape))])
    return low + fractions * (high - low)


def probe_inputs(spec: InputSpec, count: int = 32) -> np.ndarray:
    """The shipped probe photographs as the model's input."""
    return to_model_input(np.concatenate(list(default_probe_set(spec.size, count).batches(count))), spec)


# --------------------------------------------------------------------------- torchvision, real BatchNorm statistics


def with_batch_norm_statistics(name: str, size: int, batches: int = 3, seed: int = 0) -> nn.Module:
    """``torchvision.models.<name>()`` with running statistics averaged over ``batches`` batches of 8
    smooth images in the box (``momentum=None``: exactly these batches), as training leaves them."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        for _ in range(batches):
            coarse = torch.rand(8, 3, max(1, size // 16), max(1, size // 16))
            images = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
            model((images - mean) / std)
    return model.eval()


def plant_dead(model: nn.Module, conv_name: str, channel: int, bias: float = -50.0) -> None:
    """Zero ``channel``'s filter in conv ``conv_name`` and give its pre-activation the constant ``bias``
    (through the BatchNorm that follows, when one does)."""
    modules = dict(model.named_modules())
    names = list(modules)
    following = names[names.index(conv_name) + 1 :][:3]
    norm = next((modules[n] for n in following if isinstance(modules[n], nn.BatchNorm2d)), None)
    with torch.no_grad():
        modules[conv_name].weight[channel] = 0.0
        if norm is not None:  # gamma * (0 - mean) / sqrt(var + eps) + beta = bias
            scale = norm.weight[channel] / torch.sqrt(norm.running_var[channel] + norm.eps)
            norm.bias[channel] = bias + scale * norm.running_mean[channel]
        else:
            modules[conv_name].bias[channel] = bias


def imagenet_spec(size: int) -> InputSpec:
    return InputSpec(size=(size, size), layout="NCHW", channels="RGB", scale=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
