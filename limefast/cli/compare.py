"""``limefast compare``: LIME (and KernelSHAP) beside Grad-CAM, with deletion and insertion
areas of each on the same superpixels."""

from __future__ import annotations

import json
import os

import numpy as np

from limefast.cli.inputs import InputError
from limefast.cli.steps import METHODS, PLAIN_BATCH, explain, prepare, run_staged

COLOURS = {"lime": "green", "kernelshap": "darkorange", "gradcam": "purple"}


def run_compare(args) -> int:
    images, names, models, staging = prepare(args, _gradcam_ready(args.target_layer))

    def work():
        from limefast.metrics.curves import faithfulness, segment_scores
        from limefast.viz import panel, render
        from limefast.viz.cam import gradcam

        methods = list(dict.fromkeys(args.method or ["lime"]))
        sheets = {name: [] for name in names}
        record = {name: {} for name in names}
        # The curves' calls are few: a fixed batch (auto's probe would not pay).
        batch = args.batch_size if isinstance(args.batch_size, int) else PLAIN_BATCH
        for model in models:
            runs = {method: explain(model, images, args, 1, method) for method in methods}
            probabilities = runs[methods[0]][1]
            labels = [int(exp.top_labels[0]) for exp in runs[methods[0]][0]]
            cams = _gradcams(gradcam, model, images, labels, args.target_layer)
            for i, (name, label, cam) in enumerate(zip(names, labels, cams)):
                probs = probabilities[i]
                image = runs[methods[0]][0][i].image
                sheet = [(f"{model.tag}: {model.label_name(label)} {probs[label]:.2f}", image)]
                scores, lines = {}, []
                for method in methods:
                    exp = runs[method][0][i]
                    scores[method] = faithfulness(exp, model.classifier, args.steps,
                                                  label=label, batch_size=batch)
                    lines.append((METHODS[method], scores[method].deletion, COLOURS[method]))
                    sheet += [(METHODS[method], exp.render(label, coverage=args.coverage)),
                              (f"{METHODS[method]} weights",
                               exp.heatmap(label, colored=True, image=image))]
                exp = runs[methods[0]][0][i]
                scores["gradcam"] = faithfulness(exp, model.classifier, args.steps, label=label,
                                                 weights=segment_scores(cam, exp.segments),
                                                 batch_size=batch)
                lines.append(("Grad-CAM", scores["gradcam"].deletion, COLOURS["gradcam"]))
                aucs = " / ".join(f"{scores[m].deletion_auc:.2g}" for m in scores)
                sheet += [("Grad-CAM", render.cam_overlay(image, cam)),
                          (f"deletion {aucs}", panel.curve_plot(
                              scores["gradcam"].fractions, lines, xlabel="share deleted"))]
                sheets[name] += sheet
                record[name][model.tag] = {
                    "model": model.spec, "weights": model.weights, "label": label,
                    "label_name": model.label_name(label), "probability": float(probs[label]),
                    **{m: {"deletion_auc": f.deletion_auc, "insertion_auc": f.insertion_auc}
                       for m, f in scores.items()},
                }
        shown = " / ".join([METHODS[m] for m in methods] + ["Grad-CAM"])
        for name, image in zip(names, images):
            panel.panel(sheets[name], columns=3 + 2 * len(methods),
                         tile=max(160, min(224, image.shape[0])),
                         header=f"{name}: {shown} (deletion AUC, lower is better)",
                         ).save(staging.path(name, "compare.png"))
            with open(staging.path(name, "compare.json"), "w") as fh:
                json.dump({"image": os.path.abspath(args.images[names.index(name)]),
                           "segmentation": args.segmentation, "num_samples": args.num_samples,
                           "methods": methods, "steps": args.steps, "models": record[name]},
                          fh, indent=1)

    return run_staged(staging, work)


def _gradcam_ready(target_layer):
    """A check that every model is a torch module with ``target_layer`` (if one is named)."""
    def check(models):
        for model in models:
            if model.module is None:
                raise InputError(f"--model {model.spec} is a plain callable: Grad-CAM needs a "
                                 "torch module")
            if target_layer is not None:
                try:
                    model.module.get_submodule(target_layer)
                except AttributeError:
                    raise InputError(f"--target-layer {target_layer}: {model.spec} has no such "
                                     "layer") from None
    return check


def _gradcams(gradcam, model, images, labels, target_layer) -> list:
    """One Grad-CAM map per image: one batch when the images share a shape."""
    kwargs = dict(target_layer=target_layer, mean=model.mean, std=model.std)
    if len({image.shape for image in images}) == 1:
        return list(gradcam(model.module, np.stack(images), labels=labels, **kwargs))
    return [gradcam(model.module, image, labels=label, **kwargs)[0]
            for image, label in zip(images, labels)]
