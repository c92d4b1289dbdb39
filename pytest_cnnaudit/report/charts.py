"""The HTML report's figures, drawn from the typed audit document and picture data.

Figures are drawn with matplotlib's object API (``Figure``, never pyplot, so no global backend
is switched in the user's test process) and encoded as PNG without timestamps, so the bytes
depend on the data only.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ..document import ColorProfile, DeadFiltersFigures, LayerDocument, LrSweep, SparsityFigures, Verdict
from ..document.pictures import FilterTiles, LayerMaps, Pictures, WitnessPicture

PASSED, FAILED, SKIPPED = "#4c72b0", "#d62728", "#b0b0b0"
SELECTIVE = "#ff7f0e"
#: A dead channel's colour by its evidence.
EVIDENCE_COLOURS = {"provable": "#3b3b3b", "revivable": "#2ca02c", "probe": "#b0b0b0"}
DPI = 100
#: Pixels of a map mosaic per inch of figure: tiles are drawn at 1.6 screen pixels per map pixel.
PIXELS_PER_INCH = 60


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


def _outcome_colours(rows: list[Verdict], highlight: str | None) -> list[str]:
    colours = [FAILED if row.outcome == "failed" else PASSED for row in rows]
    if highlight is not None:
        colours = [c if row.layer == highlight else c + "66" for c, row in zip(colours, rows)]
    return colours


def sparsity_chart(rows: list[Verdict], highlight: str | None = None) -> Figure:
    """Each layer's sparsity as a bar, its [min, max] as dashed marks; failed layers in red."""
    layer_ids = [str(row.layer) for row in rows]
    figures = [row.figures for row in rows if isinstance(row.figures, SparsityFigures)]
    figure, axes = _layer_figure(len(rows))
    x = np.arange(len(rows))
    axes.bar(x, [f.sparsity for f in figures], width=0.7, color=_outcome_colours(rows, highlight))
    for bound in ([f.min for f in figures], [f.max for f in figures]):
        axes.hlines(bound, x - 0.45, x + 0.45, colors="black", linestyles="--")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("inactive fraction (<= 0)")
    axes.set_title("activation sparsity per layer", fontsize=10)
    _layer_axis(axes, layer_ids, highlight)
    _outcome_legend(axes, "min / max")
    return figure


def dead_chart(rows: list[Verdict], highlight: str | None = None) -> Figure:
    """Each layer's dead fraction as a bar (count labelled), the allowed fraction as a dashed mark."""
    layer_ids = [str(row.layer) for row in rows]
    figures = [row.figures for row in rows if isinstance(row.figures, DeadFiltersFigures)]
    figure, axes = _layer_figure(len(rows))
    x = np.arange(len(rows))
    channels = [max(1, f.channels) for f in figures]
    dead = [f.dead_count for f in figures]
    fractions = [d / c for d, c in zip(dead, channels)]
    axes.bar(x, fractions, width=0.7, color=_outcome_colours(rows, highlight))
    allowed = [min(1.0, f.allowed / c) for f, c in zip(figures, channels)]
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


def evidence_chart(rows: list[Verdict]) -> Figure:
    """Each layer's dead channels stacked by their evidence (provable, revivable, probe), as a share of the
    layer; the proof's reach marked under the layers it does not reach."""
    layer_ids = [str(row.layer) for row in rows]
    figures = [row.figures for row in rows if isinstance(row.figures, DeadFiltersFigures)]
    figure, axes = _layer_figure(len(rows))
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for kind, colour in EVIDENCE_COLOURS.items():
        shares = np.array([f.evidence.count(kind) / max(1, f.channels) for f in figures])
        axes.bar(x, shares, width=0.7, bottom=bottom, color=colour, label=kind)
        bottom += shares
    unreached = [i for i, f in enumerate(figures) if f.upper_bound_reached is False]
    if unreached:
        axes.plot(unreached, np.zeros(len(unreached)), "v", color="black", markersize=5, label="proof does not reach")
    axes.set_ylim(0, min(1.05, max([*bottom, 0.05]) * 1.25))
    axes.set_ylabel("dead fraction")
    axes.set_title("dead channels by evidence", fontsize=10)
    _layer_axis(axes, layer_ids)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def witness_grid(witnesses: tuple[WitnessPicture, ...]) -> Figure:
    """Per revivable channel: the probe image the search started from, the witness it found, where the two
    differ (the largest change white), and the channel's activation on the witness (scaled to its maximum)."""
    figure = Figure(figsize=(7.2, 1.9 * len(witnesses) + 0.2))
    grid = figure.subplots(len(witnesses), 4, squeeze=False)
    for row, witness in zip(grid, witnesses):
        start, found = witness.start.decode(), witness.witness.decode()
        change = np.abs(found.astype(float) - start.astype(float)).sum(axis=2)
        row[0].imshow(start, interpolation="nearest")
        row[0].set_title(f"probe image {witness.start_image}", fontsize=8)
        row[1].imshow(found, interpolation="nearest")
        row[1].set_title(f"witness ({witness.steps} steps)", fontsize=8)
        row[2].imshow(change, cmap="gray", vmin=0, vmax=max(float(change.max()), 1.0), interpolation="nearest")
        row[2].set_title("change", fontsize=8)
        row[3].imshow(witness.activation.decode(), cmap=_colour_map(), vmin=0, vmax=255, interpolation="nearest")
        row[3].set_title(f"{_short(witness.layer, 16)} ch {witness.channel}: {witness.preactivation:.3g}", fontsize=8)
        for axes in row:
            axes.set_axis_off()
    figure.subplots_adjust(left=0.02, right=0.98, top=1 - 0.35 / figure.get_size_inches()[1], bottom=0.02, hspace=0.3)
    return figure


def _outcome_legend(axes: Any, dashed: str) -> None:
    """The per-layer charts' legend, right of the plot: bar colours by outcome and what the dashes mark."""
    handles = [Patch(color=PASSED, label="passed"), Patch(color=FAILED, label="failed"), _dashed(dashed)]
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _dashed(label: str) -> Line2D:
    return Line2D([], [], color="black", linestyle="--", label=label)


def channel_chart(layer: LayerDocument) -> Figure:
    """One layer's per-channel maximum activation over the probe set; dead channels marked in red."""
    maxima = np.asarray([np.nan if v is None else v for v in layer.channel_max or ()], dtype=float)
    dead = list(layer.dead_channels or ())
    figure = Figure(figsize=(min(13.0, max(6.0, 2.0 + 0.15 * len(maxima))), 3.2), layout="constrained")
    axes = figure.subplots()
    colours = [FAILED if c in set(dead) else PASSED for c in range(len(maxima))]
    axes.bar(np.arange(len(maxima)), maxima, width=0.8, color=colours)
    if dead:
        axes.plot(dead, np.zeros(len(dead)), "x", color=FAILED, markersize=8)
    axes.set_xlabel("channel")
    axes.set_ylabel("max activation")
    axes.set_title(f"{layer.id}: per-channel max over the probe set; dead channels in red", fontsize=10)
    return figure


def colour_profile_chart(profile: ColorProfile) -> Figure:
    """Median CSI and the share of CSI-selective channels per layer across depth, with the CSI threshold."""
    entries = profile.layers
    layer_ids = [entry.id for entry in entries]
    figure, axes = _layer_figure(len(entries))
    x = np.arange(len(entries))
    median = [np.nan if e.csi_median is None else e.csi_median for e in entries]
    selective = [np.nan if e.selective_fraction is None else e.selective_fraction for e in entries]
    axes.plot(x, median, "o-", color=PASSED, label="median CSI")
    axes.plot(x, selective, "s--", color=SELECTIVE, label="CSI-selective channels")
    thresholds = [entry.csi_threshold for entry in entries]
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


def filter_grid(filters: FilterTiles, selective: list[bool]) -> Figure:
    """The first conv's filters as RGB tiles (each scaled to its own [min, max]); colour-tuned ones framed."""
    tiles = _upscaled(filters.tiles.decode().astype(float) / 255.0, 15)
    columns = min(16, max(1, math.ceil(math.sqrt(len(tiles) * 2))))
    canvas, corners = _mosaic(tiles, columns, gap=4, fill=1.0)
    figure = Figure(figsize=(min(9.0, 0.55 * columns + 0.4), 0.55 * math.ceil(len(tiles) / columns) + 0.5))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.88))
    axes.imshow(canvas, interpolation="nearest")
    for corner, marked in zip(corners, selective):
        if marked:
            _frame(axes, corner, tiles.shape[1:3], SELECTIVE)
    axes.set_axis_off()
    figure.suptitle(f"{filters.layer}: {len(tiles)} filters", fontsize=9)
    return figure


def maps_grid(maps: LayerMaps) -> Figure:
    """One probe image's activation maps at a layer (each map scaled to its own max); dead channels framed red.

    The figure keeps the maps' aspect ratio, and is never narrower than its title needs.
    """
    tiles = _upscaled(maps.maps.decode().astype(float) / 255.0, 16)
    columns = min(16, len(tiles))
    canvas, corners = _mosaic(tiles, columns, gap=3, fill=np.nan)
    title = f"{_short(maps.layer, 40)} ({maps.role})"
    height_in = canvas.shape[0] / PIXELS_PER_INCH
    width_in = max(canvas.shape[1] / PIXELS_PER_INCH, 0.075 * len(title))
    figure = Figure(figsize=(width_in + 0.2, height_in + 0.45))
    axes = figure.add_axes((0.02, 0.02, 0.96, height_in / (height_in + 0.45)))
    axes.imshow(canvas, cmap=_colour_map(), vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    for channel, corner in zip(maps.channels, corners):
        if channel in maps.dead:
            _frame(axes, corner, tiles.shape[1:3], FAILED)
    axes.set_axis_off()
    figure.suptitle(title, fontsize=9)
    return figure


def _colour_map() -> Any:
    from matplotlib import colormaps

    return colormaps["magma"].with_extremes(bad="white")


def probe_image(pictures: Pictures) -> Figure:
    assert pictures.probe_image is not None
    image = pictures.probe_image.decode()
    figure = Figure(figsize=(1.6, 1.75))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.84))
    axes.imshow(image, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(f"probe image {pictures.probe_index}", fontsize=9)
    return figure


def sweep_chart(sweep: LrSweep, lr: float | None) -> Figure:
    """Newly dead filters and the loss after the probe's steps, per learning rate of the sweep."""
    curve = sweep.curve
    rates = [point.lr for point in curve]
    figure = Figure(figsize=(8.5, 3.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(rates, [point.new_dead for point in curve], "-", color=PASSED, zorder=1)
    axes.scatter(
        rates,
        [point.new_dead for point in curve],
        c=[PASSED if point.safe else FAILED for point in curve],
        zorder=2,
    )
    axes.set_xscale("log")
    axes.set_ylim(0, max(1, *(point.new_dead for point in curve)) * 1.15)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("learning rate")
    axes.set_ylabel("newly dead filters", color=PASSED)
    loss_axes = axes.twinx()
    losses = [np.nan if point.loss_end is None else point.loss_end for point in curve]
    loss_axes.plot(rates, losses, "s--", color="#55a868", label="loss after the probe")
    loss_axes.set_ylabel("loss", color="#55a868")
    diverged = [point.lr for point in curve if point.loss_end is None]
    for rate in diverged:
        axes.axvline(rate, color=FAILED, linestyle=":", linewidth=1)
    handles = [
        Line2D([], [], marker="o", color=PASSED, label="newly dead (red: unsafe)"),
        Line2D([], [], marker="s", linestyle="--", color="#55a868", label="loss after the probe"),
    ]
    if sweep.max_safe_lr is not None:
        axes.axvline(sweep.max_safe_lr, color="black", linestyle="--")
        handles.append(_dashed(f"max safe lr {sweep.max_safe_lr:g}"))
    if lr is not None:
        axes.axvline(lr, color="grey", linestyle="-.")
        handles.append(Line2D([], [], color="grey", linestyle="-.", label=f"configured lr {lr:g}"))
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.15, 1.0))  # right of the loss axis
    axes.set_title("learning-rate sweep", fontsize=10)
    return figure
