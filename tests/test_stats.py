"""ChannelAccumulator: streamed statistics equal whole-array numpy for any split into batches."""

from __future__ import annotations

import gc
import os
import signal
import time
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_cnnaudit.backends import reductions as reductions_module
from pytest_cnnaudit.backends.reductions import PARALLEL_MIN_VALUES
from pytest_cnnaudit.engine.stats import TOP_IMAGES, ChannelAccumulator, ChannelStats

FINITE = st.floats(min_value=-100.0, max_value=100.0, width=32, allow_nan=False, allow_infinity=False)
#: Exact zeros are what the audit counts, so they come up often; so do tiny values near an eps.
ELEMENTS = st.one_of(st.just(0.0), st.just(-0.0), st.floats(-(2.0**-10), 2.0**-10, width=32), FINITE)


@st.composite
def activations(draw: st.DrawFn) -> np.ndarray:
    """An (N, C, H, W) float32 array; some channels are all zero (dead)."""
    shape = draw(st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)))
    array = draw(hnp.arrays(np.float32, shape, elements=ELEMENTS))
    dead = draw(hnp.arrays(np.bool_, shape[1]))
    array[:, dead] = 0.0
    return array


@st.composite
def splits(draw: st.DrawFn, n: int) -> list[int]:
    """Batch boundaries: any composition of ``n`` into positive parts."""
    cuts = draw(st.sets(st.integers(1, n - 1), max_size=n - 1)) if n > 1 else set()
    return sorted(cuts)


def accumulate(
    array: np.ndarray, cuts: list[int], eps: float = 0.0, channel_axis: int = 1, top_k: int = TOP_IMAGES
) -> ChannelStats:
    accumulator = ChannelAccumulator(eps, top_k)
    for batch in np.split(array, cuts, axis=0):
        accumulator.update(batch, channel_axis)
    return accumulator.result()


def assert_matches_numpy(stats: ChannelStats, nchw: np.ndarray, eps: float = 0.0, top_k: int = TOP_IMAGES) -> None:
    """Compare with numpy over the whole (N, C, H, W) array, computed in float64."""
    n, c, h, w = nchw.shape
    values = nchw.astype(np.float64)
    inactive = values <= eps
    assert stats.count == n * h * w
    np.testing.assert_array_equal(stats.inactive, inactive.sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(stats.max, values.max(axis=(0, 2, 3)))
    scale = max(1.0, float(np.abs(values).max()))
    np.testing.assert_allclose(stats.mean, values.mean(axis=(0, 2, 3)), rtol=1e-9, atol=1e-12 * scale)
    assert stats.dead_channels == tuple(int(i) for i in np.flatnonzero(inactive.all(axis=(0, 2, 3))))
    # Each channel's top images over the whole set, ties to the earlier image (a stable sort).
    per_image_max = nchw.max(axis=(2, 3))
    top = np.argsort(-per_image_max, axis=0, kind="stable")[:top_k]
    np.testing.assert_array_equal(stats.top_images, top)
    np.testing.assert_array_equal(stats.top_max, np.take_along_axis(per_image_max, top, axis=0))
    assert stats.channels == c
    assert stats.sparsity == pytest.approx(inactive.sum() / inactive.size)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), top_k=st.integers(1, 8))
def test_any_split_matches_whole_array(data: st.DataObject, top_k: int) -> None:
    """Including each channel's top images when fewer are kept than there are images."""
    array = data.draw(activations())
    cuts = data.draw(splits(array.shape[0]))
    assert_matches_numpy(accumulate(array, cuts, top_k=top_k), array, top_k=top_k)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_channels_last_matches_channels_first(data: st.DataObject) -> None:
    nchw = data.draw(activations())
    cuts = data.draw(splits(nchw.shape[0]))
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    assert_matches_numpy(accumulate(nhwc, cuts, channel_axis=3), nchw)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), eps=st.sampled_from([1e-6, 1e-4, 1e-3, 0.5]))
def test_eps_counts_near_zero_values(data: st.DataObject, eps: float) -> None:
    array = data.draw(activations())
    cuts = data.draw(splits(array.shape[0]))
    assert_matches_numpy(accumulate(array, cuts, eps=eps), array, eps=eps)


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_images_reduced_on_the_thread_pool_match_numpy(eps: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps large enough for the pool give numpy's answer, and the same bits as reducing them serially."""
    rng = np.random.default_rng(0)
    array = np.maximum(rng.normal(0, 1, (5, 16, 64, 64)), 0).astype(np.float32)  # 65536 values per image
    array[:, 3] = 0.0  # a dead channel
    array[2, :, :5] = 1e-4  # near-zero values for the eps case
    assert array[0].size >= PARALLEL_MIN_VALUES
    pooled = accumulate(array, [2], eps)
    assert_matches_numpy(pooled, array, eps)
    monkeypatch.setattr(reductions_module, "PARALLEL_MIN_VALUES", array[0].size + 1)
    serial = accumulate(array, [2], eps)
    for field in ("inactive", "max", "mean", "top_images", "top_max"):
        np.testing.assert_array_equal(getattr(pooled, field), getattr(serial, field))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_reduces_on_a_pool_of_its_own() -> None:
    """The parent's pool threads do not exist in a forked child; the child must not wait on them."""
    array = np.ones((2, 16, 64, 64), np.float32)  # large enough for the pool
    accumulate(array, [])  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child: reduce once more, exit 0 when it finishes
        try:
            accumulate(array, [])
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung reducing a batch")


def test_inactive_means_not_above_eps() -> None:
    """One definition for every rectifier: a value is inactive when <= eps, so negative outputs count too."""
    batch = np.array([0.0, -0.0, 1e-30, -1e-30, 2.0, -2.0], dtype=np.float32).reshape(1, 1, 2, 3)
    exact = accumulate(batch, [])
    assert exact.inactive.tolist() == [4]  # 0, -0, -1e-30, -2
    assert exact.dead_channels == ()
    near = accumulate(batch, [], eps=1e-20)
    assert near.inactive.tolist() == [5]
    everything = accumulate(batch, [], eps=2.0)
    assert everything.inactive.tolist() == [6]
    assert everything.dead_channels == (0,)


def test_negative_only_channel_is_dead() -> None:
    """A leaky unit whose pre-activation never exceeds 0 (outputs all negative) never fires: dead."""
    batch = np.full((2, 1, 3, 3), -0.01, dtype=np.float32)
    stats = accumulate(batch, [1])
    assert stats.dead_channels == (0,)
    assert stats.sparsity == 1.0
    positive = batch.copy()
    positive[1, 0, 2, 2] = 0.001
    assert accumulate(positive, [1]).dead_channels == ()


def test_float16_activations_reduce_in_float64() -> None:
    """An fp16 graph hands over float16 maps: counts, sums and maxima equal float64 numpy on them."""
    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 30.0, size=(6, 4, 32, 32)).astype(np.float16)
    array[:, 2] = -0.0
    stats = accumulate(array, [2, 5])
    assert_matches_numpy(stats, array)
    assert stats.dead_channels == (2,)
    assert stats.max.dtype == stats.mean.dtype == np.float64


def test_result_before_update_raises() -> None:
    with pytest.raises(ValueError, match="no batch"):
        ChannelAccumulator().result()


def test_keeps_no_reference_to_batches() -> None:
    """Memory stays bounded: once the caller drops a batch, nothing inside keeps it alive."""
    accumulator = ChannelAccumulator()
    refs = []
    for seed in range(3):
        batch = np.random.default_rng(seed).normal(size=(4, 8, 16, 16)).astype(np.float32)
        refs.append(weakref.ref(batch))
        accumulator.update(batch)
        nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        refs.append(weakref.ref(nhwc))
        accumulator.update(nhwc, channel_axis=3)
        del batch, nhwc
    gc.collect()
    assert all(ref() is None for ref in refs)
    stats = accumulator.result()
    assert stats.top_images.shape == stats.top_max.shape == (TOP_IMAGES, 8)
    assert stats.top_images.max() < 24


def test_accumulated_state_does_not_grow_with_positions() -> None:
    """Per-channel state is (C,) plus each channel's top images, (k, C): nothing grows with images."""
    accumulator = ChannelAccumulator(top_k=3)
    for _ in range(5):
        accumulator.update(np.ones((2, 4, 64, 64), dtype=np.float32))
    stats = accumulator.result()
    assert stats.inactive.shape == stats.max.shape == stats.mean.shape == (4,)
    assert stats.top_images.shape == stats.top_max.shape == (3, 4)
    np.testing.assert_array_equal(stats.top_images[:, 0], [0, 1, 2])  # all equal: the earliest images
    assert stats.count == 10 * 64 * 64
