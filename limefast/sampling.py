"""Sampling stage: lime's 0/1 rows, their distances, and the classifier's answers on them.

The perturbed images are never all held at once: they are written chunk by chunk into one reused
buffer by the compiled kernel (``limefast.kernels.perturb``) and handed to ``classifier_fn``
``batch_size`` rows at a time, exactly the batches lime makes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import sklearn.metrics
from tqdm.auto import tqdm

from . import config
from .kernels.perturb import PerturbPlan


def draw_rows(random_state: np.random.RandomState, num_samples: int, n_features: int) -> np.ndarray:
    """lime's RNG draw 2: (num_samples, n_features) 0/1 rows, row 0 all ones."""
    data = random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
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


def predict_rows(
    plan: PerturbPlan,
    data: np.ndarray,
    classifier_fn: Callable,
    batch_size: int,
    progress_bar: bool = True,
) -> np.ndarray:
    """Classifier outputs for every row of ``data``: an (N, n_classes) array.

    ``classifier_fn`` gets (n, H, W, C) arrays in the image's dtype, ``batch_size`` rows at a time
    (the last batch may be shorter). The arrays are views of a buffer that is rewritten for the
    next chunk: a classifier must not keep them. Its outputs are copied.
    """
    num_samples = data.shape[0]
    per_chunk = chunk_rows(int(np.prod(plan.shape)) * plan.dtype.itemsize, batch_size, num_samples)
    buffer = plan.new_buffer(per_chunk)
    labels = None
    with tqdm(total=num_samples, disable=not progress_bar, desc="limefast") as bar:
        for c0 in range(0, num_samples, per_chunk):
            rows = data[c0:c0 + per_chunk]
            plan.write(rows, buffer)
            for b0 in range(0, rows.shape[0], batch_size):
                n = min(batch_size, rows.shape[0] - b0)
                start = c0 + b0
                out = _call_classifier(classifier_fn, buffer[b0:b0 + n], start, num_samples)
                labels = _store(labels, out, start, n, num_samples)
                bar.update(n)
    return labels


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


def _store(labels, out, start, n, num_samples):
    if labels is None:
        labels = np.empty((num_samples, out.shape[1]), dtype=out.dtype)
    elif out.shape[1] != labels.shape[1]:
        raise ValueError(
            f"classifier_fn returned {out.shape[1]} classes on the batch of rows {start}.."
            f"{start + n - 1} but {labels.shape[1]} on earlier batches"
        )
    elif np.result_type(labels.dtype, out.dtype) != labels.dtype:
        # lime stacks the rows with np.array, which promotes mixed dtypes.
        labels = labels.astype(np.result_type(labels.dtype, out.dtype))
    labels[start:start + n] = out
    return labels
