"""The study as functions: ``evaluate`` (both halves at the configured defaults), ``tune`` (the
tuning half only, the defaults it would choose), ``write`` and ``markdown``.

``tune`` scores the rule without running "auto": each tuning case's 1000 rows are drawn once
per seed, and every prefix is scored (``trajectory``); "auto" at any (target_overlap,
min_gain) is then the prefix where ``adaptive.decide`` stops it. ``evaluate`` runs the chosen
defaults for real on both halves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import cases, run, summary

TARGETS = (0.9, 0.92, 0.95, 0.97)
MIN_GAINS = (0.0, 0.03, 0.04, 0.05, 0.06, 0.08)
MARGIN = 0.0175  # the tuning half's overlap may fall this far below lime's at 1000 (the
# held-out target allows 0.02; the rest is kept for the noise between halves)
TUNE_SEEDS = 3


def _setup(cfg: run.StudyConfig, folder: Path | None, log, halves=cases.HALVES):
    from limefast.device._torch import torch_threads

    names = [m for m in cfg.models if "held-out" in halves or m not in cases.HELD_OUT_ONLY]
    with torch_threads(1):
        models = cases.load_models(names)
    all_cases = cases.study_cases(models, cfg.per_cell, halves)
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
              "min_gain": config.AUTO_MIN_GAIN, "gain_floor": config.AUTO_GAIN_FLOOR,
              "models": {k: {"description": m.description, "test_accuracy": m.accuracy}
                         for k, m in models.items()},
              "cases": [vars(c) for c in all_cases], "halves": halves, "flat_models": flat,
              "wall_seconds": time.perf_counter() - t0,
              "cpu_seconds": time.process_time() - cpu0}
    return result, records


def tune(cfg: run.StudyConfig | None = None, folder: Path | None = None, quick=False,
         log=lambda m: None) -> tuple[dict, list[dict]]:
    """The tuning half only (the held-out half's models and images are not even loaded): the
    (target_overlap, min_gain) of the grid with the fewest images whose mean overlap reaches
    lime's at 1000 less ``MARGIN``, scored on every prefix of ``TUNE_SEEDS`` seeds' rows;
    and the calibration of the stated figure (``config.AUTO_SPREAD``) on lime's fixed
    counts."""
    from limefast import config
    from limefast.device._torch import torch_threads

    from . import trajectory

    cfg = cfg or run.StudyConfig()
    _, tuning, study = _setup(cfg, folder, log, halves=("tuning",))
    seeds = range(1 if quick else TUNE_SEEDS)
    scored = []
    with torch_threads(1):
        for i, case in enumerate(tuning):
            ref = study.reference(case)
            for seed in seeds:
                rows = trajectory.capture_case(study, case, seed)
                scored.append({"case": vars(case), "seed": seed,
                               "score": trajectory.score(rows, ref, cfg.top_k)})
            log(f"tuning {i + 1}/{len(tuning)}")
    lime = {n: summary.fidelity(trajectory.lime_records(scored, n)) for n in cfg.samples}
    top = max(cfg.samples)
    grid = {}
    for target in ((0.9,) if quick else TARGETS):
        for gain in ((0.05,) if quick else MIN_GAINS):
            grid[(target, gain)] = summary.fidelity(trajectory.simulate(scored, target, gain))
    good = [k for k, v in grid.items() if v["overlap"] >= lime[top]["overlap"] - MARGIN]
    best = min(good, key=lambda k: grid[k]["images"]) if good else max(
        grid, key=lambda k: grid[k]["overlap"])
    fixed = [r for n in cfg.samples for r in trajectory.lime_records(scored, n)]
    return {"target": best[0], "min_gain": best[1], "margin": MARGIN, "seeds": len(seeds),
            "spread": config.AUTO_SPREAD, "calibration_fixed": summary.calibration(fixed),
            "lime": {str(n): v for n, v in lime.items()},
            "grid": [{"target": t, "min_gain": g, **v, "overlap_gap": v["overlap"] -
                      lime[top]["overlap"], "saving": top / v["images"]}
                     for (t, g), v in grid.items()]}, scored


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
             f"Defaults: target_overlap {result['target']}, min_gain "
             f"{result.get('min_gain')}, spread {result['spread']}; "
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
