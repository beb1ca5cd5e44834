"""quickshift with lime's parameters: scikit-image against limefast, same process, same inputs.

Run: ``.venv/bin/python -m pytest benchmarks/bench_quickshift.py --benchmark-only -q -s``

Group "quickshift": ``LIME_QUICKSHIFT`` (lime's default segmentation parameters) on
astronaut and chelsea resized to 224, 384 and 512 square, uint8 (lime's usual input). Kernels are
compiled (or loaded from Numba's cache) before anything is timed, and the labels of both are
checked equal once, outside the timing. The speed-up (ratio of medians) is printed per size.

Group "quickshift-cold-start": a fresh interpreter with an empty Numba cache, so the first call
compiles every kernel; the compile time is printed apart from the import time, and again with
the cache that run filled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage.segmentation import quickshift as sk_quickshift

from benchmarks.conftest import note, record
from limefast.benchsuite import machine
from limefast.benchsuite.inputs import bundled
from limefast.segmentation import LIME_QUICKSHIFT as LIME
from limefast.segmentation import quickshift

SIZES = (224, 384, 512)
IMAGES = ("astronaut", "chelsea")
ROUNDS = {"skimage": 3, "limefast": 15}
_medians: dict[tuple[str, int, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _warm_and_report():
    quickshift(bundled("astronaut", 32), **LIME)  # compile, or load the cache, before timing
    print(f"\nmachine: {json.dumps(machine())}")
    yield
    print("\nquickshift speed-up (median scikit-image / median limefast):")
    for name in IMAGES:
        for size in SIZES:
            sk, lf = _medians.get((name, size, "skimage")), _medians.get((name, size, "limefast"))
            if sk and lf:
                print(f"  {name:9s} {size}x{size}: skimage {sk * 1e3:8.1f} ms  "
                      f"limefast {lf * 1e3:7.1f} ms  x{sk / lf:5.1f}")


@pytest.mark.benchmark(group="quickshift")
@pytest.mark.parametrize("impl", ["skimage", "limefast"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", IMAGES)
def test_quickshift(benchmark, name, size, impl):
    image = bundled(name, size)
    if impl == "limefast":
        np.testing.assert_array_equal(quickshift(image, **LIME), sk_quickshift(image, **LIME))
    fn = sk_quickshift if impl == "skimage" else quickshift
    benchmark.extra_info.update(image=name, size=size, impl=impl, **LIME)
    benchmark.pedantic(fn, args=(image,), kwargs=LIME, rounds=ROUNDS[impl], warmup_rounds=1,
                       iterations=1)
    _medians[(name, size, impl)] = record(f"quickshift {name} {size}x{size}",
                                          "reference" if impl == "skimage" else impl, benchmark)
    other = _medians.get((name, size, "skimage" if impl == "limefast" else "limefast"))
    if other:
        sk, lf = (other, _medians[(name, size, impl)])[:: 1 if impl == "limefast" else -1]
        print(f" [{name} {size}: x{sk / lf:.1f}]", end="")


_COLD = """
import json, time
t0 = time.perf_counter()
import numpy as np
from limefast.segmentation import LIME_QUICKSHIFT, quickshift
t1 = time.perf_counter()
image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
quickshift(image, **LIME_QUICKSHIFT)
t2 = time.perf_counter()
quickshift(image / np.float32(255), **LIME_QUICKSHIFT)
t3 = time.perf_counter()
quickshift(image, **LIME_QUICKSHIFT)
t4 = time.perf_counter()
print(json.dumps(dict(imp=t1 - t0, f64=t2 - t1, f32=t3 - t2, warm=t4 - t3)))
"""


def _first_calls(cache_dir) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", _COLD], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.benchmark(group="quickshift-cold-start")
def test_cold_start(benchmark, tmp_path):
    runs = iter(range(10**6))
    times: list[dict] = []

    def cold():
        times.append(_first_calls(tmp_path / f"cache{next(runs)}"))

    benchmark.pedantic(cold, rounds=1, iterations=1)
    cold_t = times[-1]
    cached = _first_calls(tmp_path / "cache0")  # the cache the timed run filled
    benchmark.extra_info.update(cold=cold_t, cached=cached)
    line = (f"quickshift cold start (new process, empty Numba cache): import "
            f"{cold_t['imp']:.2f} s, first call compiles the float64 kernels in "
            f"{cold_t['f64']:.2f} s, float32 ones in "
            f"{cold_t['f32']:.2f} s; with the cache filled the first calls take "
            f"{cached['f64']:.2f} s + {cached['f32']:.2f} s; a warm 32x32 call "
            f"{cold_t['warm'] * 1e3:.1f} ms")
    print("\n" + line)
    note(line)
    assert cached["f64"] < cold_t["f64"]
