"""limefast.lime_image against the installed reference, lime 0.2.0.1."""

from __future__ import annotations

import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import lime.lime_image as lime_ref
import numpy as np
from conftest import GridClassifier, bundled, quickshift_segments
from sklearn.linear_model import Lasso, Ridge

import limefast
from limefast import config
from limefast import lime_image as lime_fast

RTOL = 1e-9


def _weights(exp):
    return np.array([w for _, w in exp])


def assert_same(ref, ours, score_label=None):
    """Top labels, features and weights, intercepts and (for one label) score/local_pred."""
    assert getattr(ref, "top_labels", None) == getattr(ours, "top_labels", None)
    assert set(ref.local_exp) == set(ours.local_exp)
    for label in ref.local_exp:
        assert [f for f, _ in ref.local_exp[label]] == [f for f, _ in ours.local_exp[label]]
        np.testing.assert_allclose(_weights(ours.local_exp[label]), _weights(ref.local_exp[label]),
                                   rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(ours.intercept[label], ref.intercept[label], rtol=RTOL)
    if score_label is not None:
        np.testing.assert_allclose(ours.score[score_label], ref.score, rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(ours.local_pred[score_label], ref.local_pred, rtol=RTOL)
        assert ours.local_pred[score_label].shape == (1,)


def explain_both(image, classifier, seed=0, explainer_kwargs=None, **kwargs):
    explainer_kwargs = explainer_kwargs or {}
    ref = lime_ref.LimeImageExplainer(random_state=seed, **explainer_kwargs)
    ours = lime_fast.LimeImageExplainer(random_state=seed, **explainer_kwargs)
    a = ref.explain_instance(image, classifier, **kwargs)
    b = ours.explain_instance(image, classifier, progress_bar=False, **kwargs)
    return a, b, ref, ours


def _segmentation(image):
    segments = quickshift_segments(image)
    return lambda _image: segments


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "camera"])
@pytest.mark.parametrize("method,num_features", [
    ("auto", 100000), ("auto", 5), ("none", 10), ("highest_weights", 8),
    ("forward_selection", 3), ("lasso_path", 6),
])
def test_matches_lime_on_bundled_images(name, method, num_features):
    image = bundled(name, 64)
    seed = sum(map(ord, name)) % 97
    a, b, _, _ = explain_both(
        image, GridClassifier(seed=seed), seed=seed, num_samples=150, top_labels=3,
        num_features=num_features, segmentation_fn=_segmentation(image),
        explainer_kwargs={"feature_selection": method},
    )
    assert_same(a, b, score_label=a.top_labels[0])


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
@pytest.mark.parametrize("hide_color", [None, 0, (255, 0, 0), 128.7])
def test_hide_color_and_seeds(seed, hide_color):
    image = bundled("chelsea", 48)
    a, b, _, _ = explain_both(image, GridClassifier(seed=seed), seed=seed, num_samples=120,
                              hide_color=hide_color, segmentation_fn=_segmentation(image))
    assert_same(a, b, score_label=a.top_labels[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_images(dtype):
    image = (bundled("coffee", 48) / 255.0).astype(dtype)
    a, b, _, _ = explain_both(image, GridClassifier(seed=3), seed=3, num_samples=100,
                              segmentation_fn=_segmentation(image))
    assert_same(a, b, score_label=a.top_labels[0])


def test_grayscale_image_goes_through_gray2rgb():
    image = bundled("camera", 48)
    a, b, _, _ = explain_both(image, GridClassifier(seed=5), seed=5, num_samples=100,
                              segmentation_fn=_segmentation(image))
    assert b.image.shape == (48, 48, 3)
    assert_same(a, b, score_label=a.top_labels[0])


@pytest.mark.parametrize("batch_size", [1, 7, 10, 13, 1000])
def test_odd_batch_sizes(batch_size):
    image = bundled("rocket", 40)
    a, b, _, _ = explain_both(image, GridClassifier(seed=2), seed=2, num_samples=91,
                              batch_size=batch_size, segmentation_fn=_segmentation(image))
    assert_same(a, b, score_label=a.top_labels[0])


def test_explicit_labels_and_per_label_scores():
    image = bundled("astronaut", 48)
    classifier = GridClassifier(seed=4)
    ours = lime_fast.LimeImageExplainer(random_state=11).explain_instance(
        image, classifier, labels=(2, 7, 0), top_labels=None, num_samples=120,
        segmentation_fn=_segmentation(image), progress_bar=False)
    assert not hasattr(ours, "top_labels")
    for label in (2, 7, 0):
        # lime 0.2.0.1 keeps one score: explain each label alone to read it.
        ref = lime_ref.LimeImageExplainer(random_state=11).explain_instance(
            image, classifier, labels=(label,), top_labels=None, num_samples=120,
            segmentation_fn=_segmentation(image))
        single = type(ours)(ours.image, ours.segments)
        single.local_exp = {label: ours.local_exp[label]}
        single.intercept = {label: ours.intercept[label]}
        single.score, single.local_pred = ours.score, ours.local_pred
        assert_same(ref, single, score_label=label)


def test_custom_kernel_width_metric_and_regressors():
    image = bundled("coffee", 48)
    seg = _segmentation(image)
    for kwargs, exp_kwargs in [
        ({"distance_metric": "euclidean"}, {"kernel_width": 3.0}),
        ({}, {"kernel": lambda d, kernel_width: np.exp(-d / kernel_width), "kernel_width": 0.5}),
        ({"model_regressor": Ridge(alpha=0.3)}, {}),
        ({"model_regressor": Lasso(alpha=1e-4)}, {"feature_selection": "none"}),
    ]:
        a, b, _, _ = explain_both(image, GridClassifier(seed=8), seed=8, num_samples=100,
                                  segmentation_fn=seg, explainer_kwargs=exp_kwargs, **kwargs)
        assert_same(a, b, score_label=a.top_labels[0])


def test_random_state_none_uses_numpy_global_state():
    image = bundled("chelsea", 40)
    seg = _segmentation(image)
    np.random.seed(42)
    a = lime_ref.LimeImageExplainer().explain_instance(image, GridClassifier(), num_samples=80,
                                                       segmentation_fn=seg)
    after_ref = np.random.random_sample()
    np.random.seed(42)
    b = lime_fast.LimeImageExplainer().explain_instance(image, GridClassifier(), num_samples=80,
                                                        segmentation_fn=seg, progress_bar=False)
    after_ours = np.random.random_sample()
    assert_same(a, b, score_label=a.top_labels[0])
    assert after_ref == after_ours


def test_random_state_object_is_shared_and_advanced_like_lime():
    image = bundled("rocket", 40)
    seg = _segmentation(image)
    rs_ref, rs_ours = np.random.RandomState(9), np.random.RandomState(9)
    ref = lime_ref.LimeImageExplainer(random_state=rs_ref)
    ours = lime_fast.LimeImageExplainer(random_state=rs_ours)
    for _ in range(2):  # the second call sees the state the first left
        a = ref.explain_instance(image, GridClassifier(), num_samples=60, segmentation_fn=seg)
        b = ours.explain_instance(image, GridClassifier(), num_samples=60, segmentation_fn=seg,
                                  progress_bar=False)
        assert_same(a, b, score_label=a.top_labels[0])
    assert rs_ref.randint(1 << 30) == rs_ours.randint(1 << 30)


def test_default_segmentation_matches_lime():
    image = bundled("astronaut", 64)
    a, b, _, _ = explain_both(image, GridClassifier(seed=1), seed=1, num_samples=100)
    np.testing.assert_array_equal(a.segments, b.segments)
    assert_same(a, b, score_label=a.top_labels[0])


@pytest.mark.parametrize("kwargs", [
    {}, {"positive_only": False}, {"negative_only": True, "positive_only": False},
    {"hide_rest": True}, {"positive_only": False, "hide_rest": True, "num_features": 10},
    {"positive_only": False, "min_weight": 0.01}, {"min_weight": 0.02, "num_features": 3},
])
def test_get_image_and_mask_matches_lime(kwargs):
    image = bundled("astronaut", 48)
    a, b, _, _ = explain_both(image, GridClassifier(seed=6), seed=6, num_samples=100,
                              segmentation_fn=_segmentation(image))
    for label in a.top_labels:
        ta, ma = a.get_image_and_mask(label, **kwargs)
        tb, mb = b.get_image_and_mask(label, **kwargs)
        assert ta.dtype == tb.dtype and ma.dtype == mb.dtype
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ma, mb)


def test_get_image_and_mask_errors():
    image = bundled("astronaut", 32)
    b = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
        image, GridClassifier(), num_samples=30, progress_bar=False,
        segmentation_fn=_segmentation(image))
    with pytest.raises(KeyError):
        b.get_image_and_mask(12345)
    with pytest.raises(ValueError, match="cannot be true at the same time"):
        b.get_image_and_mask(b.top_labels[0], positive_only=True, negative_only=True)


def test_same_result_for_every_batch_and_chunk_size(monkeypatch):
    image = bundled("coffee", 40)
    seg = _segmentation(image)
    results = []
    for batch_size, chunk_bytes in [(10, 8 << 20), (1, 1), (3, 40 * 40 * 3 * 7), (64, 1)]:
        monkeypatch.setattr(config, "CHUNK_BYTES", chunk_bytes)
        e = lime_fast.LimeImageExplainer(random_state=3).explain_instance(
            image, GridClassifier(), num_samples=77, batch_size=batch_size, segmentation_fn=seg,
            progress_bar=False)
        results.append(e)
    for e in results[1:]:
        assert e.top_labels == results[0].top_labels
        for label in e.local_exp:
            assert e.local_exp[label] == results[0].local_exp[label]
            assert e.intercept[label] == results[0].intercept[label]


def test_classifier_output_is_copied():
    image = bundled("chelsea", 32)
    seg = _segmentation(image)
    inner = GridClassifier()

    class Reusing:
        out = None

        def __call__(self, batch):
            result = inner(batch)
            if self.out is None or self.out.shape != result.shape:
                self.out = np.empty_like(result)
            self.out[...] = result
            return self.out

    kwargs = dict(num_samples=50, segmentation_fn=seg, progress_bar=False)
    a = lime_fast.LimeImageExplainer(random_state=0).explain_instance(image, inner, **kwargs)
    b = lime_fast.LimeImageExplainer(random_state=0).explain_instance(image, Reusing(), **kwargs)
    assert a.local_exp == b.local_exp


def test_segments_not_starting_at_zero_are_relabelled_with_a_warning():
    image = bundled("astronaut", 40)
    seg0 = quickshift_segments(image)
    seg1 = seg0 * 3 + 5  # SLIC-like labels that are not 0..n-1
    kwargs = dict(num_samples=60, progress_bar=False)
    a = lime_fast.LimeImageExplainer(random_state=2).explain_instance(
        image, GridClassifier(), segmentation_fn=lambda im: seg0, **kwargs)
    with pytest.warns(limefast.core.checks.RelabelWarning, match="relabelled"):
        b = lime_fast.LimeImageExplainer(random_state=2).explain_instance(
            image, GridClassifier(), segmentation_fn=lambda im: seg1, **kwargs)
    np.testing.assert_array_equal(a.segments, b.segments)
    assert a.local_exp == b.local_exp


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_any_channel_count(channels):
    rng = np.random.RandomState(channels)
    image = rng.randint(0, 256, (32, 32, channels)).astype(np.uint8)
    segments = (np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8
    seen = []

    def classifier(batch):
        seen.append(batch.copy())
        return GridClassifier(channels=channels)(batch)

    e = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
        image, classifier, num_samples=20, segmentation_fn=lambda im: segments,
        progress_bar=False)
    assert len(e.local_exp) == 5
    assert seen[0].shape == (10, 32, 32, channels)
    np.testing.assert_array_equal(seen[0][0], image)  # row 0 is the image itself


def test_top_level_names_are_the_same_class():
    assert limefast.LimeImageExplainer is lime_fast.LimeImageExplainer
    assert limefast.ImageExplanation is lime_fast.ImageExplanation


def test_explain_batch_equals_explain_instance_in_turn():
    images = [bundled("astronaut", 40), bundled("coffee", 40), bundled("chelsea", 32),
              bundled("rocket", 40)]
    segs = [_segmentation(im) for im in images]
    calls = []

    def classifier(batch):
        calls.append(len(batch))
        return GridClassifier()(batch)

    def segmentation(image):
        return next(s(image) for im, s in zip(images, segs) if im.shape == image.shape
                    and np.array_equal(im, image))

    kwargs = dict(num_samples=15, batch_size=10, segmentation_fn=segmentation, progress_bar=False)
    batch = lime_fast.LimeImageExplainer(random_state=5).explain_batch(images, classifier, **kwargs)
    # astronaut and coffee (40x40) share batches: 30 rows in 3 calls; chelsea alone: 2 calls;
    # rocket (40x40 again, not consecutive): 2 calls.
    assert calls == [10, 10, 10, 10, 5, 10, 5]
    single = lime_fast.LimeImageExplainer(random_state=5)
    for image, explanation in zip(images, batch):
        expected = single.explain_instance(image, GridClassifier(), **kwargs)
        assert expected.top_labels == explanation.top_labels
        assert expected.local_exp == explanation.local_exp
        assert expected.score == explanation.score


def test_explain_batch_rejects_a_single_array():
    with pytest.raises(ValueError, match="sequence of images"):
        lime_fast.LimeImageExplainer().explain_batch(bundled("astronaut", 32), GridClassifier())
    assert lime_fast.LimeImageExplainer().explain_batch([], GridClassifier()) == []


def test_rows_are_drawn_as_lime_draws_them_in_any_block_size(monkeypatch):
    from limefast.core.sampling import draw_rows

    expected = np.random.RandomState(4).randint(0, 2, 37 * 11).reshape(37, 11)
    expected[0] = 1
    for block in (1, 5, 11, 1 << 20):
        monkeypatch.setattr(config, "ROW_DRAW_ELEMENTS", block)
        rs = np.random.RandomState(4)
        rows = draw_rows(rs, 37, 11)
        assert rows.dtype == np.int8
        np.testing.assert_array_equal(rows, expected)
    # the generator is left where one big draw leaves it
    a, b = np.random.RandomState(4), np.random.RandomState(4)
    monkeypatch.setattr(config, "ROW_DRAW_ELEMENTS", 3)
    draw_rows(a, 37, 11)
    b.randint(0, 2, 37 * 11)
    assert a.randint(1 << 30) == b.randint(1 << 30)


def test_surrogate_row_blocks_do_not_change_the_answer(monkeypatch):
    image = bundled("chelsea", 40)
    seg = _segmentation(image)
    kwargs = dict(num_samples=200, segmentation_fn=seg, progress_bar=False)
    whole = lime_fast.LimeImageExplainer(random_state=1).explain_instance(
        image, GridClassifier(), **kwargs)
    monkeypatch.setattr(config, "ROW_DRAW_ELEMENTS", 50)  # blocks of a couple of rows
    blocks = lime_fast.LimeImageExplainer(random_state=1).explain_instance(
        image, GridClassifier(), **kwargs)
    for label in whole.local_exp:
        assert [f for f, _ in whole.local_exp[label]] == [f for f, _ in blocks.local_exp[label]]
        np.testing.assert_allclose(_weights(blocks.local_exp[label]),
                                   _weights(whole.local_exp[label]), rtol=1e-10, atol=1e-14)
