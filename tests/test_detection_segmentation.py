"""Segmentation models explained region by region: the mean class probability over a region,
each region's explanation lime's, and torchvision's segmentation models through the adapter."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import lime.lime_image as lime_ref  # noqa: E402

from limefast.detection import DetectionExplainer, TorchSegmenter, segmentation_targets
from limefast.detection.segmenter import RegionScores
from tests.detection_models import grid_segments, scene


def channel_segmenter(images: np.ndarray) -> np.ndarray:
    """4 classes per pixel (background, red, green, blue): the softmax of the channels' values
    against a dark level."""
    x = np.asarray(images, dtype=np.float64) / 20.0
    logits = np.concatenate([np.full(x.shape[:3] + (1,), 4.0), x], axis=-1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).transpose(0, 3, 1, 2)


def naive_region_scores(images, regions):
    probs = channel_segmenter(images)
    return np.array([[probs[n, c][mask].mean() for mask, c in regions]
                     for n in range(len(images))])


def test_regions_are_the_predicted_areas():
    image, boxes = scene(0)
    targets = segmentation_targets(channel_segmenter(image[None])[0], min_pixels=10)
    found = {(t.label, t.box) for t in targets}
    for (x1, y1, x2, y2), c in boxes:
        assert (c + 1, (float(x1), float(y1), float(x2), float(y2))) in found
    assert targets[0].label == 0  # the background, the largest area
    only = segmentation_targets(channel_segmenter(image[None])[0], classes=[2])
    assert [t.label for t in only] == [2]


def test_each_region_equals_lime_on_its_mean_probability():
    image, _ = scene(0)
    kwargs = dict(num_samples=120, segmentation_fn=grid_segments)
    e = DetectionExplainer(random_state=3).explain_segmentation(image, channel_segmenter,
                                                                min_pixels=10, **kwargs)
    assert len(e.targets) == 4 and e.num_forwards == 1 + 120
    regions = [(t.region, t.label) for t in e.targets]
    for i, t in enumerate(e.targets):
        assert t.score == pytest.approx(naive_region_scores(image[None], regions)[0, i])
        ref = lime_ref.LimeImageExplainer(random_state=3).explain_instance(
            image, lambda imgs: naive_region_scores(imgs, regions), labels=(i,),
            top_labels=None, **kwargs)
        got, want = dict(e.local_exp[i]), dict(ref.local_exp[i])
        assert got.keys() == want.keys()
        assert max(abs(got[f] - want[f]) for f in got) <= 1e-9


def test_grad_cam_sum_target_is_the_mean_times_the_area():
    """pytorch-grad-cam's SemanticSegmentationTarget scores (output[c] * mask).sum(): LIME's
    weights of that sum are |R| times the mean's."""
    image, _ = scene(0)
    kwargs = dict(num_samples=100, segmentation_fn=grid_segments)
    e = DetectionExplainer(random_state=0).explain_segmentation(image, channel_segmenter,
                                                                min_pixels=10, **kwargs)
    t = e.targets[1]

    def summed(imgs):
        return (channel_segmenter(imgs)[:, t.label] * t.region).sum(axis=(1, 2))[:, None]

    ref = lime_ref.LimeImageExplainer(random_state=0).explain_instance(
        image, summed, labels=(0,), top_labels=None, **kwargs)
    ours = DetectionExplainer(random_state=0).explain_segmentation(
        image, channel_segmenter, regions=[(t.region, t.label)], **kwargs)
    area = t.region.sum()
    np.testing.assert_allclose(sorted(w * area for _, w in ours.local_exp[0]),
                               sorted(w for _, w in ref.local_exp[0]), rtol=1e-9, atol=1e-12)


def test_drise_and_kernelshap_on_regions():
    image, _ = scene(0)
    e = DetectionExplainer(random_state=0).explain_segmentation(
        image, channel_segmenter, "drise", num_samples=40, seed=0, batch_size=20)
    assert all(e.saliency[i].shape == (48, 48) for i in range(len(e.targets)))
    s = DetectionExplainer(random_state=0).explain_segmentation(
        image, channel_segmenter, "kernelshap", num_samples=160, segmentation_fn=grid_segments)
    for i, t in enumerate(s.targets):
        assert s.base_value[i] + sum(w for _, w in s.local_exp[i]) == pytest.approx(t.score)


def test_bad_segmenter_answers_and_regions():
    image, _ = scene(0)
    explainer = DetectionExplainer(random_state=0)
    calls = []

    def shrinking(images):
        calls.append(1)
        probs = channel_segmenter(images)
        return probs if len(calls) < 3 else probs[:, :3]

    with pytest.raises(ValueError, match=r"3 classes for batch 1 \(images 5..9\), 4 before"):
        explainer.explain_segmentation(image, shrinking, num_samples=20, batch_size=5,
                                       segmentation_fn=grid_segments)
    with pytest.raises(ValueError, match=r"\(N, n_classes, H, W\)"):
        explainer.explain_segmentation(image, lambda x: np.zeros((len(x), 4, 8, 8)))
    with pytest.raises(ValueError, match="image's shape"):
        explainer.explain_segmentation(image, channel_segmenter,
                                       regions=[(np.ones((8, 8), bool), 1)])
    with pytest.raises(ValueError, match="not one of the segmenter's 4 classes"):
        explainer.explain_segmentation(image, channel_segmenter,
                                       regions=[(np.ones((48, 48), bool), 7)])


def test_torchvision_segmentation_model_through_the_adapter():
    torch = pytest.importorskip("torch")
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                   num_classes=4)
    segmenter = TorchSegmenter(model, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                               batch_size=4)
    image, _ = scene(0)
    probs = segmenter(np.stack([image] * 5))
    assert probs.shape == (5, 4, 48, 48)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    with torch.inference_mode():
        x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255
             - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
            / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        ref = torch.softmax(model(x[None])["out"], 1).numpy()
    np.testing.assert_allclose(probs[0], ref[0], atol=1e-5)
    region = np.zeros((48, 48), bool)
    region[6:20, 4:18] = True
    e = DetectionExplainer(random_state=0).explain_segmentation(
        image, segmenter, regions=[(region, 1)], num_samples=16, batch_size=8,
        segmentation_fn=grid_segments)
    scores = RegionScores(segmenter, e.targets)
    assert e.targets[0].score == pytest.approx(scores(image[None])[0, 0], rel=1e-5)
    assert len(e.local_exp[0]) == 64
