"""Superpixel games: every coalition's model output, tabulated once, so that Shapley estimators
are compared on the same games at next to no cost.

A game is one trained model (``limefast.models``: the digits CNN, the shapes CNN, the blobs CNN),
one held-out test image cut into exactly F superpixels (``shapley.kmeans_segments``), and one
label (the model's top one on the image): ``v(S)`` is the label's probability on the image with
the superpixels outside S hidden (painted black on the digits, their background; their own mean
colour on shapes and blobs, lime's default). The table holds ``v`` for all 2^F coalitions, the
coalition ``S`` at index ``sum(2^i for i in S)``; the exact Shapley values follow from it
(``exact_values``). Tables are cached beside the models (``limefast.models.cache.cache_dir()``)
under a name that says the model, the image, F and the fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GAME_MODELS = {  # name in benchsuite.study.cases.MODELS -> hidden superpixels' colour
    "digits-cnn": 0,
    "shapes-cnn": None,
    "blobs-cnn": None,
}
TABLE_VERSION = 1  # bump when the segmentation or the value function change


@dataclass
class Game:
    """One tabulated superpixel game."""

    name: str
    n_features: int
    table: np.ndarray  # (2^F,) float64, v at coalition code sum(2^i)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """v of (n, F) 0/1 rows, (n,) float64."""
        codes = np.asarray(rows, dtype=np.int64) @ (np.int64(1) << np.arange(self.n_features))
        return self.table[codes]

    def exact_values(self) -> np.ndarray:
        """(F,) Shapley values from the whole table."""
        return shapley_from_table(self.table, self.n_features)


def shapley_from_table(table: np.ndarray, f: int) -> np.ndarray:
    """(F,) exact Shapley values of a (2^F,) table: phi_i = sum over S not holding i of
    |S|!(F-|S|-1)!/F! (v(S + i) - v(S))."""
    codes = np.arange(1 << f, dtype=np.int64)
    sizes = np.zeros(1 << f, dtype=np.int64)
    for i in range(f):
        sizes += (codes >> i) & 1
    weight = np.array([1.0 / (f * math.comb(f - 1, k)) for k in range(f)])
    phi = np.zeros(f)
    for i in range(f):
        without = codes[((codes >> i) & 1) == 0]
        phi[i] = np.sum(weight[sizes[without]] * (table[without | (1 << i)] - table[without]))
    return phi


def tabulate(classifier, image: np.ndarray, segments: np.ndarray, hide_color, label: int,
             chunk: int = 2048) -> np.ndarray:
    """(2^F,) the label's output on every coalition of the image's superpixels."""
    from limefast.core.instance import fudged_image

    f = int(segments.max()) + 1
    fudged = fudged_image(image, segments, f, hide_color)
    table = np.empty(1 << f)
    bits = np.int64(1) << np.arange(f)
    for start in range(0, 1 << f, chunk):
        codes = np.arange(start, min(start + chunk, 1 << f), dtype=np.int64)
        on = ((codes[:, None] & bits) != 0)[:, segments]  # (n, H, W)
        images = np.where(on[..., None], image[None], fudged[None]) if image.ndim == 3 else (
            np.where(on, image[None], fudged[None]))
        table[start:start + len(codes)] = np.asarray(classifier(images))[:, label]
    return table


def load_games(models=("digits-cnn", "shapes-cnn"), images: int = 2, superpixels: int = 12,
               progress=None) -> list[Game]:
    """Tabulated games: ``images`` held-out test images of each model, ``superpixels`` each
    (cached; the first call evaluates the models on 2^F images per game)."""
    from limefast.benchsuite.shapley import kmeans_segments
    from limefast.benchsuite.study.cases import load_models
    from limefast.models.cache import cache_dir

    folder = cache_dir() / "shapley-games"
    folder.mkdir(parents=True, exist_ok=True)
    loaded = None
    games = []
    for name in models:
        for number in range(images):
            path = folder / f"{name}-{number}-f{superpixels}-v{TABLE_VERSION}.npy"
            if not path.exists():
                loaded = loaded or {}
                if name not in loaded:
                    loaded.update(load_models([name]))
                model = loaded[name]
                image = model.test_images[number]
                segments = kmeans_segments(image, superpixels)
                label = int(np.argmax(model.classifier(image[None])[0]))
                table = tabulate(model.classifier, image, segments, GAME_MODELS[name], label)
                np.save(path, table)
                if progress:
                    progress(f"tabulated {path.name}")
            games.append(Game(f"{name}-{number}", superpixels, np.load(path)))
    return games
