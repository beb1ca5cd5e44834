"""Issue 7 target: peak memory of explain_instance at 1024x1024 with 10000 samples.

Measured in a fresh process: tracemalloc's peak of the explanation (numpy's allocations are
traced) and the growth of the process's maximum resident set. Printed against the configured
chunk budget (``limefast.config.CHUNK_BYTES``) and the image's own size; the peak beyond the
buffer is checked against ``benchmarks/targets.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from benchmarks.conftest import check, note

SCRIPT = textwrap.dedent("""
    import json, resource, time, tracemalloc
    import numpy as np
    from limefast import config, lime_image
    from limefast.benchsuite.inputs import grid_segments
    from limefast.benchsuite.models import GridModel
    side, samples = 1024, 10000
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    segments = grid_segments(side, 400)  # a 20x20 grid of superpixels: 400 features
    model = GridModel(grid=16)  # reads a 16x16 grid of pixels: next to no memory of its own
    explainer = lime_image.LimeImageExplainer(random_state=0)
    explainer.explain_instance(image, model, num_samples=50, segmentation_fn=lambda im: segments,
                               progress_bar=False)  # compile first
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    explainer.explain_instance(image, model, num_samples=samples,
                               segmentation_fn=lambda im: segments, progress_bar=False)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(peak=peak, rss_growth=rss1 - rss0, image=image.nbytes,
                          chunk=config.CHUNK_BYTES, budget=config.MEMORY_BUDGET_BYTES,
                          seconds=seconds, perturbed=samples * image.nbytes)))
""")


def test_peak_memory_1024_10000_samples():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=900)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1 / 2**20
    # The buffer holds max(chunk budget, one batch of 10 images): here one batch, 30 MiB.
    buffer = max(r["chunk"], 10 * r["image"])
    beyond = (r["peak"] - buffer) / r["image"]
    note(f"memory, 1024x1024x3 uint8, 10000 samples, 400 superpixels: tracemalloc peak "
         f"{r['peak'] * mib:.1f} MiB, max-RSS growth {r['rss_growth'] * mib:.1f} MiB; buffer "
         f"max(chunk budget {r['chunk'] * mib:.0f} MiB, one batch {10 * r['image'] * mib:.0f} "
         f"MiB) + {beyond:.1f} x the image "
         f"({r['image'] * mib:.1f} MiB); "
         f"the perturbed images total {r['perturbed'] * mib:.0f} MiB; took {r['seconds']:.1f} s")
    assert check("memory_peak", beyond, f"buffer + {beyond:.1f} images")
