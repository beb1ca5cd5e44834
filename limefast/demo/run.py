"""``make demo``: explain a small CNN's handwritten digits, and time limefast against lime.

Nothing is downloaded: the model is a three-layer CNN trained here on scikit-learn's bundled
digits (a few seconds, cached after the first run; see ``limefast.models.digits``). The demo
explains several test digits, one of them misclassified, and writes one PNG panel per digit:
the digit, LIME's superpixels for and against the predicted label, the weight heatmap, Grad-CAM,
and the deletion curve (LIME's order against random orders). It then explains the same digits
with lime 0.2.0.1, checks that the explanations agree, and prints both times.

Run: ``python -m limefast.demo [--out DIR] [--num-samples N] [--digits K] [--no-lime]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

from limefast.core.checks import output_folder
from limefast.optional import available

ZOOM = 4  # 32 px digits drawn at 128 px
SLIC = dict(n_segments=40, compactness=10, start_label=0)
# Hidden superpixels turn black, the digits' background (lime's MNIST tutorial does the same):
# mean colours of superpixels this small still draw the digit, and the model would see no change.
HIDE = 0
ROUNDS = 3  # timed runs of each library


def _zoom(array: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(array, ZOOM, axis=0), ZOOM, axis=1)


def pick_digits(data, probabilities: np.ndarray, count: int) -> list[int]:
    """Test digits to explain: the first misclassified one (else the least confident one), then
    the first correctly classified digit of each class, up to ``count``."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != data.test_labels)
    first = int(wrong[0]) if wrong.size else int(np.argmin(probabilities.max(axis=1)))
    chosen = [first]
    for digit in range(10):
        right = np.flatnonzero((data.test_labels == digit) & (predicted == digit))
        right = right[right != first]
        if right.size and len(chosen) < count:
            chosen.append(int(right[0]))
    return chosen[:count]


def random_deletion(explanation, classifier, label, repeats: int, seed: int):
    """Mean deletion curve and area over ``repeats`` random orders of the superpixels."""
    from limefast.metrics.curves import faithfulness

    rng = np.random.RandomState(seed)
    n = int(explanation.segments.max()) + 1
    runs = [faithfulness(explanation, classifier, label=label, weights=rng.permutation(n),
                         hide_color=HIDE, batch_size=256) for _ in range(repeats)]
    return (np.mean([r.deletion for r in runs], axis=0),
            float(np.mean([r.deletion_auc for r in runs])))


def digit_panel(index, true, exp, classifier, cam, label, probability):
    """The PNG panel of one digit (a PIL image), and its faithfulness numbers."""
    from skimage.transform import resize

    from limefast.metrics.curves import faithfulness
    from limefast.viz import panel, render

    image, segments = _zoom(exp.image), _zoom(exp.segments)
    weights = exp.local_exp[label]
    faith = faithfulness(exp, classifier, label=label, hide_color=HIDE, batch_size=256)
    rand_curve, rand_auc = random_deletion(exp, classifier, label, repeats=10, seed=index)
    big_cam = resize(cam, image.shape[:2], order=1)
    curves = panel.curve_plot(faith.fractions, [("LIME order", faith.deletion, "green"),
                                                 ("random", rand_curve, "gray")],
                               size=(ZOOM * 40, ZOOM * 32), xlabel="superpixels deleted")
    status = "MISCLASSIFIED" if label != true else "correct"
    picture = panel.panel([
        (f"digit {true}", image),
        (f"LIME: for {label}", render.render_explanation(
            image, segments, weights, negative=None, coverage=0.2)),
        (f"LIME: against {label}", render.render_explanation(
            image, segments, weights, positive=None, coverage=0.2)),
        ("LIME weights", render.heatmap(segments, weights, image=image, boundaries=True)),
        (f"Grad-CAM for {label}", render.cam_overlay(image, big_cam)),
        (f"deletion AUC {faith.deletion_auc:.2f}", curves),
    ], tile=ZOOM * 32, header=f"test digit #{index}: true {true}, predicted {label} "
                              f"(p={probability:.2f}), {status}")
    return picture, faith, rand_auc


def explain_fast(images, classifier, num_samples: int, seed: int):
    """limefast's explanations of the digits, and the seconds they took."""
    from limefast import lime_image
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    t0 = time.perf_counter()
    explanations = lime_image.LimeImageExplainer(random_state=seed).explain_batch(
        images, classifier, top_labels=3, num_samples=num_samples, batch_size=100,
        segmentation_fn=SegmentationAlgorithm("slic", **SLIC), hide_color=HIDE,
        progress_bar=False)
    return explanations, time.perf_counter() - t0


def explain_lime(images, classifier, num_samples: int, seed: int):
    """lime 0.2.0.1's explanations of the same digits and their seconds; None without lime."""
    if not available("lime"):
        return None
    from lime import lime_image as lime_ref
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    explainer = lime_ref.LimeImageExplainer(random_state=seed)
    segmentation = SegmentationAlgorithm("slic", **SLIC)
    t0 = time.perf_counter()
    # lime 0.2.0.1 always draws progress bars: to a buffer
    with contextlib.redirect_stderr(io.StringIO()):
        references = [explainer.explain_instance(image, classifier, top_labels=3,
                                                 num_samples=num_samples, batch_size=100,
                                                 segmentation_fn=segmentation, hide_color=HIDE)
                      for image in images]
    return references, time.perf_counter() - t0


def model_seconds(classifier, images, num_samples: int) -> float:
    """Seconds the model alone takes on as many images as the explanations send it."""
    batch = np.repeat(images[0][None], 100, axis=0)
    t0 = time.perf_counter()
    for start in range(0, len(images) * num_samples, 100):
        classifier(batch[:min(100, len(images) * num_samples - start)])
    return time.perf_counter() - t0


def _same(ref, ours) -> bool:
    if list(ref.top_labels) != list(ours.top_labels):
        return False
    for label, exp in ref.local_exp.items():
        mine = ours.local_exp[label]
        if [f for f, _ in exp] != [f for f, _ in mine]:
            return False
        if not np.allclose([w for _, w in exp], [w for _, w in mine], rtol=1e-7, atol=1e-10):
            return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for the PNGs (default demo-out)")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--digits", type=int, default=6, help="digits to explain (default 6)")
    parser.add_argument("--no-lime", action="store_true", help="skip the lime comparison")
    parser.add_argument("--retrain", action="store_true", help="train even if a model is cached")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.digits < 1:
        print("limefast demo: --num-samples and --digits must be >= 1", file=sys.stderr)
        return 2
    out = output_folder(args.out, "limefast demo")
    if out is None:
        return 2

    # The model is tiny and the batches small: one torch thread is as fast, and far faster
    # than two on a CPU that other processes share (OpenMP threads spin against them).
    from limefast.device._torch import torch_threads
    from limefast.models import digits

    with torch_threads(1):
        return _run(args, out, digits)


def _run(args, out: Path, digits) -> int:
    from limefast.viz.cam import gradcam

    trained = digits.load_model(retrain=args.retrain)
    data, model = trained.data, trained.model
    where = f"cached at {trained.path}" if trained.path else "not cached"
    how = "trained" if trained.trained else "loaded"
    classifier = digits.DigitsClassifier(model)
    test_probabilities = classifier(data.test_images)
    predicted = test_probabilities.argmax(axis=1)
    print(f"digits CNN {how} in {trained.seconds:.1f} s ({where}); test accuracy "
          f"{trained.accuracy:.1%}, {int(np.sum(predicted != data.test_labels))} of "
          f"{len(predicted)} test digits misclassified")
    chosen = pick_digits(data, test_probabilities, args.digits)
    if np.all(predicted == data.test_labels):
        print("no test digit is misclassified: the least confident one comes first instead")
    images = [data.test_images[i] for i in chosen]

    seed = 42
    explain_fast(images[:1], classifier, 20, 0)  # compile the kernels before timing
    explanations, fast = explain_fast(images, classifier, args.num_samples, seed)
    labels = [int(exp.top_labels[0]) for exp in explanations]
    cams = gradcam(model, np.stack(images), labels=labels)
    probabilities = classifier(np.stack(images))
    for index, exp, cam, label, probs in zip(chosen, explanations, cams, labels, probabilities):
        true = int(data.test_labels[index])
        picture, faith, rand_auc = digit_panel(index, true, exp, classifier, cam, label,
                                               float(probs[label]))
        path = out / f"digit-{index:03d}-true{true}-pred{label}.png"
        picture.save(path)
        flag = "  <- misclassified" if label != true else ""
        print(f"  #{index:3d} true {true} predicted {label} (p={probs[label]:.2f}): deletion AUC "
              f"LIME {faith.deletion_auc:.2f} vs random {rand_auc:.2f} -> {path}{flag}")
    if args.no_lime:
        print(f"limefast: {len(images)} explanations x {args.num_samples} samples in {fast:.2f} s")
        return 0
    # Alternate the runs, so a busy moment of the machine hits each alike; timed once the
    # background load of the kernels is done (on an empty Numba cache it compiles for a while,
    # and the first explanations meanwhile ran on the NumPy twins).
    from limefast import _preload

    _preload.wait()
    fast_times, lime_times, model_times, same = [], [], [], True
    for _ in range(ROUNDS):
        reference = explain_lime(images, classifier, args.num_samples, seed)
        if reference is None:
            print(f"limefast: {len(images)} explanations x {args.num_samples} samples in "
                  f"{fast:.2f} s; lime is not installed (pip install lime==0.2.0.1): "
                  "no comparison")
            return 0
        references, seconds = reference
        lime_times.append(seconds)
        same = same and all(_same(r, o) for r, o in zip(references, explanations))
        model_times.append(model_seconds(classifier, images, args.num_samples))
        fast_times.append(explain_fast(images, classifier, args.num_samples, seed)[1])
    fast, slow = float(np.median(fast_times)), float(np.median(lime_times))
    print(f"the same {len(images)} explanations ({args.num_samples} samples each, median of "
          f"{ROUNDS} alternating runs): limefast {fast:.2f} s, lime 0.2.0.1 {slow:.2f} s -> "
          f"{slow / fast:.1f}x faster; same explanations: {'yes' if same else 'NO'}")
    model = float(np.median(model_times))
    print(f"(the CNN alone takes about {model:.2f} s on that many images; beyond it, limefast "
          f"spends about {max(fast - model, 0):.2f} s and lime {max(slow - model, 0):.2f} s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
