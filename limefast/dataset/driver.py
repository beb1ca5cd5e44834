"""Explain a whole dataset on Ray Data: one machine in local mode, or a cluster of GPU machines.

``explain_dataset`` streams images through a pool of Ray actors. Each actor builds the model once
(``model_factory()``) and explains image after image with ``LimeImageExplainer``; each batch of
images becomes one Parquet part file in ``output``, written under a temporary name and renamed,
so a part file is whole or absent. The driver lists the work, counts, and shows progress.

Every image's explanation depends on nothing but the image, the model, the settings and its own
seed, ``image_seed(seed, image_id)``: its rows are those of
``LimeImageExplainer(random_state=image_seed(seed, image_id)).explain_instance(...)`` in one
process, whatever the number of workers, machines or images per batch. Part files are named by
the ids they hold, so a task that Ray retries after its worker died rewrites the same file rather
than adding rows, and a restarted run skips the ids already in ``output``. See docs/dataset.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limefast.core import checks, rounds, sampling
from limefast.dataset.detection import TASKS, DetectionWorker, detection_schema, task_settings
from limefast.dataset.worker import (
    ExplainWorker,
    Settings,
    filesystem,
    image_seed,
    load_image,
    overlay_name,
    part_files,
    pyarrow_modules,
    schema,
)
from limefast.optional import available, require

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
# Beside the part files: a restarted run must use the settings the rows already there used.
METADATA_FILE = "_limefast.json"


@dataclass(frozen=True)
class DatasetRun:
    """What one ``explain_dataset`` call did."""

    output: str
    explained: int  # images explained by this call
    errors: int  # images this call recorded as error rows
    skipped: int  # images found already in ``output``
    seconds: float  # wall time of the call
    no_targets: int = 0  # detectors, segmenters: images this call found nothing to explain on


def explain_dataset(source, model_factory: Callable[[], Callable], *, output,
                    num_samples: int = 1000, top_labels: int = 5, seed: int = 0,
                    segmentation: str | Callable | None = None, batch_images: int = 8,
                    num_gpus_per_worker: float = 0, num_cpus_per_worker: float = 1,
                    concurrency: int | None = None, image_size: int | tuple[int, int] | None = None,
                    model_batch_size: int = 10, hide_color=None, overlays: bool = False,
                    address: str | None = None, max_retries: int = 3, progress: bool = True,
                    image_column: str = "image", id_column: str | None = None,
                    time_budget: float | None = None, dedupe: bool = False,
                    resize: str = "stretch", target_overlap: float | None = None,
                    min_gain: float | None = None, sampler: str | None = None,
                    task: str = "classification", method: str = "lime",
                    score_threshold: float = 0.5, classes=None,
                    min_pixels: int = 16) -> DatasetRun:
    """Explain every image of ``source`` with ``model_factory()``'s classifier, on Ray Data
    (or its detector's or segmenter's targets: ``task``).

    Args:
        source: a folder (its image files, recursively; ids are POSIX paths relative to it), a
            list of image paths (ids are the paths as given, in POSIX form), or a
            ``ray.data.Dataset`` with an ``image_column`` of (H, W, C) arrays and an
            ``id_column`` of unique ids.
        model_factory: picklable callable with no arguments returning a classifier_fn
            ((N, H, W, C) -> (N, n_classes) probabilities), e.g. a ``TorchClassifier``; called
            once per worker (and again if Ray restarts the worker).
        output: folder, or pyarrow filesystem URI (``s3://bucket/run``), for the Parquet part
            files, ``_limefast.json`` and ``overlays/``; every worker must reach it.
        num_samples, top_labels, hide_color, time_budget, dedupe: as for
            ``explain_instance`` (``num_samples`` may be ``"auto"``; a run with a time budget
            depends on the machine's speed, so it is not deterministic).
        target_overlap, min_gain, sampler: as for ``explain_instance`` (the first two tune
            ``"auto"``; the run records the row design it draws).
        seed: run seed; an image is explained with ``random_state=image_seed(seed, its id)``.
        segmentation: None (lime's quickshift), ``'quickshift'``, ``'slic'``,
            ``'felzenszwalb'`` (``SegmentationAlgorithm`` defaults), or a picklable callable
            image -> (H, W) labels.
        batch_images: images per task and per part file (the unit of retry and of resume).
        num_gpus_per_worker, num_cpus_per_worker: Ray resources of each worker.
        concurrency: number of workers; default as many as the cluster's GPUs (or, without
            GPUs, CPUs) allow.
        resize: how ``image_size`` is reached: ``"stretch"`` (each axis scaled) or ``"crop"``
            (scaled to cover, centre cropped; ``limefast.images.load_image``).
        image_size: resize decoded files to (H, W) (an int for a square); not applied to the
            arrays of a Ray Dataset source.
        model_batch_size: ``explain_instance``'s ``batch_size``.
        overlays: also write ``overlays/<name>.png`` per image (the top label,
            ``ImageExplanation.render``); see ``overlay_name``.
        address: Ray cluster address; default ``RAY_ADDRESS``, else a local Ray on this
            machine. Not used when Ray is already initialised.
        max_retries: times a worker may die (crash, be killed) while explaining one image
            before that image is recorded as an error row; Ray restarts the worker each time.
        progress: show a progress bar.
        image_column, id_column: columns of a Ray Dataset source (default id column ``'id'``,
            or ``'path'`` as ``ray.data.read_images(..., include_paths=True)`` writes it).
        task: ``"classification"`` (the default), or ``"detection"`` / ``"segmentation"``:
            ``model_factory()`` returns a detector (segmenter) callable of the protocol of
            ``limefast.detection``, or a ``LoadedDetector`` (``DetectorFactory``), and each
            image's targets get one row each (``limefast.dataset.detection``); ``top_labels``
            is then not used.
        method: ``"lime"``, ``"kernelshap"`` or ``"drise"`` (detectors and segmenters; a
            classifier is explained with LIME).
        score_threshold: detection: the detections scoring at least this are explained.
        classes, min_pixels: segmentation: as ``DetectionExplainer.explain_segmentation``.

    Returns:
        A DatasetRun; the rows are in ``read_results(output)``.
    """
    t0 = time.perf_counter()
    ray = _ray()
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    if task == "classification" and method != "lime":
        raise ValueError(f"a classifier is explained with LIME: method={method!r} is for "
                         "task='detection' or 'segmentation'")
    fields = dict(
        output=_absolute(output),
        num_samples=checks.int_or_auto("num_samples", num_samples),
        top_labels=checks.positive_int("top_labels", top_labels),
        seed=checks.positive_int("seed", seed, minimum=0),
        segmentation=_check_segmentation(segmentation),
        image_size=None if image_size is None else _size_pair(image_size),
        resize=_resize_policy(resize),
        model_batch_size=checks.positive_int("model_batch_size", model_batch_size),
        hide_color=hide_color, overlays=bool(overlays),
        threads=max(1, math.floor(num_cpus_per_worker)),
        max_retries=checks.positive_int("max_retries", max_retries, minimum=0),
        time_budget=checks.time_budget(time_budget), dedupe=bool(dedupe),
        target_overlap=checks.open_unit("target_overlap", target_overlap),
        min_gain=checks.non_negative("min_gain", min_gain),
        sampler=_sampler(sampler, num_samples, hide_color) if method == "lime" else None,
    )
    if task != "classification":
        fields.update(task_settings(
            task, method, num_samples=fields["num_samples"], score_threshold=score_threshold,
            classes=classes, min_pixels=min_pixels, sampler=sampler,
            segmentation=fields["segmentation"], hide_color=hide_color,
            time_budget=fields["time_budget"], dedupe=fields["dedupe"],
            target_overlap=fields["target_overlap"], min_gain=fields["min_gain"]))
    settings = Settings(**fields)
    # the rest of explain_instance's checks of these, here rather than once per image
    if method != "drise":
        rounds.Rounds.from_arguments(settings.num_samples, None, None, settings.time_budget,
                                     None, settings.dedupe,
                                     target_overlap=settings.target_overlap,
                                     min_gain=settings.min_gain, sampler=settings.sampler,
                                     hide_color=hide_color)
    batch_images = checks.positive_int("batch_images", batch_images)
    if concurrency is not None:
        concurrency = checks.positive_int("concurrency", concurrency)
    if not callable(model_factory):
        raise TypeError(f"model_factory must be callable; got {type(model_factory).__name__}")
    from_dataset = isinstance(source, ray.data.Dataset)
    items = None if from_dataset else _file_items(source)

    fs, root = filesystem(settings.output)
    _check_metadata(fs, root, settings.metadata())
    _remove_temporary_files(fs, root)
    done = _done_ids(fs, root)
    if items is not None:
        todo = [item for item in items if item["image_id"] not in done]
        if not todo:
            return DatasetRun(settings.output, 0, 0, len(items), time.perf_counter() - t0)
    if not ray.is_initialized():
        ray.init(address=address)
    if concurrency is None:
        concurrency = _default_concurrency(ray, num_gpus_per_worker, num_cpus_per_worker)

    context = ray.data.DataContext.get_current()
    ray_bars = context.enable_progress_bars
    context.enable_progress_bars = ray_bars and not progress  # one bar: ours
    try:
        if from_dataset:
            ds, columns = _dataset_source(source, image_column, id_column, done, batch_images)
            total, skipped = None, len(done)
            # The dataset's own tasks (reading, decoding) need CPUs too: a pool that grows
            # while CPUs are free, rather than one that could take them all first and wait.
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=concurrency)
        else:
            # Blocks of batch_images rows: a block is a task, so the workers share the work.
            ds = ray.data.from_items(todo, override_num_blocks=math.ceil(len(todo) / batch_images))
            columns = ("image_id", "path", True)
            total, skipped = len(todo), len(items) - len(todo)
            pool = ray.data.ActorPoolStrategy(size=concurrency)  # nothing upstream needs CPUs
        resources = {"num_cpus": num_cpus_per_worker}
        if num_gpus_per_worker:
            resources["num_gpus"] = num_gpus_per_worker
        # Ray Data restarts a worker that died and retries its tasks (its defaults); the
        # workers' attempt markers bound how often one image may kill its worker.
        worker = ExplainWorker if task == "classification" else DetectionWorker
        summaries = ds.map_batches(
            worker, fn_constructor_args=(model_factory, settings, columns),
            batch_size=batch_images, batch_format="numpy", compute=pool, **resources,
        )
        explained, errors, no_targets = _consume(summaries, total, progress)
    finally:
        context.enable_progress_bars = ray_bars
    return DatasetRun(settings.output, explained, errors, skipped, time.perf_counter() - t0,
                      no_targets)


def read_results(output):
    """Every row written to ``output`` so far, as a ``pyarrow.Table`` (``.to_pandas()`` for a
    DataFrame). Error rows have a non-null ``error`` and null label, rank and numbers. A
    detector's or segmenter's run has one row per target (``detection_schema``; its
    ``_limefast.json`` says which)."""
    pa, pq = pyarrow_modules()
    fs, root = filesystem(_absolute(output))
    rows = detection_schema(pa) if _task_of(fs, root) != "classification" else schema(pa)
    tables = [pq.read_table(f, filesystem=fs, schema=rows) for f in part_files(fs, root)]
    return pa.concat_tables(tables) if tables else rows.empty_table()


def ray_available() -> bool:
    """Whether Ray Data and pyarrow import (the ``dataset`` extra is installed)."""
    return available("ray", "ray.data", "pyarrow", "pyarrow.parquet")


def _consume(summaries, total, progress) -> tuple[int, int, int]:
    """Run the pipeline to the end, counting images as their batches finish: (explained,
    errors, without targets)."""
    from tqdm.auto import tqdm

    explained = errors = no_targets = 0
    with tqdm(total=total, unit="img", disable=not progress, desc="explain") as bar:
        for batch in summaries.iter_batches(batch_size=None, batch_format="numpy"):
            failed = int(np.count_nonzero(batch["failed"]))
            empty = int(np.count_nonzero(batch["no_targets"])) if "no_targets" in batch else 0
            explained += len(batch["failed"]) - failed - empty
            errors += failed
            no_targets += empty
            bar.update(len(batch["failed"]))
            bar.set_postfix(errors=errors, refresh=False)
    return explained, errors, no_targets


# -- sources ---------------------------------------------------------------------------------

def _file_items(source) -> list[dict]:
    """``{"image_id", "path"}`` for each image file of a folder or list, ids unique."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise ValueError(
                f"source must be a folder, a list of image paths or a ray.data.Dataset; got "
                f"{os.fspath(source)!r}, which is not a folder (for one file, pass [path])"
            )
        paths = sorted(p for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        items = [{"image_id": p.relative_to(root).as_posix(), "path": str(p.resolve())}
                 for p in paths]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        bad = [p for p in source if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise TypeError(f"source paths must be str or os.PathLike; got {bad[0]!r}")
        items = [{"image_id": Path(p).as_posix(), "path": str(Path(p).resolve())}
                 for p in source]
    else:
        raise TypeError(
            f"source must be a folder, a list of image paths or a ray.data.Dataset; got "
            f"{type(source).__name__}"
        )
    if not items:
        raise ValueError(f"source holds no image files (extensions {', '.join(IMAGE_EXTENSIONS)})")
    seen: set[str] = set()
    for item in items:
        if item["image_id"] in seen:
            raise ValueError(f"image ids must be unique; {item['image_id']!r} appears twice")
        seen.add(item["image_id"])
    return items


def _dataset_source(ds, image_column: str, id_column: str | None, done: set, batch_images: int):
    names = ds.schema().names
    if id_column is None:
        id_column = next((name for name in ("id", "path") if name in names), None)
        if id_column is None:
            raise ValueError(
                f"a Ray Dataset source needs a column of unique image ids (id_column=...); its "
                f"columns are {names} (ray.data.read_images(..., include_paths=True) adds 'path')"
            )
    for name in (image_column, id_column):
        if name not in names:
            raise ValueError(f"the Ray Dataset has no column {name!r}; its columns are {names}")
    ds = ds.select_columns([id_column, image_column])
    if done:
        ds = ds.filter(lambda row: str(row[id_column]) not in done)
    try:  # small blocks, so that the workers share the work
        ds = ds.repartition(target_num_rows_per_block=batch_images)
    except TypeError:  # a Ray without target_num_rows_per_block: blocks as they come
        pass
    return ds, (id_column, image_column, False)


def _default_concurrency(ray, gpus: float, cpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus:
        return max(1, math.floor(resources.get("GPU", 0) / gpus))
    return max(1, math.floor(resources.get("CPU", 1) / max(cpus, 1e-9)))


# -- output: metadata and resume ---------------------------------------------------------------

def _absolute(output) -> str:
    output = os.fspath(output)
    return output if "://" in output else os.path.abspath(output)


def _sampler(sampler, num_samples, hide_color=None) -> str:
    """The row design the run draws, recorded (the default depends on ``num_samples``)."""
    if sampler is not None:
        return sampling.check_sampler(sampler)
    return rounds.auto_defaults(hide_color)["sampler"] if num_samples == "auto" else "lime"


def _check_metadata(fs, root: str, meta: dict) -> None:
    path = f"{root}/{METADATA_FILE}"
    if fs.get_file_info(path).type.name == "NotFound":
        with fs.open_output_stream(path) as stream:
            stream.write(json.dumps(meta, indent=2, sort_keys=True).encode())
        return
    with fs.open_input_stream(path) as stream:
        old = json.loads(stream.read())
    old.setdefault("sampler", "lime")  # runs written before the row designs drew lime's rows
    if old != meta:
        changed = {k: (old.get(k), meta.get(k)) for k in sorted(set(old) | set(meta))
                   if old.get(k) != meta.get(k)}
        raise ValueError(
            f"{root} holds a run with other settings ({{name: (then, now)}}: {changed}); "
            f"resuming would mix them. Use the same settings, or a new output folder"
        )


def _task_of(fs, root: str) -> str:
    """The task of the run in ``root``, from its metadata (a classifier's has none)."""
    path = f"{root}/{METADATA_FILE}"
    if fs.get_file_info(path).type.name == "NotFound":
        return "classification"
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read()).get("task", "classification")


def _remove_temporary_files(fs, root: str) -> None:
    """Part files a stopped run was writing when it stopped (never read: their names are hidden).
    Attempt markers (``.attempts-*``) stay: they count the deaths of workers."""
    import pyarrow.fs

    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if info.base_name.startswith(".tmp-"):
            fs.delete_file(info.path)


def _done_ids(fs, root: str) -> set[str]:
    _, pq = pyarrow_modules()
    done: set[str] = set()
    for path in part_files(fs, root):
        column = pq.read_table(path, filesystem=fs, columns=["image_id"]).column("image_id")
        done.update(column.to_pylist())
    return done


# -- settings --------------------------------------------------------------------------------

def _size_pair(size) -> tuple[int, int]:
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (checks.positive_int("image_size[0]", size[0]),
                checks.positive_int("image_size[1]", size[1]))
    side = checks.positive_int("image_size", size)
    return side, side


def _resize_policy(resize: str) -> str:
    from limefast.images import RESIZE_POLICIES

    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}; got {resize!r}")
    return resize


def _check_segmentation(segmentation):
    from limefast.wrappers.scikit_image import ALGORITHMS

    if segmentation is None or callable(segmentation) or segmentation in ALGORITHMS:
        return segmentation
    raise ValueError(
        f"segmentation must be None, one of {ALGORITHMS} or a callable image -> (H, W) labels; "
        f"got {segmentation!r}"
    )


def _ray():
    ray = require("ray", "explain_dataset")
    require("ray.data", "explain_dataset")
    pyarrow_modules()
    return ray


__all__ = ["DatasetRun", "explain_dataset", "image_seed", "load_image", "overlay_name",
           "ray_available", "read_results"]
