"""A request's explanation options: ``explain_instance``'s, checked, from JSON or a query
string (``ExplainOptions.parse``)."""

from __future__ import annotations

import dataclasses
import math
from argparse import ArgumentTypeError

from limefast.core import checks

METHODS = ("lime", "kernelshap")


@dataclasses.dataclass(frozen=True)
class ExplainOptions:
    """``explain_instance``'s options as a request gives them (see ``parse``)."""

    method: str = "lime"
    num_samples: int | str = 1000
    time_budget: float | None = None
    top_labels: int | None = 5
    labels: tuple | None = None
    segmentation: str = "quickshift"
    hide_color: float | None = None
    seed: int = 0
    max_samples: int | None = None
    num_features: int = 100000
    sampler: str | None = None  # LIME's row design (None: explain_instance's default)

    @classmethod
    def parse(cls, values: dict, defaults: dict | None = None) -> ExplainOptions:
        """Options from plain values (JSON or a query string), checked.

        Args:
            values: the request's options.
            defaults: the server's options, which ``values`` override (``labels`` in
                ``values`` overrides a default ``top_labels``: those labels are explained).

        Raises:
            ValueError: an unknown name or a bad value, said in one line.
        """
        if not isinstance(values, dict):
            raise ValueError(f"parameters must be an object; got {type(values).__name__}")
        if defaults:
            merged = {**defaults, **values}
            if "labels" in values and "top_labels" not in values:
                merged.pop("top_labels", None)
            values = merged
        try:
            return cls._parse(values)
        except (TypeError, ArgumentTypeError) as exc:  # the checks' type errors, as bad values
            raise ValueError(str(exc)) from None

    @classmethod
    def _parse(cls, values: dict) -> ExplainOptions:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(fields)}")
        v = {k: values[k] for k in values if values[k] is not None}
        out = {}
        if "method" in v:
            if v["method"] not in METHODS:
                raise ValueError(f"method must be one of {METHODS}; got {v['method']!r}")
            out["method"] = v["method"]
        if "num_samples" in v:
            out["num_samples"] = checks.int_or_auto("num_samples", _int_text(v["num_samples"]))
        if "time_budget" in v:
            out["time_budget"] = checks.time_budget(_float_text("time_budget", v["time_budget"]))
        if "labels" in v:
            out["labels"] = index_list("labels", v["labels"])
            out["top_labels"] = None  # labels given: those are explained, as lime does
        if "top_labels" in v:
            out["top_labels"] = checks.positive_int("top_labels", _int_text(v["top_labels"]))
        out.update(common_values(v))
        for name in ("max_samples", "num_features"):
            if name in v:
                out[name] = checks.positive_int(name, _int_text(v[name]))
        if "sampler" in v:
            from limefast.core.sampling import check_sampler

            out["sampler"] = check_sampler(v["sampler"])
        options = cls(**out)
        if options.sampler is not None and options.method != "lime":
            raise ValueError(f"sampler is LIME's row design; method {options.method!r} draws "
                             "its own coalitions (complement pairs by size): drop sampler")
        if options.max_samples is not None and options.num_samples != "auto":
            raise ValueError("max_samples bounds num_samples='auto'; got num_samples="
                             f"{options.num_samples} (drop max_samples or pass 'auto')")
        return options

    def replace(self, **changes) -> ExplainOptions:
        return dataclasses.replace(self, **changes)


def index_list(name: str, value) -> tuple[int, ...]:
    """A request's list of class indices (``labels``, ``classes``): a JSON list, or "1,15" in a
    query string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"{name} must be a non-empty list of class indices; got {value!r}")
    return tuple(checks.positive_int(name, _int_text(x), minimum=0) for x in items)


def common_values(v: dict) -> dict:
    """``segmentation``, ``hide_color`` and ``seed`` of a request's parameters, checked (the
    parameters every model's explanation takes)."""
    from limefast.segmentation import SEGMENTATIONS

    out = {}
    if "segmentation" in v:
        if v["segmentation"] not in SEGMENTATIONS:
            raise ValueError(f"segmentation must be one of {sorted(SEGMENTATIONS)}; got "
                             f"{v['segmentation']!r}")
        out["segmentation"] = v["segmentation"]
    if "hide_color" in v:
        out["hide_color"] = _float_text("hide_color", v["hide_color"])
    if "seed" in v:
        out["seed"] = checks.positive_int("seed", _int_text(v["seed"]), minimum=0)
    return out


def _int_text(value):
    """A query string's '12' as 12; anything else as it came (the checks word the error)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _float_text(name, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number; got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value
