"""The ``limefast`` command line, end to end on bundled images written to a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
from agreement import assert_label_agreement, forward_rtol
from conftest import bundled
from conftest import run_cli as run
from PIL import Image

from limefast.cli import commands as cli
from limefast.cli.inputs import IMAGENET_MEAN, IMAGENET_STD, load_image
from limefast.lime_image import LimeImageExplainer
from limefast.wrappers.scikit_image import SegmentationAlgorithm

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture
def images(tmp_path):
    """A PNG cat (64x64) and a JPEG astronaut (80x60, centre-cropped by the CLI)."""
    cat, astro = tmp_path / "cat.png", tmp_path / "astro.jpg"
    Image.fromarray(bundled("chelsea", 64)).save(cat)
    Image.fromarray(bundled("astronaut", 80)[10:70]).save(astro, quality=95)
    return [str(cat), str(astro)]


def reference(paths, classifier, size, **kwargs):
    """The explanations the CLI should have written, computed in this process."""
    segmentation = SegmentationAlgorithm("quickshift", **cli.SEGMENTATIONS["quickshift"])
    return LimeImageExplainer(random_state=0).explain_batch(
        [load_image(p, size) for p in paths], classifier, segmentation_fn=segmentation,
        batch_size=50, progress_bar=False, **kwargs)


def check_png(path, height=None):
    with Image.open(path) as img:
        img.load()  # decodes every pixel
        assert img.mode == "RGB"
        if height is not None:
            assert img.height > height
        return img.size


def assert_json_matches(record, exp, rtol=0.0):
    assert record["top_labels"] == [int(k) for k in exp.top_labels]
    assert record["n_superpixels"] == int(exp.segments.max()) + 1
    for label in exp.top_labels:
        entry = record["labels"][str(int(label))]
        assert [f for f, _ in entry["weights"]] == [f for f, _ in exp.local_exp[label]]
        np.testing.assert_allclose([w for _, w in entry["weights"]],
                                   [w for _, w in exp.local_exp[label]], rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(entry["intercept"], exp.intercept[label], rtol=rtol,
                                   atol=1e-12)
        np.testing.assert_allclose(entry["score"], exp.score[label], rtol=rtol, atol=1e-12)


def test_explain_writes_pngs_and_json_matching_the_explanation(images, tmp_path, capsys):
    from cli_models import grid

    out = tmp_path / "out"
    code, err = run(["explain", *images, "--model", "cli_models:grid", "--size", 48,
                     "--num-samples", 80, "--top-labels", 2, "--out", out], capsys)
    assert code == 0, err
    assert "100%" in err  # the progress bar
    explanations = reference(images, grid(), 48, top_labels=2, num_samples=80)
    for name, exp in zip(["cat", "astro"], explanations):
        folder = out / name / "cli_models-grid"
        record = json.loads((folder / "explanation.json").read_text())
        assert_json_matches(record, exp)
        assert record["size"] == [48, 48]
        for label in exp.top_labels:
            png = folder / record["labels"][str(int(label))]["png"]
            assert check_png(png, height=48)[0] > 3 * 48  # image, LIME and heatmap side by side
    assert not list(out.glob(".limefast-*"))  # the staging folder is gone


def test_explain_torchvision_models_side_by_side(images, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["explain", images[0], "--model", "resnet18", "--model", "cli_models:tiny",
                     "--size", 64, "--num-samples", 40, "--top-labels", 2, "--device", "cpu",
                     "--out", out], capsys)
    assert code == 0, err
    assert "resnet18 has random weights" in err
    check_png(out / "cat" / "models.png")
    record = json.loads((out / "cat" / "resnet18" / "explanation.json").read_text())
    assert record["weights"] == "random"
    # The CLI seeds torch before building the model: the same random network here.
    from limefast import TorchClassifier

    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", weights=None)
    classifier = TorchClassifier(model, mean=IMAGENET_MEAN, std=IMAGENET_STD, device="cpu")
    (exp,) = reference(images[:1], classifier, 64, top_labels=2, num_samples=40)
    assert_json_matches(record, exp, rtol=1e-6)
    tiny = json.loads((out / "cat" / "cli_models-tiny" / "explanation.json").read_text())
    assert len(tiny["top_labels"]) == 2 and all(0 <= k < 5 for k in tiny["top_labels"])


def test_compile_trace_gives_the_eager_explanation(images, tmp_path, capsys):
    records = {}
    for mode in ("none", "trace"):
        out = tmp_path / mode
        code, err = run(["explain", images[0], "--model", "cli_models:tiny", "--size", 48,
                         "--num-samples", 60, "--top-labels", 2, "--device", "cpu",
                         "--compile", mode, "--out", out], capsys)
        assert code == 0, err
        records[mode] = json.loads((out / "cat" / "cli_models-tiny" / "explanation.json")
                                   .read_text())
    eager, traced = records["none"], records["trace"]
    assert traced["top_labels"] == eager["top_labels"]
    from cli_models import tiny

    # A frozen trace is other float32 kernels: the float32 contract (tests/agreement.py).
    for label, entry in eager["labels"].items():
        ours = traced["labels"][label]
        assert_label_agreement(dict(map(tuple, entry["weights"])),
                               dict(map(tuple, ours["weights"])),
                               (entry["intercept"], None), (ours["intercept"], None),
                               forward_rtol(tiny()), what=f"label {label}")
    code, err = run(["explain", images[0], "--model", "cli_models:tiny", "--compile", "jit",
                     "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "--compile" in err


def test_weights_file_is_loaded(images, tmp_path, capsys):
    from cli_models import tiny

    model = tiny()
    with torch.no_grad():
        model[-1].bias.copy_(torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0]))  # class 2 wins
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    out = tmp_path / "out"
    code, err = run(["explain", images[0], "--model", "cli_models:tiny", "--weights", path,
                     "--size", 32, "--num-samples", 30, "--top-labels", 1, "--out", out], capsys)
    assert code == 0, err
    record = json.loads((out / "cat" / "cli_models-tiny" / "explanation.json").read_text())
    assert record["weights"] == str(path)
    assert record["top_labels"] == [2]
    assert record["labels"]["2"]["probability"] > 0.99


def _bad_weights(tmp_path):
    from cli_models import tiny

    state = tiny().state_dict()
    state["7.weight"] = torch.zeros(10, 8)  # a 10-class head on a 5-class model
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    return path


def _garbage(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file")
    return path


@pytest.mark.parametrize("case,expected", [
    ("unknown model", "unknown model 'resnet19'"),
    ("unreadable image", "cannot read image"),
    ("missing image", "cannot read image"),
    ("weights that do not fit", "does not fit cli_models:tiny: 1 shape mismatch(es), first "
                                "7.weight: (5, 8) in the model, (10, 8) in the file"),
    ("garbage weights", "cannot read weights file"),
    ("output folder under a file", "cannot write to output folder"),
    ("output folder is a file", "exists and is not a folder"),
    ("factory without the function", "has no callable 'nope'"),
    ("factory module missing", "cannot import no_such_module"),
    ("factory raising", "broken() failed: no model today"),
    ("weights per model", "give --weights once per --model"),
    ("weights for a plain function", "nothing to load the weights into"),
    ("bad count", "--num-samples: expected a positive integer"),
    ("bad segmentation", "invalid choice: 'watershed'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(case, expected, images, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["explain", images[0], "--size", 32, "--num-samples", 10]
    argv = {
        "unknown model": base + ["--model", "resnet19"],
        "unreadable image": ["explain", _garbage(tmp_path), "--model", "cli_models:grid"],
        "missing image": ["explain", tmp_path / "nope.png", "--model", "cli_models:grid"],
        "weights that do not fit": base + ["--model", "cli_models:tiny", "--weights",
                                           _bad_weights(tmp_path)],
        "garbage weights": base + ["--model", "cli_models:tiny", "--weights", _garbage(tmp_path)],
        "output folder under a file": base + ["--model", "cli_models:grid", "--out",
                                              f"{images[0]}/sub"],
        "output folder is a file": base + ["--model", "cli_models:grid", "--out", images[0]],
        "factory without the function": base + ["--model", "cli_models:nope"],
        "factory module missing": base + ["--model", "no_such_module:build"],
        "factory raising": base + ["--model", "cli_models:broken"],
        "weights per model": base + ["--model", "cli_models:grid", "--model", "cli_models:tiny",
                                     "--weights", "RANDOM"],
        "weights for a plain function": base + ["--model", "cli_models:grid", "--weights",
                                                _garbage(tmp_path)],
        "bad count": base + ["--model", "cli_models:grid", "--num-samples", 0],
        "bad segmentation": base + ["--model", "cli_models:grid", "--segmentation", "watershed"],
    }[case]
    if "--out" not in argv:
        argv += ["--out", out]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_default_weights_without_network_is_one_line(images, tmp_path, capsys, monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        print(f'Downloading: "{url}"', file=sys.stderr)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    out = tmp_path / "out"
    code, err = run(["explain", images[0], "--model", "resnet18", "--weights", "DEFAULT",
                     "--out", out], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "pretrained weights ResNet18_Weights.IMAGENET1K_V1" in line
    assert "Name or service not known" in line
    assert not out.exists()


def test_failure_while_explaining_leaves_nothing(images, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run(["explain", images[0], "--model", "cli_models:failing_classifier",
                     "--size", 32, "--num-samples", 10, "--out", out], capsys)
    assert code == 1
    assert "the model crashed" in err.strip().splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_compare_lime_and_gradcam(images, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["compare", *images, "--model", "cli_models:tiny", "--size", 40,
                     "--num-samples", 40, "--steps", 5, "--out", out], capsys)
    assert code == 0, err
    for name in ("cat", "astro"):
        check_png(out / name / "compare.png", height=40)
        record = json.loads((out / name / "compare.json").read_text())
        entry = record["models"]["cli_models-tiny"]
        for method in ("lime", "gradcam"):
            for key in ("deletion_auc", "insertion_auc"):
                assert 0 <= entry[method][key] <= 1


def test_explain_kernelshap_writes_the_explainers_values(images, tmp_path, capsys):
    from cli_models import grid

    from limefast.kernelshap import KernelShapImageExplainer

    out = tmp_path / "out"
    code, err = run(["explain", images[0], "--model", "cli_models:grid", "--size", 40,
                     "--method", "kernelshap", "--num-samples", 60, "--top-labels", 2,
                     "--out", out], capsys)
    assert code == 0, err
    record = json.loads((out / "cat" / "cli_models-grid" / "explanation.json").read_text())
    segmentation = SegmentationAlgorithm("quickshift", **cli.SEGMENTATIONS["quickshift"])
    exp = KernelShapImageExplainer(random_state=0).explain_instance(
        load_image(images[0], 40), grid(), top_labels=2, num_samples=60, batch_size=50,
        segmentation_fn=segmentation, progress_bar=False)
    assert record["method"] == "kernelshap" and record["exact"] == exp.exact
    assert_json_matches(record, exp)
    for label in exp.top_labels:
        entry = record["labels"][str(int(label))]
        assert entry["base_value"] == pytest.approx(exp.base_value[label], abs=1e-12)
        # The values add up to the model's output on the image.
        total = entry["base_value"] + sum(w for _, w in entry["weights"])
        assert total == pytest.approx(entry["probability"], abs=1e-9)


def test_compare_lime_kernelshap_and_gradcam(images, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["compare", images[0], "--model", "cli_models:tiny", "--size", 40,
                     "--num-samples", 40, "--steps", 5, "--method", "lime", "--method",
                     "kernelshap", "--out", out], capsys)
    assert code == 0, err
    width, _ = check_png(out / "cat" / "compare.png", height=40)
    record = json.loads((out / "cat" / "compare.json").read_text())
    assert record["methods"] == ["lime", "kernelshap"]
    entry = record["models"]["cli_models-tiny"]
    for method in ("lime", "kernelshap", "gradcam"):
        for key in ("deletion_auc", "insertion_auc"):
            assert 0 <= entry[method][key] <= 1
    code, err = run(["compare", images[0], "--model", "cli_models:tiny", "--size", 40,
                     "--num-samples", 40, "--steps", 5, "--out", tmp_path / "one"], capsys)
    assert code == 0, err
    assert check_png(tmp_path / "one" / "cat" / "compare.png")[0] < width  # fewer columns


def test_compare_needs_a_torch_module(images, tmp_path, capsys):
    code, err = run(["compare", images[0], "--model", "cli_models:grid", "--out",
                     tmp_path / "out"], capsys)
    assert code == 2 and "Grad-CAM needs a torch module" in err
    code, err = run(["compare", images[0], "--model", "cli_models:tiny", "--target-layer",
                     "nope", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "--target-layer nope" in err
    assert not (tmp_path / "out").exists()


def test_another_subcommand_can_be_registered(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", cli.SUBCOMMANDS + ["cli_models:add_hello"])
    assert cli.main(["hello", "--name", "bench"]) == 0
    assert "hello bench" in capsys.readouterr().out


def test_console_entry_point_bad_image(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "limefast.cli", "explain", str(tmp_path / "missing.png"),
         "--model", "resnet18", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot read image" in result.stderr
    assert not (tmp_path / "out").exists()


def test_fewer_model_calls_from_the_command_line(images, tmp_path, capsys):
    from cli_models import grid

    out = tmp_path / "out"
    code, err = run(["explain", images[0], "--model", "cli_models:grid", "--size", 48,
                     "--num-samples", "auto", "--max-samples", 400, "--dedupe",
                     "--batch-size", "auto", "--top-labels", 1, "--out", out], capsys)
    assert code == 0, err
    record = json.loads((out / "cat" / "cli_models-grid" / "explanation.json").read_text())
    (exp,) = reference(images[:1], grid(), 48, top_labels=1, num_samples="auto",
                       max_samples=400, dedupe=True)
    assert_json_matches(record, exp)
    assert record["num_samples"] == exp.num_samples <= 400
    assert record["num_evaluated"] == exp.num_evaluated
    assert (record["stop_reason"], record["converged"]) == (exp.stop_reason, exp.converged)
    label = str(int(exp.top_labels[0]))
    assert record["labels"][label]["stderr"] == [
        [int(f), exp.stderr[int(label)][f]] for f, _ in exp.local_exp[int(label)]]
    # the stated chance that the shown top 5 is the converged one, and the target it stopped at
    assert record["labels"][label]["expected_overlap"] == exp.expected_overlap[int(label)]
    assert record["labels"][label]["top_k"] == exp.top_k == min(5, record["n_superpixels"])
    # the image's own outputs are row 0 of its samples, the model's answer on the image
    assert record["labels"][label]["probability"] == exp.prediction[int(label)]
    np.testing.assert_allclose(exp.prediction, grid()(exp.image[None])[0], rtol=1e-6)
    assert record["target_overlap"] == exp.target_overlap
    from limefast import config

    assert record["min_gain"] == exp.min_gain == config.AUTO_MIN_GAIN


@pytest.mark.parametrize("flag,value", [("--time-budget", "0"), ("--time-budget", "soon"),
                                        ("--num-samples", "some"), ("--batch-size", "big"),
                                        ("--target-overlap", "1"), ("--target-overlap", "x"),
                                        ("--min-gain", "-0.1"), ("--min-gain", "nan")])
def test_bad_sampling_flags_exit_2(flag, value, images, tmp_path, capsys):
    code, err = run(["explain", images[0], "--model", "cli_models:grid", flag, value,
                     "--out", tmp_path / "out"], capsys)
    assert code == 2 and flag in err


def test_auto_flags_with_a_fixed_count_exit_2_and_write_nothing(images, tmp_path, capsys):
    code, err = run(["explain", images[0], "--model", "cli_models:grid", "--num-samples", "300",
                     "--min-gain", "0.1", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "min_gain=0.1" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_explain_and_explain_dataset_default_to_auto_and_compare_and_serve_to_1000():
    """Issue 20: the command line's explanations default to num_samples="auto" (never more
    than lime's 1000 images); compare and serve keep lime's 1000; the Python drop-in too."""
    import inspect

    from limefast.cli.commands import build_parser
    from limefast.lime_image import LimeImageExplainer

    parser = build_parser()
    common = ["--model", "resnet18"]
    assert parser.parse_args(["explain", "x.png", "--out", "o", *common]).num_samples == "auto"
    assert parser.parse_args(["explain-dataset", "d", "--model", "m:f", "--output",
                              "o"]).num_samples == "auto"
    assert parser.parse_args(["compare", "x.png", "--out", "o", *common]).num_samples == 1000
    assert parser.parse_args(["serve", *common]).num_samples == 1000
    assert parser.parse_args(["explain", "x.png", "--out", "o", *common,
                              "--num-samples", "1000"]).num_samples == 1000
    default = inspect.signature(LimeImageExplainer.explain_instance).parameters["num_samples"]
    assert default.default == 1000
    # the command line's auto costs at most its former default, 1000 images, KernelSHAP too
    from limefast.cli.steps import sampling_options

    args = parser.parse_args(["explain", "x.png", "--out", "o", *common, "--method",
                              "kernelshap"])
    assert sampling_options(args)["max_samples"] == 1000
    args = parser.parse_args(["explain", "x.png", "--out", "o", *common, "--max-samples",
                              "1500"])
    assert sampling_options(args)["max_samples"] == 1500
    args = parser.parse_args(["explain", "x.png", "--out", "o", *common, "--num-samples", "300"])
    assert "max_samples" not in sampling_options(args)
    args = parser.parse_args(["explain", "x.png", "--out", "o", *common, "--target-overlap",
                              "0.9", "--min-gain", "0"])
    assert (sampling_options(args)["target_overlap"], sampling_options(args)["min_gain"]) == (
        0.9, 0.0)
    assert "target_overlap" not in sampling_options(
        parser.parse_args(["compare", "x.png", "--out", "o", *common]))
