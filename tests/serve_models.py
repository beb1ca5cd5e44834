"""Model factories for the server tests (``--model tests/serve_models.py:grid``)."""

from __future__ import annotations

from limefast.benchsuite.models import FixedCost, GridModel, tiny_cnn


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


def fixed_cost(seconds: float = 0.04) -> FixedCost:
    """The grid model behind a fixed cost per call (a Keras ``predict`` call, say)."""
    return FixedCost(seconds, _grid())


def slow():
    """25 ms a call, whatever the batch."""
    return fixed_cost(0.025)


def tiny():
    """A small CNN with fixed random weights (seeded) and 5 classes."""
    return tiny_cnn()
