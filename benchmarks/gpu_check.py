"""``make gpu-check``: everything a lent GPU machine should run, in one command, one JSON file.

    python3 benchmarks/gpu_check.py OUT.json [--dry-run]

1. the ``cuda``-marked tests (``pytest -m cuda tests``);
2. ``benchmarks/gpu_bench.py``: ResNet-18/50, fp32/fp16, against lime (when lime is importable:
   ``make gpu-wheels`` on a CPU machine puts its wheel in ``.whl/``, installed here into
   ``.gpu-site/`` without touching the machine's Python), with the share of time in the forward.

It uses ``python3`` as it finds it, builds no venv and downloads nothing; limefast comes from this
checkout (``PYTHONPATH``). Where there is no CUDA GPU it says so and exits 0. ``--dry-run`` runs
the same steps on the CPU at a small size (``device="cpu"``), so the script itself is known to
work before a GPU is lent. Prints one summary line; the budget is 8 minutes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(extra_path: str | None) -> dict:
    env = dict(os.environ)
    paths = [ROOT] + ([extra_path] if extra_path else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _lime_site() -> str | None:
    """Install lime from ``.whl/`` into ``.gpu-site/`` (no dependencies, no index)."""
    wheels = sorted(glob.glob(os.path.join(ROOT, ".whl", "lime-*.whl")))
    if not wheels:
        return None
    site = os.path.join(ROOT, ".gpu-site")
    if not glob.glob(os.path.join(site, "lime")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--target", site, wheels[-1]], check=False)
    return site


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the JSON report")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, small sizes")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict = {"dry_run": args.dry_run}
    try:
        import torch

        gpu = torch.cuda.is_available()
        report["gpu"] = torch.cuda.get_device_name(0) if gpu else None
    except ImportError:
        gpu = False
        report["gpu"] = None
    if not gpu and not args.dry_run:
        print("gpu-check: no CUDA GPU is visible here; nothing to check (run it on a GPU "
              "machine, or pass --dry-run to try the script on the CPU)")
        return 0
    env = _env(_lime_site())
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p",
                            "no:cacheprovider", os.path.join(ROOT, "tests")],
                           env=env, capture_output=True, text=True, timeout=300)
    tail = (tests.stdout + tests.stderr).strip().splitlines()
    report["tests"] = {"exit": tests.returncode, "summary": tail[-1] if tail else ""}
    bench_json = os.path.abspath(args.out) + ".bench.json"
    bench = [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_bench.py"), bench_json]
    bench += (["--device", "cpu", "--rounds", "1", "--samples", "40", "--size", "64",
               "--models", "resnet18"] if args.dry_run else ["--rounds", "2"])
    run = subprocess.run(bench, env=env, capture_output=True, text=True, timeout=420)
    report["bench_output"] = (run.stdout + run.stderr).strip().splitlines()[-12:]
    report["bench_exit"] = run.returncode
    if os.path.exists(bench_json):
        with open(bench_json) as fh:
            report["bench"] = json.load(fh)
        os.remove(bench_json)
    report["seconds"] = time.perf_counter() - started
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2, default=float)
    models = report.get("bench", {}).get("models", {})
    speed = "; ".join(f"{m}: " + ", ".join(f"{k} x{v:.1f}" for k, v in
                                          e.get("speedup_vs_lime", {}).items())
                      + f" forward {e.get('forward_fraction')}" for m, e in models.items())
    print(f"gpu-check: {'dry run on the CPU' if args.dry_run else report['gpu']}: tests "
          f"{report['tests']['summary']!r}; bench exit {run.returncode}; {speed or 'no figures'}"
          f"; {report['seconds']:.0f} s; wrote {args.out}")
    return 0 if tests.returncode in (0, 5) and run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
