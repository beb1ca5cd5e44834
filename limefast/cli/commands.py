"""The ``limefast`` command line: explain image files, and compare LIME with Grad-CAM.

``limefast explain IMAGE... --model resnet18 --out DIR`` writes, per image and model, a PNG per
top label (the image, the superpixels for and against the label, the weight heatmap) and a JSON
file with the weights, intercepts, scores and top labels (``--method kernelshap``: Shapley
values, with their base values). ``limefast compare`` draws LIME (and KernelSHAP) and Grad-CAM
side by side for one or more models, with their deletion and insertion areas.

This module is the parser and the subcommand registry; ``steps`` holds what the subcommands
share, ``explain`` and ``compare`` what each writes, and ``inputs`` the images, models and
output folder.

Bad input (unknown model, unreadable image, weights that do not fit, an output folder that cannot
be written) is one line on stderr and exit status 2, with nothing written.

Subcommands: each entry of ``SUBCOMMANDS`` is a function ``add_parser(subparsers)`` (or a
``"module:function"`` string naming one, imported when the parser is built) that adds one
subparser and sets ``func`` (args -> exit status) with ``set_defaults``. Adding ``bench`` is one
more entry.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from limefast.cli.arguments import auto_arguments, count_or_auto, positive_int, seconds, triple
from limefast.cli.compare import run_compare
from limefast.cli.detect import METHODS as TASK_METHODS
from limefast.cli.detect import task_arguments
from limefast.cli.explain import run_explain
from limefast.cli.inputs import InputError
from limefast.cli.steps import METHODS, PLAIN_BATCH
from limefast.segmentation import SEGMENTATIONS

__all__ = ["METHODS", "PLAIN_BATCH", "SEGMENTATIONS", "SUBCOMMANDS", "build_parser", "main",
           "model_arguments"]


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the usage too), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, num_samples=1000) -> None:
    """Arguments explain and compare share: images, models and how LIME runs."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    model_arguments(p, num_samples)


def model_arguments(p: argparse.ArgumentParser, num_samples=1000) -> None:
    """The models and how LIME runs: the flags of every subcommand that explains (explain,
    compare, serve); ``num_samples`` is ``--num-samples``' default (explain: "auto")."""
    p.add_argument("--model", action="append", required=True, metavar="NAME|module:factory",
                   help="a torchvision classification model (resnet18, ...) or module:factory "
                        "returning a torch module or a classifier function; repeat to explain "
                        "the same images with several models")
    p.add_argument("--weights", action="append", metavar="FILE|DEFAULT",
                   help="a state-dict file, or DEFAULT for torchvision's pretrained weights; "
                        "once per --model, in the same order (default: random weights)")
    p.add_argument("--num-samples", type=count_or_auto, default=num_samples,
                   metavar="N|auto",
                   help="perturbed images per explanation, or auto: rounds until the top "
                        "superpixels settle or more rows stop paying, never more than 1000 "
                        "(KernelSHAP too) unless --max-samples says more; pass 1000 for "
                        f"lime's explanation (default {num_samples})")
    p.add_argument("--max-samples", type=positive_int, default=None,
                   help="the most rows --num-samples auto may take")
    p.add_argument("--time-budget", type=seconds, default=None, metavar="SECONDS",
                   help="stop each explanation's rounds when the next would not fit")
    p.add_argument("--dedupe", action="store_true",
                   help="evaluate each distinct perturbed image once (deterministic models)")
    p.add_argument("--batch-size", type=count_or_auto, default=None, metavar="N|auto",
                   help="perturbed images per model call, or auto (default: the "
                        "TorchClassifier's choice for torch models, "
                        f"{PLAIN_BATCH} for classifier functions)")
    p.add_argument("--segmentation", choices=sorted(SEGMENTATIONS), default="quickshift",
                   help="the superpixels (default quickshift, lime's; explain --task "
                        "detection with --model shapes: slic)")
    p.add_argument("--size", type=int, default=224,
                   help="the images' side: SIZE x SIZE (0: as they are; default 224, and for "
                        "explain --task detection|segmentation the model's own side or 0)")
    p.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                   help="crop: scale the shorter side to SIZE and crop the centre (the default); "
                        "stretch: scale each axis to SIZE")
    p.add_argument("--device", default=None, help="torch device (default: the TorchClassifier's)")
    p.add_argument("--precision", default="auto", help="TorchClassifier precision")
    p.add_argument("--compile", choices=("none", "trace", "script", "inductor"), default="none",
                   help="TorchClassifier compile mode (trace: frozen TorchScript, the fastest "
                        "on a CPU without a C++ compiler at run time)")
    p.add_argument("--mean", type=triple, default=None,
                   help="input normalisation mean, e.g. 0.485,0.456,0.406 (ImageNet's default)")
    p.add_argument("--std", type=triple, default=None, help="input normalisation std")
    p.add_argument("--seed", type=int, default=0, help="random seed of LIME and random weights")
    p.add_argument("--coverage", type=float, default=0.05,
                   help="share of the image tinted for each sign (default 0.05)")


def add_explain(subparsers) -> None:
    p = subparsers.add_parser("explain", help="LIME or KernelSHAP explanations of images: "
                                              "PNGs and JSON",
                              description="Explain each image's top labels with LIME (or "
                                          "Shapley values, --method kernelshap).")
    _common(p, num_samples="auto")
    auto_arguments(p)
    p.add_argument("--method", choices=sorted(TASK_METHODS), default="lime",
                   help="lime (default) or kernelshap: Shapley values over the superpixels, "
                        "exact when every coalition fits in --num-samples; drise (--task "
                        "detection or segmentation): D-RISE's random masks")
    p.add_argument("--top-labels", type=positive_int, default=None,
                   help="the labels explained, most probable first (default 5; a classifier's)")
    task_arguments(p)
    # --size: 224 for classifiers; detectors and segmenters take the image as it is (or the
    # side their model takes). --segmentation: quickshift, or what suits the model's images.
    p.set_defaults(func=run_explain, size=None, segmentation=None)


def add_compare(subparsers) -> None:
    p = subparsers.add_parser("compare", help="LIME (and KernelSHAP) beside Grad-CAM, for "
                                              "one or more models",
                              description="Draw LIME (or the --method's) and Grad-CAM of each "
                                          "model's top label side by side, with "
                                          "deletion/insertion areas.")
    _common(p)
    p.add_argument("--method", choices=sorted(METHODS), action="append", default=None,
                   help="an explainer to show beside Grad-CAM; give it twice (--method lime "
                        "--method kernelshap) for both (default: lime)")
    p.add_argument("--target-layer", default=None,
                   help="Grad-CAM layer, by dotted name (default: last convolutional block)")
    p.add_argument("--steps", type=positive_int, default=20,
                   help="steps of the deletion and insertion curves (default 20)")
    p.set_defaults(func=run_compare)


SUBCOMMANDS: list = [add_explain, add_compare, "limefast.benchsuite:add_parser",
                     "limefast.dataset.command:add_parser", "limefast.serve.command:add_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="limefast", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in SUBCOMMANDS:
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
        entry(subparsers)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``limefast`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"limefast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"limefast {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, unless asked for the traceback
        if os.environ.get("LIMEFAST_TRACEBACK"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"limefast {args.command}: failed: {type(exc).__name__}: {first} (nothing written; "
              "LIMEFAST_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1
