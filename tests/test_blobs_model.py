"""The blob-counting model (``limefast.models.blobs``): its generated data, its cache and its
classifier. The model is trained once, into a cache folder of this module's own."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from limefast.models import blobs  # noqa: E402


@pytest.fixture(scope="module")
def loaded(trained_models_cache):
    """(first load, which trains; second load, from the cache), in a fresh cache folder."""
    return blobs.load_model(), blobs.load_model()


def test_data_are_seeded_balanced_and_40px():
    a, b = blobs.load_data(n_train=40, n_test=8), blobs.load_data(n_train=40, n_test=8)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.train_images.shape == (40, 40, 40, 3) and a.train_images.dtype == np.uint8
    labels = np.concatenate([a.train_labels, a.test_labels])  # balanced before the split
    assert np.bincount(labels, minlength=4).tolist() == [12] * 4
    other = blobs.load_data(n_train=40, n_test=8, seed=1)
    assert not np.array_equal(a.train_images, other.train_images)


@pytest.mark.parametrize("label", range(4))
def test_a_drawn_image_holds_label_plus_one_blobs(label):
    from scipy import ndimage

    for seed in range(10):
        clean = blobs.draw(np.random.RandomState(seed), label, noise=0)
        noisy = blobs.draw(np.random.RandomState(seed), label)
        assert noisy.shape == (40, 40, 3) and noisy.dtype == np.uint8
        # the noise is the only difference: the same background and blobs
        assert np.abs(noisy.astype(int) - clean).mean() < 2 * blobs.NOISE
        _, count = ndimage.label(clean.max(axis=-1) > 150)
        assert count == label + 1
        layout = blobs.blob_layout(np.random.RandomState(seed), label + 1)
        assert len(layout) == label + 1
        assert all(blobs.RADIUS[0] <= r <= blobs.RADIUS[1] for _, _, r in layout)


def test_the_cached_model_round_trips(loaded):
    first, second = loaded
    assert first.trained is True and second.trained is False
    assert second.path == first.path and first.path.name == f"blobs-cnn-v{blobs.MODEL_VERSION}.pt"
    assert first.path.stat().st_size < 1_000_000
    images = first.data.test_images[:16]
    np.testing.assert_allclose(blobs.BlobsClassifier(first.model)(images),
                               blobs.BlobsClassifier(second.model)(images), atol=1e-6)
    assert second.accuracy == pytest.approx(first.accuracy)


def test_the_model_counts_well(loaded):
    first, _ = loaded
    assert first.accuracy >= 0.85


def test_the_classifier_returns_probabilities_in_eval_mode(loaded):
    model = loaded[0].model
    model.train()  # the classifier must switch BatchNorm to its running statistics
    classify = blobs.BlobsClassifier(model)
    assert not model.training
    images = loaded[0].data.test_images[:8]
    probs = classify(images)
    assert probs.shape == (8, 4) and probs.dtype == np.float64
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    # one image alone scores as it does in a batch (no batch statistics)
    np.testing.assert_allclose(classify(images[:1]), probs[:1], atol=1e-6)
    # float input in [0, 255] gives the same as uint8
    np.testing.assert_allclose(classify(images.astype(np.float32)), probs, atol=1e-6)
