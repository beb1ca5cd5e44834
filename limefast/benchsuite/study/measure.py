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
             log=lambda m: None, halves=cases.HALVES) -> tuple[dict, list[dict]]:
    """Both halves at ``config.AUTO_SPREAD`` and the explainer's defaults of ``"auto"`` for
    each fill (``rounds.auto_defaults``; and "auto" at ``cfg.targets`` for the plot):
    (result, records). ``folder`` caches the references."""
    from limefast import config
    from limefast.core.sampling import SAMPLERS
    from limefast.device._torch import torch_threads

    cfg = cfg or run.StudyConfig()
    t0, cpu0 = time.perf_counter(), time.process_time()
    models, all_cases, study = _setup(cfg, folder, log, halves)
    from limefast.core.rounds import auto_defaults

    spread, target = config.AUTO_SPREAD, run.DEFAULT
    targets = (target,) + tuple(sorted(set(cfg.targets)))
    records = []
    with torch_threads(1):
        for i, case in enumerate(all_cases):
            records += study.fixed(case, (spread,), SAMPLERS)
            records += study.auto(case, spread, targets)
            log(f"case {i + 1}/{len(all_cases)} ({case.half})")
        flat = run.flat_check(models, cfg)
    halves = [summary.half_summary(records, half, cfg.samples, spread, target, targets[1:])
              for half in halves]
    result = {"config": run.config_record(cfg), "spread": spread, "target": target,
              "defaults": {"mean": auto_defaults(None), "constant": auto_defaults(0)},
              "gain_floor": config.AUTO_GAIN_FLOOR,
              "models": {k: {"description": m.description, "test_accuracy": m.accuracy}
                         for k, m in models.items()},
              "cases": [vars(c) for c in all_cases], "halves": halves, "flat_models": flat,
              "wall_seconds": time.perf_counter() - t0,
              "cpu_seconds": time.process_time() - cpu0}
    return result, records


def tune(cfg: run.StudyConfig | None = None, folder: Path | None = None, quick=False,
         log=lambda m: None) -> tuple[dict, list[dict]]:
    """The tuning half only (the held-out half's models and images are not even loaded): per
    fill (the mean fill, ``hide_color=None``, and a constant one), the row design
    (``sampling.SAMPLERS``), ``target_overlap`` and ``min_gain`` of the grid with the fewest
    images that stay within ``MARGINS`` of lime's 1000 rows, scored on every prefix of
    ``TUNE_SEEDS`` seeds' rows of each design (``folder/scored.pkl`` keeps the scores, so a
    new selection rule replays without the model); and the calibration of the stated figure
    (``config.AUTO_SPREAD``) on the fixed counts of every design."""
    import pickle

    from limefast.core.sampling import SAMPLERS
    from limefast.device._torch import torch_threads

    from . import trajectory

    cfg = cfg or run.StudyConfig()
    _, tuning, study = _setup(cfg, folder, log, halves=("tuning",))
    seeds = range(1 if quick else cfg.extra.get("tune_seeds", TUNE_SEEDS))
    scored = {sampler: [] for sampler in SAMPLERS}
    with torch_threads(1):
        for i, case in enumerate(tuning):
            ref = study.reference(case)
            for seed in seeds:
                for sampler in SAMPLERS:
                    rows = trajectory.capture_case(study, case, seed, sampler=sampler)
                    scored[sampler].append({"case": vars(case), "seed": seed,
                                            "score": trajectory.score(rows, ref, cfg.top_k)})
            log(f"tuning {i + 1}/{len(tuning)}")
    if folder is not None:
        (folder / "scored.pkl").write_bytes(pickle.dumps(scored))
    return select(scored, cfg, quick), scored


def select(scored: dict, cfg: run.StudyConfig, quick: bool = False) -> dict:
    """The choice of ``tune`` from the scored runs of each design: per fill, the grid point
    (design, target, least gain) with the fewest images among those within ``MARGINS`` of
    lime's 1000 rows on that fill, overall and on every model (else the one closest to its
    margins)."""
    from limefast import config
    from limefast.core.sampling import SAMPLERS

    from . import trajectory

    top = max(cfg.samples)
    lime_rows = trajectory.lime_records(scored["lime"], top)
    grid = {}
    for sampler in SAMPLERS:
        for target in ((0.9,) if quick else TARGETS):
            for gain in ((0.05,) if quick else MIN_GAINS):
                rows = trajectory.simulate(scored[sampler], target, gain)
                grid[(sampler, target, gain)] = {
                    fill: {**summary.fidelity([r for r in rows if r["fill"] == fill]),
                           **gaps([r for r in rows if r["fill"] == fill],
                                  [r for r in lime_rows if r["fill"] == fill], fill)}
                    for fill in sorted({r["fill"] for r in lime_rows})}
    chosen = {}
    for fill in sorted({r["fill"] for r in lime_rows}):
        good = [k for k, v in grid.items() if v[fill]["worst_gap"] >= 0]
        best = min(good, key=lambda k: grid[k][fill]["images"]) if good else max(
            grid, key=lambda k: grid[k][fill]["worst_gap"])
        chosen[fill] = {"sampler": best[0], "target": best[1], "min_gain": best[2],
                        "met": bool(good), **grid[best][fill],
                        "saving": top / grid[best][fill]["images"]}
    fixed = {s: [r for n in cfg.samples for r in trajectory.lime_records(scored[s], n)]
             for s in SAMPLERS}
    return {"chosen": chosen, "margins": MARGINS, "seeds": len({i["seed"] for i in
                                                                  scored["lime"]}),
            "spread": config.AUTO_SPREAD,
            "calibration_fixed": {s: summary.calibration(v) for s, v in fixed.items()},
            "fixed": {s: {str(n): by(trajectory.lime_records(scored[s], n), "fill")
                          for n in cfg.samples} for s in SAMPLERS},
            "grid": [{"sampler": d, "target": t, "min_gain": g, "fill": fill, **v,
                      "saving": top / v["images"]}
                     for (d, t, g), per_fill in grid.items() for fill, v in per_fill.items()]}


# How far below lime's 1000 rows the tuning half's mean overlap may fall, per fill (overall and
# on every model): the held-out targets (0.01 with the mean fill, 0.02 with a constant fill
# and on every model) less what is kept for the noise between the halves.
MARGINS = {"mean": 0.0075, "zero": 0.0175, "model": 0.0175}


def by(rows: list[dict], key: str) -> dict:
    """``summary.fidelity`` of the records grouped by ``key``."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return {k: summary.fidelity(v) for k, v in sorted(groups.items())}


def gaps(rows: list[dict], lime_rows: list[dict], fill: str) -> dict:
    """The overlap of ``rows`` (one fill's) less lime's at 1000 (``lime_rows``), overall and
    per model, and the least slack against the margins (negative: a margin missed)."""
    overall = summary.fidelity(rows)["overlap"] - summary.fidelity(lime_rows)["overlap"]
    ours, theirs = by(rows, "model"), by(lime_rows, "model")
    model = {k: ours[k]["overlap"] - theirs[k]["overlap"] for k in ours}
    slack = [overall + MARGINS[fill]] + [v + MARGINS["model"] for v in model.values()]
    return {"gap": overall, "gap_by_model": model, "worst_gap": min(slack)}


def write(result: dict, records: list[dict], folder: Path) -> None:
    """``study.json``, ``records.json``, ``study.md`` and ``fidelity-vs-images.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(result, indent=1, default=str))
    (folder / "records.json").write_text(json.dumps(records))
    (folder / "study.md").write_text("\n".join(markdown(result)) + "\n")
    summary.plot(result["halves"], folder / "fidelity-vs-images.png")


def markdown(result: dict | None) -> list[str]:
    """The halves side by side (the held-out half alone after ``--held-out-only``)."""
    if not result or "halves" not in result:
        return []
    halves = result["halves"]
    samples = sorted(halves[0]["lime"], key=int)
    top = samples[-1]

    def row(name, f):
        return f"| {name} | " + " | ".join(f(h) for h in halves) + " |"

    def cal(key):
        return lambda s: (f"{s[key]['error']:.3f} / {s[key]['worst_bin_error']:.3f}"
                          if s.get(key) else "-")

    def gap(group, name):
        def f(s):
            g = s.get(group, {}).get(name)
            if not g:
                return "-"
            lime, auto = g["lime"], g["auto"]
            saving = lime["images"] / auto["images"] if auto["images"] else float("nan")
            return (f"{auto['overlap']:.3f} vs {lime['overlap']:.3f} "
                    f"({auto['overlap'] - lime['overlap']:+.3f}), {saving:.2f}x")
        return f

    designs = sorted({d for h in halves for d in h.get("calibration_by_design", {})})
    fills = sorted({f for h in halves for f in h.get("by_fill", {})})
    models = sorted({m for h in halves for m in h.get("by_model", {})})
    lines = ["## The sampling study in two halves (limefast.benchsuite.study)", "",
             "Defaults of \"auto\" (sampler, target_overlap, min_gain): " + "; ".join(
                 f"{fill} fill {d['sampler']}, {d['target_overlap']}, {d['min_gain']}"
                 for fill, d in result.get("defaults", {}).items())
             + f"; spread {result['spread']}; {len(result['cases'])} cases. Overlap: mean top-5 "
             "overlap with the reference per explained label; images: mean per explanation.",
             "",
             "| | " + " | ".join(f"{h['half']} half" for h in halves) + " |",
             "| --- |" + " --- |" * len(halves),
             row("lime " + " / ".join(map(str, samples)) + ": overlap",
                 lambda s: " / ".join(f"{s['lime'][n]['overlap']:.3f}" for n in samples)),
             row("auto: overlap", lambda s: f"{s['auto']['overlap']:.3f}"),
             row(f"auto: mean images (x fewer than lime at {top})",
                 lambda s: f"{s['auto']['images']:.0f} ({s['saving']:.2f}x)"),
             row("auto: largest mean images of a setting",
                 lambda s: f"{s['auto']['max_setting_images']:.0f}"),
             row("auto: explanations at the cap", lambda s: f"{s['auto']['at_cap']:.0%}")]
    lines += [row(f"fill {fill}: auto vs lime at {top}, images saved", gap("by_fill", fill))
              for fill in fills]
    lines += [row(f"model {m}: auto vs lime at {top}", gap("by_model", m)) for m in models]
    lines += [row("stated vs measured, all runs: overall / worst quartile",
                  cal("calibration_all")),
              row("the same, auto only", cal("calibration_auto"))]
    lines += [row(f"the same, {d} rows (fixed counts and auto)",
                  lambda s, d=d: cal(d)(s.get("calibration_by_design", {})))
              for d in designs]
    lines += [row(f"90% interval coverage: lime at {top} / auto",
                  lambda s: f"{s['coverage_lime_1000']:.1%} / {s['coverage_auto']:.1%}")]
    lines += [row(f"90% interval coverage, {d} rows",
                  lambda s, d=d: f"{s.get('coverage_by_design', {}).get(d, float('nan')):.1%}")
              for d in designs]
    lines.append("")
    flat = result.get("flat_models", [])
    if flat:
        lines += ["Flat models: " + ", ".join(sorted({f"{f['model']} {f['images']} images "
                                                      f"({f['stop_reason']})" for f in flat})),
                  ""]
    return lines
