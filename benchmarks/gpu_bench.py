"""The device path on a GPU: ResNet-18 and ResNet-50, fp32 and fp16, against lime. Writes JSON.

    python benchmarks/gpu_bench.py OUT.json [--rounds 3] [--samples 1000] [--size 224]
                                            [--cuda-graph] [--compile none|trace|inductor]

For each model (torchvision, random weights, seed 0) on a 224x224 photo with 5 labels and the
default quickshift segmentation: lime 0.2.0.1 with lime's tutorial classifier on the GPU
(per-image transforms, ``batch_size=10``, fp32) and ``TorchClassifier(device="cuda")`` in fp32
and fp16, warmed up, run alternately for ``--rounds`` rounds. Recorded per run: wall time, the
stages (forward and model-ready writes from CUDA events), the fraction of the time in the
forward (of the whole explanation, and of everything after the host's segmentation), and the
AMP agreement (fp16 against fp32: per label, top-5 overlap and Spearman correlation).

Exits with status 0 and a message when no CUDA GPU (or no numba CUDA) is usable.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np

from limefast.benchsuite import machine
from limefast.benchsuite.agreement import agreement
from limefast.benchsuite.inputs import photo
from limefast.benchsuite.models import TutorialClassifier, torchvision_model
from limefast.benchsuite.runners import explain_lime, explain_limefast
from limefast.imagenet import MEAN, STD
from limefast.optional import available


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the JSON report")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--cuda-graph", action="store_true", help="capture the forward")
    parser.add_argument("--compile", choices=("none", "trace", "inductor"), default="none",
                        help="TorchClassifier compile mode of limefast's runs")
    parser.add_argument("--device", default="cuda",
                        help="cuda, or cpu to dry-run this script where there is no GPU "
                             "(fp32, and bf16 where the CPU has it natively)")
    args = parser.parse_args(argv)

    import torch

    on_gpu = args.device != "cpu"
    if on_gpu and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU is visible to PyTorch; nothing to measure (run it where "
              "one is). No JSON written.")
        return 0
    from numba import cuda

    if on_gpu and not cuda.is_available():
        print("gpu_bench: numba.cuda finds no usable driver/toolkit (pip install "
              "'limefast[cuda]'); nothing to measure. No JSON written.")
        return 0
    with_lime = available("lime")  # the GPU machine may lack it: `make gpu-wheels` fetches it
    if not with_lime:
        print("gpu_bench: lime is not installed; the comparison with lime is skipped "
              "(make gpu-wheels on a CPU machine, then make gpu-check)")
    from limefast import TorchClassifier
    from limefast.device.features import fastest_cpu_precision
    from limefast.lime_image import LimeImageExplainer

    device = args.device
    # On a CPU, bf16 only where it is native (emulated, it is slower than fp32).
    precisions = ("fp32", "fp16") if on_gpu else tuple(dict.fromkeys(
        ("fp32", fastest_cpu_precision())))
    half = precisions[1] if len(precisions) > 1 else None
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    image = photo(args.size)
    report = {"machine": machine(), "device": device, "samples": args.samples,
              "size": args.size, "lime": with_lime,
              "rounds": args.rounds, "top_labels": 5, "cuda_graph": args.cuda_graph,
              "compile": args.compile,
              "models": {}}
    for arch in args.models.split(","):
        model = torchvision_model(arch, device=device)
        tutorial = TutorialClassifier(copy.deepcopy(model), device=device)
        clfs = {p: TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, device=device,
                                   precision=p, cuda_graph=args.cuda_graph and on_gpu,
                                   compile=None if args.compile == "none" else args.compile)
                for p in precisions}
        for clf in clfs.values():
            LimeImageExplainer(random_state=0).warmup(image.shape, clf, num_samples=args.samples)
        runs = {name: [] for name in (("lime",) if with_lime else ()) + precisions}
        explanations = {}
        for _ in range(args.rounds):
            if with_lime:
                tutorial.forward_seconds = 0.0
                t0 = time.perf_counter()
                explanations["lime"] = explain_lime(image, tutorial, top_labels=5,
                                                    num_samples=args.samples, batch_size=10)
                runs["lime"].append({"seconds": time.perf_counter() - t0,
                                     "forward": tutorial.forward_seconds})
            for name, clf in clfs.items():
                sync()
                t0 = time.perf_counter()
                e = explain_limefast(image, clf, top_labels=5, num_samples=args.samples)
                sync()
                seconds = time.perf_counter() - t0
                explanations[name] = e
                t = dict(e.timings)
                runs[name].append({
                    "seconds": seconds, "stages": t,
                    "forward_fraction": t["forward"] / seconds,
                    "forward_fraction_after_segmentation":
                        t["forward"] / max(1e-12, seconds - t["segmentation"]),
                })
        entry = {"runs": runs,
                 "median_seconds": {k: float(np.median([r["seconds"] for r in v]))
                                    for k, v in runs.items()},
                 "batch_size": clfs["fp32"].batch_for(image.shape)}
        if half:
            entry[f"amp_agreement_{half}_vs_fp32"] = agreement(explanations["fp32"],
                                                               explanations[half])
        med = entry["median_seconds"]
        fractions = {k: float(np.median([r["forward_fraction"] for r in runs[k]]))
                     for k in precisions}
        entry["forward_fraction"] = fractions
        line = f"{arch}: " + ", ".join(f"{k} {med[k]:.3f} s" for k in precisions)
        if with_lime:
            entry["fp32_vs_lime_tutorial"] = agreement(explanations["lime"], explanations["fp32"])
            entry["speedup_vs_lime"] = {k: med["lime"] / med[k] for k in precisions}
            line += f"; lime {med['lime']:.2f} s, speed-up " + ", ".join(
                f"{k} x{v:.1f}" for k, v in entry["speedup_vs_lime"].items())
        report["models"][arch] = entry
        print(f"{line}; forward fraction {fractions}")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2, default=float)
    print(f"gpu_bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
