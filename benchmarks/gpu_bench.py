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
import os
import platform
import sys
import time

import numpy as np

from limefast.imagenet import MEAN, STD


class TutorialClassifier:
    """lime's PyTorch tutorial classifier: per-image ToTensor + Normalize, a stacked batch,
    fp32 NCHW under ``torch.no_grad``, softmax, back to NumPy. Counts its forward seconds."""

    def __init__(self, model, device="cpu"):
        import torch
        from torchvision import transforms

        self.torch = torch
        self.model = model
        self.device = device
        self.preprocess = transforms.Compose([transforms.ToTensor(),
                                              transforms.Normalize(mean=MEAN, std=STD)])
        self.forward_seconds = 0.0

    def __call__(self, images):
        torch = self.torch
        self.model.eval()
        batch = torch.stack(tuple(self.preprocess(i) for i in images), dim=0).to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(batch)
        if self.device != "cpu":
            torch.cuda.synchronize()
        self.forward_seconds += time.perf_counter() - t0
        probs = torch.nn.functional.softmax(logits, dim=1)
        return probs.detach().cpu().numpy()


def agreement(a, b) -> dict:
    """Per top label of ``a``: {'top5_overlap', 'spearman'} of ``b``'s weights against ``a``'s."""
    from scipy.stats import spearmanr

    out = {}
    for label in a.top_labels:
        if label not in b.local_exp:
            out[int(label)] = {"top5_overlap": None, "spearman": None}
            continue
        wa, wb = dict(a.local_exp[label]), dict(b.local_exp[label])
        top_a = {f for f, _ in a.local_exp[label][:5]}
        top_b = {f for f, _ in b.local_exp[label][:5]}
        features = sorted(wa)
        rho = spearmanr([wa[f] for f in features], [wb[f] for f in features])[0]
        out[int(label)] = {"top5_overlap": len(top_a & top_b) / 5, "spearman": float(rho)}
    return out


def _machine(torch) -> dict:
    import numba

    info = {"python": platform.python_version(), "processor": platform.processor(),
            "cores": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_capability"] = list(torch.cuda.get_device_capability(0))
    return info


def _photo(size: int) -> np.ndarray:
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (size, size, 3), anti_aliasing=True)
    return (image * 255).round().astype(np.uint8)


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
                             "(precisions fp32 and bf16 then)")
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
    try:
        import lime.lime_image as lime_ref
    except ImportError:  # the GPU machine may lack it: `make gpu-wheels` fetches a wheel
        lime_ref = None
        print("gpu_bench: lime is not installed; the comparison with lime is skipped "
              "(make gpu-wheels on a CPU machine, then make gpu-check)")
    import torchvision

    from limefast import TorchClassifier
    from limefast import lime_image as lime_fast

    if lime_ref is not None:
        lime_ref.tqdm = lambda iterable, *a, **k: iterable  # measure lime without its bar
    device = args.device
    precisions = ("fp32", "fp16") if on_gpu else ("fp32", "bf16")
    half = precisions[1]
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    image = _photo(args.size)
    report = {"machine": _machine(torch), "device": device, "samples": args.samples,
              "size": args.size, "lime": lime_ref is not None,
              "rounds": args.rounds, "top_labels": 5, "cuda_graph": args.cuda_graph,
              "compile": args.compile,
              "models": {}}
    for arch in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
        tutorial = TutorialClassifier(copy.deepcopy(model), device=device)
        clfs = {p: TorchClassifier(copy.deepcopy(model), mean=MEAN, std=STD, device=device,
                                   precision=p, cuda_graph=args.cuda_graph and on_gpu,
                                   compile=None if args.compile == "none" else args.compile)
                for p in precisions}
        for clf in clfs.values():
            lime_fast.LimeImageExplainer(random_state=0).warmup(image.shape, clf,
                                                                num_samples=args.samples)
        runs = {name: [] for name in (("lime",) if lime_ref else ()) + precisions}
        explanations = {}
        for _ in range(args.rounds):
            if lime_ref is not None:
                tutorial.forward_seconds = 0.0
                t0 = time.perf_counter()
                explanations["lime"] = lime_ref.LimeImageExplainer(
                    random_state=0).explain_instance(image, tutorial, top_labels=5,
                                                     num_samples=args.samples, batch_size=10)
                runs["lime"].append({"seconds": time.perf_counter() - t0,
                                     "forward": tutorial.forward_seconds})
            for name, clf in clfs.items():
                sync()
                t0 = time.perf_counter()
                e = lime_fast.LimeImageExplainer(random_state=0).explain_instance(
                    image, clf, top_labels=5, num_samples=args.samples, progress_bar=False)
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
                 f"amp_agreement_{half}_vs_fp32": agreement(explanations["fp32"],
                                                            explanations[half]),
                 "batch_size": clfs["fp32"].batch_for(image.shape)}
        med = entry["median_seconds"]
        fractions = {k: float(np.median([r["forward_fraction"] for r in runs[k]]))
                     for k in precisions}
        entry["forward_fraction"] = fractions
        line = f"{arch}: " + ", ".join(f"{k} {med[k]:.3f} s" for k in precisions)
        if lime_ref is not None:
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
