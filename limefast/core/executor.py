"""Executors run the two heavy stages of an explanation: the model on the perturbed images, and
the surrogate fit. The CPU executor is always there; a classifier that knows a faster way (a
``TorchClassifier`` on its device) supplies its own through ``limefast_executor()``. The
protocol every executor implements is ``Executor``, below.
"""

from __future__ import annotations

import functools
from itertools import groupby
from typing import Any, Protocol, runtime_checkable

import numpy as np

from limefast import config
from limefast.core import sampling
from limefast.core.instance import Instance  # noqa: F401 - what executors take
from limefast.core.surrogate import LabelFit, WeightedProblem
from limefast.kernels.perturb import PerturbPlan


@runtime_checkable
class Executor(Protocol):
    """What the explainers ask of an executor. Predictions are the executor's own array type
    (NumPy on the CPU, device tensors for a ``TorchClassifier``) until ``to_numpy``."""

    def predict(self, instances: list[Instance], classifier_fn, batch_size, progress_bar,
                stats=None) -> list[Any]:
        """One (N, n_classes) prediction per instance, for every row of its ``data``.
        ``batch_size`` is an int or a ``sampling.BatchSizer``; ``progress_bar`` a bool or an
        open tqdm bar; ``stats`` a ``sampling.ModelStats`` the model's cost is added to."""

    def first_row(self, predictions) -> np.ndarray:
        """Row 0 (the unperturbed image) as a NumPy array: it decides ``top_labels``."""

    def to_numpy(self, predictions, columns=None) -> np.ndarray:
        """Those columns (all by default) as a float64 NumPy array."""

    def concat(self, predictions_list):
        """Predictions of several rounds, joined in order."""

    def take(self, predictions, index: np.ndarray):
        """The rows ``index`` (repeats scattered back after ``dedupe``)."""

    def fit(self, instance: Instance, predictions, weights, labels, num_features, method,
            model_regressor=None) -> dict[Any, LabelFit]:
        """Every label's surrogate, in lime's return types."""

    def warmup(self, image_shape, dtype, num_samples: int) -> int:
        """Allocate what explanations of ``num_samples`` rows of such images need; returns the
        rows of a short explanation that then runs every batch shape once."""


class CpuExecutor:
    """NumPy arrays, the Numba CPU kernels and the float64 batched surrogate."""


    def predict(self, instances, classifier_fn, batch_size, progress_bar, stats=None):
        outputs = []
        # Images of one shape and dtype share model batches; a new shape starts new batches.
        for _, group in groupby(instances, key=lambda inst: (inst.image.shape, inst.image.dtype)):
            group = list(group)
            plans = [PerturbPlan(inst.image, inst.fudged, inst.segments,
                                 task_bytes=config.TASK_BYTES, threads=config.CPU_THREADS)
                     for inst in group]
            outputs += sampling.predict_rows(plans, [inst.data for inst in group],
                                             classifier_fn, batch_size, progress_bar, stats)
        return outputs

    def first_row(self, predictions) -> np.ndarray:
        return predictions[0]

    def warmup(self, image_shape, dtype, num_samples: int) -> int:
        return min(num_samples, 50)  # the kernels compile on a short explanation

    def to_numpy(self, predictions, columns=None) -> np.ndarray:
        picked = predictions if columns is None else predictions[:, columns]
        return picked.astype(np.float64)

    def concat(self, predictions_list):
        if len(predictions_list) == 1:
            return predictions_list[0]
        return np.concatenate(predictions_list)

    def take(self, predictions, index: np.ndarray):
        return predictions[index]

    def fit(self, instance, predictions, weights, labels, num_features, method,
            model_regressor=None) -> dict:
        columns = list(dict.fromkeys(int(label) for label in labels))
        targets = predictions[:, columns].astype(np.float64)
        with one_blas_thread():
            problem = WeightedProblem(instance.data, targets, weights, instance.unit)
            fits: dict[object, LabelFit] = {}
            for label in labels:
                fits[label] = problem.fit_label(columns.index(int(label)), num_features,
                                                method, model_regressor)
        return fits


CPU_EXECUTOR = CpuExecutor()


def one_blas_thread():
    """A context in which BLAS runs on one thread. The surrogates' matrices are small (samples
    x superpixels): one thread is as fast, and a second one stalls the fit whenever the other
    cores are busy (each parallel region waits for a descheduled thread)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def executor_for(classifier_fn) -> Executor:
    """The executor ``classifier_fn`` asks for (its ``limefast_executor()``), or the CPU one."""
    factory = getattr(classifier_fn, "limefast_executor", None)
    executor = factory() if callable(factory) else CPU_EXECUTOR
    if not isinstance(executor, Executor):
        raise TypeError(f"{type(classifier_fn).__name__}.limefast_executor() returned "
                        f"{type(executor).__name__}, which lacks the Executor protocol's methods")
    return executor
