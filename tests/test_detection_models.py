"""The small shapes detector: it ships trained, finds the shapes, and speaks the protocol."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from limefast.detection import DetectionExplainer  # noqa: E402
from limefast.detection.protocol import check_detections  # noqa: E402
from limefast.models import detector as shapes_detector  # noqa: E402
from tests.detection_models import grid_segments  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    return shapes_detector.load_model()


def test_packaged_checkpoint_is_small_and_finds_the_shapes(trained):
    assert shapes_detector.PACKAGED.is_file()
    assert shapes_detector.PACKAGED.stat().st_size < 1_000_000
    assert not trained.trained and trained.path == shapes_detector.PACKAGED
    assert trained.recall >= 0.9  # held-out scenes, IoU >= 0.5, the right class


def test_detections_follow_the_protocol(trained):
    scenes = shapes_detector.load_scenes(6, seed=5)
    sets = trained.detector(scenes.images)
    found = check_detections(sets, 6, "test")
    for f in found:
        assert f.class_probs.shape == (len(f), 3)
        np.testing.assert_allclose(f.class_probs.sum(1), 1, rtol=1e-6)
        assert (f.boxes >= 0).all() and (f.boxes <= 48).all()
        assert list(f.scores) == sorted(f.scores, reverse=True)
    # batches do not change the answer
    one = trained.detector(scenes.images[2:3])[0]
    np.testing.assert_allclose(one["boxes"], sets[2]["boxes"], atol=1e-5)


def test_training_runs_and_is_seeded():
    scenes = shapes_detector.load_scenes(40, seed=2)
    a = shapes_detector.train_model(scenes, seed=0, epochs=1)
    b = shapes_detector.train_model(scenes, seed=0, epochs=1)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert np.array_equal(p.numpy(), q.numpy())
    out = shapes_detector.ShapesDetector(a)(scenes.images[:2])
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4


def test_explained_boxes_rest_on_their_shapes(trained):
    scenes = shapes_detector.load_scenes(4, seed=7)
    image = scenes.images[0]
    e = DetectionExplainer(random_state=0).explain_instance(
        image, trained.detector, num_samples=300, score_threshold=0.3, batch_size=100,
        segmentation_fn=grid_segments,
        hide_color=0)
    assert len(e.targets) >= 1
    for i, t in enumerate(e.targets):
        x1, y1, x2, y2 = (int(round(v)) for v in t.box)
        inside = set(np.unique(e.segments[y1:y2, x1:x2]).tolist())
        assert e.local_exp[i][0][0] in inside
