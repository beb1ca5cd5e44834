"""The pytest-benchmark cases' record and summary, over the engine of ``limefast bench``.

Inputs, models, runners, agreement and the machine record come from ``limefast.benchsuite``;
the targets from ``benchmarks/targets.json``. Each benchmark records its median in ``RESULTS``
under (group, name) and may check a target (``check``); the terminal summary prints every
group's ratios against its reference (lime and limefast compared in one process on the same
inputs) and the targets met or missed, and ``bench-results/summary.json`` keeps them with the
machine record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from limefast.benchsuite import machine
from limefast.benchsuite import targets as target_file
from limefast.benchsuite.inputs import photo

RESULTS: dict[str, dict[str, float]] = {}
NOTES: list[str] = []
CHECKS: list[tuple[str, str, bool]] = []
TARGETS = target_file.load()


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


def check(key: str, value: float, measured: str, **fields) -> bool:
    """Check ``value`` against target ``key`` of ``benchmarks/targets.json`` for the summary;
    whether it is met."""
    checked = target_file.check(TARGETS, key, value, measured, **fields)
    if checked is None:
        raise KeyError(f"benchmarks/targets.json has no target {key!r}")
    CHECKS.append(checked)
    return checked[2]


def pytest_terminal_summary(terminalreporter):
    if not RESULTS and not NOTES and not CHECKS:
        return
    tr = terminalreporter
    tr.section("limefast: medians and ratios (same process, same inputs)")
    info = machine()
    tr.write_line(json.dumps(info))
    for group, entries in RESULTS.items():
        ref = entries.get("lime") or entries.get("reference")
        tr.write_line(f"[{group}]")
        for name, seconds in entries.items():
            ratio = f"   lime/this = {ref / seconds:8.1f}x" if ref and name not in (
                "lime", "reference") else ""
            tr.write_line(f"  {name:<34s} {seconds * 1e3:10.2f} ms{ratio}")
    for line in NOTES:
        tr.write_line(line)
    if CHECKS:
        tr.write_line("targets (benchmarks/targets.json):")
        for name, measured, ok in CHECKS:
            tr.write_line(f"  {'met   ' if ok else 'MISSED'} {name}: {measured}")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text(json.dumps(
        {"machine": info, "results": RESULTS, "notes": NOTES,
         "targets": [{"target": n, "measured": m, "met": ok} for n, m, ok in CHECKS]},
        indent=2))


@pytest.fixture(scope="session")
def photo_224():
    return photo(224)
