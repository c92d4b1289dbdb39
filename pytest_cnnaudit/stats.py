"""Streaming per-channel activation statistics: ``update(batch)`` then ``result()``.

Why streaming: a batch is reduced to a few numbers per channel and then dropped,
so memory does not grow with the number of probe images. Means and variances
are merged with Chan et al.'s parallel formula, so any split of the probe set
into batches gives what numpy gives on the whole array (up to rounding).

Only the per-input maxima, shape (images, channels), grow with the probe set;
they are what the colour check needs to find each channel's top images, and
are tiny (256 images x 2048 channels is 2 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of one activation tensor over the whole probe set."""

    count: int  # values per channel (images x positions)
    zeros: np.ndarray  # (C,) int64: values with |a| <= eps
    max: np.ndarray  # (C,) float64
    mean: np.ndarray  # (C,) float64
    var: np.ndarray  # (C,) float64, population variance
    input_max: np.ndarray  # (N, C) float32: each probe image's per-channel maximum
    input_mean: np.ndarray  # (N, C) float32: each probe image's per-channel mean

    @property
    def channels(self) -> int:
        return int(self.zeros.shape[0])

    @property
    def sparsity(self) -> float:
        """Fraction of zero activations over all channels, images and positions."""
        return float(self.zeros.sum() / (self.count * self.channels)) if self.count else 0.0

    @property
    def channel_sparsity(self) -> np.ndarray:
        return self.zeros / self.count if self.count else np.zeros(self.channels)

    @property
    def dead_channels(self) -> tuple[int, ...]:
        """Channels that are zero for every probe input and position."""
        return tuple(int(c) for c in np.flatnonzero(self.zeros == self.count)) if self.count else ()


class NonFiniteActivations(ValueError):
    """A batch holds NaN or infinite activations: no statistic of it means anything."""

    def __init__(self, images: int) -> None:
        super().__init__(f"NaN or infinite activations in {images} probe image(s) of a batch")
        self.images = images


class ChannelAccumulator:
    """Accumulates :class:`ChannelStats` from batches shaped (N, C, *spatial)."""

    def __init__(self, eps: float = 0.0) -> None:
        self.eps = eps
        self._count = 0
        self._zeros: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._input_max: list[np.ndarray] = []
        self._input_mean: list[np.ndarray] = []

    def update(self, batch: np.ndarray, channel_axis: int = 1) -> None:
        """Reduce one batch; the caller may free it afterwards."""
        values = np.moveaxis(batch, channel_axis, 1) if channel_axis != 1 else batch
        values = values.reshape(values.shape[0], values.shape[1], -1)
        images, channels, positions = values.shape
        n = images * positions
        nonzero = np.empty((images, channels), np.int64)
        per_input_sum = np.empty((images, channels))
        per_input_squares = np.empty((images, channels))
        # One image at a time: the temporaries (a mask, a float64 copy) are one image's maps, not the
        # batch's, and stay in cache; measured 2x faster than whole-batch reductions on resnet50.
        for i, image in enumerate(values):
            counted = np.abs(image) > self.eps if self.eps > 0 else image != 0
            # Bytes summed into int32, not count_nonzero: along an axis that casts every bool to intp (1.5x slower).
            nonzero[i] = np.add.reduce(counted.view(np.uint8), axis=1, dtype=np.int32)
            # Sums in float64: float32 squares lose a large-offset channel's variance entirely.
            wide = image.astype(np.float64)
            per_input_sum[i] = wide.sum(axis=1)
            per_input_squares[i] = np.einsum("cp,cp->c", wide, wide)
        zeros = n - nonzero.sum(axis=0)
        per_input_max = values.max(axis=2)
        if not np.isfinite(per_input_max).all():  # NaN propagates through max; so does +inf
            raise NonFiniteActivations(int(np.count_nonzero(~np.isfinite(per_input_max).all(axis=1))))
        batch_mean = per_input_sum.sum(axis=0) / n
        centred = per_input_sum / positions - batch_mean  # (N, C)
        within = per_input_squares - per_input_sum**2 / positions
        batch_m2 = np.maximum(within, 0.0).sum(axis=0) + positions * np.square(centred).sum(axis=0)
        self._merge(n, zeros, per_input_max.max(axis=0).astype(np.float64), batch_mean, batch_m2)
        self._input_max.append(per_input_max.astype(np.float32))
        self._input_mean.append((per_input_sum / positions).astype(np.float32))

    def _merge(self, n: int, zeros: np.ndarray, maxima: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        if self._count == 0:
            self._count, self._zeros, self._max, self._mean, self._m2 = n, zeros.astype(np.int64), maxima, mean, m2
            return
        total = self._count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self._count * n / total)
        self._zeros = self._zeros + zeros
        self._max = np.maximum(self._max, maxima)
        self._count = total

    def result(self) -> ChannelStats:
        if self._count == 0:
            raise ValueError("no batch was accumulated")
        return ChannelStats(
            count=self._count,
            zeros=self._zeros,
            max=self._max,
            mean=self._mean,
            var=self._m2 / self._count,
            input_max=np.concatenate(self._input_max),
            input_mean=np.concatenate(self._input_mean),
        )
