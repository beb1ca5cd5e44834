"""Issue 25's int8 study: post-training int8 quantization against fp32 on a CPU without native
bf16, end to end inside explanations.

For each model (torchvision ResNet-18, ResNet-50, ViT-B/16; random weights, seed 0) and each
image (scikit-image's bundled photos at 224x224), one explanation with a frozen fp32
``TorchClassifier`` (``compile="trace"``, warmed up: its fastest fp32) and one with a fresh int8
classifier, alternately, same seed, same ``num_samples``, top 5 labels, default quickshift:

- **CNNs** (ResNets): PyTorch's x86 backend, FX graph mode (``prepare_fx`` / ``convert_fx``)
  with the x86 default qconfig mapping, per-tensor MinMax activation observers in place of its
  HistogramObserver (which costs ~7x an fp32 forward per calibration image here), per-channel
  symmetric weights; calibrated on the explanation's own first ``--calibration`` perturbed
  images (those forwards run in fp32 with the observers), then converted, traced and frozen.
- **ViT**: dynamic quantization of its ``nn.Linear`` layers (``quantize_dynamic``: activations
  quantized per batch, no calibration; the attention's fused in-projection stays fp32); FX
  static quantization is tried as well and its failure, if any, recorded.

The int8 explanation's time includes its calibration, conversion and trace (each explanation
calibrates afresh, on its own images): the adoption rule of the issue (>= 1.5x fp32 end to end,
top-5 overlap with fp32's explanation >= 0.99) is checked on that. The forward alone is timed
too (batches of 8, alternating, medians).

Run: ``PYTHONPATH=. python -m benchmarks.int8_study --out bench-results/int8-study.json``
(``--models``, ``--images``, ``--samples`` to resize it; the JSON keeps the machine record with
its CPU features).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np

IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def qconfig_mapping():
    """The x86 default mapping with MinMax activation observers instead of histograms."""
    import torch
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    mapping = get_default_qconfig_mapping("x86")

    def cheaper(qconfig):
        if qconfig is None:
            return None
        act = qconfig.activation
        inner = getattr(act, "p", None)
        cls = getattr(inner, "func", act)
        if cls is HistogramObserver:
            kwargs = dict(getattr(inner, "keywords", {}) or {})
            return QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, **kwargs),
                           weight=qconfig.weight)
        return qconfig

    mapping.set_global(cheaper(mapping.global_qconfig))
    for key, qconfig in list(mapping.object_type_qconfigs.items()):
        mapping.set_object_type(key, cheaper(qconfig))
    return mapping


class Calibrating:
    """Installed as a ``TorchClassifier``'s module: runs the observed fp32 model on the first
    ``images`` images it is given, then swaps in the converted, frozen int8 module."""

    def __init__(self, classifier, images: int, side: int = 224):
        import torch
        from torch.ao.quantization.quantize_fx import prepare_fx

        self.classifier, self.images, self.seen = classifier, images, 0
        example = torch.zeros(1, 3, side, side)
        with torch.inference_mode(False), torch.no_grad():
            self.prepared = prepare_fx(copy.deepcopy(classifier.model), qconfig_mapping(),
                                       example_inputs=(example,))
        self.seconds = 0.0

    def __call__(self, x):
        import torch
        from torch.ao.quantization.quantize_fx import convert_fx

        out = self.prepared(x)
        self.seen += x.shape[0]
        if self.seen >= self.images:
            t0 = time.perf_counter()
            with torch.inference_mode(False), torch.no_grad():
                converted = convert_fx(self.prepared)
                example = torch.zeros(x.shape).to(memory_format=torch.channels_last)
                frozen = torch.jit.freeze(torch.jit.trace(converted, example, check_trace=False))
            self.classifier._module = frozen
            self.seconds = time.perf_counter() - t0
        return out


def int8_classifier(model, route: str, calibration: int, side: int = 224, **kwargs):
    """A ``TorchClassifier`` whose forward is int8 by ``route`` ('fx-static' or 'dynamic')."""
    import torch

    from limefast import TorchClassifier
    from limefast.imagenet import MEAN, STD

    kwargs = {"mean": MEAN, "std": STD, **kwargs}
    clf = TorchClassifier(copy.deepcopy(model), precision="fp32", device="cpu", **kwargs)
    if route == "fx-static":
        clf._module = Calibrating(clf, calibration, side)
    else:
        with torch.inference_mode(False), torch.no_grad():
            clf._module = torch.ao.quantization.quantize_dynamic(
                clf.model, {torch.nn.Linear}, dtype=torch.qint8)
    return clf


def forward_times(classifiers: dict, rounds: int = 5, batch: int = 8) -> dict:
    """ms per image of each classifier's forward on one model-ready batch, alternating."""
    import torch

    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    times = {k: [] for k in classifiers}
    with torch.inference_mode():
        for clf in classifiers.values():
            clf.forward(x)
        for _ in range(rounds):
            for name, clf in classifiers.items():
                t0 = time.perf_counter()
                clf.forward(x)
                times[name].append((time.perf_counter() - t0) / batch * 1e3)
    return {k: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v))}
            for k, v in times.items()}


def study_model(name: str, images: list, samples: int, calibration: int, progress) -> dict:
    import torch

    from limefast import TorchClassifier
    from limefast.benchsuite.agreement import agreement
    from limefast.benchsuite.inputs import bundled
    from limefast.benchsuite.models import torchvision_model
    from limefast.benchsuite.runners import explain_limefast
    from limefast.imagenet import MEAN, STD
    from limefast.lime_image import LimeImageExplainer

    model = torchvision_model(name)
    route = "dynamic" if name.startswith("vit") else "fx-static"
    out = {"model": name, "route": route, "samples": samples, "calibration": calibration,
           "images": []}
    if route == "dynamic":  # is FX static quantization an option for the ViT at all?
        try:
            from torch.ao.quantization.quantize_fx import prepare_fx

            with torch.inference_mode(False), torch.no_grad():
                prepare_fx(copy.deepcopy(model), qconfig_mapping(),
                           example_inputs=(torch.zeros(1, 3, 224, 224),))
            out["fx_static"] = "prepares"
        except Exception as exc:  # recorded, not raised: the study goes on with dynamic
            out["fx_static"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    fp32 = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, precision="fp32",
                           compile="trace", device="cpu")
    photo = bundled(images[0], 224)
    LimeImageExplainer(random_state=0).warmup(photo.shape, fp32, num_samples=samples)
    warm = int8_classifier(model, route, 8)
    out["forward"] = forward_times({"fp32": fp32, "int8": warm}, rounds=3)
    progress(f"{name} forward ms/image: {out['forward']}")
    kw = dict(top_labels=5, num_samples=samples, random_state=0)
    for image_name in images:
        image = bundled(image_name, 224)
        t0 = time.perf_counter()
        ref = explain_limefast(image, fp32, **kw)
        fp32_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        int8 = int8_classifier(model, route, calibration)
        calibrator = int8._module
        exp = explain_limefast(image, int8, **kw)
        int8_s = time.perf_counter() - t0
        measures = agreement(ref, exp)
        labels = measures["labels"]
        row = {"image": image_name, "fp32_s": fp32_s, "int8_s": int8_s,
               "speedup": fp32_s / int8_s,
               "convert_s": getattr(calibrator, "seconds", None),
               "top_labels_equal": list(ref.top_labels) == list(exp.top_labels),
               "top5_overlap": float(np.mean([v["top5_overlap"] for v in labels.values()])),
               "per_label": {str(k): v["top5_overlap"] for k, v in labels.items()},
               "spearman_min": min((v["spearman"] for v in labels.values()
                                    if v["spearman"] is not None), default=None),
               "fp32_forward_s": ref.timings["forward"], "int8_forward_s": exp.timings["forward"]}
        out["images"].append(row)
        progress(f"{name} {image_name}: {row}")
    rows = out["images"]
    out["speedup_median"] = float(np.median([r["speedup"] for r in rows]))
    out["top5_overlap_mean"] = float(np.mean([r["top5_overlap"] for r in rows]))
    out["adopt"] = out["speedup_median"] >= 1.5 and out["top5_overlap_mean"] >= 0.99
    return out


def digits_fidelity(images: int, samples: int, calibration: int, progress) -> dict:
    """The same comparison on a model whose outputs do move: the trained digits CNN
    (``limefast.models.digits``, 32x32, trained here), ``images`` test images, SLIC superpixels
    (40 asked), top 3 labels. Fidelity only: at 32x32 the forward costs next to nothing."""
    from skimage.segmentation import slic

    from limefast import TorchClassifier
    from limefast.benchsuite.agreement import agreement
    from limefast.benchsuite.runners import explain_limefast
    from limefast.models import digits

    trained = digits.load_model()
    identity = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    fp32 = TorchClassifier(copy.deepcopy(trained.model), precision="fp32", device="cpu",
                           **identity)
    kw = dict(top_labels=3, num_samples=samples, random_state=0,
              segmentation_fn=lambda im: slic(im, n_segments=40, compactness=10, start_label=0))
    rows = []
    for index in range(images):
        image = trained.data.test_images[index]
        ref = explain_limefast(image, fp32, **kw)
        int8 = int8_classifier(trained.model, "fx-static", calibration, side=image.shape[0],
                               **identity)
        exp = explain_limefast(image, int8, **kw)
        labels = agreement(ref, exp)["labels"]
        rows.append({"index": index,
                     "top5_overlap": float(np.mean([v["top5_overlap"] for v in labels.values()])),
                     # the predicted class alone: the others' probabilities are near 0 here
                     "top_label_overlap": labels[int(ref.top_labels[0])]["top5_overlap"],
                     "top_labels_equal": list(ref.top_labels) == list(exp.top_labels)})
        progress(f"digits CNN test image {index}: {rows[-1]}")
    return {"model": "digits CNN (trained)", "accuracy": trained.accuracy, "samples": samples,
            "calibration": calibration, "images": rows,
            "top5_overlap_mean": float(np.mean([r["top5_overlap"] for r in rows])),
            "top_label_overlap_mean": float(np.mean([r["top_label_overlap"] for r in rows]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50,vit_b_16")
    parser.add_argument("--images", type=int, default=3, help="bundled photos per model")
    parser.add_argument("--vit-images", type=int, default=1)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--vit-samples", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=64,
                        help="perturbed images the static route calibrates on")
    parser.add_argument("--digits", type=int, default=6,
                        help="test images of the trained digits CNN's fidelity check (0: none)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/int8-study.json"))
    args = parser.parse_args(argv)

    from limefast.benchsuite import machine

    warnings.simplefilter("ignore")  # TorchScript's and torch.ao's deprecation notices
    results = {"machine": machine(), "models": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.digits:
        results["digits"] = digits_fidelity(args.digits, args.samples, args.calibration,
                                            progress=lambda m: print(m, flush=True))
        args.out.write_text(json.dumps(results, indent=2, default=float))
    for name in filter(None, args.models.split(",")):
        vit = name.startswith("vit")
        n_images = args.vit_images if vit else args.images
        results["models"].append(study_model(
            name, list(IMAGES[:n_images]), args.vit_samples if vit else args.samples,
            args.calibration, progress=lambda m: print(m, flush=True)))
        args.out.write_text(json.dumps(results, indent=2, default=float))
    for m in results["models"]:
        print(f"{m['model']} ({m['route']}): end to end {m['speedup_median']:.2f}x fp32, top-5 "
              f"overlap with fp32 {m['top5_overlap_mean']:.3f}; forward "
              f"{m['forward']['fp32']['median_ms']:.0f} -> {m['forward']['int8']['median_ms']:.0f}"
              f" ms/image; adopt: {m['adopt']}")
    if args.digits:
        print(f"trained digits CNN: top-5 overlap with fp32 "
              f"{results['digits']['top5_overlap_mean']:.3f} (top 3 labels), "
              f"{results['digits']['top_label_overlap_mean']:.3f} (predicted class) over "
              f"{args.digits} images")
    print(f"CPU: {results['machine'].get('cpu_features', {}).get('described')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
