"""DetectionExplainer with LIME and KernelSHAP: every target from one set of forwards, each
equal to lime's (or limefast's KernelSHAP) explanation of that target's score alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import lime.lime_image as lime_ref  # noqa: E402

from limefast.core.rounds import SamplingWarning
from limefast.detection import DetectionExplainer, Target, affinity, box_iou
from limefast.detection.protocol import Detections, TargetSet, batch_affinity, check_detections
from limefast.kernelshap import KernelShapImageExplainer
from tests.detection_models import ChannelBoxDetector, grid_segments, scene


def naive_affinity(targets, sets) -> np.ndarray:
    """D-RISE's affinity by loops: max over detections of IoU x cosine (or label equality)
    x score, one image at a time."""
    out = np.zeros((len(sets), len(targets)))
    for n, d in enumerate(sets):
        for k, t in enumerate(targets):
            best = 0.0
            for j in range(len(d["scores"])):
                a, b = t.box, d["boxes"][j]
                iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = iw * ih
                union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
                iou = inter / union if union > 0 else 0.0
                if t.class_probs is not None and "class_probs" in d:
                    p, q = t.class_probs, d["class_probs"][j]
                    sim = float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))
                else:
                    sim = float(t.label == d["labels"][j])
                best = max(best, iou * sim * d["scores"][j])
            out[n, k] = best
    return out


class NaiveScores:
    """The targets' affinity scores as a classifier, for lime."""

    def __init__(self, detector, targets):
        self.detector, self.targets = detector, targets

    def __call__(self, images):
        return naive_affinity(self.targets, self.detector(images))


@pytest.fixture(scope="module")
def setting():
    image, boxes = scene(0)
    return image, ChannelBoxDetector(boxes)


def same(a, b, tol=1e-9):
    a, b = dict(a), dict(b)
    assert a.keys() == b.keys()
    assert max(abs(a[f] - b[f]) for f in a) <= tol


@pytest.mark.parametrize("probs", [True, False])
@pytest.mark.parametrize("hide_color", [None, 0])
def test_each_target_equals_lime_on_its_score(setting, probs, hide_color):
    image, _ = setting
    detector = ChannelBoxDetector(scene(0)[1], probs=probs)
    kwargs = dict(num_samples=200, segmentation_fn=grid_segments, hide_color=hide_color)
    e = DetectionExplainer(random_state=4).explain_instance(image, detector, **kwargs)
    assert len(e.targets) == 6  # the three squares and their shifted candidates
    assert [t.score for t in e.targets] == sorted((t.score for t in e.targets), reverse=True)
    fn = NaiveScores(detector, e.targets)
    for i in range(len(e.targets)):
        ref = lime_ref.LimeImageExplainer(random_state=4).explain_instance(
            image, fn, labels=(i,), top_labels=None, **kwargs)
        same(e.local_exp[i], ref.local_exp[i])
        assert abs(e.intercept[i] - ref.intercept[i]) <= 1e-9
        assert abs(e.score[i] - ref.score) <= 1e-9
        np.testing.assert_allclose(e.local_pred[i], ref.local_pred, atol=1e-9)
        np.testing.assert_array_equal(e.segments, ref.segments)
    # one set of forwards for every target: the image, then the 200 samples, once
    assert e.num_forwards == 1 + 200
    assert e.prediction.shape == (6,)
    np.testing.assert_allclose(e.prediction, [t.score for t in e.targets])


def test_default_segmentation_and_batch_sizes(setting):
    image, detector = setting
    a = DetectionExplainer(random_state=1).explain_instance(image, detector, num_samples=60,
                                                            batch_size=7)
    b = DetectionExplainer(random_state=1).explain_instance(image, detector, num_samples=60,
                                                            batch_size="auto")
    fn = NaiveScores(detector, a.targets)
    ref = lime_ref.LimeImageExplainer(random_state=1).explain_instance(
        image, fn, labels=(2,), top_labels=None, num_samples=60)
    same(a.local_exp[2], ref.local_exp[2])
    for i in range(len(a.targets)):
        same(a.local_exp[i], b.local_exp[i])


def test_kernelshap_equals_kernelshap_of_the_scores(setting):
    image, detector = setting
    kwargs = dict(num_samples=256, segmentation_fn=grid_segments)
    e = DetectionExplainer(random_state=2).explain_instance(image, detector, "kernelshap",
                                                            **kwargs)
    fn = NaiveScores(detector, e.targets)
    ref = KernelShapImageExplainer(random_state=2).explain_instance(
        image, fn, labels=list(range(len(e.targets))), top_labels=None, progress_bar=False,
        **kwargs)
    for i in range(len(e.targets)):
        same(e.local_exp[i], ref.local_exp[i])
        assert abs(e.base_value[i] - ref.base_value[i]) <= 1e-9
        # efficiency: the values add up to the target's score on the image
        total = e.base_value[i] + sum(w for _, w in e.local_exp[i])
        assert abs(total - e.targets[i].score) <= 1e-9
    assert e.num_forwards == 1 + e.num_evaluated


def test_squares_are_explained_by_their_own_pixels(setting):
    image, detector = setting
    e = DetectionExplainer(random_state=0).explain_instance(
        image, detector, num_samples=400, segmentation_fn=grid_segments, hide_color=0)
    for i, t in enumerate(e.targets[:3]):
        x1, y1, x2, y2 = (int(v) for v in t.box)
        inside = np.unique(e.segments[y1:y2, x1:x2])
        top = [f for f, _ in e.local_exp[i][:3]]
        assert set(top) <= set(inside.tolist()), (i, top, inside)


def test_given_targets_and_a_missed_box_is_flat(setting):
    image, detector = setting
    targets = [((4, 6, 18, 20), 0), ((0, 40, 8, 48), 1)]  # the second matches nothing
    with pytest.warns(SamplingWarning, match=r"target\(s\) \[1\]"):
        e = DetectionExplainer(random_state=0).explain_instance(
            image, detector, num_samples=80, segmentation_fn=grid_segments, targets=targets)
    assert e.stop_reasons == {0: "num_samples", 1: "flat"}
    assert all(w == 0 for _, w in e.local_exp[1])
    assert e.targets[1].given and e.targets[1].score == 0.0
    assert e.targets[0].score == pytest.approx(e.prediction[0])
    assert e.stop_reason == "num_samples"
    record = e.record()
    assert record["labels"]["1"]["stop_reason"] == "flat"
    assert record["labels"]["0"]["box"] == [4.0, 6.0, 18.0, 20.0]
    d = {"boxes": np.array([[4, 6, 18, 20]]), "labels": np.array([0])}
    e2 = DetectionExplainer(random_state=0).explain_instance(
        image, detector, num_samples=80, segmentation_fn=grid_segments, targets=d)
    same(e2.local_exp[0], e.local_exp[0])


def test_affinity_callable_replaces_drise_affinity(setting):
    image, detector = setting

    def best_score(targets, found):  # the highest score of the target's class, anywhere
        return np.array([found.scores[found.labels == t.label].max(initial=0.0)
                         for t in targets])

    e = DetectionExplainer(random_state=0).explain_instance(
        image, detector, num_samples=50, segmentation_fn=grid_segments, affinity=best_score)
    found = check_detections(detector(image[None]), 1, "x")[0]
    np.testing.assert_allclose(e.prediction, best_score(e.targets, found))


def test_affinity_matches_loops():
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 30, (9, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 20, (9, 2))], 1)
    probs = rng.dirichlet(np.ones(4), 9)
    targets = [Target(tuple(b), int(p.argmax()), 1.0, p) for b, p in zip(boxes[:3], probs[:3])]
    d = {"boxes": boxes[3:], "scores": rng.uniform(0, 1, 6), "labels": probs[3:].argmax(1),
         "class_probs": probs[3:]}
    found = check_detections([d], 1, "x")[0]
    np.testing.assert_allclose(affinity(TargetSet(targets), found),
                               naive_affinity(targets, [d])[0], rtol=1e-12)
    no_probs = [Target(t.box, t.label) for t in targets]
    d.pop("class_probs")
    np.testing.assert_allclose(affinity(TargetSet(no_probs), check_detections([d], 1, "x")[0]),
                               naive_affinity(no_probs, [d])[0], rtol=1e-12)
    # a batch at once: empty sets, images with and without class_probs
    sets = [d, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)},
            {"boxes": boxes[:5], "scores": rng.uniform(0, 1, 5), "labels": probs[:5].argmax(1),
             "class_probs": probs[:5]}]
    found = check_detections(sets, 3, "x")
    for ts in (targets, no_probs):
        np.testing.assert_allclose(batch_affinity(TargetSet(ts), found),
                                   naive_affinity(ts, sets), rtol=1e-12)
    assert box_iou(boxes[:1], boxes[:1])[0, 0] == pytest.approx(1.0)
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    np.testing.assert_array_equal(affinity(TargetSet(targets), empty), np.zeros(3))


class Broken:
    """A detector that answers well for ``good`` calls, then with ``bad``."""

    def __init__(self, inner, bad, good: int = 1):
        self.inner, self.bad, self.good, self.calls = inner, bad, good, 0

    def __call__(self, images):
        self.calls += 1
        out = self.inner(images)
        return out if self.calls <= self.good else self.bad(out)


def _nan(out):
    out[0]["boxes"] = out[0]["boxes"].copy()
    out[0]["boxes"][0, 0] = np.nan
    return out


def _negative(out):
    out[-1]["boxes"] = out[-1]["boxes"].copy()
    out[-1]["boxes"][0, 2] = out[-1]["boxes"][0, 0] - 1
    return out


def _classes(out):
    for d in out:
        d["class_probs"] = np.concatenate([d["class_probs"], d["class_probs"][:, :1]], 1)
    return out


@pytest.mark.parametrize("bad, message", [
    (lambda out: out[:-1], r"returned 4 detection sets for 5 images in batch 1 \(images 5..9\)"),
    (lambda out: {"boxes": 1}, r"list of 5 dicts.*batch 1"),
    (lambda out: [{"boxes": d["boxes"]} for d in out], r"image 0 of batch 1"),
    (_nan, r"NaN or infinite boxes or scores for image 0 of batch 1"),
    (_negative, r"image 4 of batch 1.*negative width or height"),
    (_classes, r"4 classes for image 0 of batch 1 \(images 5..9\), 3 before"),
])
def test_bad_detector_answers_name_the_batch(setting, bad, message):
    image, detector = setting
    broken = Broken(detector, bad, good=2)  # the probe, then the first batch, are fine
    with pytest.raises(ValueError, match=message):
        DetectionExplainer(random_state=0).explain_instance(
            image, broken, num_samples=20, batch_size=5, segmentation_fn=grid_segments)


def test_bad_targets_and_thresholds(setting):
    image, detector = setting
    explainer = DetectionExplainer(random_state=0)
    with pytest.raises(ValueError, match=r"nothing scoring at least score_threshold=0.99"):
        explainer.explain_instance(image, detector, score_threshold=0.99, num_samples=10)
    with pytest.raises(ValueError, match=r"not inside the 48x48 image"):
        explainer.explain_instance(image, detector, targets=[((40, 40, 50, 47), 0)])
    with pytest.raises(ValueError, match=r"not inside"):
        explainer.explain_instance(image, detector, targets=[((10, 10, 5, 20), 0)])
    with pytest.raises(ValueError, match=r"empty"):
        explainer.explain_instance(image, detector, targets=[])
    with pytest.raises(ValueError, match=r"method must be one of"):
        explainer.explain_instance(image, detector, method="gradcam")
    with pytest.raises(TypeError, match=r"must be callable"):
        explainer.explain_instance(image, "yolo")


def test_pictures_and_masks(setting):
    image, detector = setting
    e = DetectionExplainer(random_state=0).explain_instance(
        image, detector, num_samples=80, segmentation_fn=grid_segments)
    picture = e.render(1)
    assert picture.shape == (48, 48, 3) and picture.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in e.targets[1].box)
    assert tuple(picture[y1, x1 + 2]) == (255, 255, 0)  # the box outline, yellow
    img, mask = e.get_image_and_mask(1, num_features=2)
    assert mask.sum() > 0 and img.shape == image.shape
    with pytest.raises(KeyError, match="target 9"):
        e.render(9)
    assert e.panel(as_pil=False).shape[0] > 48


def test_auto_samples_and_the_json_record(setting):
    import json

    image, detector = setting
    e = DetectionExplainer(random_state=0).explain_instance(
        image, detector, num_samples="auto", max_samples=400, segmentation_fn=grid_segments,
        batch_size="auto")
    assert e.num_samples <= 400 and e.stop_reason in ("settled", "diminishing", "max_samples")
    assert sorted(e.expected_overlap) == list(range(len(e.targets)))
    record = e.record(image="scene.png", model="channels", seed=0)
    text = json.dumps(record, allow_nan=False)
    back = json.loads(text)
    assert back["task"] == "detection" and back["method"] == "lime"
    assert len(back["labels"]) == len(e.targets)
    assert back["labels"]["0"]["weights"][0][0] == int(e.local_exp[0][0][0])


@pytest.mark.parametrize("seed", [0, 7, 2 ** 31 - 1, 2 ** 40 + 5, -3])
@pytest.mark.parametrize("shape", [(48, 48), (37, 61), (100, 30)])
def test_drise_masks_are_torchs_draws(seed, shape):
    """The masks' grids and offsets are what the reference draws from torch's generator after
    ``torch.manual_seed(seed)``: a grid, then the crop's row and column, mask after mask."""
    torch = pytest.importorskip("torch")
    from limefast.detection import drise_masks

    n = 700  # more than one chunk of draws
    masks = drise_masks(n, shape, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    pad = int(max(shape[0] / 16, shape[1] / 16))
    assert masks.padding == pad
    for k in range(n):
        grid = torch.randint(0, 2, (16, 16), generator=generator).numpy()
        row = torch.randint(0, pad + 1, (1,), generator=generator).item()
        col = torch.randint(0, pad + 1, (1,), generator=generator).item()
        np.testing.assert_array_equal(masks.grids[k], grid)
        assert tuple(masks.offsets[k]) == (row, col), k


def test_detection_sets_as_arrays_lists_or_tensors_check_alike():
    """The quick path (dicts of NumPy arrays) and the full one (lists, tensors, float
    labels, an empty set as a flat array) give the same Detections, on fresh random sets."""
    from limefast.detection.protocol import check_detections

    rng = np.random.RandomState(5)
    for _ in range(20):
        sets = []
        for _ in range(rng.randint(1, 6)):
            k = rng.randint(0, 4)
            xy = rng.rand(k, 2) * 40
            sets.append({"boxes": np.hstack([xy, xy + rng.rand(k, 2) * 8]).astype(np.float32),
                         "scores": rng.rand(k), "labels": rng.randint(0, 3, k),
                         "class_probs": rng.dirichlet(np.ones(3), k)})
        plain = check_detections(sets, len(sets), "batch 0")
        other = [{"boxes": d["boxes"].tolist() if len(d["scores"]) else [],
                  "scores": list(d["scores"]), "labels": d["labels"].astype(float),
                  "class_probs": d["class_probs"].tolist() if len(d["scores"]) else
                  np.zeros((0, 3))} for d in sets]
        full = check_detections(other, len(sets), "batch 0")
        for a, b in zip(plain, full):
            np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-6)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert a.labels.dtype == b.labels.dtype == np.int64
            np.testing.assert_allclose(a.class_probs, b.class_probs)
