"""Learning-rate sanity: verdicts as pure functions, and the fine-tuning probe on a small healthy CNN.

The healthy CNN is ``example_models/healthy`` (a SmallCNN trained at a sane rate by
``example_models/build.py``), as ONNX and as a state_dict. Probes are kept tiny (8 probe
images, 8 steps of 4 images at 64x64) so that the whole file runs in about a minute.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from modelbuilders import save, two_conv_model
from PIL import Image

from pytest_cnnaudit.backends.base import LayerInfo
from pytest_cnnaudit.backends.torch import TorchBackend
from pytest_cnnaudit.checks.lr_sanity.check import LrSanityChecker
from pytest_cnnaudit.checks.lr_sanity.network import GraphBatchNorm
from pytest_cnnaudit.checks.lr_sanity.verdicts import (
    TrainingRun,
    allowed_new_dead,
    check_lr_layer,
    check_lr_model,
    max_safe_rate,
    newly_dead,
    sweep_rates,
)
from pytest_cnnaudit.config import AuditConfig, InputSpec, LrSanityCheck, ModelSpec, parse_config
from pytest_cnnaudit.document import LrSweep, ModelDocument, SweepPoint, Verdict
from pytest_cnnaudit.engine.audit import audit_model
from pytest_cnnaudit.engine.check import ModelLayout, ModelPlan
from pytest_cnnaudit.errors import ConfigError

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parents[1] / "example_models"
SIZE = 64
LOW_LR, HIGH_LR = 1e-4, 10.0
#: Only the lr_sanity items, on a tiny probe.
BASE_CONFIG = """\
probe: {{count: 8, batch_size: 8}}
models:
  - path: healthy.onnx
  - path: healthy.pt
    factory: arch:SmallCNN
    input: {{size: [{size}, {size}]}}
checks:
  sparsity: {{enabled: false}}
  dead_filters: {{enabled: false}}
  color: {{enabled: false}}
  lr_sanity: {{enabled: true, steps: 8, batch_size: 4, {settings}}}
"""


# --------------------------------------------------------------------------- pure verdicts


def test_max_new_dead_is_a_count_from_one_and_a_fraction_below() -> None:
    assert allowed_new_dead(0, 64) == 0
    assert allowed_new_dead(2, 64) == 2
    assert allowed_new_dead(0.1, 64) == 6
    assert allowed_new_dead(0.25, 8) == 2


def test_newly_dead_ignores_channels_that_were_dead_before() -> None:
    assert newly_dead((1, 4), (1, 2, 4, 7)) == (2, 7)
    assert newly_dead((1, 4), ()) == ()


def test_default_sweep_is_two_rates_per_decade_from_1e_5_to_10() -> None:
    rates = sweep_rates(LrSanityCheck())
    assert len(rates) == 13
    assert rates[0] == 1e-5 and rates[-1] == 10.0
    assert rates[1] == pytest.approx(10**-4.5, rel=1e-5)


def test_max_safe_rate_is_the_one_below_the_lowest_unsafe_rate() -> None:
    assert max_safe_rate([(1e-3, True), (1e-2, True), (1e-1, False), (1.0, True)]) == 1e-2
    assert max_safe_rate([(1e-3, True), (1e-2, True)]) == 1e-2
    assert max_safe_rate([(1e-3, False), (1e-2, True)]) is None


@given(
    channels=st.integers(1, 40),
    before=st.sets(st.integers(0, 39)),
    after=st.sets(st.integers(0, 39)),
    max_new_dead=st.one_of(st.integers(0, 10), st.floats(0, 0.999)),
)
def test_layer_verdict_fails_exactly_above_the_allowance(
    channels: int, before: set[int], after: set[int], max_new_dead: float
) -> None:
    before_dead = tuple(sorted(c for c in before if c < channels))
    after_dead = tuple(sorted(c for c in after if c < channels))
    verdict = check_lr_layer("conv", channels, before_dead, after_dead, max_new_dead, 0.1)
    new = len(set(after_dead) - set(before_dead))
    assert (verdict.outcome == "failed") == (new > allowed_new_dead(max_new_dead, channels))
    assert verdict.figures.new_dead_channels == tuple(sorted(set(after_dead) - set(before_dead)))


def test_layer_failure_names_counts_before_and_after_and_the_new_channels() -> None:
    verdict = check_lr_layer("conv2", 32, (3,), (3, 5, 9), 0, 0.5)
    assert verdict.outcome == "failed"
    assert verdict.message == (
        "fine-tuning at lr 0.5: 1 of 32 channels dead before, 3 after; "
        "2 newly dead > max_new_dead 0 (allowed 0): channels [5, 9]"
    )


def test_model_verdict_fails_on_a_non_finite_loss_giving_start_and_last_finite_loss() -> None:
    run = TrainingRun(1.0, (2.5, 40.0, float("nan")), {})
    verdict = check_lr_model(run, 0)
    assert verdict.outcome == "failed"
    assert "the loss became non-finite (nan) at step 3" in verdict.message
    assert "loss 2.5 at the start, last finite loss 40" in verdict.message
    assert verdict.figures.loss_end is None


def test_model_verdict_fails_when_lr_exceeds_the_max_safe_rate() -> None:
    safe, unsafe = TrainingRun(0.01, (1.0, 0.5), {}), TrainingRun(0.1, (1.0, 0.4), {})
    sweep = [(safe, 0, True), (unsafe, 3, False)]
    passed = check_lr_model(TrainingRun(0.01, (1.0, 0.5), {}), 0, sweep)
    failed = check_lr_model(TrainingRun(0.05, (1.0, 0.5), {}), 0, sweep)
    assert passed.outcome == "passed" and passed.figures.max_safe_lr == 0.01
    assert failed.outcome == "failed"
    assert failed.message.endswith("lr 0.05 exceeds the max safe learning rate 0.01 (at lr 0.1 3 filters died)")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ("max_new_dead: 1.5", "lr_sanity.max_new_dead: 1.5 is neither a whole count nor a fraction below 1"),
        ("sweep_range: [1, 0.1]", "lr_sanity.sweep_range: lowest rate 1.0 is not below highest rate 0.1"),
        ("objective: labels", "lr_sanity.labels_dir: objective labels needs it"),
    ],
)
def test_invalid_settings_name_their_key(settings: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        parse_config(f"checks:\n  lr_sanity: {{{settings}}}\n")


def test_rates_read_as_numbers_in_exponent_notation() -> None:
    settings = parse_config("checks:\n  lr_sanity: {lr: 1e-4, sweep_range: [3e-6, 1E+1]}\n").checks.lr_sanity
    assert settings.lr == 1e-4 and settings.sweep_range == (3e-6, 10.0)


def test_plan_is_empty_unless_enabled_and_skips_layers_without_an_inactive_region() -> None:
    layers = (
        LayerInfo("conv1", "Conv", "relu", 8, "r1"),
        LayerInfo("conv2", "Conv", "sigmoid", 8, "s2"),  # saturating: no inactive region to count
        LayerInfo("proj", "Conv", None, 8, None),
        LayerInfo("act", "Conv", "silu", 8, "s"),  # a rectifier: judged like ReLU
        LayerInfo("conv3", "Conv", "relu6", 8, "r3"),
    )
    spec = ModelSpec(path="m.onnx")
    layout = ModelLayout("onnx", InputSpec(size=(8, 8)), layers)
    assert LrSanityChecker().plan(ModelPlan("m.onnx", spec, AuditConfig(), layout)) == []
    enabled = parse_config(
        "checks:\n  lr_sanity: {enabled: true}\nlayers:\n  - match: conv3\n    checks: {lr_sanity: {enabled: false}}\n"
    )
    assert LrSanityChecker().plan(ModelPlan("m.onnx", spec, enabled, layout)) == ["conv1", "act", None]


# --------------------------------------------------------------------------- the healthy CNN


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with example_models' healthy.onnx, healthy.pt (a state_dict) and arch.py, its factory."""
    folder = tmp_path_factory.mktemp("healthy")
    for name in ("arch.py", "healthy.onnx", "healthy.pt"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def lr_config(folder: Path, settings: str) -> AuditConfig:
    return parse_config(BASE_CONFIG.format(size=SIZE, settings=settings), str(folder / "cnnaudit.yaml"))


Audit = Callable[[str, str], ModelDocument]


@pytest.fixture(scope="module")
def lr_audit(healthy: Path) -> Audit:
    """``lr_audit("healthy.onnx", "lr: 10")``: the audit with those lr_sanity settings, run once per module."""
    done: dict[tuple[str, str], ModelDocument] = {}

    def run(model: str, settings: str) -> ModelDocument:
        if (model, settings) not in done:
            done[model, settings] = audit_model(healthy / model, lr_config(healthy, settings))
        return done[model, settings]

    return run


def outcomes(result: ModelDocument) -> dict[str, str]:
    return {v.item_id: v.outcome for v in result.verdicts if v.check == "lr_sanity"}


def model_verdict(result: ModelDocument) -> Verdict:
    return next(v for v in result.verdicts if v.item_id == "lr_sanity")


SWEEP = "sweep: true, sweep_range: [1.0e-4, 10], sweep_per_decade: 1"


@pytest.mark.parametrize("model", ["healthy.pt", "healthy.onnx"])
def test_healthy_cnn_passes_at_a_low_rate(lr_audit: Audit, model: str) -> None:
    result = lr_audit(model, f"lr: {LOW_LR}")
    assert set(outcomes(result)) == {"lr_sanity[conv1]", "lr_sanity[conv2]", "lr_sanity[conv3]", "lr_sanity"}
    assert set(outcomes(result).values()) == {"passed"}
    assert all(v.figures.new_dead_channels == () for v in result.verdicts if v.layer is not None)


@pytest.mark.parametrize("model", ["healthy.pt", "healthy.onnx"])
def test_healthy_cnn_fails_at_a_very_high_rate_with_newly_dead_filters(lr_audit: Audit, model: str) -> None:
    result = lr_audit(model, f"lr: {HIGH_LR}, {SWEEP}")
    failed = [v for v in result.verdicts if v.layer is not None and v.outcome == "failed"]
    assert failed
    for verdict in failed:
        assert verdict.figures.dead_after > verdict.figures.dead_before
        assert f"fine-tuning at lr 10: {verdict.figures.dead_before} of " in verdict.message
    model_item = model_verdict(result)
    assert model_item.outcome == "failed"
    assert "exceeds the max safe learning rate" in model_item.message


@pytest.mark.parametrize("model", ["healthy.pt", "healthy.onnx"])
def test_max_safe_rate_lies_between_the_low_and_the_high_rate(lr_audit: Audit, model: str) -> None:
    sweep = lr_audit(model, f"lr: {HIGH_LR}, {SWEEP}").lr_sweep
    assert isinstance(sweep, LrSweep) and sweep.max_safe_lr is not None
    assert LOW_LR <= sweep.max_safe_lr < HIGH_LR
    assert sweep.grid == (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
    curve = sweep.curve
    assert [point.safe for point in curve] == [True] * (len(curve) - 1) + [False]  # stops at the first unsafe
    first = curve[0]
    assert first == SweepPoint(1e-4, 0, first.loss_start, first.loss_end, None, (), True)
    assert first.loss_start is not None and first.loss_end is not None


@pytest.mark.parametrize("lr", [LOW_LR, HIGH_LR])
def test_onnx_and_torch_forms_get_the_same_verdicts(lr_audit: Audit, lr: float) -> None:
    settings = f"lr: {lr}, {SWEEP}" if lr == HIGH_LR else f"lr: {lr}"
    assert outcomes(lr_audit("healthy.onnx", settings)) == outcomes(lr_audit("healthy.pt", settings))


@pytest.mark.parametrize("model", ["healthy.pt", "healthy.onnx"])
def test_same_seed_same_result(lr_audit: Audit, healthy: Path, model: str) -> None:
    settings = f"lr: {HIGH_LR}, {SWEEP}"
    again = audit_model(healthy / model, lr_config(healthy, settings))
    first = lr_audit(model, settings)
    assert [(v.item_id, v.outcome, v.message, v.figures) for v in again.verdicts] == [
        (v.item_id, v.outcome, v.message, v.figures) for v in first.verdicts
    ]
    assert (again.lr_sweep, again.color_profile) == (first.lr_sweep, first.color_profile)


def test_original_model_and_torch_settings_are_untouched(healthy: Path, lr_audit: Audit) -> None:
    sys.path.insert(0, str(healthy))
    try:
        from arch import SmallCNN
    finally:
        sys.path.remove(str(healthy))
    module = SmallCNN(num_classes=4)
    module.load_state_dict(torch.load(healthy / "healthy.pt", weights_only=True))
    weights = {key: value.clone() for key, value in module.state_dict().items()}
    files = {name: hashlib.sha256((healthy / name).read_bytes()).hexdigest() for name in ("healthy.onnx", "healthy.pt")}
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    spec = ModelSpec(path="SmallCNN", input=InputSpec(size=(SIZE, SIZE)))
    result = audit_model(module, lr_config(healthy, f"lr: {HIGH_LR}"), spec)
    lr_audit("healthy.onnx", f"lr: {HIGH_LR}")
    assert "failed" in outcomes(result).values()  # the copy did change
    assert all(torch.equal(value, weights[key]) for key, value in module.state_dict().items())
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert files == {name: hashlib.sha256((healthy / name).read_bytes()).hexdigest() for name in files}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "torch.export"])
def test_torchscript_and_exported_programs_train_under_the_same_layer_ids(
    healthy: Path, lr_audit: Audit, fmt: str
) -> None:
    sys.path.insert(0, str(healthy))
    try:
        from arch import SmallCNN
    finally:
        sys.path.remove(str(healthy))
    module = SmallCNN(num_classes=4).eval()
    module.load_state_dict(torch.load(healthy / "healthy.pt", weights_only=True))
    example = torch.zeros(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            path = healthy / "healthy.ts"
            torch.jit.trace(module, example).save(str(path))
        else:
            path = healthy / "healthy.pt2"
            torch.export.save(torch.export.export(module, (example,)), str(path))
    config = lr_config(healthy, f"lr: {HIGH_LR}")
    result = audit_model(path, config, ModelSpec(path=path.name, input=InputSpec(size=(SIZE, SIZE))))
    assert set(outcomes(result)) == set(outcomes(lr_audit("healthy.pt", f"lr: {HIGH_LR}")))
    assert "failed" in {v.outcome for v in result.verdicts if v.layer is not None}  # its weights were trained
    assert fmt in model_verdict(result).figures.trainable_copy


def test_the_trainable_copy_of_the_measured_graph_shares_no_tensor_and_records_to_the_probe() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    backend = TorchBackend(model, "module", InputSpec(size=(8, 8)), "net", batch_size=2)
    recorded: list[str] = []
    copied = backend.trainable_copy(lambda key, activation: recorded.append(key))
    assert copied is not None
    originals = {tensor.untyped_storage().data_ptr() for tensor in backend.graph_module.state_dict().values()}
    assert not originals & {tensor.untyped_storage().data_ptr() for tensor in copied.state_dict().values()}
    copied(torch.rand(2, 3, 8, 8))
    assert recorded == [layer.tensor for layer in backend.layers]  # to the probe's tap, not the backend's sink
    before = [tensor.clone() for tensor in backend.graph_module.state_dict().values()]
    with torch.no_grad():
        for tensor in copied.state_dict().values():
            tensor.add_(1)
    assert all(torch.equal(a, b) for a, b in zip(before, backend.graph_module.state_dict().values()))


@pytest.mark.parametrize("decomposed", [False, True])
def test_exported_batch_norm_trains_on_batch_statistics_and_keeps_its_running_ones(decomposed: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    images = torch.rand(4, 3, 8, 8)
    program = torch.export.export(copy.deepcopy(model), (images,))  # the graph shares the module's tensors
    graph = (program.run_decompositions() if decomposed else program).module()
    switch = GraphBatchNorm(graph)
    assert len(switch.exported) == 1
    switch(True)
    assert torch.allclose(graph(images), copy.deepcopy(model).train()(images), atol=1e-5)
    switch(False)
    assert torch.allclose(graph(images), model(images), atol=1e-5)
    assert torch.equal(graph.state_dict()["1.running_mean"], torch.full((4,), 0.5))


def test_a_diverging_loss_fails_the_model_item_and_nan_layers_fail_theirs(lr_audit: Audit) -> None:
    result = lr_audit("healthy.pt", "lr: 1.0e+9, objective: random")
    verdict = model_verdict(result)
    assert verdict.outcome == "failed"
    assert "the loss became non-finite" in verdict.message
    assert verdict.figures.diverged_at_step >= 1
    broken = [v for v in result.verdicts if v.layer is not None and v.figures.non_finite]
    assert broken
    assert all(v.outcome == "failed" and "activations became NaN or infinite" in v.message for v in broken)


def _write_labelled_images(folder: Path, classes: int, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for label in range(classes):
        (folder / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{label}" / f"{index}.png")


@pytest.mark.parametrize("objective", ["labels", "random"])
def test_labels_and_random_objectives_train(healthy: Path, tmp_path: Path, objective: str) -> None:
    _write_labelled_images(tmp_path / "labelled", classes=3)
    settings = f"lr: {LOW_LR}, objective: {objective}, labels_dir: {tmp_path / 'labelled'}"
    result = audit_model(healthy / "healthy.pt", lr_config(healthy, settings))
    assert set(outcomes(result).values()) == {"passed"}
    assert model_verdict(result).figures.steps == 8


def test_more_label_classes_than_the_model_scores_is_an_error(healthy: Path, tmp_path: Path) -> None:
    _write_labelled_images(tmp_path / "labelled", classes=5, per_class=1)
    settings = f"objective: labels, labels_dir: {tmp_path / 'labelled'}"
    result = audit_model(healthy / "healthy.pt", lr_config(healthy, settings))
    lr_items = [v for v in result.verdicts if v.check == "lr_sanity"]
    assert lr_items and {v.outcome for v in lr_items} == {"failed"}
    assert all("has 5 classes, but the model scores only 4" in v.message for v in lr_items)


# --------------------------------------------------------------------------- ONNX without a torch form


def global_max_pool_model() -> onnx.ModelProto:
    """conv1 -> Relu -> GlobalMaxPool: onnxruntime runs it, onnx2torch has no converter for GlobalMaxPool."""
    model = two_conv_model()
    pool = next(node for node in model.graph.node if node.op_type == "GlobalAveragePool")
    pool.op_type = "GlobalMaxPool"
    return model


def test_unconvertible_onnx_model_skips_its_lr_items_with_the_reason(tmp_path: Path) -> None:
    path = save(global_max_pool_model(), tmp_path / "maxpool.onnx")
    result = audit_model(path, parse_config("checks:\n  lr_sanity: {enabled: true}\n"))
    lr_items = [v for v in result.verdicts if v.check == "lr_sanity"]
    assert [v.item_id for v in lr_items] == ["lr_sanity[conv1]", "lr_sanity[conv2]", "lr_sanity"]
    for verdict in lr_items:
        assert verdict.outcome == "skipped"
        assert verdict.message.startswith(
            "the fine-tuning probe cannot run: onnx2torch cannot convert the model to torch: "
        )
        assert "GlobalMaxPool" in verdict.message


def test_onnx_audit_without_lr_sanity_does_not_import_torch(tmp_path: Path) -> None:
    path = save(two_conv_model(), tmp_path / "m.onnx")
    code = (
        "import sys\nfrom pytest_cnnaudit import audit\n"
        f"assert audit({str(path)!r}).passed\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the plugin


def test_plugin_lists_lr_items_and_reports_counts_before_and_after(pytester: pytest.Pytester, healthy: Path) -> None:
    shutil.copy(healthy / "healthy.onnx", pytester.path / "healthy.onnx")
    pytester.makefile(
        ".yaml",
        cnnaudit=(
            "probe: {count: 8, batch_size: 8}\n"
            "checks:\n"
            "  sparsity: {enabled: false}\n"
            "  dead_filters: {enabled: false}\n"
            "  color: {enabled: false}\n"
            f"  lr_sanity: {{enabled: true, lr: {HIGH_LR}, steps: 8, batch_size: 4}}\n"
        ),
    )
    result = pytester.runpytest(
        "--cnnaudit", "healthy.onnx", "--cnnaudit-config", "cnnaudit.yaml", "-v", "-p", "no:xdist"
    )
    result.stdout.fnmatch_lines(
        [
            "*lr_sanity[[]conv1[]] FAILED*",
            "*lr_sanity[[]conv2[]] FAILED*",
            "*lr_sanity[[]conv3[]] FAILED*",
            "*lr_sanity PASSED*",  # the loss stayed finite, and no sweep was asked for
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "healthy.onnx :: lr_sanity[[]conv1[]]: fine-tuning at lr 10: * of 16 channels dead before, * after; * newly dead*"
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
