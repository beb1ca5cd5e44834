"""Drop-in replacement for ``lime.lime_image``: the same explanations, from compiled kernels.

``from limefast import lime_image`` in place of ``from lime import lime_image`` gives, for the same
seed, image, segmentation and classifier, the explanation lime 0.2.0.1 gives (up to floating-point
rounding in the surrogate), except for the reference's known defects, which are fixed on purpose
(see the README): per-label ``score`` and ``local_pred``, segments relabelled 0..n-1, copied
classifier outputs, any channel count.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
from skimage.color import gray2rgb
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from . import _checks, adaptive, config, sampling
from .executor import Instance, executor_for
from .kernels.segment_means import segment_means
from .surrogate import FEATURE_SELECTION_METHODS


class ImageExplanation:
    """An explanation: per-label surrogate weights over the image's superpixels.

    Attributes:
        image: (H, W, C) the explained image (RGB if a grayscale image was given).
        segments: (H, W) integer superpixel labels 0..n-1; feature ``z`` is segment ``z``.
        intercept, local_exp, score, local_pred: dicts keyed by label. ``local_exp[label]`` is a
            list of ``(feature, weight)`` sorted by decreasing ``|weight|``.
        top_labels: labels by decreasing predicted probability (only with ``top_labels=``).
        stderr: dict keyed by label: feature -> standard error of its weight (HC1 sandwich of
            the weighted ridge: how much the weight would move with other random rows).
        num_samples: the 0/1 rows the surrogate was fitted on.
        num_evaluated: the images the model saw (fewer than ``num_samples`` with ``dedupe``).
        converged: False when the rows stopped short: ``num_samples="auto"`` at
            ``max_samples`` before the ranking settled, or any explanation cut by its
            ``time_budget``; True otherwise.
        stop_reason: 'num_samples' (the fixed count), 'settled', 'max_samples' or
            'time_budget'.
        timings: seconds spent in each stage of the explanation.
    """

    def __init__(self, image: np.ndarray, segments: np.ndarray):
        self.image = image
        self.segments = segments
        self.intercept = {}
        self.local_exp = {}
        self.local_pred = {}
        self.score = {}
        self.stderr = {}
        self.num_samples = 0
        self.num_evaluated = 0
        self.converged = True
        self.stop_reason = "num_samples"
        self.timings = {}

    def interval(self, label, confidence: float = 0.9) -> dict:
        """feature -> (low, high): the normal ``confidence`` interval of each weight
        (``w +- z * stderr``; nan where no standard error is known)."""
        from .render import two_sided_z

        z = two_sided_z(confidence)
        if label not in self.local_exp:
            raise KeyError('Label not in explanation')
        se = self.stderr.get(label, {})
        return {f: (w - z * se.get(f, np.nan), w + z * se.get(f, np.nan))
                for f, w in self.local_exp[label]}

    def get_image_and_mask(self, label, positive_only=True, negative_only=False, hide_rest=False,
                           num_features=5, min_weight=0.):
        """The image with the explanation's superpixels marked, and their mask.

        Args:
            label: label to show; KeyError if it was not explained.
            positive_only: only superpixels with positive weight above ``min_weight``.
            negative_only: only superpixels with negative weight, ``|w| > min_weight``.
                If neither, the first ``num_features`` superpixels of either sign with
                ``|w| >= min_weight`` are marked -1 (negative) or +1, and channel 0 (negative)
                or 1 (positive) of their pixels is set to the image's maximum.
            hide_rest: start from a float64 black image instead of a copy of the image.
            num_features: how many superpixels to take.
            min_weight: minimum weight of a superpixel to take.

        Returns:
            (image, mask): (H, W, C) image and (H, W) mask of the segments' dtype, for
            ``skimage.segmentation.mark_boundaries``.
        """
        if label not in self.local_exp:
            raise KeyError('Label not in explanation')
        if positive_only & negative_only:
            raise ValueError("Positive_only and negative_only cannot be true at the same time.")
        segments, image, exp = self.segments, self.image, self.local_exp[label]
        temp = np.zeros(image.shape) if hide_rest else image.copy()
        lut = np.zeros(int(segments.max()) + 1, dtype=np.int8)
        if positive_only or negative_only:
            if positive_only:
                fs = [f for f, w in exp if w > 0 and w > min_weight][:num_features]
            else:
                fs = [f for f, w in exp if w < 0 and abs(w) > min_weight][:num_features]
            lut[np.asarray(fs, dtype=np.intp)] = 1
            mask = lut[segments].astype(segments.dtype)
            chosen = mask.astype(bool)
            temp[chosen] = image[chosen]
            return temp, mask
        for f, w in exp[:num_features]:
            if np.abs(w) < min_weight:
                continue
            lut[f] = -1 if w < 0 else 1
        mask = lut[segments].astype(segments.dtype)
        chosen = mask != 0
        temp[chosen] = image[chosen]
        if chosen.any():
            if image.ndim != 3 or image.shape[2] < 2:
                raise ValueError(
                    "marking both signs colours channel 0 or 1: it needs an image with at least "
                    f"2 channels; got shape {image.shape} (use positive_only or negative_only)"
                )
            peak = np.max(image)
            temp[mask == -1, 0] = peak
            temp[mask == 1, 1] = peak
        return temp, mask

    def render(self, label=None, *, positive="green", negative="red", coverage=0.05,
               opacity=0.6, num_segments=None, boundaries=True, as_pil=False,
               fade_uncertain=False, confidence=0.9):
        """The image with the label's strongest superpixels tinted and outlined.

        Args:
            label: label to show; default the first top label (or first explained label).
            positive, negative, coverage, opacity, num_segments, boundaries, as_pil: as for
                ``limefast.render_explanation``.
            fade_uncertain: fade the superpixels whose ``confidence`` interval
                (``w +- z * stderr``) crosses zero: the explanation is not sure of their sign.

        Returns:
            (H, W, 3) uint8 array, or a PIL image with ``as_pil=True``.
        """
        from .render import explanation_label, render_explanation

        label = explanation_label(self, label)
        stderr = self.stderr.get(label, {}) if fade_uncertain else None
        return render_explanation(self.image, self.segments, self.local_exp[label],
                                  positive=positive, negative=negative, coverage=coverage,
                                  opacity=opacity, num_segments=num_segments,
                                  boundaries=boundaries, as_pil=as_pil, stderr=stderr,
                                  confidence=confidence)

    def plot(self, label=None, ax=None, **kwargs):
        """A bar chart of the label's strongest weights with their intervals, into a
        matplotlib Axes (a new figure when ``ax`` is None); ``kwargs`` as for
        ``limefast.render.plot_explanation``.

        Returns:
            The matplotlib Axes.
        """
        from .render import plot_explanation

        return plot_explanation(self, label, ax, **kwargs)

    def heatmap(self, label=None, *, colored=False, as_pil=False, **kwargs):
        """The label's weight of every pixel's superpixel.

        Args:
            label: label to show; default the first top label (or first explained label).
            colored: return colours (``limefast.render.heatmap``, which takes ``kwargs``)
                instead of the weights.
            as_pil: return a coloured PIL image.

        Returns:
            (H, W) float64 weights; with ``colored`` a (H, W, 3) uint8 array or PIL image.
        """
        from . import render

        label = render.explanation_label(self, label)
        if not (colored or as_pil):
            return render.weight_map(self.segments, self.local_exp[label])
        return render.heatmap(self.segments, self.local_exp[label], as_pil=as_pil, **kwargs)

    def _repr_png_(self):
        """Notebooks show the first label: the tinted image beside its heatmap."""
        from . import render

        label = render.explanation_label(self)
        return render.png_bytes(render.panel([
            (f"label {label}", self.render(label)),
            ("weights", self.heatmap(label, colored=True, image=self.image)),
        ], tile=max(160, min(320, self.segments.shape[0]))))


def exponential_kernel(d, kernel_width):
    """lime's default similarity kernel, ``sqrt(exp(-d**2 / kernel_width**2))``."""
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


class LimeImageExplainer:
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
        if kernel is None:
            kernel = exponential_kernel
        elif not callable(kernel):
            raise TypeError(f"kernel must be callable(d, kernel_width); got {kernel!r}")
        if feature_selection not in FEATURE_SELECTION_METHODS:
            raise ValueError(
                f"feature_selection must be one of {FEATURE_SELECTION_METHODS}; "
                f"got {feature_selection!r}"
            )
        self.kernel_fn = partial(kernel, kernel_width=kernel_width)
        self.verbose = verbose
        self.random_state = check_random_state(random_state)
        self.feature_selection = feature_selection
        self._lock = threading.RLock()

    def _draw_lock(self):
        return _GLOBAL_RNG_LOCK if self.random_state is np.random.mtrand._rand else self._lock

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def explain_instance(self, image, classifier_fn: Callable, labels=(1,), hide_color=None,
                         top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                         segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                         random_seed=None, progress_bar=True, *, dedupe=False,
                         max_samples=None, min_samples=None, time_budget=None,
                         stable_features=None) -> ImageExplanation:
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
                until the ranking shown for every explained label is settled
                (``limefast.adaptive`` states the rule), between ``min_samples`` and
                ``max_samples``.
            batch_size: images per ``classifier_fn`` call, or ``"auto"``: batches grow while
                the time per image falls (``limefast.sampling.BatchSizer``). A
                ``TorchClassifier`` always uses its own batch.
            segmentation_fn: callable image -> (H, W) integer labels; default quickshift with
                lime's parameters (kernel_size=4, max_dist=200, ratio=0.2).
            distance_metric: metric on the 0/1 rows, by scikit-learn name or a callable.
            model_regressor: a scikit-learn regressor used in place of ``Ridge(alpha=1)``.
            random_seed: seed for the segmentation; drawn from ``random_state`` if None.
            progress_bar: show a tqdm bar over the samples.
            dedupe: the model sees each distinct 0/1 row once and its output is copied to the
                repeats: the same explanation for a deterministic classifier. A classifier
                whose answer for one image varies (dropout left on, sampling) must not be used
                with it; a repeated row is checked once and a ValueError raised when it differs.
            max_samples, min_samples: the bounds of ``num_samples="auto"`` (default
                ``config.AUTO_MAX_SAMPLES`` and ``config.AUTO_MIN_SAMPLES``).
            time_budget: seconds; rounds stop when the next would not fit, and the explanation
                of the rows so far is returned (``stop_reason='time_budget'``). With an integer
                ``num_samples`` that is the most rows drawn.
            stable_features: the number of top superpixels whose set ``"auto"`` must settle;
                default ``num_features`` when it is smaller than the superpixel count, else 5.

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
        )[0]

    def explain_batch(self, images, classifier_fn: Callable, labels=(1,), hide_color=None,
                      top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                      segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                      random_seed=None, progress_bar=True, *, dedupe=False, max_samples=None,
                      min_samples=None, time_budget=None,
                      stable_features=None) -> list[ImageExplanation]:
        """Explain several images: what ``explain_instance`` on each in turn would return.

        The random state is drawn in the same order as those calls would draw it, while the
        perturbed samples of consecutive images of one shape share ``classifier_fn`` batches
        (with ``dedupe``, ``num_samples="auto"`` or a ``time_budget``, each image runs on
        its own, the budget counting from its own start).
        Arguments as for ``explain_instance``; ``images`` is a sequence of images.

        Returns:
            A list of ImageExplanation, one per image.
        """
        start = time.perf_counter()
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ValueError(
                f"explain_batch takes a sequence of images; got one array of shape "
                f"{images.shape} (wrap it in a list, or use explain_instance)"
            )
        images = [_checks.image_array(image) for image in images]
        if not images:
            return []
        if not callable(classifier_fn):
            raise TypeError(f"classifier_fn must be callable; got {type(classifier_fn).__name__}")
        rounds = _Rounds.from_arguments(num_samples, max_samples, min_samples, time_budget,
                                        stable_features, dedupe)
        batch_size = _checks.int_or_auto("batch_size", batch_size)
        num_features = _checks.positive_int("num_features", num_features)
        if top_labels:
            top_labels = _checks.positive_int("top_labels", top_labels)
        else:  # types now; the range once the classifier has said how many classes it has
            labels = _checks.label_list(labels, n_classes=None)
        if segmentation_fn is not None and not callable(segmentation_fn):
            raise TypeError(f"segmentation_fn must be callable; got {segmentation_fn!r}")
        executor = executor_for(classifier_fn)

        # The draws are the explanation: threads sharing a random state take turns drawing, so
        # each explanation equals what sequential calls in that order would give.
        with self._draw_lock():
            instances = [
                self._prepare(image, hide_color, segmentation_fn, rounds.rows, random_seed,
                              distance_metric)
                for image in images
            ]
        if rounds.per_image:
            return [self._explain_in_rounds(inst, classifier_fn, executor, rounds, batch_size,
                                            labels, top_labels, num_features, model_regressor,
                                            progress_bar, start if i == 0 else None)
                    for i, inst in enumerate(instances)]
        stats = sampling.ModelStats()
        t0 = time.perf_counter()
        predictions = executor.predict(instances, classifier_fn,
                                       self._batches(batch_size, instances[0], classifier_fn),
                                       progress_bar, stats)
        model_time = (time.perf_counter() - t0) / len(instances)
        explanations = []
        for instance, prediction in zip(instances, predictions):
            instance.timings["perturb_and_model"] = model_time
            instance.timings["model"] = stats.seconds / len(instances)
            explanation = self._finish(instance, prediction, executor, labels, top_labels,
                                       num_features, model_regressor)
            explanation.num_evaluated = instance.data.shape[0]
            explanations.append(explanation)
        self._hint(stats, time.perf_counter() - start, batch_size, instances)
        return explanations

    def _batches(self, batch_size, instance, classifier_fn):
        """An int, or the explainer's ``BatchSizer`` for this classifier and image kind (the
        probe runs once; later explanations start from the size it chose)."""
        if batch_size != "auto":
            return batch_size
        key = (id(classifier_fn), instance.image.shape, instance.image.dtype.str)
        sizers = self.__dict__.setdefault("_sizers", {})
        if key not in sizers:
            while len(sizers) >= 16:  # a new lambda per call must not grow this without end
                sizers.pop(next(iter(sizers)))
            sizers[key] = sampling.BatchSizer(instance.image.nbytes)
        return sizers[key]

    def _hint(self, stats, total: float, batch_size, instances) -> None:
        """Once per explainer: say so when a Python classifier spends most of an explanation
        in small batches, and what ``batch_size="auto"`` and ``dedupe=True`` would do."""
        if (getattr(self, "_hinted", False) or batch_size == "auto" or stats.calls < 10
                or total < config.HINT_MIN_SECONDS
                or stats.seconds < config.HINT_MODEL_SHARE * total
                or stats.largest_batch > config.HINT_SMALL_BATCH):
            return
        self._hinted = True
        rows = sum(inst.data.shape[0] for inst in instances)
        distinct = sum(_distinct_rows(inst.data) for inst in instances)
        warnings.warn(
            f"limefast: classifier_fn took {stats.seconds / total:.0%} of {total:.2f} s in "
            f"{stats.calls} calls of at most {stats.largest_batch} images; "
            f"batch_size='auto' would call it with larger batches"
            + (f", and dedupe=True would evaluate {distinct} distinct images instead of {rows}"
               if distinct < rows else "")
            + " (the same explanation for a deterministic classifier)",
            PerformanceHint, stacklevel=4)

    def _explain_in_rounds(self, instance, classifier_fn, executor, rounds, batch_size, labels,
                           top_labels, num_features, model_regressor, progress_bar,
                           start) -> ImageExplanation:
        """One image through rounds of rows: ``dedupe``, ``num_samples="auto"`` and
        ``time_budget`` (the fixed count is one round)."""
        start = time.perf_counter() if start is None else start
        data, n_total = instance.data, instance.data.shape[0]
        n_features = instance.n_features
        batches = self._batches(batch_size, instance, classifier_fn)
        stats = sampling.ModelStats()
        cache = _RowCache(data) if rounds.dedupe else None
        evaluated, index = [], np.empty(n_total, dtype=np.intp)
        stored = 0  # rows of the evaluated predictions, in order
        fit = columns = previous = None
        reason = "max_samples" if rounds.auto else "num_samples"
        k = rounds.stable_features or (num_features if num_features < n_features
                                       else config.AUTO_STABLE_FEATURES)
        k = min(k, n_features)
        z = adaptive.z_value(config.AUTO_CONFIDENCE)
        kernel_weights = self._kernel_weights(instance.distances)
        t_model = time.perf_counter()
        n = 0
        sizes = rounds.sizes(n_total)
        size = next(sizes)
        with tqdm(total=n_total, disable=not progress_bar, desc="limefast") as bar:
            while True:
                t_round = time.perf_counter()
                rows = slice(n, n + size)
                if cache is None:
                    picked = data[rows]
                    index[rows] = np.arange(stored, stored + size)
                else:
                    picked, check = cache.new_rows(n, n + size, stored)
                    index[rows] = cache.index[rows]
                t_predict = time.perf_counter()
                if len(picked):
                    sub = dataclasses.replace(instance, data=picked, timings={})
                    pred = executor.predict([sub], classifier_fn, batches,
                                            bar if cache is None else False, stats)[0]
                    if cache is not None and check is not None:
                        pred = _verify_repeat(executor, evaluated, pred, stored, check)
                    evaluated.append(pred)
                    stored += len(picked) - (cache is not None and check is not None)
                t_after_predict = time.perf_counter()
                if cache is not None:
                    bar.update(size)
                n += size
                if columns is None:  # the labels: known from row 0's answer
                    columns = _explained_columns(executor.first_row(evaluated[0]), labels,
                                                 top_labels)
                    fit = adaptive.RunningFit(n_features, len(columns))
                if rounds.auto:
                    targets = executor.to_numpy(
                        executor.take(executor.concat(evaluated), index[rows]), columns)
                    fit.add(data[rows], targets, kernel_weights[rows])
                    if n >= rounds.min_samples and n > 2 * (n_features + 1):
                        looks = fit.boundaries(k, z, config.AUTO_INDIFFERENCE)
                        sets = [top for _, top in looks]
                        if all(ok for ok, _ in looks) and sets == previous:
                            reason = "settled"
                            break
                        previous = sets
                if n >= n_total:
                    break
                size = next(sizes)
                if rounds.time_budget is not None:
                    # The next round costs its rows at this round's time per row (the model,
                    # waits for a shared classifier included) plus this round's other work
                    # (the check); the final fit costs about as much again.
                    now = time.perf_counter()
                    per_row = (t_after_predict - t_predict) / max(1, rows.stop - rows.start)
                    other = (now - t_round) - (t_after_predict - t_predict)
                    left = (rounds.time_budget * config.BUDGET_SHARE - (now - start)
                            - 2 * other)
                    size = min(size, int(left / max(per_row, 1e-12)))
                    if size < 1:
                        reason = "time_budget"
                        break
        instance.timings["perturb_and_model"] = time.perf_counter() - t_model
        instance.timings["model"] = stats.seconds
        instance.data = data[:n]
        instance.distances = instance.distances[:n]
        predictions = executor.take(executor.concat(evaluated), index[:n])
        explanation = self._finish(instance, predictions, executor, labels, top_labels,
                                   num_features, model_regressor)
        explanation.num_evaluated = stats.images
        explanation.stop_reason = reason
        explanation.converged = reason in ("settled", "num_samples")
        if rounds.auto and not explanation.converged:
            warnings.warn(
                f"limefast: num_samples='auto' stopped at {n} rows ({reason}) before the top "
                f"{k} superpixels settled; the explanation says converged=False (a flat or "
                "noisy model, or raise max_samples / time_budget)", SamplingWarning,
                stacklevel=4)
        return explanation

    def _prepare(self, image, hide_color, segmentation_fn, num_samples, random_seed,
                 distance_metric) -> Instance:
        """Everything before the model: segments, fudged image, the 0/1 rows and distances."""
        t0 = time.perf_counter()
        if image.ndim == 2:
            image = gray2rgb(image)
        # RNG draw 1, even when a segmentation is given (lime's order).
        if random_seed is None:
            random_seed = self.random_state.randint(0, high=1000)
        if segmentation_fn is None:
            from .wrappers.scikit_image import SegmentationAlgorithm

            segmentation_fn = SegmentationAlgorithm('quickshift', kernel_size=4, max_dist=200,
                                                    ratio=0.2, random_seed=random_seed)
        segments, n_features = _checks.segments_array(segmentation_fn(image), image.shape)
        t1 = time.perf_counter()
        fudged = _fudged_image(image, segments, n_features, hide_color)
        data = sampling.draw_rows(self.random_state, num_samples, n_features)  # RNG draw 2
        distances = sampling.row_distances(data, distance_metric)
        timings = {"segmentation": t1 - t0, "sampling": time.perf_counter() - t1}
        return Instance(image, segments, n_features, fudged, data, distances, timings)

    def _kernel_weights(self, distances) -> np.ndarray:
        weights = np.asarray(self.kernel_fn(distances), dtype=np.float64)
        if weights.shape != distances.shape:
            raise ValueError(
                f"kernel must return one weight per sample, shape {distances.shape}; "
                f"got shape {weights.shape}"
            )
        return weights

    def _finish(self, instance, predictions, executor, labels, top_labels, num_features,
                model_regressor) -> ImageExplanation:
        """Labels to explain, kernel weights and the surrogate: the ImageExplanation."""
        t0 = time.perf_counter()
        explanation = ImageExplanation(instance.image, instance.segments)
        first = executor.first_row(predictions)
        top = _labels_to_fit(first, labels, top_labels)
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
        instance.timings["surrogate"] = time.perf_counter() - t0
        explanation.timings = instance.timings
        return explanation

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
        image_shape = tuple(int(s) for s in image_shape)
        num_samples = _checks.positive_int("num_samples", num_samples)
        rng = np.random.RandomState(0)
        # A smooth synthetic image (segmentations of noise are not like those of photos).
        h, w = image_shape[:2]
        coarse = rng.rand(*((-(-h // 16), -(-w // 16)) + image_shape[2:]))
        smooth = np.kron(coarse, np.ones((16, 16) + (1,) * (len(image_shape) - 2)))[:h, :w]
        dtype = np.dtype(dtype)
        image = (smooth * (255 if dtype.kind in "iu" else 1)).astype(dtype)
        samples = min(num_samples, 50)
        prime = getattr(executor_for(classifier), "warmup", None)
        if prime is not None:
            rgb_shape = image_shape if len(image_shape) == 3 else image_shape + (3,)
            samples = prime(rgb_shape, dtype, num_samples)
        scratch = LimeImageExplainer(feature_selection=self.feature_selection, random_state=0)
        scratch.kernel_fn = self.kernel_fn
        scratch.explain_instance(image, classifier, num_samples=samples, top_labels=top_labels,
                                 num_features=num_features, segmentation_fn=segmentation_fn,
                                 hide_color=hide_color, progress_bar=False)


# Draws from numpy's global RandomState (random_state=None) are serialised across explainers.
_GLOBAL_RNG_LOCK = threading.RLock()


class PerformanceHint(UserWarning):
    """The classifier dominates an explanation in a way a switch of limefast would cut."""


class SamplingWarning(UserWarning):
    """``num_samples="auto"`` stopped before the shown ranking settled."""


@dataclasses.dataclass
class _Rounds:
    """How an explanation's rows are taken: one round of ``rows``, or rounds (see
    ``limefast.adaptive``)."""

    auto: bool
    rows: int  # rows drawn: num_samples, or max_samples for "auto"
    min_samples: int
    time_budget: float | None
    stable_features: int | None
    dedupe: bool

    @classmethod
    def from_arguments(cls, num_samples, max_samples, min_samples, time_budget,
                       stable_features, dedupe) -> _Rounds:
        num_samples = _checks.int_or_auto("num_samples", num_samples)
        max_samples = _checks.optional_int("max_samples", max_samples)
        min_samples = _checks.optional_int("min_samples", min_samples)
        stable_features = _checks.optional_int("stable_features", stable_features)
        time_budget = _checks.time_budget(time_budget)
        if not isinstance(dedupe, (bool, np.bool_)):
            raise TypeError(f"dedupe must be True or False; got {dedupe!r}")
        if num_samples != "auto":
            if max_samples is not None or min_samples is not None:
                raise ValueError(
                    "max_samples and min_samples bound num_samples='auto'; got num_samples="
                    f"{num_samples} with max_samples={max_samples}, min_samples={min_samples} "
                    "(drop them, or pass num_samples='auto')")
            return cls(False, num_samples, num_samples, time_budget, stable_features,
                       bool(dedupe))
        if max_samples is not None and min_samples is not None and max_samples < min_samples:
            raise ValueError(f"max_samples ({max_samples}) must be at least min_samples "
                             f"({min_samples}) with num_samples='auto'")
        high = max_samples if max_samples is not None else max(config.AUTO_MAX_SAMPLES,
                                                               min_samples or 0)
        low = min_samples if min_samples is not None else min(config.AUTO_MIN_SAMPLES, high)
        return cls(True, high, low, time_budget, stable_features, bool(dedupe))

    @property
    def per_image(self) -> bool:
        return self.auto or self.dedupe or self.time_budget is not None

    def sizes(self, n_total: int):
        if not self.auto and self.time_budget is None:
            yield n_total
            return
        first = self.min_samples if self.auto else n_total
        if self.time_budget is not None:  # the model's speed is not known yet
            first = min(first, config.BUDGET_FIRST_ROUND)
        yield from adaptive.round_sizes(first, n_total, config.AUTO_GROWTH,
                                        config.AUTO_ROUND_MIN)


class _RowCache:
    """``dedupe``: which rows were evaluated already, and where their outputs are."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.index = np.empty(data.shape[0], dtype=np.intp)  # row -> stored output
        self._keys: dict[bytes, int] = {}
        self._checked = False

    def new_rows(self, start: int, stop: int, stored: int):
        """The rows of start..stop-1 not seen before (the first of each), and, once, a repeat
        evaluated again to check that the classifier is deterministic: (rows, check) with check
        None or the stored position of the repeated row's output (the check row comes last)."""
        new, check = [], None
        for i in range(start, stop):
            key = self.data[i].tobytes()
            j = self._keys.get(key)
            if j is None:
                j = stored + len(new)
                self._keys[key] = j
                new.append(i)
            elif not self._checked and check is None:
                check = (i, j)
            self.index[i] = j
        if check is None:
            return self.data[new], None
        self._checked = True
        return self.data[new + [check[0]]], check[1]


def _verify_repeat(executor, evaluated, pred, stored: int, twin: int):
    """The check row (last of ``pred``) against its twin's output; ``pred`` without it."""
    n = len(pred) if isinstance(pred, np.ndarray) else pred.probs.shape[0]
    own = np.arange(n - 1)
    if twin >= stored:
        twin_out = executor.take(pred, np.array([twin - stored]))
    else:
        twin_out = executor.take(executor.concat(evaluated), np.array([twin]))
    a = executor.to_numpy(twin_out)[0]
    b = executor.to_numpy(executor.take(pred, np.array([n - 1])))[0]
    scale = max(1.0, float(np.abs(a).max()))
    if np.abs(a - b).max() > 1e-3 * scale:
        raise ValueError(
            "dedupe=True needs a deterministic classifier_fn, but it gave two answers for the "
            f"same image (largest difference {np.abs(a - b).max():.3g}): put the model in "
            "evaluation mode (no dropout) or pass dedupe=False")
    return executor.take(pred, own)


def _labels_to_fit(first: np.ndarray, labels, top_labels):
    """The labels to explain, in lime's fitting order: the ``top_labels`` most probable on the
    image (ascending), else ``labels`` checked against the classifier's class count."""
    if top_labels:
        return np.argsort(first)[-top_labels:]
    return _checks.label_list(labels, first.shape[0])


def _explained_columns(first: np.ndarray, labels, top_labels) -> list[int]:
    """The distinct output columns of the labels to explain."""
    return list(dict.fromkeys(int(label) for label in _labels_to_fit(first, labels, top_labels)))


def _distinct_rows(data: np.ndarray) -> int:
    return len({row.tobytes() for row in data})


def _fudged_image(image: np.ndarray, segments: np.ndarray, n_segments: int, hide_color):
    """The image hidden pixels take: per-segment mean colours, or ``hide_color`` everywhere."""
    fudged = image.copy()
    if hide_color is None:
        means = segment_means(image, segments, n_segments)
        # numpy assignment semantics: means are cast to the image dtype (truncated for ints).
        fudged[...] = means[segments]
        return fudged
    try:
        fudged[:] = hide_color
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"hide_color must be a value or an array broadcastable to the image's shape "
            f"{image.shape} and representable in {image.dtype}; got {hide_color!r} ({exc})"
        ) from exc
    return fudged
