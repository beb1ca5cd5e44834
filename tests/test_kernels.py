"""Compiled kernels against their naive NumPy twins, on fresh random inputs."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_perturb, naive_segment_means

from limefast.kernels.perturb import PerturbPlan, _segment_runs_cpu
from limefast.kernels.segment_means import segment_means

DTYPES = [np.uint8, np.uint16, np.int16, np.float16, np.float32, np.float64, np.int64]


@st.composite
def perturb_case(draw):
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    c = draw(st.integers(1, 4))
    n_seg = draw(st.integers(1, min(12, h * w)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(1, 9))
    rng = np.random.default_rng(seed)
    # Blocky random segmentations with every label 0..n_seg-1 present.
    seg = rng.integers(0, n_seg, (h, w))
    seg.ravel()[rng.permutation(h * w)[:n_seg]] = np.arange(n_seg)
    if draw(st.booleans()):
        seg = np.sort(seg, axis=1)  # long runs along rows
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    lo, hi = max(info.min, -1000), min(info.max, 1000)
    image = rng.uniform(lo, hi, (h, w, c)).astype(dtype)
    fudged = rng.uniform(lo, hi, (h, w, c)).astype(dtype)
    rows = rng.integers(0, 2, (n, n_seg))
    return image, fudged, seg.astype(draw(st.sampled_from([np.int32, np.int64]))), rows


@settings(max_examples=150, deadline=None)
@given(perturb_case())
def test_perturb_matches_lime_loop(case):
    image, fudged, seg, rows = case
    plan = PerturbPlan(image, fudged, seg)
    out = plan.new_buffer(len(rows) + 2)  # a buffer larger than the chunk
    out[...] = 0
    plan.write(rows, out)
    expected = naive_perturb(image, fudged, seg, rows)
    np.testing.assert_array_equal(out[: len(rows)].view(np.uint8), expected.view(np.uint8))


@settings(max_examples=60, deadline=None)
@given(perturb_case())
def test_buffer_is_fully_rewritten(case):
    image, fudged, seg, rows = case
    plan = PerturbPlan(image, fudged, seg)
    out = plan.new_buffer(len(rows))
    out.view(np.uint8)[...] = 0xAB  # garbage left by a classifier that wrote into its input
    plan.write(rows, out)
    np.testing.assert_array_equal(out.view(np.uint8),
                                  naive_perturb(image, fudged, seg, rows).view(np.uint8))


@settings(max_examples=100, deadline=None)
@given(perturb_case())
def test_segment_means_match_numpy(case):
    image, _, seg, _ = case
    ours = segment_means(image, seg, int(seg.max()) + 1)
    expected = naive_segment_means(image, seg)
    if image.dtype == np.float16:  # numpy rounds float16 means through float32 buffers
        np.testing.assert_allclose(ours, expected, rtol=1e-3)
    else:  # bit for bit once cast to the image dtype, as lime assigns them
        np.testing.assert_array_equal(ours.astype(image.dtype), expected.astype(image.dtype))


def test_segment_means_exact_for_large_float32_segments():
    rng = np.random.default_rng(1)
    image = (rng.standard_normal((300, 301, 3)) * 100).astype(np.float32)
    seg = (rng.random((300, 301)) < 0.1).astype(np.int64)  # segments of ~9000 and ~81000 pixels
    expected = naive_segment_means(image, seg).astype(np.float32)
    np.testing.assert_array_equal(segment_means(image, seg, 2).astype(np.float32), expected)


def test_segment_means_exact_for_uint8():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    seg = rng.integers(0, 7, (50, 60))
    np.testing.assert_array_equal(segment_means(image, seg, 7), naive_segment_means(image, seg))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40))
def test_segment_runs_cover_the_array(labels):
    seg = np.array(labels)
    starts, ends, run_labels = _segment_runs_cpu(seg)
    assert starts[0] == 0 and ends[-1] == len(seg)
    np.testing.assert_array_equal(starts[1:], ends[:-1])
    rebuilt = np.repeat(run_labels, ends - starts)
    np.testing.assert_array_equal(rebuilt, seg)
    assert np.all(run_labels[1:] != run_labels[:-1])


@pytest.mark.parametrize("threads,task_bytes", [(1, 1 << 30), (3, 1)])
def test_perturb_photo_sized_segments_on_threads(threads, task_bytes):
    """Segments of many run lengths (short runs inside long ones), samples shared by threads
    one per task: every sample exact, the rows past them untouched."""
    rng = np.random.default_rng(7)
    h, w = 90, 101
    seg = (np.arange(h)[:, None] // 11) * 10 + np.arange(w)[None, :] // 11
    speckle = rng.random((h, w)) < 0.05
    seg[speckle] = rng.integers(0, seg.max() + 1, speckle.sum())
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    fudged = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = rng.integers(0, 2, (13, seg.max() + 1)).astype(np.int8)
    plan = PerturbPlan(image, fudged, seg, task_bytes=task_bytes, threads=threads)
    out = np.full((16, h, w, 3), 0xCD, np.uint8)
    plan.write(rows, out)
    np.testing.assert_array_equal(out[:13], naive_perturb(image, fudged, seg, rows))
    assert (out[13:] == 0xCD).all()


def test_perturb_rejects_buffers_and_rows_that_do_not_fit():
    image = np.zeros((4, 5, 3), np.uint8)
    seg = np.arange(20).reshape(4, 5) % 3
    plan = PerturbPlan(image, image, seg)
    with pytest.raises(ValueError, match="rows"):
        plan.write(np.ones((2, 2), np.int8), plan.new_buffer(2))  # labels 0..2 need 3 columns
    with pytest.raises(ValueError, match="bytes"):
        plan.write(np.ones((2, 3), np.int8), np.zeros((2, 4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        plan.write(np.ones((2, 3), np.int8), plan.new_buffer(3)[::-1])
