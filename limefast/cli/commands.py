"""The ``limefast`` command line: explain image files, and compare LIME with Grad-CAM.

``limefast explain IMAGE... --model resnet18 --out DIR`` writes, per image and model, a PNG per
top label (the image, the superpixels for and against the label, the weight heatmap) and a JSON
file with the weights, intercepts, scores and top labels. ``limefast compare`` draws LIME and
Grad-CAM side by side for one or more models, with their deletion and insertion areas.

Bad input (unknown model, unreadable image, weights that do not fit, an output folder that cannot
be written) is one line on stderr and exit status 2, with nothing written.

Subcommands: each entry of ``SUBCOMMANDS`` is a function ``add_parser(subparsers)`` (or a
``"module:function"`` string naming one, imported when the parser is built) that adds one
subparser and sets ``func`` (args -> exit status) with ``set_defaults``. Adding ``bench`` is one
more entry.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np

from limefast.cli.inputs import InputError, Staging, image_names, load_image, load_model
from limefast.segmentation import LIME_QUICKSHIFT

PLAIN_BATCH = 50  # images per call of a classifier function (a TorchClassifier picks its own)
SEGMENTATIONS = {
    # lime's default quickshift; slic and felzenszwalb with the parameters tutorials use.
    "quickshift": LIME_QUICKSHIFT,
    "slic": dict(n_segments=100, compactness=10, sigma=1, start_label=0),
    "felzenszwalb": dict(scale=100, sigma=0.5, min_size=50),
}


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the usage too), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _count_or_auto(text: str):
    return "auto" if text == "auto" else _positive_int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text!r}")
    return value


def _triple(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.5,0.5,0.5; got {text!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    """Arguments explain and compare share: images, models and how LIME runs."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--model", action="append", required=True, metavar="NAME|module:factory",
                   help="a torchvision classification model (resnet18, ...) or module:factory "
                        "returning a torch module or a classifier function; repeat to explain "
                        "the same images with several models")
    p.add_argument("--weights", action="append", metavar="FILE|DEFAULT",
                   help="a state-dict file, or DEFAULT for torchvision's pretrained weights; "
                        "once per --model, in the same order (default: random weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--num-samples", type=_count_or_auto, default=1000, metavar="N|auto",
                   help="perturbed images per explanation, or auto: rounds until the top "
                        "superpixels settle (default 1000)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="the most rows --num-samples auto may take")
    p.add_argument("--time-budget", type=_seconds, default=None, metavar="SECONDS",
                   help="stop each explanation's rounds when the next would not fit")
    p.add_argument("--dedupe", action="store_true",
                   help="evaluate each distinct perturbed image once (deterministic models)")
    p.add_argument("--batch-size", type=_count_or_auto, default=None, metavar="N|auto",
                   help="perturbed images per model call, or auto (default: the "
                        "TorchClassifier's choice for torch models, "
                        f"{PLAIN_BATCH} for classifier functions)")
    p.add_argument("--segmentation", choices=sorted(SEGMENTATIONS), default="quickshift")
    p.add_argument("--size", type=int, default=224,
                   help="the images' side: SIZE x SIZE (0: as they are)")
    p.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                   help="crop: scale the shorter side to SIZE and crop the centre (the default); "
                        "stretch: scale each axis to SIZE")
    p.add_argument("--device", default=None, help="torch device (default: the TorchClassifier's)")
    p.add_argument("--precision", default="auto", help="TorchClassifier precision")
    p.add_argument("--compile", choices=("none", "trace", "script", "inductor"), default="none",
                   help="TorchClassifier compile mode (trace: frozen TorchScript, the fastest "
                        "on a CPU without a C++ compiler at run time)")
    p.add_argument("--mean", type=_triple, default=None,
                   help="input normalisation mean, e.g. 0.485,0.456,0.406 (ImageNet's default)")
    p.add_argument("--std", type=_triple, default=None, help="input normalisation std")
    p.add_argument("--seed", type=int, default=0, help="random seed of LIME and random weights")
    p.add_argument("--coverage", type=float, default=0.05,
                   help="share of the image tinted for each sign (default 0.05)")


def add_explain(subparsers) -> None:
    p = subparsers.add_parser("explain", help="LIME explanations of images: PNGs and JSON",
                              description="Explain each image's top labels with LIME.")
    _common(p)
    p.add_argument("--top-labels", type=_positive_int, default=5)
    p.set_defaults(func=run_explain)


def add_compare(subparsers) -> None:
    p = subparsers.add_parser("compare", help="LIME beside Grad-CAM, for one or more models",
                              description="Draw LIME and Grad-CAM of each model's top label "
                                          "side by side, with deletion/insertion areas.")
    _common(p)
    p.add_argument("--target-layer", default=None,
                   help="Grad-CAM layer, by dotted name (default: last convolutional block)")
    p.add_argument("--steps", type=_positive_int, default=20,
                   help="steps of the deletion and insertion curves (default 20)")
    p.set_defaults(func=run_compare)


SUBCOMMANDS: list = [add_explain, add_compare, "limefast.benchsuite:add_parser",
                     "limefast.dataset.command:add_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="limefast", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in SUBCOMMANDS:
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
        entry(subparsers)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``limefast`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"limefast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"limefast {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, unless asked for the traceback
        if os.environ.get("LIMEFAST_TRACEBACK"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"limefast {args.command}: failed: {type(exc).__name__}: {first} (nothing written; "
              "LIMEFAST_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


# -- shared steps ----------------------------------------------------------------------------

def _prepare(args, check_models=None):
    """Images, models and the staging folder, every input checked before any work.

    ``check_models(models)`` raises InputError for what a subcommand needs of the models; it
    runs before the output folder is touched.
    """
    from limefast.viz import render

    if not 0 <= args.coverage <= 1:
        raise InputError(f"--coverage must be in [0, 1]; got {args.coverage}")
    if args.size < 0:
        raise InputError(f"--size must be >= 0; got {args.size}")
    weights = args.weights or [None] * len(args.model)
    if len(weights) != len(args.model):
        raise InputError(f"give --weights once per --model ({len(args.model)}), in the same "
                         f"order (RANDOM for random weights); got {len(weights)}")
    weights = [None if w in (None, "", "RANDOM") else w for w in weights]
    images = [load_image(path, args.size, args.resize) for path in args.images]
    norm = {k: v for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    compile_mode = None if args.compile == "none" else args.compile
    # A TorchClassifier chooses its own batch for "auto" (its device's memory, the image size).
    torch_batch = args.batch_size if isinstance(args.batch_size, int) else None
    models = [load_model(spec, w, device=args.device, precision=args.precision, seed=args.seed,
                         batch_size=torch_batch, compile=compile_mode, **norm)
              for spec, w in zip(args.model, weights)]
    tags = [m.tag for m in models]
    for i, m in enumerate(models):
        if tags.count(m.tag) > 1:
            m.tag = f"{m.tag}-{tags[:i + 1].count(m.tag)}"
    if check_models is not None:
        check_models(models)
    for m in models:
        for note in m.notes:
            print(f"limefast: warning: {note}", file=sys.stderr)
    render.font()  # fail now, not after the work, if Pillow cannot draw text
    staging = Staging(args.out)
    return images, image_names(args.images), models, staging


def _explain(model, images, args, top_labels):
    from limefast.lime_image import LimeImageExplainer
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    segmentation = SegmentationAlgorithm(args.segmentation, **SEGMENTATIONS[args.segmentation])
    print(f"limefast: {model.spec}: {len(images)} image(s) x {args.num_samples} samples",
          file=sys.stderr)
    # A fresh explainer per model with the same seed: every model gets the same superpixels and
    # the same samples of each image, so their explanations compare like for like.
    explainer = LimeImageExplainer(random_state=args.seed)
    explanations = explainer.explain_batch(
        images, model.classifier, top_labels=top_labels, num_samples=args.num_samples,
        batch_size=args.batch_size or PLAIN_BATCH, segmentation_fn=segmentation,
        progress_bar=True, **sampling_options(args))
    probabilities = [np.asarray(model.classifier(image[None]), dtype=np.float64)[0]
                     for image in images]
    return explanations, probabilities


def sampling_options(args) -> dict:
    """The fewer-model-calls switches of the command line, as ``explain_batch`` takes them."""
    options = {"dedupe": args.dedupe, "time_budget": args.time_budget}
    if args.max_samples is not None:
        options["max_samples"] = args.max_samples
    return options


def _run_staged(staging, work) -> int:
    try:
        work()
    except BaseException:
        staging.abort()
        raise
    written = staging.commit()
    print(f"limefast: wrote {len(written)} file(s) under {staging.out}", file=sys.stderr)
    return 0


# -- explain ---------------------------------------------------------------------------------

def run_explain(args) -> int:
    images, names, models, staging = _prepare(args)

    def work():
        per_image = {name: [] for name in names}
        for model in models:
            t0 = time.perf_counter()
            explanations, probabilities = _explain(model, images, args, args.top_labels)
            seconds = (time.perf_counter() - t0) / len(images)
            for path, name, exp, probs in zip(args.images, names, explanations, probabilities):
                _write_explanation(staging, path, name, model, exp, probs, args, seconds)
                per_image[name].append((model, exp, probs))
        if len(models) > 1:
            for name, image in zip(names, images):
                _side_by_side(staging, name, image, per_image[name], args)

    return _run_staged(staging, work)


def _write_explanation(staging, path, name, model, exp, probs, args, seconds) -> None:
    from limefast.viz import render

    labels = {}
    for label in exp.top_labels:
        label = int(label)
        png = f"label-{label}.png"
        render.panel([
            ("image", exp.image),
            ("LIME: green for, red against", exp.render(label, coverage=args.coverage)),
            ("weights", exp.heatmap(label, colored=True, image=exp.image)),
        ], tile=max(192, min(320, exp.image.shape[0])),
            header=f"{name}, {model.spec}: label {label} {model.label_name(label)!r} "
                   f"p={probs[label]:.3f}").save(staging.path(name, model.tag, png))
        labels[str(label)] = {
            "name": model.label_name(label),
            "probability": float(probs[label]),
            "intercept": float(exp.intercept[label]),
            "score": float(exp.score[label]),
            "local_pred": [float(v) for v in np.ravel(exp.local_pred[label])],
            "weights": [[int(f), float(w)] for f, w in exp.local_exp[label]],
            "stderr": [[int(f), float(exp.stderr[label][f])] for f, _ in exp.local_exp[label]],
            "png": png,
        }
    record = {
        "image": os.path.abspath(path),
        "model": model.spec,
        "weights": model.weights,
        "size": list(exp.image.shape[:2]),
        "segmentation": args.segmentation,
        "n_superpixels": int(exp.segments.max()) + 1,
        "num_samples": int(exp.num_samples),
        "num_evaluated": int(exp.num_evaluated),
        "converged": bool(exp.converged),
        "stop_reason": exp.stop_reason,
        "seed": args.seed,
        "top_labels": [int(label) for label in exp.top_labels],
        "labels": labels,
        "seconds": seconds,
    }
    with open(staging.path(name, model.tag, "explanation.json"), "w") as fh:
        json.dump(record, fh, indent=1)


def _side_by_side(staging, name, image, rows, args) -> None:
    """One column per model: its top label's superpixels above its heatmap."""
    from limefast.viz import render

    tops, maps = [], []
    for model, exp, probs in rows:
        label = int(exp.top_labels[0])
        tops.append((f"{model.tag}: {model.label_name(label)} {probs[label]:.2f}",
                     exp.render(label, coverage=args.coverage)))
        maps.append((f"{model.tag}: weights", exp.heatmap(label, colored=True, image=image)))
    render.panel(tops + maps, columns=len(rows), tile=max(160, min(256, image.shape[0])),
                 header=f"{name}: each model's top label").save(staging.path(name, "models.png"))


# -- compare ---------------------------------------------------------------------------------

def run_compare(args) -> int:
    images, names, models, staging = _prepare(args, _gradcam_ready(args.target_layer))

    def work():
        from limefast.metrics.curves import faithfulness, segment_scores
        from limefast.viz import render
        from limefast.viz.cam import gradcam

        sheets = {name: [] for name in names}
        record = {name: {} for name in names}
        for model in models:
            explanations, probabilities = _explain(model, images, args, 1)
            labels = [int(exp.top_labels[0]) for exp in explanations]
            cams = _gradcams(gradcam, model, images, labels, args.target_layer)
            for name, exp, probs, label, cam in zip(names, explanations, probabilities, labels,
                                                    cams):
                # The curves' calls are few: a fixed batch (auto's probe would not pay).
                batch = args.batch_size if isinstance(args.batch_size, int) else PLAIN_BATCH
                lime_f = faithfulness(exp, model.classifier, args.steps, label=label,
                                      batch_size=batch)
                cam_f = faithfulness(exp, model.classifier, args.steps, label=label,
                                     weights=segment_scores(cam, exp.segments),
                                     batch_size=batch)
                curves = render.curve_plot(lime_f.fractions, [
                    ("LIME", lime_f.deletion, "green"), ("Grad-CAM", cam_f.deletion, "purple")],
                    xlabel="share deleted")
                sheets[name] += [
                    (f"{model.tag}: {model.label_name(label)} {probs[label]:.2f}", exp.image),
                    ("LIME", exp.render(label, coverage=args.coverage)),
                    ("LIME weights", exp.heatmap(label, colored=True, image=exp.image)),
                    ("Grad-CAM", render.cam_overlay(exp.image, cam)),
                    (f"deletion {lime_f.deletion_auc:.2g} / {cam_f.deletion_auc:.2g}", curves),
                ]
                record[name][model.tag] = {
                    "model": model.spec, "weights": model.weights, "label": label,
                    "label_name": model.label_name(label), "probability": float(probs[label]),
                    "lime": {"deletion_auc": lime_f.deletion_auc,
                             "insertion_auc": lime_f.insertion_auc},
                    "gradcam": {"deletion_auc": cam_f.deletion_auc,
                                "insertion_auc": cam_f.insertion_auc},
                }
        for name, image in zip(names, images):
            render.panel(sheets[name], columns=5, tile=max(160, min(224, image.shape[0])),
                         header=f"{name}: LIME and Grad-CAM (deletion AUC: LIME / Grad-CAM, "
                                "lower is better)").save(staging.path(name, "compare.png"))
            with open(staging.path(name, "compare.json"), "w") as fh:
                json.dump({"image": os.path.abspath(args.images[names.index(name)]),
                           "segmentation": args.segmentation, "num_samples": args.num_samples,
                           "steps": args.steps, "models": record[name]}, fh, indent=1)

    return _run_staged(staging, work)


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


if __name__ == "__main__":
    sys.exit(main())
