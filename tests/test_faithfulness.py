"""Deletion and insertion curves: against a naive loop, and monotone where a model makes them."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import numpy as np
from agreement import forward_rtol, logit_scale
from conftest import GridClassifier, bundled
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_perturb

from limefast import faithfulness
from limefast.core.instance import fudged_image
from limefast.lime_image import ImageExplanation, LimeImageExplainer
from limefast.metrics import area, segment_scores

VALUE = 200  # the constant image the additive model reads


def random_segments(rng, h, w, n):
    """Labels 0..n-1, all present: each pixel takes its nearest of n distinct random seeds."""
    seeds = rng.choice(h * w, n, replace=False)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy[..., None] - seeds // w) ** 2 + (xx[..., None] - seeds % w) ** 2
    return d.argmin(-1)


class AdditiveModel:
    """p = 0.5 + sum_s c_s * (share of segment s still at VALUE): exactly linear in the rows."""

    def __init__(self, segments, coefficients):
        self.segments, self.c = segments, np.asarray(coefficients, dtype=np.float64)
        self.counts = np.bincount(segments.ravel())

    def __call__(self, batch):
        on = batch[..., 0].reshape(len(batch), -1) / VALUE
        presence = np.stack([np.bincount(self.segments.ravel(), row) for row in on]) / self.counts
        p = 0.5 + presence @ self.c
        return np.stack([p, 1 - p], axis=1)


def stub_explanation(image, segments, weights, label=0):
    """An ImageExplanation whose weights for ``label`` are ``weights``."""
    exp = ImageExplanation(image, segments)
    pairs = sorted(enumerate(map(float, weights)), key=lambda fw: -abs(fw[1]))
    exp.local_exp[label] = pairs
    exp.top_labels = [label]
    return exp


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 14), st.sampled_from([None, 0, 77]),
       st.integers(0, 2**31 - 1))
def test_curves_match_a_naive_loop(n, steps, hide_color, seed):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (18, 20, 3)).astype(np.uint8)
    segments = random_segments(rng, 18, 20, n)
    weights = rng.randn(n)
    model = GridClassifier(n_classes=4, grid=6, seed=seed % 100)
    exp = stub_explanation(image, segments, weights, label=2)
    result = faithfulness(exp, model, steps, hide_color=hide_color, batch_size=3)

    order = np.argsort(-weights, kind="stable")
    assert list(result.order) == list(order)
    k = min(steps, n)
    counts = np.round(np.arange(k + 1) * n / k).astype(int)
    fudged = fudged_image(image, segments, n, hide_color)
    deletion_rows = np.ones((k + 1, n), int)
    insertion_rows = np.zeros((k + 1, n), int)
    for i, count in enumerate(counts):
        deletion_rows[i, order[:count]] = 0
        insertion_rows[i, order[:count]] = 1
    for rows, curve in ((deletion_rows, result.deletion), (insertion_rows, result.insertion)):
        expected = model(naive_perturb(image, fudged, segments, rows))[:, 2]
        np.testing.assert_allclose(curve, expected, rtol=1e-12)
    np.testing.assert_allclose(result.fractions, counts / n)
    assert result.deletion_auc == pytest.approx(area(result.fractions, result.deletion))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31 - 1))
def test_deletion_is_monotone_where_it_must_be(n, seed):
    # With an additive model and its own coefficients as weights, deleting the segments of
    # positive weight (strongest first) can only lower p, and deleting the negative ones after
    # them can only raise it; insertion mirrors this.
    rng = np.random.RandomState(seed)
    segments = random_segments(rng, 16, 16, n)
    c = rng.uniform(-1, 1, n) * 0.5 / n
    image = np.full((16, 16, 3), VALUE, np.uint8)
    model = AdditiveModel(segments, c)
    result = faithfulness(stub_explanation(image, segments, c), model, hide_color=0)
    positives = int(np.sum(c > 0))
    d, ins = result.deletion, result.insertion
    tol = 1e-12
    assert np.all(np.diff(d[:positives + 1]) <= tol)
    assert np.all(np.diff(d[positives:]) >= -tol)
    assert np.all(np.diff(ins[:positives + 1]) >= -tol)
    assert np.all(np.diff(ins[positives:]) <= tol)
    full, hidden = 0.5 + c.sum(), 0.5
    assert d[0] == pytest.approx(full) and ins[-1] == pytest.approx(full)
    assert d[-1] == pytest.approx(hidden) and ins[0] == pytest.approx(hidden)
    # The explanation's own order is the most faithful one: no other deletes faster.
    worst = faithfulness(stub_explanation(image, segments, c), model, hide_color=0, weights=-c)
    assert result.deletion_auc <= worst.deletion_auc + tol
    assert result.insertion_auc >= worst.insertion_auc - tol


def test_steps_and_batches():
    rng = np.random.RandomState(1)
    image = bundled("astronaut", 32)
    segments = random_segments(rng, 32, 32, 9)
    exp = stub_explanation(image, segments, rng.randn(9), label=1)
    model = GridClassifier(n_classes=3, seed=4)
    every = faithfulness(exp, model)
    assert every.fractions.shape == (10,) and every.fractions[0] == 0 and every.fractions[-1] == 1
    np.testing.assert_array_equal(faithfulness(exp, model, steps=50).deletion, every.deletion)
    coarse = faithfulness(exp, model, steps=2)
    np.testing.assert_allclose(coarse.fractions, [0, 4 / 9, 1])  # round(4.5) = 4
    for batch_size in (1, 4, 64):
        np.testing.assert_array_equal(faithfulness(exp, model, batch_size=batch_size).insertion,
                                      every.insertion)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        faithfulness(exp, model, steps=0)
    with pytest.raises(KeyError, match="label 0 was not explained"):
        faithfulness(exp, model, label=0)


def test_segment_scores_rank_a_pixel_map():
    segments = np.array([[0, 0, 1], [2, 2, 1]])
    saliency = np.array([[1.0, 3.0, 0.5], [0.0, 4.0, 1.5]])
    np.testing.assert_allclose(segment_scores(saliency, segments), [2.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="saliency must have the segments' shape"):
        segment_scores(saliency[:1], segments)


def test_a_real_explanation_orders_the_additive_model():
    rng = np.random.RandomState(5)
    segments = random_segments(rng, 24, 24, 8)
    c = np.array([0.12, -0.05, 0.08, 0.02, -0.1, 0.06, 0.0, -0.03])
    image = np.full((24, 24, 3), VALUE, np.uint8)
    model = AdditiveModel(segments, c)
    exp = LimeImageExplainer(random_state=0).explain_instance(
        image, model, labels=(0,), top_labels=None, hide_color=0, num_samples=300,
        segmentation_fn=lambda _: segments, progress_bar=False)
    lime = faithfulness(exp, model, hide_color=0)
    best = faithfulness(exp, model, hide_color=0, weights=c)
    assert list(lime.order) == list(best.order)
    np.testing.assert_allclose(lime.deletion, best.deletion)


def test_torch_classifier_runs_the_curves_on_its_executor():
    torch = pytest.importorskip("torch")
    from limefast import TorchClassifier

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 3))
    classifier = TorchClassifier(module, device="cpu")
    rng = np.random.RandomState(2)
    image = bundled("coffee", 24)
    segments = random_segments(rng, 24, 24, 6)
    exp = stub_explanation(image, segments, rng.randn(6), label=1)

    def plain(batch):  # the same model through the NumPy __call__, on the CPU executor
        return np.asarray(classifier(np.ascontiguousarray(batch)))

    on_device = faithfulness(exp, classifier, steps=3)
    on_host = faithfulness(exp, plain, steps=3)
    # The curves are probabilities of a float32 model run in other batches: within the
    # forward's relative error of the probability scale (tests/agreement.py).
    atol = forward_rtol(module, logits=logit_scale(classifier, image[None]))
    np.testing.assert_allclose(on_device.deletion, on_host.deletion, rtol=0, atol=atol)
    np.testing.assert_allclose(on_device.insertion, on_host.insertion, rtol=0, atol=atol)
