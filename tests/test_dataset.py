"""explain_dataset on Ray Data in local mode (2 CPUs): the rows equal single-process
explain_instance with each image's derived seed, whatever the partitioning; corrupt files become
error rows; a killed worker is retried without duplicate rows; a stopped run resumes.

One Ray per module (it takes seconds to start); the workers find this module and conftest through
PYTHONPATH, so the classifiers below travel by reference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from agreement import assert_label_agreement, forward_rtol, logit_scale
from conftest import GridClassifier, bundled
from PIL import Image

from limefast import dataset
from limefast.dataset import command as dataset_cli
from limefast.dataset.worker import image_seed, load_image
from limefast.lime_image import LimeImageExplainer

NUM_SAMPLES = 60
TOP_LABELS = 3
SEED = 7
SETTINGS = {"num_samples": NUM_SAMPLES, "top_labels": TOP_LABELS, "seed": SEED,
            "progress": False}
# (relative path, bundled photo, size): subfolders, a grayscale file, a JPEG, a non-square image.
GOOD = [("a.png", "astronaut", (40, 40)), ("sub/b.png", "chelsea", (40, 40)),
        ("sub/c.jpg", "coffee", (36, 36)), ("d.png", "camera", (32, 32)),
        ("sub/deeper/e.png", "rocket", (40, 32))]
CORRUPT = ["corrupt.png", "sub/truncated.png"]


def grid_factory():
    return GridClassifier(n_classes=10, grid=8)


class Killer:
    """GridClassifier that kills its own process (os._exit) when it sees an image (row 0 of
    an explanation's first batch is the unperturbed image): ``once`` the first time only (it
    creates ``marker`` then), ``always`` every time."""

    def __init__(self, once: np.ndarray, marker: str, always: np.ndarray):
        self.inner, self.once, self.marker, self.always = grid_factory(), once, marker, always

    def __call__(self, batch):
        if _shows(batch, self.always):
            os._exit(1)
        if _shows(batch, self.once) and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return self.inner(batch)


class KillerFactory:
    def __init__(self, once, marker, always):
        self.args = (once, marker, always)

    def __call__(self):
        return Killer(*self.args)


def _shows(batch: np.ndarray, image: np.ndarray) -> bool:
    return batch.shape[1:] == image.shape and np.array_equal(batch[0], image)


class Failing:
    """A model that fails (a RuntimeError: the run's problem, not the image's) on ``target``."""

    def __init__(self, target: np.ndarray):
        self.inner, self.target = grid_factory(), target

    def __call__(self, batch):
        if _shows(batch, self.target):
            raise RuntimeError("model failed on purpose")
        return self.inner(batch)


class FailingFactory:
    def __init__(self, target):
        self.target = target

    def __call__(self):
        return Failing(self.target)


def tiny_torch_factory():
    """A tiny conv net, in a TorchClassifier once that exists, else a plain NumPy callable."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16, 6)).eval()
    try:
        from limefast import TorchClassifier
    except ImportError:
        return TorchCallable(net)
    return TorchClassifier(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), device="cpu")


class TorchCallable:
    def __init__(self, net):
        self.net = net

    def __call__(self, batch):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return torch.softmax(self.net((x - 0.5) / 0.25), dim=1).double().numpy()


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for rel, photo, size in GOOD:
        image = bundled(photo, size[0])
        if size[0] != size[1]:
            image = image[:, : size[1]]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel, quality=95)
    (root / CORRUPT[0]).write_bytes(b"this is not a PNG file")
    (root / CORRUPT[1]).write_bytes((root / "a.png").read_bytes()[:200])
    (root / "notes.txt").write_text("not an image: ignored")
    return root


def reference_rows(folder: Path, factory=grid_factory, ids=None, image_size=None,
                   **options) -> dict:
    """(image_id, rank) -> row, from explain_instance in this process."""
    classifier = factory()
    rows = {}
    for rel, _, _ in GOOD:
        image_id = rel if ids is None else ids[rel]
        explanation = LimeImageExplainer(random_state=image_seed(SEED, image_id)).explain_instance(
            load_image(folder / rel, image_size), classifier, top_labels=TOP_LABELS,
            progress_bar=False, **{"num_samples": NUM_SAMPLES, **options})
        n = int(explanation.segments.max()) + 1
        for rank, label in enumerate(explanation.top_labels):
            weights = np.zeros(n)
            for feature, weight in explanation.local_exp[label]:
                weights[feature] = weight
            rows[image_id, rank] = {
                "label": int(label), "weights": weights, "num_segments": n,
                "intercept": explanation.intercept[label], "score": explanation.score[label],
                "local_pred": explanation.local_pred[label][0],
                "stderr": [explanation.stderr[label][f] for f in range(n)],
                "num_samples": explanation.num_samples,
                "num_evaluated": explanation.num_evaluated,
                "expected_overlap": explanation.expected_overlap[label],
                "top_k": explanation.top_k, "stop_reason": explanation.stop_reason,
            }
    return rows


def table_rows(output) -> dict:
    """(image_id, rank) -> row of the run's Parquet, asserting there are no duplicates."""
    rows = dataset.read_results(output).to_pylist()
    keys = [(row["image_id"], row["rank"]) for row in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return dict(zip(keys, rows))


def assert_rows_equal(got: dict, want: dict, rtol=1e-9, atol=1e-12):
    assert set(want) <= set(got)
    for key, ref in want.items():
        row = got[key]
        assert row["label"] == ref["label"], key
        assert row["num_segments"] == ref["num_segments"] == len(row["weights"]), key
        assert row["error"] is None
        np.testing.assert_allclose(row["weights"], ref["weights"], rtol=rtol, atol=atol)
        assert (row["num_samples"], row["num_evaluated"]) == (ref["num_samples"],
                                                              ref["num_evaluated"])
        assert (row["top_k"], row["stop_reason"]) == (ref["top_k"], ref["stop_reason"])
        assert row["expected_overlap"] == pytest.approx(ref["expected_overlap"], abs=1e-12)
        for name in ("intercept", "score", "local_pred", "stderr"):
            np.testing.assert_allclose(row[name], ref[name], rtol=rtol, atol=atol, err_msg=name)


def assert_rows_float32(got: dict, want: dict, rtol: float):
    """The float32 contract of ``tests/agreement.py`` on each row (a label's dense weights)."""
    assert set(want) <= set(got)
    for key, ref in want.items():
        row = got[key]
        assert row["label"] == ref["label"], key
        assert row["num_segments"] == ref["num_segments"] == len(row["weights"]), key
        assert row["error"] is None

        def ranked(weights):
            weights = np.asarray(weights)
            return {int(f): weights[f] for f in np.argsort(-np.abs(weights), kind="stable")}

        assert_label_agreement(ranked(ref["weights"]), ranked(row["weights"]),
                               (ref["intercept"], ref["local_pred"]),
                               (row["intercept"], row["local_pred"]), rtol, what=str(key))


@pytest.fixture(scope="module")
def run_two_workers(ray_session, folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "two-workers"
    result = dataset.explain_dataset(folder, grid_factory, output=output, concurrency=2,
                                     batch_images=2, overlays=True, **SETTINGS)
    return result, output


@pytest.fixture(scope="module")
def reference(folder):
    return reference_rows(folder)


# -- tests -----------------------------------------------------------------------------------

def test_image_seed_is_the_documented_derivation():
    image_id = "sub/b.png"
    digest = hashlib.blake2b(image_id.encode(), digest_size=16).digest()
    words = np.frombuffer(digest, dtype="<u4")
    expected = np.random.SeedSequence(3, spawn_key=tuple(int(w) for w in words)).generate_state(
        1, dtype=np.uint32)[0]
    assert image_seed(3, image_id) == int(expected)
    assert image_seed(0, "a.png") == 1405209182  # pinned: a change would silently alter results
    seeds = {image_seed(s, f"img{i}.png") for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**32 for s in seeds)
    with pytest.raises(TypeError, match="image_id must be a str"):
        image_seed(0, 12)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        image_seed(-1, "a.png")


def test_rows_equal_single_process(run_two_workers, reference):
    result, output = run_two_workers
    assert (result.explained, result.errors, result.skipped) == (len(GOOD), len(CORRUPT), 0)
    got = table_rows(output)
    assert_rows_equal(got, reference)
    for (image_id, _), row in got.items():
        if row["error"] is None:
            assert row["seed"] == image_seed(SEED, image_id)
            assert row["seconds"] > 0


@pytest.mark.parametrize("rule", [{}, {"target_overlap": 0.99, "min_gain": 0.2}])
def test_auto_samples_and_dedupe(ray_session, folder, tmp_path, rule):
    options = {"num_samples": "auto", "dedupe": True, **rule}
    result = dataset.explain_dataset(folder, grid_factory, output=tmp_path, concurrency=1,
                                     **{**SETTINGS, **options})
    assert result.explained == len(GOOD)
    assert_rows_equal(table_rows(tmp_path), reference_rows(folder, **options))
    meta = json.loads((tmp_path / "_limefast.json").read_text())
    assert {k: meta[k] for k in ("target_overlap", "min_gain")} == {
        "target_overlap": rule.get("target_overlap"), "min_gain": rule.get("min_gain")}


def test_partitioning_does_not_change_rows(ray_session, run_two_workers, folder, tmp_path):
    one_worker = dataset.explain_dataset(folder, grid_factory, output=tmp_path, concurrency=1,
                                         batch_images=7, **SETTINGS)
    assert one_worker.explained == len(GOOD)
    two = table_rows(run_two_workers[1])
    one = table_rows(tmp_path)
    assert two.keys() == one.keys()
    for key in two:  # the same code on the same numbers: bit for bit
        for name in ("label", "num_segments", "weights", "intercept", "score", "local_pred",
                     "seed", "error"):
            assert one[key][name] == two[key][name], (key, name)


def test_corrupt_files_are_error_rows(run_two_workers):
    got = table_rows(run_two_workers[1])
    errors = {image_id: row for (image_id, _), row in got.items() if row["error"] is not None}
    assert sorted(errors) == sorted(CORRUPT)
    assert "UnidentifiedImageError" in errors["corrupt.png"]["error"]
    assert errors["sub/truncated.png"]["error"].startswith(("OSError", "SyntaxError"))
    for row in errors.values():
        assert row["label"] is None and row["weights"] is None and row["rank"] is None
    assert "notes.txt" not in {image_id for image_id, _ in got}


def test_overlays_are_written(run_two_workers, folder):
    overlays = run_two_workers[1] / "overlays"
    for rel, _, _ in GOOD:
        with Image.open(overlays / dataset.overlay_name(rel)) as img:
            assert img.size == Image.open(folder / rel).size
    assert len(list(overlays.iterdir())) == len(GOOD)


def test_killed_worker_is_retried_without_duplicates(ray_session, folder, tmp_path, reference):
    marker = tmp_path / "killed-once"
    factory = KillerFactory(load_image(folder / "a.png"), str(marker),
                            load_image(folder / "sub/b.png"))
    result = dataset.explain_dataset(folder, factory, output=tmp_path / "out", concurrency=2,
                                     batch_images=2, max_retries=1, **SETTINGS)
    assert marker.exists()  # a worker did die on a.png
    got = table_rows(tmp_path / "out")
    # a.png killed its worker once: retried, explained; b.png kills it every time: after
    # max_retries + 1 deaths it is an error row.
    assert_rows_equal(got, {k: v for k, v in reference.items() if k[0] != "sub/b.png"})
    assert got["sub/b.png", None]["error"].startswith("WorkerDied: a worker died 2 times")
    assert (result.explained, result.errors) == (len(GOOD) - 1, len(CORRUPT) + 1)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_stopped_run_resumes(ray_session, folder, tmp_path, reference):
    paths = [str(folder / rel) for rel, _, _ in GOOD]  # list ids are the paths as given
    ids = {rel: Path(p).as_posix() for (rel, _, _), p in zip(GOOD, paths)}
    output = tmp_path / "out"
    first = dataset.explain_dataset(paths[:2], grid_factory, output=output, batch_images=1,
                                    concurrency=1, **SETTINGS)
    assert (first.explained, first.skipped) == (2, 0)
    kept = {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")}
    # A run that stops: the model fails on the last image; the batches before it are kept.
    with pytest.raises(Exception, match="model failed on purpose"):
        dataset.explain_dataset(paths, FailingFactory(load_image(paths[-1])), output=output,
                                batch_images=1, concurrency=1, **SETTINGS)
    done = {row["image_id"] for row in dataset.read_results(output).to_pylist()}
    assert set(ids.values()) - done  # it did stop short
    last = dataset.explain_dataset(paths, grid_factory, output=output, batch_images=2,
                                   concurrency=2, **SETTINGS)
    assert last.skipped == len(done) >= 2 and last.explained == len(GOOD) - len(done)
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")
            if p.name in kept} == kept  # finished files were not rewritten
    assert_rows_equal(table_rows(output), reference_rows(folder, ids=ids))
    again = dataset.explain_dataset(paths, grid_factory, output=output, **SETTINGS)
    assert (again.explained, again.skipped) == (0, len(GOOD))


def test_resume_with_other_settings_is_refused(ray_session, run_two_workers, folder):
    with pytest.raises(ValueError, match=r"other settings .*num_samples.*\(60, 61\)"):
        dataset.explain_dataset(folder, grid_factory, output=run_two_workers[1],
                                **{**SETTINGS, "num_samples": 61})


def test_ray_dataset_source_with_torch_model(ray_session, folder, tmp_path):
    pytest.importorskip("torch")
    images = {rel: load_image(folder / rel) for rel, _, _ in GOOD}
    items = [{"id": rel, "image": image} for rel, image in images.items()]
    result = dataset.explain_dataset(ray_session.data.from_items(items), tiny_torch_factory,
                                     output=tmp_path, concurrency=2, batch_images=2, **SETTINGS)
    assert (result.explained, result.errors) == (len(GOOD), 0)
    # A float32 model run in other batches (two images a call) than explain_instance's.
    clf = tiny_torch_factory()
    logits = max(logit_scale(clf, image[None]) for image in images.values())
    assert_rows_float32(table_rows(tmp_path), reference_rows(folder, tiny_torch_factory),
                        forward_rtol(clf, logits=logits))
    again = dataset.explain_dataset(ray_session.data.from_items(items), tiny_torch_factory,
                                    output=tmp_path, concurrency=1, **SETTINGS)
    assert (again.explained, again.skipped) == (0, len(GOOD))


def test_command_line(ray_session, folder, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="limefast")
    dataset_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "explain-dataset", str(folder), "--model", "test_dataset:grid_factory",
        "--output", str(tmp_path), "--num-samples", str(NUM_SAMPLES), "--top-labels",
        str(TOP_LABELS), "--seed", str(SEED), "--workers", "1", "--batch-images", "3",
        "--image-size", "30,34", "--no-progress"])
    assert args.func(args) == 0
    assert f"explained {len(GOOD)} images" in capsys.readouterr().out
    assert_rows_equal(table_rows(tmp_path), reference_rows(folder, image_size=(30, 34)))
    assert len(table_rows(tmp_path)) == len(GOOD) * TOP_LABELS + len(CORRUPT)


def test_bad_arguments_say_what_is_wrong(tmp_path, capsys):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="not a folder"):
        dataset.explain_dataset(tmp_path / "missing", grid_factory, output=tmp_path / "o")
    with pytest.raises(ValueError, match="appears twice"):
        dataset.explain_dataset(["x/a.png", "x/a.png"], grid_factory, output=tmp_path / "o")
    with pytest.raises(ValueError, match="target_overlap must be between 0 and 1"):
        dataset.explain_dataset(tmp_path, grid_factory, output=tmp_path / "o",
                                num_samples="auto", target_overlap=1.5)
    with pytest.raises(ValueError, match="min_gain"):  # the rule of "auto" with a fixed count
        dataset.explain_dataset(tmp_path, grid_factory, output=tmp_path / "o",
                                num_samples=300, min_gain=0.1)
    with pytest.raises(ValueError, match="segmentation must be"):
        dataset.explain_dataset([], grid_factory, output=tmp_path / "o", segmentation="watershed")
    with pytest.raises(TypeError, match="model_factory must be callable"):
        dataset.explain_dataset(["a.png"], "resnet", output=tmp_path / "o")
    assert dataset_cli.main(["explain-dataset", str(tmp_path), "--model", "nocolon",
                             "--output", str(tmp_path / "o")]) == 2
    assert "MODULE:FACTORY" in capsys.readouterr().err


def test_without_ray_the_entry_points_say_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert not dataset.ray_available()
    with pytest.raises(ImportError, match=r"pip install 'limefast\[dataset\]'"):
        dataset.explain_dataset(tmp_path, grid_factory, output=tmp_path / "o")
    code = dataset_cli.main(["explain-dataset", str(tmp_path), "--model",
                             "test_dataset:grid_factory", "--output", str(tmp_path / "o")])
    assert code == 2
    assert "pip install 'limefast[dataset]'" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--time-budget", "-1"), ("--time-budget", "nan"),
                                        ("--num-samples", "0"), ("--num-samples", "some"),
                                        ("--top-labels", "0"), ("--batch-images", "-2")])
def test_bad_flags_are_usage_errors_as_in_explain(flag, value, tmp_path, capsys):
    """explain-dataset parses its flags with the types ``limefast explain`` uses: a value out
    of range is a one-line usage error, exit status 2, before Ray starts."""
    with pytest.raises(SystemExit) as exc:
        dataset_cli.main(["explain-dataset", str(tmp_path), "--model", "x:y", "--output",
                          str(tmp_path / "o"), flag, value])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
