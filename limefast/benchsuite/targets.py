"""The issues' targets: read from a data file (a checkout's ``benchmarks/targets.json``), never
written in the code. Each target has a ``name`` (a template of its bounds) and ``min`` and/or
``max``; ``check`` says whether a measured value meets it.
"""

from __future__ import annotations

import json
from pathlib import Path

# In a checkout: limefast/benchsuite/targets.py -> benchmarks/targets.json
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "targets.json"


def load(path: str | Path | None = None) -> dict:
    """The targets of ``path`` (default ``DEFAULT_FILE``): id -> definition; ``{}`` when the
    default file is not there (limefast installed without its checkout)."""
    if path is None:
        if not DEFAULT_FILE.is_file():
            return {}
        path = DEFAULT_FILE
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise ValueError(f'{path} has no "targets" object')
    return data["targets"]


class _Bound(float):
    """A bound as a name shows it: 15, 1.8, 1e-9 (``{max:.0%}`` and other specs as a float)."""

    def __format__(self, spec: str) -> str:
        if spec:
            return format(float(self), spec)
        mantissa, e, exponent = f"{float(self):g}".partition("e")
        return f"{mantissa}e{int(exponent)}" if e else mantissa


def name(target: dict, **fields) -> str:
    """The target's name, its bounds and ``fields`` (model, impl, ...) filled in."""
    bounds = {k: _Bound(target[k]) for k in ("min", "max") if k in target}
    return target["name"].format(**bounds, **fields)


def met(target: dict, value: float) -> bool:
    """``min <= value <= max`` (a NaN meets nothing)."""
    value = float(value)
    if value != value:
        return False
    return target.get("min", -float("inf")) <= value <= target.get("max", float("inf"))


def check(targets: dict, key: str, value: float, measured: str, **fields):
    """(name, measured, met) of target ``key``, or None where ``targets`` has no such target."""
    if key not in targets:
        return None
    return name(targets[key], **fields), measured, met(targets[key], value)
