"""Issue 13 target: ResNet-18 224x224 on the CPU, ``TorchClassifier`` (frozen, in the fastest
precision this CPU computes natively: bf16 with AVX512_BF16 or AMX, else fp32) with
``num_samples="auto"``, against lime at 1000 samples with the tutorial classifier.

Both explain the top 5 labels of the photo with their default quickshift. Fidelity: the mean
overlap of each label's top 5 superpixels with a reference explanation of 4000 samples (fp32
``TorchClassifier``, the same segmentation), over ``SEEDS`` seeds, for lime's explanation at
1000 samples (lime itself is timed once; its explanation at the other seeds is limefast's fp32
drop-in at 1000, the same explanation to float rounding) and for limefast's "auto" (each seed
timed; the median is the ratio's).
Run: ``.venv/bin/python -m pytest benchmarks/bench_auto_resnet.py -q -s``
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import pytest

from benchmarks.conftest import note, record
from limefast import TorchClassifier
from limefast.benchsuite.agreement import agreement
from limefast.benchsuite.models import TutorialClassifier, torchvision_model
from limefast.benchsuite.runners import explain_lime, explain_limefast
from limefast.device.features import cpu_features, fastest_cpu_precision
from limefast.imagenet import MEAN, STD
from limefast.lime_image import LimeImageExplainer

pytest.importorskip("torch")
pytest.importorskip("torchvision")

GROUP = "resnet18-224-auto"
SEEDS = 5


def test_resnet18_auto_against_lime_at_1000(photo_224):
    model = torchvision_model("resnet18")
    tutorial = TutorialClassifier(model)
    precision = fastest_cpu_precision()
    fast = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, precision=precision,
                           compile="trace", device="cpu")
    fp32 = TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, device="cpu")
    image = photo_224
    LimeImageExplainer(random_state=0).warmup(image.shape, fast, num_samples=1000)
    # Another seed than the runs measured: a reference sharing their rows would flatter them.
    reference = explain_limefast(image, fp32, random_state=12345, top_labels=5,
                                 num_samples=4000)
    t0 = time.perf_counter()
    ref = explain_lime(image, tutorial, top_labels=5, num_samples=1000, batch_size=10)
    lime_s = time.perf_counter() - t0
    lime_overlaps = [agreement(reference, ref)["top5_overlap"]] + [
        agreement(reference, explain_limefast(image, fp32, random_state=seed, top_labels=5,
                                              num_samples=1000))["top5_overlap"]
        for seed in range(1, SEEDS)]
    lime_overlap = float(np.mean(lime_overlaps))
    record(GROUP, "lime-1000", lime_s)
    # "auto" at its defaults, and with a higher target for lime's fidelity
    for name, kwargs in (("auto", {}), ("auto-0.99", {"target_overlap": 0.99,
                                                      "min_gain": 0.02})):
        runs = []
        for seed in range(SEEDS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                auto = explain_limefast(image, fast, random_state=seed, top_labels=5,
                                        num_samples="auto", dedupe=True, **kwargs)
                runs.append((time.perf_counter() - t0, auto))
        auto_s = float(np.median([t for t, _ in runs]))
        record(GROUP, f"limefast-{precision}-{name}", auto_s)
        auto_overlap = float(np.mean([agreement(reference, a)["top5_overlap"]
                                      for _, a in runs]))
        rows = [a.num_evaluated for _, a in runs]
        reasons = sorted({a.stop_reason for _, a in runs})
        note(f"ResNet-18 224x224 CPU ({cpu_features().describe()}), 5 labels, {SEEDS} seeds: "
             f"lime at 1000 samples {lime_s:.2f} s (mean top-5 overlap with the 4000-sample "
             f"reference {lime_overlap:.3f}); limefast {precision}+trace num_samples='auto' "
             f"{kwargs or 'defaults'} median {auto_s:.2f} s = {lime_s / auto_s:.1f}x, "
             f"{min(rows)}-{max(rows)} images ({', '.join(reasons)}), overlap "
             f"{auto_overlap:.3f} ({auto_overlap - lime_overlap:+.3f})")
