"""What runs on a Ray worker of ``limefast.dataset.explain_dataset``: one image's seed, decoding,
explanation and rows, and the part files they are written to.

Kept apart from the driver (``limefast.dataset``) so that a worker imports only what it runs; it
needs pyarrow and Pillow but not Ray itself.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np

from limefast import config, images
from limefast.lime_image import LimeImageExplainer
from limefast.optional import install_hint, require

INSTALL_HINT = install_hint("ray")  # Ray Data and pyarrow: the dataset extra
# 2: stderr, num_samples and num_evaluated columns; 3: expected_overlap, top_k, stop_reason
FORMAT_VERSION = 3
# The format of a detector or segmenter run's rows (limefast.dataset.detection).
DETECTION_FORMAT_VERSION = 1
# Settings of detector and segmenter runs only: not in a classifier run's metadata.
TASK_SETTINGS = ("task", "method", "score_threshold", "classes", "min_pixels", "max_samples")


def image_seed(seed: int, image_id: str) -> int:
    """The ``random_state`` of one image's explanation, from the run's seed and the image's id.

    The id's UTF-8 bytes are hashed with BLAKE2b (16-byte digest); the digest, read as four
    little-endian uint32 words, is the ``spawn_key`` of ``np.random.SeedSequence(seed)``, whose
    first generated uint32 is the seed. It depends on nothing else: not on the worker, the batch,
    the order of the images or the machine.

    Args:
        seed: the run's seed, an int >= 0.
        image_id: the image's id (for a folder, its POSIX path relative to the folder).

    Returns:
        An int in [0, 2**32), for ``LimeImageExplainer(random_state=...)``.
    """
    from limefast.core.checks import positive_int

    seed = positive_int("seed", seed, minimum=0)
    if not isinstance(image_id, str):
        raise TypeError(f"image_id must be a str; got {type(image_id).__name__} {image_id!r}")
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=16).digest()
    key = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint32)
    return int(state[0])


def load_image(path, image_size: int | tuple[int, int] | None = None,
               resize: str = "stretch") -> np.ndarray:
    """Decode an image file the way ``explain_dataset`` does (``limefast.images.load_image``):
    (H, W, 3) uint8 RGB, resized to ``image_size`` by ``resize`` (the dataset runner's default
    is ``"stretch"``: every image becomes exactly (H, W))."""
    return images.load_image(path, image_size, resize=resize)


def overlay_name(image_id: str) -> str:
    """File name of an image's overlay PNG: the id made file-safe, and a hash to keep it unique."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)[-80:]
    return f"{safe}-{_id_hash(image_id, 4)}.png"


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the model."""

    output: str
    num_samples: int | str  # or "auto"
    top_labels: int
    seed: int
    segmentation: object  # None, an algorithm name, or a callable
    image_size: tuple[int, int] | None
    resize: str
    model_batch_size: int
    hide_color: object
    overlays: bool
    threads: int
    max_retries: int
    time_budget: float | None = None
    dedupe: bool = False
    target_overlap: float | None = None  # num_samples="auto"'s rule (None: the defaults)
    min_gain: float | None = None
    sampler: str | None = "lime"  # the row design (sampling.SAMPLERS), resolved by the driver
    # detectors and segmenters (limefast.dataset.detection); a classifier run leaves them be
    task: str = "classification"
    method: str = "lime"
    score_threshold: float = 0.5  # detection
    classes: tuple[int, ...] | None = None  # segmentation
    min_pixels: int = 16  # segmentation
    max_samples: int | None = None  # num_samples="auto"'s cap (LIME, KernelSHAP)

    def metadata(self) -> dict:
        """The settings that decide the rows, as JSON values: a resumed run must match them."""
        meta = asdict(self)
        for key in ("output", "overlays", "threads", "model_batch_size", "max_retries",
                    "dedupe"):
            meta.pop(key)
        fn = self.segmentation
        if fn is not None and not isinstance(fn, str):
            fn = f"{getattr(fn, '__module__', '?')}." + getattr(
                fn, "__qualname__", type(fn).__qualname__)
        meta["segmentation"] = fn
        meta["hide_color"] = repr(self.hide_color)
        meta["image_size"] = list(self.image_size) if self.image_size else None
        meta["format"] = FORMAT_VERSION
        if self.task != "classification":
            return task_metadata(self, meta)
        for key in TASK_SETTINGS:  # a classifier run's metadata is what it always was
            meta.pop(key)
        return meta


def task_metadata(settings, meta: dict) -> dict:
    """``Settings.metadata`` of a detector or segmenter run: its task, method and threshold
    (or classes and min_pixels) with the settings its method uses."""
    meta.pop("top_labels")
    if settings.task == "detection":
        meta.pop("classes")
        meta.pop("min_pixels")
    else:
        meta.pop("score_threshold")
        meta["classes"] = None if settings.classes is None else list(settings.classes)
    meta["format"] = DETECTION_FORMAT_VERSION
    return meta


class ExplainWorker:
    """A Ray Data actor: the model, built once, and the loop over one batch's images.

    Called with a batch of ``{id_column: (B,), image_column: (B,) paths or images}``, it writes
    the batch's rows to one part file and returns ``{"image_id", "failed"}`` for the driver.
    """

    def __init__(self, model_factory, settings: Settings, columns: tuple[str, str, bool]):
        config.CPU_THREADS = settings.threads  # as many kernel threads as the worker has CPUs
        self.settings = settings
        self.id_column, self.image_column, self.from_files = columns
        self.segmentation = segmentation_fn(settings.segmentation)
        self.fs, self.root = filesystem(settings.output)
        self.classifier = model_factory()
        torch = sys.modules.get("torch")
        if torch is not None:  # Ray's OMP_NUM_THREADS comes too late for an imported torch
            torch.set_num_threads(settings.threads)

    def __call__(self, batch: dict) -> dict:
        pa, pq = pyarrow_modules()
        ids = [str(i) for i in batch[self.id_column]]
        if not ids:
            return self._summary([], [])
        rows, firsts = [], []
        for i, image_id in enumerate(ids):
            image_rows = self._explain(image_id, batch[self.image_column][i])
            firsts.append(image_rows[0])
            rows += image_rows
        table = pa.Table.from_pylist(rows, schema=self.row_schema(pa))
        # Named by its ids, so a retried task rewrites the same file; renamed into place whole.
        name = hashlib.blake2b("\0".join(ids).encode("utf-8"), digest_size=12).hexdigest()
        tmp = f"{self.root}/.tmp-{uuid.uuid4().hex}.parquet"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, f"{self.root}/part-{name}.parquet")
        return self._summary(ids, firsts)

    @staticmethod
    def row_schema(pa):
        """The schema of the rows this worker writes."""
        return schema(pa)

    def _summary(self, ids: list[str], firsts: list[dict]) -> dict:
        """What the driver counts: each image's id and whether it is an error row
        (``firsts``: each image's first row)."""
        return {"image_id": np.array(ids, dtype=object),
                "failed": np.array([row["error"] is not None for row in firsts], dtype=bool)}

    def _explain(self, image_id: str, item) -> list[dict]:
        s = self.settings
        seed = image_seed(s.seed, image_id)
        # A marker lives while an image is being explained: finding one means a worker died on
        # this image (Ray restarted it and retried the task). Count the deaths, and stop
        # retrying an image that keeps killing its worker.
        marker = f"{self.root}/.attempts-{_id_hash(image_id, 8)}"
        deaths = self._read_count(marker)
        if deaths > s.max_retries:
            self.fs.delete_file(marker)
            return [_error_row(image_id, seed, 0.0, f"WorkerDied: a worker died {deaths} times "
                               f"explaining this image (max_retries={s.max_retries})")]
        with self.fs.open_output_stream(marker) as stream:
            stream.write(str(deaths + 1).encode())
        t0 = time.perf_counter()
        try:
            image = (load_image(item, s.image_size, s.resize) if self.from_files
                     else np.asarray(item))
            explanation = self._explanation(image, seed)
        except Exception as exc:  # noqa: BLE001
            # An unreadable or invalid image is this image's problem: record it and go on.
            # Anything else (the model failing, memory) is the run's, and fails the task.
            if not (_is_decode_error(exc) or isinstance(exc, (ValueError, TypeError))):
                raise
            return [_error_row(image_id, seed, time.perf_counter() - t0,
                               f"{type(exc).__name__}: {exc}")]
        finally:
            self.fs.delete_file(marker)
        seconds = time.perf_counter() - t0
        rows = self._rows(image_id, seed, seconds, explanation)
        if s.overlays:
            self._write_overlay(image_id, explanation)
        return rows

    def _explanation(self, image: np.ndarray, seed: int):
        """The image's explanation, by ``random_state=seed``."""
        s = self.settings
        return LimeImageExplainer(random_state=seed).explain_instance(
            image, self.classifier, top_labels=s.top_labels, num_samples=s.num_samples,
            batch_size=s.model_batch_size, segmentation_fn=self.segmentation,
            hide_color=s.hide_color, progress_bar=False, dedupe=s.dedupe,
            time_budget=s.time_budget, target_overlap=s.target_overlap,
            min_gain=s.min_gain, sampler=s.sampler)

    def _rows(self, image_id: str, seed: int, seconds: float, explanation) -> list[dict]:
        """One row per explained label."""
        n_segments = int(explanation.segments.max()) + 1
        rows = []
        for rank, label in enumerate(explanation.top_labels):
            weights = np.zeros(n_segments)
            stderr = np.full(n_segments, np.nan)
            for feature, weight in explanation.local_exp[label]:
                weights[feature] = weight
                stderr[feature] = explanation.stderr[label][feature]
            rows.append({
                "image_id": image_id, "label": int(label), "rank": rank,
                "weights": weights.tolist(), "intercept": float(explanation.intercept[label]),
                "score": float(explanation.score[label]),
                "local_pred": float(np.ravel(explanation.local_pred[label])[0]),
                "num_segments": n_segments, "seconds": seconds, "seed": seed, "error": None,
                "stderr": stderr.tolist(), "num_samples": int(explanation.num_samples),
                "num_evaluated": int(explanation.num_evaluated),
                "expected_overlap": float(explanation.expected_overlap[label]),
                "top_k": int(explanation.top_k), "stop_reason": explanation.stop_reason,
            })
        return rows

    def _read_count(self, path: str) -> int:
        if self.fs.get_file_info(path).type.name == "NotFound":
            return 0
        with self.fs.open_input_stream(path) as stream:
            return int(stream.read() or 0)

    def _write_overlay(self, image_id: str, explanation) -> None:
        from limefast.viz.render import png_bytes

        self.fs.create_dir(f"{self.root}/overlays", recursive=True)
        with self.fs.open_output_stream(f"{self.root}/overlays/{overlay_name(image_id)}") as out:
            out.write(png_bytes(explanation.render(explanation.top_labels[0])))


def segmentation_fn(segmentation):
    """The callable for a ``segmentation`` setting (None stays None: explain_instance's default)."""
    if not isinstance(segmentation, str):
        return segmentation
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    if segmentation == "quickshift":  # lime's parameters, as explain_instance's default
        from limefast.segmentation import LIME_QUICKSHIFT

        return SegmentationAlgorithm("quickshift", **LIME_QUICKSHIFT)
    return SegmentationAlgorithm(segmentation)


# -- part files ----------------------------------------------------------------------------------

def schema(pa):
    """The rows' Parquet schema: one row per (image, explained label), or one error row."""
    return pa.schema([
        ("image_id", pa.string()), ("label", pa.int64()), ("rank", pa.int32()),
        ("weights", pa.list_(pa.float64())), ("intercept", pa.float64()),
        ("score", pa.float64()), ("local_pred", pa.float64()), ("num_segments", pa.int32()),
        ("seconds", pa.float64()), ("seed", pa.int64()), ("error", pa.string()),
        ("stderr", pa.list_(pa.float64())), ("num_samples", pa.int64()),
        ("num_evaluated", pa.int64()), ("expected_overlap", pa.float64()),
        ("top_k", pa.int32()), ("stop_reason", pa.string()),
    ])


def filesystem(output: str):
    """The pyarrow filesystem and root path of an absolute path or URI; the root is created."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(output)
    fs.create_dir(root, recursive=True)
    return fs, root.rstrip("/")


def part_files(fs, root: str) -> list[str]:
    """The finished part files under ``root`` (temporary ones start with a dot)."""
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return sorted(i.path for i in infos
                  if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))


def pyarrow_modules():
    return require("pyarrow", "explain_dataset"), require("pyarrow.parquet", "explain_dataset")


def _error_row(image_id: str, seed: int, seconds: float, error: str) -> dict:
    return {"image_id": image_id, "seed": seed, "seconds": seconds, "error": error}


def _id_hash(image_id: str, size: int) -> str:
    return hashlib.blake2b(image_id.encode("utf-8"), digest_size=size).hexdigest()


def _is_decode_error(exc: Exception) -> bool:
    from PIL import Image, UnidentifiedImageError

    # OSError covers missing and truncated files; Pillow raises SyntaxError for some bad headers.
    return isinstance(exc, (OSError, UnidentifiedImageError, Image.DecompressionBombError,
                            SyntaxError))
