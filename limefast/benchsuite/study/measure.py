"""The study as functions: ``evaluate`` (both halves at the configured defaults), ``tune`` (the
tuning half only, the defaults it would choose), ``write`` and ``markdown``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import cases, run, summary

SPREADS = (0.8, 0.9, 1.0, 1.1, 1.25)
TARGETS = (0.85, 0.9, 0.92, 0.94, 0.96, 0.98)
MARGIN = 0.01  # the tuning half's overlap may fall this far below lime's at 1000


def _setup(cfg: run.StudyConfig, folder: Path | None, log):
    from limefast.device._torch import torch_threads

    with torch_threads(1):
        models = cases.load_models(cfg.models)
    all_cases = cases.build_cases(models, cfg.per_cell)
    log(f"{len(all_cases)} cases")
    return models, all_cases, run.Study(models, all_cases, cfg, folder)


def evaluate(cfg: run.StudyConfig | None = None, folder: Path | None = None,
             log=lambda m: None) -> tuple[dict, list[dict]]:
    """Both halves at ``config.AUTO_SPREAD`` and ``config.AUTO_TARGET_OVERLAP`` (and "auto" at
    ``cfg.targets`` for the plot): (result, records). ``folder`` caches the references."""
    from limefast import config
    from limefast.device._torch import torch_threads

    cfg = cfg or run.StudyConfig()
    t0, cpu0 = time.perf_counter(), time.process_time()
    models, all_cases, study = _setup(cfg, folder, log)
    spread, target = config.AUTO_SPREAD, config.AUTO_TARGET_OVERLAP
    targets = tuple(sorted(set(cfg.targets) | {target}))
    records = []
    with torch_threads(1):
        for i, case in enumerate(all_cases):
            records += study.fixed(case, (spread,))
            records += study.auto(case, spread, targets)
            log(f"case {i + 1}/{len(all_cases)} ({case.half})")
        flat = run.flat_check(models, cfg)
    halves = [summary.half_summary(records, half, cfg.samples, spread, target, targets)
              for half in cases.HALVES]
    result = {"config": run.config_record(cfg), "spread": spread, "target": target,
              "models": {k: {"description": m.description, "test_accuracy": m.accuracy}
                         for k, m in models.items()},
              "cases": [vars(c) for c in all_cases], "halves": halves, "flat_models": flat,
              "wall_seconds": time.perf_counter() - t0,
              "cpu_seconds": time.process_time() - cpu0}
    return result, records


def tune(cfg: run.StudyConfig | None = None, folder: Path | None = None, quick=False,
         log=lambda m: None) -> tuple[dict, list[dict]]:
    """The tuning half only: the spread with the best calibration of lime's fixed counts, then
    the smallest target within ``MARGIN`` of lime at 1000. The held-out half is not run."""
    from limefast.device._torch import torch_threads

    cfg = cfg or run.StudyConfig()
    _, all_cases, study = _setup(cfg, folder, log)
    tuning = [c for c in all_cases if c.half == "tuning"]
    spreads = (1.0, 1.5) if quick else SPREADS
    targets = (0.9,) if quick else TARGETS
    records = []
    with torch_threads(1):
        for i, case in enumerate(tuning):
            records += study.fixed(case, spreads)
            log(f"tuning fixed {i + 1}/{len(tuning)}")
        spread, scores = summary.choose_spread(records, spreads)
        for i, case in enumerate(tuning):
            records += study.auto(case, spread, targets)
            log(f"tuning auto {i + 1}/{len(tuning)}")
    target, fid = summary.choose_target(records, spread, targets, cfg.samples, MARGIN)
    return {"spread": spread, "target": target, "calibration_by_spread": scores,
            "fidelity_by_target": fid, "margin": MARGIN,
            "summary": summary.half_summary(records, "tuning", cfg.samples, spread, target,
                                            targets)}, records


def write(result: dict, records: list[dict], folder: Path) -> None:
    """``study.json``, ``records.json``, ``study.md`` and ``fidelity-vs-images.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(result, indent=1, default=str))
    (folder / "records.json").write_text(json.dumps(records))
    (folder / "study.md").write_text("\n".join(markdown(result)) + "\n")
    summary.plot(result["halves"], folder / "fidelity-vs-images.png")


def markdown(result: dict | None) -> list[str]:
    """The two halves side by side."""
    if not result or "halves" not in result:
        return []
    t, h = result["halves"]
    samples = sorted(t["lime"], key=int)
    top = samples[-1]

    def row(name, f):
        return f"| {name} | {f(t)} | {f(h)} |"

    def cal(key):
        return lambda s: (f"{s[key]['error']:.3f} / {s[key]['worst_bin_error']:.3f}"
                          if s[key] else "-")

    lines = ["## num_samples='auto' in two halves (limefast.benchsuite.study)", "",
             f"Defaults: target_overlap {result['target']}, spread {result['spread']}; "
             f"{len(result['cases'])} cases. Overlap: mean top-5 overlap with the reference per "
             "explained label; images: mean per explanation.", "",
             "| | tuning half | held-out half |", "| --- | --- | --- |",
             row("lime " + " / ".join(map(str, samples)) + ": overlap",
                 lambda s: " / ".join(f"{s['lime'][n]['overlap']:.3f}" for n in samples)),
             row("auto: overlap", lambda s: f"{s['auto']['overlap']:.3f}"),
             row(f"auto: mean images (x fewer than lime at {top})",
                 lambda s: f"{s['auto']['images']:.0f} ({s['saving']:.2f}x)"),
             row("auto: largest mean images of a setting",
                 lambda s: f"{s['auto']['max_setting_images']:.0f}"),
             row("auto: explanations at the cap", lambda s: f"{s['auto']['at_cap']:.0%}"),
             row("stated vs measured, all runs: overall / worst quartile",
                 cal("calibration_all")),
             row("the same, auto only", cal("calibration_auto")),
             row(f"90% interval coverage: lime at {top} / auto",
                 lambda s: f"{s['coverage_lime_1000']:.1%} / {s['coverage_auto']:.1%}"), ""]
    flat = result.get("flat_models", [])
    if flat:
        lines += ["Flat models: " + ", ".join(sorted({f"{f['model']} {f['images']} images "
                                                      f"({f['stop_reason']})" for f in flat})),
                  ""]
    return lines
