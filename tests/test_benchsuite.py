"""The benchmark suite in --quick mode: it runs end to end and writes a readable report.

No timing is asserted (speed is measured in benchmarks/, not in tests); this keeps the suite
working.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from limefast import benchsuite
from limefast.benchsuite import (
    agreement,
    cold_start,
    models,
    report,
    shapley,
    suite,
    targets,
)


def test_quick_suite_writes_json_markdown_and_plots(tmp_path, trained_models_cache):
    cfg = suite.Config.quick()
    from limefast.benchsuite.study.run import StudyConfig

    results = benchsuite.run_suite(cfg, log=lambda m: None, shap=shapley.ShapleyConfig.quick(),
                                   auto=StudyConfig.quick(), cold=cold_start.ColdConfig.quick())
    path = benchsuite.write(results, tmp_path)
    data = json.loads(path.read_text())
    assert {"machine", "end_to_end", "scaling", "slopes", "models", "latency",
            "kernelshap", "cold_start"} <= set(data)
    if "auto" in data:  # torch installed: the study of "auto" in two halves
        assert [h["half"] for h in data["auto"]["halves"]] == ["tuning", "held-out"]
        assert (tmp_path / "auto-fidelity-vs-images.png").stat().st_size > 1000
        assert "The sampling study in two halves" in path.with_suffix(".md").read_text()
    cold = data["cold_start"]
    assert 0 < cold["import_s"] and {(r["side"], r["pause_s"]) for r in cold["first_call"]} == {
        (28, 0.0), (28, 1.0), (224, 0.0), (224, 1.0)}
    assert all(r["warm_s"] > 0 for r in cold["first_call"])
    assert cold["cli"]["wall_s"] > cold["cli"]["warm_s"] > 0
    e2e = {r["impl"]: r for r in data["end_to_end"]}
    assert e2e["limefast-cpu"]["max_rel_weight_diff"] <= 1e-9
    assert e2e["limefast-cpu"]["top5_overlap"] == 1.0
    for param, points in data["scaling"].items():
        assert len(points) >= 2 and all(p["limefast"]["seconds"] > 0 for p in points)
        assert np.isfinite(data["slopes"][param]["limefast_total"])
        assert (tmp_path / f"scaling-{param}.png").stat().st_size > 1000
    models = {r["impl"]: r for r in data["models"] if "seconds" in r}
    if models:  # torch installed
        from limefast.device.features import fastest_cpu_precision

        fast = fastest_cpu_precision()  # bf16 only where it is native
        assert {"lime", "limefast-cpu", "limefast-device-fp32",
                f"limefast-device-{fast}-trace"} <= set(models)
        assert ("limefast-device-bf16" in models) == (fast == "bf16")
        for impl in ("limefast-device-fp32", "limefast-device-fp32-trace"):
            row = models[impl]
            stages = row["stages"]
            assert 0 < stages["model"] < row["seconds"]  # the device path's forward
            assert sum(stages.values()) <= row["seconds"] * 1.01  # counted once
    md = path.with_suffix(".md").read_text()
    assert "| limefast-cpu |" in md and "## Scaling (log-log slopes)" in md
    if models:  # the CPU's features are named beside every figure
        assert f"CPU features: {data['machine']['cpu_features']['described']}" in md
    assert "## KernelSHAP against shap's KernelExplainer" in md
    assert "KernelSHAP >= 50x shap's KernelExplainer" in md  # its target, checked
    assert "## Cold start (fresh processes)" in md and "import limefast <= 0.3 s" in md
    assert data["latency"]["p99"] >= data["latency"]["p50"] > 0


def test_slope_of_a_power_law():
    xs = np.array([1, 2, 4, 8])
    assert report.slope(xs, 3 * xs**1.5) == pytest.approx(1.5)
    assert np.isnan(report.slope([1], [1]))


def test_unknown_section_is_a_one_line_error(tmp_path, capsys):
    assert benchsuite.main(["--sections", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown section" in capsys.readouterr().err


def test_targets_say_met_or_missed():
    stages = {"segmentation": 0.0, "sampling": 0.0, "perturbation": 0.0, "model": 0.0,
              "surrogate": 0.0}
    results = {"end_to_end": [{"impl": "lime", "seconds": 1.0, "stages": stages},
                              {"impl": "limefast-cpu", "seconds": 0.1, "stages": stages,
                               "max_rel_weight_diff": 1e-12}],
               "slopes": {"superpixels": {"limefast_perturbation": 0.5,
                                          "limefast_total": 0.5}}}
    checks = {name: ok for name, _, ok in report.targets(results)}
    assert checks["default explain_instance >= 15x lime"] is False  # 10x
    assert checks["agreement with lime <= 1e-9 relative"] is True
    assert checks["perturbation flat in superpixels (slope < 0.2)"] is False
    assert "| MISSED |" in report.markdown({"machine": {}, "date": "d", **results})


@pytest.mark.parametrize("main", ["bench", "demo"])
def test_an_output_folder_under_a_file_is_a_one_line_error(main, tmp_path, capsys):
    from limefast.demo import run as demo

    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = str(blocker / "out")
    code = (benchsuite.main(["--out", out, "--quick"]) if main == "bench"
            else demo.main(["--out", out, "--no-lime"]))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"limefast {main}: cannot write to output folder {out}: Not a directory"


# -- agreement measures --------------------------------------------------------------------------
def test_top_k_overlap_on_hand_made_cases():
    ref = {0: 5.0, 1: -4.0, 2: 3.0, 3: -2.0, 4: 1.0, 5: 0.5, 6: 0.1}
    assert agreement.top_k_overlap(ref, ref) == 1.0
    # Signs do not matter, only |w|: the same top 5 in another order and sign.
    assert agreement.top_k_overlap({f: -w * (7 - f) for f, w in ref.items()}, ref) == 1.0
    # Three of the reference's top 5 (0, 1, 2) among the run's top 5 (0, 1, 2, 5, 6).
    run = {0: 9.0, 1: 8.0, 2: 7.0, 3: 0.0, 4: 0.0, 5: -6.0, 6: 5.0}
    assert agreement.top_k_overlap(run, ref) == pytest.approx(3 / 5)
    disjoint = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 1.0, 6: 1.0, 7: 1.0, 8: 1.0, 9: 1.0}
    assert agreement.top_k_overlap(disjoint, ref) == 0.0
    assert agreement.top_k_overlap({}, ref) == 0.0  # a run that did not explain the label
    assert agreement.top_k_overlap(run, ref, k=2) == 1.0
    assert agreement.top_k_overlap({0: 1.0, 1: 1.0}, {1: 2.0, 2: 1.0}) == 0.5  # fewer than k
    # Ties go to the lower feature number.
    assert agreement.top_features({3: 1.0, 1: -1.0, 2: 1.0, 0: 0.5}, 2) == [1, 2]


def test_interval_coverage_on_hand_made_cases():
    w, se = {0: 1.0, 1: 2.0, 2: 0.0}, {0: 0.1, 1: 0.1, 2: 1.0}
    ref = {0: 1.16, 1: 2.5, 2: -1.7, 3: 0.0}  # in, out, out (1.645 * 1.0 < 1.7), missing
    assert agreement.interval_coverage(w, se, ref) == (1, 4)
    # The reference's own error widens the interval: sqrt(0.1^2 + 0.3^2) * 1.645 = 0.52 > 0.5.
    assert agreement.interval_coverage(w, se, ref, reference_stderr={1: 0.3}) == (2, 4)


@pytest.fixture
def model_cache(trained_models_cache):
    pytest.importorskip("torch")


def test_faces_model_is_small_accurate_and_cached(model_cache, tmp_path, monkeypatch):
    from limefast.models import faces

    monkeypatch.setenv("LIMEFAST_CACHE", str(tmp_path))  # trained here, whatever ran before

    trained = faces.load_model()
    assert trained.trained and trained.accuracy >= 0.9
    assert trained.path.stat().st_size < 1 << 20
    again = faces.load_model()
    assert not again.trained
    clf, images = faces.FacesClassifier(again.model), trained.data.test_images[:7]
    probs = clf(images)
    assert probs.shape == (7, 2) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs, faces.FacesClassifier(trained.model)(images), rtol=1e-6)
    assert set(trained.data.test_labels) == {0, 1} and trained.data.test_images.dtype == np.uint8


# -- the engine's parts -----------------------------------------------------------------------
def test_targets_have_names_of_their_bounds_and_a_bad_file_is_a_one_line_error(tmp_path,
                                                                                capsys):
    spec = targets.load()
    assert targets.name(spec["drop_in_agreement"]) == "agreement with lime <= 1e-9 relative"
    assert (targets.name(spec["device_outside_forward"], model="m", impl="i")
            == "m i: time outside the forward <= 5%")
    both = {"name": "in {min}-{max}", "min": 0.8, "max": 1.2}
    assert targets.name(both) == "in 0.8-1.2"
    assert [targets.met(both, v) for v in (0.7, 0.8, 1.0, 1.2, 1.3, float("nan"))] == [
        False, True, True, True, False, False]
    assert targets.check(spec, "no such target", 1.0, "1") is None
    bad = tmp_path / "targets.json"
    bad.write_text("{}")
    assert benchsuite.main(["--targets", str(bad), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f'limefast bench: --targets {bad}: {bad} has no "targets" object')


def test_agreement_of_hand_made_explanations():
    ref = {1: {0: 1.0, 1: -0.5, 2: 0.25, 3: 0.0}, 2: {0: 1.0, 1: 2.0, 2: 3.0}}
    other = {1: {0: 1.0, 1: -0.5, 2: 0.5, 3: 0.0}}  # label 2 not explained
    measures = agreement.agreement(ref, other)
    assert measures["labels"][2] == {"top5_overlap": 0.0, "spearman": None,
                                     "max_rel_weight_diff": None,
                                     "max_scaled_weight_diff": None}
    one = measures["labels"][1]
    assert one["max_rel_weight_diff"] == 1.0  # 0.25 against 0.5; the exact 0 against 0 is 0
    assert one["max_scaled_weight_diff"] == 0.25  # of the label's largest weight, 1
    assert one["top5_overlap"] == 1.0 and one["spearman"] == pytest.approx(1.0)
    assert measures["top5_overlap"] == 0.5 and measures["max_rel_weight_diff"] == 1.0


def test_grid_model_rows_do_not_depend_on_their_batch():
    model = models.GridModel()
    batch = np.random.default_rng(0).integers(0, 256, (23, 40, 30, 3), dtype=np.uint8)
    whole = model(batch)
    assert whole.shape == (23, 10)
    np.testing.assert_array_equal(whole[5:12], model(batch[5:12].copy()))
    np.testing.assert_array_equal(whole[7:8], model(batch[7:8]))
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    np.testing.assert_allclose(model.torch_forward(x).numpy(), whole, rtol=1e-9, atol=1e-300)


def test_kernelshap_section_compares_like_with_like(model_cache):
    """The speed case's two explainers see the same images: with every coalition, shap on the
    notebooks' masking function and limefast's exact values agree; the convergence part's
    figures are correlations of the right budgets."""
    from limefast.benchsuite import shapley
    from limefast.benchsuite.inputs import photo
    from limefast.benchsuite.models import GridModel

    image = photo(48)
    segments = shapley.kmeans_segments(image, 7)
    assert sorted(np.unique(segments)) == list(range(7))
    model = GridModel()
    ours, e = shapley.limefast_values(model, image, segments, 0, 0, 128)
    assert e.exact
    theirs, base, seen = shapley.shap_values(model, image, segments, 0, 0, nsamples=126,
                                             l1_reg=False)
    label = e.top_labels[0]
    np.testing.assert_allclose(ours, theirs[:, label], rtol=0, atol=1e-9)
    assert base[label] == pytest.approx(e.base_value[label], abs=1e-12)
    assert seen == 128  # the background, the instance and 126 coalitions
    cfg = shapley.ShapleyConfig.quick()
    speed = shapley.shapley_speed(cfg)
    assert speed["limefast_images"] == speed["shap_images"] == cfg.num_samples
    assert speed["speedup"] > 1 and speed["correlation_of_the_two"] > 0.5
    conv = shapley.shapley_convergence(cfg)
    for curve in conv["mean_correlation"].values():
        assert set(curve) == {str(n) for n in cfg.budgets}
        assert all(-1 <= v <= 1 for v in curve.values())
    assert conv["shap_defaults"]["images"] == 2 * 14 + 2048 + 2
