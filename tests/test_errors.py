"""Bad input gets a clear ValueError/TypeError, never a Numba typing error or an IndexError."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GridClassifier, bundled

from limefast import lime_image

IMAGE = bundled("astronaut", 32)
SEGMENTS = (np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8


def explain(image=IMAGE, classifier=None, **kwargs):
    kwargs.setdefault("segmentation_fn", lambda im: SEGMENTS)
    kwargs.setdefault("num_samples", 20)
    kwargs.setdefault("progress_bar", False)
    explainer = kwargs.pop("explainer", None) or lime_image.LimeImageExplainer(random_state=0)
    classifier = GridClassifier() if classifier is None else classifier
    return explainer.explain_instance(image, classifier, **kwargs)


@pytest.mark.parametrize("image,error,match", [
    (np.zeros((4, 4, 3, 2), np.uint8), ValueError, r"\(H, W\) or \(H, W, C\); got shape"),
    (np.zeros(10, np.uint8), ValueError, r"\(H, W\) or \(H, W, C\)"),
    (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
    (np.full((32, 32, 3), np.nan), ValueError, "NaN"),
    (np.full((32, 32, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
    (np.zeros((32, 32, 3), bool), TypeError, "astype"),
    (np.zeros((32, 32, 3), complex), TypeError, "integer or float dtype"),
    ("not an image", ValueError, "got shape"),
])
def test_bad_images(image, error, match):
    with pytest.raises(error, match=match):
        explain(image)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_samples": 0}, ValueError, "num_samples must be an integer >= 1; got 0"),
    ({"num_samples": 2.5}, TypeError, "num_samples must be an integer"),
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ({"batch_size": None}, TypeError, "batch_size"),
    ({"num_features": 0}, ValueError, "num_features"),
    ({"top_labels": -1}, ValueError, "top_labels"),
    ({"top_labels": None, "labels": (3, 10)}, ValueError, "label 10 is outside"),
    ({"top_labels": None, "labels": (-1,)}, ValueError, "class indices >= 0; got -1"),
    ({"top_labels": None, "labels": ("a",)}, TypeError, "integer class indices"),
    ({"top_labels": None, "labels": 5}, TypeError, "iterable"),
    ({"segmentation_fn": lambda im: SEGMENTS[:10]}, ValueError, "height and width"),
    ({"segmentation_fn": lambda im: SEGMENTS + 0.5}, ValueError, "integer labels"),
    ({"segmentation_fn": lambda im: SEGMENTS.astype(str)}, TypeError, "integer labels"),
    ({"segmentation_fn": "quickshift"}, TypeError, "segmentation_fn must be callable"),
    ({"distance_metric": "no-such-metric"}, ValueError, "distance_metric"),
    ({"hide_color": (1, 2)}, ValueError, "hide_color"),
    ({"hide_color": 300}, ValueError, "hide_color"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        explain(**kwargs)


def test_not_callable_classifier():
    with pytest.raises(TypeError, match="classifier_fn must be callable"):
        explain(classifier=np.zeros(3))


@pytest.mark.parametrize("classifier,error,match", [
    (lambda b: np.zeros(len(b)), ValueError, r"2-D array \(n_images, n_classes\); got shape"),
    (lambda b: np.zeros((len(b) + 1, 3)), ValueError, "returned 11 rows for 10 images"),
    (lambda b: np.full((len(b), 3), np.nan), ValueError, "NaN or infinite"),
    (lambda b: np.full((len(b), 3), "x"), TypeError, "must return numbers"),
])
def test_bad_classifier_outputs(classifier, error, match):
    with pytest.raises(error, match=match):
        explain(classifier=classifier, num_samples=50, hide_color=255)


def test_classifier_changing_class_count_between_batches():
    sizes = iter([3, 3, 4, 3, 3])
    with pytest.raises(ValueError, match="4 classes on the batch of rows 20..29 but 3 on earlier"):
        explain(classifier=lambda b: np.ones((len(b), next(sizes))), num_samples=50)


def test_classifier_exception_names_the_batch_and_explainer_stays_usable():
    explainer = lime_image.LimeImageExplainer(random_state=0)
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("model exploded")
        return GridClassifier()(batch)

    with pytest.raises(RuntimeError, match="model exploded") as info:
        explain(classifier=flaky, explainer=explainer, num_samples=50)
    assert any("rows 20..29" in note for note in info.value.__notes__)
    again = explain(classifier=GridClassifier(), explainer=explainer, num_samples=50)
    assert len(again.local_exp) == 5


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="feature_selection must be one of"):
        lime_image.LimeImageExplainer(feature_selection="best")
    with pytest.raises(TypeError, match="kernel must be callable"):
        lime_image.LimeImageExplainer(kernel=3)
    with pytest.raises(ValueError):
        lime_image.LimeImageExplainer(kernel_width="wide")
    for width in (0, -0.25, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="kernel_width must be a positive number"):
            lime_image.LimeImageExplainer(kernel_width=width)


def test_kernel_returning_wrong_shape():
    explainer = lime_image.LimeImageExplainer(kernel=lambda d, kernel_width: np.ones(3))
    with pytest.raises(ValueError, match="one weight per sample"):
        explain(explainer=explainer)


def test_memory_budget_refuses_one_huge_batch(monkeypatch):
    from limefast import config

    monkeypatch.setattr(config, "MEMORY_BUDGET_BYTES", 10_000)
    with pytest.raises(MemoryError, match="MEMORY_BUDGET_BYTES"):
        explain(batch_size=10)


def test_a_missing_optional_dependency_says_how_to_install_it(monkeypatch):
    import sys

    from limefast import optional

    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if it were not installed
    assert optional.available("numpy") and not optional.available("numpy", "torchvision")
    with pytest.raises(ImportError, match=r"^the feature needs torchvision: "
                                          r"pip install 'limefast\[torch\]' \(import failed: "):
        optional.require("torchvision", "the feature")
    assert optional.install_hint("ray.data") == "pip install 'limefast[dataset]'"
    assert optional.install_hint("numba.cuda") == "pip install 'limefast[cuda]'"
    assert optional.install_hint("matplotlib.pyplot") == "pip install matplotlib"
