"""Issue 4 targets: ``TorchClassifier`` (the device path) against lime with a tutorial classifier.

ResNet-18 (torchvision, random weights, seed 0) on a 224x224 photo, 1000 samples, 5 labels, the
default quickshift segmentation computed by each explainer (end to end). The reference is lime
0.2.0.1 with the classifier of lime's PyTorch tutorial: per-image torchvision transforms
(ToTensor + Normalize) in a Python loop, ``batch_size=10``, fp32, NCHW, ``torch.no_grad``.
limefast runs ``TorchClassifier(precision="fp32")`` and ``precision="bf16"`` (autocast), and
the same with ``compile="inductor"``, all warmed up with ``explainer.warmup``. They are run
alternately, round after round, in this process; the ratios are of their medians.

Printed: the speed-ups, the fraction of limefast's time in the model's forward, everything but
the forward against the time of writing the model-ready batches once, the agreement of the
fp32 device path with lime run on the same ``TorchClassifier``, and the AMP agreement (bf16
against fp32: per label, the overlap of the top-5 features and the Spearman correlation of the
weights). Run: ``.venv/bin/python -m pytest benchmarks/bench_device.py --benchmark-only -q -s``
"""

from __future__ import annotations

import copy
import os
import time

import lime.lime_image as lime_ref
import numpy as np
import pytest

from benchmarks.bench_util import max_relative_difference
from benchmarks.conftest import note, record
from benchmarks.gpu_bench import TutorialClassifier, agreement
from limefast import TorchClassifier
from limefast import lime_image as lime_fast

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# lime 0.2.0.1 always draws a progress bar over the samples (benchmarks/README.md, rule 8):
# measure lime without it. tqdm reads TQDM_DISABLE when it is imported, too early here.
lime_ref.tqdm = lambda iterable, *args, **kwargs: iterable

NUM_SAMPLES = 1000
TOP_LABELS = 5
ROUNDS = int(os.environ.get("LIMEFAST_BENCH_ROUNDS", "2"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GROUP = "resnet18-224-end-to-end"


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def setting(photo_224):
    reference_model = resnet18()
    fp32 = TorchClassifier(copy.deepcopy(reference_model), mean=MEAN, std=STD,
                           precision="fp32")
    bf16 = TorchClassifier(copy.deepcopy(reference_model), mean=MEAN, std=STD,
                           precision="bf16")
    extra = {f"{p}+inductor": TorchClassifier(copy.deepcopy(reference_model), mean=MEAN,
                                              std=STD, precision=p, compile="inductor")
             for p in ("fp32", "bf16")}
    return {"image": photo_224, "tutorial": TutorialClassifier(reference_model), "fp32": fp32,
            "bf16": bf16, **extra}


def _run_lime(setting):
    tutorial = setting["tutorial"]
    tutorial.forward_seconds = 0.0
    t0 = time.perf_counter()
    explanation = lime_ref.LimeImageExplainer(random_state=0).explain_instance(
        setting["image"], tutorial, top_labels=TOP_LABELS, num_samples=NUM_SAMPLES,
        batch_size=10)
    return time.perf_counter() - t0, explanation, tutorial.forward_seconds


def _run_limefast(setting, name):
    explainer = lime_fast.LimeImageExplainer(random_state=0)
    t0 = time.perf_counter()
    explanation = explainer.explain_instance(setting["image"], setting[name],
                                             top_labels=TOP_LABELS, num_samples=NUM_SAMPLES,
                                             progress_bar=False)
    return time.perf_counter() - t0, explanation, explanation.timings["forward"]


@pytest.mark.benchmark(group=GROUP)
def test_resnet18_lime_vs_torch_classifier(benchmark, setting):
    image = setting["image"]
    names = ("fp32", "bf16", "fp32+inductor", "bf16+inductor")
    for name in names:  # kernels, buffers, both batch shapes (and inductor's compilations)
        lime_fast.LimeImageExplainer(random_state=0).warmup(image.shape, setting[name],
                                                            num_samples=NUM_SAMPLES)
    runs = {name: [] for name in ("lime",) + names}

    def one_round():  # alternate, so a loaded machine slows them all alike
        runs["lime"].append(_run_lime(setting))
        for name in names:
            runs[name].append(_run_limefast(setting, name))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    medians = {k: float(np.median([r[0] for r in v])) for k, v in runs.items()}
    record(GROUP, "lime", medians["lime"])
    for name in names:
        record(GROUP, f"TorchClassifier {name}", medians[name])
    benchmark.extra_info.update({f"{k}_median_s": v for k, v in medians.items()})

    lines = [f"ResNet-18 224x224, {NUM_SAMPLES} samples, {TOP_LABELS} labels, {ROUNDS} "
             f"alternating rounds; amx_bf16 units: {_amx()}; torch threads "
             f"{torch.get_num_threads()}"]
    lime_fwd = float(np.median([r[2] for r in runs["lime"]]))
    lines.append(f"  lime (tutorial classifier)  {medians['lime']:7.2f} s  forward "
                 f"{lime_fwd:6.2f} s ({lime_fwd / medians['lime']:.0%})")
    for name in names:
        # Medians over the rounds of every figure: one preempted stage does not decide a ratio.
        total = medians[name]
        stages = {k: float(np.median([r[1].timings[k] for r in runs[name]]))
                  for k in runs[name][0][1].timings}
        forward = float(np.median([r[2] for r in runs[name]]))
        outside = float(np.median([r[0] - r[2] for r in runs[name]]))
        lines.append(
            f"  TorchClassifier {name:13s} {total:7.2f} s  x{medians['lime'] / total:4.2f} vs "
            f"lime; forward {forward:6.2f} s ({forward / total:.1%}); outside the forward "
            f"{outside:.3f} s ({outside / total:.1%}); model-ready writes "
            f"{stages['model_ready']:.3f} s; everything but the forward / writing the batches "
            f"once = {outside / stages['model_ready']:.2f} (without the segmentation "
            f"{(outside - stages['segmentation']) / stages['model_ready']:.2f}); stages: "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in stages.items()))
    amp = agreement(runs["fp32"][0][1], runs["bf16"][0][1])
    lines.append("  AMP (bf16) vs fp32, per fp32 top label: top-5 overlap / Spearman: " + ", ".join(
        f"{label}: {v['top5_overlap']} / "
        + ("-" if v["spearman"] is None else f"{v['spearman']:.3f}") for label, v in amp.items()))
    same_top = runs["fp32"][0][1].top_labels == runs["bf16"][0][1].top_labels
    lines.append(f"  AMP top labels equal to fp32's: {same_top}")
    frozen = agreement(runs["fp32"][0][1], runs["fp32+inductor"][0][1])
    lines.append("  fp32+inductor (frozen, batch norms folded) vs fp32: top-5 overlap / Spearman: "
                 + ", ".join(f"{label}: {v['top5_overlap']} / {v['spearman']:.4f}"
                             for label, v in frozen.items() if v["spearman"] is not None))
    for line in lines:
        print(line)
        note(line)


@pytest.mark.benchmark(group="resnet18-224-agreement")
def test_fp32_device_path_agrees_with_lime_on_the_same_classifier(benchmark, setting):
    """lime run with the fp32 TorchClassifier as its classifier_fn against the device path."""
    clf, image = setting["fp32"], setting["image"]
    kwargs = dict(top_labels=TOP_LABELS, num_samples=NUM_SAMPLES)

    def lime_on_torch_classifier():
        return lime_ref.LimeImageExplainer(random_state=0).explain_instance(image, clf, **kwargs)

    ref = benchmark.pedantic(lime_on_torch_classifier, rounds=1, iterations=1)
    record("resnet18-224-agreement", "lime with TorchClassifier fp32", benchmark)
    # The default batch (32 images per forward) against lime's 10: the forward's float32
    # rounding differs with the batch; batch_size=10 gives the device path lime's very batches.
    same_batches = TorchClassifier(clf.model, mean=MEAN, std=STD, precision="fp32",
                                   batch_size=10)
    for label_text, device_clf in (("default batch", clf), ("batch_size=10", same_batches)):
        ours = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
            image, device_clf, progress_bar=False, **kwargs)
        worst = max_relative_difference(ref, ours)
        worst_scaled = max(
            max(abs(w - dict(ours.local_exp[label])[f]) for f, w in exp)
            / max(abs(w) for _, w in exp) for label, exp in ref.local_exp.items())
        top10 = all([f for f, _ in ref.local_exp[label][:10]]
                    == [f for f, _ in ours.local_exp[label][:10]] for label in ref.local_exp)
        line = (f"fp32 device path ({label_text}) vs lime on the same TorchClassifier: top "
                f"labels equal {ref.top_labels == ours.top_labels}; largest relative difference "
                f"of a weight {worst:.1e} (of the label's largest weight: {worst_scaled:.1e}); "
                f"top-10 feature order equal for every label: {top10}")
        print(line)
        note(line)


def _amx() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "unknown"
    return "yes" if "amx_bf16" in flags else "no (avx512_bf16 only)" if (
        "avx512_bf16" in flags) else "no"
