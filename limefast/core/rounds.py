"""Rows taken in rounds: ``dedupe`` (each distinct row evaluated once), ``num_samples="auto"``
(until the shown ranking settles, ``adaptive``) and ``time_budget``.

``Rounds`` is the parsed choice; ``explain_in_rounds`` runs one image through it on any executor,
for any explainer that supplies its kernel weights and its final fit.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from limefast import config
from limefast.core import adaptive, checks, sampling
from limefast.core.executor import one_blas_thread


class PerformanceHint(UserWarning):
    """The classifier dominates an explanation in a way a switch of limefast would cut."""


class SamplingWarning(UserWarning):
    """``num_samples="auto"`` stopped before the shown ranking settled, or the model's output
    does not depend on the superpixels."""


def flat_warning(n: int) -> str:
    """The warning of a model whose explained outputs did not move over the first ``n`` rows."""
    return (f"limefast: the model's output did not change over the first {n} perturbed "
            "images: it does not depend on the superpixels, so no number of samples can rank "
            "them (stop_reason='flat', converged=False). Likely causes: a saturated softmax "
            "(an output pinned at 0 or 1; explain the logits, or a less certain label), or a "
            "hide colour the model ignores (try hide_color=None, the mean fill, or another "
            "value)")


@dataclasses.dataclass
class Rounds:
    """How an explanation's rows are taken: one round of ``rows``, or rounds (see
    ``limefast.core.adaptive``)."""

    auto: bool
    rows: int  # rows drawn: num_samples, or max_samples for "auto"
    min_samples: int
    time_budget: float | None
    stable_features: int | None
    dedupe: bool
    target: float = 0.0  # the expected overlap "auto" stops at
    min_gain: float = 0.0  # the least projected gain per 1000 rows worth going on for
    sampler: str = "lime"  # the row design (sampling.SAMPLERS)

    @property
    def unit(self) -> int:
        """Rows the design draws together: every round takes whole units."""
        return sampling.design_unit(self.sampler)

    @classmethod
    def from_arguments(cls, num_samples, max_samples, min_samples, time_budget,
                       stable_features, dedupe, minimum: int = 1, target_overlap=None,
                       cap: int | None = None, min_gain=None, sampler=None,
                       hide_color=None, defaults: dict | None = None) -> Rounds:
        """The parsed switches; ``minimum`` is the fewest rows an explanation can have,
        ``cap`` the default ``max_samples`` (``config.AUTO_MAX_SAMPLES``). ``sampler`` None
        is lime's rows for a fixed count and ``config.AUTO_SAMPLER`` for ``"auto"``; a design
        that draws rows in units (pairs) rounds every count up to whole units. The defaults of
        ``"auto"`` depend on the fill (``auto_defaults(hide_color)``), unless ``defaults``
        gives another explainer's."""
        num_samples = checks.int_or_auto("num_samples", num_samples, minimum)
        max_samples = checks.optional_int("max_samples", max_samples, minimum)
        min_samples = checks.optional_int("min_samples", min_samples, minimum)
        stable_features = checks.optional_int("stable_features", stable_features)
        time_budget = checks.time_budget(time_budget)
        target = checks.open_unit("target_overlap", target_overlap)
        min_gain = checks.non_negative("min_gain", min_gain)
        if not isinstance(dedupe, (bool, np.bool_)):
            raise TypeError(f"dedupe must be True or False; got {dedupe!r}")
        if sampler is not None:
            sampler = sampling.check_sampler(sampler)
        if num_samples != "auto":
            if max_samples is not None or min_samples is not None or target is not None \
                    or min_gain is not None:
                raise ValueError(
                    "max_samples, min_samples, target_overlap and min_gain bound "
                    f"num_samples='auto'; got num_samples={num_samples} with max_samples="
                    f"{max_samples}, min_samples={min_samples}, target_overlap={target}, "
                    f"min_gain={min_gain} (drop them, or pass num_samples='auto')")
            sampler = sampler or "lime"
            rows = sampling.rows_for(num_samples, sampler)
            return cls(False, rows, rows, time_budget, stable_features, bool(dedupe),
                       sampler=sampler)
        if max_samples is not None and min_samples is not None and max_samples < min_samples:
            raise ValueError(f"max_samples ({max_samples}) must be at least min_samples "
                             f"({min_samples}) with num_samples='auto'")
        if max_samples is not None and min_samples is None and \
                max_samples < config.AUTO_MIN_SAMPLES:
            raise ValueError(
                f"max_samples ({max_samples}) must be at least the first round of "
                f"num_samples='auto', {config.AUTO_MIN_SAMPLES} rows (pass min_samples= to "
                "shorten it, or a fixed num_samples)")
        cap = config.AUTO_MAX_SAMPLES if cap is None else cap
        high = max_samples if max_samples is not None else max(cap, min_samples or 0)
        low = min_samples if min_samples is not None else min(config.AUTO_MIN_SAMPLES, high)
        defaults = defaults or auto_defaults(hide_color)
        target = defaults["target_overlap"] if target is None else target
        min_gain = defaults["min_gain"] if min_gain is None else min_gain
        sampler = sampler or defaults["sampler"]
        return cls(True, sampling.rows_for(high, sampler), sampling.rows_for(low, sampler),
                   time_budget, stable_features, bool(dedupe), target, min_gain, sampler)

    @property
    def per_image(self) -> bool:
        return self.auto or self.dedupe or self.time_budget is not None

    def sizes(self, n_total: int):
        if not self.auto and self.time_budget is None:
            yield n_total
            return
        first = self.min_samples if self.auto else n_total
        if self.time_budget is not None:  # the model's speed is not known yet
            first = min(first, config.BUDGET_FIRST_ROUND)
        yield from adaptive.round_sizes(first, n_total, config.AUTO_GROWTH,
                                        config.AUTO_ROUND_MIN, self.unit)


def auto_defaults(hide_color=None) -> dict:
    """``num_samples="auto"``'s defaults (``sampler``, ``target_overlap``, ``min_gain``) for
    a fill: ``config.AUTO_SAMPLER``, ``AUTO_TARGET_OVERLAP`` and ``AUTO_MIN_GAIN`` with the
    mean fill (``hide_color=None``), ``config.AUTO_CONSTANT_FILL`` with any other."""
    if hide_color is None:
        return {"sampler": config.AUTO_SAMPLER, "target_overlap": config.AUTO_TARGET_OVERLAP,
                "min_gain": config.AUTO_MIN_GAIN}
    return dict(config.AUTO_CONSTANT_FILL)


class RowCache:
    """``dedupe``: which rows were evaluated already, and where their outputs are."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.index = np.empty(data.shape[0], dtype=np.intp)  # row -> stored output
        self._keys: dict[bytes, int] = {}
        self._checked = False

    def new_rows(self, start: int, stop: int, stored: int):
        """The rows of start..stop-1 not seen before (the first of each), and, once, a repeat
        evaluated again to check that the classifier is deterministic: (rows, check) with check
        None or the stored position of the repeated row's output (the check row comes last)."""
        new, check = [], None
        for i in range(start, stop):
            key = self.data[i].tobytes()
            j = self._keys.get(key)
            if j is None:
                j = stored + len(new)
                self._keys[key] = j
                new.append(i)
            elif not self._checked and check is None:
                check = (i, j)
            self.index[i] = j
        if check is None:
            return self.data[new], None
        self._checked = True
        return self.data[new + [check[0]]], check[1]


def verify_repeat(executor, evaluated, pred, stored: int, twin: int):
    """The check row (last of ``pred``) against its twin's output; ``pred`` without it."""
    n = len(pred) if isinstance(pred, np.ndarray) else pred.probs.shape[0]
    own = np.arange(n - 1)
    if twin >= stored:
        twin_out = executor.take(pred, np.array([twin - stored]))
    else:
        twin_out = executor.take(executor.concat(evaluated), np.array([twin]))
    a = executor.to_numpy(twin_out)[0]
    b = executor.to_numpy(executor.take(pred, np.array([n - 1])))[0]
    scale = max(1.0, float(np.abs(a).max()))
    if np.abs(a - b).max() > 1e-3 * scale:
        raise ValueError(
            "dedupe=True needs a deterministic classifier_fn, but it gave two answers for the "
            f"same image (largest difference {np.abs(a - b).max():.3g}): put the model in "
            "evaluation mode (no dropout) or pass dedupe=False")
    return executor.take(pred, own)


def labels_to_fit(first: np.ndarray, labels, top_labels):
    """The labels to explain, in lime's fitting order: the ``top_labels`` most probable on the
    image (ascending), else ``labels`` checked against the classifier's class count."""
    if top_labels:
        return np.argsort(first)[-top_labels:]
    return checks.label_list(labels, first.shape[0])


def explained_columns(first: np.ndarray, labels, top_labels) -> list[int]:
    """The distinct output columns of the labels to explain."""
    return list(dict.fromkeys(int(label) for label in labels_to_fit(first, labels, top_labels)))


def distinct_rows(data: np.ndarray) -> int:
    return len({row.tobytes() for row in data})


class BudgetClock:
    """How many rows the next round may take under ``time_budget`` seconds from ``start``.

    A round's time is mostly the model's, and with a classifier shared between threads it
    includes waiting for the others' batches: about one of their batches whatever the round's
    size. So a round of ``r`` rows is modelled as ``wait + r * per_row``: ``per_row`` the
    smallest time per row seen (an upper bound of the marginal cost), ``wait`` the largest
    excess over it of any round so far. The next round is planned to end, with the slowest
    round's other work (the checks, the fit; the final fit costs it again), within
    ``BUDGET_SHARE`` of the budget.
    """

    def __init__(self, time_budget: float, start: float, unit: int = 1):
        self.budget, self.start, self.unit = time_budget, start, unit
        self.per_row = float("inf")
        self.wait = self.other = 0.0
        self._rounds: list[tuple[int, float]] = []

    def record(self, rows: int, t_round: float, t_predict: float, t_after_predict: float):
        """One round: ``rows`` evaluated between ``t_predict`` and ``t_after_predict``, the
        round having begun at ``t_round`` and ended now."""
        model = t_after_predict - t_predict
        self.other = max(self.other, (time.perf_counter() - t_round) - model)
        if rows:
            self._rounds.append((rows, model))
            self.per_row = min(self.per_row, model / rows)
            self.wait = max(m - r * self.per_row for r, m in self._rounds)

    def next_round(self, size: int, rows: int, t_round: float, t_predict: float,
                   t_after_predict: float) -> int:
        """``record`` the round just done, then the next round's ``rows(size)``."""
        self.record(rows, t_round, t_predict, t_after_predict)
        return self.rows(size)

    def rows(self, size: int) -> int:
        """The most of the next round's ``size`` rows that fit; 0: stop. A round cut to less
        than a quarter of its size is not taken: it would buy few rows at the risk of a whole
        wait. Whole units of the row design (pairs) only."""
        if not self._rounds:
            return size
        left = (self.budget * config.BUDGET_SHARE - (time.perf_counter() - self.start)
                - 2 * self.other - self.wait)
        fit = min(size, int(left / max(self.per_row, 1e-12)))
        fit -= fit % self.unit
        return fit if 4 * fit >= size else 0


def explain_in_rounds(instance, classifier_fn, executor, rounds: Rounds, batches, weights,
                      labels, top_labels, num_features, progress_bar, start, finish):
    """One image through rounds of rows: ``dedupe``, ``num_samples="auto"`` and
    ``time_budget`` (a fixed count without a budget is one round).

    Args:
        instance: the prepared ``Instance``, its ``data`` all the rows that may be used.
        classifier_fn, executor: the model and the executor that runs it.
        rounds: how the rows are taken.
        batches: the batch size (an int or a ``sampling.BatchSizer``).
        weights: (rows,) kernel weights of the rows.
        labels, top_labels, num_features: as ``explain_instance`` takes them.
        progress_bar: a tqdm bar over the rows.
        start: ``time.perf_counter()`` when the explanation began (the budget counts from it).
        finish: ``finish(instance, predictions)`` -> the explanation, fitted on the rows used
            (``instance.data`` is cut to them first).

    Returns:
        The explanation, with ``num_evaluated``, ``stop_reason`` and ``converged`` set.
    """
    data, n_total = instance.data, instance.data.shape[0]
    n_features = instance.n_features
    stats = sampling.ModelStats()
    cache = RowCache(data) if rounds.dedupe else None
    evaluated, index = [], np.empty(n_total, dtype=np.intp)
    stored = 0  # rows of the evaluated predictions, in order
    fit = columns = None
    reason = "max_samples" if rounds.auto else "num_samples"
    k = adaptive.shown_count(rounds.stable_features, num_features, n_features)
    figures: list[float] = []
    kernel_weights = weights
    t_model = time.perf_counter()
    n = 0
    sizes = rounds.sizes(n_total)
    size = next(sizes)
    clock = (BudgetClock(rounds.time_budget, start, instance.unit)
             if rounds.time_budget is not None else None)
    with tqdm(total=n_total, disable=not progress_bar, desc="limefast") as bar:
        while True:
            t_round = time.perf_counter()
            rows = slice(n, n + size)
            if cache is None:
                picked = data[rows]
                index[rows] = np.arange(stored, stored + size)
            else:
                picked, check = cache.new_rows(n, n + size, stored)
                index[rows] = cache.index[rows]
            t_predict = time.perf_counter()
            if len(picked):
                sub = dataclasses.replace(instance, data=picked, timings={})
                pred = executor.predict([sub], classifier_fn, batches,
                                        bar if cache is None else False, stats)[0]
                if cache is not None and check is not None:
                    pred = verify_repeat(executor, evaluated, pred, stored, check)
                evaluated.append(pred)
                stored += len(picked) - (cache is not None and check is not None)
            t_after_predict = time.perf_counter()
            if cache is not None:
                bar.update(size)
            n += size
            if columns is None:  # the labels: known from row 0's answer
                columns = explained_columns(executor.first_row(evaluated[0]), labels,
                                            top_labels)
                fit = adaptive.RunningFit(n_features, len(columns), instance.unit)
            if rounds.auto:
                targets = executor.to_numpy(
                    executor.take(executor.concat(evaluated), index[rows]), columns)
                fit.add(data[rows], targets, kernel_weights[rows])
                flat = fit.flat()
                if flat.all():  # nothing to rank, whatever the rows: stop now
                    reason = "flat"
                    break
                if n >= rounds.min_samples and n > 2 * (n_features + 1):
                    with one_blas_thread():
                        per_label = fit.figures(k, n_total)
                        figures = [f.stated for f in per_label]
                        # the mean over labels: what a reader of all of them sees on average
                        live = [f for f, dead in zip(per_label, flat) if not dead]
                        stop = adaptive.decide([f.stated for f in live],
                                               lambda live=live: [f.gains() for f in live],
                                               n, n_total,
                                               rounds.target, rounds.min_gain)
                    if stop:
                        reason = stop
                        break
            if n >= n_total:
                break
            size = next(sizes)
            if clock is not None:
                size = clock.next_round(size, len(picked), t_round, t_predict, t_after_predict)
                if size < 1:
                    reason = "time_budget"
                    break
    instance.timings["perturb_and_model"] = time.perf_counter() - t_model
    instance.timings["model"] = stats.seconds
    instance.data = data[:n]
    instance.distances = instance.distances[:n]
    predictions = executor.take(executor.concat(evaluated), index[:n])
    explanation = finish(instance, predictions)
    explanation.num_evaluated = stats.images
    explanation.stop_reason = reason
    explanation.converged = reason in ("settled", "num_samples")
    stated = float(np.mean(figures)) if figures else float("nan")
    explanation.target_overlap = rounds.target if rounds.auto else None
    explanation.min_gain = rounds.min_gain if rounds.auto else None
    if reason == "flat":
        warnings.warn(flat_warning(n), SamplingWarning, stacklevel=5)
    elif rounds.auto and not explanation.converged and reason != "diminishing":
        warnings.warn(
            f"limefast: num_samples='auto' stopped at {n} rows ({reason}) with an expected "
            f"overlap of {stated:.2f} between the top {k} superpixels shown and the converged "
            f"ones, short of target_overlap={rounds.target}; the explanation says "
            "converged=False (near-tied weights, a noisy model, or raise max_samples / "
            "time_budget)", SamplingWarning, stacklevel=5)
    return explanation
