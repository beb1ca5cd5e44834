"""The benchmark suite in --quick mode: it runs end to end and writes a readable report.

No timing is asserted (speed is measured in benchmarks/, not in tests); this keeps the suite
working.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from limefast import benchsuite
from limefast.benchsuite import report, suite


def test_quick_suite_writes_json_markdown_and_plots(tmp_path):
    cfg = suite.Config.quick()
    results = benchsuite.run_suite(cfg, log=lambda m: None)
    path = benchsuite.write(results, tmp_path)
    data = json.loads(path.read_text())
    assert {"machine", "end_to_end", "scaling", "slopes", "models", "latency"} <= set(data)
    e2e = {r["impl"]: r for r in data["end_to_end"]}
    assert e2e["limefast-cpu"]["max_rel_weight_diff"] <= 1e-9
    assert e2e["limefast-cpu"]["top5_overlap"] == 1.0
    for param, points in data["scaling"].items():
        assert len(points) >= 2 and all(p["limefast"]["seconds"] > 0 for p in points)
        assert np.isfinite(data["slopes"][param]["limefast_total"])
        assert (tmp_path / f"scaling-{param}.png").stat().st_size > 1000
    models = {r["impl"]: r for r in data["models"] if "seconds" in r}
    if models:  # torch installed
        assert {"lime", "limefast-cpu", "limefast-device-fp32",
                "limefast-device-bf16-trace"} <= set(models)
        for impl in ("limefast-device-fp32", "limefast-device-fp32-trace"):
            row = models[impl]
            stages = row["stages"]
            assert 0 < stages["model"] < row["seconds"]  # the device path's forward
            assert sum(stages.values()) <= row["seconds"] * 1.01  # counted once
    md = path.with_suffix(".md").read_text()
    assert "| limefast-cpu |" in md and "## Scaling (log-log slopes)" in md
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
    from limefast import demo

    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = str(blocker / "out")
    code = (benchsuite.main(["--out", out, "--quick"]) if main == "bench"
            else demo.main(["--out", out, "--no-lime"]))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"limefast {main}: cannot write to output folder {out}: Not a directory"
