"""The HTML audit report (``--cnnaudit-html``): one self-contained page with the pictures people look for.

A pure builder from the audit documents (with pytest's outcomes) and their picture data, as
gathered on the controller, so a serial and an xdist run give the same page. Per model: the
verdict table (failures first), then a section per check with its pictures (:mod:`.charts`):
per-layer sparsity and dead-fraction charts with their limits drawn in, one probe image's
activation maps at the first conv and at a deep layer (dead channels framed), the dead channels by
evidence with their cost and the revivable ones' witnesses, the first conv's
filters as RGB tiles (colour-tuned ones framed), the colour profile across depth, and the
learning-rate sweep when there is one. Pictures are inlined as PNG data URIs; the page has no
script and no external asset, so it opens offline.
"""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

from matplotlib.figure import Figure

from ..document import DeadFiltersFigures, LrModelFigures, ModelDocument, Verdict
from ..document.pictures import Pictures
from .charts import (
    DPI,
    channel_chart,
    colour_profile_chart,
    dead_chart,
    evidence_chart,
    filter_grid,
    maps_grid,
    png_base64,
    png_data_uri,
    probe_image,
    sparsity_chart,
    sweep_chart,
    witness_grid,
)

#: Outcomes in the order the verdict table lists them.
OUTCOME_ORDER = ("failed", "passed", "skipped", "not run")
CHECK_TITLES = {
    "load": "Load",
    "sparsity": "Sparsity",
    "dead_filters": "Dead filters",
    "color": "Colour",
    "lr_sanity": "Learning rate",
    "baseline": "Baseline",
}


def check_rows(document: ModelDocument, check: str) -> list[Verdict]:
    """The model's verdicts of ``check`` that measured a layer (they carry figures), in layer order."""
    return [v for v in document.verdicts if v.check == check and v.figures is not None and v.layer is not None]


def selective_filters(document: ModelDocument, count: int) -> list[bool]:
    """Per first-conv filter: colour-tuned (chromatic energy fraction of its weights > the CSI threshold)."""
    profile = document.color_profile
    first = profile.first_layer if profile is not None else None
    if profile is None or first is None:
        return [False] * count
    threshold = next((e.csi_threshold for e in profile.layers if e.id == first.id), 0.5)
    return [fraction > threshold for fraction in first.chromatic_fraction][:count]


def _lr(document: ModelDocument) -> float | None:
    verdict = document.verdict("lr_sanity", None)
    return verdict.figures.lr if verdict is not None and isinstance(verdict.figures, LrModelFigures) else None


def item_picture(check: str, layer: str | None, document: ModelDocument, pictures: Pictures | None) -> str | None:
    """The picture of one failed item (base64 PNG, for pytest-html), or None when it has none."""
    figure = None
    if check == "sparsity" and check_rows(document, "sparsity"):
        figure = sparsity_chart(check_rows(document, "sparsity"), highlight=layer)
    elif check in ("dead_filters", "baseline") and layer is not None:
        found = document.layer(layer)
        if found is not None and found.channel_max is not None:
            figure = channel_chart(found)
    elif check == "lr_sanity" and document.lr_sweep is not None:
        figure = sweep_chart(document.lr_sweep, _lr(document))
    elif check == "color":
        filters = pictures.filters if pictures is not None else None
        if filters is not None and filters.layer == layer:
            figure = filter_grid(filters, selective_filters(document, filters.count))
        elif document.color_profile is not None:
            figure = colour_profile_chart(document.color_profile)
    return png_base64(figure) if figure is not None else None


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure(figure: Figure, caption: str, alt: str) -> str:
    """An inline PNG with its caption, the caption wrapped to the picture's width."""
    width, height = (round(inches * DPI) for inches in figure.get_size_inches())
    return (
        f'<figure style="max-width: {width}px"><img src="{png_data_uri(figure)}" width="{width}" height="{height}" '
        f'alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'
    )


def _ordered(document: ModelDocument) -> list[Verdict]:
    """The model's verdicts, failures first (item order within each outcome)."""
    rank = {outcome: i for i, outcome in enumerate(OUTCOME_ORDER)}
    return sorted(document.verdicts, key=lambda verdict: rank.get(verdict.outcome, 0))


def _outcome_class(outcome: str) -> str:
    return _e(outcome.replace(" ", "-"))


def _table(rows: list[Verdict]) -> str:
    body = "".join(
        f'<tr class="{_outcome_class(row.outcome)}"><td><span class="badge {_outcome_class(row.outcome)}">'
        f'{_e(row.outcome)}</span></td><td class="item">{_e(row.item_id)}</td><td>{_e(row.message)}</td></tr>'
        for row in rows
    )
    return f"<table><thead><tr><th>outcome</th><th>item</th><th>finding</th></tr></thead><tbody>{body}</tbody></table>"


def _counts(rows: list[Verdict]) -> str:
    counted = [(outcome, sum(row.outcome == outcome for row in rows)) for outcome in OUTCOME_ORDER]
    return ", ".join(f"{n} {outcome}" for outcome, n in counted if n)


def _failures(rows: list[Verdict], check: str) -> str:
    failed = [row for row in rows if row.check == check and row.outcome == "failed"]
    if not failed:
        return ""
    return "<ul>" + "".join(f"<li><b>{_e(r.item_id)}</b>: {_e(r.message)}</li>" for r in failed) + "</ul>"


def _sparsity_section(document: ModelDocument) -> str:
    rows = check_rows(document, "sparsity")
    if not rows:
        return '<p class="note">No layer was measurable for sparsity.</p>'
    return _figure(
        sparsity_chart(rows),
        "Fraction of each layer's activation values that are inactive (<= 0) over all probe images; "
        "dashed: the layer's [min, max].",
        "sparsity per layer",
    )


def _maps_figures(pictures: Pictures) -> str:
    maps = [_figure(probe_image(pictures), "The probe image.", "probe image")] if pictures.probe_image else []
    for entry in pictures.maps:
        shown = len(entry.channels)
        of = f"{shown} of {entry.total_channels} channels" if shown < entry.total_channels else f"{shown} channels"
        dead = ", ".join(map(str, entry.dead)) or "none"
        size = "x".join(map(str, entry.size))
        caption = (
            f"{_e(entry.layer)}, {_e(entry.role)}: {of}, {size} maps, each scaled to its own maximum. "
            f"Dead channels (red frame): {_e(dead)}."
        )
        maps.append(_figure(maps_grid(entry), caption, f"activation maps of {entry.layer}"))
    return f'<div class="row">{"".join(maps)}</div>'


EVIDENCE_CAPTION = (
    "Dead channels by evidence: <b>provable</b>, no input in the box (pixels in [0, 1]) can activate it "
    "(interval bounds of its pre-activation never exceed 0); <b>revivable</b>, dead on the probe set, but a "
    "witness image found by gradient ascent activates it; <b>probe</b>, dead on the probe set and no witness "
    "found. A triangle marks a layer the bound proof does not reach."
)


def _dead_section(document: ModelDocument, pictures: Pictures | None) -> str:
    rows = check_rows(document, "dead_filters")
    parts = []
    if rows:
        caption = (
            "Share of each layer's channels never active (> 0) for any probe image and position "
            "(count above the bar); dashed: the share allowed."
        )
        parts.append(_figure(dead_chart(rows), caption, "dead channels per layer"))
    if any(isinstance(row.figures, DeadFiltersFigures) and row.figures.dead_count for row in rows):
        parts.append(_figure(evidence_chart(rows), EVIDENCE_CAPTION, "dead channels by evidence"))
        parts.append(_cost_table(document, rows))
    parts.append(_proof_note(document))
    if pictures is not None and pictures.witnesses:
        caption = (
            "Revivable channels: the probe image the search started from, the witness it found (pixels kept in "
            "[0, 1]), where they differ (white: the largest change), and the channel's activation on the witness, "
            "scaled to its own maximum; above it, the channel's highest pre-activation. The audited runtime "
            "confirms each witness."
        )
        parts.append(_figure(witness_grid(pictures.witnesses), caption, "witnesses of revivable channels"))
    if pictures is not None and pictures.maps:
        parts.append(_maps_figures(pictures))
    return "".join(parts)


def _spent(value: int | None, share: float | None) -> str:
    return f"{value:,} ({share:.2%})" if value is not None and share is not None else "-"


def _cost_table(document: ModelDocument, rows: list[Verdict]) -> str:
    """Per layer with dead channels: each channel with its evidence, and what they cost; the model's total."""
    body = []
    for row in rows:
        figures = row.figures
        if not isinstance(figures, DeadFiltersFigures) or not figures.dead_count:
            continue
        channels = ", ".join(f"{c} ({kind})" for c, kind in zip(figures.dead_channels, figures.evidence))
        body.append(
            f'<tr><td class="item">{_e(row.layer)}</td><td>{_e(channels)}</td>'
            f"<td>{_spent(figures.dead_params, figures.dead_param_share)}</td>"
            f"<td>{_spent(figures.dead_macs, figures.dead_mac_share)}</td></tr>"
        )
    cost = document.dead_cost
    if cost is not None:
        body.append(
            f"<tr><td><b>model</b></td><td>of {cost.model_params:,} parameters, {cost.model_macs:,} multiply-adds</td>"
            f"<td><b>{_spent(cost.dead_params, cost.param_share)}</b></td>"
            f"<td><b>{_spent(cost.dead_macs, cost.mac_share)}</b></td></tr>"
        )
    head = "<tr><th>layer</th><th>dead channels (evidence)</th><th>parameters</th><th>multiply-adds per image</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _proof_note(document: ModelDocument) -> str:
    evidence = document.dead_evidence
    if evidence is None:
        return ""
    said = []
    if evidence.certified:
        stopped = f"; it stops at {', '.join(evidence.stopped[:3])}" if evidence.stopped else ""
        said.append(f"The bound proof reaches {evidence.layers_reached} of {evidence.layers} layers{stopped}.")
    if evidence.torch_form is not None:
        said.append(
            f"The witness search ran on {evidence.torch_form}: {evidence.searched} channel(s), up to "
            f"{evidence.witness_steps} steps each."
        )
    said.extend(f"{note}." for note in evidence.notes)
    return f'<p class="note">{_e(" ".join(said))}</p>' if said else ""


def _colour_section(document: ModelDocument, pictures: Pictures | None) -> str:
    parts = []
    filters = pictures.filters if pictures is not None else None
    if filters is not None:
        selective = selective_filters(document, filters.count)
        caption = (
            f"{_e(filters.layer)}'s filters on RGB (input normalisation folded in), each scaled to its own "
            f"[min, max]. Orange frame: colour-tuned (more than the threshold of its weight energy on the "
            f"opponent colour axes): {sum(selective)} of {len(selective)}."
        )
        parts.append(_figure(filter_grid(filters, selective), caption, "first conv filters"))
    profile = document.color_profile
    if profile is not None and profile.layers:
        caption = (
            "Median colour selectivity index (CSI) of each layer's channels over their top probe images, and the "
            "share of CSI-selective channels (CSI above the threshold): measured from activations, unlike the "
            "colour-tuned filters above, which are read from the weights."
        )
        parts.append(_figure(colour_profile_chart(profile), caption, "colour profile"))
    return f'<div class="row">{"".join(parts)}</div>' if parts else ""


def _lr_section(document: ModelDocument) -> str:
    sweep = document.lr_sweep
    if sweep is None or not sweep.curve:
        return '<p class="note">No sweep ran (checks.lr_sanity.sweep: true draws the curve).</p>'
    return _figure(
        sweep_chart(sweep, _lr(document)),
        "Filters newly dead after the fine-tuning probe at each rate of the sweep (red: unsafe), and its loss.",
        "learning-rate sweep",
    )


def _check_section(model_id: str, check: str, document: ModelDocument, pictures: Pictures | None) -> str:
    body = ""
    if document.error is None:
        if check == "sparsity":
            body = _sparsity_section(document)
        elif check == "dead_filters":
            body = _dead_section(document, pictures)
        elif check == "color":
            body = _colour_section(document, pictures)
        elif check == "lr_sanity":
            body = _lr_section(document)
    ran = [row for row in document.verdicts if row.check == check]
    title = CHECK_TITLES.get(check, check)
    return (
        f'<section class="check" id="{model_id}-{_e(check)}" data-check="{_e(check)}">'
        f'<h3>{_e(title)} <span class="meta">{_e(_counts(ran))}</span></h3>'
        f"{_failures(document.verdicts, check)}{body}</section>"
    )


#: A model's badge: failed, not measured (no layer could be judged: never a pass), passed, or skipped
#: (every item skipped or not run).
STATES = ("failed", "not measured", "passed", "skipped")
#: The per-layer checks that give the model an item of its own only when none of its layers can be judged.
LAYER_CHECKS = ("sparsity", "dead_filters")


def _state(document: ModelDocument) -> str:
    if document.error is not None or any(v.outcome == "failed" for v in document.verdicts):
        return "failed"
    if any(v.layer is None and v.check in LAYER_CHECKS for v in document.verdicts):
        return "not measured"  # allowed by allow_unmeasured, so skipped: still not a pass
    return "passed" if any(v.outcome == "passed" for v in document.verdicts) else "skipped"


def model_section(model_id: str, document: ModelDocument, pictures: Pictures | None) -> str:
    """One model: its verdict table (failures first), then a section per check."""
    state = _state(document)
    badge = _outcome_class(state)
    meta = [_e(_counts(list(document.verdicts)))]
    if document.input is not None and document.probe is not None:
        spec, probe = document.input, document.probe
        meta[:0] = [
            _e(document.format),
            f"input {_e(list(spec.size or ()))} {_e(spec.layout)} {_e(spec.channels)}",
            f"probe: {_e(probe.description)}, seed {_e(probe.seed)}",
        ]
    meta.extend(f"note: {_e(note)}" for note in document.notes)
    if document.error is not None:
        meta.append(f"error: {_e(document.error)}")
    checks = list(dict.fromkeys(row.check for row in sorted(document.verdicts, key=_check_rank)))
    sections = "".join(_check_section(model_id, check, document, pictures) for check in checks)
    return (
        f'<section class="model {badge}" id="{model_id}" data-model="{_e(document.path)}">'
        f'<h2>{_e(document.path)} <span class="badge {badge}">{_e(state)}</span></h2>'
        f'<div class="meta">{" · ".join(meta)}</div><h3>Verdicts</h3>{_table(_ordered(document))}{sections}</section>'
    )


def _check_rank(row: Verdict) -> int:
    order = list(CHECK_TITLES)
    return order.index(row.check) if row.check in order else len(order)


def build_html(documents: list[ModelDocument], pictures: dict[str, Pictures], version: str = "") -> str:
    """The whole page; models with a failure (or an error) come first, then those where nothing was measured,
    then the others, each group by name."""
    models = sorted(documents, key=lambda document: (STATES.index(_state(document)), document.path))
    ids = {doc.path: f"model-{i}-{re.sub(r'[^A-Za-z0-9_-]+', '-', doc.path)}" for i, doc in enumerate(models)}
    sections = "".join(model_section(ids[doc.path], doc, pictures.get(doc.path)) for doc in models)
    toc = "".join(
        f'<li><a href="#{ids[doc.path]}">{_e(doc.path)}</a> '
        f'<span class="badge {_outcome_class(_state(doc))}">{_e(_state(doc))}</span></li>'
        for doc in models
    )
    failed = sum(_state(doc) == "failed" for doc in models)
    unmeasured = sum(_state(doc) == "not measured" for doc in models)
    nothing = f", {unmeasured} where nothing was measured" if unmeasured else ""
    style = resources.files("pytest_cnnaudit.report").joinpath("report.css").read_text(encoding="utf-8")
    title = "cnnaudit report"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body><main><h1>{title}</h1>"
        f'<p class="meta">pytest-cnnaudit {_e(version)} · {len(models)} model(s), {failed} with failures{nothing}</p>'
        f'<ul class="toc">{toc}</ul>{sections}</main></body></html>\n'
    )
