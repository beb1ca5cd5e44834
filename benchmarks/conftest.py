"""Shared benchmark machinery: inputs, the machine record, and a ratio summary.

Each benchmark records its median in ``RESULTS`` under (group, name); the terminal summary prints
every group's ratios against its reference, so lime and limefast are compared in one process on
the same inputs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RESULTS: dict[str, dict[str, float]] = {}
NOTES: list[str] = []


def record(group: str, name: str, benchmark_or_seconds) -> float:
    """Store the median seconds of a pytest-benchmark fixture (or a number) for the summary."""
    if isinstance(benchmark_or_seconds, (int, float)):
        median = float(benchmark_or_seconds)
    else:
        median = benchmark_or_seconds.stats.stats.median
    RESULTS.setdefault(group, {})[name] = median
    return median


def note(line: str) -> None:
    NOTES.append(line)


def machine() -> dict:
    import numba
    import skimage
    import sklearn

    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scikit-image": skimage.__version__,
        "scikit-learn": sklearn.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pytest_terminal_summary(terminalreporter):
    if not RESULTS and not NOTES:
        return
    tr = terminalreporter
    tr.section("limefast: medians and ratios (same process, same inputs)")
    tr.write_line(json.dumps(machine()))
    for group, entries in RESULTS.items():
        ref = entries.get("lime") or entries.get("reference")
        tr.write_line(f"[{group}]")
        for name, seconds in entries.items():
            ratio = f"   lime/this = {ref / seconds:8.1f}x" if ref and name not in (
                "lime", "reference") else ""
            tr.write_line(f"  {name:<34s} {seconds * 1e3:10.2f} ms{ratio}")
    for line in NOTES:
        tr.write_line(line)
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"machine": machine(), "results": RESULTS,
                                                  "notes": NOTES}, indent=2))


@pytest.fixture(scope="session")
def photo_224():
    from conftest import bundled

    return bundled("astronaut", 224)
