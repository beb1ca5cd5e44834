"""Executors run the two heavy stages of an explanation: the model on the perturbed images, and
the surrogate fit. The CPU executor is always there; a classifier that knows a faster way (a
``TorchClassifier`` on its device) supplies its own through ``limefast_executor()``.

An executor has these methods:

- ``predict(instances, classifier_fn, batch_size, progress_bar, stats=None)``: one
  (N, n_classes) array-like per instance, in the executor's own array type (``batch_size`` an
  int or a ``sampling.BatchSizer``; ``stats`` a ``sampling.ModelStats`` to add the model's
  cost to);
- ``first_row(predictions)``: row 0 of one instance's predictions as a NumPy array (for
  ``top_labels``);
- ``to_numpy(predictions, columns=None)``: those columns (all by default) as a float64
  NumPy array;
- ``concat(predictions_list)`` and ``take(predictions, index)``: predictions of rounds joined,
  and rows picked (repeated rows scattered back after ``dedupe``);
- ``fit(instance, predictions, weights, labels, num_features, method, model_regressor)``: a dict
  label -> ``LabelFit`` in lime's return types.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from . import sampling
from .kernels.perturb import PerturbPlan
from .surrogate import LabelFit, WeightedProblem


@dataclass
class Instance:
    """One image ready to be perturbed: what ``explain_instance`` knows before the model runs."""

    image: np.ndarray  # (H, W, C)
    segments: np.ndarray  # (H, W) labels 0..n-1
    n_features: int
    fudged: np.ndarray  # (H, W, C), the image's dtype
    data: np.ndarray  # (num_samples, n_features) 0/1 rows, row 0 all ones
    distances: np.ndarray  # (num_samples,)
    timings: dict = field(default_factory=dict)


class CpuExecutor:
    """NumPy arrays, the Numba CPU kernels and the float64 batched surrogate."""

    name = "cpu"

    def predict(self, instances, classifier_fn, batch_size, progress_bar, stats=None):
        outputs = []
        # Images of one shape and dtype share model batches; a new shape starts new batches.
        for _, group in groupby(instances, key=lambda inst: (inst.image.shape, inst.image.dtype)):
            group = list(group)
            plans = [PerturbPlan(inst.image, inst.fudged, inst.segments) for inst in group]
            outputs += sampling.predict_rows(plans, [inst.data for inst in group],
                                             classifier_fn, batch_size, progress_bar, stats)
        return outputs

    def first_row(self, predictions) -> np.ndarray:
        return predictions[0]

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
        # The surrogate's matrices are small (samples x superpixels): one BLAS thread is as
        # fast, and a second one stalls when the other cores are busy (seen: 1 ms -> 40 ms).
        with _blas_controller().limit(limits=1, user_api="blas"):
            problem = WeightedProblem(instance.data, targets, weights)
            fits: dict[object, LabelFit] = {}
            for label in labels:
                fits[label] = problem.fit_label(columns.index(int(label)), num_features,
                                                method, model_regressor)
        return fits


CPU_EXECUTOR = CpuExecutor()


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def executor_for(classifier_fn):
    """The executor ``classifier_fn`` asks for, or the CPU one."""
    factory = getattr(classifier_fn, "limefast_executor", None)
    return factory() if callable(factory) else CPU_EXECUTOR
