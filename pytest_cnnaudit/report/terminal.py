"""The terminal summary: per model, a table of its layers and the outcome of their items, from the documents."""

from __future__ import annotations

from ..document import DeadFiltersFigures, ModelDocument

#: Terminal colour of a summary line (pytest's markup name), by the outcome it reports.
OUTCOME_COLOURS = {"failed": "red", "skipped": "yellow"}

#: One line of the summary and its colour (None: the terminal's own).
SummaryLine = tuple[str, str | None]


def summary_lines(documents: list[ModelDocument]) -> list[SummaryLine]:
    """A table per model: layer, channels, sparsity, dead channels, the failed checks; then the dead channels'
    evidence and cost, its colour profile, and the model-level items that did not pass (nothing measured, not
    in the baseline, ...), a failed one in red: a model where nothing could be measured must not read as a pass."""
    lines: list[SummaryLine] = []
    for document in documents:
        lines.append((document.path, None))
        lines.extend((f"  note: {note}", None) for note in document.notes)
        if document.error is not None:
            lines.append((f"  error: {document.error}", "red"))
            continue
        lines.extend(_layer_table(document))
        lines.extend((line, None) for line in dead_channel_lines(document))
        lines.extend((line, None) for line in colour_profile_lines(document))
        for verdict in document.verdicts:
            if verdict.layer is None and verdict.outcome in OUTCOME_COLOURS:
                line = f"  {verdict.check}: {verdict.outcome}: {verdict.message}"
                lines.append((line, OUTCOME_COLOURS[verdict.outcome]))
    return lines


def _layer_table(document: ModelDocument) -> list[SummaryLine]:
    failed: dict[str, list[str]] = {}
    for verdict in document.verdicts:
        if verdict.layer is not None and verdict.outcome == "failed":
            failed.setdefault(verdict.layer, []).append(verdict.check)
    if not document.layers:
        return []
    width = max(len("layer"), *(len(layer.id) for layer in document.layers))
    lines: list[SummaryLine] = [(f"  {'layer':<{width}}  {'channels':>8}  {'sparsity':>8}  {'dead':>5}  failed", None)]
    for layer in document.layers:
        sparsity = f"{layer.sparsity:.3f}" if layer.sparsity is not None else "-"
        dead = str(len(layer.dead_channels)) if layer.dead_channels is not None else "-"
        checks = ", ".join(failed.get(layer.id, []))
        row = f"  {layer.id:<{width}}  {layer.channels:>8}  {sparsity:>8}  {dead:>5}  {checks}".rstrip()
        lines.append((row, "red" if checks else None))
    return lines


#: The kinds of evidence of a dead channel, in the order the tables list them.
EVIDENCE_KINDS = ("provable", "revivable", "probe")


def dead_channel_lines(document: ModelDocument) -> list[str]:
    """Per layer with dead channels, how many have each kind of evidence and what they cost; the model's
    total; how far the bound proof reached. Nothing when no judged layer has a dead channel."""
    rows = [
        (str(verdict.layer), verdict.figures)
        for verdict in document.verdicts
        if verdict.check == "dead_filters" and isinstance(verdict.figures, DeadFiltersFigures)
        if verdict.figures.dead_count
    ]
    if not rows:
        return []
    width = max(len("model"), *(len(layer) for layer, _ in rows))
    header = f"  {'dead':<{width}}  {'provable':>8}  {'revivable':>9}  {'probe':>5}  {'parameters':>18}  multiply-adds"
    lines = [header]
    for layer, f in rows:
        counts = [f.evidence.count(kind) for kind in EVIDENCE_KINDS]
        lines.append(
            _dead_row(layer, width, counts, (f.dead_params, f.dead_param_share), (f.dead_macs, f.dead_mac_share))
        )
    cost = document.dead_cost
    totals = [sum(f.evidence.count(kind) for _, f in rows) for kind in EVIDENCE_KINDS]
    params = (cost.dead_params, cost.param_share) if cost is not None else (None, None)
    macs = (cost.dead_macs, cost.mac_share) if cost is not None else (None, None)
    lines.append(_dead_row("model", width, totals, params, macs))
    evidence = document.dead_evidence
    if evidence is not None and evidence.certified:
        lines.append(f"  bound proof reaches {evidence.layers_reached} of {evidence.layers} layers")
    return lines


def _dead_row(name: str, width: int, counts: list[int], params: tuple, macs: tuple) -> str:
    provable, revivable, probe = counts
    row = f"  {name:<{width}}  {provable:>8}  {revivable:>9}  {probe:>5}  {_spent(*params):>18}  {_spent(*macs)}"
    return row.rstrip()


def _spent(value: int | None, share: float | None) -> str:
    """``586 (4.1%)``, or ``-`` when the cost could not be counted."""
    return f"{value:,} ({share:.1%})" if value is not None and share is not None else "-"


def colour_profile_lines(document: ModelDocument) -> list[str]:
    """The model's colour profile: median CSI, share of CSI-selective channels and isoluminant share per layer."""
    profile = document.color_profile
    if profile is None or not profile.layers:
        return []
    width = max(len("colour"), *(len(entry.id) for entry in profile.layers))
    lines = [f"  {'colour':<{width}}  {'median CSI':>10}  {'CSI-selective':>13}  {'isoluminant':>11}"]
    for entry in profile.layers:
        median = _number(entry.csi_median, ".3f")
        fraction = _number(entry.selective_fraction, ".1%")
        share = _number(entry.isoluminant_share, ".3f")
        lines.append(f"  {entry.id:<{width}}  {median:>10}  {fraction:>13}  {share:>11}")
    return lines


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"
