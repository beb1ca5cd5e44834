"""D-RISE's masks and masked images, written batch by batch: no mask is kept after its batch.

A D-RISE mask is a low-resolution 0/1 grid upsampled by nearest neighbour to the image's size
plus a padding, then cropped at an offset (the reference's ``T.Resize`` then ``T.RandomCrop``).
Upsampling by nearest neighbour is an index map, one per axis (``rows``, ``cols``: the grid cell
of every upsampled row and column), so mask pixel (y, x) is ``grid[rows[i + y], cols[j + x]]``
for the offset (i, j): the kernel writes each mask and its masked image straight from the grid.

The masked image is the image where the mask is 1 and 0 where it is 0 (D-RISE hides with 0): for
a 0/1 mask that is the reference's ``image * mask`` exactly, in any dtype.

The kernels are serial: a batch is a few hundred thousand stores, less than a thread pool's
wake-up costs on a busy machine, and the detector's forward dominates anyway.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def _grid_masks_cpu(image, grids, offsets, rows, cols, masks_out, images_out):
    """Masks ``masks_out[b]`` (float32 0/1) and masked images ``images_out[b]`` of grids ``b``.

    Args:
        image: (H, W, C) the image, any dtype.
        grids: (B, gh, gw) uint8 0/1 grids.
        offsets: (B, 2) int64 crop offsets (i, j) into the upsampled grid.
        rows, cols: (H + pad,), (W + pad,) int64 grid row / column of each upsampled one.
        masks_out: (>= B, H, W) float32, written.
        images_out: (>= B, H, W, C) the image's dtype, written.
    """
    h, w, c = image.shape
    for b in range(grids.shape[0]):
        i, j = offsets[b, 0], offsets[b, 1]
        for y in range(h):
            gy = rows[i + y]
            for x in range(w):
                on = grids[b, gy, cols[j + x]]
                masks_out[b, y, x] = on
                for k in range(c):
                    images_out[b, y, x, k] = image[y, x, k] if on else 0


@njit(cache=True, nogil=True)
def _apply_masks_cpu(image, masks, images_out):
    """``images_out[b] = image * masks[b]`` (per pixel, every channel), cast to the output's
    dtype (an integer image's product is truncated: 0/1 masks give the image or 0 exactly)."""
    h, w, c = image.shape
    for b in range(masks.shape[0]):
        for y in range(h):
            for x in range(w):
                m = masks[b, y, x]
                for k in range(c):
                    images_out[b, y, x, k] = image[y, x, k] * m
