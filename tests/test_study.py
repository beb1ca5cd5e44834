"""The sampling study in two halves (``limefast.benchsuite.study``) and the trained models of
``limefast.models`` it explains."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from limefast.benchsuite.study import __main__ as study_main  # noqa: E402
from limefast.benchsuite.study import cases, summary  # noqa: E402


def test_quick_study_measures_both_halves_and_keeps_the_promise(tmp_path, trained_models_cache):
    assert study_main.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "study.json").read_text())
    assert [h["half"] for h in result["halves"]] == list(cases.HALVES)
    halves = [c["half"] for c in result["cases"]]
    assert set(halves) == set(cases.HALVES) and halves == sorted(halves, key=cases.HALVES.index)
    seen = {(c["model"], c["test_index"]) for c in result["cases"] if c["half"] == "tuning"}
    assert not seen & {(c["model"], c["test_index"]) for c in result["cases"]
                       if c["half"] == "held-out"}  # the held-out half's images are fresh
    for c in result["cases"]:
        assert cases.SUPERPIXELS[0] <= c["superpixels"] <= cases.SUPERPIXELS[1]
    records = json.loads((tmp_path / "records.json").read_text())
    auto = [r for r in records if r["setting"] == "auto"]
    assert auto and all(r["images"] <= 1000 for r in auto)  # never dearer than lime
    assert all(0 <= r["stated"] <= 1 for r in records if np.isfinite(r["stated"]))
    for h in result["halves"]:
        assert h["lime"]["1000"]["images"] == 1000
        assert h["auto"]["max_setting_images"] <= 1000
    # a flat model costs the first round and no more
    assert {(f["images"], f["stop_reason"]) for f in result["flat_models"]} == {(150, "flat")}
    assert (tmp_path / "fidelity-vs-images.png").stat().st_size > 1000


def test_calibration_bins_tell_a_calibrated_half_from_a_miscalibrated_one():
    rng = np.random.RandomState(0)
    rows = []
    for i in range(400):
        stated = rng.uniform(0.4, 1.0)
        half = cases.HALVES[i % 2]
        # the held-out half is badly calibrated: tuning must not see it
        measured = stated if half == "tuning" else 1.0 - stated
        rows.append({"half": half, "setting": "300", "spread": 1.0, "stated": stated,
                     "overlap": float(rng.rand() < measured), "flat_reference": False})
    cal = summary.calibration([r for r in rows if r["half"] == "tuning"])
    assert len(cal["bins"]) == summary.BINS and cal["error"] < 0.06
    held = summary.calibration([r for r in rows if r["half"] == "held-out"])
    assert held["worst_bin_error"] > 0.3


def test_shapes_are_drawn_apart_and_the_segmentations_fit_the_range():
    from limefast.models import shapes

    data = shapes.load_data(n_train=40, n_test=8)
    assert data.train_images.shape == (40, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert set(data.train_labels) == set(range(len(shapes.CLASSES)))
    image = data.test_images[0]
    for method in cases.LADDERS:
        found = cases.segment_in_range(image, method)
        if found is not None:
            labels, _ = found
            assert cases.SUPERPIXELS[0] <= labels.max() + 1 <= cases.SUPERPIXELS[1]
            assert set(np.unique(labels)) == set(range(labels.max() + 1))


def test_old_demo_paths_are_the_models_modules():
    import limefast.demo.digits
    import limefast.models.digits

    assert limefast.demo.digits is limefast.models.digits
