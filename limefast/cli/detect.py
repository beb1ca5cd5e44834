"""Detectors and segmenters on the command line: ``limefast explain IMAGE --task detection |
segmentation --model NAME|module:factory`` (and the loader ``serve`` and ``explain-dataset``
share).

A model is named as for classifiers:

- ``shapes``: the small detector trained here (``limefast.models.detector``; 48x48 scenes);
- a torchvision detection model (``torchvision.models.list_models(module=
  torchvision.models.detection)``: Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite, Mask R-CNN, ...)
  or segmentation model (``...segmentation``: FCN, DeepLabV3, LR-ASPP), random weights unless
  ``--weights`` says ``DEFAULT`` or a file;
- ``module:factory`` (or ``file.py:factory``): a function returning a torch module (wrapped in
  ``TorchDetector`` / ``TorchSegmenter``) or a callable of the detector (segmenter) protocol.

Per image and model, ``explain`` writes ``target-I.png`` (the image, target I's box and its
superpixel weights or D-RISE map), ``targets.png`` (every target, one tile each) and
``explanation.json`` (``DetectionExplanation.record``: one entry per target under ``labels``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from limefast.cli.inputs import (
    ImportedFactory,
    InputError,
    _safe,
    _seed_loaded_torch,
    _torchvision_model,
    load_state_dict_file,
)
from limefast.imagenet import MEAN as IMAGENET_MEAN
from limefast.imagenet import STD as IMAGENET_STD
from limefast.optional import require

TASKS = ("classification", "detection", "segmentation")
# The models limefast ships, by task: name -> (module with load_model(), the side of the images
# it takes, its class names, the segmentation that suits its images).
BUILTIN = {"detection": {"shapes": ("limefast.models.detector", 48,
                                    ("disc", "square", "triangle"), "slic")}}
METHODS = {"lime": "LIME", "kernelshap": "KernelSHAP", "drise": "D-RISE"}


def task_arguments(p) -> None:
    """``--task`` and what it takes (``--score-threshold``, ``--classes``, ``--min-pixels``):
    the flags of every subcommand that explains detectors and segmenters."""
    from limefast.cli.arguments import class_list, positive_int

    g = p.add_argument_group("detectors and segmenters")
    g.add_argument("--task", choices=TASKS, default="classification",
                   help="what --model is: a classifier (default), a detector (every detection "
                        "scoring --score-threshold explained: shapes, a torchvision detection "
                        "model or module:factory) or a segmenter (each predicted class's "
                        "connected areas: a torchvision segmentation model or module:factory)")
    g.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                   help="--task detection: explain the detections scoring at least S "
                        "(default %(default)s)")
    g.add_argument("--classes", type=class_list, default=None, metavar="C[,C...]",
                   help="--task segmentation: only these classes' areas (default: every "
                        "predicted class%(default).0s)")
    g.add_argument("--min-pixels", type=positive_int, default=16,
                   help="--task segmentation: areas smaller than this are left out "
                        "(default %(default)s)")


@dataclass
class LoadedDetector:
    """A detector (or segmenter) ready to explain: ``fn`` takes (N, H, W, 3) images and
    returns the protocol's answer (N dicts; or (N, n_classes, H, W) probabilities)."""

    spec: str
    tag: str
    task: str
    fn: object
    weights: str = "random"
    categories: list | None = None
    size: int | None = None  # the side of the images it takes, where it takes only one
    notes: list = field(default_factory=list)
    segmentation: str = "quickshift"  # --segmentation's default for it

    def label_name(self, label: int) -> str:
        if self.categories and 0 <= label < len(self.categories):
            return str(self.categories[label])
        return f"class {label}"


def load_detector(spec: str, weights: str | None = None, *, task: str = "detection",
                  device=None, seed: int = 0, batch_size: int | None = None,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, cwd: str | None = None) -> LoadedDetector:
    """The detector (``task="detection"``) or segmenter (``"segmentation"``) ``spec`` names.

    Args:
        spec: ``shapes`` (detection), a torchvision detection or segmentation model's name, or
            ``module:factory`` returning a torch module or a protocol callable.
        weights: None (random weights, with a note), ``DEFAULT`` (torchvision's pretrained
            weights, downloaded if not cached) or a state-dict file.
        device: the torch device (default cuda where there is one, else cpu).
        seed: seeds torch before building, so random weights are the same on every run.
        batch_size: images per forward of a torch module (default 8).
        mean, std: a segmentation module's input normalisation (detection modules normalise
            their input themselves).
        cwd: the folder a ``module:factory`` is imported from (default the current one; a Ray
            worker is given its driver's).

    Raises:
        InputError: an unknown name, a factory that fails, weights that do not fit.
    """
    if task not in ("detection", "segmentation"):
        raise InputError(f"task must be detection or segmentation; got {task!r}")
    tag = _safe(spec.replace(":", "-")) or "model"
    builtin = BUILTIN.get(task, {})
    if weights == "":
        weights = None
    if spec in builtin:
        if device not in (None, "cpu"):
            raise InputError(f"--model {spec} runs on the CPU (a net of 1 M multiply-adds): "
                             f"drop --device {device}")
        if weights not in (None, "RANDOM"):
            raise InputError(f"--model {spec} is limefast's trained detector: it takes no "
                             "--weights")
        import importlib

        module_name, size, names, segmentation = builtin[spec]
        detector = importlib.import_module(module_name).load_model().detector
        return LoadedDetector(spec, tag, task, detector, "trained", list(names), size,
                              segmentation=segmentation)
    categories = None
    if ":" in spec:
        built = ImportedFactory(spec, cwd or os.getcwd()).build(lambda: _seed_loaded_torch(seed))
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(built, torch.nn.Module):
            if weights not in (None, "RANDOM"):
                raise InputError(f"--weights {weights}: {spec} returned a callable, not a "
                                 "torch module, so there is nothing to load the weights into")
            if device is not None:
                raise InputError(f"--device {device}: {spec} returned a callable, not a torch "
                                 "module; it runs where it runs (drop --device)")
            return LoadedDetector(spec, tag, task, built, "given by the factory")
        if weights == "DEFAULT":
            raise InputError(f"--weights DEFAULT asks torchvision for pretrained weights; "
                             f"{spec} is not a torchvision model (give a weights file)")
        module = built
    else:
        torch = require("torch", f"--model {spec} (a torchvision {task} model)")
        torch.manual_seed(seed)
        module, categories = _torchvision_model(spec, weights, task)
    described = "random"
    if weights not in (None, "RANDOM", "DEFAULT"):
        load_state_dict_file(module, weights, spec)
        described = weights
    elif weights == "DEFAULT":
        described = "DEFAULT"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        module.to(device)
        if task == "detection":
            from limefast.detection.torch_detector import TorchDetector

            fn = TorchDetector(module, device=device, batch_size=batch_size or 8)
        else:
            from limefast.detection.segmenter import TorchSegmenter

            fn = TorchSegmenter(module, mean=mean, std=std, device=device,
                                batch_size=batch_size or 8)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"--model {spec} on --device {device}: {exc}") from exc
    loaded = LoadedDetector(spec, tag, task, fn, described, categories)
    if weights in (None, "RANDOM"):
        loaded.notes.append(
            f"{spec} has random weights (no --weights file): "
            + ("it may detect nothing above the threshold, " if task == "detection" else "")
            + "its explanations describe an untrained network")
    return loaded


def load_detectors(args) -> list[LoadedDetector]:
    """The ``--model`` flags' detectors (segmenters) for ``args.task``, each with a distinct
    ``tag``."""
    weights = args.weights or [None] * len(args.model)
    if len(weights) != len(args.model):
        raise InputError(f"give --weights once per --model ({len(args.model)}), in the same "
                         f"order (RANDOM for random weights); got {len(weights)}")
    norm = {k: v for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    batch = args.batch_size if isinstance(args.batch_size, int) else None
    models = [load_detector(spec, w, task=args.task, device=args.device, seed=args.seed,
                            batch_size=batch, **norm)
              for spec, w in zip(args.model, weights)]
    from limefast.cli.steps import distinct_tags

    return distinct_tags(models)


def check_task_arguments(args) -> None:
    """What ``--task detection|segmentation`` takes of the other flags: an InputError for a
    combination it cannot run."""
    method = args.method
    if args.task == "classification":
        if method == "drise":
            raise InputError("--method drise explains detectors and segmenters: add --task "
                             "detection (or segmentation)")
        return
    if method == "drise":
        given = [flag for flag, value in (("--dedupe", args.dedupe),
                                          ("--time-budget", args.time_budget),
                                          ("--max-samples", args.max_samples),
                                          ("--sampler", getattr(args, "sampler", None)),
                                          ("--target-overlap", args.target_overlap),
                                          ("--min-gain", args.min_gain)) if value]
        if given:
            raise InputError(f"--method drise weighs a fixed count of random masks "
                             f"(--num-samples N): it takes no {', '.join(given)}")
    if not 0 <= args.score_threshold <= 1:
        raise InputError(f"--score-threshold must be in [0, 1]; got {args.score_threshold}")
    ignored = [flag for flag, given in (
        ("--precision", getattr(args, "precision", "auto") != "auto"),
        ("--compile", getattr(args, "compile", "none") != "none"),
        ("--mean/--std", args.task == "detection" and (getattr(args, "mean", None) is not None
                                                       or getattr(args, "std", None) is not None)),
    ) if given]
    if ignored:
        raise InputError(f"--task {args.task} takes no {', '.join(ignored)}: detectors and "
                         "segmenters run in float32 as they are (torchvision's detectors "
                         "normalise their input themselves)")


def num_samples_for(args):
    """``--num-samples`` as the method takes it: D-RISE's ``auto`` is its default 1000 masks."""
    from limefast.detection.explainer import DEFAULT_SAMPLES

    if args.method == "drise" and args.num_samples == "auto":
        return DEFAULT_SAMPLES["drise"]
    return args.num_samples


def explain_one(explainer, image, model: LoadedDetector, args, segmentation):
    """One image's DetectionExplanation by ``args.method`` (``NoTargets`` when there is
    nothing to explain)."""
    from limefast.cli.steps import PLAIN_BATCH, sampling_options

    options = {} if args.method == "drise" else dict(
        segmentation_fn=segmentation, **sampling_options(args))
    common = dict(method=args.method, num_samples=num_samples_for(args),
                  batch_size=args.batch_size or PLAIN_BATCH, progress_bar=True, **options)
    if model.task == "segmentation":
        return explainer.explain_segmentation(image, model.fn, classes=args.classes,
                                              min_pixels=args.min_pixels, **common)
    return explainer.explain_instance(image, model.fn, score_threshold=args.score_threshold,
                                      **common)


def nothing_to_explain(exc, path: str, model: LoadedDetector, args) -> str:
    """The command line's words for an image without targets (``NoTargets``)."""
    if model.task == "segmentation":
        return (f"{path}: --model {model.spec} predicted no area of at least --min-pixels "
                f"{args.min_pixels}" + ("" if args.classes is None else
                                        f" of --classes {','.join(map(str, args.classes))}"))
    best = "no detection at all" if exc.best is None else f"its best: {exc.best:.3g}"
    return (f"{path}: --model {model.spec} found nothing scoring at least --score-threshold "
            f"{args.score_threshold} ({best})")


def run_explain_task(args) -> int:
    """``limefast explain --task detection|segmentation``: per image and model, a PNG per
    target, one of every target, and ``explanation.json``.

    An image without targets gets an ``explanation.json`` that says so (``no_targets``, no
    labels) and a warning; when no image has any, it is an error and nothing is written.
    """
    from limefast.cli.inputs import Staging, image_names, load_image
    from limefast.cli.steps import check_model_arguments, run_staged, warn_notes
    from limefast.detection import DetectionExplainer, NoTargets
    from limefast.segmentation import SEGMENTATIONS
    from limefast.viz import panel
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    check_task_arguments(args)
    if args.method == "drise" and args.segmentation is not None:
        raise InputError("--method drise hides random grid masks, not superpixels: it takes "
                         "no --segmentation")
    if args.top_labels is not None:
        raise InputError(f"--top-labels is a classifier's: --task {args.task} explains every "
                         "target (--score-threshold chooses them)" if args.task == "detection"
                         else "--top-labels is a classifier's: --task segmentation explains "
                         "every predicted area (--classes and --min-pixels choose them)")
    size = args.size
    if size is None:
        size = 0
    check_model_arguments(_with(args, size=size))
    models = load_detectors(args)
    sides = {m.size for m in models if m.size}
    if args.size is None and sides:
        if len(sides) > 1 or len(sides) and any(not m.size for m in models):
            raise InputError(f"--model {' and '.join(m.spec for m in models if m.size)} take "
                             f"images of one side only ({sorted(sides)}), the others as they "
                             "are: explain them in separate runs")
        size = sides.pop()
    for m in models:
        if m.size and size != m.size:
            raise InputError(f"--model {m.spec} takes {m.size}x{m.size} images: drop --size "
                             f"(or give --size {m.size})")
    images = [load_image(path, size, args.resize) for path in args.images]
    warn_notes(models)
    panel.font()
    staging = Staging(args.out)
    names = image_names(args.images)

    def work():
        empty = []
        for model in models:
            method = args.segmentation or model.segmentation
            segmentation = SegmentationAlgorithm(method, **SEGMENTATIONS[method])
            print(f"limefast: {model.spec}: {METHODS[args.method]} of each "
                  f"{'detection' if args.task == 'detection' else 'region'}, {len(images)} "
                  f"image(s) x {num_samples_for(args)} samples", file=sys.stderr)
            explainer = DetectionExplainer(random_state=args.seed)
            for path, name, image in zip(args.images, names, images):
                t0 = time.perf_counter()
                try:
                    exp = explain_one(explainer, image, model, args, segmentation)
                except NoTargets as exc:
                    empty.append(nothing_to_explain(exc, path, model, args))
                    write_no_targets(staging, path, name, model, args, empty[-1], image)
                    continue
                seconds = time.perf_counter() - t0
                write_explanation(staging, path, name, model, exp, args, seconds, method)
        if len(empty) == len(models) * len(images):
            what = "threshold" if args.task == "detection" else "areas"
            raise InputError(f"{empty[0]}" + (f" (and every other image: {len(empty)} in all)"
                                              if len(empty) > 1 else "")
                             + f": nothing to explain (lower the {what})")
        for line in empty:
            print(f"limefast: warning: {line}: nothing to explain; its explanation.json says "
                  "so", file=sys.stderr)

    return run_staged(staging, work)


def write_no_targets(staging, path, name, model: LoadedDetector, args, why: str, image) -> None:
    """The ``explanation.json`` of an image without targets: the record's fields, no labels,
    ``no_targets`` the reason."""
    record = {"image": os.path.abspath(path), "method": args.method, "task": model.task,
              "model": model.spec, "size": list(image.shape[:2]), "seed": args.seed,
              "weights": model.weights, "labels": {}, "no_targets": why}
    with open(staging.path(name, model.tag, "explanation.json"), "w") as fh:
        json.dump(record, fh, indent=1)


def target_record(exp, loaded: LoadedDetector, **fields) -> dict:
    """``exp.record(...)`` with each target's class name, the model's weights and the
    segmentation (what ``explain``, ``serve`` and ``explain-dataset`` write)."""
    record = exp.record(**fields)
    for entry in record["labels"].values():
        entry["class_name"] = loaded.label_name(entry["class"])
    record["weights"] = loaded.weights
    return record


def write_explanation(staging, path, name, model: LoadedDetector, exp, args, seconds,
                      segmentation: str) -> None:
    from limefast.viz import panel

    for i, t in enumerate(exp.targets):
        picture = (exp.render(i) if exp.method == "drise"
                   else exp.render(i, coverage=args.coverage))
        panel.panel([("image", exp.image), (f"{METHODS[exp.method]}", picture)],
                    tile=max(192, min(320, exp.image.shape[0])),
                    header=f"{name}, {model.spec}: target {i}, {model.label_name(t.label)} "
                           f"{t.score:.3f}").save(staging.path(name, model.tag,
                                                               f"target-{i}.png"))
    exp.panel(label_name=model.label_name).save(staging.path(name, model.tag, "targets.png"))
    record = target_record(exp, model, image=os.path.abspath(path), model=model.spec,
                           seed=args.seed, seconds=seconds)
    record["segmentation"] = None if exp.method == "drise" else segmentation
    for i, entry in record["labels"].items():
        entry["png"] = f"target-{i}.png"
    with open(staging.path(name, model.tag, "explanation.json"), "w") as fh:
        json.dump(record, fh, indent=1)


def _with(args, **changes):
    """A copy of the namespace ``args`` with ``changes``."""
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})
