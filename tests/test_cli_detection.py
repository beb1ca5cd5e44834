"""``limefast explain --task detection|segmentation``: the shapes detector, torchvision models
and ``module:factory`` detectors and segmenters, end to end on images the tests write."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from conftest import run_cli as run
from PIL import Image

from limefast.cli import commands as cli
from limefast.cli.steps import PLAIN_BATCH

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from limefast.detection import DetectionExplainer  # noqa: E402
from limefast.models import detector as shapes  # noqa: E402
from limefast.wrappers.scikit_image import SegmentationAlgorithm  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two shapes scenes as PNGs, with their images."""
    folder = tmp_path_factory.mktemp("scenes")
    out = []
    for seed in (3, 11):
        image = shapes.draw_scene(np.random.RandomState(seed))[0]
        path = folder / f"scene{seed}.png"
        Image.fromarray(image).save(path)
        out.append((str(path), image))
    return out


def test_detection_lime_matches_the_explainer(scenes, tmp_path, capsys):
    paths = [p for p, _ in scenes]
    code, err = run(["explain", *paths, "--task", "detection", "--model", "shapes",
                     "--num-samples", 150, "--score-threshold", 0.3, "--out", tmp_path], capsys)
    assert code == 0, err
    slic = SegmentationAlgorithm("slic", **cli.SEGMENTATIONS["slic"])
    explainer = DetectionExplainer(random_state=0)  # one explainer per model, as the CLI
    for path, image in scenes:
        name = path.rsplit("/", 1)[1][:-4]
        folder = tmp_path / name / "shapes"
        record = json.loads((folder / "explanation.json").read_text())
        expected = explainer.explain_instance(
            image, shapes.load_model().detector, num_samples=150, score_threshold=0.3,
            segmentation_fn=slic, batch_size=PLAIN_BATCH, dedupe=False, time_budget=None)
        assert record["task"] == "detection" and record["segmentation"] == "slic"
        assert record["num_forwards"] == 151 and len(record["labels"]) == len(expected.targets)
        for i, target in enumerate(expected.targets):
            entry = record["labels"][str(i)]
            assert entry["box"] == pytest.approx(list(target.box))
            assert entry["class_name"] == shapes.CLASSES[target.label]
            got = dict((f, w) for f, w in entry["weights"])
            for f, w in expected.local_exp[i]:
                assert got[f] == pytest.approx(w, abs=1e-9)
            with Image.open(folder / entry["png"]) as img:
                img.load()
        with Image.open(folder / "targets.png") as img:
            assert img.width > 2 * 48


@pytest.mark.parametrize("method", ["kernelshap", "drise"])
def test_detection_other_methods(method, scenes, tmp_path, capsys):
    code, err = run(["explain", scenes[0][0], "--task", "detection", "--model", "shapes",
                     "--method", method, "--num-samples", 256, "--score-threshold", 0.3,
                     "--out", tmp_path], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "scene3" / "shapes" / "explanation.json").read_text())
    assert record["method"] == method and record["num_samples"] == 256
    entry = record["labels"]["0"]
    if method == "drise":
        assert entry["saliency_shape"] == [48, 48] and record["segmentation"] is None
    else:
        assert entry["weights"] and "base_value" in entry


FACTORIES = textwrap.dedent('''
    import numpy as np
    import torch


    def boxes():
        """A detector function: one fixed box whose score is the mean brightness inside."""
        def detect(images):
            inside = images[:, 8:40, 8:40].reshape(len(images), -1).mean(axis=1) / 255.0
            return [{"boxes": np.array([[8.0, 8.0, 40.0, 40.0]]), "scores": np.array([s]),
                     "labels": np.array([1])} for s in inside]
        return detect


    class Seg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}


    def segmenter():
        torch.manual_seed(0)
        return Seg()
''')


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_detector_function_from_a_factory(scenes, factories, capsys):
    code, err = run(["explain", scenes[0][0], "--task", "detection", "--model",
                     "mymodels:boxes", "--num-samples", 60, "--score-threshold", 0.1,
                     "--segmentation", "slic", "--out", factories / "out"], capsys)
    assert code == 0, err
    record = json.loads((factories / "out" / "scene3" / "mymodels-boxes" /
                         "explanation.json").read_text())
    assert record["labels"]["0"]["box"] == [8.0, 8.0, 40.0, 40.0]
    assert record["weights"] == "given by the factory"


def test_a_segmenter_module_from_a_factory(factories, capsys):
    image = (np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8)
    Image.fromarray(image).save(factories / "noise.png")
    code, err = run(["explain", factories / "noise.png", "--task", "segmentation", "--model",
                     "mymodels:segmenter", "--num-samples", 40, "--segmentation", "slic",
                     "--out", factories / "out"], capsys)
    assert code == 0, err
    record = json.loads((factories / "out" / "noise" / "mymodels-segmenter" /
                         "explanation.json").read_text())
    assert record["task"] == "segmentation" and record["size"] == [40, 40]
    regions = record["labels"].values()
    assert regions and all(e["region_pixels"] >= 16 for e in regions)
    sizes = [e["region_pixels"] for e in regions]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("argv, message", [
    (["--model", "fasterrcnn_resnet51_fpn"], "not a torchvision detection model"),
    (["--model", "resnet18", "--method", "drise", "--task", "classification"],
     "--method drise explains detectors"),
    (["--model", "shapes", "--size", 64], "takes 48x48 images"),
    (["--model", "shapes", "--method", "drise", "--dedupe"], "takes no --dedupe"),
    (["--model", "shapes", "--score-threshold", 2], "--score-threshold must be in [0, 1]"),
    (["--model", "shapes", "--score-threshold", 0.999], "(its best: 0.7"),
    (["--model", "shapes", "--precision", "fp16"], "takes no --precision"),
    (["--model", "shapes", "--compile", "trace"], "takes no --compile"),
    (["--model", "shapes", "--mean", "0.5,0.5,0.5"], "takes no --mean/--std"),
    (["--model", "shapes", "--device", "cuda"], "drop --device cuda"),
    (["--model", "shapes", "--method", "drise", "--segmentation", "slic"],
     "takes no --segmentation"),
    (["--model", "shapes", "--top-labels", 3], "--top-labels is a classifier's"),
    (["--model", "shapes", "--model", "mymodels:boxes"], "explain them in separate runs"),
    (["--model", "shapes", "--weights", "w.pt"], "takes no --weights"),
])
def test_bad_input_is_one_line_and_status_2(argv, message, scenes, factories, capsys):
    tmp_path = factories
    args = ["explain", scenes[0][0], "--out", tmp_path / "out", "--num-samples", 20]
    if "--task" not in argv:
        args += ["--task", "detection"]
    code, err = run(args + argv, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_torchvision_detector_by_name(scenes, tmp_path, capsys):
    """Random weights: nothing scores 0.5, so the command says so (status 2)."""
    code, err = run(["explain", scenes[0][0], "--task", "detection", "--model",
                     "fasterrcnn_mobilenet_v3_large_320_fpn", "--num-samples", 10,
                     "--out", tmp_path / "out"], capsys)
    assert code == 2 and "--score-threshold 0.5 (no detection at all)" in err, err
    assert "random weights" in err


def test_an_image_without_targets_is_recorded_and_the_others_written(scenes, tmp_path, capsys):
    """A threshold between the two scenes' best scores: one is explained, the other gets a
    record saying why not, and a warning."""
    paths = [p for p, _ in scenes]
    best = [shapes.load_model().detector(image[None])[0]["scores"].max() for _, image in scenes]
    high, low = (0, 1) if best[0] > best[1] else (1, 0)
    threshold = 0.5 * (best[0] + best[1])
    code, err = run(["explain", *paths, "--task", "detection", "--model", "shapes",
                     "--num-samples", 40, "--score-threshold", threshold, "--out", tmp_path],
                    capsys)
    assert code == 0, err
    stem = [p.rsplit("/", 1)[1][:-4] for p in paths]
    found = json.loads((tmp_path / stem[high] / "shapes" / "explanation.json").read_text())
    empty = json.loads((tmp_path / stem[low] / "shapes" / "explanation.json").read_text())
    assert found["labels"] and "no_targets" not in found
    assert empty["labels"] == {}
    assert f"{stem[low]}.png: --model shapes found nothing" in empty["no_targets"]
    assert "warning:" in err and f"{stem[low]}.png" in err
    assert not list((tmp_path / stem[low] / "shapes").glob("*.png"))


def test_default_weights_of_a_segmenter_with_an_auxiliary_head(factories, monkeypatch, capsys):
    """DeepLabV3's pretrained weights carry the auxiliary head of its training, which the model
    built without weights lacks: it is left out (no download here: the weights are a state
    dict of the same architecture, as torchvision would give them)."""
    import torchvision
    from torchvision.models._api import WeightsEnum

    name = "deeplabv3_mobilenet_v3_large"
    torch.manual_seed(1)
    state = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                         aux_loss=True).state_dict()
    assert any(k.startswith("aux_classifier.") for k in state)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    image = (np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8)
    Image.fromarray(image).save(factories / "noise.png")
    code, err = run(["explain", factories / "noise.png", "--task", "segmentation", "--model",
                     name, "--weights", "DEFAULT", "--num-samples", 20, "--segmentation",
                     "slic", "--out", factories / "out"], capsys)
    assert code == 0, err
    record = json.loads((factories / "out" / "noise" / name / "explanation.json").read_text())
    assert record["weights"] == "DEFAULT"
    names = {e["class_name"] for e in record["labels"].values()}
    voc = torchvision.models.get_model_weights(name).DEFAULT.meta["categories"]
    assert names <= set(voc)
