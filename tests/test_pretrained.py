"""The models users already have: Hugging Face ``transformers`` classifiers and timm models in a
``TorchClassifier``, their outputs and normalisation taken as they come (random weights; nothing
is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the device path needs torch: limefast[torch]")

from agreement import assert_float32_agreement, forward_rtol, logit_scale  # noqa: E402

from limefast import TorchClassifier, lime_image  # noqa: E402
from limefast.device.pretrained import logits_of, normalisation_of  # noqa: E402

SIZE = 32


def grid(image):
    """16 square superpixels of an (32, 32) image."""
    rows, cols = np.indices(image.shape[:2]) // (SIZE // 4)
    return rows * 4 + cols


@pytest.fixture(scope="module")
def vit():
    transformers = pytest.importorskip("transformers", reason="test-only: limefast[test]")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=SIZE, patch_size=8, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=5)
    model = transformers.ViTForImageClassification(config).eval()
    processor = transformers.ViTImageProcessor(image_mean=[0.4, 0.5, 0.6],
                                               image_std=[0.2, 0.25, 0.3])
    return model, processor


@pytest.fixture(scope="module")
def timm_model():
    timm = pytest.importorskip("timm", reason="test-only: limefast[test]")
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=7).eval()


def images(n=3, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.rand(n, SIZE, SIZE, 3) * 255).astype(np.uint8)


def by_hand(model, batch, mean, std):
    """Softmax of the model's logits on images normalised as its configuration says."""
    x = (batch / 255.0 - np.asarray(mean)) / np.asarray(std)
    x = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.softmax(logits_of(model(x)), 1).numpy()


@pytest.mark.parametrize("compile", [None, "trace"])
def test_transformers_logits_and_processor_normalisation(vit, compile):
    model, processor = vit
    clf = TorchClassifier(model, processor=processor, device="cpu", compile=compile)
    assert clf.normalisation == "ViTImageProcessor.image_mean/image_std"
    np.testing.assert_allclose(clf.mean, [0.4, 0.5, 0.6])
    np.testing.assert_allclose(clf.std, [0.2, 0.25, 0.3])
    batch = images()
    got = clf(batch)
    want = by_hand(model, batch, processor.image_mean, processor.image_std)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, rtol=forward_rtol(model), atol=1e-6)


def test_outputs_taken_apart_only_where_unambiguous(vit):
    """``.logits`` and a ``"logits"`` key are the scores; a tuple (``return_dict=False``) is
    refused with the hint to select its item."""
    model, processor = vit
    x = torch.zeros(1, 3, SIZE, SIZE)
    out = model(x)
    assert logits_of(out) is out.logits
    assert logits_of({"logits": out.logits}) is out.logits
    pair = model(x, return_dict=False)
    assert isinstance(pair, tuple) and logits_of(pair) is pair

    class TupleOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x, return_dict=False)

    clf = TorchClassifier(TupleOut(), processor=processor, device="cpu")
    with pytest.raises(TypeError, match=r"returned a tuple.*out\[0\]"):
        clf(images(1))


def test_explicit_normalisation_wins_and_do_normalize_false(vit):
    model, processor = vit
    clf = TorchClassifier(model, processor=processor, mean=(0.1, 0.2, 0.3),
                          std=(1.0, 1.0, 1.0), device="cpu")
    assert clf.normalisation == "given"
    np.testing.assert_allclose(clf.mean, [0.1, 0.2, 0.3])
    half = TorchClassifier(model, processor=processor, mean=(0.1, 0.2, 0.3), device="cpu")
    np.testing.assert_allclose(half.std, 1.0)  # not the processor's: never half and half
    plain = type(processor)(do_normalize=False)
    mean, std, source = normalisation_of(model, plain)
    assert (mean, std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) and "do_normalize" in source
    with pytest.raises(TypeError, match="image_mean"):
        normalisation_of(model, object())


def test_timm_pretrained_cfg_normalisation(timm_model):
    cfg = timm_model.pretrained_cfg
    clf = TorchClassifier(timm_model, device="cpu")
    assert clf.normalisation == "timm pretrained_cfg"
    np.testing.assert_allclose(clf.mean, cfg["mean"])
    np.testing.assert_allclose(clf.std, cfg["std"])
    batch = images(2, seed=1)
    np.testing.assert_allclose(clf(batch), by_hand(timm_model, batch, cfg["mean"], cfg["std"]),
                               rtol=forward_rtol(timm_model), atol=1e-6)


def test_plain_module_keeps_identity_normalisation():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE * 3, 4))
    clf = TorchClassifier(model, device="cpu")
    assert clf.normalisation == "none"
    np.testing.assert_allclose(clf.mean, 0.0)
    np.testing.assert_allclose(clf.std, 1.0)


@pytest.mark.parametrize("which", ["vit", "timm"])
def test_explanations_on_the_device_path_agree_with_lime(which, vit, timm_model):
    """The device path with the model's own normalisation explains as lime does with the same
    model called as a NumPy classifier_fn (the float32 contract: other batches)."""
    lime_ref = pytest.importorskip("lime.lime_image", reason="the reference: limefast[test]")
    model, processor = vit if which == "vit" else (timm_model, None)
    clf = TorchClassifier(model, processor=processor, device="cpu")
    image = images(1, seed=3)[0]
    kwargs = dict(top_labels=2, num_samples=200, segmentation_fn=grid, random_seed=7)
    ours = lime_image.LimeImageExplainer(random_state=0).explain_instance(
        image, clf, progress_bar=False, **kwargs)
    ref = lime_ref.LimeImageExplainer(random_state=0).explain_instance(
        image, lambda b: clf(np.asarray(b)), batch_size=10, **kwargs)
    rtol = forward_rtol(model, logits=logit_scale(clf, image[None]))
    assert_float32_agreement(ref, ours, rtol)
