"""``python -m limefast.benchsuite.study [--quick] [--tune] --out DIR``.

Without ``--tune``: both halves measured at the configured defaults (``config.AUTO_SPREAD``,
``config.AUTO_TARGET_OVERLAP``, ``config.AUTO_MIN_GAIN``), written to ``DIR/study.json``,
``DIR/study.md`` and the plot ``DIR/fidelity-vs-images.png``. With ``--tune``: the tuning half
only, over a grid of targets and least gains, and the values ``measure.tune`` would choose
(``DIR/tuning.json``); the held-out half is not touched. The references are cached in ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m limefast.benchsuite.study")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    p.add_argument("--tune", action="store_true", help="choose the defaults on the tuning half")
    p.add_argument("--per-cell", type=int, help="images per (model, segmenter, fill) and half "
                   "(default 3)")
    p.add_argument("--seeds", type=int, help="seeds per case (default 2; --tune: 3)")
    p.add_argument("--held-out-only", action="store_true",
                   help="measure the held-out half alone (the tuning half's figures come from "
                        "--tune)")
    p.add_argument("--targets", type=float, nargs="*",
                   help='"auto" targets measured besides the default (default 0.85 0.9 0.97)')
    args = p.parse_args(argv)

    import dataclasses

    from . import cases, measure, run

    args.out.mkdir(parents=True, exist_ok=True)
    cfg = run.StudyConfig.quick() if args.quick else run.StudyConfig()
    sizes = {k: v for k, v in (("per_cell", args.per_cell), ("targets", args.targets))
             if v is not None}
    if args.seeds is not None:  # --tune replays its own seeds (measure.TUNE_SEEDS)
        sizes.update({"extra": {**cfg.extra, "tune_seeds": args.seeds}} if args.tune
                     else {"seeds": args.seeds})
    cfg = dataclasses.replace(cfg, **{k: tuple(v) if k == "targets" else v
                                      for k, v in sizes.items()})
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    if args.tune:
        out, _ = measure.tune(cfg, args.out, args.quick, log)
        (args.out / "tuning.json").write_text(json.dumps(out, indent=1, default=str))
        keys = ("sampler", "target", "min_gain", "met", "gap", "saving")
        print(json.dumps({fill: {k: c[k] for k in keys} for fill, c in out["chosen"].items()},
                         indent=1))
        return 0
    halves = ("held-out",) if args.held_out_only else None
    result, records = measure.evaluate(cfg, args.out, log, halves or cases.HALVES)
    measure.write(result, records, args.out)
    print("\n".join(measure.markdown(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
