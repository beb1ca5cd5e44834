"""``limefast serve --task detection|segmentation``: one explanation per target, in-process.

The apps are built from the command line's arguments (``builder.build``, warm-up included) and
driven through FastAPI's ``TestClient`` (no port opened): the shapes detector
(``limefast.models.detector``), the NumPy detectors and segmenter of
``tests/serve_detection_models.py`` (float64, each image's answer its own whatever the batch),
and the scheduler alone for the batching across requests.
"""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("lime")  # the detection explainers' LIME (as tests/test_detection.py)

from limefast.detection import DetectionExplainer  # noqa: E402
from limefast.segmentation import SEGMENTATIONS  # noqa: E402
from limefast.serve.detect import DetectionScheduler, DetectOptions, box_regions  # noqa: E402
from limefast.wrappers.scikit_image import SegmentationAlgorithm  # noqa: E402
from tests import serve_detection_models  # noqa: E402
from tests.detection_models import scene  # noqa: E402

SEED_SCENE = 3


def _segmentation(name="slic"):
    return SegmentationAlgorithm(name, **SEGMENTATIONS[name])


def _app(argv):
    """(TestClient, served models) of ``limefast serve ARGV``."""
    from fastapi.testclient import TestClient

    from limefast.cli.commands import build_parser
    from limefast.serve.builder import build

    app, served = build(build_parser().parse_args(["serve", *argv]))
    return TestClient(app), served


def _explain(client, name, instances, **parameters):
    return client.post(f"/v1/models/{name}:explain",
                       json={"instances": instances, "parameters": parameters})


def _strip(record: dict) -> dict:
    """A record without what differs between two runs: the timing and the PNGs."""
    out = {k: v for k, v in record.items() if k not in ("seconds", "labels")}
    out["labels"] = {k: {f: v for f, v in entry.items() if f != "png"}
                     for k, entry in record["labels"].items()}
    return out


def _picture(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _assert_same_weights(record: dict, exp) -> None:
    """Each target's served weights are ``exp``'s (within 1e-9), on the same superpixels."""
    assert sorted(record["labels"], key=int) == [str(i) for i in range(len(exp.targets))]
    for i, target in enumerate(exp.targets):
        entry = record["labels"][str(i)]
        assert entry["box"] == [float(v) for v in target.box] and entry["class"] == target.label
        served = dict((f, w) for f, w in entry["weights"])
        direct = dict(exp.local_exp[i])
        assert served.keys() == direct.keys()
        np.testing.assert_allclose([served[f] for f in direct], list(direct.values()),
                                   rtol=0, atol=1e-9)


# -- the shapes detector, by name ---------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes():
    pytest.importorskip("torch")
    client, served = _app(["--task", "detection", "--model", "shapes", "--seed", "0",
                           "--max-samples-per-request", "3000", "--max-inflight", "4"])
    from limefast.models.detector import draw_scene, load_model

    image = draw_scene(np.random.RandomState(SEED_SCENE))[0]
    with client:
        yield client, served[0], image, load_model().detector
    served[0].scheduler.close()


def test_served_lime_is_explain_instance_per_target(shapes):
    from limefast.cli.detect import target_record

    client, model, image, detector = shapes
    response = _explain(client, "shapes", [image.tolist()], num_samples=300, seed=5)
    assert response.status_code == 200, response.text
    body = response.json()
    direct = DetectionExplainer(random_state=5).explain_instance(
        image, detector, method="lime", num_samples=300, score_threshold=0.5, batch_size=50,
        segmentation_fn=_segmentation("slic"))
    assert len(direct.targets) >= 2  # the scene's two shapes
    record = body["explanations"][0]
    _assert_same_weights(record, direct)
    expected = target_record(direct, model.loaded, image=None, model="shapes", seed=5)
    assert _strip(record) == {**_strip(expected), "segmentation": "slic"}
    assert record["labels"]["0"]["class_name"] in ("disc", "square", "triangle")
    assert record["task"] == "detection" and record["num_forwards"] == 301
    # the detections on the image: the detector's own answer
    found = detector(image[None])[0]
    prediction = body["predictions"][0]
    np.testing.assert_allclose(prediction["boxes"], found["boxes"], rtol=1e-6)
    assert prediction["labels"] == found["labels"].tolist()
    assert len(prediction["names"]) == len(prediction["scores"]) == len(found["scores"])


@pytest.mark.filterwarnings("ignore:limefast. the score of target:UserWarning")
def test_given_targets_and_render(shapes):
    client, _, image, detector = shapes
    targets = [{"box": [3, 17, 19, 33], "label": 2}, {"box": [0, 0, 10, 10], "label": 0}]
    response = _explain(client, "shapes", [image.tolist()], num_samples=200, seed=2,
                        targets=targets, render=True)
    assert response.status_code == 200, response.text
    record = response.json()["explanations"][0]
    direct = DetectionExplainer(random_state=2).explain_instance(
        image, detector, num_samples=200, targets=[([3, 17, 19, 33], 2), ([0, 0, 10, 10], 0)],
        batch_size=50, segmentation_fn=_segmentation("slic"))
    _assert_same_weights(record, direct)
    assert [record["labels"][k]["given"] for k in ("0", "1")] == [True, True]
    assert record["labels"]["0"]["score"] > 0.5  # the triangle's box: the detector sees it
    assert record["labels"]["1"]["stop_reason"] == "flat"  # a box it never matches
    for i in range(2):
        np.testing.assert_array_equal(_picture(record["labels"][str(i)]["png"]),
                                      direct.render(i, coverage=0.05))


def test_drise_through_the_server(shapes):
    client, _, image, detector = shapes
    response = _explain(client, "shapes", [image.tolist()], method="drise", num_samples=120,
                        seed=7, render=True)
    assert response.status_code == 200, response.text
    record = response.json()["explanations"][0]
    direct = DetectionExplainer(random_state=7).explain_instance(
        image, detector, method="drise", num_samples=120, batch_size=50)
    assert record["method"] == "drise" and record["segmentation"] is None
    assert record["num_forwards"] == 121 and len(record["labels"]) == len(direct.targets)
    for i in range(len(direct.targets)):
        entry = record["labels"][str(i)]
        assert entry["saliency_shape"] == [48, 48] and "weights" not in entry
        np.testing.assert_array_equal(_picture(entry["png"]), direct.render(i))


def test_predict_answers_the_detections(shapes):
    client, _, image, detector = shapes
    response = client.post("/v1/models/shapes:predict",
                           json={"instances": [image.tolist(), image[::-1].tolist()]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for prediction, img in zip(predictions, (image, image[::-1])):
        found = detector(np.ascontiguousarray(img)[None])[0]
        np.testing.assert_allclose(prediction["scores"], found["scores"], rtol=1e-6)
        assert prediction["labels"] == found["labels"].tolist()


def test_two_concurrent_requests_both_answer(shapes):
    client, _, image, _ = shapes
    other = np.ascontiguousarray(image[:, ::-1])

    def one(args):
        img, seed = args
        return _explain(client, "shapes", [img.tolist()], num_samples=400, seed=seed)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(one, [(image, 1), (other, 2)]))
    assert [r.status_code for r in answers] == [200, 200], [r.text[:200] for r in answers]
    alone = _explain(client, "shapes", [image.tolist()], num_samples=400, seed=1).json()
    together = answers[0].json()
    # the same targets and superpixels; weights equal up to float32 rounding of other batches
    assert together["explanations"][0]["labels"].keys() == \
        alone["explanations"][0]["labels"].keys()
    for k, entry in alone["explanations"][0]["labels"].items():
        got = together["explanations"][0]["labels"][k]
        np.testing.assert_allclose([w for _, w in got["weights"]],
                                   [w for _, w in entry["weights"]], atol=1e-5)


def test_time_budget_and_auto(shapes):
    client, _, image, _ = shapes
    response = _explain(client, "shapes", [image.tolist()], num_samples="auto", time_budget=5,
                        seed=1)
    assert response.status_code == 200, response.text
    record = response.json()["explanations"][0]
    assert record["stop_reason"] in ("settled", "diminishing", "max_samples", "time_budget")
    assert 0 < record["num_samples"] <= 1000


BAD = [  # parameters, status, what the error says
    ({"num_samples": "lots"}, 400, "num_samples"),
    ({"top_labels": 2}, 400, "unknown parameter(s) ['top_labels'] for a detection model"),
    ({"classes": [1]}, 400, "unknown parameter"),
    ({"method": "drise", "time_budget": 1}, 400, "it takes no ['time_budget']"),
    ({"method": "gradcam"}, 400, "method must be one of"),
    ({"method": "kernelshap", "sampler": "paired"}, 400, "sampler"),
    ({"max_samples": 100}, 400, "max_samples"),
    ({"score_threshold": 2}, 400, "score_threshold must be in [0, 1]"),
    ({"targets": [{"box": [0, 0, 60, 10], "label": 1}]}, 400, "is not inside the 48x48 image"),
    ({"targets": [{"box": [10, 10, 5, 20], "label": 1}]}, 400, "is not inside"),
    ({"targets": [{"box": [1, 2, 3], "label": 0}]}, 400, "targets[0].box must be 4 finite"),
    ({"targets": [{"box": [1, 2, 3, 4]}]}, 400, "targets[0] must be"),
    ({"targets": []}, 400, "non-empty list"),
    ({"render": "maybe"}, 400, "render must be true or false"),
    ({"num_samples": 5000}, 413, "over the server's limit of 3000"),
    ({"score_threshold": 1.0}, 422, "nothing to explain: the detector found nothing"),
]


@pytest.mark.parametrize("parameters, status, message", BAD,
                         ids=[f"{status}-{list(p)[0]}" for p, status, _ in BAD])
def test_bad_requests_are_clear_errors(shapes, parameters, status, message):
    client, _, image, _ = shapes
    response = _explain(client, "shapes", [image.tolist()], **{"num_samples": 100, **parameters})
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and message in response.json()["error"]
    assert "\n" not in response.json()["error"]


def test_an_image_of_another_size_is_400(shapes):
    client, model, _, _ = shapes
    small = np.zeros((32, 32, 3), np.uint8).tolist()
    for verb in ("explain", "predict"):
        response = client.post(f"/v1/models/shapes:{verb}", json={"instances": [small]})
        assert response.status_code == 400
        assert "takes 48x48 images; got 32x32" in response.json()["error"]
    assert model.scheduler.inflight == 0


# -- NumPy detectors: the model's faults, overload ------------------------------------------------

def test_model_error_is_500_and_the_server_keeps_serving():
    client, served = _app(["--task", "detection", "--model",
                           "tests.serve_detection_models:picky", "--name", "picky",
                           "--segmentation", "slic", "--score-threshold", "0.3"])
    image = scene(0)[0]
    dark = np.minimum(image, 5)
    try:
        with client:
            black = np.zeros_like(image).tolist()
            for instance, message in ((black, "the detector raised RuntimeError: the detector "
                                               "cannot see in the dark"),
                                      (dark.tolist(), "the detector's answer is wrong: each "
                                                      "detection set must be a dict")):
                for verb in ("explain", "predict"):
                    response = client.post(f"/v1/models/picky:{verb}",
                                           json={"instances": [instance],
                                                 "parameters": {"num_samples": 50}})
                    assert response.status_code == 500, response.text
                    assert message in response.json()["error"]
            response = _explain(client, "picky", [image.tolist()], num_samples=50)
            assert response.status_code == 200, response.text
            assert len(response.json()["explanations"][0]["labels"]) >= 3
            assert served[0].scheduler.inflight == 0
    finally:
        served[0].scheduler.close()


def test_overload_is_503_with_retry_after():
    client, served = _app(["--task", "detection", "--model",
                           "tests.serve_detection_models:slow", "--name", "slow",
                           "--segmentation", "slic", "--score-threshold", "0.3",
                           "--max-inflight", "1", "--no-warmup"])
    scheduler = served[0].scheduler
    image = scene(1)[0]
    try:
        with client:
            job = scheduler.submit(image, DetectOptions(num_samples=5000, segmentation="slic",
                                                        score_threshold=0.3))
            response = _explain(client, "slow", [image.tolist()], num_samples=50)
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) >= 1
            assert "overloaded" in response.json()["error"]
            job.cancel()
            deadline = time.monotonic() + 10
            while scheduler.inflight and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _explain(client, "slow", [image.tolist()], num_samples=50).status_code == 200
    finally:
        scheduler.close()


def test_the_scheduler_merges_detector_calls_across_requests():
    """Concurrent explanations share the detector's calls, and each is the one
    ``DetectionExplainer`` gives alone (a float64 detector: exactly)."""
    sizes = []
    scheduler = DetectionScheduler(serve_detection_models.boxes(), max_wait=0.05,
                                   batch_size=50,
                                   on_batch=lambda n, requests, s: sizes.append((n, requests)))
    try:
        images = [scene(i)[0] for i in range(4)]
        jobs = [scheduler.submit(img, DetectOptions(num_samples=200, seed=10 + i,
                                                    segmentation="slic", score_threshold=0.3))
                for i, img in enumerate(images)]
        results = [job.result(timeout=60) for job in jobs]
        for i, (img, result) in enumerate(zip(images, results)):
            direct = DetectionExplainer(random_state=10 + i).explain_instance(
                img, serve_detection_models.boxes(), num_samples=200, score_threshold=0.3,
                batch_size=50, segmentation_fn=_segmentation("slic"))
            assert [t.box for t in result.explanation.targets] == [t.box for t in direct.targets]
            for k in range(len(direct.targets)):
                assert result.explanation.local_exp[k] == direct.local_exp[k]
            assert len(result.prediction) == 6  # the detections on the image itself
        assert max(r for _, r in sizes) > 1 and max(n for n, _ in sizes) > 50
        assert scheduler.queue.queued_images == 0 and scheduler.inflight == 0
    finally:
        scheduler.close()


# -- a segmenter ----------------------------------------------------------------------------------

def test_segmenter_regions_one_explanation_each():
    client, served = _app(["--task", "segmentation", "--model",
                           "tests.serve_detection_models:segmenter", "--name", "seg",
                           "--segmentation", "slic", "--min-pixels", "40"])
    image = scene(2)[0]
    segmenter = serve_detection_models.segmenter()
    try:
        with client:
            response = _explain(client, "seg", [image.tolist()], num_samples=200, seed=4)
            assert response.status_code == 200, response.text
            body = response.json()
            direct = DetectionExplainer(random_state=4).explain_segmentation(
                image, segmenter, num_samples=200, min_pixels=40, batch_size=50,
                segmentation_fn=_segmentation("slic"))
            record = body["explanations"][0]
            assert record["task"] == "segmentation" and len(direct.targets) == 4
            _assert_same_weights(record, direct)
            assert sorted(e["class"] for e in record["labels"].values()) == [0, 1, 2, 3]
            assert body["predictions"][0]["classes"] == [0, 1, 2, 3]
            assert np.asarray(body["predictions"][0]["mask"]).shape == (48, 48)
            # a given box is a rectangular region of the given class
            box = [4, 6, 18, 20]
            response = _explain(client, "seg", [image.tolist()], num_samples=100, seed=4,
                                targets=[{"box": box, "label": 1}])
            assert response.status_code == 200, response.text
            direct = DetectionExplainer(random_state=4).explain_segmentation(
                image, segmenter, num_samples=100, batch_size=50,
                regions=box_regions([(box, 1)], (48, 48)),
                segmentation_fn=_segmentation("slic"))
            record = response.json()["explanations"][0]
            _assert_same_weights(record, direct)
            assert record["labels"]["0"]["region_pixels"] == 14 * 14
            for parameters, status, message in (
                    ({"classes": [9]}, 422, "no area of at least 40 pixels of classes"),
                    ({"score_threshold": 0.3}, 400, "unknown parameter"),
                    ({"targets": [{"box": box, "label": 7}]}, 400, "not one of the "
                                                                   "segmenter's 4 classes")):
                response = _explain(client, "seg", [image.tolist()], num_samples=50,
                                    **parameters)
                assert response.status_code == status, response.text
                assert message in response.json()["error"]
    finally:
        served[0].scheduler.close()


# -- the command line -----------------------------------------------------------------------------

def test_serve_flags_for_detectors():
    from limefast.cli import main
    from limefast.cli.commands import build_parser
    from limefast.cli.inputs import InputError
    from limefast.serve.builder import build

    parser = build_parser()
    args = parser.parse_args(["serve", "--task", "detection", "--model", "shapes",
                              "--method", "drise", "--score-threshold", "0.3"])
    assert (args.task, args.method, args.score_threshold, args.size) == \
        ("detection", "drise", 0.3, None)
    args = parser.parse_args(["serve", "--task", "segmentation", "--model", "m:f",
                              "--classes", "1,15", "--min-pixels", "8"])
    assert (args.classes, args.min_pixels) == ([1, 15], 8)
    for argv, message in (
            (["--model", "tests/serve_models.py:grid", "--method", "drise"],
             "--method drise explains detectors"),
            (["--task", "detection", "--model", "shapes", "--method", "drise",
              "--time-budget", "1"], "it takes no --time-budget"),
            (["--task", "detection", "--model", "shapes", "--size", "64"],
             "takes 48x48 images"),
            (["--task", "detection", "--model", "shapes", "--score-threshold", "2"],
             "--score-threshold must be in [0, 1]")):
        with pytest.raises(InputError, match=message.replace("[", r"\[")):
            build(parser.parse_args(["serve", *argv, "--no-warmup"]))
    assert main(["serve", "--task", "detection", "--model", "shapes", "--method", "drise",
                 "--dedupe", "--no-warmup"]) == 2


def test_torchvision_segmenter_by_name():
    """``--model lraspp_mobilenet_v3_large`` (random weights) on a 64x64 image: the regions it
    predicts, each explained, as ``explain_segmentation`` explains them with the same model."""
    pytest.importorskip("torchvision")
    client, served = _app(["--task", "segmentation", "--model", "lraspp_mobilenet_v3_large",
                           "--device", "cpu", "--name", "lraspp", "--segmentation", "slic",
                           "--no-warmup"])
    image = np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    try:
        with client:
            response = _explain(client, "lraspp", [image.tolist()], num_samples=20, seed=3,
                                min_pixels=64)
            assert response.status_code == 200, response.text
            body = response.json()
            direct = DetectionExplainer(random_state=3).explain_segmentation(
                image, served[0].loaded.fn, num_samples=20, min_pixels=64, batch_size=50,
                segmentation_fn=_segmentation("slic"))
            record = body["explanations"][0]
            assert record["weights"] == "random" and len(record["labels"]) >= 1
            _assert_same_weights(record, direct)
            assert np.asarray(body["predictions"][0]["mask"]).shape == (64, 64)
    finally:
        served[0].scheduler.close()
