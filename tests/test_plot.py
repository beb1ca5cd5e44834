"""plot_explanation: a label's strongest weights as bars, with their confidence intervals."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib: limefast[bench]")

import sys

import numpy as np
from scipy.stats import norm

from limefast.lime_image import ImageExplanation
from limefast.viz import plot, render

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

N_SEGMENTS = 12


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def hand_built(seed, *, stderr=True, counts=True):
    """An explanation of label 3 over 12 superpixels, weights and standard errors drawn fresh:
    features 0..5 by |w| are sure (|w| > z * se at 90%), the rest not (one with se = NaN, one
    with se = inf)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    segments = rng.permutation(N_SEGMENTS)[np.arange(12 * 16).reshape(12, 16) % N_SEGMENTS]
    explanation = ImageExplanation(image, segments)
    features = rng.permutation(N_SEGMENTS)
    magnitude = np.sort(rng.uniform(0.05, 1.0, N_SEGMENTS))[::-1]
    weights = magnitude * rng.choice([-1.0, 1.0], N_SEGMENTS)
    explanation.local_exp = {3: list(zip(features.tolist(), weights.tolist())),
                             5: [(int(features[0]), 0.1)]}
    explanation.intercept = {3: float(rng.normal()), 5: 0.0}
    z = norm.ppf(0.95)
    ratio = np.r_[rng.uniform(0.2, 0.9, 6), rng.uniform(1.1, 4.0, N_SEGMENTS - 6)]
    se = magnitude / z * ratio
    se[-2], se[-1] = np.nan, np.inf
    if stderr:
        explanation.stderr = {3: dict(zip(features.tolist(), se.tolist())), 5: {}}
    if counts:
        explanation.num_samples, explanation.num_evaluated = 500, 480
    return explanation, features, weights, se


def bar_container(ax):
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


@pytest.mark.parametrize("seed", [0, 1])
def test_bars_error_bars_and_fading(seed):
    explanation, features, weights, se = hand_built(seed)
    fig, given = plt.subplots()
    ax = plot.plot_explanation(explanation, 3, given, num_features=N_SEGMENTS)
    assert ax is given and len(fig.axes) == 1
    bars = bar_container(ax)
    assert len(bars) == N_SEGMENTS
    np.testing.assert_allclose([b.get_width() for b in bars], weights)
    # Strongest on top, labelled with its superpixel id.
    centres = [b.get_y() + b.get_height() / 2 for b in bars]
    assert np.all(np.diff(centres) < 0)
    ticks = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
    assert [ticks[c] for c in centres] == [str(f) for f in features]
    # Error bars: +- z * se around each weight, none where se is NaN or inf.
    z = norm.ppf(0.95)
    (lines,) = bars.errorbar.lines[2]
    segs = lines.get_segments()
    for seg, w, s, c in zip(segs, weights, se, centres):
        if not np.isfinite(s):
            assert len(seg) == 0
            continue
        np.testing.assert_allclose(seg[:, 1], [c, c])
        np.testing.assert_allclose(seg[:, 0], [w - z * s, w + z * s])
    # Bars whose interval reaches zero are hatched and light; the sure ones solid.
    assert [b.get_hatch() for b in bars] == [None] * 6 + ["//"] * (N_SEGMENTS - 6)
    assert all(b.get_facecolor()[3] == 1.0 for b in bars[:6])
    assert all(b.get_facecolor()[3] < 0.5 for b in bars[6:])
    green, red = (np.array(render.colour(c)) / 255 for c in ("green", "red"))
    for b, w in zip(bars, weights):
        np.testing.assert_allclose(b.get_facecolor()[:3], green if w > 0 else red)
    assert ax.get_title() == "label 3 (500 rows fitted, 480 images evaluated)"


def test_num_features_confidence_and_new_figure():
    explanation, features, weights, se = hand_built(2)
    before = len(plt.get_fignums())
    ax = plot.plot_explanation(explanation, 3, num_features=4, confidence=0.5)
    assert len(plt.get_fignums()) == before + 1 and ax.figure.axes == [ax]
    bars = bar_container(ax)
    assert len(bars) == 4
    np.testing.assert_allclose([b.get_width() for b in bars], weights[:4])
    z = norm.ppf(0.75)
    (lines,) = bars.errorbar.lines[2]
    half = [np.ptp(seg[:, 0]) / 2 for seg in lines.get_segments()]
    np.testing.assert_allclose(half, z * se[:4])
    # The top |w| are chosen even when local_exp is not sorted.
    explanation.local_exp[3] = explanation.local_exp[3][::-1]
    ax = plot.plot_explanation(explanation, 3, num_features=4)
    np.testing.assert_allclose([b.get_width() for b in bar_container(ax)], weights[:4])


def test_old_explanations_without_stderr_or_counts():
    explanation, _, weights, _ = hand_built(3, stderr=False, counts=False)
    explanation.top_labels = [3, 5]
    ax = plot.plot_explanation(explanation)  # default: the first top label
    bars = bar_container(ax)
    assert len(bars) == 10 and bars.errorbar is None
    assert all(b.get_hatch() is None for b in bars)
    assert ax.get_title() == "label 3"
    # Made before stderr and the counts existed: the attributes are missing altogether.
    for name in ("stderr", "num_samples", "num_evaluated"):
        explanation.__dict__.pop(name, None)
    ax = plot.plot_explanation(explanation, 3)
    assert bar_container(ax).errorbar is None and ax.get_title() == "label 3"
    explanation.num_evaluated = 480
    assert plot.plot_explanation(explanation, 3).get_title() == "label 3 (480 images evaluated)"
    # A label absent from stderr is plotted without intervals.
    explanation, _, _, _ = hand_built(3)
    del explanation.stderr[3]
    assert bar_container(plot.plot_explanation(explanation, 3)).errorbar is None


def test_missing_standard_error_is_unknown():
    explanation, features, _, _ = hand_built(4)
    explanation.stderr[5] = {}  # label 5's one feature has no standard error: hatched, no bar
    bars = bar_container(plot.plot_explanation(explanation, 5))
    assert len(bars) == 1 and bars[0].get_hatch() == "//"
    assert [len(s) for s in bars.errorbar.lines[2][0].get_segments()] == [0]


def test_bad_arguments():
    explanation, features, _, _ = hand_built(5)
    for confidence in (0, 1, 2.0, float("nan")):
        with pytest.raises(ValueError, match=rf"confidence must be .*got {confidence!r}"):
            plot.plot_explanation(explanation, 3, confidence=confidence)
    with pytest.raises(ValueError, match="num_features must be an integer >= 1; got 0"):
        plot.plot_explanation(explanation, 3, num_features=0)
    with pytest.raises(KeyError, match="label 7 was not explained"):
        plot.plot_explanation(explanation, 7)
    explanation.stderr[3][int(features[2])] = -1.0
    with pytest.raises(ValueError, match=f"standard errors must be >= 0.*segment {features[2]}"):
        plot.plot_explanation(explanation, 3)


def test_install_hint_without_matplotlib(monkeypatch):
    explanation, _, _, _ = hand_built(6)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot.plot_explanation(explanation, 3)
