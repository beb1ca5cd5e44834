"""TorchDetector on torchvision's detectors with random weights: the adapter's dicts are the
model's own answers, whatever the batch, and the explainer runs on them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")

from limefast.detection import DetectionExplainer, TorchDetector  # noqa: E402
from tests.detection_models import grid_segments  # noqa: E402

SMALL = dict(weights=None, weights_backbone=None, num_classes=5)
MODELS = {
    "fasterrcnn_mobilenet": lambda: detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        **SMALL, min_size=64, max_size=64, box_score_thresh=0.0, box_detections_per_img=20),
    "retinanet": lambda: detection.retinanet_resnet50_fpn(
        **SMALL, min_size=64, max_size=64, score_thresh=0.0, detections_per_img=20),
    "fcos": lambda: detection.fcos_resnet50_fpn(
        **SMALL, min_size=64, max_size=64, score_thresh=0.0, detections_per_img=20),
    "ssdlite": lambda: detection.ssdlite320_mobilenet_v3_large(
        **SMALL, score_thresh=0.0, detections_per_img=20),
    "maskrcnn": lambda: detection.maskrcnn_resnet50_fpn(
        **SMALL, min_size=64, max_size=64, box_score_thresh=0.0, box_detections_per_img=5),
}


def images(n: int = 3, size: int = 48) -> np.ndarray:
    rng = np.random.RandomState(0)
    out = rng.randint(0, 60, (n, size, size, 3)).astype(np.uint8)
    for i in range(n):
        y, x = rng.randint(0, size - 20, 2)
        out[i, y:y + 16, x:x + 16] = rng.randint(150, 255, 3)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", list(MODELS))
def test_adapter_returns_the_models_own_detections(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    batch = images()
    detector = TorchDetector(model, batch_size=2)  # three images: a batch of 2, then 1
    found = detector(batch)
    assert len(found) == 3
    with torch.inference_mode():
        for image, got in zip(batch, found):
            ref = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
            assert set(got) == {"boxes", "scores", "labels"}  # masks are not carried
            np.testing.assert_allclose(got["boxes"], ref["boxes"].numpy(), atol=1e-3)
            np.testing.assert_allclose(got["scores"], ref["scores"].numpy(), atol=1e-5)
            np.testing.assert_array_equal(got["labels"], ref["labels"].numpy())
            assert got["boxes"].shape[1] == 4 and len(got["scores"]) > 0


@pytest.mark.filterwarnings("ignore:limefast. the score of target",
                            "ignore:limefast. 24 coalitions")
def test_explainer_runs_on_a_torchvision_detector():
    torch.manual_seed(0)
    detector = TorchDetector(MODELS["fasterrcnn_mobilenet"](), batch_size=16, min_score=0.1)
    image = images(1)[0]
    first = detector(image[None])[0]
    targets = [(tuple(first["boxes"][j]), int(first["labels"][j])) for j in range(3)]
    for method, n in (("lime", 24), ("kernelshap", 24), ("drise", 16)):
        e = DetectionExplainer(random_state=0).explain_instance(
            image, detector, method, num_samples=n, targets=targets, batch_size=16,
            segmentation_fn=grid_segments if method != "drise" else None)
        assert len(e.targets) == 3 and e.num_forwards == 1 + n
        if method == "drise":
            assert all(e.saliency[i].shape == image.shape[:2] for i in range(3))
        else:
            assert sorted(e.local_exp) == [0, 1, 2]


def test_adapter_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchDetector(lambda x: x)
    model = torch.nn.Conv2d(3, 1, 1)
    with pytest.raises(ValueError, match="not a list of dicts"):
        TorchDetector(torch.nn.Sequential()).__call__(images(1))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        TorchDetector(model)(np.zeros((1, 8, 8, 4), np.uint8))
