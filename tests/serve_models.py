"""Model factories for the server tests (``--model tests/serve_models.py:grid``)."""

from __future__ import annotations

import time

from limefast.benchsuite.models import GridModel


def _grid() -> GridModel:
    model = GridModel(n_classes=6, seed=3)
    model.weights *= 0.02  # logits of order 1: probabilities that superpixels move
    return model


def grid():
    """A plain classifier function: each row's output depends on that row alone, bit for bit."""
    return _grid()


class Picky:
    """The grid model, but it raises on any batch holding an all-black image."""

    def __init__(self):
        self.model = _grid()

    def __call__(self, batch):
        if (batch.reshape(len(batch), -1).max(axis=1) == 0).any():
            raise RuntimeError("the model cannot see in the dark")
        return self.model(batch)


def picky():
    return Picky()


class FixedCost:
    """The grid model behind a fixed cost per call (a Keras ``predict`` call, say)."""

    def __init__(self, seconds: float = 0.04):
        self.model, self.seconds = _grid(), seconds

    def __call__(self, batch):
        time.sleep(self.seconds)
        return self.model(batch)


def slow():
    """25 ms a call, whatever the batch."""
    return FixedCost(0.025)


def tiny():
    """A small CNN with fixed random weights (seeded) and 5 classes."""
    import torch
    from torch import nn

    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


