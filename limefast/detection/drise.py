"""D-RISE (Petsiuk et al., CVPR 2021) on limefast's batches: masks drawn as the reference
draws them, written by a kernel batch by batch, the maps accumulated in place.

The reference (``vision-explanation-methods`` 0.1.1, ``explanations/drise.py``) draws, per mask,
a 16x16 0/1 grid (``torch.randint``), upsamples it by nearest neighbour to the image's size plus
a padding of ``max(H / 16, W / 16)`` pixels, and crops it at a random offset; it runs the model
on one masked image at a time, keeps every mask and a weighted copy per detection, and at the
end takes each target's map as the score-weighted sum of the masks less the mean score times
the sum of the masks, scaled to [0, 1] (less its minimum, over its maximum).

Here ``drise_masks`` keeps only the grids and offsets (256 bytes and two integers a mask) and
draws them from the stream ``torch.manual_seed(seed)`` gives torch's CPU generator (MT19937,
drawn with NumPy, no torch needed), so the masks are the reference's; the kernel
(``limefast.kernels.drise``) writes a batch of masks and masked images, the detector runs on
the batch, and the batch's masks are added into the (n_targets, H, W) sums with one matrix
product: memory does not grow with the number of masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from limefast.core.executor import one_blas_thread
from limefast.detection.explanation import DetectionExplanation
from limefast.kernels.drise import _apply_masks_cpu, _grid_masks_cpu

MASK_RES = (16, 16)
AUTO_BATCH = 64  # D-RISE's batch for batch_size="auto"
MASK_CHUNK = 512  # masks drawn at a time


def _nearest_index(out: int, size: int) -> np.ndarray:
    """The source index of each of ``out`` outputs of torch's nearest upsampling of ``size``
    inputs: ``min(floor(o * (size / out)), size - 1)`` in float32, as ``upsample_nearest``
    computes it."""
    scale = np.float32(size) / np.float32(out)
    index = np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, size - 1)


@dataclass
class DriseMasks:
    """D-RISE masks as grids and offsets, written out on demand.

    Attributes:
        grids: (N, gh, gw) uint8 0/1 grids.
        offsets: (N, 2) int64 crop offsets (row, column).
        shape: the images' (H, W).
        padding: pixels added to each side's length before the crop.
    """

    grids: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int]
    padding: int

    def __post_init__(self):
        h, w = self.shape
        self.rows = _nearest_index(h + self.padding, self.grids.shape[1])
        self.cols = _nearest_index(w + self.padding, self.grids.shape[2])

    def __len__(self) -> int:
        return self.grids.shape[0]

    def write(self, image: np.ndarray, start: int, stop: int, masks_out: np.ndarray,
              images_out: np.ndarray) -> None:
        """Masks ``start..stop-1`` into ``masks_out`` and the masked ``image`` into
        ``images_out`` (their first ``stop - start`` entries)."""
        _grid_masks_cpu(image, self.grids[start:stop], self.offsets[start:stop], self.rows,
                        self.cols, masks_out, images_out)

    def __getitem__(self, index) -> np.ndarray:
        """Masks as a (k, H, W) float32 array (or (H, W) for an integer index)."""
        picked = np.arange(len(self))[index]
        one = np.ndim(picked) == 0
        picked = np.atleast_1d(picked)
        h, w = self.shape
        out = np.empty((len(picked), h, w), np.float32)
        scratch = np.empty((len(picked), h, w, 1), np.uint8)
        _grid_masks_cpu(np.zeros((h, w, 1), np.uint8), self.grids[picked],
                        self.offsets[picked], self.rows, self.cols, out, scratch)
        return out[0] if one else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def drise_masks(n: int, shape: tuple[int, int], seed: int = 0, mask_res=MASK_RES,
                padding: int | None = None) -> DriseMasks:
    """The ``n`` masks ``vision-explanation-methods``' ``DRISE_saliency`` draws for an image of
    ``shape`` (H, W) after ``torch.manual_seed(seed)`` (torch's global generator is left alone).

    Args:
        n: number of masks.
        shape: (H, W) of the image.
        seed: the seed.
        mask_res: the grid's (rows, columns), 16x16 as published.
        padding: pixels added before the random crop; default ``int(max(H / rows, W / cols))``,
            the reference's.

    Returns:
        A DriseMasks (grids and offsets; ``np.asarray`` gives the (n, H, W) float32 masks).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive number of masks; got {n}")
    h, w = (int(s) for s in shape)
    gh, gw = (int(s) for s in mask_res)
    if padding is None:
        padding = int(max(h / gh, w / gw))
    # torch's CPU generator is MT19937 seeded as init_genrand(seed mod 2^32), as NumPy's
    # legacy RandomState is; torch.randint below 2^32 takes one 32-bit word per value, in
    # order, modulo the range. The reference draws, per mask, the grid (gh * gw values), then
    # RandomCrop's row and column: gh * gw + 2 words a mask, drawn here all at once.
    # (In chunks: the words are 4 bytes a value, the grids keep 1.)
    stream = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    grids = np.empty((n, gh, gw), np.uint8)
    offsets = np.empty((n, 2), np.int64)
    for start in range(0, n, MASK_CHUNK):
        stop = min(start + MASK_CHUNK, n)
        words = stream.randint(0, 2 ** 32, size=(stop - start, gh * gw + 2), dtype=np.uint32)
        grids[start:stop] = (words[:, :gh * gw] % 2).reshape(-1, gh, gw)
        offsets[start:stop] = words[:, gh * gw:] % np.uint32(padding + 1)
    return DriseMasks(grids, offsets, (h, w), int(padding))


def _check_masks(masks, shape: tuple[int, int]):
    """``masks`` as a DriseMasks or an (N, H, W) float32 array of the image's shape."""
    if isinstance(masks, DriseMasks):
        if tuple(masks.shape) != tuple(shape):
            raise ValueError(f"the masks were drawn for images of {masks.shape}; the image is "
                             f"{tuple(shape)}")
        return masks
    array = np.asarray(masks, dtype=np.float32)
    if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[2:] == tuple(shape):
        array = array[:, 0]  # the reference's (N, 3, H, W) masks: the channels are equal
    if array.ndim != 3 or array.shape[1:] != tuple(shape) or array.shape[0] < 1:
        raise ValueError(f"masks must be (N, H, W) with (H, W) = {tuple(shape)}, or "
                         f"drise_masks(...); got shape {array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("masks must hold values in [0, 1]")
    return np.ascontiguousarray(array)


def drise_maps(image: np.ndarray, score_fn, masks, batch_size: int = AUTO_BATCH,
               progress_bar: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Each target's D-RISE map over ``masks``, unscaled.

    Args:
        image: (H, W, C) image.
        score_fn: (B, H, W, C) masked images -> (B, K) target scores.
        masks: a DriseMasks or an (N, H, W) array.
        batch_size: masked images per ``score_fn`` call.
        progress_bar: a tqdm bar over the masks.

    Returns:
        (maps, mean_scores, timings): (K, H, W) float64 ``sum_m s_km mask_m - mean_m(s_km)
        sum_m mask_m``, (K,) the mean scores, and seconds spent in the masks and the model.
    """
    h, w, c = image.shape
    masks = _check_masks(masks, (h, w))
    n = len(masks)
    batch_size = max(1, min(int(batch_size), n))
    mask_buf = np.empty((batch_size, h, w), np.float32)
    image_buf = np.empty((batch_size, h, w, c), image.dtype)
    weighted = mask_sum = score_sum = None
    t_masks = t_model = 0.0
    with tqdm(total=n, disable=not progress_bar, desc="limefast d-rise") as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            b = stop - start
            t0 = time.perf_counter()
            if isinstance(masks, DriseMasks):
                masks.write(image, start, stop, mask_buf, image_buf)
                batch_masks = mask_buf[:b]
            else:
                batch_masks = masks[start:stop]
                _apply_masks_cpu(image, batch_masks, image_buf)
            t1 = time.perf_counter()
            scores = np.asarray(score_fn(image_buf[:b]), dtype=np.float64)
            t2 = time.perf_counter()
            if weighted is None:
                k = scores.shape[1]
                weighted = np.zeros((k, h * w))
                mask_sum = np.zeros(h * w)
                score_sum = np.zeros(k)
            flat = batch_masks.reshape(b, h * w)
            with one_blas_thread():  # a small product: BLAS threads would only wait
                weighted += scores.T @ flat  # in place: the sums, not the masks, are kept
            mask_sum += flat.sum(axis=0, dtype=np.float64)
            score_sum += scores.sum(axis=0)
            t_masks += t1 - t0 + time.perf_counter() - t2
            t_model += t2 - t1
            bar.update(b)
    mean = score_sum / n
    maps = (weighted - mean[:, None] * mask_sum[None, :]).reshape(-1, h, w)
    return maps, mean, {"masks": t_masks, "model": t_model}


def min_max(saliency: np.ndarray) -> np.ndarray:
    """The reference's scaling of a map: less its minimum, over its maximum after (0 where the
    map is constant, where the reference divides by 0)."""
    out = saliency - saliency.min()
    top = out.max()
    return out / top if top > 0 else np.zeros_like(out)


def drise_explanation(image: np.ndarray, scores, targets, num_samples, masks, seed,
                      batch_size, progress_bar) -> DetectionExplanation:
    """The D-RISE ``DetectionExplanation`` of ``targets`` (``scores`` their TargetScores)."""
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    if masks is None:
        num_samples = int(num_samples)
        masks = drise_masks(num_samples, (h, w), seed)
    if batch_size == "auto":
        batch_size = AUTO_BATCH
    elif not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto'; got {batch_size!r}")
    t_masks = time.perf_counter() - t0
    maps, mean, timings = drise_maps(image, scores, masks, batch_size, progress_bar)
    exp = DetectionExplanation(image, None, targets, "drise")
    for i in range(len(targets)):
        exp.saliency_raw[i] = maps[i]
        exp.saliency[i] = min_max(maps[i])
        exp.intercept[i] = float(mean[i])
    exp.prediction = np.array([t.score for t in targets], dtype=np.float64)
    exp.num_samples = exp.num_evaluated = len(masks)
    exp.stop_reasons = {i: "num_samples" for i in range(len(targets))}
    exp.timings = {"masks": t_masks + timings["masks"], "model": timings["model"],
                   "total": time.perf_counter() - t0}
    return exp
