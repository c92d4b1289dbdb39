"""The HTML audit report (``--cnnaudit-html``): one self-contained page with the pictures people look for.

A pure builder: the items' records, as gathered on the controller (so a serial and an xdist
run give the same page), become an HTML string. Per model: the verdict table (failures
first), then a section per check with its pictures: per-layer sparsity and dead-fraction
charts with their limits drawn in, one probe image's activation maps at the first conv and at
a deep layer (dead channels framed), the first conv's filters as RGB tiles (colour-selective
ones framed), the colour profile across depth, and the learning-rate sweep when there is one.

Figures are drawn with matplotlib's object API (``Figure``, never pyplot, so no global backend
is switched in the user's test process) and inlined as base64 PNG data URIs; the page has no
script and no external asset, so it opens offline. The picture data that the JSON report
does not hold (filters, activation maps) comes from :mod:`pytest_cnnaudit.pictures`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .pictures import decode
from .report import json_report

PASSED, FAILED, SKIPPED = "#4c72b0", "#d62728", "#b0b0b0"
SELECTIVE = "#ff7f0e"
DPI = 100
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


# --------------------------------------------------------------------------- figures


def png_data_uri(figure: Figure) -> str:
    """The figure as an inline PNG (no timestamp or software tag, so the bytes depend on the data only)."""
    return "data:image/png;base64," + png_base64(figure)


def png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _short(layer_id: str, width: int = 24) -> str:
    return layer_id if len(layer_id) <= width else "…" + layer_id[-(width - 1) :]


def _layer_figure(count: int, height: float = 3.2) -> tuple[Figure, Any]:
    """A figure with one x position per layer; taller when the layer ids are written upright."""
    size = (min(13.0, max(6.0, 2.0 + 0.3 * count)), height + (0.9 if count > 6 else 0.0))
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.subplots()


def _layer_axis(axes: Any, layer_ids: list[str], highlight: str | None = None) -> None:
    """Layer ids along x (every k-th one when there are many), the highlighted one in bold."""
    step = max(1, math.ceil(len(layer_ids) / 60))
    positions = list(range(0, len(layer_ids), step))
    axes.set_xticks(positions)
    labels = axes.set_xticklabels(
        [_short(layer_ids[i]) for i in positions], rotation=90 if len(layer_ids) > 6 else 0, fontsize=7
    )
    for label, i in zip(labels, positions):
        if layer_ids[i] == highlight:
            label.set_fontweight("bold")
    axes.set_xlim(-0.6, len(layer_ids) - 0.4)
    axes.set_xlabel("layer (graph order)")


def _outcome_colours(outcomes: list[str], layer_ids: list[str], highlight: str | None) -> list[str]:
    colours = [FAILED if outcome == "failed" else PASSED for outcome in outcomes]
    if highlight is not None:
        colours = [c if layer == highlight else c + "66" for c, layer in zip(colours, layer_ids)]
    return colours


def sparsity_chart(rows: list[dict[str, Any]], highlight: str | None = None) -> Figure:
    """Each layer's zero fraction as a bar, its [min, max] as dashed marks; failed layers in red."""
    layer_ids = [row["layer"] for row in rows]
    figure, axes = _layer_figure(len(rows))
    x = np.arange(len(rows))
    values = [row["figures"]["sparsity"] for row in rows]
    axes.bar(x, values, width=0.7, color=_outcome_colours([r["outcome"] for r in rows], layer_ids, highlight))
    for key in ("min", "max"):
        axes.hlines([row["figures"][key] for row in rows], x - 0.45, x + 0.45, colors="black", linestyles="--")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("zero fraction")
    axes.set_title("activation sparsity per layer", fontsize=10)
    _layer_axis(axes, layer_ids, highlight)
    _outcome_legend(axes, "min / max")
    return figure


def dead_chart(rows: list[dict[str, Any]], highlight: str | None = None) -> Figure:
    """Each layer's dead fraction as a bar (count labelled), the allowed fraction as a dashed mark."""
    layer_ids = [row["layer"] for row in rows]
    figure, axes = _layer_figure(len(rows))
    x = np.arange(len(rows))
    channels = [max(1, row["figures"]["channels"]) for row in rows]
    dead = [row["figures"]["dead_count"] for row in rows]
    fractions = [d / c for d, c in zip(dead, channels)]
    axes.bar(x, fractions, width=0.7, color=_outcome_colours([r["outcome"] for r in rows], layer_ids, highlight))
    allowed = [min(1.0, row["figures"]["allowed"] / c) for row, c in zip(rows, channels)]
    axes.hlines(allowed, x - 0.45, x + 0.45, colors="black", linestyles="--")
    top = max([*fractions, *allowed, 0.05]) * 1.25
    if len(rows) <= 30:
        for i, (d, c) in enumerate(zip(dead, channels)):
            axes.annotate(
                f"{d}/{c}", (i, fractions[i]), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7
            )
    axes.set_ylim(0, min(1.05, top))
    axes.set_ylabel("dead fraction")
    axes.set_title("never-active channels per layer", fontsize=10)
    _layer_axis(axes, layer_ids, highlight)
    _outcome_legend(axes, "allowed")
    return figure


def _outcome_legend(axes: Any, dashed: str) -> None:
    """The per-layer charts' legend, right of the plot: bar colours by outcome and what the dashes mark."""
    handles = [Patch(color=PASSED, label="passed"), Patch(color=FAILED, label="failed"), _dashed(dashed)]
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _dashed(label: str) -> Line2D:
    return Line2D([], [], color="black", linestyle="--", label=label)


def channel_chart(layer: dict[str, Any]) -> Figure:
    """One layer's per-channel maximum activation over the probe set; dead channels marked in red."""
    maxima = np.asarray([np.nan if v is None else v for v in layer["channel_max"]], dtype=float)
    dead = layer.get("dead_channels") or []
    figure = Figure(figsize=(min(13.0, max(6.0, 2.0 + 0.15 * len(maxima))), 3.2), layout="constrained")
    axes = figure.subplots()
    colours = [FAILED if c in set(dead) else PASSED for c in range(len(maxima))]
    axes.bar(np.arange(len(maxima)), maxima, width=0.8, color=colours)
    if dead:
        axes.plot(dead, np.zeros(len(dead)), "x", color=FAILED, markersize=8)
    axes.set_xlabel("channel")
    axes.set_ylabel("max activation")
    axes.set_title(f"{layer['id']}: per-channel max over the probe set; dead channels in red", fontsize=10)
    return figure


def colour_profile_chart(profile: dict[str, Any]) -> Figure:
    """Median CSI and the colour-selective share per layer across depth, with the CSI threshold."""
    entries = profile["layers"]
    layer_ids = [entry["id"] for entry in entries]
    figure, axes = _layer_figure(len(entries))
    x = np.arange(len(entries))
    median = [np.nan if e.get("csi_median") is None else e["csi_median"] for e in entries]
    selective = [np.nan if e.get("selective_fraction") is None else e["selective_fraction"] for e in entries]
    axes.plot(x, median, "o-", color=PASSED, label="median CSI")
    axes.plot(x, selective, "s--", color=SELECTIVE, label="colour-selective share")
    thresholds = [entry.get("csi_threshold", 0.5) for entry in entries]
    axes.hlines(thresholds, x - 0.45, x + 0.45, colors="black", linestyles=":", label="CSI threshold")
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("CSI / share")
    axes.set_title("colour profile across depth (CSI = 1 - gray response / colour response)", fontsize=10)
    _layer_axis(axes, layer_ids)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _mosaic(tiles: np.ndarray, columns: int, gap: int, fill: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(n, h, w[, 3]) tiles in a grid with ``gap`` pixels of ``fill`` between; the tiles' top-left corners."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns)
    shape = (rows * (height + gap) + gap, columns * (width + gap) + gap, *tiles.shape[3:])
    canvas = np.full(shape, fill, dtype=float)
    corners = []
    for i, tile in enumerate(tiles):
        top, left = gap + (i // columns) * (height + gap), gap + (i % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = tile
        corners.append((top, left))
    return canvas, corners


def _upscaled(tiles: np.ndarray, least: int) -> np.ndarray:
    """Tiles repeated pixel-wise so that their longer side is at least ``least`` pixels."""
    factor = max(1, math.ceil(least / max(tiles.shape[1:3])))
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


def _frame(axes: Any, corner: tuple[int, int], size: tuple[int, int], colour: str) -> None:
    top, left = corner
    axes.add_patch(
        Rectangle((left - 1.5, top - 1.5), size[1] + 2, size[0] + 2, fill=False, edgecolor=colour, linewidth=2)
    )


def filter_grid(filters: dict[str, Any], selective: list[bool]) -> Figure:
    """The first conv's filters as RGB tiles (each scaled to its own [min, max]); colour-selective ones framed."""
    tiles = _upscaled(decode(filters["tiles"]).astype(float) / 255.0, 15)
    columns = min(16, max(1, math.ceil(math.sqrt(len(tiles) * 2))))
    canvas, corners = _mosaic(tiles, columns, gap=4, fill=1.0)
    figure = Figure(figsize=(min(9.0, 0.55 * columns + 0.4), 0.55 * math.ceil(len(tiles) / columns) + 0.5))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.88))
    axes.imshow(canvas, interpolation="nearest")
    for corner, marked in zip(corners, selective):
        if marked:
            _frame(axes, corner, tiles.shape[1:3], SELECTIVE)
    axes.set_axis_off()
    figure.suptitle(f"{filters['layer']}: {len(tiles)} filters", fontsize=9)
    return figure


def maps_grid(maps: dict[str, Any]) -> Figure:
    """One probe image's activation maps at a layer (each map scaled to its own max); dead channels framed red."""
    tiles = _upscaled(decode(maps["maps"]).astype(float) / 255.0, 16)
    columns = min(16, len(tiles))
    canvas, corners = _mosaic(tiles, columns, gap=3, fill=np.nan)
    rows = math.ceil(len(tiles) / columns)
    figure = Figure(figsize=(0.5 * columns + 0.4, 0.5 * rows + 0.5))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.86))
    colour_map = _colour_map()
    axes.imshow(canvas, cmap=colour_map, vmin=0.0, vmax=1.0, interpolation="nearest")
    for channel, corner in zip(maps["channels"], corners):
        if channel in maps["dead"]:
            _frame(axes, corner, tiles.shape[1:3], FAILED)
    axes.set_axis_off()
    figure.suptitle(f"{maps['layer']} ({maps['role']})", fontsize=9)
    return figure


def _colour_map() -> Any:
    from matplotlib import colormaps

    return colormaps["magma"].with_extremes(bad="white")


def probe_image(pictures: dict[str, Any]) -> Figure:
    image = decode(pictures["probe_image"])
    figure = Figure(figsize=(1.6, 1.75))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.84))
    axes.imshow(image, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(f"probe image {pictures['probe_index']}", fontsize=9)
    return figure


def sweep_chart(sweep: dict[str, Any], lr: float | None) -> Figure:
    """Newly dead filters and the loss after the probe's steps, per learning rate of the sweep."""
    curve = sweep["curve"]
    rates = [point["lr"] for point in curve]
    figure = Figure(figsize=(8.5, 3.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(rates, [point["new_dead"] for point in curve], "-", color=PASSED, zorder=1)
    axes.scatter(
        rates,
        [point["new_dead"] for point in curve],
        c=[PASSED if point["safe"] else FAILED for point in curve],
        zorder=2,
    )
    axes.set_xscale("log")
    axes.set_ylim(0, max(1, *(point["new_dead"] for point in curve)) * 1.15)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("learning rate")
    axes.set_ylabel("newly dead filters", color=PASSED)
    loss_axes = axes.twinx()
    losses = [np.nan if point["loss_end"] is None else point["loss_end"] for point in curve]
    loss_axes.plot(rates, losses, "s--", color="#55a868", label="loss after the probe")
    loss_axes.set_ylabel("loss", color="#55a868")
    diverged = [point["lr"] for point in curve if point["loss_end"] is None]
    for rate in diverged:
        axes.axvline(rate, color=FAILED, linestyle=":", linewidth=1)
    handles = [
        Line2D([], [], marker="o", color=PASSED, label="newly dead (red: unsafe)"),
        Line2D([], [], marker="s", linestyle="--", color="#55a868", label="loss after the probe"),
    ]
    if sweep.get("max_safe_lr") is not None:
        axes.axvline(sweep["max_safe_lr"], color="black", linestyle="--")
        handles.append(_dashed(f"max safe lr {sweep['max_safe_lr']:g}"))
    if lr is not None:
        axes.axvline(lr, color="grey", linestyle="-.")
        handles.append(Line2D([], [], color="grey", linestyle="-.", label=f"configured lr {lr:g}"))
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.15, 1.0))  # right of the loss axis
    axes.set_title("learning-rate sweep", fontsize=10)
    return figure


# --------------------------------------------------------------------------- what each picture shows


def check_rows(document: dict[str, Any], check: str) -> list[dict[str, Any]]:
    """The model's verdicts of ``check`` that measured something (they carry figures), in layer order."""
    return [c for c in document["checks"] if c["check"] == check and c["figures"] and c["layer"] is not None]


def selective_filters(document: dict[str, Any], count: int) -> list[bool]:
    """Per first-conv filter: colour-selective (chromatic energy fraction > the layer's CSI threshold)."""
    profile = document.get("color_profile") or {}
    first = profile.get("first_layer")
    if not first:
        return [False] * count
    threshold = next((e["csi_threshold"] for e in profile["layers"] if e["id"] == first["id"]), 0.5)
    return [fraction > threshold for fraction in first["chromatic_fraction"]][:count]


def _lr(document: dict[str, Any]) -> float | None:
    model = next((c for c in document["checks"] if c["check"] == "lr_sanity" and c["layer"] is None), None)
    return model["figures"].get("lr") if model else None


def item_picture(
    check: str, layer: str | None, document: dict[str, Any], pictures: dict[str, Any] | None
) -> str | None:
    """The picture of one failed item (base64 PNG, for pytest-html), or None when it has none."""
    figure = None
    if check == "sparsity" and check_rows(document, "sparsity"):
        figure = sparsity_chart(check_rows(document, "sparsity"), highlight=layer)
    elif check in ("dead_filters", "baseline") and layer is not None:
        found = next((entry for entry in document["layers"] if entry["id"] == layer), None)
        if found is not None and found.get("channel_max") is not None:
            figure = channel_chart(found)
    elif check == "lr_sanity" and document.get("lr_sweep"):
        figure = sweep_chart(document["lr_sweep"], _lr(document))
    elif check == "color":
        filters = (pictures or {}).get("filters")
        if filters is not None and filters["layer"] == layer:
            figure = filter_grid(filters, selective_filters(document, filters["count"]))
        elif document.get("color_profile"):
            figure = colour_profile_chart(document["color_profile"])
    return png_base64(figure) if figure is not None else None


# --------------------------------------------------------------------------- HTML


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f4f5f7; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { margin: 8px 0 4px; } h2 { margin: 0 0 4px; } h3 { margin: 18px 0 6px; border-bottom: 1px solid #ddd; }
.meta, .note { color: #666; font-size: 12px; }
section.model { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 16px 20px; margin: 18px 0; }
section.model.failed { border-left: 6px solid #d62728; } section.model.passed { border-left: 6px solid #4c72b0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
td.item { white-space: nowrap; font-family: ui-monospace, monospace; font-size: 12px; }
tr.failed td { background: #fdecea; } tr.skipped td, tr.not-run td { color: #888; }
.badge { display: inline-block; min-width: 52px; text-align: center; border-radius: 3px; padding: 0 6px;
         font-size: 11px; font-weight: 600; color: #fff; background: #4c72b0; }
.badge.failed { background: #d62728; } .badge.skipped, .badge.not-run { background: #999; }
figure { margin: 6px 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; height: auto; } figcaption { font-size: 12px; color: #555; max-width: 760px; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
ul.toc { columns: 2; padding-left: 18px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure(figure: Figure, caption: str, alt: str) -> str:
    """An inline PNG with its caption, the caption wrapped to the picture's width."""
    width, height = (round(inches * DPI) for inches in figure.get_size_inches())
    return (
        f'<figure style="max-width: {width}px"><img src="{png_data_uri(figure)}" width="{width}" height="{height}" '
        f'alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'
    )


def _item_name(check: str, layer: str | None) -> str:
    return f"{check}[{layer}]" if layer is not None else check


def verdict_rows(
    model: str, document: dict[str, Any] | None, records: list[dict[str, Any]], outcomes: dict[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Every verdict of the model (the audit's, then the items' own such as baseline or load, in layer
    order whatever order their reports arrived in), failures first."""
    rows = [dict(check) for check in document["checks"]] if document is not None else []
    known = {(row["check"], row["layer"]) for row in rows}
    depth = {layer["id"]: i for i, layer in enumerate(document["layers"])} if document is not None else {}
    extra = {}
    for record in records:
        key = (record["check"], record["layer"])
        if key not in known:
            item = _item_name(*key)
            extra[key] = {**record, "outcome": outcomes.get((model, item), record["outcome"])}
    rows += sorted(extra.values(), key=lambda row: (row["check"], depth.get(row["layer"], -1), str(row["layer"])))
    rank = {outcome: i for i, outcome in enumerate(OUTCOME_ORDER)}
    return sorted(rows, key=lambda row: rank.get(row["outcome"], 0))


def _table(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr class="{_e(row["outcome"].replace(" ", "-"))}"><td><span class="badge {_e(row["outcome"].replace(" ", "-"))}">'
        f'{_e(row["outcome"])}</span></td><td class="item">{_e(_item_name(row["check"], row["layer"]))}</td>'
        f"<td>{_e(row['message'])}</td></tr>"
        for row in rows
    )
    return f"<table><thead><tr><th>outcome</th><th>item</th><th>finding</th></tr></thead><tbody>{body}</tbody></table>"


def _counts(rows: list[dict[str, Any]]) -> str:
    counted = [(outcome, sum(row["outcome"] == outcome for row in rows)) for outcome in OUTCOME_ORDER]
    return ", ".join(f"{n} {outcome}" for outcome, n in counted if n)


def _failures(rows: list[dict[str, Any]], check: str) -> str:
    failed = [row for row in rows if row["check"] == check and row["outcome"] == "failed"]
    if not failed:
        return ""
    items = "".join(f"<li><b>{_e(_item_name(r['check'], r['layer']))}</b>: {_e(r['message'])}</li>" for r in failed)
    return f"<ul>{items}</ul>"


def _sparsity_section(document: dict[str, Any]) -> str:
    rows = check_rows(document, "sparsity")
    if not rows:
        return '<p class="note">No layer was measurable for sparsity.</p>'
    return _figure(
        sparsity_chart(rows),
        "Zero fraction of each layer's activation over all probe images; dashed: the layer's [min, max].",
        "sparsity per layer",
    )


def _dead_section(document: dict[str, Any], pictures: dict[str, Any] | None) -> str:
    rows = check_rows(document, "dead_filters")
    parts = []
    if rows:
        parts.append(
            _figure(
                dead_chart(rows),
                "Share of each layer's channels that are zero for every probe image and position "
                "(count above the bar); dashed: the share allowed.",
                "dead channels per layer",
            )
        )
    if pictures and pictures.get("maps"):
        maps = [_figure(probe_image(pictures), "The probe image.", "probe image")]
        for entry in pictures["maps"]:
            shown = len(entry["channels"])
            of = (
                f"{shown} of {entry['total_channels']} channels"
                if shown < entry["total_channels"]
                else f"{shown} channels"
            )
            dead = ", ".join(map(str, entry["dead"])) or "none"
            caption = (
                f"{_e(entry['layer'])}, {_e(entry['role'])}: {of}, {entry['size'][0]}x{entry['size'][1]} maps, "
                f"each scaled to its own maximum. Dead channels (red frame): {_e(dead)}."
            )
            maps.append(_figure(maps_grid(entry), caption, f"activation maps of {entry['layer']}"))
        parts.append(f'<div class="row">{"".join(maps)}</div>')
    return "".join(parts)


def _colour_section(document: dict[str, Any], pictures: dict[str, Any] | None) -> str:
    parts = []
    filters = (pictures or {}).get("filters")
    if filters is not None:
        selective = selective_filters(document, filters["count"])
        caption = (
            f"{_e(filters['layer'])}'s filters on RGB (input normalisation folded in), each scaled to its own "
            f"[min, max]. Orange frame: colour-selective (more than the CSI threshold of its weight energy on the "
            f"opponent colour axes): {sum(selective)} of {len(selective)}."
        )
        parts.append(_figure(filter_grid(filters, selective), caption, "first conv filters"))
    profile = document.get("color_profile")
    if profile and profile.get("layers"):
        parts.append(
            _figure(
                colour_profile_chart(profile),
                "Median colour selectivity index of each layer's channels over their top probe images, and the "
                "share of channels above the threshold.",
                "colour profile",
            )
        )
    return f'<div class="row">{"".join(parts)}</div>' if parts else ""


def _lr_section(document: dict[str, Any]) -> str:
    sweep = document.get("lr_sweep")
    if not sweep or not sweep.get("curve"):
        return '<p class="note">No sweep ran (checks.lr_sanity.sweep: true draws the curve).</p>'
    return _figure(
        sweep_chart(sweep, _lr(document)),
        "Filters newly dead after the fine-tuning probe at each rate of the sweep (red: unsafe), and its loss.",
        "learning-rate sweep",
    )


def _check_section(
    model_id: str, check: str, rows: list[dict[str, Any]], document: dict[str, Any] | None, pictures: Any
) -> str:
    body = ""
    if document is not None:
        if check == "sparsity":
            body = _sparsity_section(document)
        elif check == "dead_filters":
            body = _dead_section(document, pictures)
        elif check == "color":
            body = _colour_section(document, pictures)
        elif check == "lr_sanity":
            body = _lr_section(document)
    ran = [row for row in rows if row["check"] == check]
    title = CHECK_TITLES.get(check, check)
    return (
        f'<section class="check" id="{model_id}-{_e(check)}" data-check="{_e(check)}">'
        f'<h3>{_e(title)} <span class="meta">{_e(_counts(ran))}</span></h3>{_failures(rows, check)}{body}</section>'
    )


def _state(failed: bool) -> str:
    return "failed" if failed else "passed"


def model_section(
    model: str, model_id: str, document: dict[str, Any] | None, rows: list[dict[str, Any]], pictures: Any
) -> str:
    """One model: its verdict table (``rows``, from :func:`verdict_rows`), then a section per check."""
    state = _state(any(row["outcome"] == "failed" for row in rows))
    meta = [_e(_counts(rows))]
    if document is not None:
        spec = document.get("input") or {}
        probe = document.get("probe") or {}
        meta[:0] = [
            _e(document.get("format")),
            f"input {_e(spec.get('size'))} {_e(spec.get('layout'))} {_e(spec.get('channels'))}",
            f"probe: {_e(probe.get('description'))}, seed {_e(probe.get('seed'))}",
        ]
    checks = list(dict.fromkeys(row["check"] for row in sorted(rows, key=_check_rank)))
    sections = "".join(_check_section(model_id, check, rows, document, pictures) for check in checks)
    return (
        f'<section class="model {state}" id="{model_id}" data-model="{_e(model)}">'
        f'<h2>{_e(model)} <span class="badge {state}">{state}</span></h2>'
        f'<div class="meta">{" · ".join(meta)}</div><h3>Verdicts</h3>{_table(rows)}{sections}</section>'
    )


def _check_rank(row: dict[str, Any]) -> int:
    order = list(CHECK_TITLES)
    return order.index(row["check"]) if row["check"] in order else len(order)


def build_html(records: list[dict[str, Any]], outcomes: dict[tuple[str, str], str], version: str = "") -> str:
    """The whole page from the items' records; ``outcomes`` maps (model, item name) to pytest's outcome.

    Models with a failure come first, then the others, each group by name.
    """
    documents = {m["path"]: m for m in json_report(records, outcomes)["models"]}
    pictures = {r["model"]: r["pictures"] for r in records if "pictures" in r}
    names = sorted({r["model"] for r in records})
    rows = {
        name: verdict_rows(name, documents.get(name), [r for r in records if r["model"] == name], outcomes)
        for name in names
    }
    failed = {name for name in names if any(row["outcome"] == "failed" for row in rows[name])}
    models = sorted(names, key=lambda name: name not in failed)
    ids = {model: f"model-{i}-{re.sub(r'[^A-Za-z0-9_-]+', '-', model)}" for i, model in enumerate(models)}
    sections = "".join(
        model_section(model, ids[model], documents.get(model), rows[model], pictures.get(model)) for model in models
    )
    toc = "".join(
        f'<li><a href="#{ids[m]}">{_e(m)}</a> <span class="badge {_state(m in failed)}">{_state(m in failed)}</span></li>'
        for m in models
    )
    title = "cnnaudit report"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><main><h1>{title}</h1>"
        f'<p class="meta">pytest-cnnaudit {_e(version)} · {len(models)} model(s), {len(failed)} with failures</p>'
        f'<ul class="toc">{toc}</ul>{sections}</main></body></html>\n'
    )
