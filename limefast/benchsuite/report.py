"""Turning suite results into a report: JSON, a Markdown table, log-log plots with slopes, and
the sampling study's table and plot (limefast.benchsuite.study)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from limefast.optional import available

from . import serving
from . import targets as target_file

PARAM_LABELS = {"side": "image side (pixels)", "samples": "num_samples",
                "superpixels": "superpixels", "labels": "explained labels",
                "images": "images per explain_batch"}


def slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = (xs > 0) & (ys > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)[0])


def scaling_slopes(scaling: dict) -> dict:
    """Per sweep: slopes of lime's and limefast's totals and of limefast's perturbation stage."""
    out = {}
    for param, points in scaling.items():
        xs = [p["value"] for p in points]
        entry = {
            "limefast_total": slope(xs, [p["limefast"]["seconds"] for p in points]),
            "limefast_perturbation": slope(
                xs, [p["limefast"]["stages"]["perturbation"] for p in points]),
        }
        with_ref = [p for p in points if "lime" in p]
        if len(with_ref) >= 2:
            entry["lime_total"] = slope([p["value"] for p in with_ref],
                                        [p["lime"]["seconds"] for p in with_ref])
            entry["lime_perturbation"] = slope([p["value"] for p in with_ref],
                                               [p["lime"]["stages"]["perturbation"]
                                                for p in with_ref])
        out[param] = entry
    return out


def markdown(results: dict) -> str:
    features = (results["machine"].get("cpu_features") or {}).get("described")
    lines = [f"# limefast benchmark: {results['machine'].get('processor', '?')}, "
             f"{results['date']}", "",
             f"CPU features: {features or 'not recorded (no torch)'}", "",
             "```", json.dumps(results["machine"]), "```", ""]
    e2e = results.get("end_to_end", [])
    ref = next((r["seconds"] for r in e2e if r.get("impl") == "lime" and "seconds" in r), None)
    if e2e:
        lines += ["## End to end (224x224 photo, default quickshift, cheap model)", "",
                  "| implementation | seconds | vs lime | segmentation | sampling | perturbation "
                  "| model | surrogate | max rel. diff | top-5 overlap |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in e2e:
            if "seconds" not in r:
                lines.append(f"| {r['impl']} | skipped: {r.get('skipped')} |||||||||")
                continue
            s = r["stages"]
            st = [f"{s.get(k, float('nan')) * 1e3:.1f} ms" if k in s else "" for k in
                  ("segmentation", "sampling", "perturbation", "model", "surrogate")]
            lines.append(
                f"| {r['impl']} | {r['seconds']:.3f} | "
                f"{(ref / r['seconds']) if ref else float('nan'):.1f}x | " + " | ".join(st)
                + f" | {_fmt(r.get('max_rel_weight_diff'))} | {_fmt(r.get('top5_overlap'))} |")
        lines.append("")
    if results.get("models"):
        lines += ["## Models (random weights)", "",
                  "| model | implementation | seconds | vs lime | model share | top-5 overlap | "
                  "Spearman |", "|---|---|---|---|---|---|---|"]
        refs = {r["model"]: r["seconds"] for r in results["models"]
                if r.get("impl") == "lime" and "seconds" in r}
        for r in results["models"]:
            if "seconds" not in r:
                lines.append(f"| {r.get('model', '')} | {r.get('impl', '')} | skipped: "
                             f"{r.get('skipped')} ||||")
                continue
            share = r["stages"]["model"] / r["seconds"]
            lines.append(f"| {r['model']} | {r['impl']} | {r['seconds']:.2f} | "
                         f"{refs.get(r['model'], float('nan')) / r['seconds']:.2f}x | "
                         f"{share:.0%} | {_fmt(r.get('top5_overlap'))} | "
                         f"{_fmt(r.get('spearman'))} |")
        lines.append("")
    if results.get("slopes"):
        lines += ["## Scaling (log-log slopes)", "",
                  "| parameter | lime total | limefast total | lime perturbation | "
                  "limefast perturbation |", "|---|---|---|---|---|"]
        for param, s in results["slopes"].items():
            lines.append(f"| {PARAM_LABELS[param]} | {_fmt(s.get('lime_total'))} | "
                         f"{_fmt(s['limefast_total'])} | {_fmt(s.get('lime_perturbation'))} | "
                         f"{_fmt(s['limefast_perturbation'])} |")
        lines.append("")
    if results.get("latency"):
        lat = results["latency"]
        lines += ["## Latency (single explanations, cheap model, segments given)", "",
                  f"p50 {lat['p50'] * 1e3:.1f} ms, p99 {lat['p99'] * 1e3:.1f} ms over "
                  f"{lat['repeats']} explanations ({lat['side']}x{lat['side']}, "
                  f"{lat['num_samples']} samples)", ""]
    lines += cold_start_markdown(results.get("cold_start"))
    if results.get("auto"):
        from .study import measure

        lines += measure.markdown(results["auto"])
    lines += kernelshap_markdown(results.get("kernelshap"))
    lines += serving.markdown(results.get("serve"))
    checks = targets(results)
    if checks:
        lines += ["## Targets of the issues", "", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {name} | {value} | {'met' if ok else 'MISSED'} |"
                  for name, value, ok in checks]
        lines.append("")
    lines += ["## Not measured here", ""] + [f"- {n}" for n in results.get("not_measured", [])]
    return "\n".join(lines) + "\n"


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """(target, measured value, met?) for every target this run measured: the targets of
    ``results["targets"]`` (what the run was checked against), else of ``benchmarks/targets.json``.
    """
    spec = results.get("targets") or target_file.load()
    out = []

    def add(key, value, measured, **fields):
        checked = target_file.check(spec, key, value, measured, **fields)
        if checked:
            out.append(checked)

    cold = results.get("cold_start")
    if cold:
        add("cold_import", cold["import_s"], f"{cold['import_s']:.3f} s")
        for row in cold["first_call"]:
            if row["pause_s"] >= 1.0:
                add("cold_first_call", row["first_extra_s"], f"+{row['first_extra_s']:.3f} s",
                    impl=f"{row['side']}x{row['side']}")
    e2e = {r["impl"]: r for r in results.get("end_to_end", []) if "seconds" in r}
    if "lime" in e2e and "limefast-cpu" in e2e:
        ratio = e2e["lime"]["seconds"] / e2e["limefast-cpu"]["seconds"]
        add("drop_in_speedup", ratio, f"{ratio:.1f}x")
        diff = e2e["limefast-cpu"].get("max_rel_weight_diff", float("nan"))
        add("drop_in_agreement", diff, f"{diff:.1e}")
    slopes = results.get("slopes", {})
    if "samples" in slopes:
        v = slopes["samples"]["limefast_perturbation"]
        add("perturbation_slope_samples", v, f"{v:.2f}")
    if "side" in slopes:
        v = slopes["side"]["limefast_perturbation"] / 2  # pixels = side^2
        add("perturbation_slope_pixels", v, f"{v:.2f}")
    if "superpixels" in slopes:
        v = slopes["superpixels"]["limefast_perturbation"]
        add("perturbation_slope_superpixels", v, f"{v:.2f}")
    held = next((h for h in results.get("auto", {}).get("halves", [])
                 if h["half"] == "held-out"), None)
    if held:
        for fill in ("mean", "zero"):
            group = held.get("by_fill", {}).get(fill)
            if group and group["auto"]["images"]:
                gap = group["auto"]["overlap"] - group["lime"]["overlap"]
                saving = group["lime"]["images"] / group["auto"]["images"]
                add(f"auto_{fill}_fill_overlap", gap, f"{gap:+.3f}")
                add(f"auto_{fill}_fill_saving", saving, f"{saving:.2f}x")
        models = held.get("by_model", {})
        if models:
            worst = min(m["auto"]["overlap"] - m["lime"]["overlap"] for m in models.values())
            add("auto_worst_model_overlap", worst, f"{worst:+.3f}")
        designs = held.get("calibration_by_design", {})
        if designs:
            v = max(c.get("worst_bin_error", float("nan")) for c in designs.values())
            add("design_calibration_worst_bin_error", v, f"{v:.3f}")
        coverages = list(held.get("coverage_by_design", {}).values())
        if coverages:
            v = max(coverages, key=lambda c: abs(c - 0.9))
            add("design_coverage", v, f"{v:.1%}")
        v = held["auto"]["max_setting_images"]
        add("auto_max_setting_images", v, f"{v:.0f}")
        for key in ("error", "worst_bin_error"):
            v = held["calibration_all"].get(key, float("nan"))
            add(f"auto_calibration_{key}", v, f"{v:.3f}")
        v = held["coverage_auto"]
        add("auto_coverage", v, f"{v:.1%}")
        v = max(f["images"] for f in results["auto"]["flat_models"])
        add("auto_flat_images", v, f"{v}")
    if results.get("kernelshap"):
        v = results["kernelshap"]["speed"]["speedup"]
        add("kernelshap_speedup", v, f"{v:.0f}x")
    for key, value, shown, fields in serving.target_values(results.get("serve")):
        add(key, value, shown, **fields)
    model_rows = [r for r in results.get("models", []) if "seconds" in r]
    for name in sorted({r["model"] for r in model_rows}):
        rows = {r["impl"]: r for r in model_rows if r["model"] == name}
        if "lime" not in rows:
            continue
        for impl, row in rows.items():
            if not impl.startswith("limefast-device-"):
                continue
            precision = impl.split("-")[2]  # limefast-device-<precision>[-<compile>]
            ratio = rows["lime"]["seconds"] / row["seconds"]
            add(f"device_{precision}_speedup", ratio, f"{ratio:.2f}x", model=name, impl=impl)
            outside = 1 - row["stages"]["model"] / row["seconds"]
            add("device_outside_forward", outside, f"{outside:.1%}", model=name, impl=impl)
    return out


def cold_start_markdown(cold: dict | None) -> list[str]:
    """The cold_start section: import, first calls, the command line."""
    if not cold:
        return []
    lines = ["## Cold start (fresh processes)", "",
             f"`import limefast`: {cold['import_s']:.3f} s (median of "
             f"{len(cold['import_all'])}).", "",
             "| image | pause after import | first call's extra | warm call |", "|---|---|---|---|"]
    for row in cold["first_call"]:
        lines.append(f"| {row['side']}x{row['side']} | {row['pause_s']:g} s | "
                     f"+{row['first_extra_s'] * 1e3:.0f} ms | {row['warm_s'] * 1e3:.0f} ms |")
    cli = cold["cli"]
    lines += ["", f"`limefast explain`, one 224x224 image, whole process: {cli['wall_s']:.2f} s "
              f"against a warm explanation's {cli['warm_s']:.3f} s ({cli['ratio']:.0f}x).", ""]
    return lines


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and np.isnan(x):
        return "n/a"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def kernelshap_markdown(section: dict | None) -> list[str]:
    """KernelSHAP against shap: the speed case, and images to reach the target correlation."""
    if not section:
        return []
    speed, conv = section["speed"], section["convergence"]
    lines = ["## KernelSHAP against shap's KernelExplainer", "",
             f"Speed: {speed['image']}, {speed['superpixels']} superpixels, "
             f"{speed['num_samples']} samples, {speed['model']}: limefast "
             f"{speed['limefast_seconds']:.3f} s, shap {speed['shap_seconds']:.2f} s "
             f"(**{speed['speedup']:.0f}x**; the two estimates correlate at "
             f"{speed['correlation_of_the_two']:.3f}).", "",
             f"Convergence: {conv['model']}, {conv['superpixels']} superpixels, "
             f"{conv['images']} images x {conv['seeds']} seeds; mean correlation with the "
             "exact Shapley values against the images the model saw.", "",
             "| images | " + " | ".join(conv["mean_correlation"]) + " |",
             "|---|" + "---|" * len(conv["mean_correlation"])]
    budgets = list(next(iter(conv["mean_correlation"].values())))
    for n in budgets:
        lines.append(f"| {n} | " + " | ".join(f"{c[n]:.3f}"
                                            for c in conv["mean_correlation"].values()) + " |")
    reach = ", ".join(f"{k}: {v if v is not None else 'not reached'}"
                      for k, v in conv["images_to_target"].items())
    lines += ["", f"Images to reach {conv['target']}: {reach}; shap at its defaults: "
              f"{conv['shap_defaults']['images']} images, correlation "
              f"{conv['shap_defaults']['mean_correlation']:.3f}.", ""]
    return lines


def plots(results: dict, folder: Path) -> list[Path]:
    """One log-log PNG per sweep (lime and limefast totals and perturbation stages), and the
    sampling study's convergence plot."""
    if not available("matplotlib"):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for param, points in results.get("scaling", {}).items():
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        s = results["slopes"][param]
        xs = [p["value"] for p in points]
        ax.loglog(xs, [p["limefast"]["seconds"] for p in points], "o-", color="tab:green",
                  label=f"limefast total (slope {s['limefast_total']:.2f})")
        ax.loglog(xs, [p["limefast"]["stages"]["perturbation"] for p in points], "o--",
                  color="tab:olive",
                  label=f"limefast perturbation (slope {s['limefast_perturbation']:.2f})")
        ref = [p for p in points if "lime" in p]
        if ref:
            rx = [p["value"] for p in ref]
            ax.loglog(rx, [p["lime"]["seconds"] for p in ref], "s-", color="tab:red",
                      label=f"lime total (slope {s.get('lime_total', float('nan')):.2f})")
            ax.loglog(rx, [p["lime"]["stages"]["perturbation"] for p in ref], "s--",
                      color="tab:pink", label="lime perturbation (slope "
                      f"{s.get('lime_perturbation', float('nan')):.2f})")
        ax.set_xlabel(PARAM_LABELS[param])
        ax.set_ylabel("seconds")
        ax.set_title(f"cost vs {PARAM_LABELS[param]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"scaling-{param}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    if results.get("auto", {}).get("halves"):
        from .study import summary as auto_summary

        auto_summary.plot(results["auto"]["halves"], folder / "auto-fidelity-vs-images.png")
        paths.append(folder / "auto-fidelity-vs-images.png")
    return paths
