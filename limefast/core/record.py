"""One JSON schema for an explanation: what ``limefast explain`` writes to ``explanation.json``
and what ``limefast serve`` answers, built by one function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def explanation_record(exp, probabilities, *, method: str, image, model: str, weights,
                       segmentation: str, seed, seconds: float,
                       label_name: Callable[[int], str] = lambda label: f"class {label}",
                       png: Callable[[int], str | None] = lambda label: None) -> dict:
    """The JSON-ready record of one explanation.

    Args:
        exp: an ``ImageExplanation`` (LIME) or ``ShapImageExplanation`` (KernelSHAP).
        probabilities: (n_classes,) the model's outputs on the image itself.
        method: ``"lime"`` or ``"kernelshap"``.
        image: where the image came from (a file path, or None for an image sent to a server).
        model, weights: how the model was named and what weights it has.
        segmentation: the segmentation's name (quickshift, slic, felzenszwalb).
        seed: the explainer's random seed.
        seconds: wall time of the explanation.
        label_name: a label's human name.
        png: the picture of a label (a file name, or base64 PNG data), or None.

    Returns:
        A dict of plain Python values, every number finite or None (``json.dumps(...,
    allow_nan=False)`` takes it as it is).
    """
    top_labels = getattr(exp, "top_labels", None)  # absent when labels= chose them, as in lime
    explained = list(top_labels) if top_labels is not None else sorted(exp.local_exp)
    labels = {}
    for label in explained:
        label = int(label)
        entry = {
            "name": label_name(label),
            "probability": number(probabilities[label]),
            "intercept": number(exp.intercept[label]),
            "score": number(exp.score[label]),
            "local_pred": [number(v) for v in np.ravel(exp.local_pred[label])],
            "weights": [[int(f), number(w)] for f, w in exp.local_exp[label]],
            "stderr": [[int(f), number(exp.stderr[label][f])] for f, _ in exp.local_exp[label]],
            "top_k": exp.top_k,
            "expected_overlap": number(exp.expected_overlap.get(label)),
            "png": png(label),
        }
        if method == "kernelshap":  # the values add up: base_value + sum == the output
            entry["base_value"] = number(exp.base_value[label])
        labels[str(label)] = entry
    return {
        "image": image,
        "method": method,
        "model": model,
        "weights": weights,
        "size": list(exp.image.shape[:2]),
        "segmentation": segmentation,
        "n_superpixels": int(exp.segments.max()) + 1,
        "num_samples": int(exp.num_samples),
        "num_evaluated": int(exp.num_evaluated),
        "converged": bool(exp.converged),
        "stop_reason": exp.stop_reason,
        "target_overlap": exp.target_overlap,
        "min_gain": exp.min_gain,
        "sampler": getattr(exp, "sampler", None) if method == "lime" else None,
        "exact": method == "kernelshap" and bool(exp.exact),
        "seed": seed,
        "top_labels": None if top_labels is None else [int(label) for label in top_labels],
        "labels": labels,
        "seconds": seconds,
    }


def number(value):
    """A float for JSON, None for a missing, nan or infinite one (JSON has no such numbers; a
    standard error is nan where the fit has no residual degrees of freedom)."""
    return None if value is None or not np.isfinite(value) else float(value)
