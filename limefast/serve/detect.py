"""Detectors and segmenters behind ``limefast serve --task detection|segmentation``: one
explanation per target, the model calls batched across requests as a classifier's are.

A detector answers a batch with one dict per image, not an (N, n_classes) array; the shared
``BatchQueue`` carries those answers as an object array of one dict per image
(``detector_call``) and a segmenter's (N, n_classes, H, W) probabilities as they are
(``segmenter_call``), so the requests' perturbed images still meet in shared model calls,
admitted, budgeted and cancelled by the ``Scheduler``'s own machinery. Each explanation is
``DetectionExplainer.explain_instance`` (or ``explain_segmentation``) itself, on a thread of its
own, with a stand-in detector (``_QueuedModel``) that hands its images to the queue and checks
the answers it gets back: what the model does wrong there is a ``ModelError`` (a 500), never
taken for a bad request.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

from limefast import config
from limefast.core import checks
from limefast.core.checks import first_line
from limefast.core.record import number
from limefast.serve.batching import Cancelled, Ticket
from limefast.serve.inputs import RequestError
from limefast.serve.options import _float_text, _int_text, common_values, index_list
from limefast.serve.scheduler import ModelError, Overloaded, Scheduler

TASKS = ("detection", "segmentation")
METHODS = ("lime", "kernelshap", "drise")
# The request's parameters, by task.
COMMON = ("method", "num_samples", "seed", "targets", "segmentation", "hide_color",
          "time_budget", "max_samples", "dedupe", "sampler", "target_overlap", "min_gain")
PARAMETERS = {"detection": COMMON + ("score_threshold",),
              "segmentation": COMMON + ("classes", "min_pixels")}
# What D-RISE does not take (it weighs a fixed count of random masks, hiding with 0).
NOT_DRISE = ("segmentation", "hide_color", "time_budget", "max_samples", "dedupe", "sampler",
             "target_overlap", "min_gain")


class NothingToExplain(Exception):
    """No target on the image: no detection scored ``score_threshold`` (or no area of at least
    ``min_pixels``), and the request gave no ``targets`` (answered 422)."""


class WrongAnswer(ValueError):
    """The model's answer to a batch does not have the protocol's structure."""


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """A detection or segmentation request's options (see ``parse``).

    ``targets`` holds ``((x1, y1, x2, y2), label)`` pairs: for a detector, the boxes to explain
    instead of its detections; for a segmenter, rectangular regions and their class.
    """

    method: str = "lime"
    num_samples: int | str = 1000
    score_threshold: float = 0.5
    targets: tuple | None = None
    classes: tuple | None = None
    min_pixels: int = 16
    segmentation: str = "quickshift"
    hide_color: float | None = None
    seed: int = 0
    time_budget: float | None = None
    max_samples: int | None = None
    dedupe: bool = False
    sampler: str | None = None
    target_overlap: float | None = None
    min_gain: float | None = None

    @property
    def samples(self):
        """``num_samples`` as the method takes it: D-RISE's ``"auto"`` is its 1000 masks."""
        if self.method == "drise" and self.num_samples == "auto":
            from limefast.detection.explainer import DEFAULT_SAMPLES

            return DEFAULT_SAMPLES["drise"]
        return self.num_samples

    @property
    def rows(self) -> int:
        """The most perturbed images the explanation may draw."""
        if self.samples != "auto":
            return self.samples
        cap = config.SHAP_AUTO_MAX_SAMPLES if self.method == "kernelshap" else \
            config.AUTO_MAX_SAMPLES
        return self.max_samples or cap

    @classmethod
    def parse(cls, values: dict, defaults: dict | None = None,
              task: str = "detection") -> DetectOptions:
        """Options from plain values (JSON, or a query string's text), checked.

        Args:
            values: the request's parameters.
            defaults: the server's (the command line's flags), which ``values`` override; those
                ``method="drise"`` does not take are dropped for it.
            task: ``"detection"`` or ``"segmentation"`` (which parameters there are).

        Raises:
            ValueError: an unknown name, a bad value or combination, in one line.
        """
        if not isinstance(values, dict):
            raise ValueError(f"parameters must be an object; got {type(values).__name__}")
        known = PARAMETERS[task]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for a {task} model; known: "
                             f"{sorted(known)}")
        # a value of None in ``values`` unsets the default, as in ``ExplainOptions.parse``
        merged = {**{k: v for k, v in (defaults or {}).items() if k in known}, **values}
        method = merged.get("method") or "lime"
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        if method == "drise":
            # (a false switch asks for nothing D-RISE lacks)
            refused = sorted(k for k in NOT_DRISE if values.get(k) not in (None, False, "false"))
            if refused:
                raise ValueError(f"method 'drise' weighs a fixed count of random masks "
                                 f"(num_samples): it takes no {refused}")
            merged = {k: v for k, v in merged.items() if k not in NOT_DRISE}
        try:
            return cls._parse({k: v for k, v in merged.items() if v is not None})
        except (TypeError, ValueError) as exc:  # the checks' type errors, as bad values
            raise ValueError(first_line(exc)) from None

    @classmethod
    def _parse(cls, v: dict) -> DetectOptions:

        out = {"method": v.get("method", "lime")}
        if "num_samples" in v:
            out["num_samples"] = checks.int_or_auto("num_samples", _int_text(v["num_samples"]))
        if "score_threshold" in v:
            value = _float_text("score_threshold", v["score_threshold"])
            if not 0 <= value <= 1:
                raise ValueError(f"score_threshold must be in [0, 1]; got {value}")
            out["score_threshold"] = value
        if "targets" in v:
            out["targets"] = _targets(v["targets"])
        if "classes" in v:
            out["classes"] = index_list("classes", v["classes"])
        if "min_pixels" in v:
            out["min_pixels"] = checks.positive_int("min_pixels", _int_text(v["min_pixels"]))
        out.update(common_values(v))
        if "time_budget" in v:
            out["time_budget"] = checks.time_budget(_float_text("time_budget", v["time_budget"]))
        if "max_samples" in v:
            out["max_samples"] = checks.positive_int("max_samples", _int_text(v["max_samples"]))
        if "dedupe" in v:
            out["dedupe"] = _bool("dedupe", v["dedupe"])
        if "sampler" in v:
            from limefast.core.sampling import check_sampler

            out["sampler"] = check_sampler(v["sampler"])
        for name in ("target_overlap", "min_gain"):
            if name in v:
                out[name] = _float_text(name, v[name])
        options = cls(**out)
        if options.method != "drise":
            options._check_rounds()
        return options

    def _check_rounds(self) -> None:
        """The sampling switches together, as ``explain_instance`` would check them."""
        from limefast.core.rounds import Rounds

        if self.sampler is not None and self.method != "lime":
            raise ValueError(f"sampler is LIME's row design; method {self.method!r} draws its "
                             "own coalitions (complement pairs by size): drop sampler")
        Rounds.from_arguments(self.num_samples, self.max_samples, None, self.time_budget, None,
                              self.dedupe, target_overlap=self.target_overlap,
                              min_gain=self.min_gain, sampler=self.sampler)

    def replace(self, **changes) -> DetectOptions:
        return dataclasses.replace(self, **changes)


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1", "false", "0"):
        return value in ("true", "1")
    raise ValueError(f"{name} must be true or false; got {value!r}")


def _targets(value) -> tuple:
    """``targets``: a list of ``{"box": [x1, y1, x2, y2], "label": c}`` (in a query string, that
    list as JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("targets must be a JSON list of {\"box\": [x1, y1, x2, y2], "
                             f"\"label\": c}}; got {value!r:.80}") from None
    if not isinstance(value, list) or not value:
        raise ValueError('targets must be a non-empty list of {"box": [x1, y1, x2, y2], '
                         f'"label": c}}; got {value!r:.80}')
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"box", "label"}:
            raise ValueError(f'targets[{i}] must be {{"box": [x1, y1, x2, y2], "label": c}}; '
                             f"got {item!r:.80}")
        box = item["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in box)):
            raise ValueError(f"targets[{i}].box must be 4 finite numbers x1, y1, x2, y2 in "
                             f"pixels; got {box!r:.80}")
        label = checks.positive_int(f"targets[{i}].label", item["label"], minimum=0)
        out.append((tuple(float(x) for x in box), label))
    return tuple(out)


# -- the model calls of the shared queue --------------------------------------------------------

def detector_call(detector_fn, batch: np.ndarray) -> np.ndarray:
    """The detector on a merged batch: its answer as an object array of one dict per image
    (each checked by the request it belongs to, ``_QueuedModel``)."""
    sets = detector_fn(batch)
    n = batch.shape[0]
    if isinstance(sets, (dict, str, bytes)) or not hasattr(sets, "__len__"):
        raise WrongAnswer(f"the detector must return a list of {n} dicts (one per image) with "
                          f"'boxes', 'scores' and 'labels'; got {type(sets).__name__}")
    if len(sets) != n:
        raise WrongAnswer(f"the detector returned {len(sets)} detection sets for {n} images; "
                          "it must return one per image")
    out = np.empty(n, dtype=object)
    for i, found in enumerate(sets):
        out[i] = found
    return out


def segmenter_call(segmenter_fn, batch: np.ndarray) -> np.ndarray:
    """The segmenter on a merged batch: its (N, n_classes, H, W) probabilities."""
    from limefast.detection.protocol import _numpy

    out = segmenter_fn(batch)
    if isinstance(out, dict):
        if "out" not in out:
            raise WrongAnswer(f"the segmenter returned a dict without 'out' ({sorted(out)})")
        out = out["out"]
    probs = _numpy(out)
    n, h, w = batch.shape[:3]
    if probs.ndim != 4 or probs.shape[0] != n or probs.shape[2:] != (h, w):
        raise WrongAnswer(f"the segmenter must return (N, n_classes, H, W) = ({n}, C, {h}, "
                          f"{w}) probabilities; got shape {probs.shape}")
    return probs


CALLS = {"detection": detector_call, "segmentation": segmenter_call}
KIND = {"detection": "detector", "segmentation": "segmenter"}


class _QueuedModel:
    """The detector (segmenter) an explanation sees: its images go through the shared queue,
    and what comes back is checked here, so that the model's faults are ``ModelError``s.
    ``first`` keeps the answer for the first image it was asked about (the image itself)."""

    def __init__(self, queue, ticket: Ticket, task: str):
        self.queue, self.ticket, self.task = queue, ticket, task
        self.kind = KIND[task]
        self.n_classes = None
        self.first = None

    def __call__(self, images):
        images = np.asarray(images)
        try:
            out = self.queue.submit(self.ticket, images)
        except Cancelled:
            raise
        except WrongAnswer as exc:
            raise ModelError(f"the {self.kind}'s answer is wrong: {first_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - the model's failure, in one line
            lines = str(exc).strip().splitlines()
            raise ModelError(f"the {self.kind} raised {type(exc).__name__}"
                             + (f": {lines[0]}" if lines else "")) from exc
        try:
            answer, first = self._checked(out, images.shape[0])
        except ValueError as exc:
            raise ModelError(f"the {self.kind}'s answer is wrong: {first_line(exc)}") from None
        if self.first is None:
            self.first = first
        return answer

    def _checked(self, out: np.ndarray, n: int):
        if self.task == "detection":
            from limefast.detection.protocol import check_detections

            sets = check_detections(list(out), n, f"a batch of {n} image(s)", self.n_classes)
            for found in sets:
                if found.class_probs is not None and len(found):
                    self.n_classes = found.class_probs.shape[1]
            return [{"boxes": d.boxes, "scores": d.scores, "labels": d.labels,
                     "class_probs": d.class_probs} for d in sets], sets[0]
        if self.n_classes is not None and out.shape[1] != self.n_classes:
            raise ValueError(f"it returned {out.shape[1]} classes, {self.n_classes} before: "
                             "the class count must not change")
        if out.dtype.kind not in "biuf" or not np.isfinite(out).all():
            raise ValueError("it returned NaN, infinite or non-numeric probabilities")
        self.n_classes = out.shape[1]
        return out, out[0]


@dataclasses.dataclass
class DetectionResult:
    """One served explanation of a detector's (segmenter's) targets: the explanation, the
    model's answer on the image itself (a ``Detections``, or (n_classes, H, W) probabilities),
    the seconds since the request arrived."""

    explanation: object
    prediction: object
    seconds: float
    options: DetectOptions


class DetectionScheduler(Scheduler):
    """The ``Scheduler`` of a detector (``task="detection"``) or segmenter: the same admission,
    budgets, cancellation and batching across requests, each explanation one target per box
    (region).

    Args:
        model_fn: a detector of the protocol ((N, H, W, 3) -> N dicts), or a segmenter
            ((N, H, W, 3) -> (N, n_classes, H, W) probabilities, or ``{"out": ...}``).
        task: ``"detection"`` or ``"segmentation"``.
        **kwargs: ``Scheduler``'s (``max_batch_size``, ``max_wait``, ``batch_size``,
            ``max_inflight``, ``min_rows``, ``merge``, ``on_batch``, ``cores``, ``dedupe``).
    """

    def __init__(self, model_fn, task: str = "detection", **kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {task!r}")
        self.task = task
        super().__init__(model_fn, call=CALLS[task], **kwargs)

    def submit(self, image, options: DetectOptions | None = None, **kwargs):
        """As ``Scheduler.submit``; ``options`` a ``DetectOptions`` (default its defaults)."""
        return super().submit(image, options or DetectOptions(dedupe=self.dedupe), **kwargs)

    def predict(self, images, ticket: Ticket | None = None) -> list:
        """The model's answer on each image, through the shared queue: a ``Detections`` per
        image (detection) or (n_classes, H, W) probabilities (segmentation)."""
        ticket = ticket or Ticket()
        out = []
        for image in images:
            image = checks.image_array(image)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            fn = _QueuedModel(self.queue, ticket, self.task)
            fn(image[None])
            out.append(fn.first)
        return out

    def _explain(self, image, options: DetectOptions, ticket: Ticket, arrival: float,
                 admission) -> DetectionResult:
        overhead = late = None
        try:
            from limefast.detection import DetectionExplainer, NoTargets

            fn = _QueuedModel(self.queue, ticket, self.task)
            budget = options.time_budget
            if budget is not None:
                # what is left once the image itself has been through the model (the
                # explainer's first call, before its budget clock starts)
                probe = self.queue.seconds_for(1, 1) or 0.0
                budget = budget - (time.perf_counter() - arrival) - probe
                if budget <= 0:
                    late = True
                    raise Overloaded("the time budget was spent in the queue before the "
                                     "explanation started", 1)
            kwargs = dict(method=options.method, num_samples=options.samples,
                          batch_size=self.batch_size, progress_bar=False)
            if options.method == "drise":  # no superpixels: its masks' rows come next
                admission.segmented()
                self.queue.activate(ticket)
            else:
                segmentation = self._gated_segmentation(options.segmentation, admission,
                                                        ticket)
                kwargs.update(segmentation_fn=segmentation, hide_color=options.hide_color,
                              time_budget=budget, dedupe=options.dedupe or self.dedupe)
                for name in ("max_samples", "sampler", "target_overlap", "min_gain"):
                    if getattr(options, name) is not None:
                        kwargs[name] = getattr(options, name)
            explainer = DetectionExplainer(random_state=options.seed)
            try:
                if self.task == "segmentation":
                    regions = None if options.targets is None else box_regions(
                        options.targets, image.shape[:2])
                    exp = explainer.explain_segmentation(
                        image, fn, regions=regions, classes=options.classes,
                        min_pixels=options.min_pixels, **kwargs)
                else:
                    exp = explainer.explain_instance(
                        image, fn, score_threshold=options.score_threshold,
                        targets=None if options.targets is None else list(options.targets),
                        **kwargs)
            except NoTargets as exc:
                raise NothingToExplain(str(exc)) from None
            seconds = time.perf_counter() - arrival
            timings = getattr(exp, "timings", None)
            if timings:
                overhead = sum(timings.get(k, 0.0) for k in ("sampling", "surrogate"))
            if options.time_budget is not None:
                late = seconds > options.time_budget
            return DetectionResult(exp, fn.first, seconds, options)
        finally:
            self.queue.deactivate(ticket)
            admission.release(overhead, max(admission.sharing, self.inflight), late)


def box_regions(targets, shape: tuple[int, int]) -> list:
    """Box targets as a segmenter's regions: ``(mask, class)`` pairs, each mask the pixels the
    box covers."""
    out = []
    for (x1, y1, x2, y2), label in targets:
        mask = np.zeros(shape, dtype=bool)
        mask[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
        out.append((mask, label))
    return out


def check_image(image: np.ndarray, options: DetectOptions | None, side: int | None, spec: str,
                where: str) -> None:
    """A request's image against what the model takes (``side``: the one size it takes, if
    any) and the request's ``targets``: a 400 ``RequestError`` otherwise."""
    h, w = image.shape[:2]
    if side and (h, w) != (side, side):
        raise RequestError(400, f"{where}: --model {spec} takes {side}x{side} images; got "
                                f"{w}x{h}")
    if options is not None and options.targets is not None:
        from limefast.detection.explainer import given_targets

        try:
            given_targets(list(options.targets), (h, w))
        except ValueError as exc:
            raise RequestError(400, f"{where}: bad targets: {first_line(exc)}") from None


def prediction_json(task: str, prediction, label_name) -> dict:
    """The model's answer on one image, for JSON: a detector's ``boxes`` (x1, y1, x2, y2),
    ``scores``, ``labels`` and their ``names``; a segmenter's ``mask`` (the most probable class
    of each pixel, (H, W)), the ``classes`` in it and their ``names``."""
    if task == "detection":
        labels = [int(v) for v in prediction.labels]
        return {"boxes": [[float(v) for v in box] for box in prediction.boxes],
                "scores": [number(v) for v in prediction.scores], "labels": labels,
                "names": [label_name(v) for v in labels]}
    mask = np.asarray(prediction).argmax(axis=0)
    classes = [int(c) for c in np.unique(mask)]
    return {"mask": mask.tolist(), "classes": classes, "names": [label_name(c) for c in classes]}
