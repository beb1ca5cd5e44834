"""The steps every ``limefast`` image subcommand shares: inputs checked before any work,
explanations by either method, and output written through a staging folder (all or nothing)."""

from __future__ import annotations

import sys

from limefast import config
from limefast.cli.inputs import InputError, Staging, image_names, load_image, load_model
from limefast.segmentation import SEGMENTATIONS

PLAIN_BATCH = config.PLAIN_BATCH  # the command line's name for it
# --method: what each explainer is called in pictures and JSON.
METHODS = {"lime": "LIME", "kernelshap": "KernelSHAP"}


def prepare(args, check_models=None):
    """Images, models and the staging folder, every input checked before any work.

    ``check_models(models)`` raises InputError for what a subcommand needs of the models; it
    runs before the output folder is touched.
    """
    from limefast.viz import panel

    check_model_arguments(args)
    images = [load_image(path, args.size, args.resize) for path in args.images]
    models = load_models(args)
    if check_models is not None:
        check_models(models)
    warn_notes(models)
    panel.font()  # fail now, not after the work, if Pillow cannot draw text
    staging = Staging(args.out)
    return images, image_names(args.images), models, staging


def check_model_arguments(args) -> None:
    """``model_arguments``' flags that argparse cannot check alone (explain, compare, serve)."""
    if not 0 <= args.coverage <= 1:
        raise InputError(f"--coverage must be in [0, 1]; got {args.coverage}")
    if args.size < 0:
        raise InputError(f"--size must be >= 0; got {args.size}")
    check_sampling(args)


def classifier_defaults(args) -> None:
    """The defaults of ``--size`` (224) and ``--segmentation`` (quickshift) for a classifier
    (``None`` in the parsers of the commands that also take ``--task``), set in ``args``."""
    if args.size is None:
        args.size = 224
    if args.segmentation is None:
        args.segmentation = "quickshift"


def warn_notes(models) -> None:
    """What loading the models noticed (random weights, say), one warning line each."""
    for m in models:
        for note in m.notes:
            print(f"limefast: warning: {note}", file=sys.stderr)


def load_models(args) -> list:
    """The ``--model`` flags' models (``LoadedModel``), each with a distinct ``tag``."""
    weights = args.weights or [None] * len(args.model)
    if len(weights) != len(args.model):
        raise InputError(f"give --weights once per --model ({len(args.model)}), in the same "
                         f"order (RANDOM for random weights); got {len(weights)}")
    weights = [None if w in (None, "", "RANDOM") else w for w in weights]
    norm = {k: v for k, v in (("mean", args.mean), ("std", args.std)) if v is not None}
    compile_mode = None if args.compile == "none" else args.compile
    # A TorchClassifier chooses its own batch for "auto" (its device's memory, the image size).
    torch_batch = args.batch_size if isinstance(args.batch_size, int) else None
    models = [load_model(spec, w, device=args.device, precision=args.precision, seed=args.seed,
                         batch_size=torch_batch, compile=compile_mode, **norm)
              for spec, w in zip(args.model, weights)]
    return distinct_tags(models)


def distinct_tags(models: list) -> list:
    """``models`` with their ``tag``s numbered where two are the same (their output folders)."""
    tags = [m.tag for m in models]
    for i, m in enumerate(models):
        if tags.count(m.tag) > 1:
            m.tag = f"{m.tag}-{tags[:i + 1].count(m.tag)}"
    return models


def explain(model, images, args, top_labels, method="lime"):
    """Each image's explanation by ``method`` ('lime' or 'kernelshap'), and the model's
    outputs on each image (row 0 of its samples: no model call of its own).

    A fresh explainer per model and method with the same seed: every model gets the same
    superpixels (and, for LIME, the same samples) of each image, so they compare like for like.
    """
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    segmentation = SegmentationAlgorithm(args.segmentation, **SEGMENTATIONS[args.segmentation])
    print(f"limefast: {model.spec}: {METHODS[method]}, {len(images)} image(s) x "
          f"{args.num_samples} samples", file=sys.stderr)
    kwargs = dict(top_labels=top_labels, num_samples=args.num_samples,
                  batch_size=args.batch_size or PLAIN_BATCH, segmentation_fn=segmentation,
                  progress_bar=True, **sampling_options(args))
    if method == "kernelshap":
        from limefast.kernelshap import KernelShapImageExplainer

        explainer = KernelShapImageExplainer(random_state=args.seed)
        explanations = [explainer.explain_instance(image, model.classifier, **kwargs)
                        for image in images]
    else:
        from limefast.lime_image import LimeImageExplainer

        explanations = LimeImageExplainer(random_state=args.seed).explain_batch(
            images, model.classifier, **kwargs)
    return explanations, [e.prediction for e in explanations]  # row 0: the image itself


def check_sampling(args) -> None:
    """The sampling flags together, as ``explain_instance`` checks them, before any work: an
    ``InputError`` (exit status 2) for a combination it would refuse."""
    from limefast.core.rounds import Rounds

    options = sampling_options(args)
    if options.get("sampler") is not None and getattr(args, "method", "lime") != "lime":
        raise InputError(f"--sampler is LIME's row design; --method {args.method} draws its "
                         "own coalitions (complement pairs by size): drop --sampler")
    try:
        Rounds.from_arguments(args.num_samples, options.get("max_samples"), None,
                              options["time_budget"], None, options["dedupe"],
                              target_overlap=options.get("target_overlap"),
                              min_gain=options.get("min_gain"), sampler=options.get("sampler"))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def sampling_options(args) -> dict:
    """The fewer-model-calls switches of the command line, as ``explain_batch`` takes them."""
    options = {"dedupe": args.dedupe, "time_budget": args.time_budget}
    if args.max_samples is not None:
        options["max_samples"] = args.max_samples
    elif args.num_samples == "auto":  # KernelSHAP's own cap is 2048: the CLI's stays 1000
        options["max_samples"] = config.AUTO_MAX_SAMPLES
    for name in ("target_overlap", "min_gain", "sampler"):  # explain's flags (compare: none)
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return options


def run_staged(staging, work) -> int:
    try:
        work()
    except BaseException:
        staging.abort()
        raise
    written = staging.commit()
    print(f"limefast: wrote {len(written)} file(s) under {staging.out}", file=sys.stderr)
    return 0
