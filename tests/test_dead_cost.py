"""What dead channels cost equals what pruning them removes, counted on narrower torch twins.

The independent count: torch's parameter count and multiply-adds from forward hooks on every conv and
linear layer, of the network built with the dead channels left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dead_models import Branchy, export
from torch import nn

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.torch import TorchBackend
from pytest_cnnaudit.checks.dead_filters.cost import ModelCost, dead_cost
from pytest_cnnaudit.checks.dead_filters.cost_onnx import onnx_cost_graph
from pytest_cnnaudit.checks.dead_filters.cost_torch import torch_cost_graph
from pytest_cnnaudit.config import InputSpec

SIZE = 32
SPEC = InputSpec(size=(SIZE, SIZE))


def parameters_and_macs(module: nn.Module) -> tuple[int, int]:
    macs = []

    def count(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            macs.append(output[0].numel() * per_output)
        else:
            macs.append(layer.in_features * layer.out_features)

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(torch.zeros(1, 3, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in module.parameters()), sum(macs)


def cost_of(module: nn.Module, dead: dict[str, tuple[int, ...]], form: str, folder: Path) -> ModelCost:
    """The cost of ``dead`` (module name -> channels) as the check counts it, from the ONNX export or the
    torch.export graph."""
    if form == "onnx":
        backend = OnnxBackend(export(module, folder / "m.onnx", SIZE), SPEC)
    else:
        backend = TorchBackend(module, "module", SPEC, "branchy", 2)
    graph = backend.model_graph()
    view = (
        onnx_cost_graph(graph.graph, (1, 3, SIZE, SIZE))
        if form == "onnx"
        else torch_cost_graph(graph.graph, torch.zeros(1, 3, SIZE, SIZE))
    )
    layers = {layer_id: (tensors.conv, tensors.activation or "") for layer_id, tensors in graph.layers.items()}
    return dead_cost(view, dead, layers)


@pytest.mark.parametrize("form", ["onnx", "torch"])
@pytest.mark.parametrize(
    ("dead", "narrower"),
    [
        ({"conv1": (1, 4, 6)}, {"a": 5}),
        # Concat puts conv2's 12 channels first; the bias-free depthwise channels they feed die with them
        ({"conv2": (0, 11), "depthwise": (0, 11)}, {"b": 10}),
        ({"conv3": (2,), "depthwise": (14,)}, {"c": 9}),
    ],
    ids=["conv1", "conv2", "conv3"],
)
def test_cost_equals_what_pruning_removes(dead: dict, narrower: dict, form: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cost = cost_of(Branchy(), dead, form, tmp_path)
    full_parameters, full_macs = parameters_and_macs(Branchy())
    pruned_parameters, pruned_macs = parameters_and_macs(Branchy(**narrower))
    assert (cost.model.parameters, cost.model.macs) == (full_parameters, full_macs)
    assert cost.dead.parameters == full_parameters - pruned_parameters
    assert cost.dead.macs == full_macs - pruned_macs
    assert sum(layer.spend.parameters for layer in cost.layers) == cost.dead.parameters
    assert sum(layer.spend.macs for layer in cost.layers) == cost.dead.macs


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.head(torch.relu(self.body(x) + x))


@pytest.mark.parametrize("form", ["onnx", "torch"])
def test_a_residual_add_stops_the_walk(form: str, tmp_path: Path) -> None:
    """A channel dead before a residual Add does not zero the sum: the next conv's slice is not charged;
    the channel dead after it is, and it is charged to the layers feeding the Add once."""
    before = cost_of(Residual(), {"stem": (2,)}, form, tmp_path)
    (stem,) = before.layers
    assert stem.spend.parameters == 3 * 9 + 1 + 4 * 9  # its filter and bias, and body's slice; not head's
    after = cost_of(Residual(), {"body": (1,)}, form, tmp_path)
    (body,) = after.layers
    assert body.spend.parameters == 4 * 9 + 1 + 6  # body's filter and bias, head's slice
    assert body.spend.macs == (4 * 9 + 6) * SIZE * SIZE
