"""``limefast bench``: the benchmark suite, on whatever this machine has.

Writes ``<out>/<machine>-<date>.json``, a Markdown table beside it and PNG plots of the scaling
sweeps; the ``kernelshap`` section sets KernelSHAP against shap, and
``cold_start`` times a user's first second in fresh processes.
The ``auto`` section is the sampling study in two halves (``limefast.benchsuite.study``): the
row designs and ``num_samples="auto"`` against lime's fixed counts. ``--quick`` shrinks every
size so the whole run takes a few minutes on a 2-core machine (the tests run it to keep the
suite working; it asserts nothing about time).
The results are checked against the targets of ``benchmarks/targets.json`` (``--targets``).

The engine's parts serve the pytest-benchmark cases of ``benchmarks/`` too: ``inputs`` (photos,
segmentations), ``models`` (the grid model, lime's tutorial classifier), ``runners`` (lime and
limefast called and timed), ``agreement`` (how two explanations are compared), ``targets`` and
``machine()``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import time
from pathlib import Path

from limefast import config
from limefast.core.checks import output_folder
from limefast.optional import available

from . import cold_start, report, shapley, suite
from . import targets as target_file

SECTIONS = ("end_to_end", "scaling", "models", "latency", "auto", "kernelshap", "cold_start")
# Sections run only when named (--sections serve): they start servers and take minutes.
OPT_IN_SECTIONS = ("serve",)


def machine() -> dict:
    """The machine and the versions a measurement ran with (every report records it)."""
    import numba
    import numpy
    import skimage
    import sklearn

    from limefast.kernels.threads import worker_threads

    info = {"processor": _cpu_name(), "machine": platform.machine(),
            "python": platform.python_version(), "cores": _cores(), "numpy": numpy.__version__,
            "numba": numba.__version__,
            "kernel_threads": worker_threads(threads=config.CPU_THREADS),
            "scikit-image": skimage.__version__, "scikit-learn": sklearn.__version__, "gpu": None}
    if available("torch"):
        import torch

        from limefast.device.features import cpu_features

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        # What the precision figures ran on: native bf16 (AVX512_BF16, AMX) or emulated.
        info["cpu_features"] = cpu_features().as_dict()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_capability"] = list(torch.cuda.get_device_capability(0))
            info["cuda_runtime"] = torch.version.cuda
    if available("lime"):
        from importlib.metadata import version

        info["lime"] = version("lime")
    return info


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_suite(cfg: suite.Config, sections=SECTIONS, log=print,
              targets=None,
              shap: shapley.ShapleyConfig | None = None, auto=None,
              cold: cold_start.ColdConfig | None = None, serve=None) -> dict:
    """Run the chosen sections and return the results dict (JSON-ready).

    ``auto`` sizes the sampling study in two halves (``limefast.benchsuite.study``; default its
    full size), ``shap`` the KernelSHAP comparison (default ``shapley.ShapleyConfig()``),
    ``cold`` the cold-start section (default ``cold_start.ColdConfig()``), ``serve`` the server
    under load (default ``serving.ServeConfig()``); ``targets`` are
    the targets the results are checked against (default ``targets.load()``, the checkout's
    ``benchmarks/targets.json``).
    """
    results = {"machine": machine(), "date": datetime.date.today().isoformat(),
               "config": {k: v for k, v in vars(cfg).items()}, "not_measured": [],
               "targets": target_file.load() if targets is None else targets}
    if not results["targets"]:
        results["not_measured"].append(
            f"targets: no targets file ({target_file.DEFAULT_FILE} or --targets FILE)")
    started = time.perf_counter()
    for name in sections:
        t0 = time.perf_counter()
        log(f"[limefast bench] {name} ...")
        if name == "end_to_end":
            results[name] = suite.end_to_end(cfg)
        elif name == "scaling":
            results[name] = suite.scaling(cfg, progress=lambda m: log(f"  {m}"))
            results["slopes"] = report.scaling_slopes(results[name])
        elif name == "models":
            results[name] = suite.models(cfg, progress=lambda m: log(f"  {m}"))
        elif name == "latency":
            results[name] = suite.latency(cfg)
        elif name == "auto":
            if available("torch"):
                from .study import measure

                results[name] = measure.evaluate(auto, None, lambda m: log(f"  {m}"))[0]
            else:
                results["not_measured"].append("auto: torch is not installed")
        elif name == "kernelshap":
            if available("shap"):
                results[name] = shapley.shapley_study(shap, progress=lambda m: log(f"  {m}"))
            else:
                results["not_measured"].append("kernelshap: shap is not installed "
                                               "(pip install 'limefast[bench]')")
        elif name == "cold_start":
            results[name] = cold_start.cold_start(cold, progress=lambda m: log(f"  {m}"))
        elif name == "serve":
            from . import serving

            if available("fastapi", "uvicorn", "prometheus_client", "httpx", "torch"):
                results[name] = serving.serve_study(serve, progress=lambda m: log(f"  {m}"))
                results["not_measured"] += results[name].pop("not_measured")
            else:
                results["not_measured"].append("serve: pip install 'limefast[serve,torch]'")
        log(f"[limefast bench] {name} done in {time.perf_counter() - t0:.1f} s")
    if not results["machine"].get("gpu"):
        features = results["machine"].get("cpu_features") or {}
        results["not_measured"].append(
            "GPU: no CUDA device on this machine, so the device path ran on the CPU only "
            "(fp32" + (", bf16" if (features.get("native") or {}).get("bf16") else "")
            + f"; CPU {features.get('described', 'features unknown')}); fp16 AMP and the GPU "
            "targets are unmeasured here")
    if "models" in results and not (
            (results["machine"].get("cpu_features") or {}).get("native") or {}).get("bf16"):
        results["not_measured"].append(
            "bf16 on the CPU: no native bfloat16 here (AVX512_BF16 or AMX-BF16); emulated it "
            "is slower than fp32, so the device_bf16 targets are not measured")
    results["seconds"] = time.perf_counter() - started
    return results


def write(results: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", results["machine"]["processor"]).strip("-").lower()
    stem = out / f"{slug or 'machine'}-{results['date']}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float))
    stem.with_suffix(".md").write_text(report.markdown(results))
    report.plots(results, out)
    return stem.with_suffix(".json")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run the benchmark suite and write a report",
                              description=__doc__.splitlines()[0])
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    p.add_argument("--out", default="bench-results", help="output folder (default bench-results)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (and "
                        f"{','.join(OPT_IN_SECTIONS)}, run only when named)")
    p.add_argument("--targets", metavar="FILE", default=None,
                   help="the targets to check (default: the checkout's benchmarks/targets.json)")


def run(args) -> int:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS) - set(OPT_IN_SECTIONS))
    if unknown:
        print(f"limefast bench: unknown section(s) {unknown}; choose from "
              f"{SECTIONS + OPT_IN_SECTIONS}",
              file=sys.stderr)
        return 2
    out = output_folder(args.out, "limefast bench")
    if out is None:
        return 2
    cfg = suite.Config.quick() if args.quick else suite.Config()
    try:
        spec = target_file.load(args.targets)
    except (OSError, ValueError) as exc:
        print(f"limefast bench: --targets {args.targets}: {exc}", file=sys.stderr)
        return 2
    results = run_suite(cfg, sections, log=lambda m: print(m, file=sys.stderr),
                        targets=spec,
                        shap=shapley.ShapleyConfig.quick() if args.quick else None,
                        auto=_auto_config(args),
                        cold=cold_start.ColdConfig.quick() if args.quick else None,
                        serve=_serve_config(args.quick))
    path = write(results, out)
    print(report.markdown(results))
    print(f"written: {path} (+ .md and *.png)", file=sys.stderr)
    return 0


def _serve_config(quick: bool):
    from . import serving

    return serving.ServeConfig.quick() if quick else serving.ServeConfig()


def _auto_config(args):
    from .study.run import StudyConfig

    return StudyConfig.quick() if args.quick else StudyConfig()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m limefast.benchsuite",
                                     description=__doc__.splitlines()[0])
    _arguments(parser)
    return run(parser.parse_args(argv))
