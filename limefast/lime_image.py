"""Drop-in replacement for ``lime.lime_image``: the same explanations, from compiled kernels.

``from limefast import lime_image`` in place of ``from lime import lime_image`` gives, for the same
seed, image, segmentation and classifier, the explanation lime 0.2.0.1 gives (up to floating-point
rounding in the surrogate), except for the reference's known defects, which are fixed on purpose
(see the README): per-label ``score`` and ``local_pred``, segments relabelled 0..n-1, copied
classifier outputs, any channel count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from skimage.color import gray2rgb
from sklearn.utils import check_random_state

from . import _checks, sampling
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
        timings: seconds spent in each stage of the explanation.
    """

    def __init__(self, image: np.ndarray, segments: np.ndarray):
        self.image = image
        self.segments = segments
        self.intercept = {}
        self.local_exp = {}
        self.local_pred = {}
        self.score = {}
        self.timings = {}

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
               opacity=0.6, num_segments=None, boundaries=True, as_pil=False):
        """The image with the label's strongest superpixels tinted and outlined.

        Args:
            label: label to show; default the first top label (or first explained label).
            positive, negative, coverage, opacity, num_segments, boundaries, as_pil: as for
                ``limefast.render_explanation``.

        Returns:
            (H, W, 3) uint8 array, or a PIL image with ``as_pil=True``.
        """
        from .render import explanation_label, render_explanation

        label = explanation_label(self, label)
        return render_explanation(self.image, self.segments, self.local_exp[label],
                                  positive=positive, negative=negative, coverage=coverage,
                                  opacity=opacity, num_segments=num_segments,
                                  boundaries=boundaries, as_pil=as_pil)

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
                         random_seed=None, progress_bar=True) -> ImageExplanation:
        """Explain ``classifier_fn``'s prediction on ``image``.

        Args:
            image: (H, W, C) or (H, W) image, integer or float; (H, W) goes through gray2rgb.
            classifier_fn: takes (N, H, W, C) arrays of the image's dtype and returns
                (N, n_classes) probabilities. The arrays are views of a reused buffer: copy
                them if you keep them.
            labels: labels to explain when ``top_labels`` is falsy.
            hide_color: value of hidden pixels; None fills each superpixel with its mean colour.
            top_labels: explain the K labels with the highest probability on the image.
            num_features: maximum number of superpixels in each explanation.
            num_samples: number of perturbed images.
            batch_size: images per ``classifier_fn`` call.
            segmentation_fn: callable image -> (H, W) integer labels; default quickshift with
                lime's parameters (kernel_size=4, max_dist=200, ratio=0.2).
            distance_metric: metric on the 0/1 rows, by scikit-learn name or a callable.
            model_regressor: a scikit-learn regressor used in place of ``Ridge(alpha=1)``.
            random_seed: seed for the segmentation; drawn from ``random_state`` if None.
            progress_bar: show a tqdm bar over the samples.

        Returns:
            An ImageExplanation.
        """
        return self.explain_batch(
            [image], classifier_fn, labels=labels, hide_color=hide_color, top_labels=top_labels,
            num_features=num_features, num_samples=num_samples, batch_size=batch_size,
            segmentation_fn=segmentation_fn, distance_metric=distance_metric,
            model_regressor=model_regressor, random_seed=random_seed, progress_bar=progress_bar,
        )[0]

    def explain_batch(self, images, classifier_fn: Callable, labels=(1,), hide_color=None,
                      top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                      segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                      random_seed=None, progress_bar=True) -> list[ImageExplanation]:
        """Explain several images: what ``explain_instance`` on each in turn would return.

        The random state is drawn in the same order as those calls would draw it, while the
        perturbed samples of consecutive images of one shape share ``classifier_fn`` batches.
        Arguments as for ``explain_instance``; ``images`` is a sequence of images.

        Returns:
            A list of ImageExplanation, one per image.
        """
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
        num_samples = _checks.positive_int("num_samples", num_samples)
        batch_size = _checks.positive_int("batch_size", batch_size)
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
                self._prepare(image, hide_color, segmentation_fn, num_samples, random_seed,
                              distance_metric)
                for image in images
            ]
        t0 = time.perf_counter()
        predictions = executor.predict(instances, classifier_fn, batch_size, progress_bar)
        model_time = (time.perf_counter() - t0) / len(instances)
        explanations = []
        for instance, prediction in zip(instances, predictions):
            instance.timings["perturb_and_model"] = model_time
            explanations.append(self._finish(instance, prediction, executor, labels, top_labels,
                                             num_features, model_regressor))
        return explanations

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

    def _finish(self, instance, predictions, executor, labels, top_labels, num_features,
                model_regressor) -> ImageExplanation:
        """Labels to explain, kernel weights and the surrogate: the ImageExplanation."""
        t0 = time.perf_counter()
        explanation = ImageExplanation(instance.image, instance.segments)
        first = executor.first_row(predictions)
        if top_labels:
            top = np.argsort(first)[-top_labels:]
            explanation.top_labels = list(top)
            explanation.top_labels.reverse()
        else:
            top = _checks.label_list(labels, first.shape[0])
        weights = np.asarray(self.kernel_fn(instance.distances), dtype=np.float64)
        if weights.shape != instance.distances.shape:
            raise ValueError(
                f"kernel must return one weight per sample, shape {instance.distances.shape}; "
                f"got shape {weights.shape}"
            )
        fits = executor.fit(instance, predictions, weights, top, num_features,
                            self.feature_selection, model_regressor)
        for label in top:
            fit = fits[label]
            explanation.intercept[label] = fit.intercept
            explanation.local_exp[label] = fit.local_exp
            explanation.score[label] = fit.score
            explanation.local_pred[label] = fit.local_pred
            if self.verbose:
                print('Intercept', fit.intercept)
                print('Prediction_local', fit.local_pred,)
                print('Right:', first[label])
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
