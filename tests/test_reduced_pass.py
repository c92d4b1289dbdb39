"""The main pass over in-runtime reductions against the numpy path over whole activations, on every model.

The reference is what the audit did before the reductions moved into the runtime: the backend's
whole activations (``Backend.run``: onnxruntime graph outputs, torch recording calls) reduced in
numpy (``ChannelAccumulator.update``, itself checked against plain numpy in ``test_stats.py``).
Counts, dead channels, maxima and each channel's top images must be identical, means equal to
float32 rounding; then the colour profile's gray twins, the batch size the budget allows, the
sessions' memory and the prefetching probe loader.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from modelbuilders import conv_then, mixed_network, quantised, save_onnx, to_float16, two_conv_model
from onnxruntime.quantization import QuantFormat
from test_rectifiers import RECTIFIER_FORMS, rectifier_model

from pytest_cnnaudit.backends.onnx import OnnxBackend
from pytest_cnnaudit.backends.reductions import numpy_reductions
from pytest_cnnaudit.backends.torch import TorchBackend
from pytest_cnnaudit.backends.torch.backend import torch_reductions
from pytest_cnnaudit.config import InputSpec
from pytest_cnnaudit.engine.measure import fit_batch_size, measure, profile_indices, run_padded
from pytest_cnnaudit.engine.probes import ProbeSet, default_probe_set, grayscale, prefetched_batches, to_model_input
from pytest_cnnaudit.engine.stats import TOP_IMAGES, ChannelAccumulator, ChannelStats

EXAMPLES = Path(__file__).resolve().parent.parent / "example_models"
#: Test models beyond the examples: (builder, input spec)
BUILT = {
    "two_conv": lambda folder: save_onnx(two_conv_model((1, 4), (2,)), folder / "two_conv.onnx"),
    "mixed": lambda folder: save_onnx(mixed_network(), folder / "mixed.onnx"),
    "mixed-float16": lambda folder: save_onnx(to_float16(mixed_network()), folder / "float16.onnx"),
    "mixed-qdq": lambda folder: quantised(mixed_network(), folder, "qdq", quant_format=QuantFormat.QDQ),
    "mixed-qoperator": lambda folder: quantised(mixed_network(), folder, "qop", quant_format=QuantFormat.QOperator),
    "channels-last": lambda folder: save_onnx(
        conv_then("t = Transpose <perm = [0, 2, 3, 1]> (c)\nr = Relu (t)\nout = Transpose <perm = [0, 3, 1, 2]> (r)"),
        folder / "nhwc.onnx",
    ),
    "opset-11": lambda folder: save_onnx(conv_then("out = Relu (c)", 11), folder / "opset11.onnx"),
    **{
        f"rectifier-{form}": lambda folder, form=form: save_onnx(rectifier_model(form), folder / "rectifier.onnx")
        for form in RECTIFIER_FORMS
    },
}
MODELS = [*(f"example-{path.stem}" for path in sorted(EXAMPLES.glob("*.onnx"))), *BUILT]


def model_path(name: str, folder: Path) -> Path:
    if name.startswith("example-"):
        return EXAMPLES / f"{name.removeprefix('example-')}.onnx"
    return BUILT[name](folder)


def whole_activation_stats(backend: object, probes: ProbeSet, batch: int, eps: float) -> dict[str, ChannelStats]:
    """Before: every activation out of the runtime whole, reduced in numpy."""
    accumulators: dict[str, ChannelAccumulator] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        accumulators.setdefault(key, ChannelAccumulator(eps)).update(activation, channel_axis)

    for images in probes.batches(batch):
        run_padded(backend, to_model_input(images, backend.input_spec), sink)  # type: ignore[arg-type, attr-defined]
    return {key: accumulator.result() for key, accumulator in accumulators.items()}


def assert_identical(got: dict[str, ChannelStats], want: dict[str, ChannelStats]) -> None:
    assert list(got) == list(want)
    for key, stats in got.items():
        reference = want[key]
        assert (stats.count, stats.images) == (reference.count, reference.images), key
        np.testing.assert_array_equal(stats.inactive, reference.inactive, err_msg=key)
        assert stats.dead_channels == reference.dead_channels, key
        assert abs(stats.sparsity - reference.sparsity) <= 1e-12, key
        np.testing.assert_array_equal(stats.max, reference.max, err_msg=key)
        np.testing.assert_array_equal(stats.top_images, reference.top_images, err_msg=key)
        np.testing.assert_array_equal(stats.top_max, reference.top_max, err_msg=key)
        scale = np.abs(reference.max).max() + 1e-30
        np.testing.assert_allclose(stats.mean, reference.mean, rtol=1e-5, atol=1e-6 * scale, err_msg=key)


@pytest.mark.parametrize("eps", [0.0, 0.05])
@pytest.mark.parametrize("name", MODELS)
def test_reduced_statistics_equal_the_whole_activation_ones(name: str, eps: float, tmp_path: Path) -> None:
    backend = OnnxBackend(model_path(name, tmp_path), InputSpec())
    probes = default_probe_set(backend.input_spec.size, 10, 0)  # batches of 4, 4 and 2
    reduced = measure(backend, probes, 4, eps)
    assert_identical(reduced, whole_activation_stats(backend, probes, 4, eps))
    assert reduced, "nothing was measured"


def test_dynamic_spatial_dims_and_fixed_batch_padding(tmp_path: Path) -> None:
    """Positions unknown to shape inference come from each batch's shape; a fixed batch pads its last one."""
    dynamic = two_conv_model((3,), ())
    for dim in (2, 3):
        dynamic.graph.input[0].type.tensor_type.shape.dim[dim].dim_param = "side"
    fixed = two_conv_model((3,), ())
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    for model, spec in ((dynamic, InputSpec(size=(16, 16))), (fixed, InputSpec())):
        backend = OnnxBackend(save_onnx(model, tmp_path / "model.onnx"), spec)
        probes = default_probe_set(backend.input_spec.size, 10, 0)
        assert_identical(measure(backend, probes, 4, 0.0), whole_activation_stats(backend, probes, 4, 0.0))


def test_the_opened_model_is_dropped_once_a_session_exists_and_read_again_when_needed(tmp_path: Path) -> None:
    """The ModelProto and the numpy copy of every weight are not kept beside the session; the first conv's
    weights, the graph and a whole-activation session (pictures, patterns) still come from the file."""
    path = model_path("example-healthy", tmp_path)
    backend = OnnxBackend(path, InputSpec())
    first = backend.first_conv()
    opened = weakref.ref(backend.graph)
    probes = default_probe_set(backend.input_spec.size, 4, 0)
    before = measure(backend, probes, 4, 0.0)
    gc.collect()
    assert opened() is None
    again = backend.first_conv()
    assert again is not None and first is not None
    np.testing.assert_array_equal(again.weight, first.weight)
    assert backend.graph.constant(backend.graph.nodes[0].input[1]) is not None  # the file read again
    assert_identical(whole_activation_stats(backend, probes, 4, 0.0), before)  # a session of whole activations
    assert_identical(measure(backend, probes, 4, 0.0), before)  # and back


def test_gray_twins_of_the_profiled_images_run_in_the_main_pass(tmp_path: Path) -> None:
    """Each channel's top images are chosen among evenly spaced probe images, and kept with their
    achromatic twins' maxima: against every image and its twin run whole and reduced in numpy."""
    backend = OnnxBackend(model_path("example-hue_task", tmp_path), InputSpec())
    probes = default_probe_set(backend.input_spec.size, 12, 0)
    stats = measure(backend, probes, 4, 0.0, gray_twins=5)
    profiled = profile_indices(12, 5)
    assert profiled.tolist() == [0, 2, 4, 7, 9]
    colour: dict[str, list[np.ndarray]] = {}
    gray: dict[str, list[np.ndarray]] = {}
    for images in probes.batches(4):
        for store, pixels in ((colour, images), (gray, grayscale(images))):
            backend.run(
                to_model_input(pixels, backend.input_spec),
                lambda key, a, axis, store=store: store.setdefault(key, []).append(numpy_reductions(a, axis, 0.0).max),
            )
    for key, result in stats.items():
        maxima, twins = np.concatenate(colour[key])[profiled], np.concatenate(gray[key])[profiled]
        order = np.argsort(-maxima, axis=0, kind="stable")[:TOP_IMAGES]
        np.testing.assert_array_equal(result.top_images, profiled[order])
        np.testing.assert_array_equal(result.top_max, np.take_along_axis(maxima, order, axis=0))
        np.testing.assert_array_equal(result.top_gray, np.take_along_axis(twins, order, axis=0))
        assert result.images == 12  # the twins are not probe images: the statistics are the colour images'
    assert profile_indices(3, 32).tolist() == [0, 1, 2]


def test_batch_size_is_fitted_to_the_activations_of_one_image(tmp_path: Path) -> None:
    """Weighed from the reductions' shapes as before from the whole activations: 2 x their bytes per image."""
    backend = OnnxBackend(model_path("two_conv", tmp_path), InputSpec())
    probes = default_probe_set(backend.input_spec.size, 4, 0)
    emitted: list[int] = []
    run_padded(
        backend, to_model_input(next(probes.batches(1)), backend.input_spec), lambda k, a, ax: emitted.append(a.nbytes)
    )
    per_image_mb = 2.0 * sum(emitted) / 2**20
    assert fit_batch_size(backend, probes, 4096, 1) == int(1 // per_image_mb) < 4096
    assert fit_batch_size(backend, probes, 8, 1) == 8


def test_torch_reductions_equal_numpys() -> None:
    """What a CUDA device computes, checked here on CPU tensors."""
    rng = np.random.default_rng(3)
    values = np.maximum(rng.normal(size=(3, 5, 7, 9)), 0).astype(np.float32)
    values[1, 2] = 0.0
    maxima, active, sums = (t.numpy() for t in torch_reductions(torch.from_numpy(values), 0.25))
    want = numpy_reductions(values, 1, 0.25)
    np.testing.assert_array_equal(maxima, want.max)
    np.testing.assert_array_equal(active, want.active)
    np.testing.assert_allclose(sums, want.sum, rtol=1e-12)


def test_torch_backend_reducing_in_torch_gives_the_numpy_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recording calls' torch reductions (the CUDA path, run on the CPU here) against numpy's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 3), torch.nn.Hardswish()
    ).eval()
    backend = TorchBackend(net, "module", InputSpec(size=(16, 16)), "net", 4)
    probes = default_probe_set((16, 16), 10, 0)
    numpy_stats = measure(backend, probes, 4, 0.0)
    monkeypatch.setattr(TorchBackend, "reduces_on_device", property(lambda self: True))
    assert_identical(measure(backend, probes, 4, 0.0), numpy_stats)
    assert_identical(numpy_stats, whole_activation_stats(backend, probes, 4, 0.0))


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(size=(20, 24)),
        InputSpec(size=(20, 24), channels="BGR", layout="NHWC", scale=255.0, mean=(1.0, 2.0, 3.0)),
    ],
)
def test_prefetched_batches_are_the_batches_model_input_and_their_twins(spec: InputSpec) -> None:
    from pytest_cnnaudit.backends.base import resolve_input_spec

    resolved = resolve_input_spec(spec, None, "model")
    gray = resolve_input_spec(InputSpec(size=(20, 24), channels="GRAY"), None, "model")
    probes = default_probe_set((20, 24), 11, 3)
    for input_spec in (resolved, gray):
        pairs = list(prefetched_batches(probes, 4, input_spec, frozenset({1, 2, 9})))
        plain = list(probes.batches(4))
        assert [(len(inputs), len(twins)) for inputs, twins in pairs] == [(4, 2), (4, 0), (3, 1)]
        for (model_input, twins), batch, rows in zip(pairs, plain, ([1, 2], [], [1])):
            np.testing.assert_array_equal(model_input, to_model_input(batch, input_spec))
            if rows:
                np.testing.assert_array_equal(twins, to_model_input(grayscale(batch[rows]), input_spec))


def test_prefetching_stays_a_bounded_number_of_batches_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_cnnaudit.backends.base import resolve_input_spec

    probes = default_probe_set((8, 8), 40, 0)
    made: list[int] = []
    original = ProbeSet.image

    def counting_image(self: ProbeSet, index: int) -> np.ndarray:
        made.append(index)
        return original(self, index)

    monkeypatch.setattr(ProbeSet, "image", counting_image)
    batches = prefetched_batches(probes, 4, resolve_input_spec(InputSpec(size=(8, 8)), None, "m"), ahead=2)
    next(batches)
    assert len(made) <= 4 * 4  # the batch taken, the 2 ahead, and the one submitted as it was taken
    batches.close()


def test_an_unreadable_image_raises_when_its_batch_is_taken(tmp_path: Path) -> None:
    from PIL import Image

    from pytest_cnnaudit.backends.base import resolve_input_spec
    from pytest_cnnaudit.engine.probes import user_probe_set
    from pytest_cnnaudit.errors import ProbeError

    for index in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(tmp_path / f"{index}.png")
    (tmp_path / "4.png").write_bytes(b"not a png")
    probes = user_probe_set(tmp_path, (8, 8), None, 0)
    batches = prefetched_batches(probes, 2, resolve_input_spec(InputSpec(size=(8, 8)), None, "m"))
    assert len(next(batches)[0]) == 2 and len(next(batches)[0]) == 2  # images 0-3
    with pytest.raises(ProbeError, match=r"4\.png"):
        next(batches)
