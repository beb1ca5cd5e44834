"""``limefast explain``: per image and model, a PNG per top label and one JSON file (and, with
several models, one picture of each model's top label side by side)."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from limefast.cli.steps import METHODS, explain, prepare, run_staged


def run_explain(args) -> int:
    images, names, models, staging = prepare(args)

    def work():
        per_image = {name: [] for name in names}
        for model in models:
            t0 = time.perf_counter()
            explanations, probabilities = explain(model, images, args, args.top_labels,
                                                 args.method)
            seconds = (time.perf_counter() - t0) / len(images)
            for path, name, exp, probs in zip(args.images, names, explanations, probabilities):
                _write_explanation(staging, path, name, model, exp, probs, args, seconds)
                per_image[name].append((model, exp, probs))
        if len(models) > 1:
            for name, image in zip(names, images):
                _side_by_side(staging, name, image, per_image[name], args)

    return run_staged(staging, work)


def _write_explanation(staging, path, name, model, exp, probs, args, seconds) -> None:
    from limefast.viz import panel

    method = METHODS[args.method]
    labels = {}
    for label in exp.top_labels:
        label = int(label)
        png = f"label-{label}.png"
        panel.panel([
            ("image", exp.image),
            (f"{method}: green for, red against", exp.render(label, coverage=args.coverage)),
            ("weights", exp.heatmap(label, colored=True, image=exp.image)),
        ], tile=max(192, min(320, exp.image.shape[0])),
            header=f"{name}, {model.spec}: label {label} {model.label_name(label)!r} "
                   f"p={probs[label]:.3f}; {exp.overlap_caption(label)}",
        ).save(staging.path(name, model.tag, png))
        labels[str(label)] = {
            "name": model.label_name(label),
            "probability": float(probs[label]),
            "intercept": float(exp.intercept[label]),
            "score": float(exp.score[label]),
            "local_pred": [float(v) for v in np.ravel(exp.local_pred[label])],
            "weights": [[int(f), float(w)] for f, w in exp.local_exp[label]],
            "stderr": [[int(f), float(exp.stderr[label][f])] for f, _ in exp.local_exp[label]],
            "top_k": exp.top_k,
            "expected_overlap": _number(exp.expected_overlap.get(label)),
            "png": png,
        }
        if args.method == "kernelshap":  # the values add up: base_value + sum == the output
            labels[str(label)]["base_value"] = float(exp.base_value[label])
    record = {
        "image": os.path.abspath(path),
        "method": args.method,
        "model": model.spec,
        "weights": model.weights,
        "size": list(exp.image.shape[:2]),
        "segmentation": args.segmentation,
        "n_superpixels": int(exp.segments.max()) + 1,
        "num_samples": int(exp.num_samples),
        "num_evaluated": int(exp.num_evaluated),
        "converged": bool(exp.converged),
        "stop_reason": exp.stop_reason,
        "target_overlap": exp.target_overlap,
        "exact": args.method == "kernelshap" and bool(exp.exact),
        "seed": args.seed,
        "top_labels": [int(label) for label in exp.top_labels],
        "labels": labels,
        "seconds": seconds,
    }
    with open(staging.path(name, model.tag, "explanation.json"), "w") as fh:
        json.dump(record, fh, indent=1)


def _number(value):
    """A float for JSON, None for a missing or nan one (JSON has no nan)."""
    return None if value is None or not np.isfinite(value) else float(value)


def _side_by_side(staging, name, image, rows, args) -> None:
    """One column per model: its top label's superpixels above its heatmap."""
    from limefast.viz import panel

    tops, maps = [], []
    for model, exp, probs in rows:
        label = int(exp.top_labels[0])
        tops.append((f"{model.tag}: {model.label_name(label)} {probs[label]:.2f}",
                     exp.render(label, coverage=args.coverage)))
        maps.append((f"{model.tag}: weights", exp.heatmap(label, colored=True, image=image)))
    panel.panel(tops + maps, columns=len(rows), tile=max(160, min(256, image.shape[0])),
                 header=f"{name}: each model's top label").save(staging.path(name, "models.png"))
