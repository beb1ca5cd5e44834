"""How two explanations of one image are compared: the one definition every benchmark uses.

Per label of the reference: the top-5 overlap (``|A & B| / |A|``, A and B the 5 features
of largest ``|weight|``), the Spearman correlation of the weights over the reference's features,
the largest relative difference of a weight (``|w - w_ref| / |w_ref|``) and the largest
difference scaled by the label's largest reference weight. A label the other explanation did not
explain shares none of the reference's features: overlap 0, the other measures undefined.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TOP_K = 5
TINY = 1e-300  # relative differences divide by max(|w_ref|, TINY): only an exact 0 is floored


def top_features(weights: Mapping[int, float], k: int = 5) -> list[int]:
    """The ``k`` features of largest ``|weight|`` (ties: the lower feature number first)."""
    return sorted(weights, key=lambda f: (-abs(weights[f]), f))[:k]


def top_k_overlap(weights: Mapping[int, float], reference: Mapping[int, float],
                  k: int = 5) -> float:
    """``|A & B| / k``: the share of the reference's top ``k`` features among the run's top ``k``.

    Args:
        weights: feature -> weight of the run.
        reference: feature -> weight of the reference; with fewer than ``k`` features the
            denominator is their number.
        k: how many top features to compare.

    Returns:
        A float in [0, 1].
    """
    ref = set(top_features(reference, k))
    if not ref:
        return float("nan")
    return len(ref & set(top_features(weights, k))) / len(ref)


def label_weights(explanation) -> dict[int, dict[int, float]]:
    """label -> {feature: weight} of an explanation (lime's or limefast's ``local_exp``), of a
    runner's ``Run`` (its ``weights``) or of such a mapping itself."""
    if hasattr(explanation, "local_exp"):
        return {int(label): {int(f): float(w) for f, w in exp}
                for label, exp in explanation.local_exp.items()}
    weights = explanation if isinstance(explanation, Mapping) else explanation.weights
    return {int(label): {int(f): float(w) for f, w in exp.items()}
            for label, exp in weights.items()}


def label_agreement(reference: Mapping[int, float], other: Mapping[int, float] | None) -> dict:
    """The measures of one label (see the module docstring); ``other`` None: not explained."""
    if other is None:
        return {"top5_overlap": 0.0, "spearman": None, "max_rel_weight_diff": None,
                "max_scaled_weight_diff": None}
    from scipy.stats import spearmanr

    features = sorted(reference)
    a = np.array([reference[f] for f in features], dtype=float)
    b = np.array([other.get(f, 0.0) for f in features], dtype=float)
    rho = None
    if len(features) > 2 and np.std(a) > 0 and np.std(b) > 0:
        rho = float(spearmanr(a, b).statistic)
    diff = np.abs(a - b)
    return {"top5_overlap": top_k_overlap(other, reference, TOP_K), "spearman": rho,
            "max_rel_weight_diff": float(np.max(diff / np.maximum(np.abs(a), TINY),
                                                initial=0.0)),
            "max_scaled_weight_diff": float(np.max(diff, initial=0.0)
                                            / max(float(np.abs(a).max(initial=0.0)), TINY))}


def agreement(reference, other) -> dict:
    """How ``other`` agrees with ``reference`` (each a ``Run``, an explanation or a mapping
    label -> {feature: weight}).

    Returns:
        ``labels``: label -> ``label_agreement``, for every label of the reference; and over
        them: ``max_rel_weight_diff`` and ``max_scaled_weight_diff`` (the largest, over the
        labels both explained), ``top5_overlap`` and ``spearman`` (the means); NaN where no
        label has the measure.
    """
    ours = label_weights(other)
    labels = {label: label_agreement(weights, ours.get(label))
              for label, weights in label_weights(reference).items()}

    def pooled(name, how):
        values = [v[name] for v in labels.values() if v[name] is not None]
        return float(how(values)) if values else float("nan")

    return {"max_rel_weight_diff": pooled("max_rel_weight_diff", max),
            "max_scaled_weight_diff": pooled("max_scaled_weight_diff", max),
            "top5_overlap": pooled("top5_overlap", np.mean),
            "spearman": pooled("spearman", np.mean), "labels": labels}


Z90 = 1.645  # two-sided 90% normal quantile


def interval_coverage(weights: Mapping[int, float], stderr: Mapping[int, float],
                      reference: Mapping[int, float], z: float = Z90,
                      reference_stderr: Mapping[int, float] | None = None) -> tuple[int, int]:
    """(covered, total): reference features whose weight lies in ``w +- z * se`` of the run.

    A feature the run has no weight for counts as not covered. With ``reference_stderr`` the
    interval is widened to ``z * sqrt(se**2 + se_ref**2)``: the reference's own sampling noise.
    """
    covered = 0
    for f, w_ref in reference.items():
        if f not in weights or f not in stderr:
            continue
        se2 = stderr[f] ** 2 + (reference_stderr.get(f, 0.0) ** 2 if reference_stderr else 0.0)
        covered += abs(weights[f] - w_ref) <= z * np.sqrt(se2)
    return int(covered), len(reference)
