"""Pictures: render_explanation, heatmaps, Grad-CAM overlays, panels and notebook display."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import io
import re

import numpy as np
from conftest import GridClassifier, bundled
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import limefast
from limefast.lime_image import LimeImageExplainer
from limefast.viz import panel, render

GREEN, RED = render.colour("green"), render.colour("red")


def grid_segments(h, w, rows, cols):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy * rows // h) * cols + xx * cols // w


@pytest.fixture(scope="module")
def explanation():
    image = bundled("coffee", 48)
    segments = grid_segments(48, 48, 4, 4)
    return LimeImageExplainer(random_state=3).explain_instance(
        image, GridClassifier(seed=2), top_labels=2, num_samples=150,
        segmentation_fn=lambda _: segments, progress_bar=False)


def test_to_rgb8_conversions():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert render.to_rgb8(grey).shape == (3, 4, 3)
    np.testing.assert_array_equal(render.to_rgb8(grey)[..., 2], grey)
    unit = np.full((2, 2, 3), 0.5)
    assert (render.to_rgb8(unit) == 128).all()
    wide = np.full((2, 2, 3), 300.0)
    assert (render.to_rgb8(wide) == 255).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert render.to_rgb8(rgba).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 5\)"):
        render.to_rgb8(np.zeros((2, 2, 5)))


def test_colours():
    assert render.colour("green") == (0, 200, 0)
    assert render.colour("#0000ff") == (0, 0, 255)
    assert render.colour((1, 2, 3)) == (1, 2, 3)
    with pytest.raises(ValueError, match="unknown colour 'greem'"):
        render.colour("greem")
    with pytest.raises(ValueError, match="RGB triple"):
        render.colour((1, 2))


def test_segment_weights_forms():
    pairs = [(2, 0.5), (0, -1.0)]
    expected = np.array([-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(render.segment_weights(pairs, 3), expected)
    np.testing.assert_array_equal(render.segment_weights(dict(pairs), 3), expected)
    np.testing.assert_array_equal(render.segment_weights(expected, 3), expected)
    with pytest.raises(ValueError, match="outside 0..2"):
        render.segment_weights([(3, 1.0)], 3)
    with pytest.raises(ValueError, match="one value per segment"):
        render.segment_weights(np.zeros(4), 3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.floats(0.0, 1.0),
       st.integers(0, 2**31 - 1))
def test_select_segments_reaches_coverage_with_strongest_first(rows, cols, coverage, seed):
    rng = np.random.RandomState(seed)
    segments = grid_segments(24, 30, rows, cols)
    n = rows * cols
    weights = rng.randn(n)
    chosen = render.select_segments(weights, segments, coverage)
    positive = np.flatnonzero(weights > 0)
    assert set(chosen) <= set(positive)
    assert np.all(np.diff(weights[chosen]) <= 0)  # strongest first
    if chosen.size:  # every unchosen positive segment is weaker than every chosen one
        rest = np.setdiff1d(positive, chosen)
        assert np.all(weights[rest] <= weights[chosen].min())
    area = np.bincount(segments.ravel(), minlength=n)
    covered = area[chosen].sum()
    if coverage == 0:
        assert chosen.size == 0
    elif chosen.size < positive.size:
        assert covered >= coverage * segments.size  # reached...
        assert covered - area[chosen[-1]] < coverage * segments.size  # ...by the last one


def test_render_tints_chosen_segments_only():
    image = np.full((20, 20, 3), 100, np.uint8)
    segments = grid_segments(20, 20, 2, 2)  # four 10x10 squares
    weights = np.array([0.9, 0.1, -0.5, 0.0])
    out = render.render_explanation(image, segments, weights, coverage=0.25, opacity=1.0,
                                    boundaries=False)
    np.testing.assert_array_equal(out[segments == 0], np.tile(GREEN, (100, 1)))
    np.testing.assert_array_equal(out[segments == 2], np.tile(RED, (100, 1)))
    assert (out[segments == 1] == 100).all() and (out[segments == 3] == 100).all()
    # Half opacity blends; positive=None leaves the evidence for untouched.
    half = render.render_explanation(image, segments, weights, positive=None, coverage=0.25,
                                     opacity=0.5, boundaries=False)
    assert (half[segments == 0] == 100).all()
    assert (half[segments == 2, 0] > half[segments == 2, 1]).all()
    # Boundaries: closed outlines of the chosen segments in their colour, nothing else.
    edged = render.render_explanation(image, segments, weights, coverage=0.25, opacity=0.0)
    ring = np.zeros((10, 10), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    np.testing.assert_array_equal((edged[:10, :10] == GREEN).all(-1), ring)
    np.testing.assert_array_equal((edged[10:, :10] == RED).all(-1), ring)
    assert (edged[:10, :10][~ring] == 100).all() and (edged[:, 10:] == 100).all()


def test_render_num_segments_and_pil(explanation):
    label = explanation.top_labels[0]
    pil = explanation.render(label, num_segments=3, as_pil=True)
    assert isinstance(pil, Image.Image) and pil.size == (48, 48)
    array = limefast.render_explanation(explanation.image, explanation.segments,
                                        explanation.local_exp[label], num_segments=3)
    np.testing.assert_array_equal(np.asarray(pil), array)
    with pytest.raises(ValueError, match="opacity"):
        explanation.render(label, opacity=2)


def test_heatmap_is_the_tutorials_weight_map(explanation):
    label = explanation.top_labels[1]
    weights = dict(explanation.local_exp[label])
    tutorial = np.vectorize(weights.get)(explanation.segments)  # as the lime tutorials do
    np.testing.assert_array_equal(explanation.heatmap(label), tutorial)
    assert explanation.heatmap().shape == (48, 48)  # default: the first top label


def test_heatmap_colours():
    segments = grid_segments(10, 10, 1, 4)
    weights = np.array([2.0, -2.0, 0.0, 1.0])
    out = render.heatmap(segments, weights)
    assert (out[segments == 0] == GREEN).all()
    assert (out[segments == 1] == RED).all()
    assert (out[segments == 2] == 255).all()
    half = np.round((np.array([255.0] * 3) + np.array(GREEN)) / 2)
    assert (out[segments == 3] == half).all()
    # A shared scale: weight 1 on scale 4 is a quarter of the way to green.
    quarter = render.heatmap(segments, weights, scale=4.0)[0, -1]
    np.testing.assert_array_equal(quarter, np.round(255 * 0.75 + np.array(GREEN) * 0.25))


def test_cam_overlay():
    image = np.zeros((4, 4, 3), np.uint8)
    cam = np.zeros((4, 4))
    cam[0, 0] = 1.0
    out = render.cam_overlay(image, cam, opacity=1.0)
    assert tuple(out[1, 1]) == (0, 0, 128)  # jet's low end
    assert tuple(out[0, 0]) == (128, 0, 0)  # jet's high end
    with pytest.raises(ValueError, match="cam must have the image's shape"):
        render.cam_overlay(image, np.zeros((3, 3)))


def test_panel_curve_and_png(explanation):
    curve = panel.curve_plot(np.linspace(0, 1, 5), [("a", np.linspace(1, 0, 5), "green"),
                                                     ("b", np.full(5, 0.01), "red")])
    assert curve.shape == (128, 160, 3) and curve.dtype == np.uint8
    picture = panel.panel([("one", explanation.image), ("two", curve)], tile=96, header="h")
    assert picture.height > 96 and picture.width > 2 * 96
    data = explanation._repr_png_()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.width > img.height


def test_unexplained_label(explanation):
    with pytest.raises(KeyError, match="label 99 was not explained"):
        explanation.render(99)


def _uncertainty_case(seed):
    """A random image on four 10x10 squares, the strongest of each sign sure (|w| > z * se) and
    the weaker one not (|w| < z * se, or se unknown), with z = norm.ppf(0.95) for 0.9."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    segments = grid_segments(20, 20, 2, 2)
    z = norm.ppf(0.95)
    strong, weak = rng.uniform(0.6, 1.0, 2), rng.uniform(0.1, 0.5, 2)
    weights = np.array([strong[0], weak[0], -strong[1], -weak[1]])
    stderr = {0: strong[0] / z * rng.uniform(0.3, 0.9), 1: weak[0] / z * rng.uniform(1.1, 3.0),
              2: strong[1] / z * rng.uniform(0.3, 0.9), 3: np.nan}
    return image, segments, weights, stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_fades_uncertain_segments(seed):
    image, segments, weights, stderr = _uncertainty_case(seed)
    out = render.render_explanation(image, segments, weights, num_segments=2, opacity=1.0,
                                    boundaries=False, stderr=stderr)
    # Sure: tinted in full, exactly as without stderr (the strongest of a sign at opacity 1).
    np.testing.assert_array_equal(out[segments == 0], np.tile(GREEN, (100, 1)))
    np.testing.assert_array_equal(out[segments == 2], np.tile(RED, (100, 1)))
    # Unsure: a quarter of the opacity the segment has without stderr.
    for seg, rgb, strength in ((1, GREEN, weights[1] / weights[0]),
                               (3, RED, weights[3] / weights[2])):
        alpha = 1.0 * (0.35 + 0.65 * strength) * 0.25
        expected = np.round(image[segments == seg] * (1 - alpha) + np.array(rgb) * alpha)
        np.testing.assert_array_equal(out[segments == seg], expected.astype(np.uint8))
    plain = render.render_explanation(image, segments, weights, num_segments=2, opacity=1.0,
                                      boundaries=False)
    assert (plain[segments == 1] != out[segments == 1]).any()
    # The same standard errors as pairs or as a dense array draw the same picture.
    dense = np.array([stderr[i] for i in range(4)])
    for form in (dense, list(stderr.items())):
        np.testing.assert_array_equal(render.render_explanation(
            image, segments, weights, num_segments=2, opacity=1.0, boundaries=False,
            stderr=form), out)


def test_render_outlines_only_sure_segments():
    image, segments, weights, stderr = _uncertainty_case(3)
    out = render.render_explanation(image, segments, weights, num_segments=2, opacity=0.0,
                                    stderr=stderr)
    ring = np.zeros((10, 10), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    np.testing.assert_array_equal((out[:10, :10] == GREEN).all(-1), ring)  # segment 0: sure
    np.testing.assert_array_equal((out[10:, :10] == RED).all(-1), ring)  # segment 2: sure
    np.testing.assert_array_equal(out[:10, :10][~ring], image[:10, :10][~ring])
    np.testing.assert_array_equal(out[:, 10:], image[:, 10:])  # segments 1 and 3: no outline
    plain = render.render_explanation(image, segments, weights, num_segments=2, opacity=0.0)
    assert (plain[:10, 10:][ring] == GREEN).all()


def test_render_confidence_sets_the_interval():
    from scipy.stats import norm

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    segments = grid_segments(20, 20, 1, 2)
    weights = np.array([rng.uniform(0.5, 1.0), 0.0])
    # |w| / se between z(0.9) = 1.645 and z(0.99) = 2.576: sure at 90%, not at 99%.
    se = {0: weights[0] / ((norm.ppf(0.95) + norm.ppf(0.995)) / 2)}
    kwargs = dict(num_segments=1, opacity=1.0, boundaries=False, stderr=se)
    sure = render.render_explanation(image, segments, weights, confidence=0.9, **kwargs)
    unsure = render.render_explanation(image, segments, weights, confidence=0.99, **kwargs)
    assert (sure[segments == 0] == GREEN).all()
    expected = np.round(image[segments == 0] * 0.75 + np.array(GREEN) * 0.25)
    np.testing.assert_array_equal(unsure[segments == 0], expected.astype(np.uint8))
    # A segment with no standard error given is not known to be sure: faded.
    missing = render.render_explanation(image, segments, weights, **{**kwargs, "stderr": {}})
    np.testing.assert_array_equal(missing, unsure)


def test_render_without_stderr_is_unchanged():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    segments = grid_segments(24, 30, 3, 3)
    weights = rng.normal(size=9)
    plain = render.render_explanation(image, segments, weights, coverage=0.4)
    # confidence alone changes nothing; standard errors of 0 leave every segment sure.
    np.testing.assert_array_equal(
        render.render_explanation(image, segments, weights, coverage=0.4, confidence=0.5), plain)
    np.testing.assert_array_equal(render.render_explanation(
        image, segments, weights, coverage=0.4, stderr=np.zeros(9)), plain)
    faded = render.render_explanation(image, segments, weights, coverage=0.4,
                                      stderr=np.full(9, np.inf))
    assert (faded != plain).any()


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1, float("nan"), "0.9", True])
def test_render_rejects_bad_confidence(confidence):
    image, segments, weights, stderr = _uncertainty_case(6)
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\).*got "
                       + re.escape(repr(confidence))):
        render.render_explanation(image, segments, weights, stderr=stderr, confidence=confidence)


def test_render_rejects_bad_stderr():
    image, segments, weights, stderr = _uncertainty_case(7)
    with pytest.raises(ValueError, match="standard errors must be >= 0.*for segment 1"):
        render.render_explanation(image, segments, weights, stderr={**stderr, 1: -0.2})
    with pytest.raises(ValueError, match=r"standard errors must have one value per segment \(4\)"):
        render.render_explanation(image, segments, weights, stderr=np.ones(5))
    with pytest.raises(ValueError, match="standard error for segment 9, outside 0..3"):
        render.render_explanation(image, segments, weights, stderr={9: 0.1})


def test_names_split_out_of_render_still_import_from_it():
    """plot_explanation, panel, curve_plot, font and png_bytes moved to viz.plot and viz.panel;
    code that imported them from the old module keeps working."""
    import limefast.render as old
    from limefast.viz import plot

    assert old.plot_explanation is plot.plot_explanation
    assert render.panel is panel.panel and render.curve_plot is panel.curve_plot
    with pytest.raises(AttributeError):
        render.not_a_name  # noqa: B018
