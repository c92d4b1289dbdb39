"""Probes for signal (Conv1d, ``[C, L]``) and clip (Conv3d, ``[C, T, H, W]``) models: model input, not images.

A user's ``probe.images: arrays.npy`` of shape ``(N, *input.shape)`` is fed as it is. Without one:

- a clip of gray or colour frames is made from the shipped photographs: a seeded crop panned a
  few pixels per frame (a slow camera move), each frame through the input spec's channel order,
  scale and mean/std;
- a signal is seeded chirps plus noise in [-1, 1] on every channel (a raw waveform's range: a model
  that takes spectrograms or other features needs its own arrays);
- a clip of other than 1 or 3 channels needs the user's arrays: there is no honest default for it.

Every array is a pure function of (seed, index), generated one batch at a time, as image probes are.
These sets have the image probe set's interface (``count``, ``seed``, ``description``, ``image(i)``,
``batches(n)``), and what they yield is already model input (:func:`engine.probes.to_model_input` passes
it through when the input spec has a ``shape``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config.inputs import InputSpec
from ..errors import ProbeError
from .probes import SHIPPED_PHOTOS, _shipped_photo, seeded_crop, to_model_input

#: Pixels a generated clip pans per frame, and the share of the crop it may travel.
PAN_PER_FRAME = 2


@dataclass(frozen=True)
class SignalProbeSet:
    """Generated or user-given model inputs of one shape, yielded a batch at a time."""

    description: str
    count: int
    seed: int
    spec: InputSpec
    npy_path: str | None = None

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> np.ndarray:
        """Probe ``index`` as model input (the name the image probe set's users call it by)."""
        if self.npy_path is not None:
            return np.asarray(np.load(self.npy_path, mmap_mode="r", allow_pickle=False)[index], dtype=np.float32)
        rng = np.random.default_rng([self.seed, index])
        shape = self.spec.shape or ()
        return _clip(shape, self.spec, rng) if len(shape) == 4 else _signal(shape, rng)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.count, batch_size):
            yield np.stack([self.image(i) for i in range(start, min(start + batch_size, self.count))])


def _signal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """(C, L): per channel a linear chirp between two seeded frequencies plus white noise, in [-1, 1]."""
    channels, length = shape
    t = np.arange(length) / length
    rows = []
    for _ in range(channels):
        low, high = sorted(rng.uniform(0.5, length / 4, size=2))
        phase = 2 * np.pi * (low * t + (high - low) * t**2 / 2) + rng.uniform(0, 2 * np.pi)
        wave = rng.uniform(0.3, 0.8) * np.sin(phase) + rng.normal(0.0, 0.1, length)
        rows.append(np.clip(wave, -1.0, 1.0))
    return np.stack(rows).astype(np.float32)


def _clip(shape: tuple[int, ...], spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
    """(C, T, H, W): T frames of a seeded crop of a shipped photograph, panned ``PAN_PER_FRAME`` px a frame."""
    _, frames, height, width = shape
    photo = _shipped_photo(SHIPPED_PHOTOS[int(rng.integers(len(SHIPPED_PHOTOS)))])
    margin = PAN_PER_FRAME * frames
    wide = seeded_crop(photo, (height, width + margin), rng)
    images = np.stack([wide[:, PAN_PER_FRAME * k : PAN_PER_FRAME * k + width] for k in range(frames)])
    frame_spec = replace(spec, shape=None, size=(height, width), layout="NCHW")
    return to_model_input(images, frame_spec).transpose(1, 0, 2, 3).copy()


def signal_probe_set(spec: InputSpec, images: Path | None, count: int, seed: int) -> SignalProbeSet:
    """The probes of a signal or clip model: the user's ``.npy`` of ``(N, *shape)``, or generated ones."""
    shape = tuple(spec.shape or ())
    if images is not None:
        if images.suffix != ".npy" or not images.is_file():
            raise ProbeError(
                f"probe.images: {images}: a signal or clip model needs a .npy of shape (N, {_dims(shape)})"
            )
        array = np.load(images, mmap_mode="r", allow_pickle=False)
        if tuple(array.shape[1:]) != shape or array.shape[0] == 0:
            raise ProbeError(f"probe.images: {images} has shape {list(array.shape)}, expected (N, {_dims(shape)})")
        used = min(count, int(array.shape[0]))
        return SignalProbeSet(f"{images} ({array.shape[0]} arrays)", used, seed, spec, str(images))
    if len(shape) == 2 or (len(shape) == 4 and shape[0] in (1, 3)):
        kind = "clips panned over the shipped photographs" if len(shape) == 4 else "chirps and noise in [-1, 1]"
        return SignalProbeSet(f"{count} seeded {kind}", count, seed, spec)
    raise ProbeError(f"no default probe for an input of shape [N, {_dims(shape)}]: set probe.images: arrays.npy")


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))
