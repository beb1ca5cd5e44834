"""Grad-CAM against cases computed by hand, and its handling of inputs, labels and layers."""

from __future__ import annotations

import numpy as np
import pytest
from agreement import forward_rtol

from limefast import gradcam
from limefast.viz.cam import last_conv_block

torch = pytest.importorskip("torch")
nn = torch.nn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _set(layer, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(
            layer.weight.shape))
        if layer.bias is not None:
            layer.bias.copy_(torch.zeros_like(layer.bias) if bias is None
                             else torch.as_tensor(bias, dtype=torch.float32))
    return layer


def pooled_model():
    """conv 1x1 (maps x and -x/2), global average pool, linear [[2, 1], [-1, 3]]."""
    return nn.Sequential(
        _set(nn.Conv2d(1, 2, 1, bias=False), [1.0, -0.5]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        _set(nn.Linear(2, 2), [[2.0, 1.0], [-1.0, 3.0]]),
    )


X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


@pytest.mark.parametrize("device", DEVICES)
def test_pooled_head_by_hand(device):
    model = pooled_model().to(device)
    # Class 0: y = 2 mean(A0) + mean(A1), so alpha = (2/4, 1/4) and
    # cam = relu(x/2 - x/8) = 3x/8. Class 1: alpha = (-1/4, 3/4): cam = relu(-5x/8) = 0.
    raw = gradcam(model, X, target_layer=model[0], labels=0, normalize=False)
    np.testing.assert_allclose(raw[0], 0.375 * X[0, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(gradcam(model, X, target_layer=model[0])[0],
                               X[0, 0].numpy() / 4, rtol=1e-6)  # top class is 0; max 1
    assert np.all(gradcam(model, X, target_layer=model[0], labels=[1]) == 0)


def test_flattened_head_by_hand():
    # y = sum(W * A) with A = x: each map's weight is the mean of W = 0.5, cam = relu(x / 2).
    model = nn.Sequential(_set(nn.Conv2d(1, 1, 1, bias=False), [1.0]), nn.Flatten(),
                          _set(nn.Linear(4, 1), [1.0, -2.0, 3.0, 0.0]))
    x = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    raw = gradcam(model, x, target_layer="0", labels=0, normalize=False)
    np.testing.assert_allclose(raw[0], [[0.0, 1.0], [1.5, 0.0]], rtol=1e-6)


def test_upsampling_by_hand():
    # A stride-2 average turns the 4x4 input (ones in the top-left 2x2 block) into
    # A = [[1, 0], [0, 0]]; alpha = 1/4. Bilinear upsampling (align_corners=False) by 2 weighs
    # the low-resolution pixels (1, 3/4, 1/4, 0) along each axis.
    model = nn.Sequential(_set(nn.Conv2d(1, 1, 2, stride=2, bias=False), [0.25] * 4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), _set(nn.Linear(1, 1), [1.0]))
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :2] = 1
    ramp = np.array([1.0, 0.75, 0.25, 0.0])
    raw = gradcam(model, x, labels=0, normalize=False)  # default layer: the conv
    np.testing.assert_allclose(raw[0], 0.25 * np.outer(ramp, ramp), rtol=1e-6)


def test_numpy_images_are_preprocessed_like_a_torch_classifier():
    from limefast import TorchClassifier

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (2, 6, 5, 3)).astype(np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    expected = gradcam(model, x, labels=[0, 2])
    # Normalised maps (largest value 1) of float32 forwards and backwards computed from inputs
    # normalised by other float32 operations: within twice the forward's relative error.
    atol = 2 * forward_rtol(model)
    np.testing.assert_allclose(gradcam(model, images, labels=[0, 2], mean=mean, std=std),
                               expected, rtol=0, atol=atol)
    classifier = TorchClassifier(model, mean=mean, std=std, device="cpu")
    np.testing.assert_allclose(gradcam(classifier, images, labels=[0, 2]), expected,
                               rtol=0, atol=atol)
    one = gradcam(model, images[1], labels=2, mean=mean, std=std)  # one (H, W, C) image
    np.testing.assert_allclose(one[0], expected[1], rtol=0, atol=atol)


def test_batches_labels_and_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).train()
    x = torch.rand(5, 3, 9, 9)
    whole = gradcam(model, x)
    assert whole.shape == (5, 9, 9) and whole.dtype == np.float32
    assert model.training  # the mode is restored
    for batch_size in (1, 2, 4):  # other batches: other float32 kernels (tests/agreement.py)
        np.testing.assert_allclose(gradcam(model, x, batch_size=batch_size), whole,
                                   rtol=0, atol=2 * forward_rtol(model))
    with torch.no_grad():
        model.eval()
        top = model(x).argmax(1).tolist()
    np.testing.assert_allclose(gradcam(model, x, labels=top), whole, rtol=1e-6)
    assert np.all((whole >= 0) & (whole <= 1))
    with pytest.raises(ValueError, match="one int or 5 ints"):
        gradcam(model, x, labels=[0, 1])
    with pytest.raises(ValueError, match="label 7 is outside the model's 3 classes"):
        gradcam(model, x, labels=7)


def test_default_layer_is_the_last_convolutional_block():
    torchvision = pytest.importorskip("torchvision")
    from limefast.models.digits import DigitsCNN

    resnet = torchvision.models.resnet18(weights=None).eval()
    assert last_conv_block(resnet, torch.rand(1, 3, 64, 64)) is resnet.layer4
    digits = DigitsCNN().eval()
    assert last_conv_block(digits, torch.rand(1, 3, 32, 32)) is digits.features
    by_name = gradcam(resnet, torch.rand(2, 3, 64, 64), target_layer="layer4", labels=3)
    assert by_name.shape == (2, 64, 64)


def test_bad_layers_and_inputs():
    model = pooled_model()
    with pytest.raises(ValueError, match="no layer 'nope'"):
        gradcam(model, X, target_layer="nope")
    with pytest.raises(ValueError, match="not a submodule"):
        gradcam(model, X, target_layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="must output \\(N, K, h, w\\)"):
        gradcam(model, X, target_layer=model[2])
    with pytest.raises(ValueError, match="no layer with a spatial output"):
        gradcam(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), X)
    with pytest.raises(TypeError, match="torch.nn.Module or a limefast.TorchClassifier"):
        gradcam(lambda batch: batch, X)
    with pytest.raises(ValueError, match="must be \\(N, C, H, W\\); got shape \\(2, 2\\)"):
        gradcam(model, torch.rand(2, 2))
