"""The ``serve`` section of ``limefast bench``: ``limefast serve`` under load, over HTTP.

Each part starts a real server (``python -m limefast.cli serve``) on 127.0.0.1 in a subprocess
and drives it with a load generator of threads (httpx), every load bounded in count and time:

- deadlines: a small CNN at 224x224, ``time_budget`` 1 s, ``num_samples="auto"``, 16 clients:
  the latency p99 against the budget (and ResNet-18 in ``fastest_cpu_precision()``, bf16
  where the CPU has it natively, when ``resnet`` is set);
- overload: requests arriving at twice the rate the server sustained in the deadlines part:
  how fast the excess is answered 503, whether the served still meet their deadlines, and that
  every request got an answer;
- batching across requests: explanations per second at concurrency 8, with and without merging,
  for a classifier with a fixed cost per call (``FixedCost``, a Keras ``predict`` call's ~40 ms)
  and for ResNet-18 on this CPU;
- against the KServe explainer's design: a server that runs lime's own ``explain_instance`` per
  request on the same model in-process (``python -m limefast.benchsuite.lime_server``),
  both at the same ``num_samples`` (the same fidelity), concurrency 8.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from limefast.optional import available, require

from .inputs import photo
from .models import FixedCost


@dataclass
class ServeConfig:
    """Sizes of the serve section; ``quick()`` runs in a couple of minutes on 2 cores."""

    side: int = 224
    clients: int = 16
    requests: int = 64
    budget: float = 1.0
    overload_seconds: float = 10.0
    merge_clients: int = 8
    merge_requests: int = 16
    merge_samples: int = 1000
    call_seconds: float = 0.04
    baseline_requests: int = 8
    resnet: bool = True
    resnet_samples: int = 100
    resnet_requests: int = 8

    @classmethod
    def quick(cls) -> ServeConfig:
        return cls(side=96, clients=8, requests=16, overload_seconds=4.0, merge_requests=8,
                   merge_samples=300, baseline_requests=4, resnet=False)


# -- the models (module:factory for --model) --------------------------------------------------

def small_cnn():
    """A small CNN with seeded random weights: a 4x4 stride-4 stem to 16 channels, two 3x3
    stride-2 convolutions (32, 64 channels), global pooling, 10 classes (about 7 M
    multiply-adds at 224x224)."""
    torch = require("torch", "the serve benchmark's small CNN")
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, stride=4), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def fixed_cost():
    """The grid model behind ``LIMEFAST_BENCH_CALL_SECONDS`` (default 0.04 s) per call."""
    return FixedCost(float(os.environ.get("LIMEFAST_BENCH_CALL_SECONDS", "0.04")))


# -- servers -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on 127.0.0.1, ready when the context is entered."""

    def __init__(self, argv: list[str], name: str, env=None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.argv = argv + ["--port", str(self.port)]
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> Server:
        httpx = require("httpx", "the serve benchmark's load generator")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the server exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models/{self.name}", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.__exit__()
        raise RuntimeError("the server was not ready in 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def limefast_server(model: str, side: int, *extra: str) -> Server:
    return Server([sys.executable, "-m", "limefast.cli", "serve", "--model", model,
                   "--name", "m", "--size", str(side), *extra], "m")


# -- the load generator ----------------------------------------------------------------------------

# Seconds a closed-loop client waits at most after a 503 (its Retry-After, in whole seconds).
BACKOFF = 1.0


def _png(side: int, seed: int) -> str:
    from PIL import Image

    rng = np.random.RandomState(seed)
    image = np.clip(photo(side).astype(int) + rng.randint(-10, 11, (side, side, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _post(client, url, body, timeout=60.0) -> dict:
    t0 = time.perf_counter()
    try:
        r = client.post(f"{url}/v1/models/m:explain", json=body, timeout=timeout)
        status, retry = r.status_code, r.headers.get("Retry-After")
        record = r.json()["explanations"][0] if status == 200 else {}
        rows, server = record.get("num_samples"), record.get("seconds")
    except Exception as exc:  # noqa: BLE001 - a lost request is what this counts
        status, retry, rows, server = f"lost: {type(exc).__name__}", None, None, None
    return {"status": status, "seconds": time.perf_counter() - t0, "retry_after": retry,
            "rows": rows, "server_seconds": server}


def closed_loop(url: str, bodies: list[dict], clients: int) -> tuple[list[dict], float]:
    """Each of ``clients`` threads sends its next body when its last is answered (after a 503,
    when its ``Retry-After`` has passed, at most ``BACKOFF`` seconds); the answers and the wall
    time."""
    httpx = require("httpx", "the serve benchmark's load generator")
    local = threading.local()

    def one(body):
        if not hasattr(local, "client"):
            local.client = httpx.Client()
        answer = _post(local.client, url, body)
        if answer["status"] == 503:
            time.sleep(min(BACKOFF, float(answer["retry_after"] or 0)))
        return answer

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, bodies))
    return answers, time.perf_counter() - t0


def open_loop(url: str, bodies: list[dict], rate: float) -> list[dict]:
    """Requests sent at ``rate`` per second whatever the answers (a thread each)."""
    httpx = require("httpx", "the serve benchmark's load generator")
    answers: list = [None] * len(bodies)

    def one(i):
        with httpx.Client() as client:
            answers[i] = _post(client, url, bodies[i])

    threads, t0 = [], time.perf_counter()
    for i in range(len(bodies)):
        time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        thread = threading.Thread(target=one, args=(i,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=120)
    return [a or {"status": "lost: no answer", "seconds": None, "retry_after": None}
            for a in answers]


def summary(answers: list[dict], budget: float | None = None) -> dict:
    """Counts by status, latency percentiles of the 200s and of the 503s."""
    def pct(values, q):
        return float(np.percentile(values, q)) if values else None

    ok = [a["seconds"] for a in answers if a["status"] == 200]
    busy = [a["seconds"] for a in answers if a["status"] == 503]
    out = {"sent": len(answers), "ok": len(ok), "rejected_503": len(busy),
           "other": sorted({str(a["status"]) for a in answers if a["status"] not in (200, 503)}),
           "lost": sum(1 for a in answers if str(a["status"]).startswith("lost")),
           "p50": pct(ok, 50), "p99": pct(ok, 99), "max": max(ok) if ok else None,
           "p99_503": pct(busy, 99), "max_503": max(busy) if busy else None,
           "rows_median": pct([a["rows"] for a in answers if a.get("rows")], 50),
           # from the request's arrival to its explanation, as the server measured it
           "server_p99": pct([a["server_seconds"] for a in answers
                              if a.get("server_seconds") is not None], 99)}
    if budget is not None and ok:
        out["p99_over_budget"] = out["p99"] / budget
        out["deadline_bound"] = 1.15 * budget + 0.02
    return out


# -- the parts ----------------------------------------------------------------------------------

def deadlines(cfg: ServeConfig, model: str, extra=(), progress=print) -> dict:
    """``time_budget`` under ``cfg.clients`` concurrent clients, then the overload part at
    twice the rate sustained."""
    bodies = [{"instances": [{"b64": _png(cfg.side, i)}],
               "parameters": {"num_samples": "auto", "time_budget": cfg.budget, "seed": i}}
              for i in range(cfg.requests)]
    with limefast_server(model, cfg.side, *extra) as server:
        answers, wall = closed_loop(server.url, bodies, cfg.clients)
        result = {"model": model, "clients": cfg.clients, "budget": cfg.budget,
                  **summary(answers, cfg.budget), "wall_seconds": wall}
        rate = result["ok"] / wall if wall else 0.0
        result["sustained_per_second"] = rate
        progress(f"deadlines {model}: p99 {result['p99']} s, {result['ok']}/{len(answers)} "
                 f"served, {rate:.2f}/s")
        if rate > 0:
            n = max(8, min(400, int(2 * rate * cfg.overload_seconds)))
            over = open_loop(server.url, [bodies[i % len(bodies)] for i in range(n)], 2 * rate)
            result["overload"] = {"rate_per_second": 2 * rate, **summary(over, cfg.budget)}
            progress(f"overload: {result['overload']}")
    return result


def merging(cfg: ServeConfig, model: str, samples: int, requests: int, extra=(),
            progress=print, env=None) -> dict:
    """Explanations per second at ``cfg.merge_clients`` clients, merged and not."""
    bodies = [{"instances": [{"b64": _png(cfg.side, i)}],
               "parameters": {"num_samples": samples, "seed": i}}
              for i in range(requests)]
    out = {"model": model, "clients": cfg.merge_clients, "num_samples": samples}
    for label, flags in (("merged", ()), ("not_merged", ("--no-merge",))):
        argv = limefast_server(model, cfg.side, *extra, *flags)
        argv.env.update(env or {})
        with argv as server:
            answers, wall = closed_loop(server.url, bodies, cfg.merge_clients)
        s = summary(answers)
        out[label] = {"per_second": s["ok"] / wall, "ok": s["ok"], "sent": s["sent"],
                      "p50": s["p50"]}
        progress(f"merging {model} {label}: {out[label]}")
    out["speedup"] = out["merged"]["per_second"] / max(out["not_merged"]["per_second"], 1e-12)
    return out


def against_lime(cfg: ServeConfig, progress=print) -> dict:
    """limefast serve against lime per request in-process, same model and num_samples."""
    model = "limefast.benchsuite.serving:small_cnn"
    bodies = [{"instances": [{"b64": _png(cfg.side, i)}],
               "parameters": {"num_samples": cfg.merge_samples, "seed": i}}
              for i in range(cfg.baseline_requests)]
    out = {"model": model, "clients": cfg.merge_clients, "num_samples": cfg.merge_samples}
    with limefast_server(model, cfg.side) as server:
        answers, wall = closed_loop(server.url, bodies, cfg.merge_clients)
    out["limefast"] = {"per_second": summary(answers)["ok"] / wall, "ok": summary(answers)["ok"]}
    baseline = Server([sys.executable, "-m", "limefast.benchsuite.lime_server",
                       "--model", model, "--size", str(cfg.side)], "m")
    with baseline as server:
        answers, wall = closed_loop(server.url, bodies, cfg.merge_clients)
    out["lime_per_request"] = {"per_second": summary(answers)["ok"] / wall,
                               "ok": summary(answers)["ok"]}
    out["speedup"] = out["limefast"]["per_second"] / max(
        out["lime_per_request"]["per_second"], 1e-12)
    progress(f"against lime per request: {out}")
    return out


def serve_study(cfg: ServeConfig | None = None, progress=print) -> dict:
    """The whole section: a dict of the parts that ran, and what could not."""
    cfg = cfg or ServeConfig()
    out: dict = {"config": vars(cfg).copy(), "not_measured": []}
    cnn = "limefast.benchsuite.serving:small_cnn"
    out["deadlines"] = [deadlines(cfg, cnn, progress=progress)]
    # The fastest precision this CPU computes natively: emulated bf16 is slower than fp32.
    from limefast.device.features import fastest_cpu_precision

    precision = ("--precision", fastest_cpu_precision())
    out["precision"] = precision[1]
    if cfg.resnet:
        out["deadlines"].append(deadlines(cfg, "resnet18", precision, progress))
    out["merging"] = [merging(cfg, "limefast.benchsuite.serving:fixed_cost", cfg.merge_samples,
                              cfg.merge_requests, progress=progress,
                              env={"LIMEFAST_BENCH_CALL_SECONDS": str(cfg.call_seconds)})]
    if cfg.resnet:
        out["merging"].append(merging(cfg, "resnet18", cfg.resnet_samples,
                                      cfg.resnet_requests, precision, progress))
    if available("lime"):
        out["against_lime"] = against_lime(cfg, progress)
    else:
        out["not_measured"].append("against lime per request: lime is not installed")
    return out


# -- the report ---------------------------------------------------------------------------------

def markdown(section: dict | None) -> list[str]:
    """The section as Markdown lines (none when it did not run)."""
    if not section:
        return []
    lines = ["## Serving (limefast serve over HTTP on 127.0.0.1)", ""]
    for d in section.get("deadlines", []):
        lines.append(f"- deadlines, {d['model']}: {d['clients']} clients, time_budget "
                     f"{d['budget']} s, auto: p50 {_s(d['p50'])}, p99 {_s(d['p99'])} (in the "
                     f"server {_s(d.get('server_p99'))}; bound "
                     f"{_s(d.get('deadline_bound'))}), {d['ok']}/{d['sent']} served, "
                     f"{d['rejected_503']} answered 503, {d['lost']} lost; median rows "
                     f"{d['rows_median']}")
        o = d.get("overload")
        if o:
            lines.append(f"  - overload at {o['rate_per_second']:.2f} req/s (2x sustained): "
                         f"{o['ok']}/{o['sent']} served (p99 {_s(o['p99'])}), "
                         f"{o['rejected_503']} answered 503 (p99 {_s(o['p99_503'])}), "
                         f"{o['lost']} lost, other {o['other']}")
    for m in section.get("merging", []):
        lines.append(f"- batching across requests, {m['model']} ({m['num_samples']} samples, "
                     f"{m['clients']} clients): {m['merged']['per_second']:.2f} vs "
                     f"{m['not_merged']['per_second']:.2f} explanations/s merged vs not: "
                     f"{m['speedup']:.2f}x")
    a = section.get("against_lime")
    if a:
        lines.append(f"- against lime per request in-process ({a['num_samples']} samples, "
                     f"{a['clients']} clients): {a['limefast']['per_second']:.2f} vs "
                     f"{a['lime_per_request']['per_second']:.2f} explanations/s: "
                     f"{a['speedup']:.1f}x")
    return lines + [""]


def target_values(section: dict | None):
    """(target id, value, shown, fields) of each serve target measured."""
    if not section:
        return
    for d in section.get("deadlines", []):
        if d.get("p99") is not None:
            ratio = (d["p99"] - 0.02) / d["budget"]
            yield "serve_deadline_p99", ratio, f"{d['p99']:.3f} s", {"model": d["model"]}
        o = d.get("overload")
        if o:
            if o.get("p99_503") is not None:
                yield ("serve_overload_503_seconds", o["p99_503"], f"{o['p99_503'] * 1e3:.0f} ms",
                       {"model": d["model"]})
            yield "serve_overload_lost", o["lost"], str(o["lost"]), {"model": d["model"]}
            if o.get("p99") is not None:
                ratio = (o["p99"] - 0.02) / d["budget"]
                yield "serve_overload_deadline", ratio, f"{o['p99']:.3f} s", {"model": d["model"]}
    for m in section.get("merging", []):
        key = "serve_merge_fixed_cost" if "fixed_cost" in m["model"] else None
        if key:
            yield key, m["speedup"], f"{m['speedup']:.2f}x", {"model": m["model"]}
    a = section.get("against_lime")
    if a:
        yield "serve_vs_lime_per_request", a["speedup"], f"{a['speedup']:.1f}x", {}


def _s(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds:.3f} s"
