"""``limefast serve``: the scheduler in-process, then the real server on 127.0.0.1 over HTTP.

The server runs as a subprocess (``python -m limefast.cli serve``, from the repository root so
this checkout's source is what runs), with four models: ``grid`` (each row's output depends on
that row alone, bit for bit: answers compare exactly), ``picky`` (raises on a black image),
``slow`` (25 ms a call, whatever the batch) and ``tiny`` (a small torch CNN: the float32
contract of ``tests/agreement.py``). Every load is bounded in count and time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

try:
    import httpx
except ImportError:  # the server tests skip (pytest.importorskip in the fixture)
    httpx = None

from limefast.benchsuite.inputs import photo
from limefast.lime_image import LimeImageExplainer
from limefast.segmentation import SEGMENTATIONS
from limefast.serve import Cancelled, ExplainOptions, ModelError, Overloaded, Scheduler
from limefast.wrappers.scikit_image import SegmentationAlgorithm
from tests import serve_models
from tests.agreement import assert_label_agreement, assert_same_explanation, forward_rtol

ROOT = Path(__file__).resolve().parent.parent
SIDE = 96
KEY = "test-key-123"


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    base = photo(SIDE).astype(np.int16)
    return np.clip(base + rng.randint(-20, 21, base.shape), 0, 255).astype(np.uint8)


# -- the scheduler, in-process ------------------------------------------------------------------

def _reference(image, seed, num_samples, classifier):
    segmentation = SegmentationAlgorithm("quickshift", **SEGMENTATIONS["quickshift"])
    return LimeImageExplainer(random_state=seed).explain_instance(
        image, classifier, num_samples=num_samples, batch_size=50, top_labels=5,
        segmentation_fn=segmentation, progress_bar=False)


def test_scheduler_matches_explain_instance_and_merges():
    model = serve_models.grid()
    sizes = []
    scheduler = Scheduler(model, max_wait=0.02, batch_size=50,
                          on_batch=lambda n, requests, s: sizes.append((n, requests)))
    try:
        images = [_image(i) for i in range(6)]
        jobs = [scheduler.submit(img, ExplainOptions(num_samples=300, seed=10 + i))
                for i, img in enumerate(images)]
        concurrent = [job.result(timeout=60) for job in jobs]
        for i, (img, result) in enumerate(zip(images, concurrent)):
            ref = _reference(img, 10 + i, 300, model)
            assert_same_explanation(ref, result.explanation)
            np.testing.assert_allclose(result.probabilities, model(img[None])[0], rtol=1e-12)
        # the requests shared model calls: some call held several requests' images
        assert max(r for _, r in sizes) > 1 and max(n for n, _ in sizes) > 50
        assert scheduler.queue.queued_images == 0 and scheduler.inflight == 0
    finally:
        scheduler.close()


def test_scheduler_takes_gray_images_as_explain_instance_does():
    from limefast.benchsuite.inputs import bundled

    model = serve_models.grid()
    scheduler = Scheduler(model, batch_size=50)
    try:
        gray = bundled("camera", 64)
        result = scheduler.explain(gray, ExplainOptions(num_samples=100, seed=2))
        assert_same_explanation(_reference(gray, 2, 100, model), result.explanation)
        assert result.probabilities.shape == (6,)
    finally:
        scheduler.close()


def test_scheduler_dedupe_is_explain_instance_s():
    model = serve_models.grid()
    scheduler = Scheduler(model, batch_size=50, dedupe=True)
    try:
        image = photo(64)
        result = scheduler.explain(image, ExplainOptions(num_samples=300, seed=2))
        segmentation = SegmentationAlgorithm("quickshift", **SEGMENTATIONS["quickshift"])
        ref = LimeImageExplainer(random_state=2).explain_instance(
            image, model, num_samples=300, batch_size=50, segmentation_fn=segmentation,
            progress_bar=False, dedupe=True)
        assert_same_explanation(ref, result.explanation)
        assert result.explanation.num_evaluated == ref.num_evaluated < 300
    finally:
        scheduler.close()


def test_scheduler_failure_is_the_failing_request_only():
    model = serve_models.picky()
    scheduler = Scheduler(model, max_wait=0.05, batch_size=50)
    try:
        good = _image(1)
        black = np.zeros_like(good)
        jobs = [scheduler.submit(black, ExplainOptions(num_samples=100)),
                scheduler.submit(good, ExplainOptions(num_samples=100, seed=4))]
        with pytest.raises(ModelError, match="cannot see in the dark"):
            jobs[0].result(timeout=30)
        assert_same_explanation(_reference(good, 4, 100, model), jobs[1].result(30).explanation)
    finally:
        scheduler.close()


def test_scheduler_cancel_drops_queued_rows():
    model = serve_models.fixed_cost(0.05)
    calls = []
    scheduler = Scheduler(model, batch_size=20, max_batch_size=20,
                          on_batch=lambda n, r, s: calls.append(n))
    try:
        job = scheduler.submit(_image(2), ExplainOptions(num_samples=3000))
        time.sleep(0.3)
        job.cancel()
        with pytest.raises(Cancelled):
            job.result(timeout=5)
        seen = len(calls)
        time.sleep(0.3)
        assert len(calls) <= seen + 1 and seen < 3000 // 20
        assert scheduler.queue.queued_images == 0 and scheduler.inflight == 0
    finally:
        scheduler.close()


def test_scheduler_refuses_past_max_inflight():
    scheduler = Scheduler(serve_models.fixed_cost(0.05), max_inflight=1, batch_size=50)
    try:
        job = scheduler.submit(_image(3), ExplainOptions(num_samples=200))
        with pytest.raises(Overloaded) as info:
            scheduler.submit(_image(3), ExplainOptions(num_samples=200))
        assert info.value.retry_after >= 1
        job.result(timeout=30)
        scheduler.submit(_image(3), ExplainOptions(num_samples=50)).result(timeout=30)
    finally:
        scheduler.close()


def test_a_request_of_several_images_refused_in_part_holds_no_place():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from limefast.serve.app import ServedModel, create_app

    scheduler = Scheduler(serve_models.grid(), max_inflight=2)
    try:
        app = create_app([ServedModel("grid", scheduler)])
        with TestClient(app) as client:
            image = _image(1)[:32, :32].tolist()
            response = client.post("/v1/models/grid:explain",
                                   json={"instances": [image] * 3,
                                         "parameters": {"num_samples": 20}})
            assert response.status_code == 503 and response.headers["Retry-After"]
            assert scheduler.inflight == 0
            response = client.post("/v1/models/grid:explain",
                                   json={"instances": [image] * 2,
                                         "parameters": {"num_samples": 20}})
            assert response.status_code == 200, response.text
            assert len(response.json()["explanations"]) == 2
    finally:
        scheduler.close()


def test_scheduler_refuses_a_budget_the_queue_cannot_meet():
    """200 ms a model call: with one explanation in flight, a second one cannot get its first
    64 images (two calls at least) through the model in 0.3 s; without a budget it is taken."""
    scheduler = Scheduler(serve_models.fixed_cost(0.2), batch_size=50, min_rows=64)
    try:
        scheduler.explain(_image(4), ExplainOptions(num_samples=50))  # the model's cost
        job = scheduler.submit(_image(4), ExplainOptions(num_samples=400))
        with pytest.raises(Overloaded, match="cannot meet time_budget") as info:
            scheduler.submit(_image(4), ExplainOptions(time_budget=0.3, num_samples="auto"))
        assert info.value.retry_after >= 1
        other = scheduler.submit(_image(4), ExplainOptions(num_samples=50))
        other.result(timeout=30)
        job.cancel()
    finally:
        scheduler.close()


@pytest.mark.parametrize("values, message", [
    ({"num_samples": "lots"}, "num_samples"),
    ({"time_budget": -1}, "time_budget"),
    ({"time_budget": "soon"}, "time_budget"),
    ({"method": "shap"}, "method"),
    ({"segmentation": "watershed"}, "segmentation"),
    ({"top_labels": 0}, "top_labels"),
    ({"labels": []}, "labels"),
    ({"max_samples": 100}, "max_samples"),
    ({"colour": 1}, "unknown parameter"),
])
def test_options_refuse_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        ExplainOptions.parse(values)


def test_answers_have_no_nan():
    """A record (what serve answers and explain writes) is valid JSON even where the fit has
    nan standard errors (too few coalitions) and the model an infinite output."""
    import json
    import warnings

    from limefast.core.record import explanation_record
    from limefast.kernelshap import KernelShapImageExplainer

    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200
    segments = (np.arange(8)[None, :] >= 4).repeat(8, 0).astype(int) \
        + 2 * (np.arange(8)[:, None] >= 4)

    def model(batch):
        bright = batch.reshape(len(batch), -1).mean(1, keepdims=True) / 255.0
        return np.hstack([bright, 1 - bright])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = KernelShapImageExplainer(random_state=0).explain_instance(
            image, model, num_samples=2, top_labels=2, segmentation_fn=lambda _: segments,
            progress_bar=False)
    assert any(np.isnan(v) for v in exp.stderr[0].values())
    record = explanation_record(exp, np.array([np.inf, 0.5]), method="kernelshap", image=None,
                                model="m", weights="random", segmentation="grid", seed=0,
                                seconds=0.1)
    text = json.dumps(record, allow_nan=False)  # raises on nan or infinity
    label = record["labels"]["0"]
    assert label["probability"] is None and None in [se for _, se in label["stderr"]]
    assert "NaN" not in text


# -- the routes, in-process ---------------------------------------------------------------------

def _app_client(api_key: str | None = KEY):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from limefast.serve.app import ServedModel, create_app

    scheduler = Scheduler(serve_models.grid())
    app = create_app([ServedModel("grid", scheduler)], api_key=api_key)
    return TestClient(app, headers={"Authorization": f"Bearer {KEY}"}), scheduler


ROUTING = [  # method, path, status, Allow, what the error says
    ("GET", "/nope", 404, None, "no route GET /nope; the routes are GET /, "),
    ("POST", "/v2/models/grid/infer", 404, None, "POST /v1/models/{name}:explain"),
    ("POST", "/", 405, "GET", "POST / is not allowed; this path answers GET"),
    ("DELETE", "/v1/models", 405, "GET", "DELETE /v1/models is not allowed"),
    ("POST", "/v1/models/grid", 405, "GET", "POST /v1/models/grid is not allowed"),
    ("GET", "/v1/models/grid:explain", 405, "POST", ":explain wants POST"),
    ("GET", "/v1/models/other:predict", 405, "POST", ":predict wants POST"),
    ("PUT", "/v1/models/grid:predict", 405, "POST", ":predict wants POST"),
    ("POST", "/v1/models/grid:explane", 405, "GET", "unknown verb :explane"),
    ("GET", "/v1/models/nope", 404, None, "unknown model 'nope'; served: ['grid']"),
    ("POST", "/metrics", 405, "GET", "POST /metrics is not allowed"),
]


@pytest.mark.parametrize("method, path, status, allow, message", ROUTING,
                         ids=[f"{r[0]} {r[1]}" for r in ROUTING])
def test_routing_errors_are_the_error_shape(method, path, status, allow, message):
    client, scheduler = _app_client()
    try:
        response = client.request(method, path)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert list(response.json()) == ["error"] and message in response.json()["error"]
        assert "\n" not in response.json()["error"]
        assert response.headers.get("allow") == allow
    finally:
        scheduler.close()


def test_health_routes_are_open_and_readiness_follows_the_scheduler():
    client, scheduler = _app_client()
    bare = {"Authorization": ""}
    try:
        assert client.get("/", headers=bare).json() == {"status": "alive"}
        assert client.get("/v2/health/live", headers=bare).json() == {"live": True}
        assert client.get("/v2/health/ready", headers=bare).json() == {"ready": True}
        for path in ("/v1/models", "/v1/models/grid", "/nope"):  # the rest wants the key
            assert client.get(path, headers=bare).status_code == 401
        assert client.get("/v1/models/grid").json() == {"name": "grid", "ready": True}
        scheduler.close()
        response = client.get("/v1/models/grid")  # KServe's ModelNotReady: 503
        assert response.status_code == 503 and "not ready" in response.json()["error"]
        response = client.get("/v2/health/ready")
        assert response.status_code == 503 and "['grid']" in response.json()["error"]
        assert client.get("/").json() == {"status": "alive"}  # alive, not ready
    finally:
        scheduler.close()


def _serve_imports(module: Path) -> set[str]:
    """The ``limefast.serve`` modules ``module`` imports, at its top or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    package = ROOT / "limefast" / "serve"
    return {name.rsplit(".", 1)[1] for name in found if name.startswith("limefast.serve.")
            and (package / f"{name.rsplit('.', 1)[1]}.py").exists()}


def test_serve_modules_import_one_another_without_a_cycle():
    graph = {path.stem: _serve_imports(path) - {path.stem}
             for path in (ROOT / "limefast" / "serve").glob("*.py") if path.stem != "__init__"}
    assert "command" not in graph["on_ray"] and "builder" in graph["on_ray"]
    done, visiting = set(), []

    def visit(module):
        if module in visiting:
            pytest.fail(f"import cycle in limefast/serve: {' -> '.join(visiting + [module])}")
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


# -- the real server ----------------------------------------------------------------------------

MODELS = ("grid", "picky", "slow", "tiny")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for module in ("httpx", "fastapi", "uvicorn", "prometheus_client", "torch"):
        pytest.importorskip(module)
    folder = tmp_path_factory.mktemp("serve")
    (folder / "key").write_text(KEY + "\n")
    port = _free_port()
    command = [sys.executable, "-m", "limefast.cli", "serve", "--port", str(port),
               "--size", str(SIDE), "--api-key-file", str(folder / "key"),
               "--max-body-bytes", str(2 << 20), "--max-image-pixels", str(1 << 20),
               "--max-inflight", "12", "--seed", "0"]
    for name in MODELS:
        command += ["--model", f"tests/serve_models.py:{name}", "--name", name]
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {(folder / 'server.log').read_text()}")
            try:
                if client.get("/v1/models/tiny").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not get ready in 90 s")
            time.sleep(0.2)
        yield client, proc, folder
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(image: np.ndarray) -> dict:
    return {"b64": base64.b64encode(_png(image)).decode()}


def _explain(client, model, instances, **parameters):
    return client.post(f"/v1/models/{model}:explain",
                       json={"instances": instances, "parameters": parameters})


def _strip(record: dict) -> dict:
    """A record without what differs between a file and a request: the image's path, the PNG
    names and the timing."""
    out = {k: v for k, v in record.items() if k not in ("image", "seconds", "labels")}
    out["labels"] = {k: {f: v for f, v in entry.items() if f != "png"}
                     for k, entry in record["labels"].items()}
    return out


def test_models_and_readiness(server):
    client, _, _ = server
    assert client.get("/v1/models").json() == {"models": list(MODELS)}
    assert client.get("/v1/models/grid").json() == {"name": "grid", "ready": True}
    response = client.get("/v1/models/nope")
    assert response.status_code == 404 and "unknown model" in response.json()["error"]
    assert client.get("/docs").status_code == 200


def test_served_explanation_is_explain_json(server, tmp_path):
    client, _, _ = server
    image = _image(5)
    path = tmp_path / "cat.png"
    path.write_bytes(_png(image))
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "limefast.cli", "explain", str(path), "--size", str(SIDE),
           "--num-samples", "300", "--seed", "7", "--top-labels", "3", "--out", str(out),
           "--model", "tests/serve_models.py:grid", "--model", "tests/serve_models.py:tiny"]
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("explanation.json")}
    for name, tag in (("grid", "tests-serve_models.py-grid"),
                      ("tiny", "tests-serve_models.py-tiny")):
        response = _explain(client, name, [_b64(image)], num_samples=300, seed=7, top_labels=3)
        assert response.status_code == 200, response.text
        served, written = response.json()["explanations"][0], files[tag]
        assert set(served) == set(written)
        if name == "grid":  # the same rows, row-independent float64 outputs: exact
            assert _strip(served) == _strip(written)
            continue
        # float32 forwards in other batches: the contract of tests/agreement.py
        assert served["top_labels"] == written["top_labels"]
        model = serve_models.tiny()
        rtol = forward_rtol(model, logits=10.0)
        for label, entry in written["labels"].items():
            ours = served["labels"][label]
            assert_label_agreement(
                dict(map(tuple, entry["weights"])), dict(map(tuple, ours["weights"])),
                (entry["intercept"], entry["local_pred"][0]),
                (ours["intercept"], ours["local_pred"][0]), rtol, what=f"label {label}")
            assert abs(ours["probability"] - entry["probability"]) <= 1e-5


def test_served_kernelshap_is_the_explainer_s(server):
    from limefast.core.record import explanation_record
    from limefast.kernelshap import KernelShapImageExplainer

    client, _, _ = server
    image = _image(7)
    response = _explain(client, "grid", [image.tolist()], method="kernelshap", num_samples=200,
                        seed=4, top_labels=2)
    assert response.status_code == 200, response.text
    model = serve_models.grid()
    segmentation = SegmentationAlgorithm("quickshift", **SEGMENTATIONS["quickshift"])
    exp = KernelShapImageExplainer(random_state=4).explain_instance(
        image, model, num_samples=200, batch_size=50, top_labels=2,
        segmentation_fn=segmentation, progress_bar=False)
    record = explanation_record(exp, model(image[None])[0], method="kernelshap", image=None,
                                model="tests/serve_models.py:grid", weights="given by the "
                                "factory", segmentation="quickshift", seed=4, seconds=0.0)
    served = response.json()["explanations"][0]
    assert "base_value" in next(iter(served["labels"].values()))
    assert _strip(served) == _strip(json.loads(json.dumps(record)))


def test_raw_body_and_pixel_lists_give_the_same_answer(server):
    client, _, _ = server
    image = _image(6)
    via_b64 = _explain(client, "grid", [_b64(image)], num_samples=200, seed=3).json()
    raw = client.post("/v1/models/grid:explain?num_samples=200&seed=3", content=_png(image),
                      headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    pixels = _explain(client, "grid", [image.tolist()], num_samples=200, seed=3)
    assert pixels.status_code == 200, pixels.text
    for other in (raw.json(), pixels.json()):
        assert _strip(other["explanations"][0]) == _strip(via_b64["explanations"][0])
        assert other["predictions"] == via_b64["predictions"]
    predicted = client.post("/v1/models/grid:predict", json={"instances": [image.tolist()]})
    assert predicted.json()["predictions"] == via_b64["predictions"]


def test_labels_asked_for_are_the_ones_explained(server):
    """``labels`` without ``top_labels``: those labels are explained, as lime's
    ``explain_instance(labels=..., top_labels=None)`` does, and the record says so."""
    client, _, _ = server
    answer = _explain(client, "grid", [_b64(_image(7))], labels=[1, 3], num_samples=100, seed=2)
    assert answer.status_code == 200, answer.text
    record = answer.json()["explanations"][0]
    assert sorted(record["labels"]) == ["1", "3"] and record["top_labels"] is None
    assert all(entry["weights"] for entry in record["labels"].values())


def test_concurrent_answers_are_the_sequential_answers(server):
    client, _, _ = server
    requests = [(_image(10 + i), {"num_samples": 200, "seed": i}) for i in range(6)]
    requests.append((_image(20), {"num_samples": "auto", "max_samples": 600, "seed": 1}))
    sequential = [_explain(client, "grid", [_b64(img)], **p).json() for img, p in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(lambda r: _explain(client, "grid", [_b64(r[0])], **r[1]),
                                   requests))
    for one, many in zip(sequential, concurrent):
        assert many.status_code == 200, many.text
        assert _strip(many.json()["explanations"][0]) == _strip(one["explanations"][0])


def _bomb() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (4000, 4000)).save(buffer, format="PNG")  # 16 M pixels in a few KiB
    return buffer.getvalue()


BAD = [
    ("malformed JSON", dict(content=b"{not json", headers={"Content-Type": "application/json"}),
     400, "not valid JSON"),
    ("no instances", dict(json={"parameters": {}}), 400, "instances"),
    ("not base64", dict(json={"instances": [{"b64": "%%%"}]}), 400, "base64"),
    ("base64 of text", dict(json={"instances": [{"b64": base64.b64encode(b"hello").decode()}]}),
     400, "not an image"),
    ("negative budget", dict(json={"instances": [[[0, 0, 0]] * 4] * 4,
                                   "parameters": {"time_budget": -1}}), 400, "time_budget"),
    ("lots of samples", dict(json={"instances": [[[0, 0, 0]] * 4] * 4,
                                   "parameters": {"num_samples": "lots"}}), 400, "num_samples"),
    ("four channels", dict(json={"instances": [[[[1, 2, 3, 4]] * 8] * 8]}), 400, "3-channel"),
    ("ragged pixels", dict(json={"instances": [[[1, 2, 3], [1, 2]]]}), 400, "ragged"),
    ("pixels over 255", dict(json={"instances": [[[300] * 8] * 8]}), 400, "0..255"),
    ("label out of range", dict(json={"instances": [[[9] * 8] * 8],
                                      "parameters": {"labels": [99], "num_samples": 20}}),
     400, "99"),
    ("too many samples", dict(json={"instances": [[[9] * 8] * 8],
                                    "parameters": {"num_samples": 10 ** 9}}), 413, "limit"),
    ("body too large", dict(content=b"x" * (3 << 20), headers={"Content-Type": "image/png"}),
     413, "limit"),
    ("decompression bomb", dict(content=_bomb(), headers={"Content-Type": "image/png"}),
     413, "4000x4000"),
]


@pytest.mark.parametrize("what, request_kwargs, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_error(server, what, request_kwargs, status, message):
    client, proc, _ = server
    response = client.post("/v1/models/grid:explain", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert proc.poll() is None


def test_unknown_model_and_api_key(server):
    client, _, _ = server
    response = _explain(client, "nope", [_b64(_image())])
    assert response.status_code == 404 and "nope" in response.json()["error"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        url = str(client.base_url).rstrip("/") + "/v1/models/grid:explain"
        response = httpx.post(url, headers=headers, json={"instances": [_b64(_image())]})
        assert response.status_code == 401 and "API key" in response.json()["error"]


def test_kserve_v1_client_requests_by_hand(server):
    """What KServe's V1 ``InferenceRESTClient`` sends and reads, with plain HTTP (the SDK itself
    drives the server in ``test_kserve_sdk_client``)."""
    client, _, _ = server
    base = str(client.base_url).rstrip("/")
    live = httpx.get(base + "/")  # is_server_live: GET {base_url}, no key
    assert live.status_code == 200 and live.json()["status"].lower() == "alive"
    assert httpx.get(base + "/v2/health/ready").json() == {"ready": True}
    assert client.get("/v1/models/grid").json()["ready"] is True  # is_model_ready
    instances = [np.asarray(_image(4)[:24, :24]).tolist()]
    predicted = client.post("/v1/models/grid:predict", json={"instances": instances})
    assert predicted.status_code == 200
    np.testing.assert_allclose(predicted.json()["predictions"][0],
                               serve_models.grid()(_image(4)[None, :24, :24])[0], rtol=1e-12)
    unknown = client.get("/v1/model")
    assert unknown.status_code == 404 and unknown.json()["error"].startswith("no route GET")
    wrong = client.get("/v1/models/grid:explain")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_kserve_sdk_client(server):
    """KServe's own Python SDK (``kserve.InferenceRESTClient``, protocol v1) against the real
    server: liveness, model readiness, infer (``:predict``), explain, and the errors it raises.
    ``kserve`` pins pandas<3, protobuf<7 and psutil<6, so it is not in the ``test`` extra: run
    this in an environment that has it (docs/serve.md says how)."""
    kserve = pytest.importorskip("kserve")
    import asyncio

    client, _, _ = server
    base = str(client.base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {KEY}"}
    image = _image(6)
    expected = _explain(client, "grid", [_b64(image)], num_samples=80, seed=5).json()
    instances = [np.asarray(image[:32, :32]).tolist()]

    async def drive():
        v1 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", timeout=60))
        v2 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60))
        try:
            assert await v1.is_server_live(base) is True
            assert await v2.is_server_live(base) is True  # GET /v2/health/live
            assert await v2.is_server_ready(base) is True  # GET /v2/health/ready
            assert await v1.is_model_ready(base, "grid", headers=headers) is True
            with pytest.raises(httpx.HTTPStatusError, match="unknown model 'nope'"):
                await v1.is_model_ready(base, "nope", headers=headers)
            predicted = await v1.infer(base, {"instances": instances}, model_name="grid",
                                       headers=headers)
            explained = await v1.explain(base, "grid", {
                "instances": [_b64(image)], "parameters": {"num_samples": 80, "seed": 5}},
                headers=headers)
            with pytest.raises(httpx.HTTPStatusError, match="bad parameter"):
                await v1.explain(base, "grid", {"instances": [_b64(image)],
                                                "parameters": {"num_samples": "lots"}},
                                 headers=headers)
            with pytest.raises(httpx.HTTPStatusError, match="API key"):
                await v1.explain(base, "grid", {"instances": [_b64(image)]})
            return predicted, explained
        finally:
            await v1.close()
            await v2.close()

    predicted, explained = asyncio.run(drive())
    np.testing.assert_allclose(predicted["predictions"][0],
                               serve_models.grid()(image[None, :32, :32])[0], rtol=1e-12)
    assert explained["predictions"] == expected["predictions"]
    assert _strip(explained["explanations"][0]) == _strip(expected["explanations"][0])


def test_model_error_is_500_and_the_server_keeps_serving(server):
    client, _, _ = server
    response = _explain(client, "picky", [np.zeros((16, 16, 3), int).tolist()], num_samples=30)
    assert response.status_code == 500
    assert "cannot see in the dark" in response.json()["error"]
    assert "\n" not in response.json()["error"]
    assert _explain(client, "picky", [_b64(_image())], num_samples=30).status_code == 200


def test_overload_answers_every_request(server):
    """Far more budgeted requests than the slow model can serve at once: each is answered,
    200 within about its budget or 503 with Retry-After at once; none times out."""
    client, _, _ = server
    budget = 0.6

    def one(i):
        t0 = time.perf_counter()
        r = _explain(client, "slow", [_b64(_image(i))], num_samples="auto",
                     time_budget=budget, seed=i)
        return r, time.perf_counter() - t0

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(48)))
    codes = [r.status_code for r, _ in answers]
    assert set(codes) <= {200, 503}, codes
    assert 200 in codes and 503 in codes, codes
    for r, seconds in answers:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert "overloaded" in r.json()["error"]
        else:  # loose: a 2-core machine shared with other work (no request hangs)
            assert seconds < 5 * budget + 1.0
            assert r.json()["explanations"][0]["stop_reason"] in (
                "time_budget", "settled", "diminishing", "max_samples")


def test_disconnect_cancels_the_explanation(server):
    client, _, _ = server
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/models/slow:explain", timeout=0.5,
                    json={"instances": [_b64(_image(3))], "parameters": {"num_samples": 5000}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if 'limefast_cancelled_total{model="slow"} 1.0' in text:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the explanation was not cancelled")
    assert 'limefast_queue_images{model="slow"} 0.0' in text


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_soak_200_requests(server):
    client, proc, _ = server
    image = _b64(_image(8))

    def one(i):
        return _explain(client, "grid", [image], num_samples=60, seed=i % 5).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(one, range(50))) == {200}
        warm = _rss(proc.pid)
        codes = list(pool.map(one, range(150)))
    grown = _rss(proc.pid) - warm
    assert codes.count(200) == 150
    assert grown < 20 << 20, f"resident memory grew {grown / 2**20:.1f} MiB over 150 requests"


def test_metrics(server):
    client, _, _ = server
    text = client.get("/metrics").text
    for name in ("limefast_request_seconds_bucket", "limefast_queue_images",
                 "limefast_batch_images_bucket", "limefast_batch_requests_bucket",
                 "limefast_rejections_total", "limefast_inflight_explanations",
                 'limefast_responses_total{code="200"}'):
        assert name in text, name


def test_serve_usage_errors():
    from limefast.cli import main

    assert main(["serve", "--model", "tests/serve_models.py:grid", "--name", "a", "--name", "b",
                 "--no-warmup"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", "x:y", "--max-batch-size", "0"])
    assert info.value.code == 2


def test_ray_serve_two_replicas(server):
    """The same app on Ray Serve (``limefast serve --ray``): two replicas on a local Ray of 2
    CPUs answer what the plain server answers."""
    pytest.importorskip("ray.serve")
    import ray
    from ray import serve

    from limefast.cli.commands import build_parser
    from limefast.serve import on_ray

    client, _, _ = server
    image = _image(9)
    expected = _explain(client, "grid", [_b64(image)], num_samples=120, seed=2).json()
    args = build_parser().parse_args([
        "serve", "--model", "tests/serve_models.py:grid", "--name", "grid", "--size", str(SIDE),
        "--ray", "--replicas", "2", "--seed", "0"])
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # the replicas import this
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(on_ray.application(args), name=on_ray.APP_NAME, route_prefix="/")
        status = serve.status().applications[on_ray.APP_NAME].deployments[on_ray.APP_NAME]
        assert status.replica_states.get("RUNNING") == 2, status
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as ray_client:
            assert ray_client.get("/v1/models").json() == {"models": ["grid"]}
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(
                    lambda _: _explain(ray_client, "grid", [_b64(image)], num_samples=120,
                                       seed=2), range(6)))
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert _strip(answer.json()["explanations"][0]) == _strip(
                expected["explanations"][0])
    finally:
        serve.shutdown()
        ray.shutdown()


def test_serve_bench_section_reports_and_checks_targets():
    from limefast.benchsuite import report, serving

    section = {
        "deadlines": [{"model": "cnn", "clients": 16, "budget": 1.0, "p50": 0.8, "p99": 1.1,
                       "server_p99": 1.0, "deadline_bound": 1.17, "ok": 60, "sent": 64,
                       "rejected_503": 4, "lost": 0, "rows_median": 100,
                       "overload": {"rate_per_second": 20.0, "ok": 80, "sent": 100,
                                    "p99": 1.3, "rejected_503": 20, "p99_503": 0.02,
                                    "lost": 1, "other": ["lost: ReadTimeout"]}}],
        "merging": [{"model": "x:fixed_cost", "num_samples": 1000, "clients": 8,
                     "merged": {"per_second": 4.0}, "not_merged": {"per_second": 1.0},
                     "speedup": 4.0}],
        "against_lime": {"num_samples": 1000, "clients": 8, "limefast": {"per_second": 2.0},
                         "lime_per_request": {"per_second": 0.5}, "speedup": 4.0}}
    text = "\n".join(serving.markdown(section))
    assert "p99 1.100 s" in text and "4.00x" in text and "1 lost" in text
    checks = {name: ok for name, _, ok in report.targets(
        {"serve": section, "targets": json.loads(
            (ROOT / "benchmarks" / "targets.json").read_text())["targets"]})}
    assert len(checks) == 6
    assert checks["served p99 <= 1.15x time_budget + 20 ms (cnn, 16 clients)"]
    assert not checks["overload: 0 requests lost (cnn)"]
    assert not checks["overload: served p99 <= 1.15x time_budget + 20 ms (cnn)"]
    assert checks["batching across requests >= 3x (fixed cost per call)"]
    assert not checks["limefast serve >= 10x lime per request in-process"]
