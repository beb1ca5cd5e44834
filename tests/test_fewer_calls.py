"""Fewer model calls: dedupe, batch_size="auto", num_samples="auto", time_budget, stderr."""

from __future__ import annotations

import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import time
import warnings

import lime.lime_image as lime_ref
import numpy as np
from agreement import assert_same_explanation
from conftest import bundled
from naive import naive_robust_stderr
from skimage.segmentation import slic

from limefast import config
from limefast import lime_image as lime_fast
from limefast.core.surrogate import WeightedProblem
from limefast.lime_image import PerformanceHint, SamplingWarning


class MeanColourModel:
    """Softmax of a fixed linear map of per-block mean colours: smooth, deterministic, float64,
    and each row's answer is independent of its batch. Records the size of every call."""

    def __init__(self, n_classes=6, seed=0, scale=3.0, blocks=4):
        self.blocks = blocks
        self.weights = np.random.RandomState(seed).randn(blocks * blocks * 3, n_classes) * scale
        self.calls = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        n, h, w, c = batch.shape
        b = self.blocks
        x = batch[:, :h // b * b, :w // b * b].reshape(n, b, h // b, b, w // b, c)
        x = x.mean(axis=(2, 4)).reshape(n, -1) / 255.0
        z = np.einsum("nk,kc->nc", x, self.weights, optimize=False)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


IMAGE = bundled("astronaut", 48)
SEGMENTS = slic(IMAGE, n_segments=30, compactness=10, start_label=0)
FEW = slic(IMAGE, n_segments=5, compactness=10, start_label=0)  # a handful: many repeats


def explain(model, seed=0, segments=SEGMENTS, **kwargs):
    kwargs.setdefault("num_samples", 300)
    kwargs.setdefault("top_labels", 2)
    explainer = lime_fast.LimeImageExplainer(random_state=seed)
    return explainer.explain_instance(IMAGE, model, segmentation_fn=lambda _: segments,
                                      progress_bar=False, **kwargs)


def lime_explain(model, seed=0, segments=SEGMENTS, **kwargs):
    kwargs.setdefault("num_samples", 300)
    kwargs.setdefault("top_labels", 2)
    return lime_ref.LimeImageExplainer(random_state=seed).explain_instance(
        IMAGE, model, segmentation_fn=lambda _: segments, **kwargs)


# -- exact savings ------------------------------------------------------------------------------

@pytest.mark.parametrize("segments", [FEW, SEGMENTS], ids=["few", "many"])
def test_dedupe_gives_lime_with_each_distinct_row_once(segments):
    ref = lime_explain(MeanColourModel(), segments=segments)
    model = MeanColourModel()
    ours = explain(model, segments=segments, dedupe=True)
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])
    rows = lime_fast.LimeImageExplainer(random_state=0)
    rows.random_state.randint(0, 1000)  # the segmentation seed, drawn first
    data = rows.random_state.randint(0, 2, (300, int(segments.max()) + 1))
    data[0] = 1
    distinct = len({r.tobytes() for r in data})
    # Each distinct row once, and one repeat once more (the determinism check).
    assert sum(model.calls) == ours.num_evaluated <= distinct + 1
    assert ours.num_samples == 300
    if segments is FEW:
        assert ours.num_evaluated < 60  # 2^5 = 32 distinct images at most


def test_dedupe_refuses_a_classifier_that_answers_twice_differently():
    rng = np.random.RandomState(0)
    model = MeanColourModel()

    def noisy(batch):
        out = model(batch) + rng.rand(len(batch), 6) * 0.1
        return out / out.sum(1, keepdims=True)

    with pytest.raises(ValueError, match="dedupe=True needs a deterministic classifier_fn"):
        explain(noisy, segments=FEW, dedupe=True)


def test_auto_batches_give_lime_in_fewer_calls():
    model = MeanColourModel()

    def per_call_overhead(batch):  # the cost of a Python classifier: mostly per call
        time.sleep(0.01)
        return model(batch)

    ref = lime_explain(MeanColourModel())
    ours = explain(per_call_overhead, batch_size="auto")
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])
    assert model.calls[0] == config.AUTO_BATCH_START and sum(model.calls) == 300
    assert len(model.calls) < 300 / 10  # lime makes 30 calls of 10


@pytest.mark.parametrize("cost,expected", [
    (lambda n: 0.01, [16, 32, 64, 128, 256, 256]),  # per-call overhead: grow to the cap
    (lambda n: 0.001 * n, [16, 32, 16, 16]),  # per-image cost: the first doubling does not pay
    (lambda n: 0.01 + 0.001 * n, [16, 32, 64, 128, 64, 64]),  # 128 gains < 10%: back to 64
])
def test_batch_sizer_grows_while_the_time_per_image_falls(monkeypatch, cost, expected):
    from limefast.core.sampling import BatchSizer

    monkeypatch.setattr(config, "AUTO_BATCH_MAX", 256)
    sizer = BatchSizer(IMAGE.nbytes)
    sizes = []
    for _ in expected:
        n = sizer.next(10_000)
        sizes.append(n)
        sizer.record(n, cost(n))
    assert sizes == expected


def test_auto_batches_respect_the_memory_budget(monkeypatch):
    monkeypatch.setattr(config, "AUTO_BATCH_BYTES", 3 * IMAGE.nbytes)
    model = MeanColourModel()
    explain(model, batch_size="auto", num_samples=50)
    assert max(model.calls) <= 3


def test_hint_once_per_explainer_when_small_batches_dominate(monkeypatch):
    monkeypatch.setattr(config, "HINT_MIN_SECONDS", 0.05)
    model = MeanColourModel()

    def slow(batch):
        time.sleep(0.003)
        return model(batch)

    explainer = lime_fast.LimeImageExplainer(random_state=0)
    kwargs = dict(segmentation_fn=lambda _: FEW, num_samples=200, progress_bar=False)
    with pytest.warns(PerformanceHint, match=r"batch_size='auto'.*dedupe=True would evaluate"):
        explainer.explain_instance(IMAGE, slow, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer.explain_instance(IMAGE, slow, **kwargs)  # once per explainer
        lime_fast.LimeImageExplainer(random_state=0).explain_instance(
            IMAGE, slow, batch_size="auto", **kwargs)  # already on
        lime_fast.LimeImageExplainer(random_state=0).explain_instance(
            IMAGE, model, **kwargs)  # fast model: nothing to say


# -- num_samples="auto" -------------------------------------------------------------------------

def test_auto_is_the_fixed_explanation_of_its_row_count_and_batch_independent():
    runs = [explain(MeanColourModel(), seed=3, num_samples="auto", batch_size=b)
            for b in (1, 7, "auto")]
    first = runs[0]
    assert first.stop_reason == "settled" and first.converged
    assert config.AUTO_MIN_SAMPLES <= first.num_samples < config.AUTO_MAX_SAMPLES
    for other in runs[1:]:
        assert other.num_samples == first.num_samples
        assert_same_explanation(first, other, rtol=0)
    # The rounds take their design's rows as prefixes (complement pairs by default): the
    # same as a fixed count of that many rows of that design.
    fixed = explain(MeanColourModel(), seed=3, num_samples=first.num_samples,
                    sampler=config.AUTO_SAMPLER)
    assert_same_explanation(fixed, first)
    assert first.num_evaluated == first.num_samples


def test_auto_with_dedupe_and_explain_batch():
    a = explain(MeanColourModel(), seed=1, num_samples="auto", dedupe=True, segments=FEW)
    b = explain(MeanColourModel(), seed=1, num_samples="auto", segments=FEW)
    assert_same_explanation(b, a)
    assert a.num_evaluated < b.num_evaluated
    explainer = lime_fast.LimeImageExplainer(random_state=2)
    images = [IMAGE, bundled("coffee", 48)]
    segs = [SEGMENTS, slic(images[1], n_segments=30, start_label=0)]
    seg_of = {im.tobytes(): s for im, s in zip(images, segs)}
    kwargs = dict(num_samples="auto", top_labels=1, progress_bar=False,
                  segmentation_fn=lambda im: seg_of[im.tobytes()])
    batch = explainer.explain_batch(images, MeanColourModel(), **kwargs)
    single = lime_fast.LimeImageExplainer(random_state=2)
    for image, explanation in zip(images, batch):
        assert_same_explanation(single.explain_instance(image, MeanColourModel(), **kwargs),
                                explanation)


def test_a_flat_model_stops_after_the_first_round_and_says_why():
    def flat(batch):
        return np.full((len(batch), 3), 1 / 3)

    model = MeanColourModel()

    def saturated(batch):  # float rounding only: a softmax pinned at one class
        out = np.zeros((len(batch), 3))
        out[:, 0] = 1.0 - 1e-12 * model(batch)[:, 0]
        out[:, 1] = 1.0 - out[:, 0]
        return out

    for fn in (flat, saturated):
        with pytest.warns(SamplingWarning, match=r"does not depend on the superpixels.*"
                          r"saturated softmax.*hide colour"):
            e = explain(fn, num_samples="auto", max_samples=2000)
        assert (e.num_samples, e.num_evaluated) == (config.AUTO_MIN_SAMPLES,) * 2
        assert (e.converged, e.stop_reason) == (False, "flat")
        n = int(SEGMENTS.max()) + 1
        assert all(v == pytest.approx(5 / n) for v in e.expected_overlap.values())


class NearTies(MeanColourModel):
    """Class 0's output moves with six superpixels, equally, plus noise of its own: a top 5
    that no number of rows settles (the converged top 5 shares 4 of them, on average 4.2)."""

    def __init__(self, features, segments, noise=0.02):
        super().__init__()
        self.segments, self.features = segments, features
        self.rng = np.random.RandomState(0)
        self.noise = noise

    def __call__(self, batch):
        self.calls.append(len(batch))
        shown = np.stack([(batch[:, self.segments == f] == IMAGE[self.segments == f]).all(-1)
                          .mean(-1) for f in self.features], 1)
        p = 0.2 + 0.1 * shown.sum(1)
        p = p + self.noise * self.rng.randn(len(batch))
        return np.stack([p, 1 - p], 1)


@pytest.mark.parametrize("sampler,seed", [("lime", 5), ("paired", 1)])
def test_near_ties_stop_when_more_rows_stop_paying_and_state_a_low_figure(sampler, seed):
    model = NearTies(range(6), SEGMENTS)
    e = explain(model, seed=seed, num_samples="auto", top_labels=1, batch_size=7,
                sampler=sampler)
    label = e.top_labels[0]
    assert e.num_evaluated == sum(model.calls) <= config.AUTO_MAX_SAMPLES
    assert (e.converged, e.stop_reason) == (False, "diminishing")
    assert e.num_evaluated < config.AUTO_MAX_SAMPLES  # more rows would not have paid
    assert config.AUTO_GAIN_FLOOR <= e.expected_overlap[label] < config.AUTO_TARGET_OVERLAP


def test_auto_never_evaluates_more_than_limes_default_and_at_the_cap_is_lime():
    model = NearTies(range(6), SEGMENTS)
    with pytest.warns(SamplingWarning, match="short of target_overlap=0.99"):
        ours = explain(model, seed=5, num_samples="auto", top_labels=1, batch_size=7,
                       target_overlap=0.99, min_gain=0,  # no stop for small gains
                       sampler="lime")  # lime's rows: at the cap, lime's explanation
    assert config.AUTO_MAX_SAMPLES == 1000
    assert (ours.num_samples, ours.num_evaluated, sum(model.calls)) == (1000, 1000, 1000)
    assert (ours.converged, ours.stop_reason) == (False, "max_samples")
    label = ours.top_labels[0]
    assert ours.expected_overlap[label] < 0.99  # near ties: stated low
    # lime at its default 1000 samples, same seed: the same rows, the same explanation.
    model.rng = np.random.RandomState(0)  # the same noise in the same order
    ref = lime_explain(model, seed=5, num_samples=1000, top_labels=1, batch_size=7)
    assert_same_explanation(ref, ours, score_label=label)
    # max_samples raises the cap, and the rows beyond 1000 are lime's rows of that count
    model.rng = np.random.RandomState(0)
    with pytest.warns(SamplingWarning):
        more = explain(model, seed=5, num_samples="auto", top_labels=1, max_samples=1500,
                       target_overlap=0.99, min_gain=0, sampler="lime")
    assert 1000 < more.num_evaluated <= 1500


def test_every_explanation_states_a_reproducible_expected_overlap():
    runs = [explain(MeanColourModel(scale=1.0), seed=2, num_samples=n, batch_size=b)
            for n, b in ((300, 10), (300, 1), ("auto", 7))]
    for e in runs:
        assert e.top_k == 5 and set(e.expected_overlap) == set(e.top_labels)
        assert all(0 <= v <= 1 for v in e.expected_overlap.values())
    assert runs[0].expected_overlap == runs[1].expected_overlap  # batch-size independent
    auto = runs[2]
    assert all(v >= config.AUTO_TARGET_OVERLAP for v in auto.expected_overlap.values())
    fixed = explain(MeanColourModel(scale=1.0), seed=2, num_samples=auto.num_samples)
    assert fixed.expected_overlap == auto.expected_overlap
    shown = explain(MeanColourModel(scale=1.0), seed=2, num_samples=300, stable_features=3)
    assert shown.top_k == 3
    assert "expected overlap" in auto.overlap_caption(auto.top_labels[0])
    captioned = auto.render(caption=True)
    assert captioned.shape[0] == IMAGE.shape[0] + 18


def test_expected_overlap_of_known_normal_weights():
    from limefast.core.adaptive import expected_overlap

    w = np.array([3.0, 2.0, 1.0, 0.0])
    assert expected_overlap(w, np.zeros((4, 4)), [0, 1]) == 1.0  # no noise: certain
    assert expected_overlap(w, np.eye(4), [0, 1, 2, 3]) == 1.0  # everything shown
    tied = np.array([1.0, 1.0, 0.0])
    assert expected_overlap(tied, np.eye(3) * 1e-4, [0], spread=1.0) == pytest.approx(
        0.5, abs=0.08)  # a tie at the boundary: a coin toss
    wide = expected_overlap(w, np.eye(4), [0, 1], spread=1.0)
    assert 0.5 < wide < expected_overlap(w, np.eye(4) * 0.1, [0, 1], spread=1.0) < 1.0
    assert expected_overlap(w, np.eye(4), [0, 1], spread=2.0) < wide


def test_stable_features_and_bounds():
    few = explain(MeanColourModel(), seed=4, num_samples="auto", stable_features=1)
    many = explain(MeanColourModel(), seed=4, num_samples="auto", stable_features=12)
    assert few.num_samples <= many.num_samples
    capped = explain(MeanColourModel(), seed=4, num_samples="auto", min_samples=250,
                     max_samples=250)
    assert capped.num_samples == 250


# -- a time budget ------------------------------------------------------------------------------

def test_time_budget_returns_what_fits():
    model = MeanColourModel()

    def slow(batch):
        time.sleep(0.002 * len(batch))  # at least 2 ms an image
        return model(batch)

    budget = 0.3
    e = explain(slow, num_samples=2000, time_budget=budget, batch_size=10)
    assert e.stop_reason == "time_budget" and not e.converged
    assert config.BUDGET_FIRST_ROUND <= e.num_evaluated <= budget / 0.002
    assert e.num_samples == e.num_evaluated == sum(model.calls)
    assert set(e.stderr[e.top_labels[0]]) == {f for f, _ in e.local_exp[e.top_labels[0]]}


# -- standard errors ----------------------------------------------------------------------------

def test_stderr_is_the_hc1_sandwich_of_the_weighted_ridge():
    rng = np.random.RandomState(5)
    data = rng.randint(0, 2, (400, 12))
    data[0] = 1
    targets = rng.rand(400, 3) + data[:, :3] * 0.5
    weights = rng.rand(400)
    problem = WeightedProblem(data, targets, weights)
    for label in range(3):
        fit = problem.fit_label(label, 100000, "none")
        coef, se = naive_robust_stderr(data, targets[:, label], weights)
        np.testing.assert_allclose([w for _, w in sorted(fit.local_exp)], coef, rtol=1e-9)
        np.testing.assert_allclose([fit.stderr[f] for f in range(12)], se, rtol=1e-9)


def test_intervals_cover_the_large_sample_weights():
    """Nominal 90% intervals at 300 rows against the weights at 20000 rows, over seeds."""
    model = MeanColourModel(scale=2.0)
    truth = explain(model, seed=99, num_samples=20000, top_labels=1, batch_size=1000)
    label = truth.top_labels[0]
    true_w = dict(truth.local_exp[label])
    hits = []
    for seed in range(12):
        e = explain(model, seed=seed, num_samples=300, top_labels=None, labels=(label,))
        for f, (lo, hi) in e.interval(label, 0.9).items():
            hits.append(lo <= true_w[f] <= hi)
    assert 0.8 <= np.mean(hits) <= 0.98, np.mean(hits)


def test_every_explanation_states_its_uncertainty():
    e = explain(MeanColourModel(), num_samples=200)
    assert (e.num_samples, e.num_evaluated, e.converged, e.stop_reason) == (
        200, 200, True, "num_samples")
    for label in e.top_labels:
        assert set(e.stderr[label]) == {f for f, _ in e.local_exp[label]}
        assert all(s > 0 for s in e.stderr[label].values())
    with pytest.raises(ValueError, match="confidence"):
        e.interval(e.top_labels[0], 1.5)
    faded = e.render(fade_uncertain=True, coverage=1.0)
    plain = e.render(coverage=1.0)
    assert faded.shape == plain.shape and not np.array_equal(faded, plain)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"num_samples": "auto", "max_samples": 100, "min_samples": 200},
     r"max_samples \(100\) must be at least min_samples \(200\)"),
    ({"num_samples": 300, "max_samples": 500}, "bound num_samples='auto'"),
    ({"num_samples": 300, "target_overlap": 0.9}, "bound num_samples='auto'"),
    ({"num_samples": "auto", "max_samples": 100},
     r"max_samples \(100\) must be at least the first round of num_samples='auto', 150"),
    ({"num_samples": "auto", "target_overlap": 1.0}, r"target_overlap must be between 0 and 1"),
    ({"num_samples": "auto", "target_overlap": 0}, r"target_overlap must be between 0 and 1"),
    ({"num_samples": "auto", "target_overlap": -0.5}, r"target_overlap must be between 0 and 1"),
    ({"num_samples": "auto", "target_overlap": "high"}, r"target_overlap must be a number"),
    ({"time_budget": 0}, "time_budget must be a positive number"),
    ({"time_budget": -1.0}, "time_budget must be a positive number"),
    ({"time_budget": float("nan")}, "time_budget must be a positive number"),
    ({"batch_size": "big"}, "batch_size must be an integer >= 1 or 'auto'"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1 or 'auto'"),
    ({"num_samples": "many"}, "num_samples must be an integer >= 1 or 'auto'"),
    ({"num_samples": "auto", "min_samples": 0}, "min_samples must be an integer >= 1"),
])
def test_bad_arguments_say_what_they_take(kwargs, match):
    with pytest.raises(ValueError, match=match):
        explain(MeanColourModel(), **kwargs)


def test_dedupe_takes_a_bool():
    with pytest.raises(TypeError, match="dedupe must be True or False"):
        explain(MeanColourModel(), dedupe="yes")


def test_many_superpixels_state_an_overlap_from_the_standard_errors(monkeypatch):
    joint = explain(MeanColourModel(scale=1.0), seed=2, num_samples=300)
    monkeypatch.setattr(config, "AUTO_JOINT_MAX_FEATURES", 10)
    diagonal = explain(MeanColourModel(scale=1.0), seed=2, num_samples=300)
    for label in joint.top_labels:
        assert 0 <= diagonal.expected_overlap[label] <= 1
        assert diagonal.expected_overlap[label] == pytest.approx(
            joint.expected_overlap[label], abs=0.15)
