"""``limefast explain-dataset SOURCE --model MODULE:FACTORY --output DIR``: explain a folder of
images on Ray (local mode on this machine, or a cluster with ``--address`` / ``RAY_ADDRESS``).

``add_parser(subparsers)`` registers the subcommand on an argparse subparsers object and
``run(args)`` runs it; ``python -m limefast.dataset.command`` runs it alone. Ray is imported only
when the command runs, so ``limefast --help`` works without the ``dataset`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys

from limefast.cli.arguments import auto_arguments, count_or_auto, positive_int, seconds
from limefast.cli.detect import task_arguments


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``explain-dataset`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    Returns:
        The subcommand's parser; its ``func`` default is ``run``.
    """
    p = subparsers.add_parser(
        "explain-dataset",
        help="explain every image of a folder on Ray (needs limefast[dataset])",
        description="Explain every image of a folder on Ray: in local mode on this machine, or "
                    "on a cluster with --address or RAY_ADDRESS. Rows go to Parquet files in "
                    "--output; running the same command again resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("source", help="folder of images (searched recursively)")
    p.add_argument("--model", required=True, metavar="MODULE:FACTORY",
                   help="callable with no arguments returning the classifier (e.g. a "
                        "TorchClassifier), as module:name or file.py:name; with --task "
                        "detection|segmentation, a model as limefast explain names it: shapes, "
                        "a torchvision detection or segmentation model, or module:factory")
    p.add_argument("--output", required=True, help="folder (or URI) for the Parquet rows")
    p.add_argument("--num-samples", type=count_or_auto, default="auto", metavar="N|auto",
                   help="perturbed images per image, or auto: rounds until the top "
                        "superpixels settle or more rows stop paying, never more than 1000 "
                        "(lime's default; pass 1000 for lime's explanation)")
    p.add_argument("--time-budget", type=seconds, default=None, metavar="SECONDS",
                   help="stop each image's rounds when the next would not fit")
    auto_arguments(p)
    p.add_argument("--dedupe", action="store_true",
                   help="evaluate each distinct perturbed image once (deterministic models)")
    p.add_argument("--top-labels", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segmentation", choices=("quickshift", "slic", "felzenszwalb"),
                   default=None, help="default: lime's quickshift")
    p.add_argument("--image-size", type=_size, default=None, metavar="H[,W]",
                   help="resize images to H x W (default: keep their size)")
    p.add_argument("--resize", choices=("stretch", "crop"), default="stretch",
                   help="how --image-size is reached: scale each axis, or scale to cover and "
                        "crop the centre")
    p.add_argument("--batch-images", type=positive_int, default=8,
                   help="images per task and part file")
    p.add_argument("--model-batch-size", type=positive_int, default=10,
                   help="images per classifier call")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="number of workers (default: as many as the GPUs or CPUs allow)")
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--max-retries", type=int, default=3,
                   help="worker deaths on one image before it is recorded as an error")
    p.add_argument("--overlays", action="store_true", help="also write an overlay PNG per image")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--method", choices=("drise", "kernelshap", "lime"), default="lime",
                   help="--task detection|segmentation: lime, kernelshap (Shapley values over "
                        "the superpixels) or drise (D-RISE's random masks); classifiers: lime")
    p.add_argument("--weights", default=None, metavar="FILE|DEFAULT",
                   help="--task detection|segmentation: a state-dict file, or DEFAULT for "
                        "torchvision's pretrained weights (none: random weights)")
    task_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``explain-dataset``; 0 when every image has rows (error rows included), 2 on bad
    input (as every ``limefast`` command) or when the ``dataset`` extra is missing."""
    from limefast.cli.inputs import ImportedFactory
    from limefast.dataset.driver import explain_dataset

    if args.task != "classification":
        return run_task(args)
    for flag, value in (("--method", args.method != "lime"), ("--weights", args.weights)):
        if value:
            print(f"limefast explain-dataset: {flag} is for --task detection|segmentation (a "
                  "classifier's factory is explained with LIME, with the weights it loads)",
                  file=sys.stderr)
            return 2
    factory = ImportedFactory(args.model, os.getcwd())

    def explain():
        factory.resolve()  # fail here, not in every worker
        return explain_dataset(args.source, factory, top_labels=args.top_labels,
                               segmentation=args.segmentation, image_size=args.image_size,
                               **_shared(args))

    return _explained(args, explain)


def _shared(args: argparse.Namespace) -> dict:
    """``explain_dataset``'s arguments that every task takes from the flags as they are."""
    return dict(
        output=args.output, num_samples=args.num_samples, seed=args.seed, resize=args.resize,
        batch_images=args.batch_images, model_batch_size=args.model_batch_size,
        concurrency=args.workers, num_gpus_per_worker=args.gpus_per_worker,
        num_cpus_per_worker=args.cpus_per_worker, max_retries=args.max_retries,
        overlays=args.overlays, address=args.address, progress=not args.no_progress,
        time_budget=args.time_budget, dedupe=args.dedupe, target_overlap=args.target_overlap,
        min_gain=args.min_gain, sampler=args.sampler)


def _explained(args: argparse.Namespace, explain) -> int:
    """``explain()``'s run (an ``explain_dataset`` result) summed up in one line; bad input
    (an ``InputError`` or another ``ValueError``, a missing extra, a model that will not
    import) one line on stderr and exit status 2."""
    from limefast.dataset.worker import INSTALL_HINT

    prog = "limefast explain-dataset"
    try:
        result = explain()
    except ImportError as exc:
        print(f"{prog}: {exc}" if INSTALL_HINT in str(exc) else
              f"{prog}: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:  # InputError is a ValueError
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    rate = result.explained / result.seconds if result.seconds else 0.0
    without = "" if args.task == "classification" else f"{result.no_targets} without targets, "
    print(f"explained {result.explained} images ({rate:.2f}/s), {without}{result.errors} "
          f"errors, {result.skipped} already done; rows in {result.output}")
    return 0


def run_task(args: argparse.Namespace) -> int:
    """``explain-dataset --task detection|segmentation``: one row per (image, target)."""
    from limefast.cli.detect import check_task_arguments
    from limefast.cli.inputs import InputError
    from limefast.cli.steps import warn_notes
    from limefast.dataset.detection import DetectorFactory
    from limefast.dataset.driver import _ray, explain_dataset

    try:
        _ray()  # before loading the model
    except ImportError as exc:
        print(f"limefast explain-dataset: {exc}", file=sys.stderr)
        return 2
    factory = DetectorFactory(args.model, args.task, args.weights, args.seed,
                              args.model_batch_size, cwd=os.getcwd())

    def explain():
        check_task_arguments(argparse.Namespace(**vars(args), max_samples=None))
        if args.method == "drise" and args.segmentation:
            raise InputError("--method drise hides random masks, not superpixels: it takes no "
                             "--segmentation")
        loaded = factory()  # fail here, not in every worker; and the model's own defaults
        image_size = args.image_size
        if loaded.size:
            if image_size is None:
                image_size = (loaded.size, loaded.size)
            elif image_size != (loaded.size, loaded.size):
                raise InputError(f"--model {args.model} takes {loaded.size}x{loaded.size} "
                                 f"images: drop --image-size (or give --image-size "
                                 f"{loaded.size})")
        segmentation = None
        if args.method != "drise":
            segmentation = args.segmentation or loaded.segmentation
        warn_notes([loaded])  # random weights, say
        del loaded
        return explain_dataset(
            args.source, factory, segmentation=segmentation, image_size=image_size,
            task=args.task, method=args.method, score_threshold=args.score_threshold,
            classes=args.classes, min_pixels=args.min_pixels, **_shared(args))

    return _explained(args, explain)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="limefast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected H or H,W (positive ints); got {text!r}")
    return (parts[0], parts[-1])


if __name__ == "__main__":
    sys.exit(main())
