"""The argument types of the ``limefast`` commands (argparse ``type=`` callables): one
contract for every subcommand, a usage error (exit status 2) for a value out of range."""

from __future__ import annotations

import argparse

import numpy as np


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def count_or_auto(text: str):
    return "auto" if text == "auto" else positive_int(text)


def class_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected class numbers like 1,15; got {text!r}")
    return values


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text!r}")
    return value


def triple(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.5,0.5,0.5; got {text!r}")
    return values


def _number(text: str, ok, expected: str) -> float:
    """``text`` as a float for which ``ok(value)`` holds, else a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
    return value


def open_unit(text: str) -> float:
    return _number(text, lambda v: 0 < v < 1,
                   "a number between 0 and 1 (exclusive), e.g. 0.95")


def non_negative(text: str) -> float:
    return _number(text, lambda v: v >= 0, "a number of at least 0, e.g. 0.05")


def auto_arguments(p: argparse.ArgumentParser) -> None:
    """``--target-overlap`` and ``--min-gain``: the rule of ``--num-samples auto``."""
    p.add_argument("--target-overlap", type=open_unit, default=None, metavar="P",
                   help="--num-samples auto stops once the stated expected overlap of the "
                        "shown top superpixels reaches P (default 0.97 with the mean fill)")
    p.add_argument("--min-gain", type=non_negative, default=None, metavar="G",
                   help="--num-samples auto also stops once 1000 more rows are projected to "
                        "raise that figure by less than G (default 0.04 with the mean fill; "
                        "0: never)")
    p.add_argument("--sampler", choices=("lime", "paired"), default=None,
                   help="LIME's row design: lime's independent rows, or complement pairs "
                        "(the same converged explanation, less noise per image; an odd count "
                        "rounds up); default lime for a fixed --num-samples, paired for auto")
