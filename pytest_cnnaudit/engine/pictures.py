"""Capture the HTML report's picture data (:mod:`pytest_cnnaudit.document.pictures`) in the measuring process.

The HTML report shows the first conv layer's filters, one probe image's activation maps at
the first conv layer and at a deep layer, and each revivable dead channel's witness (the image the
dead-filter check's search found, beside the probe image it started from, and the channel's map on
it). Those need weights and activations that the JSON
report leaves out on purpose (it stays small and byte-identical), so they are captured here,
beside the audit, when ``--cnnaudit-html`` or pytest-html's ``--html`` is given, and travel next
to the model's document, never inside it.

What is kept is already display-ready and small: uint8 arrays (each filter, each activation
map normalised to [0, 255]), a pure function of the model and the probe set (deterministic). Sizes are capped: 256 first-layer filters, 64 channels per layer, each
map block-averaged to at most 32x32, the probe image to at most 128 pixels, 8 witnesses at most
96 pixels: 50 KB of text for a 3-layer CNN at 64x64, a few hundred KB at most.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..checks.color.measures import effective_rgb_weights
from ..document.pictures import EncodedArray, FilterTiles, LayerMaps, Pictures, WitnessPicture
from .check import AuditContext
from .measure import run_padded
from .probes import to_model_input

MAX_FILTERS = 256
MAX_CHANNELS = 64
MAP_SIDE = 32
IMAGE_SIDE = 128
#: The probe image whose activation maps are shown.
PROBE_INDEX = 0
#: Revivable channels shown (the first ones, in layer order), and the side their images are reduced to.
MAX_WITNESSES = 8
WITNESS_SIDE = 96


def to_uint8(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Each slice (reduced over ``axes``) stretched from its own min (or 0, if above) to its max; flat: 0."""
    low = np.minimum(values.min(axis=axes, keepdims=True), 0.0)
    span = values.max(axis=axes, keepdims=True) - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values, dtype=np.float64), where=span > 0)
    return np.round(scaled * 255.0).astype(np.uint8)


def block_mean(maps: np.ndarray, side: int) -> np.ndarray:
    """(..., H, W) averaged over blocks so that neither side exceeds ``side`` (edges cropped to whole blocks).

    One block size for both sides, so a map keeps its aspect ratio, except that a side shorter than a
    block (a 1-d conv's maps are 1 x L) is not averaged further than its own length.
    """
    height, width = maps.shape[-2:]
    factor = math.ceil(max(height, width) / side)
    fh, fw = min(factor, height), min(factor, width)
    cropped = maps[..., : height // fh * fh, : width // fw * fw]
    shape = (*cropped.shape[:-2], height // fh, fh, width // fw, fw)
    return cropped.reshape(shape).mean(axis=(-3, -1))


def filter_tiles(weight: np.ndarray, input_spec: Any) -> np.ndarray:
    """(out, kh, kw, 3) uint8: each filter's weights on RGB (input normalisation folded in), scaled to [0, 255].

    Each filter is stretched from its own min to its max, as filter pictures usually are; a
    one-channel (GRAY) input gives gray tiles.
    """
    if weight.shape[1] == 3:
        rgb = effective_rgb_weights(weight[:MAX_FILTERS], input_spec)
    else:
        rgb = np.repeat(weight[:MAX_FILTERS, :1].astype(np.float64), 3, axis=1)
    low = rgb.min(axis=(1, 2, 3), keepdims=True)
    span = rgb.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.divide(rgb - low, span, out=np.full_like(rgb, 0.5), where=span > 0)
    return np.round(scaled.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


def shown_channels(channels: int, dead: tuple[int, ...], limit: int = MAX_CHANNELS) -> list[int]:
    """At most ``limit`` channels in order: every dead one (up to the limit), then the first live ones."""
    if channels <= limit:
        return list(range(channels))
    chosen = set(dead[:limit])
    live = (c for c in range(channels) if c not in chosen)
    while len(chosen) < limit:
        chosen.add(next(live))
    return sorted(chosen)


def _spatial(activation: np.ndarray, channel_axis: int) -> np.ndarray | None:
    """One image's (C, H, W) maps, or None when the activation has no 2-d map (or more than 2-d)."""
    maps = np.moveaxis(activation, channel_axis, 1)[0]
    if maps.ndim == 2:  # (C, L): a 1-d conv
        maps = maps[:, None, :]
    return maps.astype(np.float64) if maps.ndim == 3 else None


def activation_maps(context: AuditContext) -> tuple[LayerMaps, ...]:
    """One probe image's maps at the first measured conv and at a deep layer (the deepest one with dead
    channels, if any layer after the first has some, else the deepest one), dead channels listed."""
    backend = context.backend
    measured = [layer for layer in context.plan.layers if layer.id in context.stats]
    if not measured:
        return ()
    captured: dict[str, np.ndarray] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        maps = _spatial(activation, channel_axis)
        if maps is not None:
            captured[key] = maps

    image = context.probes.image(PROBE_INDEX)[None]
    run_padded(backend, to_model_input(image, backend.input_spec), sink)
    with_maps = [layer for layer in measured if layer.tensor in captured]
    if not with_maps:
        return ()
    dead = {layer.id: context.stats[layer.id].dead_channels for layer in with_maps}
    chosen = [(with_maps[0], "first conv")]
    later = with_maps[1:]
    if later:
        dead_ones = [layer for layer in later if dead[layer.id]]
        deep = dead_ones[-1] if dead_ones else later[-1]
        chosen.append((deep, "deepest layer with dead channels" if dead_ones else "deepest layer"))
    return tuple(_layer_maps(layer.id, role, captured[layer.tensor], dead[layer.id]) for layer, role in chosen)


def _layer_maps(layer_id: str, role: str, maps: np.ndarray, dead: tuple[int, ...]) -> LayerMaps:
    shown = shown_channels(maps.shape[0], dead)
    small = block_mean(maps[shown], MAP_SIDE)
    return LayerMaps(
        layer=layer_id,
        role=role,
        channels=tuple(shown),
        total_channels=int(maps.shape[0]),
        dead=tuple(c for c in shown if c in set(dead)),
        size=tuple(int(n) for n in maps.shape[1:]),
        maps=EncodedArray.encode(to_uint8(small, axes=(1, 2))),
    )


def _small_image(image: np.ndarray, side: int) -> EncodedArray:
    """(H, W, 3) RGB in [0, 1], block-averaged to at most ``side`` pixels a side, as uint8."""
    return EncodedArray.encode(np.round(block_mean(np.moveaxis(image, -1, 0), side) * 255).transpose(1, 2, 0))


def witness_pictures(context: AuditContext, witnesses: Any) -> tuple[WitnessPicture, ...]:
    """The first :data:`MAX_WITNESSES` witnesses a check found (``dead_filters``'s picture material)."""
    pictures = []
    for witness in list(witnesses)[:MAX_WITNESSES]:
        active = np.maximum(np.asarray(witness.preactivation_map, dtype=np.float64), 0.0)
        if active.ndim == 1:  # a 1-d conv's map
            active = active[None, :]
        pictures.append(
            WitnessPicture(
                layer=witness.target.layer_id,
                channel=witness.target.channel,
                start_image=witness.start_image,
                steps=witness.steps,
                preactivation=witness.preactivation,
                start=_small_image(context.probes.image(witness.start_image), WITNESS_SIDE),
                witness=_small_image(witness.pixels, WITNESS_SIDE),
                activation=EncodedArray.encode(to_uint8(block_mean(active, MAP_SIDE), axes=(0, 1))),
                size=tuple(int(n) for n in active.shape),
            )
        )
    return tuple(pictures)


def picture_payload(context: AuditContext, material: dict[str, Any] | None = None) -> Pictures:
    """Everything the HTML report draws beyond the JSON report, for one model; ``material`` is what the
    checks found for it (``witnesses``)."""
    shown = None
    if context.backend.input_spec.shape is None:  # an image (a signal or clip probe has no picture of its own)
        shown = _small_image(context.probes.image(PROBE_INDEX), IMAGE_SIDE)
    first = context.backend.first_conv()
    filters = None
    if first is not None and first.weight.ndim == 4:
        tiles = filter_tiles(first.weight, context.backend.input_spec)
        filters = FilterTiles(first.layer_id, int(first.weight.shape[0]), EncodedArray.encode(tiles))
    witnesses = witness_pictures(context, (material or {}).get("witnesses", ()))
    return Pictures(PROBE_INDEX, shown, filters, activation_maps(context), witnesses)
