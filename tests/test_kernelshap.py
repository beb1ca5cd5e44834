"""KernelSHAP over superpixels (``limefast.kernelshap``) against the Shapley formula by brute
force, shap's ``KernelExplainer`` and captum's ``KernelShap`` on the same masking function."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from agreement import forward_rtol, logit_scale
from naive import naive_perturb, naive_segment_means

from limefast import config
from limefast.core.rounds import SamplingWarning
from limefast.kernelshap import (
    KernelShapImageExplainer,
    ShapImageExplanation,
    adjustment,
    estimator,
)
from limefast.lime_image import LimeImageExplainer

# -- inputs and models -------------------------------------------------------------------------


def random_image(rng, size=(24, 28), dtype=np.float64):
    """A smooth random RGB image (blocks of noise blurred a little), float in [0, 1] or uint8."""
    h, w = size
    coarse = rng.rand(-(-h // 4), -(-w // 4), 3)
    image = np.kron(coarse, np.ones((4, 4, 1)))[:h, :w]
    image = 0.8 * image + 0.2 * rng.rand(h, w, 3)
    if np.dtype(dtype).kind == "u":
        return (image * 255).astype(dtype)
    return image.astype(dtype)


def random_segments(rng, shape, n):
    """(H, W) labels 0..n-1: each pixel takes its nearest of n random seeds (every label
    present)."""
    h, w = shape
    while True:
        seeds = np.stack([rng.randint(0, h, n), rng.randint(0, w, n)], axis=1)
        yy, xx = np.mgrid[:h, :w]
        d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        labels = d.argmin(-1)
        if len(np.unique(labels)) == n:
            return labels


class SegmentModel:
    """A float64 model of randomly weighted per-segment mean colours: softmax of a tanh layer
    plus pairwise interactions between segments. Each row's output depends on that row alone,
    bit for bit (einsum without BLAS)."""

    def __init__(self, segments, n_classes=4, hidden=6, seed=0):
        rng = np.random.RandomState(seed)
        f = int(segments.max()) + 1
        # Random pixel weights: a hidden segment (its mean colour everywhere) reads otherwise
        # than the segment itself.
        onehot = (segments.reshape(-1)[:, None] == np.arange(f)) * (
            rng.rand(segments.size, 1) ** 2)
        self.avg = onehot / onehot.sum(0)
        self.a = rng.randn(f * 3, hidden) * 1.5
        self.b = rng.randn(hidden, n_classes) * 1.5
        self.pair = rng.randn(f, f) * 2.0 / f
        self.c = rng.randn(n_classes)

    def __call__(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        if np.asarray(batch).dtype.kind in "iu":
            x = x / 255.0
        n = x.shape[0]
        m = np.einsum("npc,pf->nfc", x.reshape(n, -1, 3), self.avg, optimize=False)
        h = np.tanh(np.einsum("nk,kh->nh", m.reshape(n, -1), self.a, optimize=False))
        g = m.mean(-1)
        inter = np.einsum("nf,fg,ng->n", g, self.pair, g, optimize=False)
        z = np.einsum("nh,hc->nc", h, self.b, optimize=False) + inter[:, None] * self.c
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)


def naive_fudged(image, segments):
    """Every segment filled with its mean colour (lime's means, cast to the image dtype)."""
    fudged = image.copy()
    fudged[...] = naive_segment_means(image, segments)[segments]
    return fudged


def masked(z, image, fudged, segments):
    """The images of 0/1 rows ``z``: a superpixel off takes the fudged pixels (lime's loop;
    the masking function of shap's image notebooks, with the fudged image as background)."""
    return naive_perturb(image, fudged, segments, np.atleast_2d(z))


def brute_force_shapley(model, image, fudged, segments):
    """(F, n_classes) Shapley values by the formula, over every subset, and f(none)."""
    f = int(segments.max()) + 1
    codes = np.arange(1 << f)
    z = (codes[:, None] >> np.arange(f)) & 1
    v = model(masked(z, image, fudged, segments))
    size = z.sum(1)
    phi = np.zeros((f, v.shape[1]))
    for i in range(f):
        without = codes[z[:, i] == 0]
        w = np.array([math.factorial(s) * math.factorial(f - s - 1) / math.factorial(f)
                      for s in size[without]])
        phi[i] = w @ (v[without | (1 << i)] - v[without])
    return phi, v[0]


def values_of(explanation, label, n_features):
    out = np.full(n_features, np.nan)
    for f, v in explanation.local_exp[label]:
        out[f] = v
    return out


def case(seed, n_features, size=(24, 28), dtype=np.float64):
    rng = np.random.RandomState(seed)
    image = random_image(rng, size, dtype)
    segments = random_segments(rng, size, n_features)
    return image, segments, SegmentModel(segments, seed=seed)


def explain(image, segments, model, seed=0, **kwargs):
    kwargs.setdefault("progress_bar", False)
    kwargs.setdefault("top_labels", None)
    kwargs.setdefault("labels", (0, 1, 2, 3))
    return KernelShapImageExplainer(random_state=seed).explain_instance(
        image, model, segmentation_fn=lambda _: segments, **kwargs)


def shap_values(model, image, fudged, segments, nsamples, seed):
    """shap's KernelExplainer as its image notebooks use it: background all zeros (every
    superpixel hidden), the instance all ones; no l1 feature selection (the same estimand)."""
    shap = pytest.importorskip("shap")
    f = int(segments.max()) + 1
    np.random.seed(seed)
    explainer = shap.KernelExplainer(lambda z: model(masked(z, image, fudged, segments)),
                                     np.zeros((1, f)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = explainer.shap_values(np.ones((1, f)), nsamples=nsamples, l1_reg=False,
                                       silent=True)
    return np.asarray(values)[0], np.asarray(explainer.expected_value)


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


# -- exact -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,n_features", [(0, 6), (1, 9), (2, 12)])
def test_exact_values_are_the_shapley_formula(seed, n_features):
    image, segments, model = case(seed, n_features)
    phi, base = brute_force_shapley(model, image, naive_fudged(image, segments), segments)
    e = explain(image, segments, model, seed=seed, num_samples=1 << n_features)
    assert isinstance(e, ShapImageExplanation)
    assert e.exact and e.num_samples == e.num_evaluated == 1 << n_features
    scale = np.abs(phi).max()
    for label in range(4):
        np.testing.assert_allclose(values_of(e, label, n_features), phi[:, label],
                                   rtol=0, atol=1e-9 * scale)
        np.testing.assert_allclose(e.base_value[label], base[label], rtol=1e-12)
        assert e.intercept[label] == e.base_value[label]
        assert set(e.stderr[label].values()) == {0.0}


def test_exact_with_hide_color_on_a_uint8_image_and_a_larger_budget():
    image, segments, model = case(3, 7, dtype=np.uint8)
    fudged = np.zeros_like(image) + np.array([10, 200, 30], np.uint8)
    phi, _ = brute_force_shapley(model, image, fudged, segments)
    e = explain(image, segments, model, num_samples=5000, hide_color=(10, 200, 30))
    assert e.exact and e.num_evaluated == 128
    for label in range(4):
        np.testing.assert_allclose(values_of(e, label, 7), phi[:, label], rtol=0,
                                   atol=1e-9 * np.abs(phi).max())


# -- efficiency, determinism, the design -------------------------------------------------------


class Recorder:
    """A classifier that keeps a copy of every image it sees."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __call__(self, batch):
        self.seen.extend(batch.copy())
        return self.model(batch)


@pytest.mark.parametrize("n_features,num_samples", [(20, 300), (13, 1001), (2, 3), (1, 2)])
def test_efficiency_and_distinct_images(n_features, num_samples):
    image, segments, model = case(4 + n_features, n_features)
    recorder = Recorder(model)
    e = explain(image, segments, recorder, num_samples=num_samples, top_labels=2)
    full = model(image[None])[0]
    for label in e.top_labels:
        total = e.base_value[label] + sum(v for _, v in e.local_exp[label])
        assert abs(total - full[label]) <= 1e-12
        np.testing.assert_allclose(e.local_pred[label], [full[label]], rtol=1e-12)
        np.testing.assert_allclose(e.base_value[label],
                                   model(naive_fudged(image, segments)[None])[0, label],
                                   rtol=1e-9)
    assert e.top_labels == list(np.argsort(full)[::-1][:2])
    seen = {x.tobytes() for x in recorder.seen}
    assert len(seen) == len(recorder.seen) == e.num_evaluated == e.num_samples
    assert e.num_samples == min(1 << n_features, num_samples - num_samples % 2 if
                                (1 << n_features) > num_samples else num_samples)


@pytest.mark.parametrize("num_samples", [400, 64, "auto"])
def test_same_seed_same_values_whatever_batch_size(num_samples):
    image, segments, model = case(5, 16)
    runs = [explain(image, segments, model, seed=3, num_samples=num_samples,
                    batch_size=batch_size) for batch_size in (1, 7, 10, "auto")]
    for other in runs[1:]:
        for label in range(4):
            assert other.local_exp[label] == runs[0].local_exp[label]
            assert other.stderr[label] == runs[0].stderr[label]
        assert other.num_evaluated == runs[0].num_evaluated
    again = explain(image, segments, model, seed=4, num_samples=num_samples)
    assert again.local_exp[0] != runs[0].local_exp[0]


def test_the_design_enumerates_the_sizes_that_fit_and_pairs_complements():
    f = 12
    design = estimator.CoalitionDesign(f, np.random.RandomState(0)).grow(600)
    rows = design.rows.astype(int)
    assert rows.shape[0] == 600 and not design.exact
    assert (rows[0] == 1).all() and (rows[1] == 0).all()
    np.testing.assert_array_equal(rows[2::2] + rows[3::2], 1)  # complementary pairs
    assert len({r.tobytes() for r in design.rows}) == 600
    sizes = rows[2:].sum(1)
    assert np.sum(sizes == 1) == f and np.sum(sizes == f - 1) == f  # enumerated whole
    assert np.sum(sizes == 2) == math.comb(f, 2)
    for s in range(1, f):  # each size's coalitions share its kernel mass
        mass = design.weights[2:][sizes == s].sum()
        assert mass == pytest.approx((f - 1) / (s * (f - s)), rel=1e-12)


# -- the peers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,n_features", [(6, 5), (7, 9)])
def test_shap_with_every_coalition_gives_the_same_values(seed, n_features):
    image, segments, model = case(seed, n_features)
    fudged = naive_fudged(image, segments)
    ours = explain(image, segments, model, num_samples=1 << n_features)
    theirs, base = shap_values(model, image, fudged, segments, (1 << n_features) - 2, seed)
    for label in range(4):
        np.testing.assert_allclose(values_of(ours, label, n_features), theirs[:, label],
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours.base_value[label], base[label], rtol=1e-9)


SEEDS = range(8)


@pytest.mark.parametrize("n_features,budgets", [(12, (200, 800)), (10, (100, 400))])
def test_error_no_larger_than_shaps_at_the_same_model_calls(n_features, budgets):
    """Both converge to the enumerated values; at the same number of images the model sees
    (shap: nsamples + the instance + the background), limefast's error averaged over seeds is
    no larger."""
    image, segments, model = case(11, n_features)
    fudged = naive_fudged(image, segments)
    exact, _ = brute_force_shapley(model, image, fudged, segments)
    errors = {}
    for n in budgets:
        ours = [rms(np.stack([values_of(explain(image, segments, model, seed=s, num_samples=n),
                                        label, n_features) for label in range(4)], 1), exact)
                for s in SEEDS]
        theirs = [rms(shap_values(model, image, fudged, segments, n - 2, s)[0], exact)
                  for s in SEEDS]
        errors[n] = (np.mean(ours), np.mean(theirs))
    small, large = budgets
    assert errors[large][0] < errors[small][0] and errors[large][1] < errors[small][1]
    for n in budgets:
        assert errors[n][0] <= errors[n][1], errors


def captum_values(model, image, fudged, segments, n_samples, target, seed):
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(seed)
    ks = captum_attr.KernelShap(lambda x: torch.from_numpy(model(x.numpy())))
    mask = torch.from_numpy(segments[None, :, :, None].astype(np.int64))
    return ks.attribute(torch.from_numpy(image[None]), baselines=torch.from_numpy(fudged[None]),
                        target=target, feature_mask=mask, n_samples=n_samples,
                        perturbations_per_eval=64).numpy()[0]


def test_captum_kernel_shap_as_a_second_peer():
    n_features, n = 10, 300
    image, segments, model = case(12, n_features)
    fudged = naive_fudged(image, segments)
    exact, _ = brute_force_shapley(model, image, fudged, segments)
    target = int(np.argmax(np.abs(exact).sum(0)))
    ours, theirs = [], []
    for s in range(4):
        e = explain(image, segments, model, seed=s, num_samples=n)
        ours.append(rms(values_of(e, target, n_features), exact[:, target]))
        attr = captum_values(model, image, fudged, segments, n, target, s)
        per_segment = np.array([attr[segments == j][0, 0] for j in range(n_features)])
        theirs.append(rms(per_segment, exact[:, target]))
    # captum converges to the same values (its errors are a fraction of the values' scale)...
    assert np.mean(theirs) < 0.5 * np.abs(exact[:, target]).max()
    # ...and limefast is no further from them at the same number of model calls.
    assert np.mean(ours) <= np.mean(theirs)


# -- standard errors, num_samples="auto" -------------------------------------------------------


def test_standard_errors_describe_the_error():
    n_features = 14
    image, segments, model = case(13, n_features)
    exact, _ = brute_force_shapley(model, image, naive_fudged(image, segments), segments)
    z = []
    for s in range(20):
        e = explain(image, segments, model, seed=s, num_samples=400, labels=(0, 1))
        for label in (0, 1):
            se = np.array([e.stderr[label][f] for f in range(n_features)])
            assert (se > 0).all()
            z.append((values_of(e, label, n_features) - exact[:, label]) / se)
    z = np.concatenate(z)
    assert 0.6 < np.sqrt(np.mean(z ** 2)) < 1.6
    assert 0.8 < np.mean(np.abs(z) < 1.645) / 0.9 < 1.1  # nominal 90% intervals cover


def test_auto_stops_once_settled_and_is_exact_when_everything_fits():
    image, segments, model = case(14, 30)
    e = explain(image, segments, model, num_samples="auto", labels=(0,), stable_features=3)
    assert e.stop_reason in ("settled", "diminishing", "max_samples")
    assert e.converged == (e.stop_reason == "settled")
    # never more than the fixed default budget, and it states how settled its top 3 is
    assert e.num_evaluated == e.num_samples <= 2048 == config.SHAP_AUTO_MAX_SAMPLES
    assert e.top_k == 3 and 0 <= e.expected_overlap[0] <= 1
    if e.converged:
        assert e.expected_overlap[0] >= config.SHAP_AUTO_DEFAULTS["target_overlap"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        capped = explain(image, segments, model, num_samples="auto", labels=(0,),
                         target_overlap=0.999999, min_samples=100, max_samples=300)
    assert capped.num_evaluated <= 300
    small = case(15, 7)
    e = explain(*small, num_samples="auto", labels=(0,), min_samples=200)
    assert e.exact and e.stop_reason == "exact" and e.num_evaluated == 128


class Wobbly:
    """``model`` plus a deterministic wobble of each image's own (no linear part to fit)."""

    def __init__(self, model, scale):
        self.model, self.scale = model, scale

    def __call__(self, batch):
        x = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
        wobble = np.sin(x @ np.linspace(1, 2, x.shape[1]) * 1e3)
        return self.model(batch) + self.scale * wobble[:, None]


def test_auto_stops_when_more_coalitions_stop_paying_unless_the_cap_is_exact():
    image, segments, model = case(14, 30)
    # any gain is too small for min_gain=10: the first check stops, below the target
    e = explain(image, segments, model, num_samples="auto", labels=(1,), stable_features=5,
                target_overlap=0.999999, min_gain=10)
    assert (e.stop_reason, e.converged) == ("diminishing", False)
    assert e.num_evaluated < config.SHAP_AUTO_MAX_SAMPLES
    assert config.AUTO_GAIN_FLOOR <= e.expected_overlap[1] < 0.999999
    # 9 superpixels: all 512 coalitions fit under the cap, where the values are exact, so
    # more coalitions always pay and only the target or exactness stops it
    image, segments, model = case(15, 9)
    e = explain(image, segments, Wobbly(model, 0.1), num_samples="auto", labels=(0,),
                stable_features=3, target_overlap=0.999999, min_gain=10)
    assert e.stop_reason in ("settled", "exact") and e.num_evaluated > 150
    with pytest.raises(ValueError, match="min_gain"):
        explain(*case(15, 9), num_samples="auto", min_gain=-1)


def test_auto_on_a_flat_model_stops_after_the_first_round():
    image, segments, _ = case(16, 30)

    def flat(batch):
        return np.full((len(batch), 4), 0.25)

    with pytest.warns(SamplingWarning, match="does not depend on the superpixels"):
        e = explain(image, segments, flat, num_samples="auto")
    assert (e.stop_reason, e.converged) == ("flat", False)
    assert e.num_evaluated <= config.AUTO_MIN_SAMPLES
    assert all(v == pytest.approx(5 / 30) for v in e.expected_overlap.values())


# -- the device path ---------------------------------------------------------------------------


def _torch_classifier(batch_size=None):
    torch = pytest.importorskip("torch")
    from limefast import TorchClassifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(3), torch.nn.Flatten(), torch.nn.Linear(72, 5))
    with torch.no_grad():
        model[-1].weight.mul_(20)
    return TorchClassifier(model, device="cpu", batch_size=batch_size), model


@pytest.mark.parametrize("num_samples", [256, 150])
def test_device_path_gives_the_cpu_paths_values(num_samples):
    """The same batches: bitwise-equal model inputs, so equal values; other batches: the
    float32 contract, with the estimator's own gain (the largest absolute row sum of the
    linear map from outputs to values)."""
    rng = np.random.RandomState(0)
    image = random_image(rng, (24, 24), np.uint8)
    segments = random_segments(rng, (24, 24), 8)
    clf, model = _torch_classifier()
    kwargs = dict(num_samples=num_samples, top_labels=3, progress_bar=False,
                  segmentation_fn=lambda _: segments)
    device = KernelShapImageExplainer(random_state=1).explain_instance(image, clf, **kwargs)
    batch = clf.batch_for(image.shape)
    cpu_same = KernelShapImageExplainer(random_state=1).explain_instance(
        image, lambda b: clf(b), batch_size=batch, **kwargs)
    cpu_other = KernelShapImageExplainer(random_state=1).explain_instance(
        image, lambda b: clf(b), batch_size=7, **kwargs)
    assert device.top_labels == cpu_same.top_labels == cpu_other.top_labels
    assert device.exact == (num_samples == 256)
    design = estimator.CoalitionDesign(8, np.random.RandomState(0)).grow(num_samples)
    gain = np.abs(estimator.fit(design, np.eye(len(design.rows))).values).sum(1).max()
    rtol = forward_rtol(model, logits=logit_scale(clf, image[None]))
    for label in device.top_labels:
        a, b = values_of(device, label, 8), values_of(cpu_same, label, 8)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)
        scale = max(abs(device.base_value[label]), float(device.local_pred[label][0]))
        tol = max(gain, 2.0) * rtol * scale
        assert np.abs(values_of(cpu_other, label, 8) - a).max() <= tol


# -- the interface -----------------------------------------------------------------------------


def test_the_explanation_has_limes_interface():
    image, segments, model = case(16, 9)
    e = explain(image, segments, model, num_samples=300, top_labels=2, labels=None)
    label = e.top_labels[0]
    weights = [v for _, v in e.local_exp[label]]
    assert weights == sorted(weights, key=abs, reverse=True)
    assert sorted(f for f, _ in e.local_exp[label]) == list(range(9))
    _, mask = e.get_image_and_mask(label, positive_only=False, num_features=3)
    chosen = {f for f, _ in e.local_exp[label][:3]}
    np.testing.assert_array_equal(mask != 0, np.isin(segments, list(chosen)))
    assert e.render(label).shape == image.shape[:2] + (3,)
    low, high = e.interval(label, 0.9)[e.local_exp[label][0][0]]
    assert low < e.local_exp[label][0][1] < high
    assert 0 < e.score[label] <= 1
    assert e.segments is not None and e.num_samples == 300


def test_plot_draws_the_values():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    image, segments, model = case(17, 8)
    e = explain(image, segments, model, num_samples=100, labels=(1,))
    ax = e.plot(1)
    assert len(ax.patches) == 8


def test_default_segmentation_and_draw_order_are_limes():
    """random_seed is drawn first (even with a segmentation given), then one draw seeds the
    coalitions; the default segmentation is lime's quickshift."""
    rng = np.random.RandomState(18)
    image = random_image(rng, (32, 32), np.uint8)
    model = SegmentModel(np.zeros((32, 32), int))
    ours = KernelShapImageExplainer(random_state=5).explain_instance(
        image, lambda b: model(b), num_samples=20, progress_bar=False)
    lime = LimeImageExplainer(random_state=5).explain_instance(
        image, lambda b: model(b), num_samples=20, progress_bar=False)
    np.testing.assert_array_equal(ours.segments, lime.segments)
    explainer = KernelShapImageExplainer(random_state=5)
    explainer.explain_instance(image, lambda b: model(b), num_samples=20, progress_bar=False,
                               segmentation_fn=lambda im: np.zeros(im.shape[:2], int))
    state = np.random.RandomState(5)
    state.randint(0, high=1000)
    state.randint(0, 2**31 - 1)
    assert explainer.random_state.randint(0, 10**9) == state.randint(0, 10**9)


def test_grayscale_image():
    rng = np.random.RandomState(19)
    image = random_image(rng, (20, 20), np.uint8)[..., 0]
    segments = random_segments(rng, (20, 20), 5)
    model = SegmentModel(segments)
    e = explain(image, segments, model, num_samples=32)
    assert e.exact and e.image.shape == (20, 20, 3)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_samples": 1}, ValueError, "num_samples must be an integer >= 2"),
    ({"num_samples": 0}, ValueError, "num_samples"),
    ({"num_samples": 2.5}, TypeError, "num_samples"),
    ({"num_samples": "many"}, ValueError, "'auto'"),
    ({"num_samples": True}, TypeError, "num_samples"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"top_labels": -1}, ValueError, "top_labels"),
    ({"top_labels": None, "labels": (0, 9)}, ValueError, "outside the classifier's output"),
    ({"top_labels": None, "labels": ("a",)}, TypeError, "labels"),
    ({"max_samples": 100}, ValueError, "bound num_samples='auto'"),
    ({"num_samples": "auto", "max_samples": 10, "min_samples": 20}, ValueError, "at least"),
    ({"hide_color": "red"}, ValueError, "hide_color"),
    ({"segmentation_fn": 3}, TypeError, "segmentation_fn must be callable"),
])
def test_bad_arguments(kwargs, error, match):
    image, segments, model = case(20, 6)
    kwargs = {"segmentation_fn": lambda _: segments, "progress_bar": False, **kwargs}
    with pytest.raises(error, match=match):
        KernelShapImageExplainer(random_state=0).explain_instance(image, model, **kwargs)


@pytest.mark.parametrize("image,classifier,error,match", [
    (np.zeros((2, 4, 4, 3)), None, ValueError, "image must be"),
    (np.full((8, 8, 3), np.nan), None, ValueError, "NaN"),
    (np.zeros((8, 8, 3)), "not callable", TypeError, "classifier_fn must be callable"),
])
def test_bad_images_and_classifiers(image, classifier, error, match):
    model = classifier if classifier is not None else SegmentModel(np.zeros((8, 8), int))
    with pytest.raises(error, match=match):
        KernelShapImageExplainer().explain_instance(image, model, progress_bar=False)


def test_classifier_output_checked():
    image, segments, _ = case(21, 5)
    with pytest.raises(ValueError, match="2-D array"):
        explain(image, segments, lambda b: np.zeros(len(b)), num_samples=8)


def test_explainer_pickles():
    import pickle

    image, segments, model = case(22, 6)
    explainer = KernelShapImageExplainer(random_state=0)
    clone = pickle.loads(pickle.dumps(explainer))
    a = explainer.explain_instance(image, model, segmentation_fn=lambda _: segments,
                                   num_samples=40, progress_bar=False)
    b = clone.explain_instance(image, model, segmentation_fn=lambda _: segments,
                               num_samples=40, progress_bar=False)
    assert a.local_exp == b.local_exp


# -- the switches shared with LIME -------------------------------------------------------------


class SlowModel:
    """A model that takes ``seconds`` per call (a stand-in for a real forward)."""

    def __init__(self, model, seconds):
        self.model, self.seconds = model, seconds

    def __call__(self, batch):
        time.sleep(self.seconds)
        return self.model(batch)


def test_time_budget_returns_the_values_that_fit_and_they_still_add_up():
    image, segments, model = case(23, 24)
    slow = SlowModel(model, 0.02)
    start = time.perf_counter()
    e = explain(image, segments, slow, num_samples=4000, time_budget=0.6, batch_size=10)
    elapsed = time.perf_counter() - start
    assert e.stop_reason == "time_budget" and not e.converged and not e.exact
    assert 2 < e.num_evaluated < 4000 and e.num_evaluated == e.num_samples
    assert elapsed < 0.6 * 2  # the rounds stop in time (a loose bound: CI shares its cores)
    full = model(image[None])[0]
    for label in range(4):
        total = e.base_value[label] + sum(v for _, v in e.local_exp[label])
        assert abs(total - full[label]) <= 1e-12


def test_a_budget_that_fits_everything_is_exact():
    image, segments, model = case(24, 6)
    e = explain(image, segments, model, num_samples=1000, time_budget=60.0)
    assert e.exact and e.stop_reason == "exact" and e.num_evaluated == 64


def test_dedupe_changes_nothing_every_coalition_is_distinct():
    image, segments, model = case(25, 11)
    a = explain(image, segments, model, num_samples=300, dedupe=False)
    b = explain(image, segments, model, num_samples=300, dedupe=True)
    assert a.local_exp == b.local_exp and a.num_evaluated == b.num_evaluated == 300


def test_too_few_coalitions_add_up_and_say_no_error_is_known():
    image, segments, model = case(26, 9)
    with pytest.warns(SamplingWarning, match="cannot tell 9 superpixels apart") as caught:
        e = explain(image, segments, model, num_samples=2)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert e.num_evaluated == 2 and not e.exact and not e.converged
    full = model(image[None])[0]
    for label in range(4):
        values = values_of(e, label, 9)
        np.testing.assert_allclose(e.base_value[label] + values.sum(), full[label], rtol=1e-12)
        assert all(np.isnan(s) for s in e.stderr[label].values())


def test_segment_labels_need_not_start_at_zero():
    """slic numbers its segments from 1, other segmenters leave gaps: the features are the
    segments relabelled 0..n-1 in sorted order, and the values are those of the relabelled
    segmentation."""
    image, segments, model = case(27, 7)
    gappy = np.array([3, 5, 10, 11, 20, 21, 40])[segments]
    ours = explain(image, segments, model, num_samples=128)
    theirs = explain(image, gappy, model, num_samples=128)
    np.testing.assert_array_equal(theirs.segments, segments)
    assert ours.local_exp == theirs.local_exp


def test_public_name():
    import limefast

    assert limefast.KernelShapImageExplainer is KernelShapImageExplainer


def test_thousands_of_superpixels():
    """C(F, F/2) is far past a float's range at F = 1100: the design counts in integers."""
    design = estimator.CoalitionDesign(1100, np.random.RandomState(0)).grow(2400)
    assert design.rows.shape == (2400, 1100) and not design.exact
    assert len({r.tobytes() for r in design.rows}) == 2400


def test_small_budget_standard_errors_cover():
    """At a budget of a few times F the fit's residuals understate the errors unless scaled
    by the small-sample factor: nominal 90% intervals cover the exact values 80-97% of the
    time over 60 seeded designs (F = 12, 100 images; exact values by enumeration)."""
    f, rng = 12, np.random.RandomState(5)
    a, b = rng.randn(f), rng.randn(f, f) / np.sqrt(f)

    def game(z):  # a smooth game with interactions; (n, 1)
        z = z.astype(np.float64)
        return (z @ a + np.einsum("nf,fg,ng->n", z, b, z) + 2 * np.sin(z.sum(1)))[:, None]

    exact_design = estimator.CoalitionDesign(f, np.random.RandomState(0)).grow(1 << f)
    exact = estimator.fit(exact_design, game(exact_design.rows)).values[:, 0]
    z = []
    for seed in range(60):
        design = estimator.CoalitionDesign(f, np.random.RandomState(seed)).grow(100)
        fit = estimator.fit(design, game(design.rows))
        z.append((fit.values[:, 0] - exact) / fit.stderr[:, 0])
    covered = np.mean(np.abs(np.concatenate(z)) < 1.645)
    assert 0.80 <= covered <= 0.97, covered


# -- the regression adjustment -----------------------------------------------------------------


def interacting_game(f, seed):
    """A game of 0/1 coalitions with a saturating part, as a classifier's probability:
    (n, 2) outputs (a sigmoid of interactions, and a near-additive one)."""
    rng = np.random.RandomState(seed)
    a, b = rng.randn(f), rng.randn(f, f) * 1.5 / np.sqrt(f)

    def game(z):
        z = z.astype(np.float64)
        logit = z @ a + np.einsum("nf,fg,ng->n", z, b, z) - 1.0
        return np.stack([1 / (1 + np.exp(-logit)), z @ a + 0.05 * np.sin(z.sum(1))], 1)

    return game


def test_tree_proxy_shapley_values_are_the_formulas():
    f, rng = 8, np.random.RandomState(0)
    design = estimator.CoalitionDesign(f, rng).grow(1 << f)
    y = interacting_game(f, 1)(design.rows)[:, 0] + 0.1 * rng.randn(1 << f)
    proxy = adjustment.TreeProxy.fit(design.rows[::3], y[::3], np.ones(len(y[::3])))
    exact = estimator.fit(design, proxy.predict(design.rows)[:, None]).values[:, 0]
    np.testing.assert_allclose(proxy.shapley(f), exact, rtol=0, atol=1e-12)


def test_regression_adjusted_is_exact_when_everything_fits_and_always_adds_up():
    f = 9
    game = interacting_game(f, 2)
    every = estimator.CoalitionDesign(f, np.random.RandomState(0)).grow(1 << f)
    exact = adjustment.regression_adjusted(every, game(every.rows))
    np.testing.assert_array_equal(exact.values, estimator.fit(every, game(every.rows)).values)
    assert (exact.stderr == 0).all()
    for budget in (24, 60, 200):
        design = estimator.CoalitionDesign(f, np.random.RandomState(budget)).grow(budget)
        y = game(design.rows)
        adjusted = adjustment.regression_adjusted(design, y)
        np.testing.assert_allclose(adjusted.values.sum(0), y[0] - y[1], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(adjusted.base, y[1])


def test_regression_adjusted_converges_and_keeps_the_better_of_the_two():
    """On a saturating game (a probability of interacting superpixels) the adjustment is no
    worse than the plain fit at a small budget and better at larger ones; on a near-additive
    one, which the constrained fit already describes, the plain fit is kept; both converge."""
    f = 11
    game = interacting_game(f, 3)
    every = estimator.CoalitionDesign(f, np.random.RandomState(0)).grow(1 << f)
    exact = estimator.fit(every, game(every.rows)).values
    errors = {}
    for budget in (100, 400, 1200):
        plain, adjusted = [], []
        for seed in range(6):
            design = estimator.CoalitionDesign(f, np.random.RandomState(seed)).grow(budget)
            y = game(design.rows)
            for out, fitted in ((plain, estimator.fit(design, y)),
                                (adjusted, adjustment.regression_adjusted(design, y))):
                out.append(np.sum((fitted.values - exact) ** 2, 0) / np.sum(exact ** 2, 0))
        errors[budget] = np.mean(plain, 0), np.mean(adjusted, 0)
    assert (errors[100][1] > errors[400][1]).all() and (errors[400][1] > errors[1200][1]).all()
    saturating = {budget: (p[0], a[0]) for budget, (p, a) in errors.items()}
    assert saturating[100][1] <= saturating[100][0] * 1.001, saturating
    assert all(a < 0.9 * p for p, a in (saturating[400], saturating[1200])), saturating
    for p, a in errors.values():  # near-additive: no worse than the plain fit
        assert a[1] <= p[1] * 1.05, errors


def test_regression_adjusted_standard_errors_cover():
    """The proxy's in-sample residuals would understate the errors; those of proxies that did
    not see the coalitions cover: nominal 90% intervals over 30 seeded designs (F = 10, both
    labels, one saturating, one near-additive, where the plain fit is kept)."""
    f = 10
    game = interacting_game(f, 4)
    every = estimator.CoalitionDesign(f, np.random.RandomState(0)).grow(1 << f)
    exact = estimator.fit(every, game(every.rows)).values
    z = []
    for seed in range(30):
        design = estimator.CoalitionDesign(f, np.random.RandomState(seed)).grow(160)
        fitted = adjustment.regression_adjusted(design, game(design.rows))
        z.append(((fitted.values - exact) / fitted.stderr).ravel())
    covered = np.mean(np.abs(np.concatenate(z)) < 1.645)
    assert 0.80 <= covered <= 0.98, covered


def test_the_explainer_adjusts_unless_told_not_to():
    image, segments, model = case(30, 10)
    plain = explain(image, segments, model, seed=1, num_samples=200,
                    regression_adjustment=False)
    adjusted = explain(image, segments, model, seed=1, num_samples=200)
    full = model(image[None])[0]
    for label in range(4):
        for e in (plain, adjusted):
            total = e.base_value[label] + sum(v for _, v in e.local_exp[label])
            assert abs(total - full[label]) <= 1e-12
    assert plain.num_evaluated == adjusted.num_evaluated == 200
    exact = explain(image, segments, model, seed=1, num_samples=1 << 10,
                    regression_adjustment=False)
    assert explain(image, segments, model, seed=1, num_samples=1 << 10).local_exp == (
        exact.local_exp)


def test_allocations_share_the_budget_as_named():
    design = estimator.CoalitionDesign(12, np.random.RandomState(0), allocation="leverage")
    design.grow(400)
    sampled = {s.size: n for n, s in zip(design.counts, design.strata) if n < s.units}
    middle = sampled.pop(6)
    assert len(sampled) >= 2 and max(sampled.values()) - min(sampled.values()) <= 1
    assert abs(middle - sampled[5] / 2) <= 1  # sizes 6 and 6 are one size: half the share
    with pytest.raises(ValueError, match="allocation must be one of"):
        estimator.CoalitionDesign(5, np.random.RandomState(0), allocation="uniform")
