"""A Keras 3 CNN, on the PyTorch backend, naming the orientation of generated stripes.

Each 32x32 RGB uint8 image has a patch of stripes (horizontal, vertical, diagonal or
anti-diagonal; random period, phase, colours, place and size) on a noisy plain background.
The model is built and trained with Keras (``KERAS_BACKEND=torch``, set here unless it is set
already: the backend is read once, when keras is first imported) in a few seconds; its weights
are cached as a small ``.npz`` file beside the other models' (``limefast.models.cache``).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

from limefast.models.cache import cache_dir  # noqa: E402
from limefast.models.data import Split, Trained, generated  # noqa: E402
from limefast.optional import require  # noqa: E402

keras = require("keras", "limefast.models.stripes")

SIZE = 32
CLASSES = ("horizontal", "vertical", "diagonal", "anti-diagonal")
MODEL_VERSION = 1
EPOCHS = 4
BATCH = 64


StripesData = Split  # the old name


def draw(rng: np.random.RandomState, label: int, size: int = SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 image of stripes of orientation ``label``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    direction = {0: (1, 0), 1: (0, 1), 2: (1, 1), 3: (1, -1)}[label]
    phase = (yy * direction[0] + xx * direction[1]) * 2 * np.pi / rng.uniform(4, 8)
    on = np.sin(phase + rng.uniform(0, 2 * np.pi)) > 0
    h, w = rng.randint(size // 2, size, 2)
    y0, x0 = rng.randint(0, size - h + 1), rng.randint(0, size - w + 1)
    patch = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
    image = np.empty((size, size, 3))
    image[:] = rng.uniform(60, 200, 3)
    light, dark = rng.uniform(170, 255, 3), rng.uniform(0, 90, 3)
    image[patch & on], image[patch & ~on] = light, dark
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def load_data(n_train: int = 3000, n_test: int = 400, seed: int = 1) -> StripesData:
    """Generated train and test sets (balanced classes, seeded)."""
    return generated(draw, len(CLASSES), n_train, n_test, seed)


def build_model():
    """Conv(8) - max-pool - Conv(16) - max-pool - global max - Dense(4, softmax), channels
    last: (N, 32, 32, 3) float in [0, 1] -> (N, 4) probabilities."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Conv2D(8, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.GlobalMaxPooling2D(), layers.Dense(len(CLASSES), activation="softmax"),
    ])


def train_model(data: StripesData, seed: int = 0, epochs: int = EPOCHS):
    """Train the Keras model (Adam, seeded)."""
    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(4e-3),
                  loss="sparse_categorical_crossentropy")
    model.fit(data.train_images.astype(np.float32) / 255.0, data.train_labels,
              batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
    return model


TrainedStripes = Trained  # the old name


def load_model(*, cache: bool = True, retrain: bool = False) -> TrainedStripes:
    """The trained stripes model: its cached weights if they are there, else trained (and
    cached)."""
    t0 = time.perf_counter()
    data = load_data()
    path = cache_dir() / f"stripes-keras-v{MODEL_VERSION}.npz" if cache else None
    model, trained = None, True
    if path is not None and path.is_file() and not retrain:
        try:
            with np.load(path) as stored:
                model = build_model()
                model.set_weights([stored[f"w{i}"] for i in range(len(stored.files))])
            trained = False
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways
            warnings.warn(f"ignoring unreadable cached stripes model {path}: {exc}",
                          stacklevel=2)
            model = None
    if model is None:
        model = train_model(data)
        if path is not None:
            _save(model, path)
    predicted = StripesClassifier(model)(data.test_images).argmax(1)
    accuracy = float(np.mean(predicted == data.test_labels))
    return Trained(model, data, accuracy, path, trained, time.perf_counter() - t0)


def _save(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not cache the stripes model at {path}: {exc}", stacklevel=3)


class StripesClassifier:
    """``classifier_fn`` of the Keras model: (N, H, W, 3) uint8 -> (N, 4) float64."""

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
        out = self.model(x, training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
