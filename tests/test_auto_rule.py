"""The stopping rule of ``num_samples="auto"`` (``limefast.core.adaptive.decide``), its
projection of the gain of more rows, and the study's replay of it on scored prefixes
(``limefast.benchsuite.study.trajectory``), which must stop where the explainer stops."""

from __future__ import annotations

import numpy as np
import pytest

from limefast import config
from limefast.benchsuite.study import trajectory
from limefast.core import adaptive
from limefast.lime_image import LimeImageExplainer

F = 24
SEGMENTS = np.kron(np.arange(F).reshape(4, 6), np.ones((6, 6), dtype=np.int64))


def _image(seed=0):
    rng = np.random.RandomState(seed)
    colours = rng.randint(60, 250, (F, 3))
    return colours[SEGMENTS].astype(np.uint8)


class Wobbly:
    """Four classes whose logits are linear in the superpixels shown plus a nonlinear part
    that acts as noise to a linear surrogate (deterministic: the same image, the same
    answer)."""

    def __init__(self, image, seed=0, wobble=1.0):
        rng = np.random.RandomState(seed)
        self.image, self.wobble = image, wobble
        self.a = rng.normal(0, 1, (F, 4))
        self.b = rng.normal(0, 1, (F, 4))

    def __call__(self, batch):
        same = (batch == self.image[None]).all(-1)  # (N, H, W)
        on = np.stack([same[:, SEGMENTS == f].mean(1) for f in range(F)], 1)
        z = on @ self.a + self.wobble * np.sin(7 * on @ self.b)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)


def test_projection_starts_at_the_stated_figure_and_rises_towards_one():
    rng = np.random.RandomState(1)
    w = rng.normal(0, 1, F)
    a = rng.normal(0, 0.3, (F, F))
    cov = a @ a.T / F
    k = 5
    stated = adaptive.expected_overlap(w, cov, adaptive.top_set(w, k))
    near = adaptive.projected_overlap(w, cov, 1000, 1001, k)
    assert near == pytest.approx(stated, abs=0.03)
    values = [adaptive.projected_overlap(w, cov, 200, m, k) for m in (300, 400, 800, 10**6)]
    assert all(b >= a - 0.02 for a, b in zip(values, values[1:]))  # MC noise only
    assert values[-1] > 0.97 and values[-1] > stated + 0.05
    # the diagonal form (past AUTO_JOINT_MAX_FEATURES) works the same way
    assert 0 <= adaptive.projected_overlap(w, np.diag(cov), 200, 400, k) <= 1
    assert adaptive.projected_overlap(w, cov, 200, 400, F) == 1.0
    assert np.isnan(adaptive.projected_overlap(w, np.full((F, F), np.nan), 200, 400, k))


def test_horizons_and_the_decision():
    assert adaptive.horizons(200, 1000) == [300, 400, 1000]
    assert adaptive.horizons(700, 1000) == [1000]
    assert adaptive.horizons(1000, 1000) == []
    floor = config.AUTO_GAIN_FLOOR
    small = [{400: 0.001, 1000: 0.004}]
    big = [{400: 0.05, 1000: 0.06}]
    assert adaptive.gain_rate(small, 200) == pytest.approx(0.005)
    assert adaptive.gain_rate(big, 200) == pytest.approx(0.25)

    def decide(stated, gains, n=200, cap=1000, target=0.95, min_gain=0.05):
        return adaptive.decide(stated, gains, n, cap, target, min_gain)

    assert decide([0.96], big) == "settled"
    assert decide([floor + 0.05], small) == "diminishing"
    assert decide([floor + 0.05], big) is None
    assert decide([floor - 0.05], small) is None  # too low to quit
    assert decide([floor + 0.05], small, min_gain=0.0) is None  # gain stop off
    assert decide([0.8, 0.99], small * 2, min_gain=0.0) is None  # the mean counts
    assert decide([], []) is None
    assert decide([float("nan")], [{}]) is None
    # at the cap there is nothing left to gain: the loop stops there as "max_samples"
    assert decide([floor + 0.05], [{}], n=1000) is None
    assert decide([0.96], [{}], n=1000) == "settled"

    def never():
        raise AssertionError("gains projected when the rule did not need them")

    assert decide([0.96], never) == "settled"
    assert decide([floor - 0.05], never) is None
    assert decide([floor + 0.05], never, n=1000) is None
    assert decide([floor + 0.05], lambda: small) == "diminishing"


def test_figures_state_what_expected_overlap_states():
    """The rule's figure is the one the explanation states, to the last bit, for joint and
    diagonal covariances."""
    rng = np.random.RandomState(4)
    for _ in range(5):
        w = rng.normal(0, 1, F)
        a = rng.normal(0, 0.4, (F, F))
        for cov in (a @ a.T / F, np.diag(a @ a.T / F)):
            k = int(rng.randint(1, 8))
            fig = adaptive.Figures(w, cov, k, 300, 1000)
            assert fig.stated == adaptive.expected_overlap(w, cov, adaptive.top_set(w, k))
            assert set(fig.gains()) == {450, 600, 1000}
            assert all(-0.05 <= g <= 1 for g in fig.gains().values())


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_min_gain_must_be_a_finite_non_negative_number(bad):
    image = _image()
    with pytest.raises(ValueError, match="min_gain must be a finite number of at least 0"):
        LimeImageExplainer(random_state=0).explain_instance(
            image, Wobbly(image), num_samples="auto", min_gain=bad,
            segmentation_fn=lambda _: SEGMENTS, progress_bar=False)
    with pytest.raises(ValueError, match="min_gain"):
        LimeImageExplainer(random_state=0).explain_instance(
            image, Wobbly(image), num_samples=300, min_gain=0.05,
            segmentation_fn=lambda _: SEGMENTS, progress_bar=False)
    with pytest.raises(TypeError, match="min_gain"):
        LimeImageExplainer(random_state=0).explain_instance(
            image, Wobbly(image), num_samples="auto", min_gain="0.05",
            segmentation_fn=lambda _: SEGMENTS, progress_bar=False)


@pytest.mark.filterwarnings("ignore::limefast.lime_image.SamplingWarning")
@pytest.mark.parametrize("seed,sampler", [(3, "lime"), (11, "lime"), (5, "paired")])
def test_the_studys_replay_stops_where_the_explainer_stops(seed, sampler):
    """The tuning of the defaults replays the rule on scored prefixes; it is only worth
    anything if the replay and the explainer agree, row for row, on fresh random models, for
    every row design."""
    rng = np.random.RandomState(seed)
    image = _image(seed)
    model = Wobbly(image, seed, wobble=rng.uniform(0.5, 2.0))
    rows = trajectory.capture(image, model, SEGMENTS, seed, top_labels=3, hide_color=0,
                              sampler=sampler)
    reference = {label: {"w": {f: float(v) for f, v in enumerate(rng.normal(size=F))},
                         "flat": False} for label in rows.labels}
    scored = trajectory.score(rows, reference)
    labels = list(scored["labels"])  # the top label first
    checked = set()
    for top in (1, 3):
        for target, gain in ((0.9, 0.0), (0.95, 0.05), (0.97, 0.1)):
            i, reason = trajectory.stop_index(scored, labels[:top], target, gain)
            e = LimeImageExplainer(random_state=seed).explain_instance(
                image, model, top_labels=top, hide_color=0, num_samples="auto",
                target_overlap=target, min_gain=gain, segmentation_fn=lambda _: SEGMENTS,
                progress_bar=False, batch_size=64, sampler=sampler)
            assert (e.num_evaluated, e.stop_reason) == (scored["n"][i], reason)
            assert e.converged == (reason == "settled")
            for label in labels[:top]:
                assert e.expected_overlap[label] == pytest.approx(
                    scored["labels"][label]["stated"][i], abs=1e-9)
            checked.add(reason)
    assert {"settled", "diminishing"} <= checked  # both stops were replayed
