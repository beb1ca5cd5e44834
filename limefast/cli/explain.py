"""``limefast explain``: per image and model, a PNG per top label and one JSON file (and, with
several models, one picture of each model's top label side by side)."""

from __future__ import annotations

import json
import os
import time

from limefast.cli.steps import METHODS, classifier_defaults, explain, prepare, run_staged
from limefast.core.record import explanation_record


def run_explain(args) -> int:
    from limefast.cli.detect import check_task_arguments, run_explain_task

    check_task_arguments(args)
    if args.task != "classification":
        return run_explain_task(args)
    classifier_defaults(args)
    if args.top_labels is None:
        args.top_labels = 5
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
    for label in exp.top_labels:
        label = int(label)
        panel.panel([
            ("image", exp.image),
            (f"{method}: green for, red against", exp.render(label, coverage=args.coverage)),
            ("weights", exp.heatmap(label, colored=True, image=exp.image)),
        ], tile=max(192, min(320, exp.image.shape[0])),
            header=f"{name}, {model.spec}: label {label} {model.label_name(label)!r} "
                   f"p={probs[label]:.3f}; {exp.overlap_caption(label)}",
        ).save(staging.path(name, model.tag, f"label-{label}.png"))
    record = explanation_record(
        exp, probs, method=args.method, image=os.path.abspath(path), model=model.spec,
        weights=model.weights, segmentation=args.segmentation, seed=args.seed, seconds=seconds,
        label_name=model.label_name, png=lambda label: f"label-{label}.png")
    with open(staging.path(name, model.tag, "explanation.json"), "w") as fh:
        json.dump(record, fh, indent=1)


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
