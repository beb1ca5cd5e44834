"""explain-dataset with detectors and segmenters (--task detection|segmentation) on Ray Data in
local mode: one row per (image, target), each equal to DetectionExplainer.explain_instance (or
explain_segmentation) with the image's seed; an image without targets is recorded, not lost;
D-RISE rows carry the map; bad flag combinations exit 2 before Ray starts.

One Ray per module, one worker per run (the runs share nothing but the seeds' derivation, which
test_dataset checks across partitionings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from detection_models import scene
from PIL import Image

from limefast import dataset
from limefast.dataset import command as dataset_cli
from limefast.dataset.detection import DetectorFactory
from limefast.dataset.worker import Settings, image_seed, load_image

pytest.importorskip("torch", reason="the shapes detector is a torch model")

TESTS = Path(__file__).resolve().parent
SEED = 7
NUM_SAMPLES = 40
# shapes scenes whose detections scoring 0.5 are their shapes (seed -> targets), and an image
# of background alone, on which the detector finds nothing
SCENES = {"a.png": 0, "b.png": 1, "sub/c.png": 3}
EMPTY = "empty.png"


def segmenter_factory():
    """A NumPy segmenter, named by --model test_dataset_detection:segmenter_factory."""
    return channel_segmenter


def channel_segmenter(images: np.ndarray) -> np.ndarray:
    """4 classes per pixel (background, red, green, blue): the softmax of the channels' values
    against a dark level (as in test_detection_segmentation)."""
    x = np.asarray(images, dtype=np.float64) / 20.0
    logits = np.concatenate([np.full(x.shape[:3] + (1,), 4.0), x], axis=-1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from limefast.models.detector import draw_scene

    root = tmp_path_factory.mktemp("scenes")
    for rel, seed in SCENES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw_scene(np.random.RandomState(seed))[0]).save(root / rel)
    noise = np.random.RandomState(0).normal(50, 10, (48, 48, 3))
    Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).save(root / EMPTY)
    return root


@pytest.fixture(scope="module")
def shapes():
    return DetectorFactory("shapes")()


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="limefast")
    dataset_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explain-dataset", *argv])
    return args.func(args)


def rows_by_target(output) -> dict:
    """(image_id, target) -> row, asserting there are no duplicates."""
    rows = dataset.read_results(output).to_pylist()
    keys = [(row["image_id"], row["target"]) for row in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return dict(zip(keys, rows))


def reference(path, image_id, fn, **options):
    from limefast.detection import DetectionExplainer

    explainer = DetectionExplainer(random_state=image_seed(SEED, image_id))
    return explainer.explain_instance(load_image(path, (48, 48)), fn, batch_size=10, **options)


@pytest.fixture(scope="module")
def lime_run(ray_session, folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "lime"
    code = run_cli([str(folder), "--task", "detection", "--model", "shapes", "--output",
                    str(output), "--num-samples", str(NUM_SAMPLES), "--seed", str(SEED),
                    "--workers", "1", "--batch-images", "3", "--overlays", "--no-progress"])
    assert code == 0
    return output


def test_one_row_per_target_equal_to_explain_instance(lime_run, folder, shapes):
    from limefast.segmentation import SEGMENTATIONS
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    got = rows_by_target(lime_run)
    slic = SegmentationAlgorithm("slic", **SEGMENTATIONS["slic"])  # the shapes model's default
    want_keys = set()
    for rel in SCENES:
        exp = reference(folder / rel, rel, shapes.fn, method="lime", num_samples=NUM_SAMPLES,
                        score_threshold=0.5, segmentation_fn=slic)
        n = int(exp.segments.max()) + 1
        for i, t in enumerate(exp.targets):
            want_keys.add((rel, i))
            row = got[rel, i]
            weights = np.zeros(n)
            for feature, weight in exp.local_exp[i]:
                weights[feature] = weight
            np.testing.assert_allclose(row["weights"], weights, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(row["stderr"], [exp.stderr[i][f] for f in range(n)],
                                       rtol=1e-9, atol=1e-12)
            assert row["box"] == [float(v) for v in t.box]
            assert (row["class"], row["class_name"]) == (t.label, shapes.label_name(t.label))
            assert row["score"] == pytest.approx(t.score, abs=1e-12) and t.score >= 0.5
            for name, value in (("intercept", exp.intercept[i]), ("score_fit", exp.score[i]),
                                ("local_pred", exp.local_pred[i][0]),
                                ("expected_overlap", exp.expected_overlap[i])):
                np.testing.assert_allclose(row[name], value, rtol=1e-9, atol=1e-12,
                                           err_msg=name)  # expected_overlap: nan for 40 rows
            assert (row["num_targets"], row["num_segments"], row["top_k"]) == (
                len(exp.targets), n, exp.top_k)
            assert (row["num_samples"], row["num_evaluated"], row["num_forwards"]) == (
                NUM_SAMPLES, NUM_SAMPLES, NUM_SAMPLES + 1)  # shared by the image's targets
            assert (row["method"], row["stop_reason"], row["seed"]) == (
                "lime", "num_samples", image_seed(SEED, rel))
            assert (row["height"], row["width"]) == (48, 48)
            assert row["saliency"] is None and row["error"] is None
            assert row["no_targets"] is None and row["region_pixels"] is None
    assert want_keys == {key for key in got if key[1] is not None}
    assert len(want_keys) == 5  # 2 + 1 + 2 shapes found


def test_image_without_targets_is_recorded(lime_run, folder):
    got = rows_by_target(lime_run)
    row = got[EMPTY, None]
    assert row["no_targets"].startswith("NoTargets: the detector found nothing scoring at "
                                        "least score_threshold=0.5")
    assert row["error"] is None and row["weights"] is None and row["num_targets"] == 0
    assert row["seed"] == image_seed(SEED, EMPTY)
    assert not [key for key in got if key[0] == EMPTY and key[1] is not None]
    overlays = {p.name for p in (lime_run / "overlays").iterdir()}
    assert overlays == {dataset.overlay_name(rel) for rel in SCENES}  # none for the empty one


def test_metadata_and_resume(lime_run, folder, capsys):
    meta = json.loads((lime_run / "_limefast.json").read_text())
    assert (meta["task"], meta["method"], meta["score_threshold"]) == ("detection", "lime", 0.5)
    assert (meta["segmentation"], meta["image_size"], meta["format"]) == ("slic", [48, 48], 1)
    assert "top_labels" not in meta and "classes" not in meta
    argv = [str(folder), "--task", "detection", "--model", "shapes", "--output", str(lime_run),
            "--num-samples", str(NUM_SAMPLES), "--seed", str(SEED), "--no-progress"]
    assert run_cli(argv) == 0  # everything done, the image without targets included
    assert "explained 0 images (0.00/s), 0 without targets, 0 errors, 4 already done" in \
        capsys.readouterr().out
    assert run_cli(argv + ["--score-threshold", "0.3"]) == 2
    assert "score_threshold': (0.5, 0.3)" in capsys.readouterr().err


def test_a_classifier_run_keeps_its_metadata():
    settings = Settings(output="/x", num_samples=10, top_labels=3, seed=0, segmentation=None,
                        image_size=None, resize="stretch", model_batch_size=10,
                        hide_color=None, overlays=False, threads=1, max_retries=3)
    assert sorted(settings.metadata()) == sorted([
        "num_samples", "top_labels", "seed", "segmentation", "image_size", "resize",
        "hide_color", "time_budget", "target_overlap", "min_gain", "sampler", "format"])


def test_drise_rows_carry_the_map(ray_session, folder, tmp_path, shapes):
    result = dataset.explain_dataset(folder, DetectorFactory("shapes"), output=tmp_path,
                                     task="detection", method="drise", num_samples=50,
                                     seed=SEED, image_size=48, concurrency=1, progress=False)
    assert (result.explained, result.no_targets, result.errors) == (3, 1, 0)
    got = rows_by_target(tmp_path)
    assert len(got) == 5 + 1
    for rel in SCENES:
        exp = reference(folder / rel, rel, shapes.fn, method="drise", num_samples=50)
        for i, t in enumerate(exp.targets):
            row = got[rel, i]
            saliency = np.asarray(row["saliency"], dtype=np.float16).reshape(
                row["height"], row["width"])
            np.testing.assert_array_equal(saliency, exp.saliency[i].astype(np.float16))
            assert row["intercept"] == pytest.approx(exp.intercept[i], rel=1e-9)
            assert row["box"] == [float(v) for v in t.box] and row["method"] == "drise"
            assert row["weights"] is None and row["num_segments"] is None
            assert (row["num_samples"], row["num_forwards"]) == (50, 51)
    meta = json.loads((tmp_path / "_limefast.json").read_text())
    assert (meta["method"], meta["num_samples"], meta["segmentation"]) == ("drise", 50, None)


def test_segmenter_regions_in_a_worker(tmp_path, monkeypatch):
    """A segmenter named module:factory, KernelSHAP, --classes: the worker class itself,
    without Ray (the runs above cover the engine)."""
    import torch

    from limefast import config
    from limefast.dataset.detection import DetectionWorker, task_settings
    from limefast.detection import DetectionExplainer
    from limefast.segmentation import SEGMENTATIONS
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    monkeypatch.setattr(config, "CPU_THREADS", config.CPU_THREADS)  # the worker sets them
    threads = torch.get_num_threads()
    images, output = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    ids = ["s0.png", "s1.png"]
    for seed, rel in enumerate(ids):
        Image.fromarray(scene(seed)[0]).save(images / rel)
    options = dict(num_samples=30, score_threshold=0.5, classes=[1, 2, 3], min_pixels=10,
                   sampler=None, segmentation="quickshift", hide_color=None, time_budget=None,
                   dedupe=False, target_overlap=None, min_gain=None)
    settings = Settings(
        output=str(output), top_labels=5, seed=SEED, image_size=None, resize="stretch",
        model_batch_size=10, hide_color=None, overlays=False, threads=1, max_retries=3,
        segmentation="quickshift", sampler=None, num_samples=30,
        **task_settings("segmentation", "kernelshap", **options))
    factory = DetectorFactory("test_dataset_detection:segmenter_factory", "segmentation",
                              cwd=str(TESTS))
    try:
        worker = DetectionWorker(factory, settings, ("image_id", "path", True))
        summary = worker({"image_id": np.array(ids, dtype=object),
                          "path": np.array([str(images / rel) for rel in ids], dtype=object)})
    finally:
        torch.set_num_threads(threads)
    assert summary["failed"].tolist() == summary["no_targets"].tolist() == [False, False]
    (output / "_limefast.json").write_text(json.dumps(settings.metadata()))  # as the driver
    got = rows_by_target(output)
    quickshift = SegmentationAlgorithm("quickshift", **SEGMENTATIONS["quickshift"])
    for rel in ids:
        exp = DetectionExplainer(random_state=image_seed(SEED, rel)).explain_segmentation(
            load_image(images / rel), channel_segmenter, method="kernelshap", num_samples=30,
            classes=[1, 2, 3], min_pixels=10, batch_size=10, segmentation_fn=quickshift)
        assert sorted(i for r, i in got if r == rel) == list(range(len(exp.targets))) == [0, 1, 2]
        for i, t in enumerate(exp.targets):
            row = got[rel, i]
            weights = np.zeros(int(exp.segments.max()) + 1)
            for feature, weight in exp.local_exp[i]:
                weights[feature] = weight
            np.testing.assert_allclose(row["weights"], weights, rtol=1e-9, atol=1e-12)
            assert row["base_value"] == pytest.approx(exp.base_value[i], rel=1e-9, abs=1e-12)
            assert row["region_pixels"] == int(t.region.sum())
            assert row["box"] == [float(v) for v in t.box]
            assert (row["class"], row["class_name"]) == (t.label, f"class {t.label}")
            assert row["method"] == "kernelshap"
    meta = settings.metadata()
    assert (meta["task"], meta["classes"], meta["min_pixels"]) == ("segmentation", [1, 2, 3], 10)
    assert "score_threshold" not in meta and meta["max_samples"] is None


@pytest.mark.parametrize("flags,message", [
    (["--task", "detection", "--method", "drise", "--dedupe"], "takes no --dedupe"),
    (["--task", "detection", "--method", "drise", "--segmentation", "slic"],
     "takes no --segmentation"),
    (["--method", "drise"], "--method is for --task detection|segmentation"),
    (["--method", "kernelshap"], "--method is for --task detection|segmentation"),
    (["--task", "detection", "--score-threshold", "1.5"], "--score-threshold must be in"),
    (["--task", "detection", "--image-size", "64"], "takes 48x48 images"),
    (["--task", "detection", "--method", "kernelshap", "--sampler", "paired"],
     "it takes no sampler"),
])
def test_bad_flag_combinations_exit_2(flags, message, tmp_path, capsys):
    output = tmp_path / "o"
    code = dataset_cli.main(["explain-dataset", str(tmp_path), "--model", "shapes",
                             "--output", str(output), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()
