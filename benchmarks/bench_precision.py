"""Issue 25: what each precision costs on this CPU, and the one the benchmarks pick.

ResNet-18 (torchvision, random weights, seed 0), ``TorchClassifier`` called as lime calls it on
``IMAGES`` perturbed copies of the 224x224 photo (a NumPy batch; forwards of 8), once per
precision the CPU can run (``runnable_precisions``: fp32, bf16 and fp16 autocast), eager and
frozen (``compile="trace"``), alternating, ``ROUNDS`` rounds, medians. Printed with the CPU's
features (``limefast.device.features``): on a CPU without AVX512_BF16/AMX, oneDNN emulates
bf16 and fp16 and both run slower than fp32; ``fastest_cpu_precision()`` is what the other
benchmarks pick. The classifiers are built under ``warnings.catch_warnings`` (the emulated
precisions' ``PerformanceHint`` is what is measured here).
Run: ``.venv/bin/python -m pytest benchmarks/bench_precision.py -q -s``
"""

from __future__ import annotations

import copy
import os
import time
import warnings

import numpy as np
import pytest

from benchmarks.conftest import note, record
from limefast import TorchClassifier
from limefast.benchsuite.models import torchvision_model
from limefast.device.features import cpu_features, fastest_cpu_precision
from limefast.device.options import runnable_precisions
from limefast.imagenet import MEAN, STD

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

IMAGES = int(os.environ.get("LIMEFAST_BENCH_IMAGES", "50"))
ROUNDS = int(os.environ.get("LIMEFAST_BENCH_ROUNDS", "2"))
GROUP = "resnet18-224-precisions"


def test_resnet18_forward_per_precision(photo_224):
    model = torchvision_model("resnet18")
    rng = np.random.RandomState(0)
    batch = np.repeat(photo_224[None], IMAGES, axis=0)
    batch[rng.rand(IMAGES, 224, 224) < 0.5] = 128  # half the pixels grey: perturbed-like
    precisions = list(runnable_precisions(torch, torch.device("cpu")))
    classifiers = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in precisions:
            for compile_mode in (None, "trace"):
                name = precision + ("+trace" if compile_mode else "")
                clf = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, device="cpu",
                                      precision=precision, compile=compile_mode)
                clf(batch[:8])  # the trace, the buffers
                classifiers[name] = clf
        times = {name: [] for name in classifiers}
        for _ in range(ROUNDS):  # alternate, so a loaded machine slows them all alike
            for name, clf in classifiers.items():
                t0 = time.perf_counter()
                clf(batch)
                times[name].append(time.perf_counter() - t0)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    for name, seconds in medians.items():
        record(GROUP, name, seconds)
    cpu = cpu_features()
    lines = [f"ResNet-18 224x224, {IMAGES} images, forwards of 8, {ROUNDS} alternating rounds; "
             f"CPU {cpu.describe()}; torch threads {torch.get_num_threads()}; "
             f"fastest_cpu_precision() = {fastest_cpu_precision()!r}"]
    for name, seconds in medians.items():
        base = medians["fp32+trace" if name.endswith("+trace") else "fp32"]
        lines.append(f"  {name:12s} {seconds:7.2f} s  ({seconds / base:.2f}x fp32's time)")
    for line in lines:
        print(line)
        note(line)
    assert set(medians) >= {"fp32", "fp32+trace"}
