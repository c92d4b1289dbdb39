"""Streaming per-channel activation statistics: ``update_reduced(batch reductions)`` then ``result()``.

Why streaming: a batch is reduced to (N, C) figures per measured tensor (by the runtime
itself, or by :func:`~pytest_cnnaudit.backends.reductions.numpy_reductions`) and dropped, so
memory does not grow with the number of probe images. Counts and maxima merge exactly; the
sums merge in float64, so any split of the probe set into batches gives what numpy gives on
the whole array (up to float64 rounding of the sums).

Nothing grows with the probe set: besides the per-channel sums, each channel keeps only its
:data:`TOP_IMAGES` probe images of highest maximum activation (merged batch by batch), and,
when the colour check asked for them, those images' achromatic twins' maxima.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.reductions import PerImageReductions, numpy_reductions


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of one activation tensor over the whole probe set."""

    count: int  # values per channel (images x positions)
    images: int  # probe images reduced
    inactive: np.ndarray  # (C,) int64: values <= eps (for every rectifier: where it is switched off)
    max: np.ndarray  # (C,) float64
    mean: np.ndarray  # (C,) float64
    # (min(k, N), C): per channel, its probe images of highest maximum (best first) and those maxima, among
    # the images whose gray twins ran when ``top_gray`` is set (the colour profile's subset); None when no
    # check asked for them (k = 0)
    top_images: np.ndarray | None
    top_max: np.ndarray | None
    top_gray: np.ndarray | None = None  # (min(k, N), C): the same images' achromatic twins' maxima

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
#: The colour check compares them with their achromatic twins; a quarter of the default 32 probes.
TOP_IMAGES = 8


class ChannelAccumulator:
    """Accumulates :class:`ChannelStats` from per-batch reductions (or whole (N, C, *spatial) batches)."""

    def __init__(self, eps: float = 0.0, top_k: int = TOP_IMAGES) -> None:
        self.eps = eps
        self.top_k = top_k
        self._images = 0
        self._count = 0
        self._inactive: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._top_max: np.ndarray | None = None
        self._top_images: np.ndarray | None = None
        self._top_gray: np.ndarray | None = None

    def update(self, batch: np.ndarray, channel_axis: int = 1) -> None:
        """Reduce one whole activation batch in numpy; the caller may free it afterwards."""
        self.update_reduced(numpy_reductions(batch, channel_axis, self.eps))

    def update_reduced(self, reduced: PerImageReductions, keep_top: bool = True) -> None:
        """Merge one batch's reductions; its images follow every image merged so far.

        ``keep_top`` False: the batch's images are not candidates for the top images (the colour
        profile then offers only its subset, through :meth:`keep_top`).
        """
        images = reduced.max.shape[0]
        # A NaN or inf anywhere reaches the sum (a runtime's maximum may skip NaN); +inf reaches the maximum.
        finite = np.isfinite(reduced.sum) & np.isfinite(reduced.max)
        if not finite.all():
            raise NonFiniteActivations(int(np.count_nonzero(~finite.all(axis=1))))
        n = images * reduced.positions
        inactive = n - reduced.active.sum(axis=0, dtype=np.int64)
        total = reduced.sum.sum(axis=0, dtype=np.float64)
        maxima = reduced.max.max(axis=0).astype(np.float64)
        if self._count == 0:
            self._inactive, self._max, self._sum = inactive, maxima, total
        else:
            self._inactive = self._inactive + inactive
            self._max = np.maximum(self._max, maxima)
            self._sum = self._sum + total
        self._count += n
        if self.top_k and keep_top:
            self.keep_top(np.arange(self._images, self._images + images), reduced.max)
        self._images += images

    def keep_top(self, images: np.ndarray, maxima: np.ndarray, gray: np.ndarray | None = None) -> None:
        """Merge (n, C) maxima of probe ``images`` (ascending, after every image kept so far) into each
        channel's top ``top_k`` images; ``gray``: their achromatic twins' (n, C) maxima, kept alongside.

        The kept images come first and all precede the new ones, so a stable sort on the maximum alone
        breaks ties by image index, as sorting the whole probe set would.
        """
        maxima = maxima.astype(np.float32)
        candidates = np.broadcast_to(images[:, None], maxima.shape)
        if self._top_max is not None and self._top_images is not None:
            maxima = np.concatenate([self._top_max, maxima])
            candidates = np.concatenate([self._top_images, candidates])
            if gray is not None and self._top_gray is not None:
                gray = np.concatenate([self._top_gray, gray])
        order = np.argsort(-maxima, axis=0, kind="stable")[: self.top_k]
        self._top_max = np.take_along_axis(maxima, order, axis=0)
        self._top_images = np.take_along_axis(candidates, order, axis=0)
        if gray is not None:
            self._top_gray = np.take_along_axis(gray.astype(np.float32), order, axis=0)

    def result(self) -> ChannelStats:
        if self._count == 0:
            raise ValueError("no batch was accumulated")
        return ChannelStats(
            count=self._count,
            images=self._images,
            inactive=self._inactive,
            max=self._max,
            mean=self._sum / self._count,
            top_images=self._top_images,
            top_max=self._top_max,
            top_gray=self._top_gray,
        )
