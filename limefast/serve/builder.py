"""The served app of ``limefast serve``'s arguments: the models loaded, warmed up and put behind
the FastAPI app. ``command`` (one process on uvicorn) and ``on_ray`` (one per Ray Serve replica)
both build it here, so neither imports the other's way of running it. ``--task detection |
segmentation`` loads detectors (segmenters) as ``limefast explain --task`` does and serves them
with a ``DetectionScheduler`` (``serve.detect``).
"""

from __future__ import annotations

import argparse

import numpy as np

from limefast.cli.inputs import InputError

WARMUP_SAMPLES = 50


def build(args):
    """The app of the command line's models: (app, served models)."""
    from limefast.cli.detect import check_task_arguments
    from limefast.cli.steps import (
        check_model_arguments,
        classifier_defaults,
        load_models,
        warn_notes,
    )
    from limefast.serve.app import ServedModel, create_app
    from limefast.serve.inputs import Limits
    from limefast.serve.scheduler import Scheduler

    args = argparse.Namespace(**vars(args))  # --size and --segmentation resolved in a copy
    args.task = getattr(args, "task", "classification")
    # explain's --target-overlap and --min-gain are a request's parameters here
    check_task_arguments(argparse.Namespace(**{"target_overlap": None, "min_gain": None,
                                               **vars(args)}))
    if args.task != "classification":
        return _build_targets(args)
    classifier_defaults(args)
    check_model_arguments(args)
    names = _names(args)
    api_key = _api_key(args.api_key_file)
    models = load_models(args)
    names = _model_names(names, models)
    warn_notes(models)
    defaults = {"method": args.method, "num_samples": args.num_samples,
                "time_budget": args.time_budget, "max_samples": args.max_samples,
                "seed": args.seed, "segmentation": args.segmentation,
                "top_labels": args.top_labels}
    served, channels = [], set()
    for name, m in zip(names, models):
        mean = getattr(m.classifier, "mean", None)
        channels.add(len(mean) if mean is not None else 3)
        scheduler = Scheduler(
            m.classifier, max_batch_size=args.max_batch_size, max_wait=args.max_wait_ms / 1e3,
            batch_size=args.batch_size if isinstance(args.batch_size, int) else None,
            max_inflight=args.max_inflight, min_rows=args.min_rows, merge=not args.no_merge,
            dedupe=args.dedupe)
        served.append(ServedModel(name, scheduler, m.spec, m.weights, m.label_name,
                                  {k: v for k, v in defaults.items() if v is not None},
                                  args.coverage))
    if len(channels) > 1:
        raise InputError(f"the models take different channel counts {sorted(channels)}; serve "
                         "them from separate servers")
    limits = Limits(max_body_bytes=args.max_body_bytes, max_pixels=args.max_image_pixels,
                    max_instances=args.max_instances, size=args.size, resize=args.resize,
                    channels=channels.pop(), max_samples=args.max_samples_per_request)
    if not args.no_warmup:
        for model in served:
            _warm_up(model, args.size or 64, limits.channels)
    return create_app(served, limits, api_key), served


def _names(args) -> list:
    """The server's own flags checked; the ``--name`` flags."""
    if not args.max_wait_ms >= 0:
        raise InputError(f"--max-wait-ms must be >= 0; got {args.max_wait_ms}")
    names = args.name or []
    if names and len(names) != len(args.model):
        raise InputError(f"give --name once per --model ({len(args.model)}); got {len(names)}")
    return names


def _model_names(names: list, models: list) -> list:
    names = names or [m.tag for m in models]
    if len(set(names)) != len(names):
        raise InputError(f"model names must differ; got {names}")
    return names


def _build_targets(args):
    """``--task detection|segmentation``: the detectors (segmenters), each behind a
    ``DetectionScheduler``, warmed up on a given box."""
    from limefast.cli.detect import load_detectors
    from limefast.cli.steps import check_model_arguments, warn_notes
    from limefast.config import PLAIN_BATCH
    from limefast.serve.app import ServedModel, create_app
    from limefast.serve.detect import PARAMETERS, DetectionScheduler, DetectOptions
    from limefast.serve.inputs import Limits

    check_model_arguments(argparse.Namespace(**{**vars(args), "size": args.size or 0}))
    names = _names(args)
    api_key = _api_key(args.api_key_file)
    models = load_detectors(args)
    sides = {m.size for m in models if m.size}
    size = args.size
    if size is None:  # as explain --task: the models' own side, else the images as they are
        if len(sides) > 1:
            raise InputError(f"the models take images of different sides {sorted(sides)}: "
                             "serve them from separate servers")
        size = sides.pop() if sides else 0
    for m in models:
        if m.size and size != m.size:
            raise InputError(f"--model {m.spec} takes {m.size}x{m.size} images: drop --size "
                             f"(or give --size {m.size})")
    names = _model_names(names, models)
    warn_notes(models)
    common = {"method": args.method, "num_samples": args.num_samples,
              "time_budget": args.time_budget, "max_samples": args.max_samples,
              "seed": args.seed, "score_threshold": args.score_threshold,
              "classes": args.classes, "min_pixels": args.min_pixels,
              "dedupe": True if args.dedupe else None}
    served = []
    for name, m in zip(names, models):
        defaults = {k: v for k, v in {**common, "segmentation": args.segmentation
                                      or m.segmentation}.items()
                    if v is not None and k in PARAMETERS[args.task]}
        try:
            DetectOptions.parse({}, defaults, args.task)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        scheduler = DetectionScheduler(
            m.fn, args.task, max_batch_size=args.max_batch_size,
            max_wait=args.max_wait_ms / 1e3,
            batch_size=args.batch_size if isinstance(args.batch_size, int) else PLAIN_BATCH,
            max_inflight=args.max_inflight, min_rows=args.min_rows, merge=not args.no_merge)
        served.append(ServedModel(name, scheduler, m.spec, m.weights, m.label_name, defaults,
                                  args.coverage, task=args.task, loaded=m))
    limits = Limits(max_body_bytes=args.max_body_bytes, max_pixels=args.max_image_pixels,
                    max_instances=args.max_instances, size=size, resize=args.resize,
                    channels=3, max_samples=args.max_samples_per_request)
    if not args.no_warmup:
        for model in served:
            _warm_up_targets(model, size or 64)
    return create_app(served, limits, api_key), served


def _api_key(path):
    if path is None:
        return None
    try:
        with open(path) as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise InputError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    if not key or any(c.isspace() for c in key):
        raise InputError(f"--api-key-file {path} must hold one key without spaces")
    return key


def _warm_up(model, side: int, channels: int) -> None:
    """Two short explanations: the first pays the one-time costs (kernels loaded, the
    framework's first forwards), the second tells the queue the model's speed."""
    from limefast.serve.options import ExplainOptions

    image = _warm_up_image(side, channels)
    options = ExplainOptions.parse({"num_samples": WARMUP_SAMPLES, "time_budget": None,
                                    "max_samples": None}, model.defaults)
    try:
        classifier = model.scheduler.classifier_fn
        if hasattr(classifier, "batch_for"):  # a TorchClassifier: every chunk size it runs
            batch = np.repeat(image[None], classifier.batch_for(image.shape), axis=0)
            for n in range(1, batch.shape[0] + 1):
                classifier(batch[:n])
        model.scheduler.explain(image, options)
        model.scheduler.forget_costs()
        model.scheduler.explain(image, options)
    except Exception as exc:  # noqa: BLE001 - the user's model, in one line
        lines = str(exc).strip().splitlines()
        raise InputError(f"--model {model.spec}: failed on a warm-up image: "
                         f"{type(exc).__name__}: {lines[0] if lines else ''}") from exc


def _warm_up_image(side: int, channels: int) -> np.ndarray:
    rng = np.random.RandomState(0)
    coarse = rng.randint(0, 256, (-(-side // 16), -(-side // 16), channels))
    return np.kron(coarse, np.ones((16, 16, 1)))[:side, :side].astype(np.uint8)


def _warm_up_targets(model, side: int) -> None:
    """A detector's (segmenter's) two short explanations, as a classifier's: of a given box,
    the centre of the image (a detector may find nothing on the warm-up image), labelled with
    the class of its best detection (of the region's most frequent class)."""
    import warnings

    from limefast.serve.detect import DetectOptions

    image = _warm_up_image(side, 3)
    low, high = side // 4, side - side // 4
    scheduler = model.scheduler
    try:
        with warnings.catch_warnings():  # a box nothing matches: flat, and said so
            warnings.simplefilter("ignore")
            answer = scheduler.predict([image])[0]
            if model.task == "detection":
                label = int(answer.labels[np.argmax(answer.scores)]) if len(answer) else 0
            else:
                label = int(np.bincount(answer[:, low:high, low:high].argmax(0).ravel()).argmax())
            target = {"box": [low, low, high, high], "label": label}
            options = DetectOptions.parse({"num_samples": WARMUP_SAMPLES, "time_budget": None,
                                           "max_samples": None, "targets": [target]},
                                          model.defaults, model.task)
            scheduler.explain(image, options)
            scheduler.forget_costs()
            scheduler.explain(image, options)
    except Exception as exc:  # noqa: BLE001 - the user's model, in one line
        lines = str(exc).strip().splitlines()
        raise InputError(f"--model {model.spec}: failed on a warm-up image: "
                         f"{type(exc).__name__}: {lines[0] if lines else ''}") from exc
