"""Dynamic batching across requests: the rows of every explanation in flight, merged into shared
model calls.

Each explanation hands its perturbed images to ``BatchQueue.submit`` a batch at a time (its own
``batch_size``) and waits. One thread takes what is queued, in arrival order, into model calls of
at most ``max_batch_size`` images (a piece larger than what is left is split), waiting up to
``max_wait`` seconds after the oldest queued piece for the batch to fill: Triton's
``max_batch_size`` / ``max_queue_delay_microseconds`` and Ray Serve's ``@serve.batch(
max_batch_size, batch_wait_timeout_s)``, counted in images (Ray's ``batch_size_fn``).

A call does not wait for rows that cannot come: once every explanation that is taking rows
(``activate``) has some queued, it starts at once.

A row's output depends on that row alone for any model that treats a batch as independent images
(up to a float32 model's rounding under other batch shapes), so what one request is answered does
not depend on the others. When a merged call raises, each request's rows are run again on their
own: only the request whose images make the model fail gets the error.

The model need not be a classifier: ``call`` says how a batch is run and what a row of the
answer is, so a detector's list of dicts per batch rides the same queue as an object array of
one dict per image (``limefast.serve.detect``).
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from limefast.core.sampling import _call_classifier


def classifier_call(classifier_fn, batch: np.ndarray) -> np.ndarray:
    """The queue's default model call: ``classifier_fn(batch)`` checked as ``explain_instance``
    checks it, (N, n_classes) numbers."""
    return _call_classifier(classifier_fn, batch, 0, batch.shape[0])


class Cancelled(Exception):
    """The request was cancelled (its client went away); its queued rows were dropped."""


class Ticket:
    """One request's handle on the queue: its cancellation flag."""

    def __init__(self):
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Piece:
    """Images of one ``submit`` call; ``taken`` of them are in a batch already."""

    __slots__ = ("ticket", "images", "taken", "done", "outputs", "error", "left", "queued_at")

    def __init__(self, ticket: Ticket, images: np.ndarray):
        self.ticket, self.images = ticket, images
        self.taken = 0
        self.left = images.shape[0]  # rows whose output has not arrived
        self.done = threading.Event()
        self.outputs: np.ndarray | None = None
        self.error: BaseException | None = None
        self.queued_at = time.perf_counter()

    @property
    def key(self):
        return self.images.shape[1:], self.images.dtype


class BatchStats:
    """What the queue has done: model calls, images, seconds, and the cost of a call.

    A call of ``n`` images is modelled as ``per_call + per_image * n`` (a least-squares fit
    over the last ``WINDOW`` calls): a Python classifier with a fixed cost per call and a CNN
    whose cost grows with the batch are both in it.
    """

    WINDOW = 64

    def __init__(self):
        self.calls = self.images = self.failures = 0
        self.seconds = 0.0
        self._recent: collections.deque = collections.deque(maxlen=self.WINDOW)
        self._version = 0  # bumped by every change of _recent
        self._fitted: tuple = (-1, None)  # (version, cost) of the last fit

    def add(self, n: int, seconds: float) -> None:
        self.calls += 1
        self.images += n
        self.seconds += seconds
        self._recent.append((n, seconds))
        self._version += 1

    def forget(self) -> None:
        """Forget the calls seen for ``cost`` (the counts stay)."""
        self._recent.clear()
        self._version += 1

    def cost(self) -> tuple[float, float] | None:
        """(per_call, per_image) seconds, or None before the first call; fitted once per
        change of the calls seen (admission asks for it on every request)."""
        version, fitted = self._fitted
        if version != self._version:
            version = self._version
            fitted = self._fit(list(self._recent))
            self._fitted = (version, fitted)
        return fitted

    @staticmethod
    def _fit(recent) -> tuple[float, float] | None:
        if not recent:
            return None
        n, t = (np.array(v, dtype=float) for v in zip(*recent))
        if np.ptp(n) == 0:  # one batch size seen: its cost, all of it per image
            return 0.0, float(t.mean() / n[0])
        slope, intercept = np.polyfit(n, t, 1)
        if slope < 0:
            return float(t.mean()), 0.0
        if intercept < 0:
            return 0.0, float(t.sum() / n.sum())
        return float(intercept), float(slope)


class BatchQueue:
    """Merges the images of concurrent ``submit`` calls into calls of ``classifier_fn``.

    Args:
        classifier_fn: (N, H, W, C) images -> (N, n_classes) outputs (any ``classifier_fn``,
            a ``TorchClassifier`` included). Called from the queue's one thread only.
        max_batch_size: the most images in one call.
        max_wait: seconds a call waits after its oldest image was queued for more to arrive.
        merge: False runs each piece in calls of its own (the baseline of no batching across
            requests).
        on_batch: called as ``on_batch(images, requests, seconds)`` after each model call.
        call: ``call(classifier_fn, batch) -> outputs``, one row per image (``outputs[i]`` any
            shape, or an object array of per-image answers): how the model is called on a
            batch (default ``classifier_call``; a detector's answers are an object array of
            dicts, ``limefast.serve.detect``).
    """

    def __init__(self, classifier_fn, max_batch_size: int = 256, max_wait: float = 0.005,
                 merge: bool = True, on_batch=None, call=None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1; got {max_batch_size}")
        if not (max_wait >= 0):
            raise ValueError(f"max_wait must be >= 0 seconds; got {max_wait}")
        self.classifier_fn = classifier_fn
        self.max_batch_size, self.max_wait, self.merge = int(max_batch_size), float(max_wait), merge
        self.on_batch = on_batch
        self.call = call or classifier_call
        self.stats = BatchStats()
        self._pending: collections.deque[_Piece] = collections.deque()
        self._active: set[Ticket] = set()
        self._buffers: dict = {}
        self._queued_images = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="limefast-batcher", daemon=True)
        self._thread.start()

    @property
    def queued_images(self) -> int:
        """Images waiting for a model call."""
        return self._queued_images

    def seconds_for(self, images: int, pieces: int) -> float | None:
        """The model's time for ``images`` queued in ``pieces`` (one per request), at the
        measured cost of a call; None before the first call."""
        cost = self.stats.cost()
        if cost is None:
            return None
        per_call, per_image = cost
        calls = -(-images // self.max_batch_size) if self.merge else max(
            pieces, -(-images // self.max_batch_size))
        return calls * per_call + images * per_image

    def submit(self, ticket: Ticket, images: np.ndarray) -> np.ndarray:
        """The model's outputs on ``images`` (N, H, W, C), computed in shared batches; blocks.

        Raises:
            Cancelled: the ticket was cancelled before all its rows ran.
            Exception: what the classifier raised on these images.
        """
        piece = _Piece(ticket, np.ascontiguousarray(images))
        if piece.images.shape[0] == 0:
            raise ValueError("submit got no images")
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch queue is closed")
            # ``cancel`` flags the ticket, then drops its queued pieces under this lock: a
            # piece is either refused here or dropped there, never left waiting
            if ticket.cancelled:
                raise Cancelled("the request was cancelled")
            self._pending.append(piece)
            self._queued_images += piece.images.shape[0]
            self._cond.notify_all()
        piece.done.wait()
        if piece.error is not None:
            raise piece.error
        return piece.outputs

    def cancel(self, ticket: Ticket) -> None:
        """Cancel ``ticket``: its queued rows are dropped, its waiting ``submit`` raises."""
        ticket.cancel()
        self._drop(ticket)

    def close(self) -> None:
        """Stop the thread; queued pieces fail with RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        with self._cond:
            for piece in self._pending:
                self._fail(piece, RuntimeError("the batch queue was closed"))
            self._pending.clear()

    def activate(self, ticket: Ticket) -> None:
        """``ticket`` will submit rows until ``deactivate``: a call waits for its rows (up to
        ``max_wait``) only while it is computing them; once every active ticket has rows
        queued, nothing more can come and the call starts."""
        with self._cond:
            self._active.add(ticket)
            self._cond.notify_all()

    def deactivate(self, ticket: Ticket) -> None:
        with self._cond:
            self._active.discard(ticket)
            self._cond.notify_all()

    def _all_waiting(self) -> bool:
        if not self._active:
            return False
        waiting = {id(piece.ticket) for piece in self._pending}
        return all(id(ticket) in waiting for ticket in self._active)

    def _drop(self, ticket: Ticket) -> None:
        with self._cond:
            keep = collections.deque()
            for piece in self._pending:
                if piece.ticket is ticket:
                    self._queued_images -= piece.images.shape[0] - piece.taken
                    self._fail(piece, Cancelled("the request was cancelled"))
                else:
                    keep.append(piece)
            self._pending = keep

    @staticmethod
    def _fail(piece: _Piece, error: BaseException) -> None:
        if not piece.done.is_set():
            piece.error = error
            piece.done.set()

    # -- the batching thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            parts = self._next_batch()
            if parts is None:
                return
            if parts:
                self._run(parts)

    def _next_batch(self):
        """[(piece, start, stop)] of the next call, or None when closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._pending[0].queued_at + self.max_wait
            while (self.merge and self._queued_images < self.max_batch_size
                   and not self._closed and not self._all_waiting()):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            if not self._pending:  # all dropped while waiting
                return []
            key = self._pending[0].key
            parts, room = [], self.max_batch_size
            for piece in list(self._pending):
                if room == 0 or (parts and not self.merge):
                    break
                if piece.key != key:  # another image shape waits for its own call
                    continue
                n = min(room, piece.images.shape[0] - piece.taken)
                parts.append((piece, piece.taken, piece.taken + n))
                piece.taken += n
                room -= n
                self._queued_images -= n
                if piece.taken == piece.images.shape[0]:
                    self._pending.remove(piece)
            return parts

    def _batch(self, parts) -> np.ndarray:
        """The parts' images as one array: a view of a piece, or a copy into a buffer kept
        for the next calls (a fresh array of tens of MiB is mapped and page-faulted anew on
        every call). The classifier must not keep it, as with ``explain_instance``'s
        batches."""
        first = parts[0][0].images
        if len(parts) == 1:
            return first[parts[0][1]:parts[0][2]]
        n = sum(b - a for _, a, b in parts)
        key = (first.shape[1:], first.dtype.str)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape[0] < n:
            self._buffers.clear()  # one image kind at a time is kept
            rows = min(self.max_batch_size, max(n, 2 * (0 if buffer is None else
                                                        buffer.shape[0])))
            buffer = self._buffers[key] = np.empty((rows,) + first.shape[1:], first.dtype)
        return np.concatenate([p.images[a:b] for p, a, b in parts], out=buffer[:n])

    def _run(self, parts) -> None:
        batch = self._batch(parts)
        t0 = time.perf_counter()
        try:
            out = self.call(self.classifier_fn, batch)
            if out.shape[0] != batch.shape[0]:
                raise ValueError(f"the model returned {out.shape[0]} outputs for "
                                 f"{batch.shape[0]} images")
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            self.stats.failures += 1
            if len({id(p.ticket) for p, _, _ in parts}) > 1:
                for piece in dict.fromkeys(p for p, _, _ in parts):
                    self._run([(p, a, b) for p, a, b in parts if p is piece])
                return
            for piece, _, _ in parts:
                self._fail(piece, exc)
            return
        seconds = time.perf_counter() - t0
        self.stats.add(batch.shape[0], seconds)
        if self.on_batch is not None:
            self.on_batch(batch.shape[0], len({id(p.ticket) for p, _, _ in parts}), seconds)
        row = 0
        for piece, a, b in parts:
            if piece.done.is_set():  # cancelled meanwhile
                row += b - a
                continue
            try:
                if piece.outputs is None:
                    piece.outputs = np.empty((piece.images.shape[0],) + out.shape[1:],
                                             out.dtype)
                piece.outputs[a:b] = out[row:row + b - a]
            except (ValueError, TypeError) as exc:  # the answer's width changed: this
                # request fails, the batching thread goes on
                self._fail(piece, ValueError(
                    f"the model's outputs changed shape between calls: {out.shape[1:]} now, "
                    f"{piece.outputs.shape[1:]} before ({exc})"))
                row += b - a
                continue
            row += b - a
            piece.left -= b - a
            if piece.left == 0:
                piece.done.set()
