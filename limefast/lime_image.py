"""Drop-in replacement for ``lime.lime_image``: the same explanations, from compiled kernels.

``from limefast import lime_image`` in place of ``from lime import lime_image`` gives, for the same
seed, image, segmentation and classifier, the explanation lime 0.2.0.1 gives (up to floating-point
rounding in the surrogate), except for the reference's known defects, which are fixed on purpose
(docs/guide/lime.md): per-label ``score`` and ``local_pred``, segments relabelled 0..n-1, copied
classifier outputs, any channel count.

Importing it costs numpy and little more: the stages that need Numba's kernels, scipy and tqdm
(``limefast.core.rounds``, ``sampling``, ``executor``, ``instance``) are imported by the first
explanation, and meanwhile by the background load ``import limefast`` started
(``limefast._warmup``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from limefast import config
from limefast.core import adaptive, checks
from limefast.core.explanation import ImageExplanation
from limefast.core.seeded import SeededExplainer, check_arguments
from limefast.core.surrogate import FEATURE_SELECTION_METHODS

if TYPE_CHECKING:  # imported on use (``__getattr__``, the methods)
    from limefast.core.instance import Instance
    from limefast.core.rounds import PerformanceHint, SamplingWarning

__all__ = ["ImageExplanation", "LimeImageExplainer", "PerformanceHint", "SamplingWarning",
           "exponential_kernel"]


def __getattr__(name):
    """The warnings' classes, from their home (``limefast.core.rounds``) when first asked for."""
    if name in ("PerformanceHint", "SamplingWarning"):
        from limefast.core import rounds

        return getattr(rounds, name)
    raise AttributeError(f"module 'limefast.lime_image' has no attribute {name!r}")


def exponential_kernel(d, kernel_width):
    """lime's default similarity kernel, ``sqrt(exp(-d**2 / kernel_width**2))``."""
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


class LimeImageExplainer(SeededExplainer):
    """Explains predictions on image data (``lime.lime_image.LimeImageExplainer``'s twin).

    Args:
        kernel_width: kernel width for the exponential kernel.
        kernel: similarity kernel ``kernel(distances, kernel_width)``; default
            ``sqrt(exp(-d**2 / kernel_width**2))``.
        verbose: print each label's intercept and local prediction, as lime does.
        feature_selection: 'auto', 'none', 'forward_selection', 'highest_weights' or
            'lasso_path'.
        random_state: an int, a ``np.random.RandomState``, or None for numpy's global state.
            It advances with every explanation, as lime's does, so two calls differ.
    """

    def __init__(self, kernel_width=.25, kernel=None, verbose=False,
                 feature_selection='auto', random_state=None):
        kernel_width = float(kernel_width)
        if not (np.isfinite(kernel_width) and kernel_width > 0):
            # lime accepts it, then every kernel weight is 0 and the fit divides by zero
            raise ValueError(f"kernel_width must be a positive number; got {kernel_width!r}")
        if kernel is None:
            kernel = exponential_kernel
        elif not callable(kernel):
            raise TypeError(f"kernel must be callable(d, kernel_width); got {kernel!r}")
        if feature_selection not in FEATURE_SELECTION_METHODS:
            raise ValueError(
                f"feature_selection must be one of {FEATURE_SELECTION_METHODS}; "
                f"got {feature_selection!r}"
            )
        super().__init__(random_state)
        self.kernel_fn = partial(kernel, kernel_width=kernel_width)
        self.verbose = verbose
        self.feature_selection = feature_selection

    def explain_instance(self, image, classifier_fn: Callable, labels=(1,), hide_color=None,
                         top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                         segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                         random_seed=None, progress_bar=True, *, dedupe=False,
                         max_samples=None, min_samples=None, time_budget=None,
                         stable_features=None, target_overlap=None,
                         min_gain=None, sampler=None) -> ImageExplanation:
        """Explain ``classifier_fn``'s prediction on ``image``.

        Without the keyword-only switches this is lime's ``explain_instance``, draw for draw.

        Args:
            image: (H, W, C) or (H, W) image, integer or float; (H, W) goes through gray2rgb.
            classifier_fn: takes (N, H, W, C) arrays of the image's dtype and returns
                (N, n_classes) probabilities. The arrays are views of a reused buffer: copy
                them if you keep them.
            labels: labels to explain when ``top_labels`` is falsy.
            hide_color: value of hidden pixels; None fills each superpixel with its mean colour.
            top_labels: explain the K labels with the highest probability on the image.
            num_features: maximum number of superpixels in each explanation.
            num_samples: number of perturbed images, or ``"auto"``: rows are drawn in rounds
                until the top superpixels shown are likely to be the converged ones (the
                explained labels' ``expected_overlap``, averaged, reaches ``target_overlap``)
                or more rows would not pay (it is projected to gain less than ``min_gain``
                per 1000 more rows; ``limefast.core.adaptive`` states the rule), between
                ``min_samples`` and
                ``max_samples``. ``"auto"`` never evaluates more than ``max_samples`` images,
                by default 1000, lime's default: an explanation that reaches the cap is
                lime's explanation at 1000 samples for the same seed, the same rows.
            batch_size: images per ``classifier_fn`` call, or ``"auto"``: batches grow while
                the time per image falls (``limefast.core.sampling.BatchSizer``). A
                ``TorchClassifier`` always uses its own batch.
            segmentation_fn: callable image -> (H, W) integer labels; default quickshift with
                lime's parameters (``limefast.segmentation.LIME_QUICKSHIFT``).
            distance_metric: metric on the 0/1 rows, by scikit-learn name or a callable.
            model_regressor: a scikit-learn regressor used in place of ``Ridge(alpha=1)``.
            random_seed: seed for the segmentation; drawn from ``random_state`` if None.
            progress_bar: show a tqdm bar over the samples.
            dedupe: the model sees each distinct 0/1 row once and its output is copied to the
                repeats: the same explanation for a deterministic classifier. A classifier
                whose answer for one image varies (dropout left on, sampling) must not be used
                with it; a repeated row is checked once and a ValueError raised when it differs.
            max_samples, min_samples: the bounds of ``num_samples="auto"`` (default
                ``config.AUTO_MAX_SAMPLES``, 1000, and ``config.AUTO_MIN_SAMPLES``, the first
                round); ``max_samples`` below the first round is a ValueError.
            time_budget: seconds; rounds stop when the next would not fit, and the explanation
                of the rows so far is returned (``stop_reason='time_budget'``). With an integer
                ``num_samples`` that is the most rows drawn.
            stable_features: the number of top superpixels whose set ``"auto"`` must settle;
                default ``num_features`` when it is smaller than the superpixel count, else 5.
                Every explanation states, in ``expected_overlap[label]``, the expected share
                of these that the converged explanation shares.
            target_overlap: the ``expected_overlap`` at which ``"auto"`` stops, in (0, 1);
                default per fill (``limefast.core.rounds.auto_defaults``: 0.97 with the mean
                fill, ``config.AUTO_CONSTANT_FILL``'s 0.92 with a ``hide_color``).
            min_gain: ``"auto"`` also stops once the ``expected_overlap`` is projected to
                rise by less than this per 1000 more rows (and is at least
                ``config.AUTO_GAIN_FLOOR``); default per fill (0.04 with the mean fill, 0
                with a ``hide_color``); 0 turns it off.
            sampler: the design of the 0/1 rows: ``"lime"``, lime's independent rows, draw
                for draw; or ``"paired"``, complement pairs (``z`` and ``1 - z``; the first
                pair is all ones and all zeros): each row keeps lime's distribution, so the
                explanation converges to lime's, with less noise at a given count where the
                model's answer has interactions between superpixels. Paired rows come in
                twos: an odd count is rounded up (``num_samples`` on the explanation records
                the count used), and their standard errors treat a pair as one draw. Default:
                ``"lime"`` for a fixed ``num_samples``, ``config.AUTO_SAMPLER`` for
                ``"auto"`` (so ``"auto"`` converges to lime's explanation rather than taking
                lime's rows).

        Returns:
            An ImageExplanation.
        """
        return self.explain_batch(
            [image], classifier_fn, labels=labels, hide_color=hide_color, top_labels=top_labels,
            num_features=num_features, num_samples=num_samples, batch_size=batch_size,
            segmentation_fn=segmentation_fn, distance_metric=distance_metric,
            model_regressor=model_regressor, random_seed=random_seed, progress_bar=progress_bar,
            dedupe=dedupe, max_samples=max_samples, min_samples=min_samples,
            time_budget=time_budget, stable_features=stable_features,
            target_overlap=target_overlap, min_gain=min_gain, sampler=sampler,
        )[0]

    def explain_batch(self, images, classifier_fn: Callable, labels=(1,), hide_color=None,
                      top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                      segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                      random_seed=None, progress_bar=True, *, dedupe=False, max_samples=None,
                      min_samples=None, time_budget=None, stable_features=None,
                      target_overlap=None, min_gain=None,
                      sampler=None) -> list[ImageExplanation]:
        """Explain several images: what ``explain_instance`` on each in turn would return.

        The random state is drawn in the same order as those calls would draw it, while the
        perturbed samples of consecutive images of one shape share ``classifier_fn`` batches
        (with ``dedupe``, ``num_samples="auto"`` or a ``time_budget``, each image runs on
        its own, the budget counting from its own start).
        Arguments as for ``explain_instance``; ``images`` is a sequence of images.

        Returns:
            A list of ImageExplanation, one per image.
        """
        from limefast.core import rounds, sampling
        from limefast.core.executor import executor_for

        start = time.perf_counter()
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ValueError(
                f"explain_batch takes a sequence of images; got one array of shape "
                f"{images.shape} (wrap it in a list, or use explain_instance)"
            )
        images = [checks.image_array(image) for image in images]
        if not images:
            return []
        batch_size, labels, top_labels = check_arguments(classifier_fn, segmentation_fn,
                                                         batch_size, labels, top_labels)
        plan = rounds.Rounds.from_arguments(num_samples, max_samples, min_samples, time_budget,
                                            stable_features, dedupe,
                                            target_overlap=target_overlap,
                                            min_gain=min_gain, sampler=sampler,
                                            hide_color=hide_color)
        num_features = checks.positive_int("num_features", num_features)
        executor = executor_for(classifier_fn)

        with self._draw_lock():
            instances = [
                self._prepare(image, hide_color, segmentation_fn, plan.rows, random_seed,
                              distance_metric, plan.sampler)
                for image in images
            ]
        if plan.per_image:
            return [rounds.explain_in_rounds(
                inst, classifier_fn, executor, plan,
                self._batches(batch_size, inst.image, classifier_fn),
                self._kernel_weights(inst.distances), labels, top_labels, num_features,
                progress_bar, start if i == 0 else None,
                partial(self._finish, executor=executor, labels=labels, top_labels=top_labels,
                        num_features=num_features, model_regressor=model_regressor,
                        stable_features=plan.stable_features))
                for i, inst in enumerate(instances)]
        stats = sampling.ModelStats()
        t0 = time.perf_counter()
        predictions = executor.predict(instances, classifier_fn,
                                       self._batches(batch_size, instances[0].image, classifier_fn),
                                       progress_bar, stats)
        model_time = (time.perf_counter() - t0) / len(instances)
        explanations = []
        for instance, prediction in zip(instances, predictions):
            instance.timings["perturb_and_model"] = model_time
            instance.timings["model"] = stats.seconds / len(instances)
            explanation = self._finish(instance, prediction, executor, labels, top_labels,
                                       num_features, model_regressor, plan.stable_features)
            explanation.num_evaluated = instance.data.shape[0]
            explanations.append(explanation)
        self._hint(stats, time.perf_counter() - start, batch_size, instances)
        return explanations

    def _hint(self, stats, total: float, batch_size, instances) -> None:
        """Once per explainer: say so when a Python classifier spends most of an explanation
        in small batches, and what ``batch_size="auto"`` and ``dedupe=True`` would do."""
        if (getattr(self, "_hinted", False) or batch_size == "auto" or stats.calls < 10
                or total < config.HINT_MIN_SECONDS
                or stats.seconds < config.HINT_MODEL_SHARE * total
                or stats.largest_batch > config.HINT_SMALL_BATCH):
            return
        self._hinted = True
        from limefast.core.rounds import PerformanceHint, distinct_rows

        rows = sum(inst.data.shape[0] for inst in instances)
        distinct = sum(distinct_rows(inst.data) for inst in instances)
        warnings.warn(
            f"limefast: classifier_fn took {stats.seconds / total:.0%} of {total:.2f} s in "
            f"{stats.calls} calls of at most {stats.largest_batch} images; "
            f"batch_size='auto' would call it with larger batches"
            + (f", and dedupe=True would evaluate {distinct} distinct images instead of {rows}"
               if distinct < rows else "")
            + " (the same explanation for a deterministic classifier)",
            PerformanceHint, stacklevel=4)

    def _prepare(self, image, hide_color, segmentation_fn, num_samples, random_seed,
                 distance_metric, sampler="lime") -> Instance:
        """Everything before the model: segments, fudged image, the 0/1 rows and distances."""
        from limefast.core import sampling
        from limefast.core.instance import Instance, fudged_image

        image, segments, n_features, seconds = self._segment(image, segmentation_fn,
                                                             random_seed)  # RNG draw 1
        t1 = time.perf_counter()
        fudged = fudged_image(image, segments, n_features, hide_color)
        data = sampling.draw_rows(self.random_state, num_samples, n_features,
                                  sampler)  # RNG draw 2
        distances = sampling.row_distances(data, distance_metric)
        timings = {"segmentation": seconds, "sampling": time.perf_counter() - t1}
        return Instance(image, segments, n_features, fudged, data, distances, timings, sampler)

    def _kernel_weights(self, distances) -> np.ndarray:
        weights = np.asarray(self.kernel_fn(distances), dtype=np.float64)
        if weights.shape != distances.shape:
            raise ValueError(
                f"kernel must return one weight per sample, shape {distances.shape}; "
                f"got shape {weights.shape}"
            )
        return weights

    def _finish(self, instance, predictions, executor, labels, top_labels, num_features,
                model_regressor, stable_features=None) -> ImageExplanation:
        """Labels to explain, kernel weights, the surrogate and its stated overlap: the
        ImageExplanation."""
        from limefast.core.rounds import labels_to_fit

        t0 = time.perf_counter()
        explanation = ImageExplanation(instance.image, instance.segments)
        first = executor.first_row(predictions)
        explanation.prediction = np.array(first, dtype=np.float64)
        top = labels_to_fit(first, labels, top_labels)
        if top_labels:
            explanation.top_labels = list(top)
            explanation.top_labels.reverse()
        weights = self._kernel_weights(instance.distances)
        fits = executor.fit(instance, predictions, weights, top, num_features,
                            self.feature_selection, model_regressor)
        for label in top:
            fit = fits[label]
            explanation.intercept[label] = fit.intercept
            explanation.local_exp[label] = fit.local_exp
            explanation.score[label] = fit.score
            explanation.local_pred[label] = fit.local_pred
            explanation.stderr[label] = fit.stderr
            if self.verbose:
                print('Intercept', fit.intercept)
                print('Prediction_local', fit.local_pred,)
                print('Right:', first[label])
        explanation.num_samples = instance.data.shape[0]
        explanation.sampler = instance.sampler
        self._state_overlap(explanation, instance, predictions, executor, weights, top,
                            num_features, stable_features)
        instance.timings["surrogate"] = time.perf_counter() - t0
        explanation.timings = instance.timings
        return explanation

    @staticmethod
    def _state_overlap(explanation, instance, predictions, executor, weights, top,
                       num_features, stable_features) -> None:
        """``expected_overlap[label]``: how likely the shown top k is the converged one
        (``limefast.core.adaptive``)."""
        k = adaptive.shown_count(stable_features, num_features, instance.n_features)
        explanation.top_k = k
        if instance.data.shape[0] <= instance.n_features + 1:  # no residual to estimate from
            explanation.expected_overlap = {label: float("nan") for label in top}
            return
        if instance.n_features > config.AUTO_JOINT_MAX_FEATURES:
            # the joint covariance costs F^3: beyond this many superpixels, the weights'
            # own standard errors, drawn independently
            explanation.expected_overlap = {
                label: _diagonal_overlap(explanation, label, k, instance.n_features)
                for label in top}
            return
        from limefast.core.executor import one_blas_thread

        columns = list(dict.fromkeys(int(label) for label in top))
        targets = executor.to_numpy(predictions, columns)
        shown = [[f for f, _ in explanation.local_exp[label][:k]] for label in columns]
        with one_blas_thread():
            figures = adaptive.stated_overlaps(instance.data, targets, weights, shown,
                                               unit=instance.unit)
        explanation.expected_overlap = {label: figures[columns.index(int(label))]
                                        for label in top}

    def warmup(self, image_shape, classifier, num_samples=1000, dtype=np.uint8, top_labels=5,
               num_features=100000, segmentation_fn=None, hide_color=None):
        """Pay an explanation's one-time costs now: kernels compiled, buffers allocated, the
        model run at every batch shape, so that the first ``explain_instance`` of images of
        ``image_shape`` is as fast as the next ones.

        A device classifier (``TorchClassifier``) allocates its buffers for ``num_samples``
        samples and runs its forward; then a short explanation of a synthetic image, with a
        random state of its own, goes through every stage. ``self.random_state`` is not drawn
        from, so explanations after a warm-up equal those without one.

        Args:
            image_shape: (H, W, C) or (H, W) of the images to come.
            classifier: the ``classifier_fn`` they will be explained with.
            num_samples, top_labels, num_features, segmentation_fn, hide_color: as the
                explanations to come will use them.
            dtype: the images' dtype.
        """
        from limefast.core.executor import executor_for

        image_shape = tuple(int(s) for s in image_shape)
        num_samples = checks.positive_int("num_samples", num_samples)
        rng = np.random.RandomState(0)
        # A smooth synthetic image (segmentations of noise are not like those of photos).
        h, w = image_shape[:2]
        coarse = rng.rand(*((-(-h // 16), -(-w // 16)) + image_shape[2:]))
        smooth = np.kron(coarse, np.ones((16, 16) + (1,) * (len(image_shape) - 2)))[:h, :w]
        dtype = np.dtype(dtype)
        image = (smooth * (255 if dtype.kind in "iu" else 1)).astype(dtype)
        rgb_shape = image_shape if len(image_shape) == 3 else image_shape + (3,)
        samples = executor_for(classifier).warmup(rgb_shape, dtype, num_samples)
        scratch = LimeImageExplainer(feature_selection=self.feature_selection, random_state=0)
        scratch.kernel_fn = self.kernel_fn
        scratch.explain_instance(image, classifier, num_samples=samples, top_labels=top_labels,
                                 num_features=num_features, segmentation_fn=segmentation_fn,
                                 hide_color=hide_color, progress_bar=False)


def _diagonal_overlap(explanation, label, k: int, n_features: int) -> float:
    """``expected_overlap`` from the weights and their standard errors alone."""
    weights, variances = np.zeros(n_features), np.zeros(n_features)
    for f, w in explanation.local_exp[label]:
        weights[f] = w
        variances[f] = explanation.stderr[label].get(f, 0.0) ** 2
    shown = [f for f, _ in explanation.local_exp[label][:k]]
    return adaptive.expected_overlap(weights, variances, shown)
