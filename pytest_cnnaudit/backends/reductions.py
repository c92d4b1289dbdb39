"""What a backend hands back per batch instead of whole activations: (N, C) reductions over the positions.

Why: the checks need, per image and channel, only the maximum, the count of active values
(``> zero_eps``) and the sum. A runtime that computes them where the activation lives (ONNX
graph nodes, torch ops on the model's device) lets only ``N x C`` numbers cross to the host,
so peak memory stays near a bare pass's and no activation is copied out of its runtime.

:func:`numpy_reductions` computes the same figures from a whole activation in numpy: the path
for a torch model on the CPU (whose activations are zero-copy numpy views, and numpy's
reductions there are faster than torch's), and the reference the runtimes are tested against.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine.cpus import usable_cpus


@dataclass(frozen=True)
class PerImageReductions:
    """One batch of one measured tensor, reduced over its positions: every array is (N, C)."""

    positions: int  # values per image and channel (the product of the spatial dims)
    max: np.ndarray  # in the activation's precision (a maximum is exact)
    active: np.ndarray  # integer: values > zero_eps
    sum: np.ndarray  # float64: the image's sum of values (NaN or inf when any value is)
    itemsize: int = 4  # bytes per activation value (what one image of it weighs)

    @property
    def channels(self) -> int:
        return int(self.max.shape[1])

    def rows(self, stop: int) -> PerImageReductions:
        """The first ``stop`` images (a fixed-batch model's padding dropped)."""
        return PerImageReductions(self.positions, self.max[:stop], self.active[:stop], self.sum[:stop], self.itemsize)

    def take(self, rows: np.ndarray) -> PerImageReductions:
        return PerImageReductions(self.positions, self.max[rows], self.active[rows], self.sum[rows], self.itemsize)


#: Called with (tensor key, the batch's reductions of that tensor) during a forward pass.
ReducedSink = Callable[[str, PerImageReductions], None]

#: Per-image maps smaller than this are reduced on the calling thread: handing them to the pool
#: costs more than it saves (a 64x64x16 map takes about 20 microseconds to reduce).
PARALLEL_MIN_VALUES = 1 << 16


@functools.cache
def _reduction_pool() -> ThreadPoolExecutor:
    """One pool for every reduction, a thread per usable core.

    numpy releases the GIL in these reductions, and the runtime's own threads sit idle while a
    batch is reduced (torch waits in the recording call). Measured on resnet50 (2 cores): the
    statistics' cost fell from 0.41x to 0.28x of a bare pass (0.22x with their sums as BLAS calls).
    """
    return ThreadPoolExecutor(usable_cpus(), thread_name_prefix="cnnaudit-stats")


if hasattr(os, "register_at_fork"):
    # A forked child inherits the pool object but not its threads: it would wait on them forever.
    os.register_at_fork(after_in_child=_reduction_pool.cache_clear)


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Hold numpy's BLAS to one thread while batches are reduced on the pool.

    The reductions call BLAS from every pool thread; a multi-threaded BLAS inside each would
    put twice as many threads as cores to work, and measured 1.5x slower on 2 cores. torch's
    and onnxruntime's own thread pools are not BLAS libraries numpy loads, so they keep theirs.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def numpy_reductions(batch: np.ndarray, channel_axis: int, eps: float) -> PerImageReductions:
    """The reductions of a whole (N, ..., C, ...) activation batch, one image per task on the pool.

    One image at a time: the temporaries (a mask, a float64 copy) are one image's maps, not the
    batch's, and stay in cache; measured 2x faster than whole-batch reductions on resnet50. Each
    image writes its own rows, so the result does not depend on the threads' order.
    """
    values = np.moveaxis(batch, channel_axis, 1) if channel_axis != 1 else batch
    values = values.reshape(values.shape[0], values.shape[1], -1)
    images, channels, positions = values.shape
    active = np.empty((images, channels), np.int64)
    sums = np.empty((images, channels))
    maxima = np.empty((images, channels), values.dtype)
    ones = np.ones(positions)

    def reduce_image(i: int) -> None:
        image = values[i]
        # Active: a > eps, compared in the activation's own precision (float16 activations against eps
        # rounded to float16). A rectifier's output is <= 0 exactly where its input is, so this one
        # definition serves ReLU (where it counts exact zeros) to GELU. Bytes summed into int32, not
        # count_nonzero: along an axis that casts every bool to intp (1.5x slower).
        active[i] = np.add.reduce((image > eps).view(np.uint8), axis=1, dtype=np.int32)
        # The sum in float64, as a BLAS call (dgemv): 1.4x faster than wide.sum(axis=1), same accumulation.
        sums[i] = image.astype(np.float64) @ ones
        maxima[i] = image.max(axis=1)

    if images > 1 and channels * positions >= PARALLEL_MIN_VALUES:
        list(_reduction_pool().map(reduce_image, range(images)))
    else:
        for i in range(images):
            reduce_image(i)
    return PerImageReductions(positions, maxima, active, sums, values.dtype.itemsize)
