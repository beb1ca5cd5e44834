"""Model factories for the command-line tests (``--model cli_models:tiny``)."""

from __future__ import annotations

from conftest import GridClassifier

from limefast.benchsuite.models import tiny_cnn


def grid():
    """A plain classifier function: no torch module, so no Grad-CAM and no weights file."""
    return GridClassifier(n_classes=6, seed=3)


def tiny():
    """A small CNN with fixed random weights (seeded) and 5 classes."""
    return tiny_cnn()


def broken():
    """A factory that fails."""
    raise RuntimeError("no model today")


def failing_classifier():
    """A classifier that fails once explaining has started."""
    def classify(batch):
        raise RuntimeError("the model crashed")

    return classify


def add_hello(subparsers):
    """A subcommand registered from outside limefast.cli (the way ``bench`` can be)."""
    p = subparsers.add_parser("hello")
    p.add_argument("--name", default="world")
    p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)
