"""What the study's records say, per half: fidelity, images, calibration, coverage; the tuning
of the defaults on the tuning half; the plot."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

BINS = 4


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def lime_rows(records, half, n: int, spread: float) -> list[dict]:
    """lime at ``n`` rows, as top_labels=1 (the first label) and top_labels=3 runs."""
    fixed = [r for r in records if r["half"] == half and r["setting"] == str(n)
             and r["spread"] == spread]
    out = []
    by_run = defaultdict(list)
    for r in fixed:
        by_run[(r["case"], r["seed"])].append(r)
    for rows in by_run.values():
        out += [{**rows[0], "top_labels": 1}] + [{**r, "top_labels": r["top_labels"]}
                                                  for r in rows]
    return out


def auto_rows(records, half, spread: float, target: float) -> list[dict]:
    """The "auto" records at (spread, target)."""
    return [r for r in records if r["half"] == half and r["setting"] == "auto"
            and r["spread"] == spread and r["target"] == target]


def fidelity(rows) -> dict:
    """Mean top-5 overlap (labels with a flat reference left out), mean images per
    explanation, and the largest per-setting mean of images."""
    scored = [r for r in rows if not r["flat_reference"]]
    runs = {}
    for r in rows:  # one entry per explanation
        runs[(r["case"], r["seed"], r["top_labels"])] = r
    per_setting = defaultdict(list)
    for r in runs.values():
        per_setting[(r["model"], r["segmenter"], r["fill"], r["top_labels"])].append(
            r["images"])
    means = {k: float(np.mean(v)) for k, v in per_setting.items()}
    worst = max(means, key=means.get) if means else None
    return {"overlap": _mean(r["overlap"] for r in scored), "labels": len(scored),
            "explanations": len(runs), "images": _mean(r["images"] for r in runs.values()),
            "max_setting_images": means.get(worst, float("nan")),
            "max_setting": "/".join(map(str, worst)) if worst else None,
            "at_cap": _mean(r["images"] >= 1000 for r in runs.values())}


def calibration(rows) -> dict:
    """Stated expected overlap against the measured overlap: overall and in quartile bins of
    the stated figure."""
    rows = [r for r in rows if not r["flat_reference"] and np.isfinite(r["stated"])]
    if not rows:
        return {}
    stated = np.array([r["stated"] for r in rows])
    overlap = np.array([r["overlap"] for r in rows])
    edges = np.quantile(stated, np.linspace(0, 1, BINS + 1))
    which = np.clip(np.searchsorted(edges[1:-1], stated, side="right"), 0, BINS - 1)
    bins = []
    for b in range(BINS):
        m = which == b
        if m.any():
            bins.append({"from": float(stated[m].min()), "to": float(stated[m].max()),
                         "n": int(m.sum()), "stated": float(stated[m].mean()),
                         "measured": float(overlap[m].mean())})
    gaps = [abs(b["stated"] - b["measured"]) for b in bins]
    return {"n": len(rows), "stated": float(stated.mean()), "measured": float(overlap.mean()),
            "error": float(abs(stated.mean() - overlap.mean())), "worst_bin_error":
            float(max(gaps)), "bins": bins}


def coverage(rows) -> float:
    covered = sum(r.get("covered", 0) for r in rows if not r["flat_reference"])
    total = sum(r.get("features", 0) for r in rows if not r["flat_reference"])
    return covered / total if total else float("nan")


def half_summary(records, half, samples, spread, target, targets=()) -> dict:
    """Everything the report gives for one half at one (spread, target)."""
    lime = {n: fidelity(lime_rows(records, half, n, spread)) for n in samples}
    auto = fidelity(auto_rows(records, half, spread, target))
    fixed_all = [r for r in records if r["half"] == half and r["setting"] != "auto"
                 and r["spread"] == spread]
    top = max(samples)
    return {
        "half": half, "spread": spread, "target": target, "lime": lime, "auto": auto,
        "auto_targets": {t: fidelity(auto_rows(records, half, spread, t)) for t in targets},
        "auto_by_top_labels": {tl: fidelity([r for r in auto_rows(records, half, spread, target)
                                             if r["top_labels"] == tl]) for tl in (1, 2, 3)},
        "lime_by_top_labels": {tl: fidelity([r for r in lime_rows(records, half, top, spread)
                                             if r["top_labels"] == tl]) for tl in (1, 2, 3)},
        "saving": lime[top]["images"] / auto["images"] if auto["images"] else float("nan"),
        "overlap_gap": auto["overlap"] - lime[top]["overlap"],
        "calibration_all": calibration(fixed_all + auto_rows(records, half, spread, target)),
        "calibration_fixed": calibration(fixed_all),
        "calibration_auto": calibration(auto_rows(records, half, spread, target)),
        # every design's stated figure, its fixed counts and its "auto" runs together
        "calibration_by_design": {
            s: calibration([r for r in fixed_all + auto_rows(records, half, spread, target)
                            if r.get("sampler", "lime") == s])
            for s in sorted({r.get("sampler", "lime") for r in fixed_all})},
        "coverage_by_design": {
            s: coverage([r for r in fixed_all + auto_rows(records, half, spread, target)
                         if r.get("sampler", "lime") == s])
            for s in sorted({r.get("sampler", "lime") for r in fixed_all})},
        "by_fill": {fill: {"lime": fidelity([r for r in lime_rows(records, half, top, spread)
                                             if r["fill"] == fill]),
                           "auto": fidelity([r for r in auto_rows(records, half, spread, target)
                                             if r["fill"] == fill])}
                    for fill in sorted({r["fill"] for r in fixed_all})},
        "by_model": {m: {"lime": fidelity([r for r in lime_rows(records, half, top, spread)
                                           if r["model"] == m]),
                         "auto": fidelity([r for r in auto_rows(records, half, spread, target)
                                           if r["model"] == m])}
                     for m in sorted({r["model"] for r in fixed_all})},
        "coverage_lime_1000": coverage([r for r in fixed_all if r["setting"] == str(top)]),
        "coverage_auto": coverage(auto_rows(records, half, spread, target)),
        "stop_reasons": dict(_count(r["stop_reason"] for r in auto_rows(records, half, spread,
                                                                         target))),
    }


def _count(values):
    out = defaultdict(int)
    for v in values:
        out[v] += 1
    return out


def plot(summaries, path) -> None:
    """Fidelity (top-5 overlap) against images through the model: lime's fixed counts as a
    line, "auto" at each target as points, one panel per half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5 * len(summaries), 4), sharey=True)
    for ax, s in zip(np.atleast_1d(axes), summaries):
        ns = sorted(s["lime"])
        ax.plot([s["lime"][n]["images"] for n in ns], [s["lime"][n]["overlap"] for n in ns],
                "o-", label="lime (fixed num_samples)")
        pts = sorted(s["auto_targets"].items())
        ax.plot([v["images"] for _, v in pts], [v["overlap"] for _, v in pts], "s--",
                color="tab:orange", alpha=0.6, label='"auto" at other targets')
        for t, v in pts:
            ax.annotate(f"{t:g}", (v["images"], v["overlap"]), fontsize=7)
        ax.plot([s["auto"]["images"]], [s["auto"]["overlap"]], "*", ms=14, color="tab:red",
                label='"auto" at its defaults')
        ax.set_title(f'{s["half"]} half')
        ax.set_xlabel("images through the model (mean)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("top-5 overlap with 16000-row reference")
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
