"""Fuzzing explain_instance: every input gives a valid explanation or a documented error.

Documented errors are ValueError/TypeError raised by limefast's own checks (their messages are
listed in docs/guide/errors.md); a Numba typing error, an IndexError or anything else is a bug.
"""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limefast import lime_image

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]
METHODS = ["auto", "none", "forward_selection", "highest_weights", "lasso_path"]


def _values(draw, dtype, shape, rng):
    kind = draw(st.sampled_from(["random", "constant", "extreme", "tiny"]))
    if np.dtype(dtype).kind == "f":
        info = np.finfo(dtype)
        lo, hi = {"random": (-1.0, 1.0), "constant": (0.5, 0.5),
                  "extreme": (float(info.min) / 4, float(info.max) / 4),
                  "tiny": (-float(info.tiny), float(info.tiny))}[kind]
    else:
        info = np.iinfo(dtype)
        lo, hi = {"random": (info.min, info.max), "constant": (info.max, info.max),
                  "extreme": (info.max - 1, info.max), "tiny": (0, 1)}[kind]
    if lo == hi:
        return np.full(shape, hi, dtype)
    if np.dtype(dtype).kind == "f":
        return rng.uniform(lo, hi, shape).astype(dtype)
    return rng.integers(lo, hi, shape, dtype=dtype, endpoint=True)


@st.composite
def cases(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels is None else (h, w, channels)
    image = _values(draw, dtype, shape, rng)
    layout = draw(st.sampled_from(["one", "per-pixel", "random", "gaps"]))
    if layout == "one":
        segments = np.zeros((h, w), np.int64)
    elif layout == "per-pixel":
        segments = np.arange(h * w).reshape(h, w)
    else:
        segments = rng.integers(0, draw(st.integers(1, 8)), (h, w))
        if layout == "gaps":  # labels that are not 0..n-1, negative ones included
            segments = segments * draw(st.integers(2, 5)) - draw(st.integers(0, 3))
    params = dict(
        num_samples=draw(st.integers(1, 25)),
        batch_size=draw(st.integers(1, 30)),
        top_labels=draw(st.sampled_from([None, 1, 2, 5])),
        labels=tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))),
        num_features=draw(st.integers(1, 12)),
        hide_color=draw(st.sampled_from([None, 0, 1])),
        distance_metric=draw(st.sampled_from(["cosine", "euclidean"])),
    )
    method = draw(st.sampled_from(METHODS))
    return image, segments, params, method


def classifier(batch):
    """4 classes from channel means: finite for finite input, valid probabilities."""
    x = batch.astype(np.float64)
    feats = np.stack([x.mean(axis=(1, 2, 3)), x[..., 0].std(axis=(1, 2)),
                      x.max(axis=(1, 2, 3)), x.min(axis=(1, 2, 3))], axis=1)
    feats = np.tanh(feats / (np.abs(feats).max() + 1.0))
    z = feats @ np.array([[1.0, -1, 0.5, 0], [0, 1, -1, 0.5], [0.5, 0, 1, -1], [-1, 0.5, 0, 1]])
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_case(case):
    image, segments, params, method = case
    explainer = lime_image.LimeImageExplainer(random_state=0, feature_selection=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relabel warnings, sklearn convergence warnings
        try:
            e = explainer.explain_instance(image, classifier, segmentation_fn=lambda im: segments,
                                           progress_bar=False, **params)
        except (ValueError, TypeError) as exc:
            # the only documented failure on these inputs: non-finite numbers from the
            # fudged image of a float image near its dtype's limits
            assert "NaN or infinite" in str(exc), exc
            assert image.dtype.kind == "f"
            return
    n_features = len(np.unique(segments))
    assert e.segments.shape == image.shape[:2]
    assert e.segments.min() == 0 and e.segments.max() == n_features - 1
    expected = (set(e.top_labels) if params["top_labels"] else set(params["labels"]))
    assert set(e.local_exp) == expected
    for label, exp in e.local_exp.items():
        features = [f for f, _ in exp]
        assert len(features) == len(set(features)) and len(features) <= n_features
        assert all(0 <= f < n_features for f in features)
        assert np.all(np.isfinite([w for _, w in exp]))
        assert np.isfinite(e.intercept[label]) and e.local_pred[label].shape == (1,)
        both = e.image.shape[2] >= 2  # marking both signs colours channel 0 or 1
        image_out, mask = e.get_image_and_mask(label, positive_only=not both, num_features=3)
        assert mask.shape == image.shape[:2] and image_out.shape[:2] == image.shape[:2]


@settings(max_examples=1100, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzz_explain_instance(case):
    check_case(case)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzz_explain_instance_more(case):
    check_case(case)
