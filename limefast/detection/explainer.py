"""``DetectionExplainer``: every target of a detector explained from one set of forwards.

The detector and its targets become a classifier whose outputs are the targets' scores
(``limefast.detection.scores.TargetScores``); LIME and KernelSHAP then run as they do for a
classifier, with ``labels=range(n_targets)``, and D-RISE (``limefast.detection.drise``) weighs
its masks by the same scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from skimage.color import gray2rgb

from limefast.core import checks
from limefast.core.rounds import SamplingWarning
from limefast.core.seeded import SeededExplainer
from limefast.detection.explanation import DetectionExplanation
from limefast.detection.protocol import AffinityFn, Target
from limefast.detection.scores import TargetScores

METHODS = ("lime", "kernelshap", "drise")
DEFAULT_SAMPLES = {"lime": 1000, "kernelshap": 2048, "drise": 1000}


class NoTargets(ValueError):
    """Nothing to explain: no detection scored ``score_threshold`` (and no ``targets=``), or
    the segmenter predicted no area large enough (and no ``regions=``).

    Attributes:
        best: the image's best detection score (None: no detection, or a segmenter).
    """

    def __init__(self, message: str, best: float | None = None):
        super().__init__(message)
        self.best = best


class DetectionExplainer(SeededExplainer):
    """Explains a detector's boxes (or a segmenter's regions) on an image.

    Args:
        kernel_width, kernel, feature_selection: LIME's, as ``LimeImageExplainer`` takes them.
        random_state: an int, a ``np.random.RandomState``, or None for numpy's global state;
            it advances with every explanation, as lime's does.
    """

    def __init__(self, kernel_width=.25, kernel=None, feature_selection='auto',
                 random_state=None):
        from limefast.lime_image import LimeImageExplainer

        super().__init__(random_state)
        # Built once to check the arguments as LIME checks them; shares the random state.
        self._lime = LimeImageExplainer(kernel_width, kernel, False, feature_selection,
                                        random_state=self.random_state)

    def explain_instance(self, image, detector_fn: Callable, method: str = "lime",
                         num_samples=None, score_threshold: float = 0.5,
                         targets=None, affinity: AffinityFn | None = None, *,
                         hide_color=None, num_features=100000, batch_size=10,
                         segmentation_fn=None, random_seed=None, progress_bar=False,
                         masks=None, seed=None, **switches) -> DetectionExplanation:
        """Explain every target of ``detector_fn`` on ``image`` from one set of forwards.

        Args:
            image: (H, W, C) or (H, W) image, integer or float, as for ``LimeImageExplainer``.
            detector_fn: a callable of the detector protocol: (N, H, W, C) images of the
                image's dtype -> N dicts with ``boxes`` (K, 4) x1, y1, x2, y2 in pixels,
                ``scores`` (K,), ``labels`` (K,) and optionally ``class_probs``
                (K, n_classes). ``TorchDetector`` wraps torchvision's detectors.
            method: ``"lime"``, ``"kernelshap"`` or ``"drise"``.
            num_samples: perturbed images (LIME: default 1000, or ``"auto"``; KernelSHAP:
                default 2048, or ``"auto"``; D-RISE: masks, default 1000).
            score_threshold: without ``targets``, the detections on the image scoring at
                least this are the targets, by decreasing score.
            targets: boxes to explain instead: a dict with ``boxes`` (K, 4) and ``labels``
                (K,) (optionally ``class_probs``), or a sequence of ``Target`` or of
                ``(box, label)`` pairs; a box must lie inside the image.
            affinity: ``affinity(targets, detections) -> (K,)`` scores in place of D-RISE's
                affinity (``limefast.detection.protocol.affinity`` states it).
            hide_color: hidden pixels' value for LIME and KernelSHAP (None: each superpixel's
                mean colour); D-RISE hides with 0, as the reference does.
            num_features: LIME's superpixels per explanation.
            batch_size: images per detector call, or ``"auto"`` (a ``TorchDetector`` runs LIME
                and KernelSHAP on its device, in its own ``batch_size``).
            segmentation_fn, random_seed: as for ``LimeImageExplainer`` (LIME, KernelSHAP).
            progress_bar: a tqdm bar over the images.
            masks: D-RISE's masks: a ``drise_masks(...)`` result or an (N, H, W) array of
                values in [0, 1].
            seed: D-RISE's mask seed when ``masks`` is None (drawn from the random state when
                None too): the masks ``vision-explanation-methods`` draws after
                ``torch.manual_seed(seed)``.
            **switches: LIME's and KernelSHAP's keyword-only switches (``dedupe``,
                ``time_budget``, ``max_samples``, ``target_overlap``, ...), and LIME's
                ``distance_metric`` and ``model_regressor``.

        Returns:
            A DetectionExplanation.

        Raises:
            ValueError: a bad argument, a detector answer of the wrong shape (naming the
                batch), no detection scoring ``score_threshold`` without ``targets``, or a
                target box outside the image.
        """
        image, rgb, num_samples = _checked(image, method, num_samples)
        # One forward of the image itself: the targets, or the given targets' scores.
        probe = TargetScores(detector_fn, [])
        found = probe.detections(rgb[None])[0]
        if targets is None:
            score_threshold = float(score_threshold)
            chosen = detected_targets(found, score_threshold, rgb.shape[:2])
            if not chosen:
                raise NoTargets(
                    f"the detector found nothing scoring at least score_threshold="
                    f"{score_threshold} on the image ({_best(found.scores)}): lower the "
                    "threshold, or pass targets= (boxes and labels) to explain",
                    float(found.scores.max()) if len(found.scores) else None)
        else:
            chosen = given_targets(targets, rgb.shape[:2])
        scores = TargetScores(detector_fn, chosen, affinity, probe.n_classes)
        if targets is not None:  # a given box's score: its affinity on the image itself
            for target, value in zip(chosen, scores.scores([found], track=False)[0]):
                target.score = float(value)
        return self._run(image, rgb, scores, chosen, method, num_samples, probe.images,
                         hide_color=hide_color, num_features=num_features,
                         batch_size=batch_size, segmentation_fn=segmentation_fn,
                         random_seed=random_seed, progress_bar=progress_bar, masks=masks,
                         seed=seed, switches=switches)

    def explain_segmentation(self, image, segmenter_fn: Callable, method: str = "lime",
                             num_samples=None, regions=None, *, classes=None,
                             min_pixels: int = 16, hide_color=None, num_features=100000,
                             batch_size=10, segmentation_fn=None, random_seed=None,
                             progress_bar=False, masks=None, seed=None,
                             **switches) -> DetectionExplanation:
        """Explain "why is this region labelled c" for a segmentation model's regions.

        The score of (class c, region R) on an image is the mean probability of c over R's
        pixels (``limefast.detection.segmenter.RegionScores``); everything else is as for
        ``explain_instance``, the regions standing where the boxes stand.

        Args:
            image: (H, W, C) or (H, W) image.
            segmenter_fn: (N, H, W, C) images -> (N, n_classes, H, W) class probabilities
                (``TorchSegmenter`` wraps torchvision's segmentation models).
            method: as for ``explain_instance``, and so are ``num_samples``, ``hide_color``,
                ``num_features``, ``batch_size``, ``segmentation_fn``, ``random_seed``,
                ``progress_bar``, ``masks``, ``seed`` and the keyword switches.
            regions: the regions to explain: a sequence of ``(mask, class)`` pairs, each mask
                an (H, W) bool array; default each predicted class's connected areas
                (``segmentation_targets``).
            classes: with ``regions=None``, only these classes' areas.
            min_pixels: with ``regions=None``, areas smaller than this are left out.

        Returns:
            A DetectionExplanation whose targets carry their ``region`` mask (and its
            bounding box as ``box``).
        """
        from limefast.detection.segmenter import RegionScores, given_regions, segmentation_targets

        image, rgb, num_samples = _checked(image, method, num_samples)
        probe = RegionScores(segmenter_fn, [])
        probs = probe.probabilities(rgb[None])[0]
        if regions is None:
            chosen = segmentation_targets(probs, classes=classes, min_pixels=min_pixels)
            if not chosen:
                raise NoTargets(f"the segmenter predicted no area of at least {min_pixels} "
                                 f"pixels{'' if classes is None else f' of classes {classes}'}"
                                 ": lower min_pixels, or pass regions=")
        else:
            chosen = given_regions(regions, rgb.shape[:2], probs.shape[0])
        scores = RegionScores(segmenter_fn, chosen, probe.n_classes)
        for target, value in zip(chosen, scores.scores(probs[None], track=False)[0]):
            target.score = float(value)
        exp = self._run(image, rgb, scores, chosen, method, num_samples, probe.images,
                         hide_color=hide_color, num_features=num_features,
                         batch_size=batch_size, segmentation_fn=segmentation_fn,
                         random_seed=random_seed, progress_bar=progress_bar, masks=masks,
                         seed=seed, switches=switches)
        exp.task = "segmentation"
        return exp

    def _run(self, image, rgb, scores, chosen, method, num_samples, probe_images, *,
             hide_color, num_features, batch_size, segmentation_fn, random_seed, progress_bar,
             masks, seed, switches) -> DetectionExplanation:
        """The targets' explanation by ``method``, ``scores`` the (N, K) score classifier."""
        labels = list(range(len(chosen)))
        if method == "drise":
            from limefast.detection.drise import drise_explanation

            if switches:
                raise TypeError(f"method='drise' takes no {sorted(switches)}")
            if seed is None and masks is None:
                with self._draw_lock():
                    seed = int(self.random_state.randint(0, 2 ** 31 - 1))
            exp = drise_explanation(rgb, scores, chosen, num_samples, masks, seed, batch_size,
                                    progress_bar)
            exp.mask_seed = None if masks is not None else int(seed)
        else:
            if masks is not None or seed is not None:
                raise TypeError(f"masks= and seed= are D-RISE's; method={method!r} takes "
                                "random_seed= and the explainer's random_state")
            common = dict(labels=labels, hide_color=hide_color, top_labels=None,
                          num_samples=num_samples, batch_size=batch_size,
                          segmentation_fn=segmentation_fn, random_seed=random_seed,
                          progress_bar=progress_bar, **switches)
            if method == "lime":
                inner = self._lime.explain_instance(image, scores, num_features=num_features,
                                                    **common)
            else:
                from limefast.kernelshap import KernelShapImageExplainer

                shap = KernelShapImageExplainer(random_state=self.random_state)
                shap._lock = self._draw_lock()
                inner = shap.explain_instance(image, scores, **common)
            exp = DetectionExplanation.wrap(inner, chosen, method)
        exp.num_forwards = scores.images + probe_images
        _state_flat(exp, scores)
        return exp


def _best(scores: np.ndarray) -> str:
    """The image's best detection score, for the no-target error."""
    return f"its best: {scores.max():.3g}" if len(scores) else "no detection at all"


def _state_flat(exp: DetectionExplanation, scores: TargetScores) -> None:
    """Targets whose score never moved: ``stop_reasons[i] = 'flat'``, said once."""
    flat = [i for i, dead in enumerate(scores.flat()) if dead]
    for i in flat:
        exp.stop_reasons[i] = "flat"
    if flat:
        warnings.warn(
            f"limefast: the score of target(s) {flat} was the same on every perturbed image "
            f"(no detection matched {'them' if len(flat) > 1 else 'it'}, or always the same "
            "one): their explanations are flat (stop_reasons[i] == 'flat'), all weights 0",
            SamplingWarning, stacklevel=3)
    if len(flat) == len(exp.targets):
        exp.stop_reason, exp.converged = "flat", False


def detected_targets(found, threshold: float, shape: tuple[int, int]) -> list[Target]:
    """The detections scoring at least ``threshold``, by decreasing score, boxes clipped to
    the image."""
    h, w = shape
    order = np.argsort(-found.scores, kind="stable")
    out = []
    for j in order:
        if found.scores[j] < threshold:
            break
        x1, y1, x2, y2 = found.boxes[j]
        box = (float(np.clip(x1, 0, w)), float(np.clip(y1, 0, h)), float(np.clip(x2, 0, w)),
               float(np.clip(y2, 0, h)))
        probs = None if found.class_probs is None else found.class_probs[j].copy()
        out.append(Target(box, int(found.labels[j]), float(found.scores[j]), probs))
    return out


def given_targets(targets, shape: tuple[int, int]) -> list[Target]:
    """``targets=`` as ``Target``s, each box checked against the image's ``(H, W)``."""
    if isinstance(targets, dict):
        if not {"boxes", "labels"} <= set(targets):
            raise ValueError(f"targets= as a dict needs 'boxes' and 'labels'; got "
                             f"{sorted(targets)}")
        boxes = np.asarray(targets["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(targets["labels"]).reshape(-1)
        probs = targets.get("class_probs")
        if len(labels) != len(boxes):
            raise ValueError(f"targets= has {len(boxes)} boxes and {len(labels)} labels")
        items = [Target(tuple(float(v) for v in b), int(lab), 1.0,
                        None if probs is None else np.asarray(probs[j], dtype=np.float64),
                        True)
                 for j, (b, lab) in enumerate(zip(boxes, labels))]
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        items = []
        for t in targets:
            if isinstance(t, Target):
                items.append(Target(tuple(float(v) for v in t.box), int(t.label), t.score,
                                    t.class_probs, True))
            elif isinstance(t, Sequence) and len(t) == 2:
                items.append(Target(tuple(float(v) for v in np.ravel(t[0])), int(t[1]), 1.0,
                                    None, True))
            else:
                raise ValueError(f"each target must be a Target or a (box, label) pair; got "
                                 f"{t!r}")
    else:
        raise ValueError(f"targets= must be a dict with 'boxes' and 'labels', or a sequence of "
                         f"Target or (box, label); got {type(targets).__name__}")
    if not items:
        raise ValueError("targets= is empty: give at least one box, or None for the detections")
    h, w = shape
    for i, t in enumerate(items):
        if len(t.box) != 4 or not np.isfinite(t.box).all():
            raise ValueError(f"target {i}'s box must be 4 finite numbers; got {t.box}")
        x1, y1, x2, y2 = t.box
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise ValueError(
                f"target {i}'s box {list(t.box)} is not inside the {w}x{h} image: boxes are "
                f"x1, y1, x2, y2 in pixels with 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}")
    return items


def _checked(image, method: str, num_samples):
    """(the image, its RGB form, the number of samples): the method checked, the default
    count of samples for it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    image = checks.image_array(image)
    rgb = gray2rgb(image) if image.ndim == 2 else image
    return image, rgb, DEFAULT_SAMPLES[method] if num_samples is None else num_samples
