"""Detection (issue 27): every box from one set of forwards, against today's workaround (lime
once per box with a scalar wrapper) and against ``vision-explanation-methods``' D-RISE.

All on the shapes detector trained here (``limefast.models.detector``, 48x48 scenes), one
scene with its five best detections as the targets (K = 5), SLIC superpixels fixed for every
run, ``random_state=0``; ratios from runs in one process (medians of ``REPEATS`` alternated
runs where a ratio is a target's):

- all K targets against one: limefast's LIME at 1000 samples, 5 targets vs 1;
- lime 0.2.0.1's ``explain_instance`` once per box (``labels=(0,)`` of a one-column wrapper,
  its default batch of 10) against limefast's one explanation of the five (at lime's batch of
  10, and at 100); the detector's images counted for both;
- D-RISE at 1000 masks: the reference's ``DRISE_saliency`` (one forward per mask) against
  ``method="drise"`` with the same seed (the maps compared), and against the floor, the
  detector alone on the same masked images in the same batches; peak memory (RSS growth in
  fresh processes) at 250 and 1000 masks for both;
- faithfulness: each target's score as the explanation's top superpixels are hidden (with 0),
  the deletion AUC against random orders', for LIME, KernelSHAP and D-RISE (its map averaged
  over the superpixels).

Run: ``.venv/bin/python -m pytest benchmarks/bench_detection.py -s`` (a few minutes on 2
cores; ``-k`` picks a case).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.conftest import check, note, record

torch = pytest.importorskip("torch")
lime_image = pytest.importorskip("lime.lime_image")

from limefast.benchsuite.runners import quiet_lime  # noqa: E402
from limefast.detection import DetectionExplainer, drise_masks  # noqa: E402
from limefast.detection.scores import TargetScores  # noqa: E402
from limefast.metrics.curves import faithfulness, segment_scores  # noqa: E402
from limefast.models import detector as shapes  # noqa: E402

K = 5
SAMPLES = 1000
REPEATS = 3  # runs of each side of a timed comparison (medians)


@pytest.fixture(scope="module")
def setup():
    from skimage.segmentation import slic

    det = shapes.load_model().detector
    scenes = shapes.load_scenes(40, seed=11)
    index = next(i for i, b in enumerate(scenes.boxes) if len(b) == 3)
    image = scenes.images[index]
    found = det(image[None])[0]
    targets = [(tuple(found["boxes"][j]), int(found["labels"][j])) for j in range(K)]
    segments = slic(image, n_segments=40, compactness=10, start_label=0)
    return det, image, targets, (lambda _image: segments)


def _ours(det, image, targets, seg, batch_size=100, method="lime", **kw):
    return DetectionExplainer(random_state=0).explain_instance(
        image, det, method, num_samples=SAMPLES, targets=targets, segmentation_fn=seg,
        batch_size=batch_size, hide_color=0, **kw)


def test_all_targets_cost_one(setup):
    det, image, targets, seg = setup
    _ours(det, image, targets, seg)  # warm-up
    times = {1: [], K: []}
    for _ in range(3):
        for k in (K, 1):
            t0 = time.perf_counter()
            _ours(det, image, targets[:k], seg)
            times[k].append(time.perf_counter() - t0)
    one, all_ = float(np.median(times[1])), float(np.median(times[K]))
    record("detection_targets", "reference", one)
    record("detection_targets", f"limefast, {K} targets", all_)
    note(f"detection: {K} targets {all_:.3f} s, 1 target {one:.3f} s: {all_ / one:.3f}x "
         f"(LIME, {SAMPLES} samples, batch 100)")
    assert check("detection_all_targets_cost", all_ / one, f"{all_ / one:.3f}x")


class OneBox:
    """Today's workaround: the detector as a one-column classifier for one box."""

    def __init__(self, det, target):
        self.scores = TargetScores(det, [target])

    def __call__(self, images):
        return self.scores(images)


def test_against_lime_once_per_box(setup):
    det, image, targets, seg = setup
    from limefast.detection.explainer import given_targets

    chosen = given_targets(targets, image.shape[:2])
    _ours(det, image, targets, seg)  # warm-up
    lime_times, times, runs = [], {10: [], 100: []}, {}
    for _ in range(REPEATS):  # alternated, medians: a shared machine moves single runs
        wrappers = [OneBox(det, t) for t in chosen]
        t0 = time.perf_counter()
        with quiet_lime():
            refs = [lime_image.LimeImageExplainer(random_state=0).explain_instance(
                image, w, labels=(0,), top_labels=None, num_samples=SAMPLES,
                segmentation_fn=seg, hide_color=0) for w in wrappers]
        lime_times.append(time.perf_counter() - t0)
        for batch in (10, 100):
            t0 = time.perf_counter()
            runs[batch] = _ours(det, image, targets, seg, batch_size=batch)
            times[batch].append(time.perf_counter() - t0)
    lime_seconds = float(np.median(lime_times))
    lime_images = sum(w.scores.images for w in wrappers)
    record("detection_lime", "lime", lime_seconds)
    ratios = {}
    for batch in (10, 100):
        seconds = float(np.median(times[batch]))
        record("detection_lime", f"limefast, batch {batch}", seconds)
        ratios[batch] = lime_seconds / seconds
    # lime's batches of 10 give the same float32 forwards (other batches round otherwise)
    e = runs[10]
    worst = max(abs(dict(e.local_exp[i])[f] - w) for i, r in enumerate(refs)
                for f, w in r.local_exp[0])
    note(f"detection vs lime once per box: lime {lime_seconds:.2f} s and {lime_images} detector "
         f"images; limefast {e.num_forwards} images, {ratios[10]:.1f}x at batch 10, "
         f"{ratios[100]:.1f}x at batch 100; largest weight difference {worst:.2e}")
    assert check("detection_fewer_forwards", lime_images / e.num_forwards,
                 f"{lime_images / e.num_forwards:.2f}x")
    for batch, ratio in ratios.items():
        check("detection_lime_per_box_speedup", ratio, f"{ratio:.1f}x", impl=f"batch {batch}")
    assert worst < 1e-9


class RefModel:
    """The shapes detector behind vision-explanation-methods' interface."""

    def __init__(self, det):
        from vision_explanation_methods.explanations import common

        self.common, self.det = common, det

    def predict(self, x):
        images = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        return [self.common.DetectionRecord(
            torch.tensor(d["boxes"], dtype=torch.float32),
            torch.tensor(d["scores"], dtype=torch.float32),
            torch.tensor(d["class_probs"], dtype=torch.float32)) for d in self.det(images)]


def _reference(det, image, chosen, n, seed):
    from vision_explanation_methods.explanations import common, drise

    record_ = common.DetectionRecord(
        torch.tensor([t.box for t in chosen], dtype=torch.float32), torch.ones(len(chosen)),
        torch.tensor(np.stack([t.class_probs for t in chosen]), dtype=torch.float32))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(seed)
    out = drise.DRISE_saliency(RefModel(det), tensor, [record_], n)
    return np.stack([m["detection"][0].numpy() for m in out[0]])


def test_drise_against_the_reference(setup):
    pytest.importorskip("vision_explanation_methods")
    det, image, _, _ = setup
    ours = DetectionExplainer(random_state=0).explain_instance(
        image, det, "drise", num_samples=50, seed=1, score_threshold=0.05)  # warm-up
    chosen = ours.targets[:K]
    t0 = time.perf_counter()
    ref = _reference(det, image, chosen, SAMPLES, 0)
    ref_seconds = time.perf_counter() - t0
    targets = [(t.box, t.label) for t in chosen]
    # the targets with their class probabilities, as the reference scores them
    from limefast.detection.protocol import Target

    full = [Target(t.box, t.label, t.score, t.class_probs, True) for t in chosen]
    masks = np.asarray(drise_masks(SAMPLES, image.shape[:2], seed=0))
    masked = (image[None] * masks[..., None]).astype(np.uint8)
    ours, alone = [], []
    for _ in range(REPEATS):  # alternated, medians
        t0 = time.perf_counter()
        e = DetectionExplainer(random_state=0).explain_instance(
            image, det, "drise", num_samples=SAMPLES, seed=0, targets=full, batch_size=100)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for start in range(0, SAMPLES, 100):
            det(masked[start:start + 100])
        alone.append(time.perf_counter() - t0)
    seconds, floor = float(np.median(ours)), float(np.median(alone))
    worst = max(float(np.abs(e.saliency[i] - ref[i]).max()) for i in range(K))
    record("detection_drise", "reference", ref_seconds)
    record("detection_drise", "limefast", seconds)
    record("detection_drise", "detector alone (floor)", floor)
    note(f"detection D-RISE, {SAMPLES} masks, {len(targets)} targets: reference "
         f"{ref_seconds:.2f} s, limefast {seconds:.2f} s ({ref_seconds / seconds:.1f}x), the "
         f"detector alone {floor:.2f} s ({seconds / floor:.2f}x the floor); largest map "
         f"difference {worst:.2e}")
    check("detection_drise_equal_maps", worst, f"{worst:.2e}")
    check("detection_drise_speedup", ref_seconds / seconds, f"{ref_seconds / seconds:.1f}x",
          impl="the shapes detector's function")
    check("detection_drise_floor", seconds / floor, f"{seconds / floor:.2f}x")
    assert worst < 1e-4


_MEMORY = r"""
import json, sys, numpy as np, torch
sys.path.insert(0, ".")
from limefast.models import detector as shapes
from limefast.detection import DetectionExplainer
from benchmarks.bench_detection import _reference
impl, n = sys.argv[1], int(sys.argv[2])
det = shapes.load_model().detector
image = shapes.load_scenes(40, seed=11).images[int(sys.argv[3])]
e = DetectionExplainer(random_state=0).explain_instance(image, det, "drise", num_samples=20,
                                                        seed=1, score_threshold=0.05)
chosen = e.targets[:5]
import os, threading, time
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page // 1024
before, peak, done = rss(), [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
watcher = threading.Thread(target=watch)
watcher.start()
if impl == "limefast":
    DetectionExplainer(random_state=0).explain_instance(
        image, det, "drise", num_samples=n, seed=0,
        targets=[(t.box, t.label) for t in chosen], batch_size=100)
else:
    _reference(det, image, chosen, n, 0)
done.set()
watcher.join()
print(json.dumps({"growth_kb": max(peak[0], rss()) - before}))
"""


def test_drise_memory_is_flat(setup):
    """RSS growth in fresh processes for both (noisy: the allocator's and torch's caches move
    it by megabytes), and limefast's traced allocations (tracemalloc: NumPy and Python) at 250
    and 4000 masks, the per-mask growth checked."""
    import tracemalloc

    pytest.importorskip("vision_explanation_methods")
    det, image, _, _ = setup
    scenes = shapes.load_scenes(40, seed=11)
    index = next(i for i, b in enumerate(scenes.boxes) if len(b) == 3)
    growth = {}
    for impl in ("limefast", "reference"):
        for n in (250, 1000):
            out = subprocess.run([sys.executable, "-c", _MEMORY, impl, str(n), str(index)],
                                 capture_output=True, text=True, check=True)
            growth[impl, n] = json.loads(out.stdout.strip().splitlines()[-1])["growth_kb"]
    per_mask = {impl: (growth[impl, 1000] - growth[impl, 250]) * 1024 / 750
                for impl in ("limefast", "reference")}
    note("detection D-RISE peak RSS growth over the run (KB, /proc/self/statm every 5 ms): "
         + ", ".join(f"{impl} {n} masks {kb}" for (impl, n), kb in growth.items())
         + "; per extra mask: " + ", ".join(f"{k} {v:.0f} B" for k, v in per_mask.items()))
    e = DetectionExplainer(random_state=0).explain_instance(
        image, det, "drise", num_samples=20, seed=1, score_threshold=0.05)
    targets = [(t.box, t.label) for t in e.targets[:K]]
    traced = {}
    for n in (250, 4000):
        tracemalloc.start()
        DetectionExplainer(random_state=0).explain_instance(
            image, det, "drise", num_samples=n, seed=0, targets=targets, batch_size=100)
        traced[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    slope = (traced[4000] - traced[250]) / 3750
    note(f"detection D-RISE traced peak (limefast): 250 masks {traced[250] / 2**20:.2f} MB, "
         f"4000 masks {traced[4000] / 2**20:.2f} MB: {slope:.0f} B per extra mask (a grid and "
         "its offset are 272 B)")
    assert check("detection_drise_memory_flat", slope, f"{slope:.0f} B per mask",
                 impl="limefast, traced")
    check("detection_drise_memory_flat", per_mask["reference"],
          f"{per_mask['reference']:.0f} B per mask", impl="reference, RSS")


def test_faithfulness_deletion(setup):
    det, image, targets, seg = setup
    rng = np.random.RandomState(0)
    lime_e = _ours(det, image, targets, seg)
    results = {
        "lime": lime_e,
        "kernelshap": _ours(det, image, targets, seg, method="kernelshap"),
    }
    drise_e = DetectionExplainer(random_state=0).explain_instance(
        image, det, "drise", num_samples=SAMPLES, seed=0, targets=targets, batch_size=100)
    fn = TargetScores(det, lime_e.targets)
    n = int(lime_e.segments.max()) + 1
    lines = []
    for method in ("lime", "kernelshap", "drise"):
        ours, rand = [], []
        for i in range(K):
            if method == "drise":
                weights = segment_scores(drise_e.saliency_raw[i], lime_e.segments)
                f = faithfulness(lime_e, fn, label=i, weights=weights, hide_color=0)
            else:
                f = faithfulness(results[method], fn, label=i, hide_color=0)
            ours.append(f.deletion_auc)
            rand.append(np.mean([faithfulness(lime_e, fn, label=i, weights=rng.rand(n),
                                              hide_color=0).deletion_auc for _ in range(5)]))
        lines.append(f"{method} {np.mean(ours):.4f} vs random {np.mean(rand):.4f}")
        check("detection_faithfulness", np.mean(ours) / np.mean(rand),
              f"deletion AUC {np.mean(ours):.4f} vs random {np.mean(rand):.4f}", impl=method)
        assert np.mean(ours) < np.mean(rand)
    note("detection faithfulness (mean deletion AUC over the 5 targets): " + "; ".join(lines))


TV_SAMPLES = 100  # a torchvision detector costs ~0.1 s an image here: fewer images than above


def test_torchvision_detector(setup):
    """A torchvision detector (random weights), where the forward dominates: D-RISE against the
    reference, and LIME once against lime once per box, at ``TV_SAMPLES`` images."""
    pytest.importorskip("vision_explanation_methods")
    from torchvision.models import detection

    from limefast.detection import TorchDetector
    from limefast.detection.explainer import given_targets
    from limefast.detection.protocol import Target

    _, image, _, seg = setup
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=96, max_size=96,
        box_score_thresh=0.0, box_detections_per_img=20)
    det = TorchDetector(model, batch_size=25)
    found = det(image[None])[0]
    targets = [(tuple(found["boxes"][j]), int(found["labels"][j])) for j in range(K)]
    chosen = given_targets(targets, image.shape[:2])

    class WithProbs:  # the reference wants class scores: one-hot of the label
        def __call__(self, images):
            out = det(images)
            for d in out:
                d["class_probs"] = np.eye(4)[d["labels"]]
            return out

    full = [Target(t.box, t.label, 1.0, np.eye(4)[t.label], True) for t in chosen]
    t0 = time.perf_counter()
    ref = _reference(WithProbs(), image, full, TV_SAMPLES, 0)
    ref_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    e = DetectionExplainer(random_state=0).explain_instance(
        image, WithProbs(), "drise", num_samples=TV_SAMPLES, seed=0, targets=full,
        batch_size=25)
    seconds = time.perf_counter() - t0
    # the floor: the detector function alone on the same masked images, in the same batches
    masks = np.asarray(drise_masks(TV_SAMPLES, image.shape[:2], seed=0))
    masked = (image[None] * masks[..., None]).astype(np.uint8)
    fn = WithProbs()
    t0 = time.perf_counter()
    for start in range(0, TV_SAMPLES, 25):
        fn(masked[start:start + 25])
    floor = time.perf_counter() - t0
    record("detection_drise_torchvision", "detector alone (floor)", floor)
    check("detection_drise_floor", seconds / floor, f"{seconds / floor:.2f}x",
          impl=f"Faster R-CNN MobileNetV3 at 96 px as a detector function, {TV_SAMPLES} "
               "masks")
    # Random weights: scores nearly constant, and a map scaled to [0, 1] amplifies the float32
    # differences of batched and single forwards; the maps are compared by correlation (the
    # equality on the same forwards is test_drise_against_the_reference's)
    live = [i for i in range(K) if np.isfinite(ref[i]).all() and np.ptp(ref[i]) > 0
            and np.ptp(e.saliency_raw[i]) > 0]
    worst = min([float(np.corrcoef(e.saliency_raw[i].ravel(), ref[i].ravel())[0, 1])
                 for i in live] + [1.0])
    record("detection_drise_torchvision", "reference", ref_seconds)
    record("detection_drise_torchvision", "limefast", seconds)
    check("detection_drise_speedup", ref_seconds / seconds, f"{ref_seconds / seconds:.2f}x",
          impl=f"TorchDetector, Faster R-CNN MobileNetV3 at 96 px, {TV_SAMPLES} masks")
    wrappers = [OneBox(det, t) for t in chosen]
    t0 = time.perf_counter()
    with quiet_lime():
        for w in wrappers:
            lime_image.LimeImageExplainer(random_state=0).explain_instance(
                image, w, labels=(0,), top_labels=None, num_samples=TV_SAMPLES,
                segmentation_fn=seg, hide_color=0, batch_size=25)
    lime_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    DetectionExplainer(random_state=0).explain_instance(
        image, det, num_samples=TV_SAMPLES, targets=targets, segmentation_fn=seg,
        batch_size=25, hide_color=0)
    ours = time.perf_counter() - t0
    record("detection_lime_torchvision", "lime", lime_seconds)
    record("detection_lime_torchvision", "limefast", ours)
    note(f"detection on Faster R-CNN MobileNetV3 (random weights, 96 px), {TV_SAMPLES} images: "
         f"D-RISE reference {ref_seconds:.2f} s, limefast {seconds:.2f} s "
         f"({ref_seconds / seconds:.2f}x; the detector alone {floor:.2f} s, "
         f"{seconds / floor:.2f}x the floor; the least map correlation {worst:.3f} over "
         f"{len(live)} moving maps); lime once per box "
         f"{lime_seconds:.2f} s, limefast {ours:.2f} s ({lime_seconds / ours:.2f}x for K={K})")
    check("detection_lime_torchvision", lime_seconds / ours, f"{lime_seconds / ours:.2f}x")
