"""The colour check: ``color[<first conv>]`` from its weights, ``color[<layer>]`` bounds on the CSI profile,
and the colour profile of every layer (the report's ``color_profile``).

Costs, in the main pass, the achromatic twins of ``checks.color.profile_images`` (32) evenly
spaced probe images, run in batches as their colour batches pass, and after it the 10 pattern
images with whole activations, a few at a time. Each channel's top images are chosen among the profiled images, so with more
probe images than that the CSI is a profile of that subset (the cost stays bounded).
"""

from __future__ import annotations

import dataclasses
import fnmatch

import numpy as np

from ...backends.base import Backend
from ...config.checks import LayerColorBound
from ...document import ColorProfile, ColorProfileLayer, FirstLayerProfile, Verdict
from ...engine.check import AuditContext, CheckResult, ModelPlan, Need
from ...engine.stats import TOP_IMAGES
from ..layers import unmeasurable_reason
from .measures import (
    GRAY_INPUT_REASON,
    OPPONENT_AXES,
    OPPONENT_BASIS,
    chromatic_fraction,
    chromatic_share,
    colour_selectivity,
    csi_summary,
    effective_rgb_weights,
    opponent_energy,
    pattern_figures,
)
from .passes import first_conv_id, pattern_pass
from .verdicts import CHECK, check_first_layer, check_layer_bound, combine

NOT_AN_IMAGE_REASON = "the model's input is a signal or a clip, not an RGB image: colour sensitivity does not apply"


def _bounds_for(bounds: tuple[LayerColorBound, ...], layer_id: str) -> list[LayerColorBound]:
    return [bound for bound in bounds if fnmatch.fnmatchcase(layer_id, bound.match)]


class ColorChecker:
    """``color[<first conv>]`` plus ``color[<layer>]`` for layers matched by ``checks.color.layers``."""

    name = CHECK

    def plan(self, model: ModelPlan) -> list[str | None]:
        first = first_conv_id(model.layers)
        planned: list[str | None] = []
        for layer in model.layers:
            colour = model.checks_for(layer.id).color
            if colour.enabled and (layer.id == first or _bounds_for(colour.layers, layer.id)):
                planned.append(layer.id)
        return planned

    def needs(self, model: ModelPlan) -> Need:
        return Need.TOP_IMAGES if model.checks_for().color.enabled or self.plan(model) else Need.NONE

    def judge(self, context: AuditContext) -> CheckResult:
        model = context.plan
        planned = [layer for layer in self.plan(model) if layer is not None]
        if not (planned or model.checks_for().color.enabled):
            return CheckResult([])
        if model.layout.input.shape is not None:
            return CheckResult([Verdict(CHECK, layer_id, "skipped", NOT_AN_IMAGE_REASON) for layer_id in planned])
        if model.layout.input.channels == "GRAY":
            return CheckResult([Verdict(CHECK, layer_id, "skipped", GRAY_INPUT_REASON) for layer_id in planned])
        csi, gray_images = self._csi(context)
        first = self._first_layer(context.backend, first_conv_id(model.layers))
        profile = self._profile(context, csi, first, gray_images)
        verdicts = [self._verdict(context, layer_id, csi, first) for layer_id in planned]
        return CheckResult(verdicts, {"color_profile": profile})

    @staticmethod
    def _csi(context: AuditContext) -> tuple[dict[str, np.ndarray], int]:
        """Every measured layer's (C,) CSI from the main pass's top images and their twins, and how many
        achromatic twins it ran."""
        measured = {layer_id: stats for layer_id, stats in context.stats.items() if stats.top_gray is not None}
        csi = {layer_id: colour_selectivity(stats.top_max, stats.top_gray) for layer_id, stats in measured.items()}
        twins = min(context.probes.count, context.plan.checks_for().color.profile_images) if measured else 0
        return csi, twins

    @staticmethod
    def _first_layer(backend: Backend, planned_id: str | None) -> np.ndarray | str:
        """The first conv's (out, 3) opponent-axis energies of its weights on raw RGB, or why there are none."""
        found = backend.first_conv()
        if found is None:
            return "the first conv's weights are not constants of a 2-d conv, so they cannot be read"
        if found.layer_id != planned_id:
            return f"the image input reaches conv {found.layer_id} first, not {planned_id}"
        if found.weight.shape[1] != 3:
            return f"the first conv's filters see {found.weight.shape[1]} input channels, not 3 (a grouped conv?)"
        return opponent_energy(effective_rgb_weights(found.weight, backend.input_spec))

    @staticmethod
    def _profile(
        context: AuditContext, csi: dict[str, np.ndarray], first: np.ndarray | str, gray_images: int
    ) -> ColorProfile:
        patterns, names = pattern_pass(context.backend, context.batch_size)
        layers = []
        for info in context.plan.layers:
            threshold = context.plan.checks_for(info.id).color.first_layer.csi_threshold
            if info.id in csi:
                summary = csi_summary(csi[info.id], threshold)
                entry = ColorProfileLayer(
                    info.id,
                    threshold,
                    summary.channels,
                    summary.defined,
                    summary.csi_median,
                    summary.selective_fraction,
                    summary.selective_count,
                )
            else:
                entry = ColorProfileLayer(info.id, threshold, info.channels, 0, None, None)
            if info.tensor in patterns:
                reduced = patterns[info.tensor]
                share, hues = pattern_figures(reduced["modulation"], reduced["mean"], names)
                entry = dataclasses.replace(entry, isoluminant_share=share, hue_response=hues)
            layers.append(entry)
        first_layer = None
        if not isinstance(first, str):
            first_layer = FirstLayerProfile(
                id=first_conv_id(context.plan.layers) or "",
                chromatic_fraction=tuple(chromatic_fraction(first).tolist()),
                chromatic_share=chromatic_share(first),
                axis_share=dict(zip(OPPONENT_AXES, (first.sum(axis=0) / max(first.sum(), 1e-300)).tolist())),
            )
        return ColorProfile(
            axes={axis: tuple(row) for axis, row in zip(OPPONENT_AXES, OPPONENT_BASIS.tolist())},
            gray="Rec. 601 luma on all three channels",
            top_images=min(TOP_IMAGES, gray_images),
            gray_images=gray_images,
            layers=tuple(layers),
            first_layer=first_layer,
        )

    @staticmethod
    def _verdict(context: AuditContext, layer_id: str, csi: dict[str, np.ndarray], first: np.ndarray | str) -> Verdict:
        model = context.plan
        skip = model.skip_reason(layer_id)
        if skip is not None:
            return Verdict(CHECK, layer_id, "skipped", f"skipped by the config: {skip}")
        colour = model.checks_for(layer_id).color
        threshold = colour.first_layer.csi_threshold
        summary = csi_summary(csi[layer_id], threshold) if layer_id in csi else None
        first_verdict = None
        if layer_id == first_conv_id(model.layers):
            if isinstance(first, str):
                expect, allow = colour.first_layer.expect, colour.allow_unmeasured
                first_verdict = _first_layer_unmeasured(layer_id, first, expect, allow)
            else:
                first_verdict = check_first_layer(
                    layer_id, chromatic_fraction(first), chromatic_share(first), colour.first_layer, summary
                )
        layer = next(info for info in model.layers if info.id == layer_id)
        reason = unmeasurable_reason(layer) or "its activation was not measured"
        bounds = [
            check_layer_bound(layer_id, summary, bound, threshold)
            if summary is not None
            else Verdict(CHECK, layer_id, "skipped", f"not measurable: {reason}")
            for bound in _bounds_for(colour.layers, layer_id)
        ]
        return combine(layer_id, first_verdict, bounds)


def _first_layer_unmeasured(layer_id: str, why: str, expect: str | None, allow: bool) -> Verdict:
    """The first conv's weights cannot be read: reported as skipped, failed when an expectation was set."""
    if expect is None or allow:
        return Verdict(CHECK, layer_id, "skipped", f"not measurable: {why}")
    message = f"expect: {expect} cannot be judged: {why}; if that is expected, set checks.color.allow_unmeasured: true"
    return Verdict(CHECK, layer_id, "failed", message)
