"""Sampling stage: lime's 0/1 rows, their distances, and the classifier's answers on them.

The perturbed images are never all held at once: they are written chunk by chunk into one reused
buffer by the compiled kernel (``limefast.kernels.perturb``) and handed to ``classifier_fn``
``batch_size`` rows at a time, exactly the batches lime makes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from limefast import _loading, config
from limefast.kernels.perturb import PerturbPlan

# The row designs ``explain_instance(sampler=...)`` takes, and the rows each draws together.
SAMPLERS = {"lime": 1, "paired": 2}


def check_sampler(sampler) -> str:
    """``sampler`` checked against ``SAMPLERS``."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}; "
                         f"got {sampler!r}")
    return sampler


def design_unit(sampler: str) -> int:
    """Rows a design draws together: an explanation takes whole units (``num_samples`` is
    rounded up to a multiple), and its standard errors treat a unit as one draw."""
    return SAMPLERS[check_sampler(sampler)]


def rows_for(num_samples: int, sampler: str) -> int:
    """``num_samples`` rounded up to whole units of ``sampler``."""
    unit = design_unit(sampler)
    return -(-int(num_samples) // unit) * unit


def draw_rows(random_state: np.random.RandomState, num_samples: int, n_features: int,
              sampler: str = "lime") -> np.ndarray:
    """lime's RNG draw 2: (num_samples, n_features) 0/1 rows, row 0 all ones, stored as int8.

    ``sampler="lime"``: lime's rows, draw for draw. lime draws ``randint(0, 2, num_samples *
    n_features)`` as int64 in one call. Each value takes exactly one 32-bit draw from the
    generator, so drawing it in pieces gives the same values and leaves the same state, while
    only int8 rows are kept (8x less memory).

    ``sampler="paired"``: complement pairs. Rows 2j and 2j + 1 are ``z`` and ``1 - z``, with
    ``z`` drawn as lime draws a row (half as many draws); row 0 is all ones, so row 1 is all
    zeros. Every row still has each superpixel on with probability 1/2, lime's distribution,
    so the surrogate converges to lime's; but in a pair the terms of the model's answer that
    a complement leaves unchanged (the pairwise interactions first) cancel from the slopes,
    up to the kernel weighing the two rows differently. ``num_samples`` is rounded up to an
    even count (``rows_for``).
    """
    unit = design_unit(sampler)
    rows = rows_for(num_samples, sampler)
    drawn = _draw_bits(random_state, rows // unit, n_features)
    if unit == 1:
        data = drawn
    else:
        data = np.empty((rows, n_features), dtype=np.int8)
        data[0::2] = drawn
        np.subtract(1, drawn, out=data[1::2])
    return data


def _draw_bits(random_state, num_rows: int, n_features: int) -> np.ndarray:
    """(num_rows, n_features) bits as lime draws them, row 0 set to all ones."""
    total = num_rows * n_features
    data = np.empty(total, dtype=np.int8)
    step = max(1, config.ROW_DRAW_ELEMENTS)
    for start in range(0, total, step):
        stop = min(total, start + step)
        data[start:stop] = random_state.randint(0, 2, stop - start)
    data = data.reshape((num_rows, n_features))
    if num_rows:
        data[0, :] = 1
    return data


def row_distances(data: np.ndarray, metric) -> np.ndarray:
    """Distances of every 0/1 row to row 0 (all ones), as lime computes them.

    Cosine, lime's default, in closed form: a row with k ones of n is at ``1 - sqrt(k / n)``
    (an all-zero row at 1, as scikit-learn's normalisation gives). Any other metric goes to
    ``sklearn.metrics.pairwise_distances``.
    """
    if isinstance(metric, str) and metric == "cosine":
        n = data.shape[1]
        k = np.count_nonzero(data, axis=1)
        return np.clip(1.0 - np.sqrt(k / n), 0.0, 2.0)
    import sklearn.metrics  # only for metrics other than lime's default

    try:
        return sklearn.metrics.pairwise_distances(data, data[0:1], metric=metric).ravel()
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"distance_metric {metric!r} is not usable by sklearn.metrics.pairwise_distances: {exc}"
        ) from exc


def chunk_rows(image_nbytes: int, batch_size: int, num_samples: int) -> int:
    """Rows per perturbation chunk: a whole number of batches within ``config.CHUNK_BYTES``."""
    if batch_size * image_nbytes > config.MEMORY_BUDGET_BYTES:
        raise MemoryError(
            f"one batch of {batch_size} perturbed images of {image_nbytes} bytes needs "
            f"{batch_size * image_nbytes} bytes, over limefast.config.MEMORY_BUDGET_BYTES="
            f"{config.MEMORY_BUDGET_BYTES}; use a smaller batch_size or raise the budget"
        )
    batches = max(1, config.CHUNK_BYTES // max(1, batch_size * image_nbytes))
    return min(batches * batch_size, max(num_samples, 1))


class BatchSizer:
    """``batch_size="auto"``: batches grow while the classifier's time per image falls.

    The first calls are the probe, on the explanation's own rows (nothing is evaluated twice):
    batches of ``config.AUTO_BATCH_START`` images, then twice as many each call while the time
    per image falls by more than ``config.AUTO_BATCH_GAIN``; the size before the first call that
    did not pay is kept. Batches stay within ``config.AUTO_BATCH_MAX`` images and
    ``config.AUTO_BATCH_BYTES`` of perturbed images. The results do not depend on the sizes
    chosen (beyond a float32 model's rounding under other batches).
    """

    def __init__(self, image_nbytes: int):
        cap_bytes = max(1, config.AUTO_BATCH_BYTES // max(1, image_nbytes))
        self.cap = max(1, min(config.AUTO_BATCH_MAX, cap_bytes))
        self.size = min(self.cap, max(1, config.AUTO_BATCH_START))
        self.settled = self.size >= self.cap
        self._best = None  # seconds per image of the best size so far

    def next(self, remaining: int) -> int:
        return max(1, min(self.size, remaining))

    def record(self, n: int, seconds: float) -> None:
        """The time one call of ``n`` images took."""
        if self.settled or n < self.size:  # a short last batch says little
            return
        per_image = seconds / n
        if self._best is not None and per_image > self._best * (1 - config.AUTO_BATCH_GAIN):
            self.size = max(1, self.size // 2)  # that doubling did not pay
            self.settled = True
            return
        self._best = per_image
        if self.size >= self.cap:
            self.settled = True
        else:
            self.size = min(self.cap, self.size * 2)


class ModelStats:
    """What the classifier cost: calls, images and seconds inside ``classifier_fn``."""

    def __init__(self):
        self.calls = 0
        self.images = 0
        self.seconds = 0.0
        self.largest_batch = 0

    def add(self, n: int, seconds: float) -> None:
        self.calls += 1
        self.images += n
        self.seconds += seconds
        self.largest_batch = max(self.largest_batch, n)


def predict_rows(
    plans: Sequence[PerturbPlan],
    datas: Sequence[np.ndarray],
    classifier_fn: Callable,
    batch_size,
    progress_bar=True,
    stats: ModelStats | None = None,
) -> list[np.ndarray]:
    """Classifier outputs for every row of every ``datas[i]``: a list of (N_i, n_classes) arrays.

    The rows of all images form one stream, cut into batches of ``batch_size`` rows (the last
    may be shorter), so several images share a batch; for one image these are lime's batches.
    All plans must have the same image shape and dtype. ``classifier_fn`` gets (n, H, W, C)
    arrays in the image's dtype; they are views of a buffer that is rewritten for the next
    chunk, so a classifier must not keep them. Its outputs are copied.

    ``batch_size`` may be a ``BatchSizer`` (``"auto"``); ``progress_bar`` a bool or an open
    tqdm bar to advance; ``stats`` collects the classifier's calls and time.
    """
    if isinstance(batch_size, BatchSizer):
        return _predict_rows_sized(plans, datas, classifier_fn, batch_size, progress_bar, stats)
    plan = plans[0]
    sizes = [d.shape[0] for d in datas]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    per_chunk = chunk_rows(int(np.prod(plan.shape)) * plan.dtype.itemsize, batch_size, total)
    buffer = plan.new_buffer(per_chunk)
    outputs: list = [None] * len(plans)
    n_classes = [None]
    with _progress(progress_bar, total) as bar:
        for c0 in range(0, total, per_chunk):
            c1 = min(c0 + per_chunk, total)
            for i, a, b in _pieces(offsets, c0, c1):
                _write(plans[i], datas[i][a - offsets[i]:b - offsets[i]], buffer[a - c0:])
            for b0 in range(c0, c1, batch_size):
                b1 = min(b0 + batch_size, c1)
                out = _call_timed(classifier_fn, buffer[b0 - c0:b1 - c0], b0, total, stats)
                _check_classes(out, n_classes, b0, b1)
                for i, a, b in _pieces(offsets, b0, b1):
                    outputs[i] = _store(outputs[i], out[a - b0:b - b0], a - offsets[i], sizes[i])
                bar.update(b1 - b0)
    return outputs


def _predict_rows_sized(plans, datas, classifier_fn, sizer: BatchSizer, progress_bar, stats):
    """``predict_rows`` in batches chosen by ``sizer``, each written just before its call."""
    plan = plans[0]
    sizes = [d.shape[0] for d in datas]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    buffer = None
    outputs: list = [None] * len(plans)
    n_classes = [None]
    with _progress(progress_bar, total) as bar:
        b0 = 0
        while b0 < total:
            n = sizer.next(total - b0)
            if buffer is None or buffer.shape[0] < n:
                chunk_rows(int(np.prod(plan.shape)) * plan.dtype.itemsize, n, n)  # the budget
                buffer = plan.new_buffer(n)
            b1 = b0 + n
            for i, a, b in _pieces(offsets, b0, b1):
                _write(plans[i], datas[i][a - offsets[i]:b - offsets[i]], buffer[a - b0:])
            t0 = time.perf_counter()
            out = _call_timed(classifier_fn, buffer[:n], b0, total, stats)
            sizer.record(n, time.perf_counter() - t0)
            _check_classes(out, n_classes, b0, b1)
            for i, a, b in _pieces(offsets, b0, b1):
                outputs[i] = _store(outputs[i], out[a - b0:b - b0], a - offsets[i], sizes[i])
            bar.update(n)
            b0 = b1
    return outputs


def _write(plan: PerturbPlan, rows: np.ndarray, out: np.ndarray) -> None:
    """``plan.write``, or its NumPy twin while the kernels are still loading and the images
    are small (``limefast._loading``): the same bytes either way."""
    if (len(rows) * plan.image.nbytes <= config.FIRST_CALL_NUMPY_BYTES
            and _loading.kernels_loading()):
        plan.write_numpy(rows, out)
    else:
        plan.write(rows, out)


def _progress(progress_bar, total):
    """A new tqdm bar (or a disabled one), or the caller's open bar, left open."""
    if hasattr(progress_bar, "update"):
        return contextlib.nullcontext(progress_bar)
    return tqdm(total=total, disable=not progress_bar, desc="limefast")


def _check_classes(out, n_classes: list, b0: int, b1: int) -> None:
    if n_classes[0] is None:
        n_classes[0] = out.shape[1]
    elif out.shape[1] != n_classes[0]:
        raise ValueError(
            f"classifier_fn returned {out.shape[1]} classes on the batch of rows "
            f"{b0}..{b1 - 1} but {n_classes[0]} on earlier batches"
        )


def _call_timed(classifier_fn, batch, start, num_samples, stats):
    if stats is None:
        return _call_classifier(classifier_fn, batch, start, num_samples)
    t0 = time.perf_counter()
    out = _call_classifier(classifier_fn, batch, start, num_samples)
    stats.add(batch.shape[0], time.perf_counter() - t0)
    return out


def _pieces(offsets: np.ndarray, start: int, stop: int):
    """(instance, start, stop) of the global row range [start, stop) split by instance."""
    i = int(np.searchsorted(offsets, start, side="right")) - 1
    while start < stop:
        end = min(stop, int(offsets[i + 1]))
        if end > start:
            yield i, start, end
        start = end
        i += 1


def _call_classifier(classifier_fn, batch, start, num_samples):
    n = batch.shape[0]
    where = f"batch of rows {start}..{start + n - 1} (of {num_samples})"
    try:
        out = classifier_fn(batch)
    except BaseException as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"limefast: raised by classifier_fn on the {where}")
        raise
    out = _to_numpy(out)
    if out.ndim != 2:
        raise ValueError(
            f"classifier_fn must return a 2-D array (n_images, n_classes); got shape "
            f"{out.shape} on the {where}"
        )
    if out.shape[0] != n:
        raise ValueError(
            f"classifier_fn returned {out.shape[0]} rows for {n} images on the {where}"
        )
    if out.dtype.kind not in "biuf":
        raise TypeError(f"classifier_fn must return numbers; got dtype {out.dtype} on the {where}")
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError(f"classifier_fn returned NaN or infinite values on the {where}")
    return out


def _to_numpy(out) -> np.ndarray:
    if hasattr(out, "detach") and hasattr(out, "cpu"):  # a torch tensor, maybe on a GPU
        out = out.detach().cpu().numpy()
    elif hasattr(out, "get") and hasattr(out, "__cuda_array_interface__"):  # a CuPy array
        out = out.get()
    return np.asarray(out)


def _store(labels, out, start, num_samples):
    """Copy ``out`` into rows start.. of one image's (num_samples, n_classes) outputs."""
    if labels is None:
        labels = np.empty((num_samples, out.shape[1]), dtype=out.dtype)
    elif np.result_type(labels.dtype, out.dtype) != labels.dtype:
        # lime stacks the rows with np.array, which promotes mixed dtypes.
        labels = labels.astype(np.result_type(labels.dtype, out.dtype))
    labels[start:start + out.shape[0]] = out
    return labels
