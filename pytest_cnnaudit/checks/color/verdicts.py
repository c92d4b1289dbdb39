"""Colour sensitivity verdicts: pure functions from colour figures and limits to a :class:`Verdict`.

Two measures, two names (see :mod:`.measures` for both), used alike in every report:

- the first conv layer's filters are **colour-tuned** when the chromatic energy fraction of
  their weights > ``csi_threshold``; ``expect: invariant`` bounds the layer's chromatic energy
  share by ``max_sensitivity``;
- every layer's channels (``checks.color.layers`` bounds) are **CSI-selective** when their
  CSI (from activations) > ``csi_threshold``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...config.checks import FirstLayerColor, LayerColorBound
from ...document import ColorBoundFigures, ColorFigures, Verdict
from .measures import CsiSummary

CHECK = "color"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def check_first_layer(
    layer_id: str,
    chromatic_fraction: np.ndarray,
    chromatic_share: float,
    limits: FirstLayerColor,
    functional: CsiSummary | None = None,
) -> Verdict:
    """Judge the first conv layer's colour use against ``limits.expect`` (unset: report only).

    ``chromatic_fraction`` is per filter, ``chromatic_share`` the whole layer's; ``functional``
    (the layer's CSI summary, if its activation was measured) is reported, never judged.
    """
    filters = int(chromatic_fraction.size)
    selective = int((chromatic_fraction > limits.csi_threshold).sum())
    fraction = selective / filters if filters else 0.0
    figures = ColorFigures(
        channels=filters,
        selective_count=selective,
        selective_fraction=fraction,
        chromatic_share=chromatic_share,
        chromatic_fraction_median=float(np.median(chromatic_fraction)) if filters else None,
        chromatic_fraction_max=float(chromatic_fraction.max()) if filters else None,
        expect=limits.expect,
        csi_threshold=limits.csi_threshold,
        min_selective_fraction=limits.min_selective_fraction,
        max_sensitivity=limits.max_sensitivity,
        csi_median=functional.csi_median if functional is not None else None,
        csi_selective_fraction=functional.selective_fraction if functional is not None else None,
        tuned_count=selective,
        tuned_fraction=fraction,
        csi_selective_count=functional.selective_count if functional is not None else None,
    )
    counted = f"{selective} of {filters} filters colour-tuned ({fraction:.1%})"
    share = f"chromatic energy share {chromatic_share:.3f}"
    if limits.expect == "sensitive":
        minimum = limits.min_selective_fraction
        if fraction < minimum:
            message = (
                f"{counted} < min {_percent(minimum)} (colour-tuned: chromatic energy fraction of the "
                f"weights > {limits.csi_threshold}); the layer responds mostly to luminance"
            )
            return Verdict(CHECK, layer_id, "failed", message, figures)
        return Verdict(CHECK, layer_id, "passed", f"{counted} >= min {_percent(minimum)}", figures)
    if limits.expect == "invariant":
        if chromatic_share > limits.max_sensitivity:
            message = (
                f"{share} > max_sensitivity {limits.max_sensitivity} ({selective} of {filters} filters "
                "colour-tuned): the layer's filters weight red, green and blue unequally"
            )
            return Verdict(CHECK, layer_id, "failed", message, figures)
        return Verdict(CHECK, layer_id, "passed", f"{share} <= max_sensitivity {limits.max_sensitivity}", figures)
    return Verdict(CHECK, layer_id, "passed", f"{counted}, {share} (no expectation set)", figures)


def bound_figures(summary: CsiSummary, bound: LayerColorBound, threshold: float) -> ColorBoundFigures:
    return ColorBoundFigures(
        channels=summary.channels,
        defined=summary.defined,
        csi_median=summary.csi_median,
        selective_count=summary.selective_count,
        selective_fraction=summary.selective_fraction,
        match=bound.match,
        csi_threshold=threshold,
        min_selective_fraction=bound.min_selective_fraction,
        max_selective_fraction=bound.max_selective_fraction,
    )


def check_layer_bound(layer_id: str, summary: CsiSummary, bound: LayerColorBound, threshold: float) -> Verdict:
    """Judge a layer's fraction of CSI-selective channels (CSI > ``threshold``) against ``bound``.

    Channels with no defined CSI (never active on the probe images) are not counted.
    """
    part = bound_figures(summary, bound, threshold)
    figures = ColorFigures(
        channels=summary.channels,
        selective_count=summary.selective_count,
        selective_fraction=summary.selective_fraction,
        csi_threshold=threshold,
        min_selective_fraction=bound.min_selective_fraction,
        max_selective_fraction=bound.max_selective_fraction,
        csi_median=summary.csi_median,
        defined=summary.defined,
        match=bound.match,
        bounds=(part,),
        csi_selective_count=summary.selective_count,
        csi_selective_fraction=summary.selective_fraction,
    )
    fraction = summary.selective_fraction
    if fraction is None:
        message = f"no channel of {summary.channels} responds to the probe images, so none has a CSI"
        return Verdict(CHECK, layer_id, "skipped", message, figures)
    counted = (
        f"{summary.selective_count} of {summary.defined} channels CSI-selective ({fraction:.1%}, "
        f"CSI > {threshold}; median CSI {summary.csi_median:.3f})"
    )
    if fraction < bound.min_selective_fraction:
        message = f"{counted} < min {_percent(bound.min_selective_fraction)} (bound {bound.match!r})"
        return Verdict(CHECK, layer_id, "failed", message, figures)
    if fraction > bound.max_selective_fraction:
        message = f"{counted} > max {_percent(bound.max_selective_fraction)} (bound {bound.match!r})"
        return Verdict(CHECK, layer_id, "failed", message, figures)
    within = f"in [{_percent(bound.min_selective_fraction)}, {_percent(bound.max_selective_fraction)}]"
    return Verdict(CHECK, layer_id, "passed", f"{counted} {within}", figures)


def combine(layer_id: str, first_layer: Verdict | None, bounds: list[Verdict]) -> Verdict:
    """One item's verdict from the first-layer judgement (if this is the first conv) and every matching bound.

    Failed if any part failed (showing the failed parts), passed if any part passed,
    skipped only when every part was skipped.
    """
    parts = ([first_layer] if first_layer is not None else []) + bounds
    if len(parts) == 1:
        return parts[0]
    all_bounds = tuple(b for v in bounds if isinstance(v.figures, ColorFigures) for b in v.figures.bounds)
    if first_layer is not None and isinstance(first_layer.figures, ColorFigures):
        figures = dataclasses.replace(first_layer.figures, bounds=all_bounds)
    else:
        measured = next((v.figures for v in parts if isinstance(v.figures, ColorFigures)), None)
        figures = ColorFigures(
            channels=measured.channels if measured is not None else 0,
            bounds=all_bounds,
            csi_selective_count=measured.csi_selective_count if measured is not None else None,
            csi_selective_fraction=measured.csi_selective_fraction if measured is not None else None,
        )
    failed = [verdict for verdict in parts if verdict.outcome == "failed"]
    if failed:
        return Verdict(CHECK, layer_id, "failed", "; ".join(v.message for v in failed), figures)
    outcome = "passed" if any(verdict.outcome == "passed" for verdict in parts) else "skipped"
    return Verdict(CHECK, layer_id, outcome, "; ".join(v.message for v in parts), figures)
