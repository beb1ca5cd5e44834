"""KernelSHAP over superpixels: Shapley values on limefast's machinery.

LIME and KernelSHAP (Lundberg and Lee, NeurIPS 2017) share everything but the weights: switch
superpixels on and off, ask the model, fit a weighted linear model. This explainer runs LIME's
stages (input checks, segmentation, the fudged image, the perturbation kernels and executors, a
``TorchClassifier``'s device included) with the Shapley kernel's coalitions and the fit that
forces the values to add up to the prediction (``limefast.kernelshap.estimator`` says how the
coalitions are chosen and how the values and their standard errors are computed):

- exact when all 2^F coalitions fit in ``num_samples``: every coalition is evaluated once and
  the values are the Shapley values (to rounding), with standard error 0;
- otherwise the full and empty coalitions, the coalition sizes that fit enumerated whole, and
  complementary pairs sampled by size without replacement: each image the model sees is a
  distinct coalition;
- sampled values are regression-adjusted (``regression_adjustment=True``): boosted trees
  model the outputs, their exact Shapley values are taken, and the fit estimates only the
  rest, for a smaller error at the same images;
- always ``sum(values) + base_value == f(image)``, to float rounding.

The same seed gives the same values whatever ``batch_size`` (up to a float32 model's rounding
under other batches). As with LIME, the explainer's random state advances with every
explanation (two draws: the segmentation seed, then the coalitions' seed).

The values and their standard errors are fitted in float64 on the host, for every label against
one KKT matrix; the model's images are built and evaluated by the executor (on the device for a
``TorchClassifier``), and only the explained labels' outputs come back.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from limefast import config
from limefast.core import adaptive, checks, rounds, sampling
from limefast.core.executor import executor_for, one_blas_thread
from limefast.core.explanation import ImageExplanation
from limefast.core.instance import Instance, fudged_image
from limefast.core.rounds import SamplingWarning, explained_columns, labels_to_fit
from limefast.core.seeded import SeededExplainer, check_arguments
from limefast.core.surrogate import ranked
from limefast.kernelshap import adjustment, estimator


class ShapImageExplanation(ImageExplanation):
    """Shapley values of an image's superpixels, with LIME's explanation interface.

    ``ImageExplanation``'s attributes and methods (``get_image_and_mask``, ``render``, ``plot``,
    ``heatmap``, ``interval``) work unchanged; these attributes differ or are added.

    Attributes:
        local_exp: dict label -> list of ``(superpixel, Shapley value)`` by decreasing
            ``|value|``.
        base_value: dict label -> the model on the fully hidden image (every superpixel off);
            ``intercept`` holds the same numbers, ``local_pred[label]`` (shape (1,)) the model
            on the image, which ``base_value + sum(values)`` equals.
        stderr: dict label -> superpixel -> standard error of its value (0 when exact).
        score: dict label -> weighted R^2 of the additive model on the coalitions evaluated.
        exact: whether every coalition was evaluated (the values are then the Shapley values).
        num_samples: coalitions the values come from; num_evaluated: images the model saw.
        stop_reason: as for LIME, or 'exact' when ``"auto"`` (or a time budget) reached
            every coalition.
        converged: as for LIME, and False when too few coalitions were evaluated to tell the
            superpixels apart (fewer than 2F + 2; a ``SamplingWarning`` says so).
    """

    def __init__(self, image: np.ndarray, segments: np.ndarray):
        super().__init__(image, segments)
        self.base_value = {}
        self.exact = False


class KernelShapImageExplainer(SeededExplainer):
    """Explains an image classifier's predictions with Shapley values over superpixels.

    Args:
        random_state: an int, a ``np.random.RandomState``, or None for numpy's global state.
            It advances with every explanation, so two calls on one explainer differ.
    """

    def explain_instance(self, image, classifier_fn: Callable, labels=(1,), hide_color=None,
                         top_labels=5, num_samples=2048, batch_size=10, segmentation_fn=None,
                         random_seed=None, progress_bar=True, *, dedupe=False,
                         max_samples=None, min_samples=None, time_budget=None,
                         stable_features=None, target_overlap=None,
                         min_gain=None, regression_adjustment=True) -> ShapImageExplanation:
        """Shapley values of ``classifier_fn``'s outputs on ``image`` over its superpixels.

        Args:
            image: (H, W, C) or (H, W) image, integer or float; (H, W) goes through gray2rgb.
            classifier_fn: takes (N, H, W, C) arrays of the image's dtype and returns
                (N, n_classes) outputs. The arrays are views of a reused buffer: copy them
                if you keep them. A ``TorchClassifier`` runs on its device.
            labels: labels to explain when ``top_labels`` is falsy.
            hide_color: value of hidden pixels; None fills each superpixel with its mean colour.
            top_labels: explain the K labels with the highest output on the image.
            num_samples: images the model sees (>= 2), the full and empty coalitions included;
                all 2^F coalitions when they fit (exact values). Sampled designs use an even
                count (pairs). Or ``"auto"``: rounds of coalitions until the top
                ``stable_features`` superpixels are likely to be the converged ones (the
                labels' ``expected_overlap``, averaged, reaches ``target_overlap``, or more
                coalitions are projected to add less than ``min_gain`` per 1000: the rule
                of ``limefast.core.adaptive``, on the Shapley values' own covariance; a model
                whose output does not move stops after the first round),
                between ``min_samples`` and ``max_samples`` images. ``"auto"`` never
                evaluates more than ``max_samples`` images, by default the fixed default,
                2048 (``config.SHAP_AUTO_MAX_SAMPLES``).
            batch_size: images per ``classifier_fn`` call, or ``"auto"`` (batches grow while
                the time per image falls). A ``TorchClassifier`` uses its own batch.
            segmentation_fn: callable image -> (H, W) integer labels; default quickshift with
                lime's parameters.
            random_seed: seed for the default segmentation; drawn from ``random_state`` if
                None (lime's order).
            progress_bar: show a tqdm bar over the model's images.
            dedupe: accepted for LIME's signature; every coalition of a design is distinct, so
                the model sees each image once whatever it says.
            max_samples, min_samples: the bounds of ``num_samples="auto"`` (default
                ``config.SHAP_AUTO_MAX_SAMPLES`` and ``config.AUTO_MIN_SAMPLES``).
            time_budget: seconds; rounds of coalitions stop when the next would not fit, and
                the values of the coalitions so far are returned (``stop_reason=
                'time_budget'``, efficiency still exact). The coalitions are then drawn in
                rounds, as for ``"auto"``: a budget that is not reached gives values of the
                same accuracy as without one, but not the same draws.
            stable_features: how many top superpixels ``"auto"`` must settle (default
                ``config.AUTO_STABLE_FEATURES``); every explanation states their
                ``expected_overlap``.
            target_overlap: the ``expected_overlap`` at which ``"auto"`` stops, in (0, 1);
                default ``config.SHAP_AUTO_DEFAULTS``' (0.95).
            min_gain: the least projected gain of ``expected_overlap`` per 1000 more images
                worth them (default ``config.SHAP_AUTO_DEFAULTS``' 0.05; 0 turns it off).
            regression_adjustment: when the values are sampled, fit a tree model of the
                outputs on the coalitions, take its exact Shapley values and estimate only
                the rest by the constrained fit (``adjustment.regression_adjusted``): the same
                images, a smaller error, at the cost of fitting the trees (three per label,
                once, after the last round). False, or a ``time_budget``: the constrained fit
                alone. Exact values are the same either way.

        Returns:
            A ShapImageExplanation.

        Raises:
            ValueError, TypeError: bad arguments, before any work starts.
        """
        start = time.perf_counter()
        image = checks.image_array(image)
        batch_size, labels, top_labels = check_arguments(classifier_fn, segmentation_fn,
                                                         batch_size, labels, top_labels)
        plan = rounds.Rounds.from_arguments(num_samples, max_samples, min_samples, time_budget,
                                            stable_features, dedupe, minimum=2,
                                            target_overlap=target_overlap,
                                            cap=config.SHAP_AUTO_MAX_SAMPLES,
                                            min_gain=min_gain,
                                            defaults=config.SHAP_AUTO_DEFAULTS)
        executor = executor_for(classifier_fn)
        with self._draw_lock():
            instance, design = self._prepare(image, hide_color, segmentation_fn, random_seed)
        explanation = self._run(instance, design, classifier_fn, executor, plan,
                                self._batches(batch_size, instance.image, classifier_fn),
                                labels, top_labels, progress_bar, start,
                                bool(regression_adjustment))
        explanation.timings["total"] = time.perf_counter() - start
        return explanation

    def _prepare(self, image, hide_color, segmentation_fn, random_seed):
        """Segments, fudged image and the coalition design (the explainer's two draws)."""
        image, segments, n_features, seconds = self._segment(image, segmentation_fn,
                                                             random_seed)
        t1 = time.perf_counter()
        fudged = fudged_image(image, segments, n_features, hide_color)
        # Draw 2: the coalitions' own generator, so that rounds drawn later (num_samples="auto")
        # depend on nothing but this seed.
        seed = int(self.random_state.randint(0, 2**31 - 1))
        design = estimator.CoalitionDesign(n_features, np.random.RandomState(seed))
        instance = Instance(image, segments, n_features, fudged,
                            np.zeros((0, n_features), np.int8), np.zeros(0),
                            {"segmentation": seconds, "sampling": time.perf_counter() - t1})
        return instance, design

    def _run(self, instance, design, classifier_fn, executor, plan, batches, labels,
             top_labels, progress_bar, start, adjust=True) -> ShapImageExplanation:
        """The rounds: grow the design, evaluate the new coalitions, fit, check the rule."""
        f = instance.n_features
        n_total = 1 << f if estimator.fits_exactly(f, plan.rows) else plan.rows
        stats = sampling.ModelStats()
        store: dict[bytes, int] = {}  # coalition -> row of the evaluated outputs
        evaluated, stored = [], 0
        columns = top = fit = None
        k = min(plan.stable_features or config.AUTO_STABLE_FEATURES, f)
        figures: list[float] = [float("nan")]
        reason = "max_samples" if plan.auto else "num_samples"
        t_model, t_fit, budget = time.perf_counter(), 0.0, 0
        sizes = plan.sizes(n_total)
        size = next(sizes)
        clock = (rounds.BudgetClock(plan.time_budget, start) if plan.time_budget is not None
                 else None)
        # One round (a fixed count, no budget): every row is new, in order; with rounds, the
        # design's rows are matched to the outputs already evaluated.
        one_round = not plan.auto and plan.time_budget is None

        def fit_rows(rows, keys, final=False):
            outputs = executor.concat(evaluated)
            index = (np.arange(len(keys)) if one_round
                     else np.array([store[key] for key in keys], dtype=np.intp))
            targets = executor.to_numpy(executor.take(outputs, index), columns)
            with one_blas_thread():
                return (adjustment.regression_adjusted if final else estimator.fit)(rows,
                                                                                  targets)

        with tqdm(total=n_total, disable=not progress_bar, desc="limefast") as bar:
            while True:
                t_round = time.perf_counter()
                budget += size
                rows = design.grow(budget)
                if one_round:
                    keys, new = range(len(rows.rows)), list(range(len(rows.rows)))
                else:
                    keys = [row.tobytes() for row in rows.rows]
                    new = [i for i, key in enumerate(keys) if key not in store]
                t_predict = time.perf_counter()
                if new:
                    sub = Instance(instance.image, instance.segments, f, instance.fudged,
                                   rows.rows[new], np.zeros(len(new)), {})
                    evaluated.append(executor.predict([sub], classifier_fn, batches, bar,
                                                      stats)[0])
                    if not one_round:
                        store.update((keys[i], stored + j) for j, i in enumerate(new))
                    stored += len(new)
                t_after_predict = time.perf_counter()
                if columns is None:  # row 0 is the image: the labels come from its outputs
                    first = executor.first_row(evaluated[0])
                    top = labels_to_fit(first, labels, top_labels)
                    columns = explained_columns(first, labels, top_labels)
                if plan.auto or rows.exact or budget >= n_total:
                    t0 = time.perf_counter()
                    fit = fit_rows(rows, keys)
                    t_fit += time.perf_counter() - t0
                if rows.exact:
                    reason = "exact" if plan.auto or plan.time_budget is not None else reason
                    break
                if plan.auto:
                    flat = _flat(fit)
                    if flat.all():  # the model's output does not move: nothing to rank
                        reason = "flat"
                        break
                    with one_blas_thread():
                        per_label = _figures(fit, k, budget, n_total)
                        figures = [x.stated for x in per_label]
                        live = [x for x, dead in zip(per_label, flat) if not dead]
                        # at the cap an exhaustive design is exact: more rows always pay
                        stop = fit.identified and adaptive.decide(
                            [x.stated for x in live],
                            lambda live=live: [x.gains() for x in live],
                            budget, n_total, plan.target,
                            0.0 if estimator.fits_exactly(f, n_total) else plan.min_gain)
                    if stop:
                        reason = stop
                        break
                if budget >= n_total:
                    break
                size = next(sizes)
                if clock is not None:
                    size = clock.next_round(size, len(new), t_round, t_predict,
                                            t_after_predict)
                    if size < 1:
                        reason = "time_budget"
                        break
        if fit is None:  # a fixed count cut by its time budget: fit what was evaluated
            fit = fit_rows(rows, keys)
        # Under a time budget the plain fit stays: the trees' time is not known ahead.
        if (adjust and plan.time_budget is None and not rows.exact and fit.identified
                and reason != "flat"):
            # Once, on the last round's coalitions: the rounds' rule ran on the plain fit,
            # whose errors are the larger, so it never stopped early for the adjustment.
            t0 = time.perf_counter()
            fit = fit_rows(rows, keys, final=True)
            t_fit += time.perf_counter() - t0
        instance.timings["perturb_and_model"] = time.perf_counter() - t_model - t_fit
        instance.timings["model"] = stats.seconds
        instance.timings["shapley"] = t_fit
        explanation = _explanation(instance, rows, fit, top, columns, top_labels, k)
        explanation.prediction = np.array(first, dtype=np.float64)
        explanation.target_overlap = plan.target if plan.auto else None
        explanation.min_gain = plan.min_gain if plan.auto else None
        explanation.num_evaluated = stats.images
        explanation.stop_reason = reason
        explanation.converged = reason in ("settled", "num_samples", "exact") and fit.identified
        if not fit.identified:
            warnings.warn(
                f"limefast: {explanation.num_samples} coalitions cannot tell {f} superpixels "
                "apart: the values are the smallest that add up, their standard errors nan, "
                f"and converged=False (num_samples of at least {2 * f + 2} identifies them)",
                SamplingWarning, stacklevel=3)
        elif reason == "flat":
            warnings.warn(rounds.flat_warning(stats.images), SamplingWarning, stacklevel=3)
        elif plan.auto and not explanation.converged and reason != "diminishing":
            warnings.warn(
                f"limefast: num_samples='auto' stopped at {stats.images} images ({reason}) "
                f"with an expected overlap of {np.mean(figures):.2f} "
                f"between the top {k} superpixels shown and the converged ones, short of "
                f"target_overlap={plan.target}; the explanation says converged=False (raise "
                "max_samples / time_budget)", SamplingWarning, stacklevel=3)
        return explanation


def _explanation(instance, rows, fit, top, columns, top_labels, k) -> ShapImageExplanation:
    explanation = ShapImageExplanation(instance.image, instance.segments)
    if top_labels:
        explanation.top_labels = [int(label) for label in reversed(list(top))]
    features = np.arange(instance.n_features, dtype=np.int64)
    for label in top:
        j = columns.index(int(label))
        values, se = fit.values[:, j], fit.stderr[:, j]
        base = np.float64(fit.base[j])
        explanation.local_exp[label] = ranked(features, values)
        explanation.stderr[label] = {int(f): float(s) for f, s in zip(features, se)}
        explanation.base_value[label] = base
        explanation.intercept[label] = base
        explanation.local_pred[label] = np.array([base + values.sum()])
        explanation.score[label] = float(fit.score[j])
    figures = _overlaps(fit, k)
    explanation.top_k = k
    explanation.expected_overlap = {label: figures[columns.index(int(label))] for label in top}
    explanation.exact = rows.exact
    explanation.num_samples = int(rows.rows.shape[0])
    explanation.timings = instance.timings
    return explanation


def _flat(fit) -> np.ndarray:
    """(L,) bool: the label's values are float rounding (its outputs never moved)."""
    size = np.maximum(1.0, np.abs(fit.base))
    return np.abs(fit.values).max(axis=0) <= config.AUTO_FLAT_TOLERANCE * size


def _figures(fit, k: int, n: int, cap: int) -> list:
    """Every label's ``adaptive.Figures`` after ``n`` coalitions of at most ``cap`` (chance
    for a flat label; nan when the superpixels cannot be told apart)."""
    n_features, n_labels = fit.values.shape
    if not fit.identified:
        return [adaptive.Figures.fixed(float("nan"))] * n_labels
    flat = _flat(fit)
    return [adaptive.Figures.fixed(min(k, n_features) / n_features) if flat[j] else
            adaptive.Figures(fit.values[:, j], fit.cov[:, :, j], min(k, n_features), n, cap)
            for j in range(n_labels)]


def _overlaps(fit, k: int) -> list[float]:
    """Every label's ``expected_overlap`` of its top k values (``limefast.core.adaptive``, on
    the values' own covariance); nan when the coalitions cannot tell the superpixels apart."""
    n_features, n_labels = fit.values.shape
    if not fit.identified:
        return [float("nan")] * n_labels
    flat = _flat(fit)
    return [min(k, n_features) / n_features if flat[j] else
            adaptive.expected_overlap(fit.values[:, j], fit.cov[:, :, j],
                                      adaptive.top_set(fit.values[:, j], k))
            for j in range(n_labels)]
