"""Keras users' workflows (keras 3 on the PyTorch backend) against lime 0.2.0.1.

Two workflows from lime's users, each with the classifier function they write around
``model.predict``:

- seed 004: a small CNN on 28x28 grayscale digits (scikit-learn's bundled digits, upscaled, one
  epoch of training), ``make_prediction(batch) = model.predict(rgb2gray(batch)[..., None])``,
  explained with lime's default quickshift, which gives a 28x28 digit only a few superpixels.
- seed 003: ``keras.applications.MobileNetV2(weights=None)`` with ``preprocess_input`` inside
  the classifier function, on a bundled photo.

With lime's ``batch_size=10`` the model sees the very batches lime hands it, and keras' forward
is then bitwise what lime's run got (checked here, not assumed): the exact contract holds. With
``batch_size="auto"`` and ``dedupe=True`` the model sees other batches; these models compute in
float32, so the explanation is lime's up to float32 forwards (``agreement.py``), with a tolerance
derived from the Keras model's own layers (``keras_forward_rtol``).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # read once, when keras is imported: no TF
pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")
pytest.importorskip("torch", reason="keras runs on its torch backend here: limefast[torch]")
pytest.importorskip("keras", reason="needs keras: limefast[test]")

import math

import keras  # noqa: E402 - the backend must be chosen first
import lime.lime_image as lime_ref
import numpy as np
from skimage.color import rgb2gray
from skimage.transform import resize
from sklearn.datasets import load_digits

from limefast import lime_image as lime_fast
from limefast.benchsuite.inputs import bundled

# By package path, not ``from agreement import``: benchmarks/bench_keras.py imports this module's
# workflow as ``tests.test_keras``.
from tests.agreement import SAFETY, U_FLOAT32, assert_float32_agreement, assert_same_explanation

# keras' torch backend converts its outputs with np.array(x), which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SEED = 123  # explain_instance(..., random_seed=123), as the users wrote it
DIGIT = 1559  # a held-out digit (a 4) that lime's quickshift cuts into 3 superpixels


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tests compare runs, they time nothing: one intra-op thread keeps them fast on a
    busy machine, where OpenMP's spinning threads slowed a 10-image forward tenfold. lime and
    limefast run under the same setting (bitwise equality was also seen with two threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the float32 contract, counted on Keras layers -------------------------------------------

def keras_model_shape(model) -> tuple[int, int]:
    """(L, K) of a Keras model, as ``agreement.model_shape`` counts a torch module: the number
    of convolution and dense layers, and the widest reduction among them (Conv2D: kernel area x
    input channels / groups; DepthwiseConv2D: kernel area; Dense: input features)."""
    depth, widest = 0, 1
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):  # a nested model: count its layers
            stack.extend(layer.layers)
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            terms = math.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Conv2D):
            # kernel (kh, kw, in_channels / groups, filters)
            terms = math.prod(layer.kernel.shape[:-1])
        elif isinstance(layer, keras.layers.Dense):
            terms = layer.kernel.shape[0]
        else:
            continue
        depth += 1
        widest = max(widest, int(terms))
    if depth == 0:
        raise ValueError(f"{type(model).__name__} has no convolution or dense layer to count")
    return depth, widest


def keras_logit_scale(model, batch) -> float:
    """Z: the largest |logit| on a model-ready ``batch`` (the tests pass lime's first batch:
    the image and 9 of its perturbations), for a model whose last layer is
    ``Dense(classes, activation="softmax")`` (both workflows' heads): the head's input, then
    its affine map without the softmax."""
    head = model.layers[-1]
    assert isinstance(head, keras.layers.Dense), type(head).__name__
    features = keras.Model(model.inputs, head.input).predict(batch, verbose=0)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.weights)
    return float(np.abs(features @ kernel + bias).max())


def keras_forward_rtol(model, logits: float) -> float:
    """``agreement.forward_rtol`` for a Keras model: SAFETY * sqrt(L K) * u * max(1, 2 Z)."""
    depth, widest = keras_model_shape(model)
    return SAFETY * math.sqrt(depth * widest) * U_FLOAT32 * max(1.0, 2.0 * logits)


# --- the users' classifier functions, watched ------------------------------------------------

class Watched:
    """A classifier function, counting its calls; ``keep=True`` also copies what goes in (the
    batches limefast hands over are views of a buffer it rewrites) and what comes out."""

    def __init__(self, fn, keep=False):
        self.fn, self.keep = fn, keep
        self.sizes, self.inputs, self.outputs = [], [], []

    def __call__(self, batch):
        self.sizes.append(len(batch))
        if self.keep:
            self.inputs.append(np.array(batch, copy=True))
        out = self.fn(batch)
        if self.keep:
            self.outputs.append(np.array(out, copy=True))
        return out


def distinct_rows(num_samples: int, num_features: int, seed: int = 0) -> int:
    """The distinct 0/1 rows lime draws for ``random_state=seed`` when ``random_seed`` is given
    (no draw for the segmentation): one ``randint(0, 2, n * f)``, row 0 set to ones."""
    rows = np.random.RandomState(seed).randint(0, 2, num_samples * num_features)
    rows = rows.reshape(num_samples, num_features)
    rows[0] = 1
    return len(np.unique(rows, axis=0))


def lime_run(image, classifier_fn, **kwargs):
    """lime 0.2.0.1's explanation, with every batch its classifier saw."""
    watched = Watched(classifier_fn, keep=True)
    explanation = lime_ref.LimeImageExplainer(random_state=0).explain_instance(
        image, watched, random_seed=SEED, **kwargs)
    return explanation, watched


def limefast_run(image, classifier_fn, keep=False, **kwargs):
    watched = Watched(classifier_fn, keep=keep)
    explanation = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
        image, watched, random_seed=SEED, progress_bar=False, **kwargs)
    return explanation, watched


def assert_bitwise_same_batches(ref: Watched, ours: Watched):
    """The model saw lime's batches, and keras returned lime's outputs bit for bit."""
    assert ours.sizes == ref.sizes
    for a, b in zip(ref.inputs, ours.inputs):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(b, a)
    for a, b in zip(ref.outputs, ours.outputs):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(b, a)


# --- seed 004: a small CNN on 28x28 grayscale ------------------------------------------------

def digits_cnn():
    """A small Keras CNN trained one epoch on scikit-learn's digits upscaled to 28x28 (about a
    second on a CPU), and the held-out images, (N, 28, 28) float32 in [0, 1]."""
    keras.utils.set_random_seed(0)
    digits = load_digits()
    images = np.stack([resize(im / 16.0, (28, 28)) for im in digits.images]).astype(np.float32)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(images[:1500, ..., None], digits.target[:1500], epochs=1, batch_size=64, verbose=0)
    return model, images


@pytest.fixture(scope="module")
def digits_case():
    model, images = digits_cnn()

    def make_prediction(batch):
        return model.predict(rgb2gray(batch)[..., None], verbose=0)

    x = images[DIGIT]  # (28, 28): lime makes it RGB with gray2rgb
    ref, watched = lime_run(x, make_prediction)
    return model, x, make_prediction, ref, watched


def test_digits_cnn_lime_batches_give_lime_bitwise(digits_case):
    model, x, make_prediction, ref, lime_calls = digits_case
    assert len(np.unique(ref.segments)) == 3
    assert lime_calls.sizes == [10] * 100
    ours, calls = limefast_run(x, make_prediction, keep=True)
    assert_bitwise_same_batches(lime_calls, calls)
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])


def test_digits_cnn_auto_batches_and_dedupe(digits_case):
    model, x, make_prediction, ref, lime_calls = digits_case
    ours, calls = limefast_run(x, make_prediction, batch_size="auto", dedupe=True)
    z = keras_logit_scale(model, rgb2gray(lime_calls.inputs[0])[..., None])
    assert_float32_agreement(ref, ours, keras_forward_rtol(model, z))
    features = len(np.unique(ref.segments))
    assert ours.num_samples == 1000
    # dedupe evaluates each distinct row once, and one repeat once more to check that the
    # classifier is deterministic
    assert distinct_rows(1000, features) == 2 ** features  # every pattern, most rows repeats
    assert ours.num_evaluated <= distinct_rows(1000, features) + 1
    assert sum(calls.sizes) == ours.num_evaluated  # images the model saw
    assert len(calls.sizes) < len(lime_calls.sizes)


def test_digits_cnn_auto_num_samples(digits_case):
    model, x, make_prediction, ref, _ = digits_case
    ours, calls = limefast_run(x, make_prediction, num_samples="auto", batch_size="auto",
                               dedupe=True, sampler="lime")  # lime's rows, to compare
    assert isinstance(ours.num_samples, int) and 1 <= ours.num_samples <= 1000
    assert 1 <= ours.num_evaluated <= ours.num_samples
    assert sum(calls.sizes) == ours.num_evaluated
    # The rounds take prefixes of lime's rows: the explanation is lime's for the count it
    # stopped at (to the float32 contract: the model saw other batches).
    short, lime_calls = lime_run(x, make_prediction, num_samples=ours.num_samples)
    z = keras_logit_scale(model, rgb2gray(lime_calls.inputs[0])[..., None])
    assert_float32_agreement(short, ours, keras_forward_rtol(model, z))
    for label, exp in ours.local_exp.items():
        stderr = ours.stderr[label]
        assert isinstance(stderr, dict) and set(stderr) == {f for f, _ in exp}
        assert all(isinstance(s, float) and math.isfinite(s) and s >= 0
                   for s in stderr.values())


# --- seed 003: MobileNetV2 (random weights) with preprocess_input ----------------------------

def mobilenet_v2(side=96):
    """``MobileNetV2(weights=None)`` at ``side`` x ``side`` with 10 classes, its convolutions
    redrawn He-normal. Keras' default (Glorot-uniform kernels, identity batch norms) shrinks the
    activations layer after layer: the logits come out near 1e-12 and every probability is 0.1,
    nothing to explain. He-normal kernels keep each layer's scale, as trained weights do."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(side, side, 3),
                                           classes=10)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kernel = layer.kernel
            fan_in = math.prod(kernel.shape[:2]) if isinstance(
                layer, keras.layers.DepthwiseConv2D) else math.prod(kernel.shape[:-1])
            kernel.assign((rng.standard_normal(kernel.shape) * math.sqrt(2 / fan_in))
                          .astype(np.float32))
    return model


@pytest.fixture(scope="module")
def mobilenet_case():
    model = mobilenet_v2()
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input

    def predict(batch):
        return model.predict(preprocess_input(batch), verbose=0)

    image = bundled("astronaut", 96)  # (96, 96, 3) uint8
    ref, watched = lime_run(image, predict, num_samples=100)
    return model, image, predict, ref, watched


def test_mobilenet_v2_lime_batches_give_lime_bitwise(mobilenet_case):
    model, image, predict, ref, lime_calls = mobilenet_case
    assert len(ref.top_labels) == 5
    ours, calls = limefast_run(image, predict, keep=True, num_samples=100)
    assert_bitwise_same_batches(lime_calls, calls)
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])


def test_mobilenet_v2_auto_batches_and_dedupe(mobilenet_case):
    model, image, predict, ref, lime_calls = mobilenet_case
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input
    ours, calls = limefast_run(image, predict, num_samples=100, batch_size="auto", dedupe=True)
    z = keras_logit_scale(model, preprocess_input(lime_calls.inputs[0]))
    rtol = keras_forward_rtol(model, z)
    assert_float32_agreement(ref, ours, rtol)
    features = len(np.unique(ref.segments))
    assert ours.num_evaluated <= distinct_rows(100, features) + 1  # + the determinism check
    assert sum(calls.sizes) == ours.num_evaluated
    assert len(calls.sizes) < len(lime_calls.sizes)


def test_mobilenet_v2_float_image_preprocessed_in_place():
    """``img_to_array`` gives float32 in 0..255, and ``preprocess_input`` scales a float batch
    in place: it rewrites the batch limefast handed over. lime's answer all the same."""
    model = mobilenet_v2(side=64)
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input

    def predict(batch):
        return model.predict(preprocess_input(batch), verbose=0)

    image = bundled("chelsea", 64).astype(np.float32)
    ref, lime_calls = lime_run(image, predict, num_samples=40)
    ours, calls = limefast_run(image, predict, keep=True, num_samples=40)
    assert_bitwise_same_batches(lime_calls, calls)  # as handed over, before preprocess_input
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])
    z = keras_logit_scale(model, preprocess_input(lime_calls.inputs[0].copy()))
    ours, _ = limefast_run(image, predict, num_samples=40, batch_size="auto", dedupe=True)
    assert_float32_agreement(ref, ours, keras_forward_rtol(model, z))
