"""Drop-in replacement for ``lime.lime_image``: the same explanations, from compiled kernels.

``from limefast import lime_image`` in place of ``from lime import lime_image`` gives, for the same
seed, image, segmentation and classifier, the explanation lime 0.2.0.1 gives (up to floating-point
rounding in the surrogate), except for the reference's known defects, which are fixed on purpose
(see the README): per-label ``score`` and ``local_pred``, segments relabelled 0..n-1, copied
classifier outputs, any channel count.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import numpy as np
from skimage.color import gray2rgb
from sklearn.utils import check_random_state

from . import _checks, sampling
from .kernels.perturb import PerturbPlan
from .kernels.segment_means import segment_means
from .surrogate import FEATURE_SELECTION_METHODS, WeightedProblem


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
            def kernel(d, kernel_width):
                return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))
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

    def explain_instance(self, image, classifier_fn: Callable, labels=(1,), hide_color=None,
                         top_labels=5, num_features=100000, num_samples=1000, batch_size=10,
                         segmentation_fn=None, distance_metric='cosine', model_regressor=None,
                         random_seed=None, progress_bar=True) -> ImageExplanation:
        """Explain ``classifier_fn``'s prediction on ``image``.

        Args:
            image: (H, W, C) or (H, W) image, integer or float; (H, W) goes through gray2rgb.
            classifier_fn: takes (N, H, W, C) arrays of the image's dtype and returns
                (N, n_classes) probabilities.
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
        timings = {}
        t0 = time.perf_counter()
        image = _checks.image_array(image)
        if not callable(classifier_fn):
            raise TypeError(f"classifier_fn must be callable; got {type(classifier_fn).__name__}")
        num_samples = _checks.positive_int("num_samples", num_samples)
        batch_size = _checks.positive_int("batch_size", batch_size)
        num_features = _checks.positive_int("num_features", num_features)
        if top_labels:
            top_labels = _checks.positive_int("top_labels", top_labels)
        if segmentation_fn is not None and not callable(segmentation_fn):
            raise TypeError(f"segmentation_fn must be callable; got {segmentation_fn!r}")
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
        timings["segmentation"] = t1 - t0

        fudged = _fudged_image(image, segments, n_features, hide_color)
        data = sampling.draw_rows(self.random_state, num_samples, n_features)  # RNG draw 2
        distances = sampling.row_distances(data, distance_metric)
        plan = PerturbPlan(image, fudged, segments)
        t2 = time.perf_counter()
        timings["sampling"] = t2 - t1

        predictions = sampling.predict_rows(plan, data, classifier_fn, batch_size, progress_bar)
        t3 = time.perf_counter()
        timings["perturb_and_model"] = t3 - t2

        explanation = ImageExplanation(image, segments)
        if top_labels:
            top = np.argsort(predictions[0])[-top_labels:]
            explanation.top_labels = list(top)
            explanation.top_labels.reverse()
        else:
            top = _checks.label_list(labels, predictions.shape[1])
        self._fit(explanation, data, predictions, distances, top, num_features, model_regressor)
        timings["surrogate"] = time.perf_counter() - t3
        explanation.timings = timings
        return explanation

    def _fit(self, explanation, data, predictions, distances, top, num_features, model_regressor):
        weights = np.asarray(self.kernel_fn(distances), dtype=np.float64)
        if weights.shape != (data.shape[0],):
            raise ValueError(
                f"kernel must return one weight per sample, shape ({data.shape[0]},); "
                f"got shape {weights.shape}"
            )
        columns = list(dict.fromkeys(int(label) for label in top))
        targets = predictions[:, columns].astype(np.float64)
        problem = WeightedProblem(data, targets, weights)
        for label in top:
            fit = problem.fit_label(columns.index(int(label)), num_features,
                                    self.feature_selection, model_regressor)
            explanation.intercept[label] = fit.intercept
            explanation.local_exp[label] = fit.local_exp
            explanation.score[label] = fit.score
            explanation.local_pred[label] = fit.local_pred
            if self.verbose:
                print('Intercept', fit.intercept)
                print('Prediction_local', fit.local_pred,)
                print('Right:', predictions[0, label])


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
