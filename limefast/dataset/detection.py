"""Detectors and segmenters in ``explain_dataset`` (``task="detection" | "segmentation"``):
one row per (image, target).

A worker explains every target of an image from one set of forwards
(``DetectionExplainer.explain_instance`` or ``explain_segmentation`` with
``random_state=image_seed(seed, image_id)``) and writes one row per target: its box, class and
score, and its superpixel weights (LIME, KernelSHAP) or its D-RISE map. An image on which
nothing reaches the threshold has one row with a null ``target`` and the reason in
``no_targets``, so it is recorded (and skipped on resume) like an error row. See
docs/dataset.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from limefast.core import checks
from limefast.dataset.worker import ExplainWorker

TASKS = ("classification", "detection", "segmentation")
METHODS = ("lime", "kernelshap", "drise")


@dataclass(frozen=True)
class DetectorFactory:
    """A detector or segmenter named as ``limefast explain --task ... --model`` names it
    (``shapes``, a torchvision model's name, or ``module:factory``), picklable: each worker
    builds it with ``limefast.cli.detect.load_detector``.

    Calling it returns a ``LoadedDetector`` (``.fn`` the protocol callable, ``.label_name``
    its class names).
    """

    spec: str
    task: str = "detection"
    weights: str | None = None  # None: random (torchvision), DEFAULT, or a state-dict file
    seed: int = 0  # seeds torch before building (random weights)
    batch_size: int | None = None  # images per forward of a torch module
    device: str | None = None
    cwd: str = field(default_factory=os.getcwd)  # where a module:factory is imported from

    def __call__(self):
        from limefast.cli.detect import load_detector

        return load_detector(self.spec, self.weights, task=self.task, device=self.device,
                             seed=self.seed, batch_size=self.batch_size, cwd=self.cwd)


def detection_schema(pa):
    """The rows' Parquet schema for detectors and segmenters: one row per (image, target), or
    one row with a null ``target`` for an image with an error or without targets."""
    return pa.schema([
        ("image_id", pa.string()), ("target", pa.int32()), ("num_targets", pa.int32()),
        ("box", pa.list_(pa.float64(), 4)), ("class", pa.int64()), ("class_name", pa.string()),
        ("score", pa.float64()), ("region_pixels", pa.int64()), ("method", pa.string()),
        ("weights", pa.list_(pa.float64())), ("stderr", pa.list_(pa.float64())),
        ("intercept", pa.float64()), ("score_fit", pa.float64()), ("local_pred", pa.float64()),
        ("base_value", pa.float64()), ("expected_overlap", pa.float64()), ("top_k", pa.int32()),
        ("num_segments", pa.int32()), ("saliency", pa.list_(pa.float16())),
        ("height", pa.int32()), ("width", pa.int32()), ("stop_reason", pa.string()),
        ("num_samples", pa.int64()), ("num_evaluated", pa.int64()),
        ("num_forwards", pa.int64()), ("seconds", pa.float64()), ("seed", pa.int64()),
        ("error", pa.string()), ("no_targets", pa.string()),
    ])


def task_settings(task: str, method: str, *, num_samples, score_threshold, classes,
                  min_pixels, sampler, segmentation, hide_color, time_budget, dedupe,
                  target_overlap, min_gain) -> dict:
    """The ``Settings`` fields of a detector or segmenter run, checked: a ValueError for a
    combination the method cannot run."""
    from limefast.detection.explainer import DEFAULT_SAMPLES

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    out = {"task": task, "method": method, "score_threshold": 0.5, "classes": None,
           "min_pixels": 16, "max_samples": None}
    if task == "detection":
        score_threshold = float(score_threshold)
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1]; got {score_threshold}")
        out["score_threshold"] = score_threshold
    else:
        if classes is not None:
            classes = tuple(checks.positive_int("classes", c, minimum=0) for c in classes)
        out["classes"] = classes
        out["min_pixels"] = checks.positive_int("min_pixels", min_pixels)
    if method == "drise":
        given = [name for name, value in (
            ("dedupe", dedupe), ("time_budget", time_budget), ("target_overlap", target_overlap),
            ("min_gain", min_gain), ("sampler", sampler), ("segmentation", segmentation),
            ("hide_color", hide_color)) if value is not None and value is not False]
        if given:
            raise ValueError(f"method='drise' weighs a fixed count of random masks (hidden with "
                             f"0): it takes no {', '.join(given)}")
        out["num_samples"] = (DEFAULT_SAMPLES["drise"] if num_samples == "auto"
                              else checks.positive_int("num_samples", num_samples))
        return out
    if num_samples == "auto":  # as limefast explain: never more than AUTO_MAX_SAMPLES rows
        from limefast import config

        out["max_samples"] = config.AUTO_MAX_SAMPLES
    if method == "kernelshap" and sampler is not None:
        raise ValueError("method='kernelshap' draws its own coalitions: it takes no sampler")
    return out


def task_segmentation_fn(segmentation):
    """The superpixels of a ``segmentation`` name with ``limefast explain``'s parameters
    (``limefast.segmentation.SEGMENTATIONS``); None (lime's quickshift) and callables as
    they are."""
    if not isinstance(segmentation, str):
        return segmentation
    from limefast.segmentation import SEGMENTATIONS
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    return SegmentationAlgorithm(segmentation, **SEGMENTATIONS[segmentation])


@dataclass(frozen=True)
class NothingToExplain:
    """An image without targets (``NoTargets``), and why."""

    reason: str


class DetectionWorker(ExplainWorker):
    """``ExplainWorker`` for detectors and segmenters: the model's factory returns a
    ``LoadedDetector`` (``DetectorFactory``) or a protocol callable; one row per target."""

    def __init__(self, model_factory, settings, columns):
        from limefast.cli.detect import LoadedDetector

        super().__init__(model_factory, settings, columns)
        built = self.classifier
        if not isinstance(built, LoadedDetector):
            if not callable(built):
                raise TypeError(f"the model factory returned {type(built).__name__}, not a "
                                f"{settings.task} callable")
            built = LoadedDetector(getattr(model_factory, "spec", ""), "model", settings.task,
                                   built, "given by the factory")
        self.detector = built
        self.segmentation = task_segmentation_fn(settings.segmentation)

    @staticmethod
    def row_schema(pa):
        return detection_schema(pa)

    def _summary(self, ids, firsts) -> dict:
        out = super()._summary(ids, firsts)
        out["no_targets"] = np.array([row.get("no_targets") is not None for row in firsts],
                                     dtype=bool)
        return out

    def _explanation(self, image, seed):
        from limefast.detection import DetectionExplainer, NoTargets

        s = self.settings
        options = dict(method=s.method, num_samples=s.num_samples,
                       batch_size=s.model_batch_size, progress_bar=False)
        if s.method != "drise":
            options.update(segmentation_fn=self.segmentation, hide_color=s.hide_color,
                           dedupe=s.dedupe, time_budget=s.time_budget,
                           target_overlap=s.target_overlap, min_gain=s.min_gain)
            if s.max_samples is not None:
                options["max_samples"] = s.max_samples
            if s.sampler is not None:
                options["sampler"] = s.sampler
        explainer = DetectionExplainer(random_state=seed)
        try:
            if s.task == "segmentation":
                return explainer.explain_segmentation(
                    image, self.detector.fn, min_pixels=s.min_pixels,
                    classes=None if s.classes is None else list(s.classes), **options)
            return explainer.explain_instance(image, self.detector.fn,
                                              score_threshold=s.score_threshold, **options)
        except NoTargets as exc:
            return NothingToExplain(f"NoTargets: {exc}")

    def _rows(self, image_id, seed, seconds, exp) -> list[dict]:
        s = self.settings
        if isinstance(exp, NothingToExplain):
            return [{"image_id": image_id, "num_targets": 0, "method": s.method,
                     "seconds": seconds, "seed": seed, "error": None,
                     "no_targets": exp.reason}]
        h, w = exp.image.shape[:2]
        n = None if exp.segments is None else int(exp.segments.max()) + 1
        shared = {"image_id": image_id, "num_targets": len(exp.targets), "method": exp.method,
                  "height": h, "width": w, "num_samples": int(exp.num_samples),
                  "num_evaluated": int(exp.num_evaluated),
                  "num_forwards": int(exp.num_forwards), "seconds": seconds, "seed": seed,
                  "error": None, "no_targets": None}
        rows = []
        for i, t in enumerate(exp.targets):
            row = {**shared, "target": i, "box": [float(v) for v in t.box],
                   "class": int(t.label), "class_name": self.detector.label_name(int(t.label)),
                   "score": float(t.score),
                   "region_pixels": (None if t.region is None
                                     else int(np.count_nonzero(t.region))),
                   "intercept": float(exp.intercept[i]),
                   "stop_reason": exp.stop_reasons.get(i, exp.stop_reason)}
            if exp.method == "drise":
                row["saliency"] = np.asarray(exp.saliency[i], dtype=np.float16).ravel()
            else:
                weights = np.zeros(n)
                stderr = np.full(n, np.nan)
                for feature, weight in exp.local_exp[i]:
                    weights[feature] = weight
                    stderr[feature] = exp.stderr[i].get(feature, np.nan)
                row.update({
                    "weights": weights.tolist(), "stderr": stderr.tolist(),
                    "score_fit": float(exp.score[i]),
                    "local_pred": float(np.ravel(exp.local_pred[i])[0]),
                    "expected_overlap": float(exp.expected_overlap[i]),
                    "top_k": int(exp.top_k), "num_segments": n,
                })
                if exp.method == "kernelshap":
                    row["base_value"] = float(exp.base_value[i])
            rows.append(row)
        return rows

    def _write_overlay(self, image_id, exp) -> None:
        """Every target's tile (``DetectionExplanation.panel``); nothing without targets."""
        if isinstance(exp, NothingToExplain):
            return
        from limefast.dataset.worker import overlay_name
        from limefast.viz.panel import png_bytes

        self.fs.create_dir(f"{self.root}/overlays", recursive=True)
        with self.fs.open_output_stream(f"{self.root}/overlays/{overlay_name(image_id)}") as out:
            out.write(png_bytes(exp.panel(label_name=self.detector.label_name)))
