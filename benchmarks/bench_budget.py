"""The time budget under load: 4 threads x 500 explanations on one ``TorchClassifier``.

A service explains one prediction per request within ``time_budget`` seconds. Four threads share
one classifier (its forwards take turns; each explanation's budget counts from its own start,
waiting included). Recorded: p50/p99 wall time against the budget, the rows each explanation
could fit, errors, and the resident memory after the warm-up and at the end (it should stay
flat); p99 and the errors are checked against ``benchmarks/targets.json``.

``LIMEFAST_SOAK_N`` sets the explanations per thread (default 500), ``LIMEFAST_SOAK_BUDGET`` the
budget in seconds (default 0.25).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from benchmarks.conftest import check, note
from limefast.benchsuite.inputs import bundled

torch = pytest.importorskip("torch")

THREADS = 4


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(512, 10))


def test_time_budget_soak():
    from limefast import TorchClassifier
    from limefast import lime_image as lf

    per_thread = int(os.environ.get("LIMEFAST_SOAK_N", 500))
    budget = float(os.environ.get("LIMEFAST_SOAK_BUDGET", 0.25))
    side = 64
    images = [bundled(name, side) for name in ("astronaut", "chelsea", "coffee", "rocket")]
    cells = 8
    yy, xx = np.mgrid[0:side, 0:side]
    segments = (yy * cells // side) * cells + xx * cells // side  # 64 superpixels
    clf = TorchClassifier(small_cnn(), device="cpu")
    walls, rows, errors = [], [], []
    lock = threading.Lock()
    rss = {}
    warm = max(1, per_thread // 10)
    barrier = threading.Barrier(THREADS)

    def serve(worker):
        explainer = lf.LimeImageExplainer(random_state=worker)
        for i in range(per_thread):
            if i == warm:
                barrier.wait()
                with lock:
                    rss.setdefault("warm", resident_bytes())
            image = images[(worker + i) % len(images)]
            t0 = time.perf_counter()
            try:
                e = explainer.explain_instance(image, clf, num_samples="auto", top_labels=3,
                                               time_budget=budget, progress_bar=False,
                                               segmentation_fn=lambda _: segments)
            except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                with lock:
                    errors.append(repr(exc))
                continue
            wall = time.perf_counter() - t0
            if i >= warm:
                with lock:
                    walls.append(wall)
                    rows.append(e.num_samples)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # auto's "stopped before settling" under a budget
        threads = [threading.Thread(target=serve, args=(w,)) for w in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rss["end"] = resident_bytes()
    walls = np.array(walls)
    p50, p99 = np.percentile(walls, [50, 99])
    mib = 2.0 ** -20
    note(f"time budget soak: {THREADS} threads x {per_thread} explanations, budget "
         f"{budget:.3g} s, 64x64 images, 64 superpixels, one TorchClassifier (CPU): p50 "
         f"{p50:.3f} s ({p50 / budget:.2f}x), p99 {p99:.3f} s ({p99 / budget:.2f}x), max "
         f"{walls.max():.3f} s; rows fitted median {np.median(rows):.0f} (min {min(rows)}); "
         f"errors {len(errors)}; RSS after warm-up {rss['warm'] * mib:.0f} MiB, at the end "
         f"{rss['end'] * mib:.0f} MiB")
    check("budget_p99", p99 / budget, f"{p99 / budget:.2f}x")
    assert check("budget_errors", len(errors), str(len(errors))), errors[:3]
