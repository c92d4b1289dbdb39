"""Signal (Conv1d) and clip (Conv3d) models: audited on generated or given probes, channels on axis 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from modelbuilders import onnx_model

from pytest_cnnaudit.config import parse_config
from pytest_cnnaudit.engine.audit import audit_model, probe_set_for
from pytest_cnnaudit.errors import CnnAuditError

PLANTED = (2, 5)


def planted_conv(rank: int, input_type: str, output_type: str) -> onnx.ModelProto:
    """image -> Conv (8 channels, kernel 3) -> Relu, channels 2 and 5 zero filters with bias -50."""
    channels = int(input_type.split(",")[1])
    kernel = [3] * (rank - 2)
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.5, (8, channels, *kernel)).astype(np.float32)
    bias = np.full(8, 0.05, np.float32)
    weight[list(PLANTED)], bias[list(PLANTED)] = 0.0, -50.0
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net ({input_type} image) => ({output_type} out) {{
        [conv] c = Conv <kernel_shape = {kernel}> (image, w, b)
        out = Relu (c)
    }}
    """
    return onnx_model(text, {"w": weight, "b": bias})


CASES = {
    "signal": (3, "float[N, 1, 200]", "float[N, 8, 198]"),
    "clip": (5, "float[N, 3, 4, 16, 16]", "float[N, 8, 2, 14, 14]"),
}
SHAPES = {"signal": (1, 200), "clip": (3, 4, 16, 16)}


def reference_dead(path: Path, probes: object) -> tuple[int, ...]:
    """Never-positive channels of the ReLU on the same probes, with onnxruntime and numpy."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    active = np.zeros(8, bool)
    for batch in probes.batches(4):  # type: ignore[attr-defined]
        (out,) = session.run(["out"], {"image": batch})
        active |= (out > 0).reshape(out.shape[0], 8, -1).any(axis=(0, 2))
    return tuple(int(c) for c in np.flatnonzero(~active))


@pytest.mark.parametrize("kind", CASES)
def test_generated_probes_find_the_planted_channels(kind: str, tmp_path: Path) -> None:
    rank, input_type, output_type = CASES[kind]
    path = tmp_path / "m.onnx"
    onnx.save(planted_conv(rank, input_type, output_type), str(path))
    config = parse_config("probe: {count: 8}\n", str(tmp_path / "cnnaudit.yaml"))
    document = audit_model(path, config)
    (layer,) = document.layers
    assert layer.dead_channels == PLANTED == reference_dead(path, probe_set_for(config, document.input))
    assert 0.2 < (layer.sparsity or 0) < 0.9
    colour = document.verdict("color", "conv")
    assert colour is not None and colour.outcome == "skipped" and "not an RGB image" in colour.message
    assert document.input is not None and document.input.shape == tuple(
        int(d) for d in input_type[9:].split("]")[0].split(", ")
    )


def test_a_given_npy_is_fed_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(planted_conv(*CASES["signal"]), str(path))
    arrays = np.random.default_rng(1).normal(0, 1, (6, 1, 200)).astype(np.float32)
    np.save(tmp_path / "signals.npy", arrays)
    config = parse_config("probe: {images: signals.npy}\n", str(tmp_path / "cnnaudit.yaml"))
    document = audit_model(path, config)
    probes = probe_set_for(config, document.input)
    assert probes.count == 6 and np.array_equal(next(probes.batches(6)), arrays)
    assert document.layers[0].dead_channels == PLANTED == reference_dead(path, probes)


def test_a_signal_of_unknown_length_asks_for_input_shape(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(planted_conv(3, "float[N, 1, L]", "float[N, 8, M]"), str(path))
    with pytest.raises(CnnAuditError, match=r"set models\[\]\.input\.shape: \[C, L\]"):
        audit_model(path, parse_config(""))
    config = parse_config(
        "models: [{path: m.onnx, input: {shape: [1, 120]}}]\nprobe: {count: 4}", str(tmp_path / "c.yaml")
    )
    assert audit_model(path, config, config.models[0]).layers[0].dead_channels == PLANTED


def test_a_wrong_npy_shape_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(planted_conv(*CASES["signal"]), str(path))
    np.save(tmp_path / "wrong.npy", np.zeros((4, 2, 200), np.float32))
    config = parse_config("probe: {images: wrong.npy}\n", str(tmp_path / "cnnaudit.yaml"))
    with pytest.raises(CnnAuditError, match=r"wrong.npy has shape \[4, 2, 200\], expected \(N, 1, 200\)"):
        audit_model(path, config)


class Conv1dNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 5)
        self.act = torch.nn.SiLU()

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(signal)).mean(dim=2)


def test_a_torch_conv1d_module_with_input_shape(tmp_path: Path) -> None:
    torch.manual_seed(0)  # the live channels' weights: seeded, so none of them dies by chance
    net = Conv1dNet().eval()
    with torch.no_grad():
        net.conv.weight[list(PLANTED)] = 0.0
        net.conv.bias[list(PLANTED)] = -50.0
    config = parse_config("probe: {count: 8}\nmodels: [{path: net, input: {shape: [1, 300]}}]")
    document = audit_model(net, config, config.models[0])
    seen = []
    handle = net.act.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    with torch.no_grad():
        for batch in probe_set_for(config, document.input).batches(4):
            net(torch.from_numpy(batch))
    handle.remove()
    outputs = torch.cat(seen).numpy()
    assert document.layers[0].dead_channels == PLANTED
    assert document.layers[0].dead_channels == tuple(np.flatnonzero((outputs <= 0).all(axis=(0, 2))))


def test_a_clip_model_reports_probe_evidence_and_the_cost_of_its_dead_channels(tmp_path: Path) -> None:
    """No pixel box to prove or search in for a signal or clip: its dead channels carry probe evidence,
    said in a note; what they cost is still counted."""
    path = tmp_path / "m.onnx"
    onnx.save(planted_conv(*CASES["clip"]), str(path))
    config = parse_config("probe: {count: 4}\nchecks: {dead_filters: {max_count: 0}}", str(tmp_path / "c.yaml"))
    document = audit_model(path, config)
    verdict = document.verdict("dead_filters", "conv")
    assert verdict is not None and verdict.outcome == "failed" and "channels [2 (probe), 5 (probe)]" in verdict.message
    assert document.dead_evidence is not None and any("no pixel box" in note for note in document.dead_evidence.notes)
    assert document.dead_cost is not None and document.dead_cost.dead_params > 0
