"""A Keras user's workflow (keras 3, PyTorch backend): lime 0.2.0.1 against limefast's switches.

The seed-004 workflow of ``tests/test_keras.py``: a small Keras CNN trained one epoch on
scikit-learn's digits upscaled to 28x28, the classifier function users write
(``model.predict(rgb2gray(batch)[..., None], verbose=0)``), a 28x28 grayscale digit, lime's
default quickshift (3 superpixels here), 1000 samples, 5 labels, ``random_seed=123``. Timed:

- lime's ``explain_instance`` (``batch_size=10``: 100 ``model.predict`` calls);
- limefast as a drop-in (the same arguments: the same 100 calls, bitwise the same outputs);
- limefast with ``batch_size="auto", dedupe=True``: each distinct 0/1 row is evaluated once (8
  of the 1000 here), in as few calls as memory allows. The explanation is still lime's, to the
  float32 contract of ``tests/agreement.py`` (asserted below).

They run alternately, round after round, in this process, with torch's default threads; the
ratios are of their medians. Printed: the ratios, the model-call counts, keras and the backend.
Run: ``.venv/bin/python -m pytest benchmarks/bench_keras.py --benchmark-only -q -s``
"""

from __future__ import annotations

import os
import time

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # read once, when keras is imported: no TF
pytest.importorskip("torch", reason="keras runs on its torch backend here: limefast[torch]")
pytest.importorskip("keras", reason="needs keras: limefast[test]")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import rgb2gray  # noqa: E402

from benchmarks.conftest import note, record  # noqa: E402
from limefast.benchsuite.runners import explain_lime, explain_limefast  # noqa: E402
from tests.agreement import assert_float32_agreement, assert_same_explanation  # noqa: E402
from tests.test_keras import (  # noqa: E402 - the models' one home
    DIGIT,
    SEED,
    Watched,
    digits_cnn,
    keras_forward_rtol,
    keras_logit_scale,
)

# keras' torch backend converts its outputs with np.array(x), which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

NUM_SAMPLES = 1000
ROUNDS = int(os.environ.get("LIMEFAST_BENCH_ROUNDS", "5"))
FAST_REPEATS = 5  # limefast's switched run is ~100x shorter: time it a few times per round
GROUP = "keras-digits-28x28"
VARIANTS = {  # name -> limefast's extra arguments
    "limefast drop-in (batch_size=10)": {},
    "limefast batch_size='auto', dedupe": {"batch_size": "auto", "dedupe": True},
}


@pytest.fixture(scope="module")
def workflow():
    model, images = digits_cnn()

    def make_prediction(batch):
        return model.predict(rgb2gray(batch)[..., None], verbose=0)

    return model, images[DIGIT], make_prediction


def _run(explain, image, classifier_fn, **kwargs):
    """(seconds, explanation, call sizes) of one explanation by ``explain`` (the engine's
    ``explain_lime`` or ``explain_limefast``)."""
    watched = Watched(classifier_fn)
    t0 = time.perf_counter()
    explanation = explain(image, watched, num_samples=NUM_SAMPLES, random_seed=SEED, **kwargs)
    return time.perf_counter() - t0, explanation, watched.sizes


@pytest.mark.benchmark(group=GROUP)
def test_keras_digits_lime_vs_limefast(benchmark, workflow):
    model, image, make_prediction = workflow
    for kwargs in VARIANTS.values():  # kernels compiled or loaded, keras' predict warmed up
        _run(explain_limefast, image, make_prediction, **kwargs)
    runs = {name: [] for name in ("lime",) + tuple(VARIANTS)}

    def one_round():  # alternate, so a loaded machine slows them all alike
        runs["lime"].append(_run(explain_lime, image, make_prediction))
        for name, kwargs in VARIANTS.items():
            repeats = FAST_REPEATS if kwargs else 1
            runs[name].extend(_run(explain_limefast, image, make_prediction, **kwargs)
                              for _ in range(repeats))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    medians = {name: float(np.median([r[0] for r in v])) for name, v in runs.items()}
    for name, seconds in medians.items():
        record(GROUP, name, seconds)
    benchmark.extra_info.update({f"{k}_median_s": v for k, v in medians.items()})

    # Agreement: the drop-in saw lime's batches (exact); the switched run saw other batches
    # (float32 contract, the tolerance derived from the model's layers).
    ref = runs["lime"][0][1]
    drop_in, switched = (runs[name][0][1] for name in VARIANTS)
    assert_same_explanation(ref, drop_in, score_label=ref.top_labels[0])
    first_batch = Watched(make_prediction, keep=True)
    explain_lime(image, first_batch, num_samples=10, random_seed=SEED)
    z = keras_logit_scale(model, rgb2gray(first_batch.inputs[0])[..., None])
    rtol = keras_forward_rtol(model, z)
    assert_float32_agreement(ref, switched, rtol)
    worst = max(abs(w - dict(ref.local_exp[label])[f])
                for label, exp in switched.local_exp.items() for f, w in exp)

    import torch

    calls = {name: v[0][2] for name, v in runs.items()}
    lines = [f"keras {keras.__version__} ({keras.backend.backend()} backend, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads), digits CNN 28x28, "
             f"{NUM_SAMPLES} samples, {len(np.unique(ref.segments))} superpixels, "
             f"{len(ref.top_labels)} labels, {ROUNDS} alternating rounds"]
    for name, seconds in medians.items():
        ratio = "" if name == "lime" else f"  x{medians['lime'] / seconds:6.1f} vs lime"
        sizes = calls[name]
        lines.append(f"  {name:36s} {seconds * 1e3:9.1f} ms{ratio}; model calls {len(sizes)} "
                     f"({sum(sizes)} images, batches of at most {max(sizes)})")
    lines.append(f"  batch_size='auto', dedupe against lime: same top labels and feature order;"
                 f" max|dw| {worst:.2e} (float32 tolerance from rtol {rtol:.2e}); "
                 f"num_evaluated {switched.num_evaluated} of {switched.num_samples} rows")
    for line in lines:
        print(line)
        note(line)


# -- the first call, from a fresh Python process ------------------------------------------------
FRESH = """
import json, os, sys, time
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
import numpy as np
from skimage.color import rgb2gray
t0 = time.perf_counter()
from limefast import lime_image
from limefast.wrappers.scikit_image import SegmentationAlgorithm

model = keras.models.load_model(sys.argv[1])

def make_prediction(batch):
    return model.predict(rgb2gray(batch)[..., None], verbose=0)

image = np.load(sys.argv[2])
kwargs = json.loads(sys.argv[3])
segmentation_fn = None
if "felzenszwalb" in kwargs:
    segmentation_fn = SegmentationAlgorithm("felzenszwalb", **kwargs["felzenszwalb"])
times = []
for _ in range(3):
    explainer = lime_image.LimeImageExplainer(random_state=0)
    t = time.perf_counter()
    explainer.explain_instance(image, make_prediction, random_seed=123, batch_size="auto",
                               dedupe=True, segmentation_fn=segmentation_fn)
    times.append(time.perf_counter() - t)
    if len(times) == 1:
        through_first = time.perf_counter() - t0
print(json.dumps([times, through_first]))
"""
FELZENSZWALB = {}  # scikit-image's defaults: 5 superpixels on this digit


@pytest.mark.benchmark(group=GROUP + "-fresh")
@pytest.mark.parametrize("segmentation", ["quickshift", "felzenszwalb"])
def test_keras_first_call_in_a_fresh_process(benchmark, workflow, segmentation, tmp_path):
    """Seed 004's script as a user runs it: a new Python process imports keras and limefast,
    loads the saved model, and explains with ``batch_size="auto", dedupe=True``; its first call
    (Numba's load included) against lime's median in this process, same segmentation. Also
    printed: the script from limefast's import line to the end of its first call (the model's
    load included), since the background load limefast starts may finish before the first call
    or during it."""
    import json
    import subprocess
    import sys

    from lime.wrappers.scikit_image import SegmentationAlgorithm as LimeSegmentation

    model, image, make_prediction = workflow
    model.save(tmp_path / "digits.keras")
    np.save(tmp_path / "digit.npy", image)
    kwargs = {"felzenszwalb": FELZENSZWALB} if segmentation == "felzenszwalb" else {}
    lime_seg = LimeSegmentation("felzenszwalb", **FELZENSZWALB) if kwargs else None
    lime_times = []

    def one_round():
        t = time.perf_counter()
        explain_lime(image, make_prediction, num_samples=NUM_SAMPLES, random_seed=SEED,
                     segmentation_fn=lime_seg)
        lime_times.append(time.perf_counter() - t)

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    env = {k: v for k, v in os.environ.items() if k != "LIMEFAST_PRELOAD"}
    firsts, laters, throughs = [], [], []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "digits.keras"),
                               str(tmp_path / "digit.npy"), json.dumps(kwargs)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        times, through_first = json.loads(done.stdout.strip().splitlines()[-1])
        firsts.append(times[0])
        laters.append(float(np.median(times[1:])))
        throughs.append(through_first)
    lime_s, first, later, through = (float(np.median(v))
                                     for v in (lime_times, firsts, laters, throughs))
    record(GROUP + "-fresh", f"limefast first call ({segmentation})", first)
    record(GROUP + "-fresh", f"lime ({segmentation})", lime_s)
    line = (f"keras seed-004, {segmentation}, fresh process: lime {lime_s * 1e3:.0f} ms; "
            f"limefast first call {first * 1e3:.0f} ms (x{lime_s / first:.1f}), later calls "
            f"{later * 1e3:.0f} ms (x{lime_s / later:.1f}); from `from limefast import "
            f"lime_image` to the first call's end (the model's load included) "
            f"{through * 1e3:.0f} ms; medians of 3 processes")
    print(line)
    note(line)
