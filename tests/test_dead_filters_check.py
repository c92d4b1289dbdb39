"""The dead-filter verdicts with evidence and cost: which channels count, the messages, the reports.

GreenNet's conv1 has one revivable channel (saturated green, dead on the photographs) and one
provably dead one (zero filter, bias -50); its other channels live. Its conv2 is alive.
"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dead_models import GREEN, PLANTED, GreenNet, export

import pytest_cnnaudit
from pytest_cnnaudit.checks.dead_filters import certify as certify_module
from pytest_cnnaudit.checks.dead_filters import evidence as evidence_module
from pytest_cnnaudit.config import parse_config
from pytest_cnnaudit.document import AuditDocument, DeadFiltersFigures, ModelDocument, Verdict, dump_json
from pytest_cnnaudit.engine.audit import audit_document
from pytest_cnnaudit.report.html import build_html
from pytest_cnnaudit.report.terminal import summary_lines

pytest_plugins = ["pytester"]

INPUT = "input: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}"


def green_config(folder: Path, dead_filters: str = "{}") -> str:
    text = f"runtime: {{isolate: false}}\nmodels:\n  - path: green.onnx\n    {INPUT}\nchecks:\n  dead_filters: {dead_filters}\n"
    (folder / "cnnaudit.yaml").write_text(text)
    return text


@pytest.fixture
def green(tmp_path: Path) -> Path:
    return export(GreenNet(), tmp_path / "green.onnx", 64)


def conv1(green: Path, dead_filters: str) -> tuple[ModelDocument, Verdict]:
    green_config(green.parent, dead_filters)
    model = pytest_cnnaudit.audit(green, green.parent / "cnnaudit.yaml").models[0]
    verdict = model.verdict("dead_filters", "conv1")
    assert verdict is not None
    return model, verdict


def test_every_dead_channel_counts_by_default_and_is_named_with_its_evidence(green: Path) -> None:
    _, verdict = conv1(green, "{max_count: 1}")
    assert verdict.outcome == "failed"
    assert verdict.message.startswith(
        "2 of 8 channels never active (25.0%) > max_count 1 (allowed 1): channels [0 (revivable), 1 (provable)]; "
        "they spend "
    )
    figures = verdict.figures
    assert figures.evidence == ("revivable", "provable") and figures.counting == "probe" and figures.counted == 2
    assert figures.provable_channels == (PLANTED,) and figures.revivable_channels == (GREEN,)
    assert figures.upper_bound_reached is True
    (witness,) = figures.witnesses
    assert witness.channel == GREEN and witness.preactivation > 0 and 0 < witness.steps <= 32


def test_evidence_provable_counts_only_the_provably_dead(green: Path) -> None:
    _, verdict = conv1(green, "{max_count: 1, evidence: provable}")
    assert verdict.outcome == "passed"
    assert verdict.message.startswith(
        "2 of 8 channels never active (25.0%), 1 provably dead, allowed 1: channels [0 (revivable), 1 (provable)]"
    )
    _, verdict = conv1(green, "{max_count: 0, evidence: provable}")
    assert verdict.outcome == "failed" and verdict.figures.counted == 1
    assert "1 provably dead > max_count 0 (allowed 0)" in verdict.message


def test_a_layer_within_its_allowance_is_proved_but_not_searched(green: Path) -> None:
    """The search never changes what counts: it runs where a layer fails, not on a passing one."""
    model, verdict = conv1(green, "{max_count: 2}")
    assert verdict.outcome == "passed" and verdict.figures.evidence == ("probe", "provable")
    assert model.dead_evidence.searched == 0 and verdict.figures.witnesses == ()
    assert model.dead_evidence.notes == (
        "1 probe-dead channel(s) in layers within their allowance not searched "
        "(the witness search runs where a layer has more dead channels than it allows)",
    )


def test_without_proof_and_search_every_dead_channel_is_probe(green: Path) -> None:
    model, verdict = conv1(green, "{max_count: 0, evidence: provable, certify: false, witness_steps: 0}")
    assert verdict.figures.evidence == ("probe", "probe") and verdict.figures.upper_bound_reached is None
    assert verdict.outcome == "passed"
    assert "0 provably dead (the bound proof did not run), allowed 0" in verdict.message
    assert model.dead_evidence.certified is False and model.dead_evidence.torch_form is None


def test_a_proof_the_probe_set_contradicts_fails_its_layer_as_a_bug(
    green: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken proof claiming a live channel of conv2 dead: that layer's item says it is cnnaudit's bug."""
    real = certify_module.certify

    def broken(graph, spec, kinds):
        found = real(graph, spec, kinds)
        wrong = dataclasses.replace(found.layers["conv2"], provably_dead=(3,))
        return dataclasses.replace(found, layers={**found.layers, "conv2": wrong})

    monkeypatch.setattr(evidence_module, "certify", broken)
    green_config(green.parent, "{}")
    model = pytest_cnnaudit.audit(green, green.parent / "cnnaudit.yaml").models[0]
    verdict = model.verdict("dead_filters", "conv2")
    assert verdict.outcome == "failed"
    assert "channels [3] are proved dead by the interval bounds but were active on the probe set" in verdict.message
    assert "a bug in cnnaudit" in verdict.message
    assert model.verdict("dead_filters", "conv1").outcome == "passed"


def test_cost_figures_agree_between_the_verdict_and_the_model_section(green: Path) -> None:
    """conv1's two dead channels: each filter 27 weights + bias, and conv2's slices 8 x 9 each."""
    model, verdict = conv1(green, "{}")
    cost = model.dead_cost
    (layer,) = cost.layers
    assert layer.id == "conv1" and layer.dead_channels == (GREEN, PLANTED)
    assert layer.dead_params == 2 * (27 + 1) + 2 * 8 * 9 == verdict.figures.dead_params
    assert layer.dead_macs == (2 * 27 + 2 * 8 * 9) * 64 * 64 == verdict.figures.dead_macs
    assert cost.dead_params == layer.dead_params and cost.model_params == sum(
        p.numel() for p in GreenNet().parameters()
    )
    assert verdict.figures.dead_param_share == pytest.approx(layer.dead_params / cost.model_params)


def test_the_document_round_trips_through_json(green: Path) -> None:
    green_config(green.parent, "{max_count: 1}")
    config = parse_config((green.parent / "cnnaudit.yaml").read_text(), str(green.parent / "cnnaudit.yaml"))
    document, _ = audit_document(green, config)
    assert document.dead_evidence is not None and document.dead_cost is not None
    data = AuditDocument((document,)).to_json()
    again = AuditDocument.from_json(data)
    assert dump_json(again.to_json()) == dump_json(data)
    figures = again.models[0].verdict("dead_filters", "conv1").figures
    assert isinstance(figures, DeadFiltersFigures) and figures.witnesses[0].channel == GREEN
    assert ModelDocument.from_json(data["models"][0]).dead_cost == again.models[0].dead_cost


def test_terminal_summary_shows_evidence_and_cost_per_layer_and_model(green: Path) -> None:
    model, _ = conv1(green, "{max_count: 1}")
    lines = [line for line, _ in summary_lines([model])]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("dead "))
    header, layer, total, reach = lines[start : start + 4]
    assert header.split() == ["dead", "provable", "revivable", "probe", "parameters", "multiply-adds"]
    assert layer.split()[:4] == ["conv1", "1", "1", "0"] and f"{model.dead_cost.dead_params:,}" in layer
    assert total.split()[:4] == ["model", "1", "1", "0"]
    assert reach.strip() == "bound proof reaches 2 of 2 layers"


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.alts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.alts.append(dict(attrs).get("alt") or "")


def test_html_shows_the_evidence_the_witness_and_the_cost(green: Path) -> None:
    green_config(green.parent, "{max_count: 1}")
    config = parse_config((green.parent / "cnnaudit.yaml").read_text(), str(green.parent / "cnnaudit.yaml"))
    document, pictures = audit_document(green, config, pictures=True)
    (witness,) = pictures.witnesses
    assert (witness.layer, witness.channel) == ("conv1", GREEN)
    assert witness.witness.decode().shape[2] == 3 and witness.activation.decode().max() == 255
    page = build_html([document], {document.path: pictures})
    images = Images()
    images.feed(page)
    assert "dead channels by evidence" in images.alts and "witnesses of revivable channels" in images.alts
    assert "0 (revivable), 1 (provable)" in page and "multiply-adds per image" in page
    assert "The bound proof reaches 2 of 2 layers." in page


def test_init_writes_the_evidence_it_used(pytester: pytest.Pytester) -> None:
    export(GreenNet(), pytester.path / "green.onnx", 64)
    green_config(pytester.path, "{evidence: provable, max_count: 1}")
    result = pytester.runpytest("--cnnaudit-init", "start.yaml", "--cnnaudit-config", "cnnaudit.yaml", "-p", "no:xdist")
    result.assert_outcomes(passed=5)
    text = (pytester.path / "start.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["models"][0]["checks"]["dead_filters"] == {"max_count": 0, "evidence": "provable"}
    assert "evidence of the dead channels found: 1 provable, 1 revivable, 0 probe" in text
    # only the provably dead channel is accepted: the revivable one does not count under this evidence
    assert data["layers"] == [{"match": "conv1", "checks": {"dead_filters": {"max_count": 1}}}]
    assert "# conv1: dead channels in green.onnx [1]" in text
    again = pytester.runpytest("--cnnaudit", "--cnnaudit-config", "start.yaml", "-p", "no:xdist")
    again.assert_outcomes(passed=5)


def test_witness_channels_bounds_the_search_and_the_rest_stay_probe(tmp_path: Path) -> None:
    """high_lr's conv3 channels 11 and 29 both revive (after 24 and 22 steps); searching one, the one
    closest to firing on the probe set gets its witness and the other stays probe, with a note."""
    examples = Path(__file__).resolve().parent.parent / "example_models"
    (tmp_path / "cnnaudit.yaml").write_text(
        "runtime: {isolate: false}\nchecks: {dead_filters: {max_count: 0, witness_channels: 1}}\n"
    )
    model = pytest_cnnaudit.audit(examples / "high_lr.onnx", tmp_path / "cnnaudit.yaml").models[0]
    figures = model.verdict("dead_filters", "conv3").figures
    assert figures.dead_channels == (11, 29) and sorted(figures.evidence) == ["probe", "revivable"]
    assert model.dead_evidence.searched == 1
    assert model.dead_evidence.notes == ("1 probe-dead channel(s) not searched (witness_channels 1)",)
