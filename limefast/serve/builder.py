"""The served app of ``limefast serve``'s arguments: the models loaded, warmed up and put behind
the FastAPI app. ``command`` (one process on uvicorn) and ``on_ray`` (one per Ray Serve replica)
both build it here, so neither imports the other's way of running it.
"""

from __future__ import annotations

import numpy as np

from limefast.cli.inputs import InputError

WARMUP_SAMPLES = 50


def build(args):
    """The app of the command line's models: (app, served models)."""
    from limefast.cli.steps import check_model_arguments, load_models, warn_notes
    from limefast.serve.app import ServedModel, create_app
    from limefast.serve.inputs import Limits
    from limefast.serve.scheduler import Scheduler

    check_model_arguments(args)
    if not args.max_wait_ms >= 0:
        raise InputError(f"--max-wait-ms must be >= 0; got {args.max_wait_ms}")
    names = args.name or []
    if names and len(names) != len(args.model):
        raise InputError(f"give --name once per --model ({len(args.model)}); got {len(names)}")
    api_key = _api_key(args.api_key_file)
    models = load_models(args)
    names = names or [m.tag for m in models]
    if len(set(names)) != len(names):
        raise InputError(f"model names must differ; got {names}")
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

    rng = np.random.RandomState(0)
    coarse = rng.randint(0, 256, (-(-side // 16), -(-side // 16), channels))
    image = np.kron(coarse, np.ones((16, 16, 1)))[:side, :side].astype(np.uint8)
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
