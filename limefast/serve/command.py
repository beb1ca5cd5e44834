"""``limefast serve``: the models of the command line behind KServe's V1 data plane, on uvicorn.

The models are those of ``--model`` only (the flags of ``limefast explain``); nothing in a
request loads code or files. The explain flags (``--num-samples``, ``--time-budget``, ``--seed``,
``--segmentation``, ``--method``, ``--top-labels``, ``--max-samples``; for ``--task detection``
``--score-threshold``, for ``--task segmentation`` ``--classes`` and ``--min-pixels``) are the
defaults a request's ``parameters`` override. The app itself is built in ``builder`` (shared with
``on_ray``); this module parses the flags and runs it.
"""

from __future__ import annotations

import sys

from limefast.cli.arguments import positive_int
from limefast.cli.inputs import InputError
from limefast.optional import available
from limefast.serve.builder import build


def add_parser(subparsers) -> None:
    from limefast.cli.commands import model_arguments
    from limefast.cli.detect import METHODS, task_arguments

    p = subparsers.add_parser(
        "serve", help="explanations as a service: KServe's V1 data plane over HTTP",
        description="Serve LIME and KernelSHAP explanations of the --model(s) over KServe's V1 "
                    "data plane (POST /v1/models/NAME:explain), batching the model calls of "
                    "concurrent requests; with --task detection|segmentation, one explanation "
                    "per detected box (region).")
    model_arguments(p)
    p.add_argument("--method", choices=sorted(METHODS), default="lime",
                   help="the default method of a request (lime or kernelshap; drise for "
                        "--task detection|segmentation)")
    p.add_argument("--top-labels", type=positive_int, default=5,
                   help="the default top_labels of a request (classifiers)")
    task_arguments(p)
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
    # --size: 224 for classifiers, a detector's (segmenter's) own side or 0 (as explain); and
    # --segmentation: quickshift, or what suits the model's images. Resolved in builder.build.
    p.set_defaults(func=run, size=None, segmentation=None)


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
