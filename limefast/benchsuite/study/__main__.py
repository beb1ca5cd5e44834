"""``python -m limefast.benchsuite.study [--quick] [--tune] --out DIR``.

Without ``--tune``: both halves measured at the configured defaults (``config.AUTO_SPREAD``,
``config.AUTO_TARGET_OVERLAP``), written to ``DIR/study.json`` and ``DIR/study.md`` with the plot
``DIR/fidelity-vs-images.png``. With ``--tune``: the tuning half only, over a grid of spreads
and targets, and the values ``tune`` would choose (``DIR/tuning.json``); the held-out half is
not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

SPREADS = (0.8, 0.9, 1.0, 1.1, 1.25)
TARGETS = (0.85, 0.9, 0.92, 0.94, 0.96, 0.98)
MARGIN = 0.01  # the tuning half's overlap may fall this far below lime's at 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m limefast.benchsuite.study")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    p.add_argument("--tune", action="store_true", help="choose the defaults on the tuning half")
    args = p.parse_args(argv)

    import torch

    from limefast import config
    from limefast.device._torch import torch_threads

    from . import cases, run, summary

    args.out.mkdir(parents=True, exist_ok=True)
    cfg = run.StudyConfig.quick() if args.quick else run.StudyConfig()
    t0, cpu0 = time.perf_counter(), time.process_time()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    with torch_threads(1):
        models = cases.load_models(cfg.models)
        all_cases = cases.build_cases(models, cfg.per_cell)
        study = run.Study(models, all_cases, cfg, args.out)
        log(f"{len(all_cases)} cases")
        records = []
        if args.tune:
            tuning = [c for c in all_cases if c.half == "tuning"]
            spreads = (1.0, 1.5) if args.quick else SPREADS
            for i, case in enumerate(tuning):
                records += study.fixed(case, spreads)
                log(f"tuning fixed {i + 1}/{len(tuning)}")
            spread, scores = summary.choose_spread(records, spreads)
            targets = (0.9,) if args.quick else TARGETS
            for i, case in enumerate(tuning):
                records += study.auto(case, spread, targets)
                log(f"tuning auto {i + 1}/{len(tuning)}")
            target, fid = summary.choose_target(records, spread, targets, cfg.samples, MARGIN)
            out = {"spread": spread, "target": target,
                   "calibration_by_spread": scores,
                   "fidelity_by_target": fid, "margin": MARGIN,
                   "summary": summary.half_summary(records, "tuning", cfg.samples, spread,
                                                   target, targets)}
            (args.out / "tuning.json").write_text(json.dumps(out, indent=1, default=str))
            (args.out / "tuning-records.json").write_text(json.dumps(records))
            print(json.dumps({"spread": spread, "target": target}, indent=1))
            return 0
        spread, target = config.AUTO_SPREAD, config.AUTO_TARGET_OVERLAP
        targets = tuple(sorted(set(cfg.targets) | {target}))
        for i, case in enumerate(all_cases):
            records += study.fixed(case, (spread,))
            records += study.auto(case, spread, targets)
            log(f"case {i + 1}/{len(all_cases)} ({case.half})")
        flat = run.flat_check(models, replace(cfg))
    halves = [summary.half_summary(records, half, cfg.samples, spread, target, targets)
              for half in cases.HALVES]
    result = {"config": run.config_record(cfg), "spread": spread, "target": target,
              "models": {k: {"description": m.description, "test_accuracy": m.accuracy}
                         for k, m in models.items()},
              "cases": [vars(c) for c in all_cases], "halves": halves, "flat_models": flat,
              "wall_seconds": time.perf_counter() - t0,
              "cpu_seconds": time.process_time() - cpu0}
    (args.out / "study.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "records.json").write_text(json.dumps(records))
    summary.plot(halves, args.out / "fidelity-vs-images.png")
    print(json.dumps({h["half"]: {k: h[k] for k in ("saving", "overlap_gap")} | {
        "auto": h["auto"], "lime_1000": h["lime"][max(cfg.samples)],
        "calibration": h["calibration_all"], "coverage_auto": h["coverage_auto"],
        "coverage_lime": h["coverage_lime_1000"]} for h in halves} | {"flat": flat},
        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
