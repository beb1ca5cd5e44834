"""The bundled-digits CNN: trained, cached, and explained faithfully by LIME."""

from __future__ import annotations

import numpy as np
import pytest

from limefast import faithfulness
from limefast.lime_image import LimeImageExplainer
from limefast.wrappers.scikit_image import SegmentationAlgorithm

torch = pytest.importorskip("torch")
digits = pytest.importorskip("limefast.demo.digits")


@pytest.fixture(scope="module")
def trained(trained_models_cache):
    """Trained once for this module, into a cache folder of its own (a few seconds)."""
    return digits.load_model()


def test_data_and_training(trained):
    data = trained.data
    assert data.train_images.shape[1:] == (32, 32, 3) and data.train_images.dtype == np.uint8
    assert len(data.train_images) + len(data.test_images) == 1797
    assert trained.trained and trained.path.is_file()
    assert trained.accuracy > 0.95
    probabilities = digits.DigitsClassifier(trained.model)(data.test_images[:7])
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-9)


def test_the_cache_is_read_back_and_survives_damage(trained, monkeypatch):
    monkeypatch.setenv("LIMEFAST_CACHE", str(trained.path.parent))
    again = digits.load_model()
    assert not again.trained and again.accuracy == trained.accuracy
    for a, b in zip(again.model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)
    trained.path.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="ignoring unreadable cached digits model"):
        repaired = digits.load_model()
    assert repaired.trained and repaired.accuracy > 0.95
    assert digits.load_model().trained is False  # rewritten


def test_lime_top_superpixels_matter_more_than_random_ones(trained):
    # Switching off the superpixels LIME ranks highest must lower the predicted probability
    # more than switching off as many superpixels chosen at random.
    data = trained.data
    classifier = digits.DigitsClassifier(trained.model)
    predicted = classifier(data.test_images).argmax(1)
    picks = [int(np.flatnonzero((data.test_labels == d) & (predicted == d))[0])
             for d in (0, 2, 3, 5, 7, 8)]
    images = [data.test_images[i] for i in picks]
    segmentation = SegmentationAlgorithm("slic", n_segments=40, compactness=10, start_label=0)
    explanations = LimeImageExplainer(random_state=0).explain_batch(
        images, classifier, top_labels=1, hide_color=0, num_samples=300, batch_size=100,
        segmentation_fn=segmentation, progress_bar=False)
    rng = np.random.RandomState(0)
    lime_drops, random_drops = [], []
    for exp in explanations:
        label = exp.top_labels[0]
        n = int(exp.segments.max()) + 1
        steps = 8  # the first step switches off an eighth of the superpixels (4 or 5)
        lime = faithfulness(exp, classifier, steps, hide_color=0)
        lime_drops.append(lime.deletion[0] - lime.deletion[1])
        randoms = [faithfulness(exp, classifier, steps, label=label, hide_color=0,
                                weights=rng.permutation(n)) for _ in range(10)]
        random_drops.append(np.mean([r.deletion[0] - r.deletion[1] for r in randoms]))
    lime_drops, random_drops = np.array(lime_drops), np.array(random_drops)
    # Measured: 0.73 against 0.26 on average, and LIME ahead on every digit.
    assert lime_drops.mean() > random_drops.mean() + 0.2
    assert np.sum(lime_drops > random_drops) >= len(picks) - 1
