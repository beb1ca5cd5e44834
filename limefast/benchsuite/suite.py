"""The sections of ``limefast bench``: end to end, scaling sweeps, models, latency, agreement.

Each section returns plain dicts (JSON-ready). The reference (lime 0.2.0.1) and limefast run on
the same inputs in the same process, alternating, after a warm-up call that compiles kernels.
Grid segmentations are used where the superpixel count must be exact (the sweeps); the end-to-end
section uses each implementation's own default quickshift.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from limefast.imagenet import MEAN, STD
from limefast.optional import available

from .agreement import agreement
from .inputs import grid_segments, lime_segments, limefast_segments, photo
from .models import GridModel, TutorialClassifier, torchvision_model
from .runners import Run, run_captum, run_lime, run_limefast


@dataclass
class Config:
    """Sizes of one suite run; ``quick()`` fits in two minutes on a 2-core machine."""

    side: int = 224
    num_samples: int = 1000
    labels: int = 5
    repeats: int = 3
    sides: tuple = (128, 256, 512, 1024)
    samples: tuple = (250, 500, 1000, 2000, 4000, 8000)
    superpixels: tuple = (25, 50, 100, 200, 400)
    label_counts: tuple = (1, 2, 5, 10, 20)
    batch_images: tuple = (1, 4, 16, 64)
    lime_max_work: float = 4e11  # skip lime where samples x pixels x superpixels exceeds this
    models: tuple = ("resnet18", "resnet50")
    model_side: int = 224
    model_samples: int = 1000
    latency_repeats: int = 50

    @classmethod
    def quick(cls) -> Config:
        return cls(num_samples=300, repeats=1, sides=(64, 128, 256), samples=(100, 200, 400),
                   superpixels=(16, 36, 64), label_counts=(1, 4, 10), batch_images=(1, 4, 8),
                   lime_max_work=1e10, models=("resnet18",), model_side=64, model_samples=60,
                   latency_repeats=15)


# -- helpers ----------------------------------------------------------------------------------
def _median_run(fn, repeats: int) -> Run:
    runs = [fn() for _ in range(max(1, repeats))]
    runs.sort(key=lambda r: r.total)
    return runs[len(runs) // 2]


def _record(run: Run, **extra) -> dict:
    return {"impl": run.name, "seconds": run.total, "stages": run.stages, **extra}


# -- sections ---------------------------------------------------------------------------------
def end_to_end(cfg: Config) -> list[dict]:
    """Default quickshift, cheap model: lime, captum (same superpixels), limefast CPU."""
    image, model = photo(cfg.side), GridModel()
    seg = limefast_segments(image)
    kw = dict(num_samples=cfg.num_samples, top_labels=cfg.labels)
    run_limefast(image, seg, model, num_samples=50, top_labels=cfg.labels)  # warm-up
    fast = _median_run(lambda: run_limefast(image, None, model,
                                            segmentation_fn=limefast_segments, **kw),
                       cfg.repeats * 3)
    ref = _median_run(lambda: run_lime(image, None, model, segmentation_fn=lime_segments, **kw),
                      cfg.repeats)
    out = [_record(ref), _record(fast, **agreement(ref, fast))]
    if available("captum", "torch"):
        cap = run_captum(image, seg, model.torch_forward, labels=fast.top_labels, **kw)
        out.append(_record(cap))
    else:
        out.append({"impl": "captum", "skipped": "captum is not installed"})
    return out


def scaling(cfg: Config, progress=None) -> dict:
    """How cost grows with each parameter, the others at their defaults (grid segments)."""
    model = GridModel(n_classes=max(cfg.label_counts) + 5)
    base = dict(side=cfg.side, samples=cfg.num_samples, superpixels=100, labels=cfg.labels,
                images=1)
    sweeps = {"side": cfg.sides, "samples": cfg.samples, "superpixels": cfg.superpixels,
              "labels": cfg.label_counts, "images": cfg.batch_images}
    results = {}
    for param, values in sweeps.items():
        points = []
        for value in values:
            p = {**base, param: value}
            if param == "images":
                p["side"] = min(p["side"], 128)
            image, seg = photo(p["side"]), grid_segments(p["side"], p["superpixels"])
            images = [image] * p["images"] if param == "images" else None
            kw = dict(num_samples=p["samples"], top_labels=p["labels"], images=images)
            run_limefast(image, seg, model, **{**kw, "num_samples": 20})  # warm-up
            point = {"value": value,
                     "limefast": _record(_median_run(
                         partial(run_limefast, image, seg, model, **kw), cfg.repeats))}
            work = p["samples"] * p["side"] ** 2 * p["superpixels"] * p["images"]
            if work <= cfg.lime_max_work:
                point["lime"] = _record(run_lime(image, seg, model, **kw))
            points.append(point)
            if progress:
                progress(f"scaling {param}={value}")
        results[param] = points
    return results


def models(cfg: Config, progress=None) -> list[dict]:
    """Real CNNs (random weights): lime with a tutorial-style classifier, limefast CPU with the
    same classifier, limefast's device path in fp32 and in the fastest precision this CPU
    computes natively if another (``fastest_cpu_precision``: bf16 with AVX512_BF16 or AMX),
    eager and frozen TorchScript, captum."""
    if not available("torch", "torchvision"):
        return [{"skipped": "torch/torchvision not installed (pip install limefast[torch])"}]
    from limefast import TorchClassifier
    from limefast.device.features import fastest_cpu_precision
    from limefast.lime_image import LimeImageExplainer

    out = []
    precisions = tuple(dict.fromkeys(("fp32", fastest_cpu_precision())))
    image = photo(cfg.model_side)
    seg = limefast_segments(image)
    kw = dict(num_samples=cfg.model_samples, top_labels=cfg.labels)
    for name in cfg.models:
        net = torchvision_model(name)
        tutorial = TutorialClassifier(net)
        ref = run_lime(image, seg, tutorial, **kw)
        rows = [_record(ref, model=name)]
        cpu = run_limefast(image, seg, tutorial, name="limefast-cpu", **kw)
        rows.append(_record(cpu, model=name, **agreement(ref, cpu)))
        for precision, compile_mode in itertools.product(precisions, (None, "trace")):
            clf = TorchClassifier(net, mean=MEAN, std=STD, precision=precision, device="cpu",
                                  compile=compile_mode)
            # Every batch shape of the timed run: kernels, buffers and traces outside it.
            LimeImageExplainer(random_state=0).warmup(image.shape, clf,
                                                      num_samples=cfg.model_samples)
            impl = f"limefast-device-{precision}" + (f"-{compile_mode}" if compile_mode else "")
            dev = run_limefast(image, seg, clf, name=impl, **kw)
            rows.append(_record(dev, model=name, **agreement(ref, dev)))
        out += rows
        if progress:
            progress(f"model {name}")
    return out



def latency(cfg: Config) -> dict:
    """p50 / p99 of repeated single explanations at a fixed budget (cheap model, 224x224,
    segments given): what a service sees per request."""
    image, model = photo(cfg.side), GridModel()
    seg = grid_segments(cfg.side, 100)
    kw = dict(num_samples=cfg.num_samples, top_labels=cfg.labels)
    run_limefast(image, seg, model, **kw)
    times = []
    for _ in range(cfg.latency_repeats):
        t0 = time.perf_counter()
        run_limefast(image, seg, model, **kw)
        times.append(time.perf_counter() - t0)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "repeats": len(times), "side": cfg.side, "num_samples": cfg.num_samples}
