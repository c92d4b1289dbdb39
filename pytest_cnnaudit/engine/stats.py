"""Streaming per-channel activation statistics: ``update(batch)`` then ``result()``.

Why streaming: a batch is reduced to a few numbers per channel and then dropped,
so memory does not grow with the number of probe images. Means and variances
are merged with Chan et al.'s parallel formula, so any split of the probe set
into batches gives what numpy gives on the whole array (up to rounding).

Nothing grows with the probe set: besides the per-channel sums, each channel
keeps only its :data:`TOP_IMAGES` probe images of highest maximum activation
(merged batch by batch), which is what the colour check needs.
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .cpus import usable_cpus


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of one activation tensor over the whole probe set."""

    count: int  # values per channel (images x positions)
    images: int  # probe images reduced
    inactive: np.ndarray  # (C,) int64: values <= eps (for every rectifier: where it is switched off)
    max: np.ndarray  # (C,) float64
    mean: np.ndarray  # (C,) float64
    var: np.ndarray  # (C,) float64, population variance
    # (min(k, N), C): per channel, its probe images of highest maximum (best first) and those maxima;
    # None when no check asked for them (k = 0)
    top_images: np.ndarray | None
    top_max: np.ndarray | None

    @property
    def channels(self) -> int:
        return int(self.inactive.shape[0])

    @property
    def sparsity(self) -> float:
        """Fraction of inactive values (<= eps) over all channels, images and positions."""
        return float(self.inactive.sum() / (self.count * self.channels)) if self.count else 0.0

    @property
    def channel_sparsity(self) -> np.ndarray:
        return self.inactive / self.count if self.count else np.zeros(self.channels)

    @property
    def dead_channels(self) -> tuple[int, ...]:
        """Channels never active (> eps) for any probe input and position."""
        return tuple(int(c) for c in np.flatnonzero(self.inactive == self.count)) if self.count else ()


class NonFiniteActivations(ValueError):
    """A batch holds NaN or infinite activations: no statistic of it means anything."""

    def __init__(self, images: int) -> None:
        super().__init__(f"NaN or infinite activations in {images} probe image(s) of a batch")
        self.images = images


#: Images kept per channel, by their maximum activation (ties: the earlier image first).
#: The colour check reruns them as achromatic twins; a quarter of the default 32 probes.
TOP_IMAGES = 8
#: Per-image maps smaller than this are reduced on the calling thread: handing them to the pool
#: costs more than it saves (a 64x64x16 map takes about 20 microseconds to reduce).
PARALLEL_MIN_VALUES = 1 << 16


@functools.cache
def _reduction_pool() -> ThreadPoolExecutor:
    """One pool for every accumulator, a thread per usable core.

    numpy releases the GIL in these reductions, and the runtime's own threads sit idle while a
    batch is reduced (onnxruntime returns all outputs at once; torch waits in the recording call).
    Measured on resnet50 (2 cores): the statistics' cost falls from 0.41x to 0.28x of a bare pass
    (0.22x with their sums as BLAS calls).
    """
    return ThreadPoolExecutor(usable_cpus(), thread_name_prefix="cnnaudit-stats")


if hasattr(os, "register_at_fork"):
    # A forked child inherits the pool object but not its threads: it would wait on them forever.
    os.register_at_fork(after_in_child=_reduction_pool.cache_clear)


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Hold numpy's BLAS to one thread while batches are reduced on :func:`_reduction_pool`.

    The reductions call BLAS from every pool thread; a multi-threaded BLAS inside each would
    put twice as many threads as cores to work, and measured 1.5x slower on 2 cores. torch's
    and onnxruntime's own thread pools are not BLAS libraries numpy loads, so they keep theirs.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class ChannelAccumulator:
    """Accumulates :class:`ChannelStats` from batches shaped (N, C, *spatial)."""

    def __init__(self, eps: float = 0.0, top_k: int = TOP_IMAGES) -> None:
        self.eps = eps
        self.top_k = top_k
        self._images = 0
        self._count = 0
        self._inactive: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._top_max: np.ndarray | None = None
        self._top_images: np.ndarray | None = None

    def update(self, batch: np.ndarray, channel_axis: int = 1) -> None:
        """Reduce one batch; the caller may free it afterwards."""
        values = np.moveaxis(batch, channel_axis, 1) if channel_axis != 1 else batch
        values = values.reshape(values.shape[0], values.shape[1], -1)
        images, channels, positions = values.shape
        n = images * positions
        active = np.empty((images, channels), np.int64)
        per_input_sum = np.empty((images, channels))
        per_input_squares = np.empty((images, channels))
        per_input_max = np.empty((images, channels), values.dtype)
        ones = np.ones(positions)

        def reduce_image(i: int) -> None:
            # One image at a time: the temporaries (a mask, a float64 copy) are one image's maps, not
            # the batch's, and stay in cache; measured 2x faster than whole-batch reductions on resnet50.
            image = values[i]
            # Active: a > eps. A rectifier's output is <= 0 exactly where its input is, so this one
            # definition serves ReLU (where it counts exact zeros) to GELU. Compared in the
            # activation's own precision (float16 activations against eps rounded to float16).
            # Bytes summed into int32, not count_nonzero: along an axis that casts every bool to intp (1.5x slower).
            active[i] = np.add.reduce((image > self.eps).view(np.uint8), axis=1, dtype=np.int32)
            # Sums in float64: float32 squares lose a large-offset channel's variance entirely.
            # Both sums as BLAS calls (dgemv, then one ddot per channel): 1.4x and 3x faster than
            # wide.sum(axis=1) and einsum("cp,cp->c"), with the same float64 accumulation.
            wide = image.astype(np.float64)
            per_input_sum[i] = wide @ ones
            per_input_squares[i] = (wide[:, None, :] @ wide[:, :, None]).reshape(channels)
            per_input_max[i] = image.max(axis=1)

        if images > 1 and channels * positions >= PARALLEL_MIN_VALUES:
            # Each image writes its own rows, so the result does not depend on the threads' order.
            list(_reduction_pool().map(reduce_image, range(images)))
        else:
            for i in range(images):
                reduce_image(i)
        inactive = n - active.sum(axis=0)
        if not np.isfinite(per_input_max).all():  # NaN propagates through max; so does +inf
            raise NonFiniteActivations(int(np.count_nonzero(~np.isfinite(per_input_max).all(axis=1))))
        batch_mean = per_input_sum.sum(axis=0) / n
        centred = per_input_sum / positions - batch_mean  # (N, C)
        within = per_input_squares - per_input_sum**2 / positions
        batch_m2 = np.maximum(within, 0.0).sum(axis=0) + positions * np.square(centred).sum(axis=0)
        self._merge(n, inactive, per_input_max.max(axis=0).astype(np.float64), batch_mean, batch_m2)
        if self.top_k:
            self._keep_top(per_input_max.astype(np.float32))
        self._images += images

    def _keep_top(self, per_input_max: np.ndarray) -> None:
        """Merge a batch's (n, C) maxima into each channel's top ``top_k`` images.

        The kept images come first and all precede the batch's, so a stable sort on the
        maximum alone breaks ties by image index, as sorting the whole probe set would.
        """
        images = np.arange(self._images, self._images + per_input_max.shape[0])
        candidates = np.broadcast_to(images[:, None], per_input_max.shape)
        if self._top_max is not None and self._top_images is not None:
            per_input_max = np.concatenate([self._top_max, per_input_max])
            candidates = np.concatenate([self._top_images, candidates])
        order = np.argsort(-per_input_max, axis=0, kind="stable")[: self.top_k]
        self._top_max = np.take_along_axis(per_input_max, order, axis=0)
        self._top_images = np.take_along_axis(candidates, order, axis=0)

    def _merge(self, n: int, inactive: np.ndarray, maxima: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        if self._count == 0:
            self._count, self._inactive, self._max, self._mean, self._m2 = (
                n,
                inactive.astype(np.int64),
                maxima,
                mean,
                m2,
            )
            return
        total = self._count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self._count * n / total)
        self._inactive = self._inactive + inactive
        self._max = np.maximum(self._max, maxima)
        self._count = total

    def result(self) -> ChannelStats:
        if self._count == 0:
            raise ValueError("no batch was accumulated")
        return ChannelStats(
            count=self._count,
            images=self._images,
            inactive=self._inactive,
            max=self._max,
            mean=self._mean,
            var=self._m2 / self._count,
            top_images=self._top_images,
            top_max=self._top_max,
        )
