"""``limefast serve --ray``: the same FastAPI app on Ray Serve, one per replica.

The app is not sent to the replicas: Ray Serve's ``@serve.ingress`` takes a builder that runs on
each replica (``app_builder``), which loads the command line's models and builds the app with
``limefast serve``'s own ``builder.build``. Ray spreads the requests over the replicas (and
machines); each replica's scheduler batches its own. ``pip install 'limefast[ray-serve]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from limefast.cli.inputs import InputError
from limefast.optional import require

APP_NAME = "limefast"


def app_builder(arguments: dict):
    """The FastAPI app of one replica, from the command line's arguments (a plain dict)."""
    from limefast.serve.builder import build

    arguments = dict(arguments)
    cwd = arguments.pop("cwd")
    if os.path.isdir(cwd):  # a module:factory or file.py:factory is named from there
        os.chdir(cwd)
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    app, _ = build(argparse.Namespace(**arguments))
    return app


def actor_options(text: str | None) -> dict:
    """``--ray-actor-options``: a JSON object, such as ``{"num_gpus": 1}``."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--ray-actor-options must be a JSON object; got {text!r} "
                         f"({exc})") from None
    if not isinstance(options, dict):
        raise InputError(f"--ray-actor-options must be a JSON object; got {text!r}")
    return options


def application(args, options: dict | None = None):
    """The Ray Serve application (``Deployment.bind()``) of the command line's models.

    Args:
        args: the ``limefast serve`` arguments.
        options: ``ray_actor_options`` of each replica (default ``--ray-actor-options``).
    """
    serve = require("ray.serve", "limefast serve --ray")
    arguments = {k: v for k, v in vars(args).items() if k != "func"}
    arguments["cwd"] = os.getcwd()
    options = actor_options(args.ray_actor_options) if options is None else options
    def build_app():  # Ray Serve calls a builder (a plain function) on each replica
        return app_builder(arguments)

    ingress = serve.ingress(build_app)
    deployment = serve.deployment(
        ingress(), name=APP_NAME, num_replicas=args.replicas, ray_actor_options=options,
        # more than the schedulers admit: the replicas answer the excess with 503 themselves
        max_ongoing_requests=args.max_inflight * 2 * len(args.model) + 16)
    return deployment.bind()


def run(args) -> int:
    """Start (or join, with ``RAY_ADDRESS``) a Ray cluster and serve until interrupted."""
    ray = require("ray", "limefast serve --ray")
    serve = require("ray.serve", "limefast serve --ray")
    app = application(args)
    ray.init(address=args.ray_address)
    serve.start(http_options={"host": args.host, "port": args.port})
    print(f"limefast serve: {args.replicas} replica(s) on Ray Serve at "
          f"http://{args.host}:{args.port}/v1/models", file=sys.stderr, flush=True)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:  # the way to stop a server
        print("limefast serve: stopping", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
