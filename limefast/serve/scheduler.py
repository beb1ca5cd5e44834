"""One model, many concurrent explanations: the core of ``limefast serve``, usable without HTTP.

``Scheduler.submit(image, options)`` starts an explanation on a thread of its own and returns a
``Job`` at once. The explanation is ``explain_instance`` itself (its rounds, ``"auto"`` and
budget clock, seeded by the request's ``seed``); only its classifier is a stand-in that hands
the perturbed images to the shared ``BatchQueue``, where they join the other requests' images
in model calls. The budget clock measures each round through the queue, waits included, so a
request's ``time_budget`` holds under load (counted from its arrival).

A request is refused at once (``Overloaded``, with a retry delay) when ``max_inflight``
explanations run already, or when, at the model's measured cost of a call and with the
explanations in flight sharing the calls, the request could not get its first ``min_rows``
images through the model within its budget, or when as many budgeted explanations run as the
server recently managed to finish on time (a limit cut by ``LIMIT_CUT`` when one ends late and
grown by one per ``limit`` on time: what other work on the machine takes is learnt, not
modelled). An idle server only refuses what its first round cannot fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from limefast import config
from limefast.core import checks
from limefast.serve.batching import BatchQueue, Cancelled, Ticket
from limefast.serve.options import ExplainOptions

# When a budgeted explanation ends late, the budgeted concurrency is cut by this factor, at most
# once per LIMIT_CUT_INTERVAL seconds (the explanations already in flight end late together);
# each one on time adds 1/limit (additive increase, multiplicative decrease, as TCP does).
LIMIT_CUT = 0.7
LIMIT_CUT_INTERVAL = 0.5


class Overloaded(Exception):
    """The queue cannot take the request now; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(RuntimeError):
    """The classifier raised on the request's images (the message is its one line)."""


@dataclasses.dataclass
class Result:
    """One served explanation: the explanation, the model's outputs on the image, the time."""

    explanation: object
    probabilities: np.ndarray
    seconds: float
    options: ExplainOptions


class Job:
    """A submitted explanation: ``result()`` waits for it, ``cancel()`` drops its queued rows."""

    def __init__(self, future: Future, ticket: Ticket, queue: BatchQueue):
        self.future, self.ticket, self._queue = future, ticket, queue

    def result(self, timeout: float | None = None) -> Result:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()

    def cancel(self) -> None:
        self._queue.cancel(self.ticket)


class Admission:
    """A request counted in by ``Scheduler.admit``; ``release`` counts it out (once)."""

    def __init__(self, scheduler: Scheduler, sharing: int):
        self._scheduler, self.sharing = scheduler, sharing
        self._released = False
        self._segmenting = True  # counted in the gate's ``ahead`` until segmented
        scheduler.gate.expect()

    def segmented(self) -> None:
        if self._segmenting:
            self._segmenting = False
            self._scheduler.gate.done()

    def release(self, overhead: float | None = None, sharing: int = 1,
                late: bool | None = None) -> None:
        if not self._released:
            self._released = True
            self.segmented()
            self._scheduler._release(overhead, sharing, late)


class _Gate:
    """At most ``slots`` segmentations at once, the others waiting their turn (in a burst the
    first arrivals finish theirs first instead of every one finishing late), and their cost.
    ``ahead`` counts the admitted explanations whose segmentation has not ended (queued for
    the gate or not there yet): a new one's waits behind them."""

    def __init__(self, slots: int):
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self.slots, self.ahead = slots, 0
        self.seconds: float | None = None  # exponentially weighted seconds of one

    def expect(self) -> None:
        with self._lock:
            self.ahead += 1

    def done(self) -> None:
        with self._lock:
            self.ahead -= 1

    def run(self, segmentation, image):
        with self._slots:
            t0 = time.perf_counter()
            segments = segmentation(image)
            took = time.perf_counter() - t0
        with self._lock:
            self.seconds = took if self.seconds is None else 0.8 * self.seconds + 0.2 * took
        return segments

    def backlog(self) -> float:
        """Seconds before a segmentation of a request admitted now would end."""
        if self.seconds is None:
            return 0.0
        return (self.ahead // self.slots + 1) * self.seconds


class _QueuedClassifier:
    """The classifier an explanation sees: its images go through the shared queue."""

    def __init__(self, queue: BatchQueue, ticket: Ticket):
        self.queue, self.ticket = queue, ticket

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.queue.submit(self.ticket, batch)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's failure, in one line
            lines = str(exc).strip().splitlines()
            raise ModelError(f"the classifier raised {type(exc).__name__}"
                             + (f": {lines[0]}" if lines else "")) from exc


class Scheduler:
    """Explanations of one model, their rounds merged into shared model batches.

    Args:
        classifier_fn: (N, H, W, C) images -> (N, n_classes) probabilities: any
            ``classifier_fn`` or a ``TorchClassifier``.
        max_batch_size: the most images in one model call.
        max_wait: seconds a model call waits for more images after the oldest queued one.
        batch_size: images an explanation hands to the queue at once (its ``batch_size``;
            None: the ``TorchClassifier``'s own batch, else ``PLAIN_BATCH``).
        max_inflight: the most explanations at once; more are refused (``Overloaded``).
        min_rows: images a budgeted request must be able to get through the model within its
            budget to be admitted.
        merge: False turns batching across requests off (each request's images run alone).
        on_batch: ``on_batch(images, requests, seconds)`` after each model call.
        cores: the cores the explanations' own work (segmentation, perturbation, fit) shares;
            default those this process may run on.
        dedupe: ``explain_instance``'s ``dedupe`` (a deterministic model sees each distinct
            perturbed image once).
        call: how the queue runs the model on a batch (``BatchQueue``'s ``call``; default a
            classifier's checked (N, n_classes) outputs).
    """

    def __init__(self, classifier_fn, *, max_batch_size: int = 256, max_wait: float = 0.005,
                 batch_size: int | None = None, max_inflight: int = 32, min_rows: int = 64,
                 merge: bool = True, on_batch=None, cores: int | None = None,
                 dedupe: bool = False, call=None):
        from limefast.config import PLAIN_BATCH

        self.classifier_fn = classifier_fn
        self.dedupe = bool(dedupe)
        self.queue = BatchQueue(classifier_fn, max_batch_size, max_wait, merge, on_batch, call)
        if batch_size is None:
            batch_size = getattr(classifier_fn, "batch_size", None) or PLAIN_BATCH
        self.batch_size = checks.positive_int("batch_size", batch_size)
        self.max_inflight = checks.positive_int("max_inflight", max_inflight)
        self.min_rows = checks.positive_int("min_rows", min_rows)
        self._pool = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="limefast-serve")
        self._lock = threading.Lock()
        self.cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1)
        self.inflight = 0
        # the most budgeted explanations at once: cut when one ends late, grown when on time
        self.limit = float(self.max_inflight)
        self._last_cut = -float("inf")
        self.gate = _Gate(self.cores)
        self.overhead: float | None = None  # seconds per explanation outside the model and
        # the segmentation (the perturbation's share, the fit)
        self._closed = False

    # -- admission ------------------------------------------------------------------------------
    def admit(self, options: ExplainOptions, arrival: float | None = None) -> Admission:
        """Count a request in before its image is decoded, or refuse it at once.

        Returns:
            An ``Admission`` for ``submit`` (``release()`` it if the request goes no further).

        Raises:
            Overloaded: too many in flight, or the queue cannot meet ``options.time_budget``.
        """
        arrival = time.perf_counter() if arrival is None else arrival
        with self._lock:
            if self._closed:
                raise Overloaded("the server is shutting down", 5)
            if self.inflight >= self.max_inflight:
                raise Overloaded(f"{self.inflight} explanations in flight (the most: "
                                 f"{self.max_inflight})", self._retry_after(1.0))
            if options.time_budget is not None and self.inflight >= int(self.limit):
                raise Overloaded(
                    f"{self.inflight} explanation(s) in flight, the most that recently met "
                    f"their time budgets", self._retry_after(1.0))
            if options.time_budget is not None:
                # An idle server only refuses what even the first round cannot fit.
                rows = self.min_rows if self.inflight else min(self.min_rows,
                                                              config.BUDGET_FIRST_ROUND)
                estimate = self._first_rows_seconds(rows)
                if estimate is not None:
                    # the others' fits share the cores with this one's
                    share = max(1.0, (self.inflight + 1) / self.cores)
                    estimate += ((time.perf_counter() - arrival) + self.gate.backlog()
                                 + (self.overhead or 0.0) * share)
                    if estimate > options.time_budget * config.BUDGET_SHARE:
                        raise Overloaded(
                            f"the queue cannot meet time_budget={options.time_budget:g} s: "
                            f"{self.inflight} explanation(s) in flight, about {estimate:.2f} s "
                            f"to get the first {rows} images through the model",
                            self._retry_after(estimate - options.time_budget))
            self.inflight += 1
            return Admission(self, self.inflight)

    def _first_rows_seconds(self, rows: int) -> float | None:
        """Seconds for a new request to get ``rows`` images through the model, the
        explanations in flight taking their share of every call, after what is queued."""
        sharing = self.inflight + 1
        piece = min(self.batch_size, rows)
        rounds = -(-rows // piece)
        queued = self.queue.seconds_for(self.queue.queued_images, 1)
        per_round = self.queue.seconds_for(piece * sharing, sharing)
        if queued is None or per_round is None:
            return None
        return (queued if self.queue.queued_images else 0.0) + rounds * per_round

    def forget_costs(self) -> None:
        """Drop what was measured of the model and of the explanations' other work (after a
        warm-up whose first calls paid one-time costs)."""
        with self._lock:
            self.overhead = self.gate.seconds = None
            self.queue.stats.forget()

    def _retry_after(self, excess: float) -> int:
        return max(1, math.ceil(excess))

    def _release(self, overhead: float | None, sharing: int, late: bool | None) -> None:
        with self._lock:
            self.inflight -= 1
            if late is not None:  # AIMD on the budgeted requests' concurrency
                now = time.perf_counter()
                if late and now - self._last_cut > LIMIT_CUT_INTERVAL:
                    self.limit = max(1.0, self.limit * LIMIT_CUT)
                    self._last_cut = now
                elif not late:
                    self.limit = min(float(self.max_inflight), self.limit + 1.0 / self.limit)
            if overhead is not None:  # as if alone: the wall time over the cores' share
                overhead /= max(1.0, sharing / self.cores)
                self.overhead = overhead if self.overhead is None else (
                    0.8 * self.overhead + 0.2 * overhead)

    # -- the public calls -----------------------------------------------------------------------
    def _gated_segmentation(self, name: str, admission, ticket):
        """The segmentation ``name`` as the explanation's ``segmentation_fn``: run through the
        gate, then the request's rows join the queue."""
        from limefast.segmentation import SEGMENTATIONS
        from limefast.wrappers.scikit_image import SegmentationAlgorithm

        algorithm = SegmentationAlgorithm(name, **SEGMENTATIONS[name])

        def segmentation(img):
            segments = self.gate.run(algorithm, img)
            admission.segmented()
            self.queue.activate(ticket)  # its rows come next
            return segments
        return segmentation

    def submit(self, image: np.ndarray, options: ExplainOptions | None = None, *,
               arrival: float | None = None, admission: Admission | None = None) -> Job:
        """Start explaining ``image`` (H, W, C) or (H, W); returns a ``Job`` at once.

        Args:
            image: the image, as ``explain_instance`` takes it.
            options: the request's options (default ``ExplainOptions()``).
            arrival: ``time.perf_counter()`` when the request arrived (default now): its
                ``time_budget`` counts from it.
            admission: what ``admit`` returned for this request (default: admitted now).

        Raises:
            Overloaded: refused now (see the class docstring); nothing was queued.
            ValueError: a bad image.
        """
        options = options or ExplainOptions()
        arrival = time.perf_counter() if arrival is None else arrival
        try:
            image = checks.image_array(image)
            if image.ndim == 2:  # gray2rgb, as explain_instance does (the model sees RGB)
                image = np.repeat(image[:, :, None], 3, axis=2)
        except (TypeError, ValueError):
            if admission is not None:
                admission.release()
            raise
        admission = admission or self.admit(options, arrival)
        ticket = Ticket()
        try:
            future = self._pool.submit(self._explain, image, options, ticket, arrival, admission)
        except RuntimeError:
            admission.release()
            raise Overloaded("the server is shutting down", 5) from None
        return Job(future, ticket, self.queue)

    def explain(self, image: np.ndarray, options: ExplainOptions | None = None) -> Result:
        """``submit(image, options).result()``."""
        return self.submit(image, options).result()

    def predict(self, images: list[np.ndarray], ticket: Ticket | None = None) -> list[np.ndarray]:
        """The model's outputs on each image, through the shared queue."""
        ticket = ticket or Ticket()
        clf = _QueuedClassifier(self.queue, ticket)
        return [np.asarray(clf(checks.image_array(image)[None]), dtype=np.float64)[0]
                for image in images]

    @property
    def closed(self) -> bool:
        """True once ``close`` was called: new work is refused (the model is not ready)."""
        return self._closed

    def close(self) -> None:
        """Refuse new work, let what runs finish, stop the queue."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.queue.close()

    # -- one explanation, on its own thread ---------------------------------------------------
    def _explain(self, image, options: ExplainOptions, ticket: Ticket, arrival: float,
                 admission: Admission) -> Result:
        overhead = late = None
        try:
            clf = _QueuedClassifier(self.queue, ticket)
            # The image alone first, although row 0 of its samples gives the same outputs
            # (explanation.prediction): taking them from there measured worse in the serve
            # bench, three runs each: deadline p99 1.20-1.27 s against 1.06-1.15 s, and
            # 2.6-2.9x against 3.1-3.5x lime per request. Likely why, not shown: these
            # 1-image calls tell the admission's cost line what a call costs.
            probabilities = self.predict([image], ticket)[0]
            budget = options.time_budget
            if budget is not None:
                budget = budget - (time.perf_counter() - arrival)
                if budget <= 0:
                    late = True
                    raise Overloaded("the time budget was spent in the queue before the "
                                     "explanation started", 1)
            segmentation = self._gated_segmentation(options.segmentation, admission, ticket)
            kwargs = dict(top_labels=options.top_labels, num_samples=options.num_samples,
                          batch_size=self.batch_size, segmentation_fn=segmentation,
                          progress_bar=False, hide_color=options.hide_color,
                          num_features=options.num_features, time_budget=budget,
                          dedupe=self.dedupe,
                          labels=options.labels if options.labels is not None else (1,))
            if options.max_samples is not None:
                kwargs["max_samples"] = options.max_samples
            if options.sampler is not None:
                kwargs["sampler"] = options.sampler
            if options.method == "kernelshap":
                from limefast.kernelshap import KernelShapImageExplainer

                explainer = KernelShapImageExplainer(random_state=options.seed)
                kwargs.pop("num_features")
            else:
                from limefast.lime_image import LimeImageExplainer

                explainer = LimeImageExplainer(random_state=options.seed)
            explanation = explainer.explain_instance(image, clf, **kwargs)
            seconds = time.perf_counter() - arrival
            timings = getattr(explanation, "timings", None) or {}
            overhead = sum(timings.get(k, 0.0) for k in ("sampling", "surrogate"))
            if options.time_budget is not None:
                late = seconds > options.time_budget
            return Result(explanation, probabilities, seconds, options)
        finally:
            self.queue.deactivate(ticket)
            admission.release(overhead, max(admission.sharing, self.inflight), late)
