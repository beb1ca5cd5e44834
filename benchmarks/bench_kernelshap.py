"""KernelSHAP against shap's ``KernelExplainer``: thin cases over the engine's
``limefast.benchsuite.shapley`` (its docstring says what is compared and how).

- speed: 224x224 photo, 51 SLIC superpixels, 2000 samples, a model that costs next to nothing,
  shap on its image notebooks' masking function; limefast timed by pytest-benchmark as well;
- convergence: model images to reach a mean correlation of 0.95 with the exact Shapley values
  (digits CNN, 14 superpixels), limefast against shap at the same images and at its defaults.

Run: ``.venv/bin/python -m pytest benchmarks/bench_kernelshap.py -s`` (the convergence case takes
several minutes; ``limefast bench --sections kernelshap`` runs both into the report).
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import check, note, record
from limefast.benchsuite import shapley

pytest.importorskip("shap")


@pytest.mark.benchmark(group="kernelshap")
def test_kernelshap_speed_against_shap(benchmark):
    cfg = shapley.ShapleyConfig()
    result = shapley.shapley_speed(cfg)
    record("kernelshap", "reference", result["shap_seconds"])  # shap, once: it is slow
    from skimage.segmentation import slic

    from limefast.benchsuite.inputs import photo
    from limefast.benchsuite.models import GridModel

    image = photo(cfg.side)
    segments = slic(image, n_segments=cfg.n_segments, compactness=10, start_label=0)
    model = GridModel()
    benchmark.pedantic(shapley.limefast_values,
                       args=(model, image, segments, 0, 0, cfg.num_samples),
                       rounds=cfg.repeats, iterations=1, warmup_rounds=1)
    record("kernelshap", "limefast", benchmark)
    note(f"kernelshap speed: {result['superpixels']} superpixels, {cfg.num_samples} samples: "
         f"limefast {result['limefast_seconds']:.3f} s, shap {result['shap_seconds']:.2f} s, "
         f"{result['speedup']:.0f}x; the estimates correlate at "
         f"{result['correlation_of_the_two']:.3f}")
    assert check("kernelshap_speedup", result["speedup"], f"{result['speedup']:.0f}x")


def test_kernelshap_images_to_reach_the_exact_values():
    result = shapley.shapley_convergence(shapley.ShapleyConfig())
    reach = result["images_to_target"]
    note(f"kernelshap convergence ({result['superpixels']} superpixels): images to reach "
         f"{result['target']} correlation with the exact values: {reach}; shap at its "
         f"defaults {result['shap_defaults']['images']} images, correlation "
         f"{result['shap_defaults']['mean_correlation']:.3f}")
    ours, theirs = reach["limefast"], reach["shap (same images, no l1)"]
    assert ours is not None and (theirs is None or ours <= theirs)
    assert ours < result["shap_defaults"]["images"]
