"""Each dead channel's evidence: provable channels never fire, revivable ones fire on their witness.

Soundness is checked against onnxruntime on random inputs in the box and the probe photographs
(hypothesis over random networks; the example models; torchvision exports with real BatchNorm
statistics), never against the bounds themselves. A witness is fed back through onnxruntime,
outside the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from dead_models import (
    GREEN,
    GREEN_SPEC,
    PLANTED,
    GreenNet,
    box_samples,
    export,
    imagenet_spec,
    plant_dead,
    probe_inputs,
    runtime_values,
    with_batch_norm_statistics,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from random_networks import random_network

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.onnx.index import OnnxGraph
from pytest_cnnaudit.backends.onnx.tensors import activation_input
from pytest_cnnaudit.backends.torch import TorchBackend
from pytest_cnnaudit.checks.dead_filters.certify import Certificate, certify, input_box
from pytest_cnnaudit.checks.dead_filters.evidence import gather_evidence
from pytest_cnnaudit.config import InputSpec, parse_config
from pytest_cnnaudit.engine.audit import measure_model
from pytest_cnnaudit.engine.check import AuditContext
from pytest_cnnaudit.engine.planning import open_model

EXAMPLES = Path(__file__).resolve().parent.parent / "example_models"
EXAMPLE_SPEC = InputSpec(size=(64, 64), layout="NCHW", channels="RGB", scale=1, mean=(0, 0, 0), std=(1, 1, 1))


def certificate_of(path: Path, spec: InputSpec) -> tuple[OnnxBackend, Certificate]:
    backend = OnnxBackend(path, spec)
    return backend, certify(
        backend.model_graph(), backend.input_spec, {layer.id: layer.activation for layer in backend.layers}
    )


def assert_never_fire(
    model: onnx.ModelProto, backend: OnnxBackend, certificate: Certificate, inputs: np.ndarray
) -> int:
    """Every provably dead channel's pre-activation stays <= 0 and its measured activation never exceeds 0,
    as onnxruntime computes them on ``inputs``; the number of channels checked."""
    graph = OnnxGraph(model)
    layers = {layer.id: layer for layer in backend.layers}
    dead = {layer_id: proof.provably_dead for layer_id, proof in certificate.layers.items() if proof.provably_dead}
    if not dead:
        return 0
    tensors = {
        layer_id: (activation_input(graph, layers[layer_id].tensor), layers[layer_id].tensor) for layer_id in dead
    }
    values = runtime_values(model, sorted({t for pair in tensors.values() for t in pair}), inputs)
    for layer_id, channels in dead.items():
        preactivation, activation = tensors[layer_id]
        assert values[preactivation][:, list(channels)].max() <= 0.0, layer_id
        assert values[activation][:, list(channels)].max() <= 0.0, layer_id
    return sum(len(channels) for channels in dead.values())


def spec_for_box(low: float, high: float, size: int) -> InputSpec:
    """The input spec that maps pixels in [0, 1] onto [low, high] in every channel."""
    std = 1 / (high - low)
    return InputSpec(size=(size, size), layout="NCHW", channels="RGB", scale=1, mean=(-low * std,) * 3, std=(std,) * 3)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=st.floats(-3, 0), width=st.floats(0.1, 5))
def test_provably_dead_channels_of_random_networks_never_fire(
    seed: int, low: float, width: float, tmp_path_factory
) -> None:
    """Random networks (conv, BatchNorm, six activations, residual Add, max and average pools, Concat,
    depthwise); 96 points of the box each (uniform, random corners, both extreme corners)."""
    network = random_network(seed, low=low, high=low + width)
    path = tmp_path_factory.mktemp("random") / "net.onnx"
    onnx.save(network.model, str(path))
    backend, certificate = certificate_of(path, spec_for_box(low, low + width, network.input_shape[1]))
    assert all(
        proof.reached
        for proof in certificate.layers.values()
        if backend.model_graph().layers[proof.layer_id].preactivation
    )
    shape = network.input_shape
    inputs = box_samples(np.full(shape, low), np.full(shape, low + width), 96, seed)
    assert_never_fire(network.model, backend, certificate, inputs)


def test_random_networks_do_have_provably_dead_channels(tmp_path: Path) -> None:
    """Guards the property above against passing vacuously."""
    found = 0
    for seed in range(20):
        onnx.save(random_network(seed).model, str(tmp_path / "net.onnx"))
        _, certificate = certificate_of(tmp_path / "net.onnx", spec_for_box(-1, 1, 16))
        found += sum(len(proof.provably_dead) for proof in certificate.layers.values())
    assert found >= 20


# ----------------------------------------------------------------------------- planted dead channels


def planted(model: onnx.ModelProto, conv: str, channel: int) -> onnx.ModelProto:
    """``conv``'s channel with a zero filter and bias -50 (BatchNorm is folded in the example models)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {t.name: t for t in copy.graph.initializer}
    node = next(n for n in copy.graph.node if n.name == conv)
    weight = numpy_helper.to_array(initializers[node.input[1]]).copy()
    bias = numpy_helper.to_array(initializers[node.input[2]]).copy()
    weight[channel], bias[channel] = 0.0, -50.0
    initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
    initializers[node.input[2]].CopyFrom(numpy_helper.from_array(bias, node.input[2]))
    return copy


@pytest.mark.parametrize("example", ["healthy", "high_lr", "hue_task", "grayscale"])
@pytest.mark.parametrize("conv", ["conv1", "conv2", "conv3"])
def test_planted_dead_channel_is_provably_dead_in_the_example_models(example: str, conv: str, tmp_path: Path) -> None:
    model = planted(onnx.load(str(EXAMPLES / f"{example}.onnx")), conv, channel=5)
    onnx.save(model, str(tmp_path / "m.onnx"))
    backend, certificate = certificate_of(tmp_path / "m.onnx", EXAMPLE_SPEC)
    assert certificate.layers[conv].provably_dead == (5,)
    assert all(proof.reached for proof in certificate.layers.values())
    lower, upper = input_box(backend.input_spec)
    inputs = np.concatenate([probe_inputs(backend.input_spec), box_samples(lower[0], upper[0], 64, seed=0)])
    assert assert_never_fire(model, backend, certificate, inputs) == 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), example=st.sampled_from(["healthy", "high_lr", "hue_task"]))
def test_the_example_models_provably_dead_channels_never_fire(seed: int, example: str, tmp_path_factory) -> None:
    """A random conv and channel planted dead in an example model; 128 random points of the box each, and the
    probe set: the proof holds on every one (and nothing else of the models is proved dead)."""
    rng = np.random.default_rng(seed)
    conv, channel = f"conv{rng.integers(1, 4)}", int(rng.integers(0, 16))
    model = planted(onnx.load(str(EXAMPLES / f"{example}.onnx")), conv, channel)
    path = tmp_path_factory.mktemp("example") / "m.onnx"
    onnx.save(model, str(path))
    backend, certificate = certificate_of(path, EXAMPLE_SPEC)
    lower, upper = input_box(backend.input_spec)
    inputs = np.concatenate([probe_inputs(backend.input_spec), box_samples(lower[0], upper[0], 128, seed)])
    assert assert_never_fire(model, backend, certificate, inputs) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("architecture", "first", "middle"),
    [("resnet18", "conv1", "layer2.0.conv1"), ("mobilenet_v2", "features.0.0", "features.7.conv.1.0")],
)
def test_planted_dead_channel_is_provably_dead_in_torchvision_architectures(
    architecture: str, first: str, middle: str, tmp_path: Path
) -> None:
    """Random weights, BatchNorm with real running statistics (folded into the conv at ONNX export, kept
    in torch); two channels planted dead: exactly they are provably dead, in both backends, and never
    fire in onnxruntime."""
    size = 64
    model = with_batch_norm_statistics(architecture, size)
    plant_dead(model, first, channel=3)
    plant_dead(model, middle, channel=7)
    spec = imagenet_spec(size)
    path = export(model, tmp_path / "model.onnx", size, names_from_modules=False)
    convs = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    backend, certificate = certificate_of(path, spec)
    onnx_ids = [layer.id for layer in backend.layers]
    assert len(onnx_ids) == len(convs) and certificate.layers.keys() == set(onnx_ids)
    dead = {
        convs[onnx_ids.index(i)]: proof.provably_dead for i, proof in certificate.layers.items() if proof.provably_dead
    }
    assert dead == {first: (3,), middle: (7,)}
    lower, upper = input_box(spec)
    inputs = np.concatenate([probe_inputs(spec, 16), box_samples(lower[0], upper[0], 32, seed=0)])
    assert assert_never_fire(onnx.load(str(path)), backend, certificate, inputs) == 2
    torch_backend = TorchBackend(model, "module", spec, architecture, 2)
    kinds = {layer.id: layer.activation for layer in torch_backend.layers}
    from_torch = certify(torch_backend.model_graph(), spec, kinds).layers
    assert {i: proof.provably_dead for i, proof in from_torch.items() if proof.provably_dead} == dead


# ----------------------------------------------------------------------------- witnesses


GREEN_CONFIG = (
    "probe: {count: 32}\nmodels:\n  - path: green.onnx\n    input: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
)


@pytest.fixture(scope="module")
def green_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("green")
    export(GreenNet(), folder / "green.onnx", 64)
    (folder / "cnnaudit.yaml").write_text(GREEN_CONFIG)
    return folder / "green.onnx"


def green_context(path: Path) -> AuditContext:
    from pytest_cnnaudit.config import load_config

    config = load_config(path.parent / "cnnaudit.yaml")
    opened = open_model(path, config)
    main = measure_model(opened)
    return AuditContext(opened.plan(), path, opened.backend, main.probes, main.stats, main.batch_size)


def test_the_green_channel_is_dead_on_the_photos_but_not_provably(green_onnx: Path) -> None:
    """Independent: onnxruntime on the photographs gives 0 for both conv1 channels; the bound of the green
    channel over the box is exact (first layer): 1 - 0.9."""
    model = onnx.load(str(green_onnx))
    backend = OnnxBackend(green_onnx, GREEN_SPEC)
    measured = next(layer.tensor for layer in backend.layers if layer.id == "conv1")
    activation = runtime_values(model, [measured], probe_inputs(GREEN_SPEC))[measured]
    assert not activation[:, GREEN].any() and not activation[:, PLANTED].any()
    _, certificate = certificate_of(green_onnx, GREEN_SPEC)
    assert certificate.layers["conv1"].provably_dead == (PLANTED,)
    assert certificate.layers["conv1"].upper[GREEN] == pytest.approx(0.1, abs=1e-4)


def test_the_green_channel_is_revivable_and_its_witness_fires_in_onnxruntime(green_onnx: Path) -> None:
    context = green_context(green_onnx)
    dead = {"conv1": context.stats["conv1"].dead_channels}
    assert dead["conv1"] == (GREEN, PLANTED)
    evidence = gather_evidence(context, context.backend.model_graph(), dead)
    conv1 = evidence.layers["conv1"]
    assert conv1.provable == (PLANTED,)
    assert conv1.of(GREEN) == "revivable" and conv1.of(PLANTED) == "provable"
    witness = conv1.witnesses[GREEN]
    assert witness.pixels.min() >= 0.0 and witness.pixels.max() <= 1.0
    assert 0 < witness.steps <= 32
    model = onnx.load(str(green_onnx))
    measured = next(layer.tensor for layer in context.backend.layers if layer.id == "conv1")
    from pytest_cnnaudit.engine.probes import to_model_input

    fed_back = runtime_values(model, [measured], to_model_input(witness.pixels[None], GREEN_SPEC))[measured]
    assert fed_back[0, GREEN].max() > 0
    assert evidence.section.searched == 1 and "onnx2torch" in (evidence.section.torch_form or "")


def test_the_witness_search_is_deterministic(green_onnx: Path) -> None:
    first, second = (green_context(green_onnx) for _ in range(2))
    witnesses = [
        gather_evidence(c, c.backend.model_graph(), {"conv1": (GREEN,)}).layers["conv1"].witnesses[GREEN]
        for c in (first, second)
    ]
    assert np.array_equal(witnesses[0].pixels, witnesses[1].pixels) and witnesses[0].steps == witnesses[1].steps


def test_a_torch_model_gets_its_witness_from_its_exported_graph() -> None:
    """The torch route: the backend's own graph (dynamic batch), no ONNX anywhere."""
    config = "probe: {count: 32}\nmodels:\n  - path: GreenNet\n    input: {size: [64, 64], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
    module = GreenNet().eval()
    opened = open_model(module, parse_config(config), spec=parse_config(config).models[0])
    main = measure_model(opened)
    context = AuditContext(opened.plan(), module, opened.backend, main.probes, main.stats, main.batch_size)
    evidence = gather_evidence(context, opened.backend.model_graph(), {"conv1": (GREEN, PLANTED)})
    conv1 = evidence.layers["conv1"]
    assert conv1.provable == (PLANTED,) and set(conv1.witnesses) == {GREEN}
    with torch.no_grad():
        fired = torch.relu(
            module.conv1(torch.from_numpy((conv1.witnesses[GREEN].pixels[None] - 0.5) / 0.25).permute(0, 3, 1, 2))
        )
    assert fired[0, GREEN].max() > 0
    assert evidence.section.torch_form == "a copy of the torch.export graph the audit measured"
