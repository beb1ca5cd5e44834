"""Every prefix of an explanation's rows at once: what a stopping rule of ``num_samples="auto"``
would see after each round, and what it would show.

An ``"auto"`` explanation that stops at n rows is the fixed ``num_samples=n`` explanation of the
same seed (the rows are prefixes of one draw, ``limefast.core.adaptive``). So one run of the
cap's rows per (case, seed) gives, for every n of a grid, the ridge on the first n rows, its
stated ``expected_overlap``, the figure projected to more rows (``projected_overlap``) and its
top 5's overlap with the case's reference: any stopping rule that is a function of those can be
scored without running the model again (``simulate``). The study chooses its rule this way on
the tuning half, then runs the chosen rule for real on both halves.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from limefast import config
from limefast.benchsuite.agreement import top_k_overlap
from limefast.core import adaptive, sampling
from limefast.core.executor import one_blas_thread

from .cases import FILLS, Case

FIXED_COUNTS = (150, 300, 500, 1000)  # fixed counts scored besides the rounds' ends


@dataclass
class Rows:
    """The cap's rows of one (case, seed): 0/1 data (N, F), the explained labels' outputs
    (N, L) in lime's fitting order (the top label last), the kernel weights (N,), and the row
    design that drew them."""

    data: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    labels: list[int]
    sampler: str = "lime"

    @property
    def unit(self) -> int:
        return sampling.design_unit(self.sampler)


def capture(image, classifier, segments, seed: int, top_labels: int = 3, hide_color=0,
            cap: int | None = None, batch_size: int = 250, sampler: str = "lime") -> Rows:
    """The ``cap`` rows of ``image`` at ``seed`` in the design ``sampler``, run once through
    ``classifier``, kept: "auto" with one round of the cap's rows, so that the rule never
    runs."""
    from limefast import lime_image

    cap = cap or config.AUTO_MAX_SAMPLES
    kept = {}
    original = adaptive.RunningFit.add

    def add(self, rows, targets, weights):
        kept.update(data=rows.astype(np.uint8), targets=np.asarray(targets, np.float64),
                    weights=np.asarray(weights, np.float64))
        return original(self, rows, targets, weights)

    adaptive.RunningFit.add = add
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lime_image.SamplingWarning)
            e = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
                image, classifier, top_labels=top_labels, num_samples="auto",
                hide_color=hide_color, segmentation_fn=lambda _: segments,
                batch_size=batch_size, progress_bar=False, min_samples=cap, max_samples=cap,
                sampler=sampler)
    finally:
        adaptive.RunningFit.add = original
    labels = [int(x) for x in e.top_labels][::-1]  # lime's fitting order: the top label last
    return Rows(kept["data"], kept["targets"], kept["weights"], labels, sampler)


def capture_case(study, case: Case, seed: int, top_labels: int = 3,
                 sampler: str = "lime") -> Rows:
    """``capture`` of a study case, through the study's memoised model."""
    model, image, segments = study._inputs(case)
    return capture(image, study._memo(case, seed), segments, seed,
                   min(top_labels, model.n_classes), FILLS[case.fill],
                   batch_size=study.cfg.batch_size, sampler=sampler)


def grid(cap: int, n_features: int, unit: int = 1) -> list[int]:
    """The prefixes scored: where each round of ``"auto"`` ends (``schedule``) and the fixed
    counts ``FIXED_COUNTS`` (in whole units), those with more than 2 (F + 1) rows (the rule
    needs them)."""
    fixed = {-(-n // unit) * unit for n in FIXED_COUNTS if n <= cap}
    return sorted(n for n in set(schedule(cap, unit)) | fixed if n > 2 * (n_features + 1))


def score(rows: Rows, references: dict, k: int = 5, cap: int | None = None,
          alpha: float = 1.0) -> dict:
    """For each label and grid prefix n: its ``adaptive.Figures`` (the stated figure and the
    projected gains the rule looks at), the flat flag, and the top k's overlap with the
    reference.

    Returns: {"n": [...], "labels": {label: {"stated": [...], "gains": [{m: gain}, ...],
    "overlap": [...], "flat": [...], "flat_reference": bool}}}, labels top first.
    """
    f = rows.data.shape[1]
    cap = min(cap or config.AUTO_MAX_SAMPLES, rows.data.shape[0])
    ns = grid(cap, f, rows.unit)
    out = {"n": ns, "unit": rows.unit, "labels": {}}
    with one_blas_thread():  # small products: a second BLAS thread only waits on a busy CPU
        for col in reversed(range(len(rows.labels))):  # the top label first
            out["labels"][rows.labels[col]] = _score_label(rows, col, references, ns, f, k,
                                                          cap, alpha)
    return out


def _score_label(rows: Rows, col: int, references: dict, ns, f: int, k: int, cap: int,
                 alpha: float) -> dict:
    """``score``'s record of the label in column ``col``."""
    label = rows.labels[col]
    ref = references.get(label)
    rec = {"stated": [], "gains": [], "overlap": [], "flat": [],
           "flat_reference": ref is None or ref["flat"]}
    for n in ns:
        fit = adaptive.RunningFit(f, 1, rows.unit)
        fit.add(rows.data[:n], rows.targets[:n, col:col + 1], rows.weights[:n])
        figures, = fit.figures(k, cap, alpha)
        rec["flat"].append(bool(fit.flat()[0]))
        rec["stated"].append(figures.stated)
        rec["gains"].append(figures.gains())
        beta = fit.ridge(alpha)[0][:, 0]
        w = {int(i): float(v) for i, v in enumerate(beta)}
        rec["overlap"].append(top_k_overlap(w, ref["w"], k) if ref else 0.0)
    return rec


def schedule(cap: int, unit: int = 1) -> list[int]:
    """The row counts after each round of ``"auto"`` with the configured rounds."""
    done, out = 0, []
    for size in adaptive.round_sizes(config.AUTO_MIN_SAMPLES, cap, config.AUTO_GROWTH,
                                     config.AUTO_ROUND_MIN, unit):
        done += size
        out.append(done)
    return out


def stop_index(s: dict, labels, target: float, min_gain: float) -> tuple[int, str]:
    """Where ``"auto"`` explaining ``labels`` (top first) of a scored run stops, and why: the
    rule of ``explain_in_rounds`` (``adaptive.decide`` on the live labels after each round)."""
    ns = s["n"]
    for n in schedule(ns[-1], s.get("unit", 1)):
        if n not in ns:
            continue
        i = ns.index(n)
        recs = [s["labels"][label] for label in labels]
        if all(r["flat"][i] for r in recs):
            return i, "flat"
        live = [r for r in recs if not r["flat"][i]]
        reason = adaptive.decide([r["stated"][i] for r in live], [r["gains"][i] for r in live],
                                 n, ns[-1], target, min_gain)
        if reason:
            return i, reason
    return len(ns) - 1, "max_samples"


def simulate(scored: list[dict], target: float, min_gain: float) -> list[dict]:
    """Records as ``run.Study`` writes them (setting "auto"; the stated figure, images and
    overlap) of ``"auto"`` at (``target``, ``min_gain``) with top_labels 1 and all the scored
    labels, for each scored run ({"case": Case fields, "seed": s, "score": score(...)})."""
    out = []
    for item in scored:
        case, s = item["case"], item["score"]
        labels = list(s["labels"])
        for top in sorted({1, len(labels)}):
            i, reason = stop_index(s, labels[:top], target, min_gain)
            for label in labels[:top]:
                r = s["labels"][label]
                out.append({"case": case["index"], "half": case["half"],
                            "model": case["model"], "segmenter": case["segmenter"],
                            "fill": case["fill"], "superpixels": case["superpixels"],
                            "seed": item["seed"], "setting": "auto", "top_labels": top,
                            "label": label, "target": target, "min_gain": min_gain,
                            "images": s["n"][i], "stated": r["stated"][i],
                            "stop_reason": reason, "flat_reference": r["flat_reference"],
                            "overlap": r["overlap"][i]})
    return out


def lime_records(scored: list[dict], n: int) -> list[dict]:
    """The same records for lime's fixed ``n`` rows (on the grid)."""
    out = []
    for item in scored:
        case, s = item["case"], item["score"]
        labels = list(s["labels"])
        i = s["n"].index(n)
        for top in sorted({1, len(labels)}):
            for label in labels[:top]:
                r = s["labels"][label]
                out.append({"case": case["index"], "half": case["half"],
                            "model": case["model"], "segmenter": case["segmenter"],
                            "fill": case["fill"], "superpixels": case["superpixels"],
                            "seed": item["seed"], "setting": str(n), "top_labels": top,
                            "label": label, "images": n, "stated": r["stated"][i],
                            "stop_reason": "num_samples",
                            "flat_reference": r["flat_reference"], "overlap": r["overlap"][i]})
    return out
