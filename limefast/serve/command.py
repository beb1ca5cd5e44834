"""``limefast serve``: the models of the command line behind KServe's V1 data plane, on uvicorn.

The models are those of ``--model`` only (the flags of ``limefast explain``); nothing in a
request loads code or files. The explain flags (``--num-samples``, ``--time-budget``, ``--seed``,
``--segmentation``, ``--method``, ``--top-labels``, ``--max-samples``) are the defaults a
request's ``parameters`` override.
"""

from __future__ import annotations

import sys

import numpy as np

from limefast.cli.arguments import positive_int
from limefast.cli.inputs import InputError
from limefast.optional import available

WARMUP_SAMPLES = 50


def add_parser(subparsers) -> None:
    from limefast.cli.commands import METHODS, model_arguments

    p = subparsers.add_parser(
        "serve", help="explanations as a service: KServe's V1 data plane over HTTP",
        description="Serve LIME and KernelSHAP explanations of the --model(s) over KServe's V1 "
                    "data plane (POST /v1/models/NAME:explain), batching the model calls of "
                    "concurrent requests.")
    model_arguments(p)
    p.add_argument("--method", choices=sorted(METHODS), default="lime",
                   help="the default method of a request (lime or kernelshap)")
    p.add_argument("--top-labels", type=positive_int, default=5,
                   help="the default top_labels of a request")
    p.add_argument("--name", action="append", default=None,
                   help="the model's name in the URL, once per --model (default: its tag)")
    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=8080)
    g.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="want 'Authorization: Bearer KEY' on every request, KEY read from FILE")
    g = p.add_argument_group("batching across requests")
    g.add_argument("--max-batch-size", type=positive_int, default=256,
                   help="the most images in one model call (default 256)")
    g.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a model call waits for more images after the oldest queued "
                        "one (default 5 ms)")
    g.add_argument("--max-inflight", type=positive_int, default=32,
                   help="explanations at once per model; more are answered 503 (default 32)")
    g.add_argument("--min-rows", type=positive_int, default=64,
                   help="images a request with a time_budget must be able to get through the "
                        "model in its budget to be admitted (default 64)")
    g.add_argument("--no-merge", action="store_true",
                   help="run each request's model calls alone (no batching across requests)")
    g = p.add_argument_group("limits of one request")
    g.add_argument("--max-body-bytes", type=positive_int, default=32 << 20)
    g.add_argument("--max-image-pixels", type=positive_int, default=4096 * 4096,
                   help="height x width of an image, read from its header before decoding")
    g.add_argument("--max-instances", type=positive_int, default=16)
    g.add_argument("--max-samples-per-request", type=positive_int, default=20000,
                   help="the most rows one explanation may draw (num_samples, or max_samples "
                        "with auto; default 20000)")
    g.add_argument("--no-warmup", action="store_true",
                   help="skip the short explanation each model runs before the port opens")
    g = p.add_argument_group("Ray Serve")
    g.add_argument("--ray", action="store_true",
                   help="serve the same app on Ray Serve, one per replica (a local Ray, or the "
                        "cluster of --ray-address / RAY_ADDRESS)")
    g.add_argument("--replicas", type=positive_int, default=1, help="Ray Serve replicas")
    g.add_argument("--ray-actor-options", default=None, metavar="JSON",
                   help='each replica\'s ray_actor_options, e.g. \'{"num_gpus": 1}\'')
    g.add_argument("--ray-address", default=None, help="the Ray cluster to join")
    p.set_defaults(func=run)


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


def run(args) -> int:
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if not available(m)]
    if missing:
        raise InputError(f"limefast serve needs {', '.join(missing)}: pip install "
                         "'limefast[serve]'")
    if args.ray:
        if not available("ray.serve"):
            raise InputError("limefast serve --ray needs Ray Serve: pip install "
                             "'limefast[ray-serve]'")
        from limefast.serve import on_ray

        return on_ray.run(args)
    import uvicorn

    app, served = build(args)
    where = f"http://{args.host}:{args.port}"
    print(f"limefast serve: {', '.join(m.name for m in served)} at {where}/v1/models "
          f"(OpenAPI docs at {where}/docs)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    limit_concurrency=sum(m.scheduler.max_inflight for m in served) * 4 + 64,
                    timeout_keep_alive=5)
    finally:
        for model in served:
            model.scheduler.close()
    return 0


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
