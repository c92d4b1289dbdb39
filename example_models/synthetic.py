"""Synthetic image tasks generated in code: coloured shapes on textured backgrounds.

Why synthetic: the example models must be rebuilt offline, in minutes, with the
same result every time, so the data is a pure function of a seeded generator
and needs no download. Every image is 64x64 RGB in [0, 1], returned NCHW float32.

Two tasks share one renderer and differ only in what decides the label:

- ``shapes``: the label is the shape (square, diamond, ring, cross); colour,
  size, position, rotation and background texture are random, and object and
  background differ in luminance only.
- ``hue``: the label is the object's hue (four 90-degree sectors); shape,
  texture and luminance are random and independent of the label, so only
  colour solves it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SIZE = 64
NUM_CLASSES = 4
SHAPE_NAMES = ("square", "diamond", "ring", "cross")
#: Rec. 601 luma weights, the same ones the audit's achromatic twin uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Batch = tuple[np.ndarray, np.ndarray]
TaskFn = Callable[[np.random.Generator, int], Batch]


def _pixel_grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, shaped (1, SIZE, SIZE) to broadcast over a batch."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    return ys[None], xs[None]


def _column(values: np.ndarray) -> np.ndarray:
    """Per-image values shaped (N, 1, 1) to broadcast over pixels."""
    return values.astype(np.float32)[:, None, None]


def shape_coverage(rng: np.random.Generator, shapes: np.ndarray) -> np.ndarray:
    """(N, SIZE, SIZE) fraction of each pixel covered by the given shapes, randomly placed and sized.

    The shapes differ in local structure (edge orientation, stroke width, curvature),
    which a small network that pools globally can pick up; rotation is limited to
    +-15 degrees so that a square never turns into a diamond. Edges are anti-aliased
    (coverage ramps over one pixel of distance to the outline), as in a photograph.
    """
    n = len(shapes)
    ys, xs = _pixel_grid()
    radius = _column(rng.uniform(9.0, 18.0, n))
    dy = ys - _column(rng.uniform(20.0, SIZE - 20.0, n))
    dx = xs - _column(rng.uniform(20.0, SIZE - 20.0, n))
    angle = _column(rng.uniform(-np.pi / 12, np.pi / 12, n))
    # Coordinates in the shape's own rotated frame.
    u = np.abs(np.cos(angle) * dx + np.sin(angle) * dy)
    v = np.abs(-np.sin(angle) * dx + np.cos(angle) * dy)
    stroke = _column(rng.uniform(1.5, 3.0, n))
    # Distance inside each outline (negative outside).
    square = 0.75 * radius - np.maximum(u, v)
    diamond = (radius - u - v) / np.sqrt(2.0)
    ring = stroke - np.abs(np.sqrt(u**2 + v**2) - radius + stroke)
    cross = np.maximum(np.minimum(stroke - u, radius - v), np.minimum(stroke - v, radius - u))
    inside = np.stack([square, diamond, ring, cross])[shapes, np.arange(n)]
    return np.clip(inside + 0.5, 0.0, 1.0)


def texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-mean luminance texture (N, SIZE, SIZE): two random gratings.

    No pixel noise: the probe photographs are smooth at 64x64, and filters that
    learn to fire on noise would look dead on them.
    """
    ys, xs = _pixel_grid()
    pattern = np.zeros((n, SIZE, SIZE), dtype=np.float32)
    for _ in range(2):
        period = _column(rng.uniform(6.0, 24.0, n))
        direction = _column(rng.uniform(0.0, np.pi, n))
        phase = _column(rng.uniform(0.0, 2 * np.pi, n))
        amplitude = _column(rng.uniform(0.02, 0.06, n))
        along = np.cos(direction) * xs + np.sin(direction) * ys
        pattern += amplitude * np.cos(2 * np.pi * along / period + phase)
    return pattern


def colours_with_luma(hue: np.ndarray, saturation: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """(N, 3) RGB of the given HSV hue (turns) and saturation, scaled to the given luma (then clipped)."""
    sector = (np.array([5.0, 3.0, 1.0]) + 6.0 * hue[:, None]) % 6.0
    ramp = np.clip(np.minimum(sector, 4.0 - sector), 0.0, 1.0)
    bright = 1.0 - saturation[:, None] * ramp
    scale = luma[:, None] / (bright @ LUMA)[:, None]
    return np.clip(bright * scale, 0.0, 1.0).astype(np.float32)


def render(
    coverage: np.ndarray, object_rgb: np.ndarray, background_rgb: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Paint objects over backgrounds, each with its own luminance texture; NCHW in [0, 1]."""
    n = len(coverage)
    background = background_rgb[:, :, None, None] + texture(rng, n)[:, None]
    foreground = object_rgb[:, :, None, None] + 0.5 * texture(rng, n)[:, None]
    alpha = coverage[:, None]
    images = alpha * foreground + (1.0 - alpha) * background
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def shapes_batch(rng: np.random.Generator, n: int) -> Batch:
    """Label = shape. Each image has one random hue and saturation; object and background
    differ only in luminance, so edges carry no colour information and the first layer
    has no reason to become colour-selective (the probe photographs, which hold almost
    no green or purple, would leave a green-tuned filter silent)."""
    labels = rng.integers(0, NUM_CLASSES, n)
    hue, saturation = rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 0.6, n)
    background_luma = rng.uniform(0.15, 0.85, n)
    contrast = rng.uniform(0.2, 0.45, n) * np.where(background_luma < 0.5, 1.0, -1.0)
    background = colours_with_luma(hue, saturation, background_luma)
    objects = colours_with_luma(hue, saturation, background_luma + contrast)
    images = render(shape_coverage(rng, labels), objects, background, rng)
    return images, labels


def hue_batch(rng: np.random.Generator, n: int) -> Batch:
    """Label = hue sector of the object. The object's luma (0.1-0.28, reachable at every hue
    for this saturation range), shape and background are drawn independently of the label."""
    labels = rng.integers(0, NUM_CLASSES, n)
    hue = (labels / NUM_CLASSES + rng.uniform(-0.06, 0.06, n)) % 1.0
    objects = colours_with_luma(hue, rng.uniform(0.55, 0.8, n), rng.uniform(0.1, 0.28, n))
    background = rng.uniform(0.1, 0.9, n)[:, None] + rng.uniform(-0.03, 0.03, (n, 3))
    shapes = rng.integers(0, len(SHAPE_NAMES), n)
    images = render(shape_coverage(rng, shapes), objects, background.astype(np.float32), rng)
    return images, labels


TASKS: dict[str, TaskFn] = {"shapes": shapes_batch, "hue": hue_batch}


def batch(task: str, seed: int, index: int, size: int) -> Batch:
    """Batch ``index`` of a task's stream: a pure function of (seed, index)."""
    return TASKS[task](np.random.default_rng([seed, index]), size)
