"""KernelSHAP against shap's ``KernelExplainer``: speed at the same samples, and how many model
images each needs to come close to the exact Shapley values.

*Speed* (``shapley_speed``): a 224x224 photo, SLIC superpixels (51), 2000 samples, a model
that costs next to nothing (``models.GridModel``). shap runs the masking function of its image
notebooks (a Python loop over samples and superpixels, ``mask_image`` below) with the
background all zeros (every superpixel hidden) and the instance all ones; limefast's
``KernelShapImageExplainer`` hides superpixels with the same colour. Both without l1 feature
selection (the same estimand; shap's default Lasso step would only add to its time), and
limefast without its regression adjustment (``regression_adjustment=False``: the constrained
fit, shap's estimator; the adjustment's cost and gain are measured by
``benchsuite.shapley_estimators``).

*Convergence* (``shapley_convergence``): the digits CNN (``limefast.models.digits``) on held-out
digits, each cut into exactly 14 superpixels (k-means on position and intensity), hidden
superpixels painted black (the digits' background) by both, the exact Shapley values from all
2^14 coalitions. For each budget of model images, the mean Pearson
correlation of the top label's values with the exact ones, for limefast and for shap at the same
images (``nsamples = images - 2``: shap also evaluates the background and the instance), and for
shap at its defaults (``nsamples="auto"``, ``l1_reg="num_features(10)"``). The figure is the
fewest images at which the mean correlation reaches 0.95.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

TARGET_CORRELATION = 0.95


@dataclass
class ShapleyConfig:
    """Sizes of both parts; ``quick()`` is a smoke run of a few seconds."""

    side: int = 224
    n_segments: int = 80  # SLIC gives 51 superpixels on the 224x224 photo; the count is recorded
    num_samples: int = 2000
    repeats: int = 5  # limefast's timed runs (median); shap runs once, it is slow
    images: int = 12  # convergence: held-out digits
    seeds: int = 4
    superpixels: int = 14
    budgets: tuple = (64, 128, 256, 512, 1024, 2048, 4096)

    @classmethod
    def quick(cls) -> ShapleyConfig:
        return cls(side=96, n_segments=20, num_samples=300, repeats=2, images=2, seeds=2,
                   budgets=(64, 256))


# -- shap, as its image notebooks call it -----------------------------------------------------
def mask_image(zs, segmentation, image, background=None):
    """shap's image notebooks' masking function: each row of ``zs`` copies the image and paints
    every superpixel whose entry is 0 with ``background`` (default the image's mean colour)."""
    if background is None:
        background = image.mean((0, 1))
    out = np.zeros((zs.shape[0], image.shape[0], image.shape[1], image.shape[2]))
    for i in range(zs.shape[0]):
        out[i, :, :, :] = image
        for j in range(zs.shape[1]):
            if zs[i, j] == 0:
                out[i][segmentation == j, :] = background
    return out


def shap_values(model, image, segments, background, seed: int, **kwargs):
    """(F, n_classes) values of shap's KernelExplainer on the notebooks' masking function, its
    base values, and the images it sent the model."""
    from limefast.optional import require

    shap = require("shap", "the KernelSHAP comparison")
    n_features = int(segments.max()) + 1
    seen = [0]

    def f(z):
        seen[0] += len(z)
        # The notebooks' masks are float64; back in the image's dtype the model sees exactly
        # the images limefast builds (a model that scales integer images does so here too).
        return model(mask_image(z, segments, image, background).astype(image.dtype))

    np.random.seed(seed)  # shap samples coalitions from numpy's global state
    explainer = shap.KernelExplainer(f, np.zeros((1, n_features)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = explainer.shap_values(np.ones((1, n_features)), silent=True, **kwargs)
    return np.asarray(values)[0], np.asarray(explainer.expected_value), seen[0]


def limefast_values(model, image, segments, hide_color, seed: int, num_samples, label=None,
                    **kwargs):
    """(F,) values of the label (default the top one), the explanation; ``kwargs`` go to
    ``explain_instance``."""
    from limefast.kernelshap import KernelShapImageExplainer

    e = KernelShapImageExplainer(random_state=seed).explain_instance(
        image, model, segmentation_fn=lambda _: segments, hide_color=hide_color,
        num_samples=num_samples, top_labels=None if label is not None else 1,
        labels=(label,) if label is not None else (1,), batch_size=500, progress_bar=False,
        **kwargs)
    label = e.top_labels[0] if label is None else label
    values = np.zeros(int(segments.max()) + 1)
    for feature, value in e.local_exp[label]:
        values[feature] = value
    return values, e


def correlation(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float(np.all(a == b))
    return float(np.corrcoef(a, b)[0, 1])


# -- speed ------------------------------------------------------------------------------------
def shapley_speed(cfg: ShapleyConfig | None = None, progress=None) -> dict:
    """limefast's KernelSHAP against shap's KernelExplainer at the same samples."""
    from skimage.segmentation import slic

    from limefast.benchsuite.inputs import photo
    from limefast.benchsuite.models import GridModel

    cfg = cfg or ShapleyConfig()
    image = photo(cfg.side)
    segments = slic(image, n_segments=cfg.n_segments, compactness=10, start_label=0)
    n_features = int(segments.max()) + 1
    model = GridModel()
    hide = 0  # shap's notebooks paint hidden superpixels one colour: the same one here
    plain = {"regression_adjustment": False}  # shap's estimator, like with like
    limefast_values(model, image, segments, hide, 0, cfg.num_samples, **plain)  # compile
    times = []
    for r in range(cfg.repeats):
        t0 = time.perf_counter()
        ours, e = limefast_values(model, image, segments, hide, r, cfg.num_samples, **plain)
        times.append(time.perf_counter() - t0)
    label = e.top_labels[0]
    if progress:
        progress(f"kernelshap speed: limefast {np.median(times):.3f} s; shap ...")
    t0 = time.perf_counter()
    theirs, _, seen = shap_values(model, image, segments, hide, 0,
                                  nsamples=cfg.num_samples - 2, l1_reg=False)
    shap_seconds = time.perf_counter() - t0
    ours_seconds = float(np.median(times))
    return {"image": f"{cfg.side}x{cfg.side} photo", "superpixels": n_features,
            "num_samples": cfg.num_samples, "model": "GridModel (next to nothing)",
            "limefast_seconds": ours_seconds, "limefast_images": int(e.num_evaluated),
            "shap_seconds": shap_seconds, "shap_images": seen,
            "speedup": shap_seconds / ours_seconds,
            "correlation_of_the_two": correlation(ours, theirs[:, label]),
            "timings": {k: float(v) for k, v in e.timings.items()}}


# -- convergence ------------------------------------------------------------------------------
def kmeans_segments(image, n: int, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` superpixels: k-means on (row, column, intensity), labels 0..n-1."""
    from sklearn.cluster import KMeans

    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    grey = image.reshape(h, w, -1).mean(-1) / 255.0 * max(h, w) * 0.5
    features = np.stack([yy.ravel(), xx.ravel(), grey.ravel()], 1).astype(np.float64)
    labels = KMeans(n, n_init=4, random_state=seed).fit_predict(features)
    # Relabel by first appearance, so the numbering is a function of the image alone.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[labels].reshape(h, w)


def shapley_convergence(cfg: ShapleyConfig | None = None, progress=None) -> dict:
    """Mean correlation with the exact values against the images the model saw."""
    from limefast.models import digits

    cfg = cfg or ShapleyConfig()
    trained = digits.load_model()
    model = digits.DigitsClassifier(trained.model)
    curves = {"limefast": {n: [] for n in cfg.budgets},
              "shap (same images, no l1)": {n: [] for n in cfg.budgets}}
    defaults, default_images = [], []
    hide = 0  # the digits' background: a hidden superpixel is blank paper
    for number in range(cfg.images):
        image = trained.data.test_images[number]
        segments = kmeans_segments(image, cfg.superpixels)
        exact, e = limefast_values(model, image, segments, hide, 0, 1 << cfg.superpixels)
        assert e.exact
        label = e.top_labels[0]
        for seed in range(cfg.seeds):
            for n in cfg.budgets:
                ours, _ = limefast_values(model, image, segments, hide, 100 + seed, n, label)
                curves["limefast"][n].append(correlation(ours, exact))
                theirs, _, _ = shap_values(model, image, segments, hide, seed, nsamples=n - 2,
                                           l1_reg=False)
                curves["shap (same images, no l1)"][n].append(
                    correlation(theirs[:, label], exact))
            theirs, _, seen = shap_values(model, image, segments, hide, seed)
            defaults.append(correlation(theirs[:, label], exact))
            default_images.append(seen)
        if progress:
            progress(f"kernelshap convergence: image {number + 1}/{cfg.images}")
    means = {name: {n: float(np.mean(v)) for n, v in curve.items()}
             for name, curve in curves.items()}
    return {"model": "limefast.models.digits CNN", "superpixels": cfg.superpixels,
            "images": cfg.images, "seeds": cfg.seeds, "target": TARGET_CORRELATION,
            "mean_correlation": {name: {str(n): v for n, v in m.items()}
                                 for name, m in means.items()},
            "images_to_target": {name: _first_reaching(m, TARGET_CORRELATION)
                                 for name, m in means.items()},
            "shap_defaults": {"images": int(np.mean(default_images)),
                              "mean_correlation": float(np.mean(defaults))}}


def _first_reaching(curve: dict, target: float):
    """The smallest budget whose mean reaches ``target``, or None."""
    for n in sorted(curve):
        if curve[n] >= target:
            return int(n)
    return None


def shapley_study(cfg: ShapleyConfig | None = None, progress=None) -> dict:
    """Both parts, as the ``kernelshap`` section of ``limefast bench``."""
    cfg = cfg or ShapleyConfig()
    return {"speed": shapley_speed(cfg, progress),
            "convergence": shapley_convergence(cfg, progress)}
