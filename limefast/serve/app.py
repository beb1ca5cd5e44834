"""The HTTP layer of ``limefast serve``: KServe's V1 data plane as a FastAPI app.

Routes (KServe's model server registers the same paths: ``GET /`` and ``/metrics`` in
``python/kserve/kserve/protocol/rest/server.py``, the ``/v1`` routes in
``protocol/rest/v1_endpoints.py``, the server health of ``protocol/rest/v2_endpoints.py``):

- ``POST /v1/models/{name}:explain``: ``{"instances": [...], "parameters": {...}}`` ->
  ``{"predictions": [...], "explanations": [...]}``; an instance is ``{"b64": ...}`` (TF
  Serving's binary convention) or nested pixel lists. A raw image body (``Content-Type:
  image/png``, ...) is one instance, with the parameters in the query string. For a detector
  (segmenter), an explanation holds one entry per target under ``labels`` (``serve.detect``).
- ``POST /v1/models/{name}:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``
  (a detector's: each image's boxes, scores and labels).
- ``GET /v1/models`` -> ``{"models": [...]}``; ``GET /v1/models/{name}`` -> ``{"name": ...,
  "ready": true}`` (503 once its scheduler is closed).
- ``GET /`` -> ``{"status": "alive"}`` (liveness: what KServe's V1 client
  ``is_server_live`` asks); ``GET /v2/health/live`` -> ``{"live": true}`` and
  ``GET /v2/health/ready`` -> ``{"ready": true}`` (the server health KServe's model server
  answers beside V1; no V2 inference). These three want no API key.
- ``GET /metrics``: Prometheus text.

The routes parse and check; the work is the ``Scheduler``'s. Errors are ``{"error": "..."}``
with 400 (bad input), 401 (``api_key`` and no matching ``Authorization: Bearer``), 404 (unknown
model or path), 405 (a path asked with the wrong method; ``Allow`` names the right one), 413
(over the limits), 422 (a detector or segmenter found nothing to explain on the image), 500
(the model raised, or a detector answered with the wrong structure; the server keeps serving)
and 503 (with ``Retry-After``: the queue cannot meet the request's deadline, or too many in
flight; or a model not ready).
"""



import asyncio
import base64
import dataclasses
import hmac
import io
import json
import time

from limefast import config
from limefast.core.checks import first_line
from limefast.core.record import explanation_record, number
from limefast.optional import require
from limefast.serve.batching import Cancelled
from limefast.serve.detect import DetectOptions, NothingToExplain, check_image, prediction_json
from limefast.serve.inputs import Limits, RequestError, decode_file, decode_instance
from limefast.serve.metrics import Metrics
from limefast.serve.options import ExplainOptions
from limefast.serve.scheduler import ModelError, Overloaded, Scheduler

# Seconds between two looks at whether a waiting client is still connected.
DISCONNECT_POLL = 0.05
# What may follow ``/v1/models/{name}:`` (KServe's V1 data plane).
VERBS = ("predict", "explain")


@dataclasses.dataclass
class ServedModel:
    """A model the server answers for: its scheduler and how explanations name it."""

    name: str
    scheduler: Scheduler
    spec: str = ""
    weights: str = "given"
    label_name: object = None
    defaults: dict = dataclasses.field(default_factory=dict)  # explain options of the command
    coverage: float = 0.05
    task: str = "classification"  # or "detection", "segmentation" (a DetectionScheduler)
    loaded: object = None  # a detector's LoadedDetector: its class names, weights and side

    def name_of(self, label: int) -> str:
        return self.label_name(label) if self.label_name else f"class {label}"


def create_app(models: list[ServedModel], limits: Limits | None = None, api_key: str | None = None):
    """The FastAPI app serving ``models``.

    Args:
        models: the served models; their ``name`` is the ``{name}`` of the routes.
        limits: what one request may hold.
        api_key: when given, every route but the OpenAPI docs wants
            ``Authorization: Bearer <api_key>``.
    """
    fastapi = require("fastapi", "limefast serve")
    limits = limits or Limits()
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    by_name = {m.name: m for m in models}
    metrics = Metrics(by_name)
    app = fastapi.FastAPI(title="limefast serve", version="1",
                          description="LIME and KernelSHAP explanations (and D-RISE, for "
                                      "detectors and segmenters) over KServe's V1 data plane, "
                                      "batched across requests.")
    app.state.metrics, app.state.models = metrics, by_name
    app.add_middleware(_Guard, api_key=api_key, metrics=metrics, models=by_name)

    def error(status: int, message: str, headers=None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def routing_error(request, exc: HTTPException):
        """Starlette's own 404 (no route) and 405 (wrong method), in the server's shape."""
        return error(exc.status_code, *_routing_error(app, request, exc))

    @app.get("/")
    async def live():
        """Liveness: KServe's V1 ``is_server_live`` wants ``{"status": "alive"}``."""
        return {"status": "alive"}

    @app.get("/v2/health/live")
    async def live_v2():
        """Liveness as KServe's model server also answers it (``{"live": true}``)."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready_v2():
        """Readiness of the server: every model ready (``{"ready": true}``), else 503."""
        closed = [name for name, m in by_name.items() if m.scheduler.closed]
        if closed:
            return error(503, f"not ready: model(s) {closed} are shutting down")
        return {"ready": True}

    @app.get("/v1/models")
    async def list_models():
        return {"models": list(by_name)}

    @app.get("/v1/models/{name}")
    async def model_ready(name: str):
        """Readiness of a model: ``{"name", "ready": true}``, 503 when it is not (KServe's
        ``ModelNotReady``; its V1 client's ``is_model_ready`` reads a 503 as not ready)."""
        if name not in by_name and ":" in name and name.rpartition(":")[2] in VERBS:
            raise HTTPException(405)  # GET /v1/models/{name}:explain: the verbs want POST
        if name not in by_name:
            return error(404, f"unknown model {name!r}; served: {sorted(by_name)}")
        if by_name[name].scheduler.closed:
            return error(503, f"model {name!r} is not ready: the server is shutting down")
        return {"name": name, "ready": True}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: fastapi.Request):
        try:
            model = _model(by_name, name)
            instances, _ = await _read(request, limits)
            scheduler = model.scheduler
            if model.task != "classification":
                _check_images(model, instances, None)
            outputs = await asyncio.to_thread(scheduler.predict, instances)
        except RequestError as exc:
            return error(exc.status, str(exc))
        except ModelError as exc:
            return error(500, str(exc))
        if model.task != "classification":  # a segmenter's masks: not on the event loop
            return await asyncio.to_thread(
                lambda: {"predictions": [prediction_json(model.task, out, model.name_of)
                                         for out in outputs]})
        return {"predictions": [[float(v) for v in out] for out in outputs]}

    @app.post("/v1/models/{name}:explain")
    async def explain(name: str, request: fastapi.Request):
        arrival = time.perf_counter()
        jobs = []
        try:
            model = _model(by_name, name)
            payload, parameters = await _read(request, limits, decode=False)
            render = parameters.pop("render", False)
            if not isinstance(render, bool) and render not in ("true", "false", "1", "0"):
                raise RequestError(400, f"render must be true or false; got {render!r}")
            render = render in (True, "true", "1")
            options, rows = _options(model, parameters)
            if rows > limits.max_samples:
                raise RequestError(413, f"{rows} samples, over the server's limit of "
                                        f"{limits.max_samples} per explanation (--max-samples-"
                                        "per-request)")
            # admitted (or refused) before the images are decoded: a 503 costs no decoding
            admissions = []
            try:
                for _ in payload:
                    admissions.append(model.scheduler.admit(options, arrival))
                instances = await _decode(payload, limits)
                if model.task != "classification":
                    _check_images(model, instances, options)
            except BaseException:
                for admission in admissions:
                    admission.release()
                raise
            for k, (image, admission) in enumerate(zip(instances, admissions)):
                try:
                    jobs.append(model.scheduler.submit(image, options, arrival=arrival,
                                                       admission=admission))
                except BaseException:
                    for unused in admissions[k + 1:]:
                        unused.release()
                    raise
            results = await _wait(request, jobs)
            if results is None:  # the client went away; its rows were dropped
                metrics.cancelled.labels(name).inc()
                return error(499, "the client closed the connection")
            # built and encoded off the event loop, which answers the 503s meanwhile
            body = await asyncio.to_thread(_encode, model, results, render)
        except RequestError as exc:
            _cancel(jobs)
            return error(exc.status, str(exc))
        except Overloaded as exc:
            _cancel(jobs)
            metrics.rejections.labels(name).inc()
            return error(503, f"overloaded: {exc}", {"Retry-After": str(exc.retry_after)})
        except ModelError as exc:
            _cancel(jobs)
            return error(500, str(exc))
        except NothingToExplain as exc:  # well-formed, but no target on this image
            _cancel(jobs)
            return error(422, f"nothing to explain: {exc}")
        except (ValueError, TypeError) as exc:  # explain_instance's checks of the options
            _cancel(jobs)
            return error(400, f"bad request: {first_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - one line, and the server keeps serving
            _cancel(jobs)
            return error(500, f"{type(exc).__name__}: {first_line(exc)}")
        return Response(body, media_type="application/json")

    return app


class _Guard:
    """Pure ASGI middleware: the API key, and the latency and status of every response.

    (Starlette's ``BaseHTTPMiddleware`` would wrap ``receive`` and hide a client's disconnect
    from the route, which needs it to cancel the explanation.)
    """

    # The OpenAPI docs and the server's health, which say nothing about the models (probes
    # rarely carry credentials).
    OPEN = ("/docs", "/openapi.json", "/docs/oauth2-redirect", "/", "/v2/health/live",
            "/v2/health/ready")

    def __init__(self, app, api_key, metrics: Metrics, models: dict):
        self.app, self.metrics, self.models = app, metrics, models
        self.expected = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        if self.expected is not None and path not in self.OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": "missing or wrong API key: send "
                                            "'Authorization: Bearer <key>'"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                self.metrics.responses.labels("401").inc()
                return
        status = [0]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        self.metrics.responses.labels(str(status[0])).inc()
        if path.startswith("/v1/models/") and scope["method"] == "POST":
            name, _, verb = path[len("/v1/models/"):].rpartition(":")
            if name in self.models and verb in VERBS:  # labels a client cannot multiply
                self.metrics.latency.labels(name, verb, str(status[0])).observe(
                    time.perf_counter() - t0)


def _routing_error(app, request, exc) -> tuple[str, dict | None]:
    """One line and the headers for a 404 or 405 of the router: what came in and what the
    server answers."""
    from fastapi.routing import APIRoute

    asked, path = f"{request.method} {request.url.path}", request.url.path
    if exc.status_code == 404:
        routes = ", ".join(f"{'/'.join(sorted(r.methods))} {r.path}" for r in app.routes
                           if isinstance(r, APIRoute))
        return f"no route {asked}; the routes are {routes}", exc.headers
    if exc.status_code == 405 and path.startswith("/v1/models/") and ":" in path[11:]:
        # the router matched GET /v1/models/{name} first, whatever came after the colon
        verb = path.rpartition(":")[2]
        if verb in VERBS:
            return f"{asked} is not allowed: :{verb} wants POST", {"Allow": "POST"}
        return (f"unknown verb :{verb} in {asked}; POST /v1/models/{{name}}:predict or "
                ":explain", exc.headers)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{asked} is not allowed; this path answers {allowed}", exc.headers
    return f"{asked}: {exc.detail}", exc.headers


def _options(model: ServedModel, parameters: dict):
    """The request's options for the model's task, and the most rows they may draw."""
    try:
        if model.task != "classification":
            options = DetectOptions.parse(parameters, model.defaults, model.task)
            return options, options.rows
        options = ExplainOptions.parse(parameters, model.defaults)
    except ValueError as exc:
        raise RequestError(400, f"bad parameter: {exc}") from None
    rows = ((options.max_samples or config.AUTO_MAX_SAMPLES)
            if options.num_samples == "auto" else options.num_samples)
    return options, rows


def _check_images(model: ServedModel, images: list, options) -> None:
    """A detector's (segmenter's) images: the side it takes, the request's target boxes."""
    side = getattr(model.loaded, "size", None)
    for i, image in enumerate(images):
        check_image(image, options, side, model.spec or model.name, f"instances[{i}]")


def _model(by_name: dict, name: str) -> ServedModel:
    if name not in by_name:
        raise RequestError(404, f"unknown model {name!r}; served: {sorted(by_name)}")
    return by_name[name]


async def _read(request, limits: Limits, decode: bool = True):
    """The request's images (or, with ``decode=False``, what ``_decode`` takes) and its
    parameters: JSON ``{"instances", "parameters"}``, or a raw image body with the parameters
    in the query string."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestError(413, f"the body is {declared} bytes, over the server's limit of "
                                f"{limits.max_body_bytes} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise RequestError(413, f"the body is over the server's limit of "
                                    f"{limits.max_body_bytes} bytes (--max-body-bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        if not body:
            raise RequestError(400, "the body is empty: send an image file")
        payload = [body]
        return (await _decode(payload, limits) if decode else payload), dict(request.query_params)
    try:
        payload = await asyncio.to_thread(json.loads, body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({first_line(exc)}); send "
                                '{"instances": [...]} or an image with Content-Type '
                                "image/*") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise RequestError(400, 'the body must be a JSON object {"instances": [...], '
                                '"parameters": {...}}')
    instances, parameters = payload["instances"], payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, f"parameters must be an object; got {type(parameters).__name__}")
    if not instances:
        raise RequestError(400, "instances is empty: send at least one image")
    if len(instances) > limits.max_instances:
        raise RequestError(413, f"{len(instances)} instances, over the server's limit of "
                                f"{limits.max_instances} per request (--max-instances)")
    return (await _decode(instances, limits) if decode else instances), dict(parameters)


async def _decode(instances: list, limits: Limits) -> list:
    """Images from instances (bytes of a raw body, or JSON instances), in a worker thread."""
    def decode():
        return [decode_file(x, limits) if isinstance(x, bytes)
                else decode_instance(x, limits, f"instances[{i}]")
                for i, x in enumerate(instances)]
    return await asyncio.to_thread(decode)


async def _wait(request, jobs):
    """The jobs' results, or None when the client disconnects first (the jobs cancelled)."""
    futures = [asyncio.wrap_future(job.future) for job in jobs]
    pending = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, timeout=DISCONNECT_POLL)
            for future in done:  # one image failed: the request fails, the rest is dropped
                if future.exception() is not None:
                    _cancel(jobs)
                    raise future.exception()
            if pending and await request.is_disconnected():
                _cancel(jobs)
                return None
        return [f.result() for f in futures]
    except Cancelled:
        return None


def _cancel(jobs) -> None:
    for job in jobs:
        job.cancel()


def _record(model: ServedModel, result, render: bool) -> dict:
    exp, options = result.explanation, result.options
    return explanation_record(
        exp, result.probabilities, method=options.method, image=None, model=model.spec,
        weights=model.weights, segmentation=options.segmentation, seed=options.seed,
        seconds=result.seconds, label_name=model.name_of,
        png=(lambda label: _png(exp.render(label, coverage=model.coverage))) if render
        else (lambda label: None))


def _target_record(model: ServedModel, result, render: bool) -> dict:
    """A detector's (segmenter's) explanation: the record ``limefast explain --task`` writes,
    one entry per target under ``labels``."""
    from types import SimpleNamespace

    from limefast.cli.detect import target_record

    exp, options = result.explanation, result.options
    loaded = model.loaded or SimpleNamespace(label_name=model.name_of, weights=model.weights)
    record = target_record(exp, loaded, image=None, model=model.spec, seed=options.seed,
                           seconds=result.seconds)
    record["segmentation"] = None if exp.method == "drise" else options.segmentation
    for i, entry in record["labels"].items():
        picture = None
        if render:
            picture = (exp.render(int(i)) if exp.method == "drise"
                       else exp.render(int(i), coverage=model.coverage))
        entry["png"] = None if picture is None else _png(picture)
    return record


def _encode(model: ServedModel, results, render: bool) -> bytes:
    """The answer to an :explain request, as JSON bytes."""
    if model.task != "classification":
        body = {"predictions": [prediction_json(model.task, r.prediction, model.name_of)
                                for r in results],
                "explanations": [_target_record(model, r, render) for r in results]}
        return json.dumps(body, allow_nan=False).encode()
    body = {"predictions": [[number(v) for v in r.probabilities] for r in results],
            "explanations": [_record(model, r, render) for r in results]}
    return json.dumps(body, allow_nan=False).encode()


def _png(image) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
