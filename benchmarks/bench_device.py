"""Issue 4 targets: ``TorchClassifier`` (the device path) against lime with a tutorial classifier.

ResNet-18 and ResNet-50 (torchvision, random weights, seed 0) on a 224x224 photo, 1000 samples,
5 labels, the default quickshift segmentation computed by each explainer (end to end). The
reference is lime 0.2.0.1 with the classifier of lime's PyTorch tutorial: per-image
torchvision transforms (ToTensor + Normalize) in a Python loop, ``batch_size=10``, fp32, NCHW,
``torch.no_grad``. limefast runs ``TorchClassifier(precision="fp32")`` and, where the CPU
computes it natively (``fastest_cpu_precision()``: AVX512_BF16 or AMX; emulated bf16 is slower
than fp32), ``precision="bf16"`` (autocast), and the same with ``compile="trace"`` (frozen
TorchScript) and, for ResNet-18, ``compile="inductor"``, all warmed up with
``explainer.warmup``. They are
run alternately, round after round, in this process; the ratios are of their medians.

Printed: the speed-ups, the fraction of limefast's time in the model's forward, the forward's
GFLOP/s against those of one compute-bound convolution (what this CPU can reach), everything but
the forward against the time of writing the model-ready batches once, the agreement of the
fp32 device path with lime run on the same ``TorchClassifier``, and the AMP agreement (bf16
against fp32: per label, the overlap of the top-5 features and the Spearman correlation of the
weights). Run: ``.venv/bin/python -m pytest benchmarks/bench_device.py --benchmark-only -q -s``
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest

from benchmarks.conftest import check, note, record
from limefast import TorchClassifier
from limefast import lime_image as lime_fast
from limefast.benchsuite.agreement import agreement
from limefast.benchsuite.models import TutorialClassifier, torchvision_model
from limefast.benchsuite.runners import explain_lime, explain_limefast
from limefast.device.features import cpu_features, fastest_cpu_precision
from limefast.imagenet import MEAN, STD

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

NUM_SAMPLES = 1000
TOP_LABELS = 5
ROUNDS = int(os.environ.get("LIMEFAST_BENCH_ROUNDS", "2"))
GROUP = "resnet18-224-end-to-end"


def variants(model_name: str) -> tuple:
    """fp32 and the fastest precision this CPU computes natively (if another), eager, traced
    and, for ResNet-18, inductor (ResNet-50's compilation alone takes minutes here)."""
    precisions = tuple(dict.fromkeys(("fp32", fastest_cpu_precision())))
    compiles = ("", "+trace") + (("+inductor",) if model_name == "resnet18" else ())
    return tuple(p + c for c in compiles for p in precisions)


def make_setting(image, model_name):
    reference_model = torchvision_model(model_name)
    setting = {"image": image, "tutorial": TutorialClassifier(reference_model),
               "model": reference_model}
    for name in variants(model_name):
        precision, _, compile_mode = name.partition("+")
        setting[name] = TorchClassifier(copy.deepcopy(reference_model), mean=MEAN, std=STD,
                                        precision=precision, compile=compile_mode or None,
                                        device="cpu")
    return setting


@pytest.fixture(scope="module")
def setting(photo_224):
    return make_setting(photo_224, "resnet18")


def _run_lime(setting):
    tutorial = setting["tutorial"]
    tutorial.forward_seconds = 0.0
    t0 = time.perf_counter()
    explanation = explain_lime(setting["image"], tutorial, top_labels=TOP_LABELS,
                               num_samples=NUM_SAMPLES, batch_size=10)
    return time.perf_counter() - t0, explanation, tutorial.forward_seconds


def _run_limefast(setting, name):
    t0 = time.perf_counter()
    explanation = explain_limefast(setting["image"], setting[name], top_labels=TOP_LABELS,
                                   num_samples=NUM_SAMPLES)
    return time.perf_counter() - t0, explanation, explanation.timings["forward"]


@pytest.mark.benchmark(group=GROUP)
def test_resnet18_lime_vs_torch_classifier(benchmark, setting):
    _lime_vs_torch_classifier(benchmark, setting, "resnet18", GROUP)


@pytest.mark.benchmark(group="resnet50-224-end-to-end")
def test_resnet50_lime_vs_torch_classifier(benchmark, photo_224):
    setting = make_setting(photo_224, "resnet50")
    _lime_vs_torch_classifier(benchmark, setting, "resnet50", "resnet50-224-end-to-end")


def _lime_vs_torch_classifier(benchmark, setting, model_name, group):
    image = setting["image"]
    names = variants(model_name)
    for name in names:  # kernels, buffers, both batch shapes (and the compilations)
        lime_fast.LimeImageExplainer(random_state=0).warmup(image.shape, setting[name],
                                                            num_samples=NUM_SAMPLES)
    runs = {name: [] for name in ("lime",) + names}

    def one_round():  # alternate, so a loaded machine slows them all alike
        runs["lime"].append(_run_lime(setting))
        for name in names:
            runs[name].append(_run_limefast(setting, name))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    medians = {k: float(np.median([r[0] for r in v])) for k, v in runs.items()}
    record(group, "lime", medians["lime"])
    for name in names:
        record(group, f"TorchClassifier {name}", medians[name])
    benchmark.extra_info.update({f"{k}_median_s": v for k, v in medians.items()})

    flop = 2 * macs_per_image(setting["model"], image.shape[:2])
    lines = [f"{model_name} 224x224, {NUM_SAMPLES} samples, {TOP_LABELS} labels, {ROUNDS} "
             f"alternating rounds; CPU {cpu_features().describe()}; torch threads "
             f"{torch.get_num_threads()}; {flop / 1e9:.2f} GFLOP per image (convolutions and "
             "linear layers)"]
    lime_fwd = float(np.median([r[2] for r in runs["lime"]]))
    lines.append(f"  lime (tutorial classifier)  {medians['lime']:7.2f} s  forward "
                 f"{lime_fwd:6.2f} s ({lime_fwd / medians['lime']:.0%}), "
                 f"{flop * NUM_SAMPLES / lime_fwd / 1e9:.0f} GFLOP/s")
    for name in names:
        # Medians over the rounds of every figure: one preempted stage does not decide a ratio.
        total = medians[name]
        stages = {k: float(np.median([r[1].timings[k] for r in runs[name]]))
                  for k in runs[name][0][1].timings}
        forward = float(np.median([r[2] for r in runs[name]]))
        outside = float(np.median([r[0] - r[2] for r in runs[name]]))
        lines.append(
            f"  TorchClassifier {name:13s} {total:7.2f} s  x{medians['lime'] / total:4.2f} vs "
            f"lime; forward {forward:6.2f} s ({forward / total:.1%}), "
            f"{flop * NUM_SAMPLES / forward / 1e9:.0f} GFLOP/s; outside the forward "
            f"{outside:.3f} s ({outside / total:.1%}); model-ready writes "
            f"{stages['model_ready']:.3f} s; everything but the forward / writing the batches "
            f"once = {outside / stages['model_ready']:.2f} (without the segmentation "
            f"{(outside - stages['segmentation']) / stages['model_ready']:.2f}); stages: "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in stages.items()))
        precision = name.partition("+")[0]
        ratio = medians["lime"] / total
        check(f"device_{precision}_speedup", ratio, f"{ratio:.2f}x", model=model_name,
              impl=f"TorchClassifier {name}")
        check("device_outside_forward", outside / total, f"{outside / total:.1%}",
              model=model_name, impl=f"TorchClassifier {name}")
    peaks = conv_peaks()
    at_peak = {k: flop * NUM_SAMPLES / v / 1e9 for k, v in peaks.items()}
    lines.append(
        "  ceiling: one large 3x3 convolution (256 channels, 28x28, batch 32, channels_last) runs "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + "; at those rates the forward alone would take "
        + ", ".join(f"{k} {t:.2f} s (x{medians['lime'] / t:.2f} lime)"
                    for k, t in at_peak.items()))
    if "bf16" in runs:  # only where the CPU has it natively
        amp = agreement(runs["fp32"][0][1], runs["bf16"][0][1])["labels"]
        lines.append("  AMP (bf16) vs fp32, per fp32 top label: top-5 overlap / Spearman: "
                     + ", ".join(f"{label}: {v['top5_overlap']} / "
                                 + ("-" if v["spearman"] is None else f"{v['spearman']:.3f}")
                                 for label, v in amp.items()))
        same_top = runs["fp32"][0][1].top_labels == runs["bf16"][0][1].top_labels
        lines.append(f"  AMP top labels equal to fp32's: {same_top}")
    for name in names:
        if name.startswith("fp32+"):
            frozen = agreement(runs["fp32"][0][1], runs[name][0][1])["labels"]
            lines.append(
                f"  {name} (frozen, batch norms folded) vs fp32: top-5 overlap / Spearman: "
                + ", ".join(f"{label}: {v['top5_overlap']} / {v['spearman']:.4f}"
                            for label, v in frozen.items() if v["spearman"] is not None))
    for line in lines:
        print(line)
        note(line)


def macs_per_image(model, size) -> int:
    """Multiply-adds of the model's convolutions and linear layers for one image."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output[0].numel() * k)
        else:
            macs.append(output[0].numel() * module.in_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros((1, 3) + tuple(size)))
    finally:
        for hook in hooks:
            hook.remove()
    return int(sum(macs))


def conv_peaks() -> dict:
    """GFLOP/s of one compute-bound convolution, fp32 and bf16: what this CPU can reach."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(32, 256, 28, 28).contiguous(memory_format=torch.channels_last)
    flop = 2 * 32 * 28 * 28 * 256 * 256 * 9
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=dtype is not None):
            conv(x)
            best = min(_timed(conv, x) for _ in range(5))
        out[name] = flop / best / 1e9
    return out


def _timed(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="resnet18-224-agreement")
def test_fp32_device_path_agrees_with_lime_on_the_same_classifier(benchmark, setting):
    """lime run with an fp32 TorchClassifier as its classifier_fn against the device path with
    the same classifier: the default one (forwards of 8 images at 224x224; lime's calls of 10
    run as two forwards of 5), and one with batch_size=10 (lime's very batches: its calls of 10
    are the device path's batches of 10). The forward's float32 rounding depends on the batch."""
    clf, image = setting["fp32"], setting["image"]
    kwargs = dict(top_labels=TOP_LABELS, num_samples=NUM_SAMPLES)
    same_batches = TorchClassifier(clf.model, mean=MEAN, std=STD, precision="fp32",
                                   batch_size=10, device="cpu")

    def lime_on(classifier):
        return explain_lime(image, classifier, **kwargs)

    refs = {"default batch": benchmark.pedantic(lime_on, args=(clf,), rounds=1, iterations=1)}
    record("resnet18-224-agreement", "lime with TorchClassifier fp32", benchmark)
    refs["batch_size=10"] = lime_on(same_batches)
    for (label_text, ref), device_clf in zip(refs.items(), (clf, same_batches)):
        ours = explain_limefast(image, device_clf, **kwargs)
        measures = agreement(ref, ours)
        worst, worst_scaled = measures["max_rel_weight_diff"], measures["max_scaled_weight_diff"]
        top10 = all([f for f, _ in ref.local_exp[label][:10]]
                    == [f for f, _ in ours.local_exp[label][:10]] for label in ref.local_exp)
        line = (f"fp32 device path vs lime on the same TorchClassifier ({label_text}): top "
                f"labels equal {ref.top_labels == ours.top_labels}; largest relative difference "
                f"of a weight {worst:.1e} (of the label's largest weight: {worst_scaled:.1e}); "
                f"top-10 feature order equal for every label: {top10}")
        print(line)
        note(line)

