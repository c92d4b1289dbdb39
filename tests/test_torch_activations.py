"""Every rectifier in every form torch writes it: the torch backend names the activation as the ONNX side
does, and the statistics find exactly the channels planted dead, checked against forward hooks on the
eager module (a value counts as zero when it is <= 0)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from modelbuilders import ActivationNet, Elementwise, ResidualChainNet, SequenceNet, plant_convs
from torch import nn

from pytest_cnnaudit.backends.torch import TorchBackend, export_graph, instrument
from pytest_cnnaudit.config import InputSpec
from pytest_cnnaudit.engine.measure import measure
from pytest_cnnaudit.engine.probes import ProbeSet, default_probe_set, to_model_input
from pytest_cnnaudit.engine.stats import ChannelAccumulator, ChannelStats

SIZE = (32, 32)
DEAD = {"conv1": (2,), "conv2": (1, 5)}


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


#: form -> (module maker, kind the backend must report)
RECTIFIERS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "ReLU": (nn.ReLU, "relu"),
    "ReLU inplace": (lambda: nn.ReLU(inplace=True), "relu"),
    "ReLU6": (nn.ReLU6, "relu6"),
    "F.relu6": (lambda: Elementwise(F.relu6), "relu6"),
    "clamp(0, 6)": (lambda: Elementwise(lambda x: x.clamp(0, 6)), "relu6"),
    "clamp(min=0)": (lambda: Elementwise(lambda x: torch.clamp(x, min=0)), "clip"),
    "Hardswish": (nn.Hardswish, "hardswish"),
    "x*relu6(x+3)/6": (lambda: Elementwise(lambda x: x * F.relu6(x + 3) / 6), "hardswish"),
    "x*(relu6(x+3)/6)": (lambda: Elementwise(lambda x: x * (F.relu6(x + 3) / 6)), "hardswish"),
    "x*hardsigmoid(x)": (lambda: Elementwise(lambda x: x * F.hardsigmoid(x)), "hardswish"),
    "SiLU": (nn.SiLU, "silu"),
    "x*sigmoid(x)": (lambda: Elementwise(lambda x: x * torch.sigmoid(x)), "silu"),
    "GELU": (nn.GELU, "gelu"),
    "GELU tanh": (lambda: nn.GELU("tanh"), "gelu"),
    "GELU erf": (lambda: Elementwise(gelu_erf), "gelu"),
    "GELU tanh written out": (lambda: Elementwise(gelu_tanh), "gelu"),
    "Mish": (nn.Mish, "mish"),
    "x*tanh(softplus(x))": (lambda: Elementwise(lambda x: x * torch.tanh(F.softplus(x))), "mish"),
    "ELU": (nn.ELU, "elu"),
    "SELU": (nn.SELU, "selu"),
    "CELU": (lambda: nn.CELU(0.5), "celu"),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), "leaky_relu"),
    "PReLU per channel": (lambda: nn.PReLU(8), "prelu"),
    "PReLU shared": (nn.PReLU, "prelu"),
}
#: Forms torch's core-ATen decomposition rewrites (an exported program saved after run_decompositions).
DECOMPOSED = {
    "Hardswish": "hardswish",
    "SiLU": "silu",
    "Mish": "mish",
    "SELU": "selu",
    "CELU": "celu",
    "PReLU per channel": "prelu",
    "PReLU shared": "prelu",
}
SATURATING: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "Sigmoid": (nn.Sigmoid, "sigmoid"),
    "Tanh": (nn.Tanh, "tanh"),
    "Hardsigmoid": (nn.Hardsigmoid, "hard_sigmoid"),
    "Softplus": (nn.Softplus, "softplus"),
    "Softmax": (lambda: nn.Softmax(dim=1), "softmax"),
}


def probe_batches(spec: InputSpec, count: int = 8, batch_size: int = 4) -> tuple[ProbeSet, list[np.ndarray]]:
    """The probe set and its batches as model input (what the measurement pass feeds the backend)."""
    probes = default_probe_set(SIZE, count=count)
    return probes, [to_model_input(batch, spec) for batch in probes.batches(batch_size)]


def hooked_stats(net: nn.Module, names: tuple[str, ...], batches: list[np.ndarray]) -> dict[str, ChannelStats]:
    """Per named activation module: its outputs' values <= 0 per channel, by forward hooks on the eager module.

    Only the counts and maxima are computed here (numpy on the hooked tensors); the returned objects
    carry them in ChannelStats' fields for comparison.
    """
    inactive: dict[str, np.ndarray] = {}
    maxima: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            values = output.detach().numpy()
            per_channel = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
            inactive[name] = inactive.get(name, 0) + (per_channel <= 0).sum(axis=1)
            maxima[name] = np.maximum(maxima.get(name, -np.inf), per_channel.max(axis=1))
            counts[name] = counts.get(name, 0) + per_channel.shape[1]

        return record

    handles = [getattr(net, name).register_forward_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            for batch in batches:
                net(torch.from_numpy(batch))
    finally:
        for handle in handles:
            handle.remove()
    empty = np.zeros(0)
    return {
        name: ChannelStats(
            counts[name], sum(len(batch) for batch in batches), inactive[name], maxima[name], empty, empty, empty, empty
        )
        for name in names
    }


def assert_measured_as_hooked(net: nn.Module, model: object, fmt: str, kind: str) -> None:
    """The backend's layers, kinds and per-channel zero counts equal the hooks' on ``net``."""
    backend = TorchBackend(model, fmt, InputSpec(size=SIZE), "net", batch_size=4)
    probes, batches = probe_batches(backend.input_spec)
    measured = measure(backend, probes, batch_size=4, zero_eps=0.0)
    expected = hooked_stats(net, ("act1", "act2"), batches)
    assert [(layer.id, layer.op, layer.activation, layer.channels) for layer in backend.layers] == [
        ("conv1", "Conv", kind, 8),
        ("conv2", "Conv", kind, 8),
    ]
    for layer, act in zip(backend.layers, ("act1", "act2")):
        stats = measured[layer.tensor]
        assert stats.count == expected[act].count
        np.testing.assert_array_equal(stats.inactive, expected[act].inactive)
        np.testing.assert_allclose(stats.max, expected[act].max, rtol=1e-5, atol=1e-6)
    assert [measured[layer.tensor].dead_channels for layer in backend.layers] == [DEAD["conv1"], DEAD["conv2"]]
    assert [expected[act].dead_channels for act in ("act1", "act2")] == [DEAD["conv1"], DEAD["conv2"]]


@pytest.mark.parametrize("form", list(RECTIFIERS))
def test_rectifier_dead_channels_match_hooks(form: str) -> None:
    make, kind = RECTIFIERS[form]
    net = plant_convs(ActivationNet(make), DEAD)
    assert_measured_as_hooked(net, net, "module", kind)


@pytest.mark.parametrize("form", list(DECOMPOSED))
def test_core_aten_decompositions_are_recognised(form: str) -> None:
    """torch's own decompositions: x * clamp(x + 3, 0, 6) / 6, x * sigmoid(x), where(x > 0, x, w * x), ..."""
    net = plant_convs(ActivationNet(RECTIFIERS[form][0]), DEAD)
    program = torch.export.export(net, (torch.zeros(4, 3, *SIZE),)).run_decompositions()
    single_ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any(op.split(".")[1] in ("hardswish", "silu", "mish", "selu", "celu", "prelu") for op in single_ops)
    assert_measured_as_hooked(net, program, "torch.export", DECOMPOSED[form])


class GeluErf(nn.Module):
    """GELU written with erf, as a module TorchScript can script (a lambda it cannot)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class HardswishWritten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3) / 6


TORCHSCRIPT = {
    "Hardswish": (nn.Hardswish, "hardswish"),
    "GELU erf": (GeluErf, "gelu"),
    "x*relu6(x+3)/6": (HardswishWritten, "hardswish"),
}


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("form", list(TORCHSCRIPT))
def test_torchscript_forms(form: str, how: str) -> None:
    """TorchScript keeps scalars as add.Scalar (scripted) or lifted tensor constants (traced)."""
    make, kind = TORCHSCRIPT[form]
    net = plant_convs(ActivationNet(make), DEAD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates TorchScript; users' archives still exist
        archive = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(4, 3, *SIZE))
    assert_measured_as_hooked(net, archive, "torchscript", kind)


@pytest.mark.parametrize("form", list(SATURATING))
def test_saturating_activations_are_named(form: str) -> None:
    make, kind = SATURATING[form]
    net = plant_convs(ActivationNet(make), {})
    backend = TorchBackend(net, "module", InputSpec(size=SIZE), "net", batch_size=4)
    assert [layer.activation for layer in backend.layers] == [kind, kind]


def test_hardswish_gate_is_not_a_relu6_of_its_own() -> None:
    """The clamp inside x * relu6(x + 3) / 6 follows conv too (through the Add): one layer, one HardSwish."""
    net = plant_convs(ActivationNet(RECTIFIERS["x*relu6(x+3)/6"][0]), {})
    backend = TorchBackend(net, "module", InputSpec(size=SIZE), "net", batch_size=4)
    graph = backend.graph_module.graph
    recorded = [node.args[1] for node in graph.nodes if node.op == "call_function" and node.target == backend._record]
    assert [node.target for node in recorded] == [torch.ops.aten.div.Tensor] * 2


def test_residual_chain_with_a_shared_sum_reaches_its_relu() -> None:
    """conv2 feeds ``a = conv2 + x`` and ``relu(a * 0.5 + a)``: ``a`` has two users that meet again."""
    net = plant_convs(ResidualChainNet(), {"conv2": (3,)})
    backend = TorchBackend(net, "module", InputSpec(size=SIZE), "net", batch_size=4)
    probes, batches = probe_batches(backend.input_spec)
    measured = measure(backend, probes, batch_size=4, zero_eps=0.0)
    expected = hooked_stats(net, ("act1", "act2"), batches)
    assert [(layer.id, layer.activation) for layer in backend.layers] == [("conv1", "relu"), ("conv2", "relu")]
    conv2 = measured[backend.layers[1].tensor]
    np.testing.assert_array_equal(conv2.inactive, expected["act2"].inactive)
    assert conv2.dead_channels == expected["act2"].dead_channels == (3,)


@pytest.mark.parametrize(("dims", "shape"), [(1, (4, 2, 200)), (3, (4, 3, 4, 12, 12))], ids=["Conv1d", "Conv3d"])
def test_conv1d_and_conv3d_layers_channels_on_axis_1(dims: int, shape: tuple[int, ...]) -> None:
    """Audio and video CNNs: layers found, channels on axis 1, every other axis a position."""
    net = plant_convs(SequenceNet(dims, in_channels=shape[1]), DEAD)
    graph_module, _ = export_graph(net, torch.zeros(shape), "net")
    accumulators: dict[str, ChannelAccumulator] = {}

    def record(key: str, activation: torch.Tensor) -> None:
        accumulators.setdefault(key, ChannelAccumulator()).update(activation.detach().numpy(), channel_axis=1)

    layers = instrument(graph_module, record)
    assert [(layer.id, layer.op, layer.activation, layer.channels) for layer in layers] == [
        ("conv1", "Conv", "relu", 8),
        ("conv2", "Conv", "silu", 8),
    ]
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=shape).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        for batch in batches:
            graph_module(torch.from_numpy(batch))
    expected = hooked_stats(net, ("act1", "act2"), batches)
    for layer, act in zip(layers, ("act1", "act2")):
        stats = accumulators[layer.tensor].result()
        assert stats.count == expected[act].count == 2 * shape[0] * math.prod(shape[2:])
        np.testing.assert_array_equal(stats.inactive, expected[act].inactive)
        assert stats.dead_channels == DEAD[layer.id]


@pytest.mark.parametrize(
    "function",
    [lambda x: x * torch.tanh(x), lambda x: x * torch.erf(x), lambda x: x * torch.abs(x)],
    ids=["x*tanh(x)", "x*erf(x)", "x*|x|"],
)
def test_products_that_are_no_rectifier_are_not_taken_for_one(function) -> None:
    """Gated forms are told apart by the gate: ``x * tanh(x)`` is never negative, so it has no inactive side."""
    net = plant_convs(ActivationNet(lambda: Elementwise(function)), {})
    backend = TorchBackend(net, "module", InputSpec(size=SIZE), "net", batch_size=4)
    kinds = {layer.activation for layer in backend.layers}
    assert not kinds & {"relu", "relu6", "clip", "hardswish", "silu", "gelu", "mish", "elu", "selu", "celu"}


def test_prelu_with_negative_slopes_is_measured_before_the_activation() -> None:
    """MTCNN's PReLUs learn negative slopes: there the output is > 0 on both sides of 0, so the layer's
    pre-activation is measured (<= 0 inactive whatever the slope), compared with hooks on the conv outputs."""
    net = plant_convs(ActivationNet(lambda: nn.PReLU(8)), {"conv1": (2,), "conv2": (1, 5)})
    with torch.no_grad():
        for act in (net.act1, net.act2):
            act.weight.copy_(torch.tensor([0.25, -0.3, 0.25, -0.1, 0.25, 0.25, -0.5, 0.25]))
    backend = TorchBackend(net, "module", InputSpec(size=SIZE), "net", batch_size=4)
    assert [layer.definition.split(" (")[0] for layer in backend.layers] == ["pre-activation <= zero_eps"] * 2
    probes, batches = probe_batches(backend.input_spec)
    measured = measure(backend, probes, batch_size=4, zero_eps=0.0)
    expected = hooked_stats(net, ("conv1", "conv2"), batches)  # the conv outputs: the PReLUs' inputs
    for layer, conv in zip(backend.layers, ("conv1", "conv2")):
        stats = measured[layer.tensor]
        np.testing.assert_array_equal(stats.inactive, expected[conv].inactive)
        assert stats.dead_channels == {"conv1": (2,), "conv2": (1, 5)}[conv]
