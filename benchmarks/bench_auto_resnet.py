"""Issue 13 target: ResNet-18 224x224 on the CPU, ``TorchClassifier`` bf16 with
``num_samples="auto"``, against lime at 1000 samples with the tutorial classifier.

Both explain the top 5 labels of the photo with their default quickshift. Fidelity: the mean
overlap of each label's top 5 superpixels with a reference explanation of 4000 samples (fp32
``TorchClassifier``, the same segmentation), for lime at 1000 and for limefast's "auto".
Run: ``.venv/bin/python -m pytest benchmarks/bench_auto_resnet.py -q -s``
"""

from __future__ import annotations

import copy
import time
import warnings

import lime.lime_image as lime_ref
import numpy as np
import pytest

from benchmarks.conftest import note, record
from benchmarks.gpu_bench import TutorialClassifier
from limefast import TorchClassifier
from limefast import lime_image as lime_fast
from limefast.imagenet import MEAN, STD

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

lime_ref.tqdm = lambda iterable, *args, **kwargs: iterable  # as bench_device.py
GROUP = "resnet18-224-auto"


def overlap(ref, ours, k=5) -> float:
    values = []
    for label in ref.top_labels:
        a = {f for f, _ in ref.local_exp[label][:k]}
        b = {f for f, _ in ours.local_exp[label][:k]} if label in ours.local_exp else set()
        values.append(len(a & b) / k)
    return float(np.mean(values))


def test_resnet18_bf16_auto_against_lime_at_1000(photo_224):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    tutorial = TutorialClassifier(model)
    bf16 = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, precision="bf16",
                           compile="trace", device="cpu")
    fp32 = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, device="cpu")
    image = photo_224
    explainer = lime_fast.LimeImageExplainer(random_state=0)
    explainer.warmup(image.shape, bf16, num_samples=1000)
    # Another seed than the runs measured: a reference sharing their rows would flatter them.
    reference = lime_fast.LimeImageExplainer(random_state=12345).explain_instance(
        image, fp32, top_labels=5, num_samples=4000, progress_bar=False)
    t0 = time.perf_counter()
    ref = lime_ref.LimeImageExplainer(random_state=0).explain_instance(
        image, tutorial, top_labels=5, num_samples=1000, batch_size=10)
    lime_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        auto = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
            image, bf16, top_labels=5, num_samples="auto", dedupe=True, progress_bar=False)
        auto_s = time.perf_counter() - t0
    record(GROUP, "lime-1000", lime_s)
    record(GROUP, "limefast-bf16-auto", auto_s)
    note(f"ResNet-18 224x224 CPU, 5 labels: lime at 1000 samples {lime_s:.2f} s (top-5 overlap "
         f"with the 4000-sample reference {overlap(reference, ref):.2f}); limefast bf16+trace "
         f"num_samples='auto' {auto_s:.2f} s = {lime_s / auto_s:.1f}x, {auto.num_samples} rows "
         f"({auto.num_evaluated} images, {auto.stop_reason}), overlap "
         f"{overlap(reference, auto):.2f}")
