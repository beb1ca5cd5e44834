"""Row designs (``sampler=``): lime's independent rows and complement pairs. Paired rows keep
lime's estimand (the explanation more rows converge to), state honest errors (cluster-robust
by pair), and run through every path the explainer has: rounds, ``dedupe``, ``time_budget``,
``explain_batch``."""

from __future__ import annotations

import numpy as np
import pytest
from agreement import assert_same_explanation
from conftest import bundled
from naive import naive_robust_stderr
from skimage.segmentation import slic

from limefast import config
from limefast.core import sampling
from limefast.core.surrogate import WeightedProblem
from limefast.lime_image import LimeImageExplainer

IMAGE = bundled("astronaut", 40)
SEGMENTS = slic(IMAGE, n_segments=24, compactness=10, start_label=0)
F = int(SEGMENTS.max()) + 1


class Interacting:
    """A float64 model whose logits have main effects, pairwise interactions and a third-order
    term in the superpixels shown (fresh random coefficients per seed): what a linear
    surrogate sees as noise, some of which pairs cancel and some not."""

    def __init__(self, seed, image=IMAGE, segments=SEGMENTS, classes=3, softmax=True):
        rng = np.random.RandomState(seed)
        f = int(segments.max()) + 1
        self.image, self.softmax = image, softmax
        onehot = np.eye(f)[segments.ravel()]
        self.pool = onehot / onehot.sum(0)  # (H*W, F): a segment's mean
        self.main = rng.normal(0, 1, (f, classes))
        self.pair = rng.normal(0, 1.5, (f, f, classes)) / np.sqrt(f)
        self.third = rng.normal(0, 1, (f, classes))
        self.calls = 0

    def on(self, batch):
        same = (batch == self.image[None]).all(-1)
        return same.reshape(len(batch), -1) @ self.pool

    def __call__(self, batch):
        self.calls += len(batch)
        x = 2 * self.on(batch) - 1  # +-1 coding: a complement flips every sign
        z = x @ self.main + np.einsum("ni,ijc,nj->nc", x, self.pair, x) \
            + (x[:, :3].prod(1))[:, None] * self.third[:3].sum(0)
        if not self.softmax:
            return z
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)


def explain(model, seed=0, **kwargs):
    kwargs.setdefault("top_labels", 1)
    return LimeImageExplainer(random_state=seed).explain_instance(
        IMAGE, model, segmentation_fn=lambda _: SEGMENTS, progress_bar=False, **kwargs)


def test_paired_rows_are_complements_of_lime_draws():
    a = np.random.RandomState(3)
    rows = sampling.draw_rows(a, 9, 7, "paired")  # odd: rounded up to 10
    assert rows.shape == (10, 7) and rows.dtype == np.int8
    assert (rows[0] == 1).all() and (rows[1] == 0).all()
    np.testing.assert_array_equal(rows[0::2] + rows[1::2], 1)
    # the pairs' first rows are the rows lime would draw for half the count, and the random
    # state advances by exactly those draws
    b = np.random.RandomState(3)
    np.testing.assert_array_equal(rows[0::2], sampling.draw_rows(b, 5, 7, "lime"))
    assert a.randint(0, 1000) == b.randint(0, 1000)
    # lime's design is lime's draw
    c, d = np.random.RandomState(1), np.random.RandomState(1)
    lime = d.randint(0, 2, 9 * 7).reshape(9, 7)
    lime[0] = 1
    np.testing.assert_array_equal(sampling.draw_rows(c, 9, 7, "lime"), lime)


def test_an_odd_count_is_rounded_up_and_recorded():
    e = explain(Interacting(0), num_samples=101, sampler="paired")
    assert e.num_samples == e.num_evaluated == 102
    assert explain(Interacting(0), num_samples=101).num_samples == 101  # lime's rows


def test_an_unknown_sampler_lists_the_designs():
    with pytest.raises(ValueError, match="'lime', 'paired'.*got 'sobol'"):
        explain(Interacting(0), num_samples=50, sampler="sobol")
    with pytest.raises(ValueError, match="sampler must be one of"):
        explain(Interacting(0), num_samples="auto", sampler=2)


def test_cluster_robust_stderr_matches_the_textbook_formula():
    rng = np.random.RandomState(5)
    half = rng.randint(0, 2, (150, 10))
    data = np.empty((300, 10), dtype=np.int8)
    data[0::2], data[1::2] = half, 1 - half
    data[0], data[1] = 1, 0
    targets = rng.rand(300, 2) + data[:, :2] * 0.5 + 0.3 * data[:, 2:3] * data[:, 3:4]
    weights = rng.rand(300)
    problem = WeightedProblem(data, targets, weights, unit=2)
    for label in range(2):
        fit = problem.fit_label(label, 100000, "none")
        coef, se = naive_robust_stderr(data, targets[:, label], weights,
                                       clusters=np.arange(300) // 2)
        np.testing.assert_allclose([w for _, w in sorted(fit.local_exp)], coef, rtol=1e-9)
        np.testing.assert_allclose([fit.stderr[f] for f in range(10)], se, rtol=1e-9)


@pytest.mark.parametrize("seed", [11, 12])
def test_paired_rows_converge_to_limes_explanation(seed):
    """At 64000 rows, on a fresh random model, the paired design's weights and lime's agree
    within their stated errors: the same estimand."""
    model = Interacting(seed)
    kw = dict(num_samples=64000, batch_size=4000, top_labels=None, labels=(0, 1))
    lime = explain(model, seed=seed, sampler="lime", **kw)
    paired = explain(model, seed=seed + 100, sampler="paired", **kw)
    for label in (0, 1):
        a, b = dict(lime.local_exp[label]), dict(paired.local_exp[label])
        se = np.array([np.hypot(lime.stderr[label][f], paired.stderr[label][f]) for f in a])
        z = np.array([a[f] - b[f] for f in a]) / se
        assert np.abs(z).max() < 4.5, z  # F normal z's: > 4.5 has odds ~1e-4
        assert np.sqrt(np.mean(z ** 2)) < 1.6, z


def test_paired_stderr_is_calibrated_where_pairs_matter():
    """Over seeds at 300 rows: the spread of the paired weights around the 64000-row weights
    matches the standard errors they state (a sandwich that ignored the pairs would be off),
    and nominal 90% intervals cover about 90%."""
    model = Interacting(7)
    truth = explain(model, seed=999, num_samples=64000, batch_size=4000, sampler="paired",
                    top_labels=None, labels=(0,))
    true_w = dict(truth.local_exp[0])
    errors, stated, hits = [], [], []
    for seed in range(24):
        e = explain(model, seed=seed, num_samples=300, sampler="paired", top_labels=None,
                    labels=(0,))
        w = dict(e.local_exp[0])
        errors += [w[f] - true_w[f] for f in w]
        stated += [e.stderr[0][f] for f in w]
        hits += [lo <= true_w[f] <= hi for f, (lo, hi) in e.interval(0, 0.9).items()]
    ratio = np.sqrt(np.mean(np.square(errors))) / np.sqrt(np.mean(np.square(stated)))
    assert 0.8 < ratio < 1.25, ratio
    assert 0.84 <= np.mean(hits) <= 0.97, np.mean(hits)


def test_pairs_cut_the_noise_of_even_interactions():
    """A model with main effects and pairwise interactions only (even under complement in
    +-1 coding): at equal rows the paired weights are closer to the converged ones."""
    model = Interacting(3, softmax=False)
    model.third[:] = 0
    truth = dict(explain(model, seed=500, num_samples=64000, batch_size=4000, sampler="paired",
                         top_labels=None, labels=(0,)).local_exp[0])
    err = {}
    for sampler in ("lime", "paired"):
        sq = []
        for seed in range(8):
            w = dict(explain(model, seed=seed, num_samples=250, sampler=sampler,
                             top_labels=None, labels=(0,)).local_exp[0])
            sq += [(w[f] - truth[f]) ** 2 for f in w]
        err[sampler] = np.sqrt(np.mean(sq))
    # not all of it: the kernel weighs a row of k superpixels on and its complement's F - k
    # differently, so the even terms cancel only in part
    assert err["paired"] < 0.75 * err["lime"], err


def test_auto_takes_whole_pairs_and_is_the_fixed_paired_explanation():
    assert config.AUTO_SAMPLER == "paired"
    auto = explain(Interacting(2), seed=4, num_samples="auto", batch_size=7)
    assert auto.num_samples % 2 == 0 and auto.num_samples == auto.num_evaluated
    fixed = explain(Interacting(2), seed=4, num_samples=auto.num_samples, sampler="paired")
    assert_same_explanation(fixed, auto)
    # lime's rows on request: then at the cap "auto" is lime's explanation of 1000 rows
    capped = explain(Interacting(2), seed=4, num_samples="auto", sampler="lime",
                     min_samples=1000, max_samples=1000)
    assert_same_explanation(explain(Interacting(2), seed=4, num_samples=1000), capped)


def test_pairs_under_dedupe_budget_and_batches():
    model = Interacting(5)
    plain = explain(model, seed=2, num_samples=200, sampler="paired")
    deduped = explain(model, seed=2, num_samples=200, sampler="paired", dedupe=True)
    assert_same_explanation(plain, deduped)
    budget = explain(model, seed=2, num_samples=400, sampler="paired", time_budget=60.0)
    assert budget.num_samples % 2 == 0
    batch = LimeImageExplainer(random_state=2).explain_batch(
        [IMAGE, IMAGE], model, segmentation_fn=lambda _: SEGMENTS, progress_bar=False,
        num_samples=200, sampler="paired", top_labels=1)
    assert_same_explanation(plain, batch[0])


def test_the_apps_take_the_design():
    """The command line (--sampler), serve's requests (sampler=) and the dataset runner pass
    the design through, refuse it for KernelSHAP, and record it."""
    from limefast.cli.commands import build_parser
    from limefast.cli.inputs import InputError
    from limefast.cli.steps import check_sampling, sampling_options
    from limefast.core.record import explanation_record
    from limefast.dataset.driver import _sampler
    from limefast.serve.options import ExplainOptions

    parser = build_parser()
    common = ["x.png", "--out", "o", "--model", "resnet18"]
    args = parser.parse_args(["explain", *common, "--sampler", "paired", "--num-samples", "301"])
    assert sampling_options(args)["sampler"] == "paired"
    check_sampling(args)
    assert "sampler" not in sampling_options(parser.parse_args(["explain", *common]))
    with pytest.raises(InputError, match="--sampler is LIME's"):
        check_sampling(parser.parse_args(["explain", *common, "--sampler", "lime",
                                          "--method", "kernelshap"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["explain", *common, "--sampler", "sobol"])
    assert ExplainOptions.parse({"sampler": "paired"}).sampler == "paired"
    assert ExplainOptions.parse({}).sampler is None
    with pytest.raises(ValueError, match="sampler must be one of"):
        ExplainOptions.parse({"sampler": "iid"})
    with pytest.raises(ValueError, match="draws its own coalitions"):
        ExplainOptions.parse({"sampler": "paired", "method": "kernelshap"})
    assert (_sampler(None, 1000), _sampler(None, "auto"), _sampler("paired", 10)) == (
        "lime", config.AUTO_SAMPLER, "paired")
    e = explain(Interacting(1), num_samples=60, sampler="paired")
    record = explanation_record(e, e.prediction, method="lime", image="x", model="m",
                                weights=None, segmentation="slic", seed=0, seconds=0.0)
    assert record["sampler"] == e.sampler == "paired"
