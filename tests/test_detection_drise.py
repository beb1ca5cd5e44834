"""D-RISE: the reference's masks for a seed, its maps on the same masks, memory flat in the
number of masks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
drise_ref = pytest.importorskip("vision_explanation_methods.explanations.drise")
common_ref = pytest.importorskip("vision_explanation_methods.explanations.common")

from limefast.detection import DetectionExplainer, drise_masks  # noqa: E402
from limefast.detection.drise import drise_maps, min_max  # noqa: E402
from limefast.detection.scores import TargetScores  # noqa: E402
from tests.detection_models import ChannelBoxDetector, scene  # noqa: E402


@pytest.mark.parametrize("shape", [(48, 48), (37, 61), (100, 30)])
def test_masks_are_the_references_after_manual_seed(shape):
    seed = 7
    ours = np.asarray(drise_masks(25, shape, seed=seed))
    torch.manual_seed(seed)
    pad = int(max(shape[0] / 16, shape[1] / 16))
    ref = np.stack([drise_ref.generate_mask((16, 16), shape, pad, "cpu")[0].numpy()
                    for _ in range(25)])
    np.testing.assert_array_equal(ours, ref)
    assert ours.dtype == np.float32 and set(np.unique(ours)) <= {0.0, 1.0}
    masks = drise_masks(25, shape, seed=seed)
    np.testing.assert_array_equal(masks[3], ref[3])
    np.testing.assert_array_equal(masks[5:9], ref[5:9])


class RefModel(common_ref.GeneralObjectDetectionModelWrapper):
    """The test detector behind the reference's interface: float (1, 3, H, W) in [0, 1]."""

    def __init__(self, detector):
        self.detector = detector

    def predict(self, x):
        images = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        return [common_ref.DetectionRecord(
            torch.tensor(d["boxes"], dtype=torch.float32),
            torch.tensor(d["scores"], dtype=torch.float32),
            torch.tensor(d["class_probs"], dtype=torch.float32)) for d in self.detector(images)]


def reference_maps(image, detector, targets, n, seed):
    record = common_ref.DetectionRecord(
        torch.tensor([t.box for t in targets], dtype=torch.float32),
        torch.ones(len(targets)),  # the target's own objectness: 1, so the score is the match's
        torch.tensor(np.stack([t.class_probs for t in targets]), dtype=torch.float32))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(seed)
    out = drise_ref.DRISE_saliency(RefModel(detector), tensor, [record], n)
    return np.stack([m["detection"][0].numpy() for m in out[0]])


@pytest.mark.parametrize("batch_size", [1, 16, "auto"])
def test_maps_equal_the_references_on_the_same_masks(batch_size):
    image, boxes = scene(1)
    detector = ChannelBoxDetector(boxes)
    e = DetectionExplainer(random_state=0).explain_instance(
        image, detector, method="drise", num_samples=60, seed=3, batch_size=batch_size)
    ref = reference_maps(image, detector, e.targets, 60, 3)
    assert len(e.saliency) == len(e.targets) == ref.shape[0]
    for i in range(len(e.targets)):
        np.testing.assert_allclose(e.saliency[i], ref[i], atol=2e-5)
    assert e.num_forwards == 1 + 60
    # the same masks passed in, as drise_masks gives them or as an array
    masks = drise_masks(60, image.shape[:2], seed=3)
    for given in (masks, np.asarray(masks)):
        again = DetectionExplainer(random_state=5).explain_instance(
            image, detector, method="drise", masks=given)
        for i in range(len(e.targets)):
            np.testing.assert_allclose(again.saliency_raw[i], e.saliency_raw[i], rtol=1e-12,
                                       atol=1e-9)


def test_map_is_the_stated_sum():
    image, boxes = scene(2)
    detector = ChannelBoxDetector(boxes)
    masks = np.asarray(drise_masks(30, image.shape[:2], seed=1))
    e = DetectionExplainer(random_state=0).explain_instance(image, detector, method="drise",
                                                            masks=masks)
    fn = TargetScores(detector, e.targets)
    s = fn((image[None] * masks[..., None]).astype(np.uint8))
    expect = np.einsum("nk,nhw->khw", s, masks) - s.mean(0)[:, None, None] * masks.sum(0)
    for i in range(len(e.targets)):
        np.testing.assert_allclose(e.saliency_raw[i], expect[i], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(e.saliency[i], min_max(expect[i]), atol=1e-10)
    picture = e.render(0)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    with pytest.raises(ValueError, match="saliency"):
        e.get_image_and_mask(0)


def test_soft_masks_multiply_float_images():
    image, boxes = scene(0)
    image = image.astype(np.float32) / 255
    rng = np.random.RandomState(0)
    masks = rng.uniform(0, 1, (8, 48, 48)).astype(np.float32)
    seen = []

    def score_fn(images):
        seen.append(images.copy())
        return images.reshape(len(images), -1).mean(1, keepdims=True)

    drise_maps(image, score_fn, masks, batch_size=3)
    np.testing.assert_allclose(np.concatenate(seen), image[None] * masks[..., None], rtol=1e-6)


def test_memory_is_flat_in_the_number_of_masks():
    image, _ = scene(0)
    peaks = []
    for n in (100, 800):
        masks = drise_masks(n, image.shape[:2], seed=0)
        tracemalloc.start()
        drise_maps(image, lambda imgs: np.zeros((len(imgs), 3)), masks, batch_size=50)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 800 masks of 48x48 float32 would be 7.4 MB; the batches and sums stay the same
    assert peaks[1] < 1.2 * peaks[0] + 100_000, peaks


def test_bad_masks():
    image, boxes = scene(0)
    detector = ChannelBoxDetector(boxes)
    explainer = DetectionExplainer(random_state=0)
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\)"):
        explainer.explain_instance(image, detector, method="drise", masks=np.ones((4, 10, 10)))
    with pytest.raises(ValueError, match=r"drawn for images of \(32, 32\)"):
        explainer.explain_instance(image, detector, method="drise",
                                   masks=drise_masks(4, (32, 32)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explainer.explain_instance(image, detector, method="drise",
                                   masks=np.full((2, 48, 48), 2.0))
    with pytest.raises(TypeError, match="D-RISE's"):
        explainer.explain_instance(image, detector, method="lime", seed=3)
