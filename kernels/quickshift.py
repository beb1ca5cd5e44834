"""Quickshift mode seeking (scikit-image's ``_quickshift_cython``), bit for bit, in Numba.

scikit-image 0.26 runs, for an (H, W, C) float image in float64 or float32 (``T`` below):

1. ``densities = normal(scale=1e-5, size=(H, W)).astype(T)`` from ``default_rng(rng)``, then for
   every pixel, in window order (r_ ascending, then c_), ``densities += exp(dist * inv)``: ``dist``
   is ``sum_ch (p - q)**2 + (r - r_)**2 + (c - c_)**2`` accumulated in ``T`` in that order, ``inv``
   is ``-0.5 / kernel_size**2``, ``exp`` is the C library's double ``exp`` and, for float32, the
   sum is formed in double and rounded back to float32 at every step.
2. Each pixel's parent is the first pixel in window order with a strictly higher density and the
   smallest ``dist``; ``dist_parent = sqrt(dist)``; parents further than ``max_dist`` are cut.
3. Each pixel takes the root of its tree; labels are the roots' ranks.

Where the time goes is step 1: one ``exp`` per pixel pair, about 625 pairs per pixel for lime's
``kernel_size=4``. The density kernel here evaluates its exponentials with a branch-free polynomial
``exp`` that vectorises, then makes every density *decision* exact:

- float32: every step's float32 rounding is checked against the interval that contains the C
  library's ``exp``; when both ends round alike (nearly always) the float32 sum is exactly
  scikit-image's. Pixels with one undecided step are recomputed with the C library's ``exp``.
- float64: each pixel pair's exponential is computed once and added to both pixels (half the
  work), so sums run in another order; the fast density is within a proven tolerance of
  scikit-image's (``_density_tolerance``). The parent search only compares densities; a
  comparison closer than the two tolerances is redone on densities recomputed exactly, in
  scikit-image's order with the C library's ``exp`` (rare on photos).

Distances (and so ``dist_parent``) are computed in scikit-image's order and type, never
approximated. The parent search visits neighbours by increasing spatial distance and stops once
``dr**2 + dc**2`` exceeds the best distance (``dist >= dr**2 + dc**2`` in any rounding), breaking
ties by window order, which gives the same parent as scanning the whole window.

The kernels are serial, release the GIL and work on row (or pixel) ranges; ``share_rows`` spreads
the ranges over threads, so results never depend on the thread count or the split. The polynomial
``exp`` alone is compiled with ``fastmath={"contract"}`` (FMA in its own arithmetic only): the
distances and sums around it keep scikit-image's separately rounded operations.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .threads import share_rows, worker_threads

# exp(x) = 2**k * exp(r), k = round(x / ln 2), |r| <= ln(2) / 2; Taylor series to r**13.
_INV_LN2 = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 with 21 trailing zero bits: k * _LN2_HI is exact
_LN2_LO = 1.9082149292705877e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer kept in the low bits
_EXP_FLOOR = -708.0  # below it exp(x) < 3.4e-308 is treated as an absolute error
_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))
# Relative error bound of _fast_exp against the C library's exp, both within a few ulp of exp
# (tests/test_quickshift.py checks 1e-15 with margin; the kernels assume this bound).
_EXP_REL_ERR = 4e-15
_ULP_HALF = 2.0**-53


@intrinsic
def _bits_of(typingctx, x):
    """The IEEE bits of a float64, as an int64 (a bitcast, so it vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float_of(typingctx, bits):
    """The float64 whose IEEE bits are ``bits`` (a bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, fastmath={"contract"})
def _fast_exp(x):
    """exp(x) for x <= 0 (or -inf), within _EXP_REL_ERR above -708, without branches."""
    x = max(x, _EXP_FLOOR)
    kd = x * _INV_LN2 + _SHIFT
    ki = _bits_of(kd)
    kd = kd - _SHIFT
    r = (x - kd * _LN2_HI) - kd * _LN2_LO
    p = _TAYLOR[13]
    p = p * r + _TAYLOR[12]
    p = p * r + _TAYLOR[11]
    p = p * r + _TAYLOR[10]
    p = p * r + _TAYLOR[9]
    p = p * r + _TAYLOR[8]
    p = p * r + _TAYLOR[7]
    p = p * r + _TAYLOR[6]
    p = p * r + _TAYLOR[5]
    p = p * r + _TAYLOR[4]
    p = p * r + _TAYLOR[3]
    p = p * r + _TAYLOR[2]
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _float_of((ki + 1023) << 52)


def _as_type_of(value, like):
    """``value`` cast to the (float32 or float64) type of ``like``; compiled via the overload."""
    raise NotImplementedError("only callable from compiled code")


@overload(_as_type_of)
def _as_type_of_impl(value, like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


@njit(cache=True, inline="always")
def _pair_dist(image, r, c, rr, cc, sr, sc, zero):
    """scikit-image's ``dist`` between (r, c) and (rr, cc), in its order and the image's type."""
    dist = zero
    for ch in range(image.shape[2]):
        t = image[r, c, ch] - image[rr, cc, ch]
        dist += t * t
    dist += sr
    dist += sc
    return dist


@njit(cache=True)
def _density_exact_at(image, start, r, c, kw, inv, sq):
    """scikit-image's density of pixel (r, c), with the C library's exp (float32 or float64)."""
    height, width = image.shape[0], image.shape[1]
    zero = sq[0] - sq[0]
    dens = start
    for r_ in range(max(r - kw, 0), min(r + kw + 1, height)):
        for c_ in range(max(c - kw, 0), min(c + kw + 1, width)):
            dist = _pair_dist(image, r, c, r_, c_, sq[kw + r_ - r], sq[kw + c_ - c], zero)
            # float32: C adds the double exp to the float32 density in double, then rounds.
            dens = _as_type_of(np.float64(dens) + math.exp(np.float64(dist * inv)), dens)
    return dens


@njit(cache=True, nogil=True)
def _density_exact_cpu(image, dens, pixels, kw, inv, sq, lo, hi):
    """Overwrites ``dens`` (holding the noise) at flat ``pixels[lo:hi]`` with exact densities."""
    width = image.shape[1]
    for k in range(lo, hi):
        r, c = divmod(pixels[k], width)
        dens[r, c] = _density_exact_at(image, dens[r, c], r, c, kw, inv, sq)


@njit(cache=True)
def _offset_dists(planes, r, r_, dc, c0, c1, sr, sc, out):
    """``out[:c1 - c0]``: scikit-image's ``dist`` from pixels (r, c0..c1-1) to (r_, c + dc), in
    its order and the image's type, one channel plane at a time so the column loops vectorise."""
    n = c1 - c0
    if planes.shape[0] == 3:
        a0, b0 = planes[0, r, c0:c1], planes[0, r_, c0 + dc:c1 + dc]
        a1, b1 = planes[1, r, c0:c1], planes[1, r_, c0 + dc:c1 + dc]
        a2, b2 = planes[2, r, c0:c1], planes[2, r_, c0 + dc:c1 + dc]
        for i in range(n):
            t0 = a0[i] - b0[i]
            t1 = a1[i] - b1[i]
            t2 = a2[i] - b2[i]
            out[i] = (((t0 * t0 + t1 * t1) + t2 * t2) + sr) + sc
        return
    out[:n] = 0
    for ch in range(planes.shape[0]):
        a, b = planes[ch, r, c0:c1], planes[ch, r_, c0 + dc:c1 + dc]
        for i in range(n):
            t = a[i] - b[i]
            out[i] += t * t
    for i in range(n):
        out[i] = (out[i] + sr) + sc


@njit(cache=True, nogil=True)
def _density_f32_cpu(planes, noise, kw, inv, sq, dens, undecided, lo, hi):
    """float32 densities of rows lo..hi-1, exact wherever ``undecided`` stays 0.

    Terms are added in scikit-image's order (offsets outermost, so column loops vectorise). Each
    step's float32 rounding of ``density + exp`` is taken at both ends of the interval holding the
    C library's exp (``_fast_exp`` within ``_EXP_REL_ERR``); if they agree, the step is exact.

    Args:
        planes: (C, H, W) float32 image; ``noise``: (H, W) float32 starting values.
        kw: window half-width; ``inv``: float32 ``-0.5 / kernel_size**2``.
        sq: (2 kw + 1,) float32 squared offsets ``(d - kw)**2``.
        dens, undecided: (H, W) outputs: densities, and 1 where a step could round otherwise.
    """
    height, width = planes.shape[1], planes.shape[2]
    lo_f = 1.0 - _EXP_REL_ERR
    hi_f = 1.0 + _EXP_REL_ERR
    dist = np.empty(width, planes.dtype)
    for r in range(lo, hi):
        acc = noise[r].copy()
        bad = np.zeros(width, np.uint8)
        for r_ in range(max(r - kw, 0), min(r + kw + 1, height)):
            for dc in range(-kw, kw + 1):
                c0 = max(0, -dc)
                c1 = min(width, width - dc)
                if c1 <= c0:
                    continue
                _offset_dists(planes, r, r_, dc, c0, c1, sq[kw + r_ - r], sq[kw + dc], dist)
                acc_s = acc[c0:c1]
                bad_s = bad[c0:c1]
                for i in range(c1 - c0):
                    e = _fast_exp(np.float64(dist[i] * inv))
                    a = np.float64(acc_s[i])
                    low = np.float32(a + e * lo_f)
                    bad_s[i] |= low != np.float32(a + e * hi_f)
                    acc_s[i] = low
        dens[r] = acc
        undecided[r] = bad


@njit(cache=True, nogil=True)
def _density_pairs_cpu(planes, kw, inv, sq, lo, hi):
    """float64 density terms of every pixel pair whose upper pixel lies in rows lo..hi-1.

    Each pair's exp is computed once and added to both pixels (the distance is symmetric), which
    halves the exponentials; the sums are then in another order than scikit-image's, which the
    tolerance allows for. Self terms (exp(-0.0) == 1) are included, the noise is not.

    Returns:
        (min(hi + kw, H) - lo, W) float64 partial densities of rows lo.. onwards.
    """
    _, height, width = planes.shape
    band = np.zeros((min(hi + kw, height) - lo, width))
    dist = np.empty(width)
    terms = np.empty(width)
    for r in range(lo, hi):
        band[r - lo] += 1.0
        for r_ in range(r, min(r + kw + 1, height)):
            sr = sq[kw + r_ - r]
            for dc in range(-kw if r_ > r else 1, kw + 1):
                c0 = max(0, -dc)
                c1 = min(width, width - dc)
                if c1 <= c0:
                    continue
                n = c1 - c0
                _offset_dists(planes, r, r_, dc, c0, c1, sr, sq[kw + dc], dist)
                for i in range(n):
                    terms[i] = _fast_exp(dist[i] * inv)
                upper = band[r - lo, c0:c1]
                for i in range(n):
                    upper[i] += terms[i]
                lower = band[r_ - lo, c0 + dc:c1 + dc]
                for i in range(n):
                    lower[i] += terms[i]
    return band


@njit(cache=True, inline="always")
def _search(image, dens, tol, exact, has_exact, use_exact, r, c, odr, odc, ods, sq, kw, big):
    """Parent of (r, c): scikit-image's choice, found by visiting offsets by spatial distance.

    Returns:
        (parent flat index, best dist, whether a density comparison was within tolerance).
    """
    height, width = image.shape[0], image.shape[1]
    dp = dens[r, c]
    tp = tol[r, c]
    zero = sq[0] - sq[0]
    best = big
    bdr = 0
    bdc = 0
    found = False
    near = False
    for k in range(odr.size):
        if ods[k] > best:
            break
        dr = odr[k]
        dc = odc[k]
        rr = r + dr
        cc = c + dc
        if rr < 0 or rr >= height or cc < 0 or cc >= width:
            continue
        dq = dens[rr, cc]
        if use_exact and has_exact[r, c] and has_exact[rr, cc]:
            higher = exact[rr, cc] > exact[r, c]
        else:
            higher = dq > dp
            if abs(dq - dp) <= tp + tol[rr, cc]:
                near = True
        if higher:
            dist = _pair_dist(image, r, c, rr, cc, sq[kw + dr], sq[kw + dc], zero)
            if dist < best or (found and dist == best and (dr < bdr or (dr == bdr and dc < bdc))):
                best = dist
                bdr = dr
                bdc = dc
                found = True
    return (r + bdr) * width + (c + bdc), best, near


@njit(cache=True, nogil=True)
def _parents_cpu(image, dens, tol, odr, odc, ods, sq, kw, big, parent, dist_parent, near, lo,
                 hi):
    """Writes rows lo..hi-1 of the parents, ``sqrt`` of the best distances, and the pixels with
    a comparison within tolerance."""
    width = image.shape[1]
    dummy = np.zeros((1, 1), np.bool_)
    for r in range(lo, hi):
        for c in range(width):
            p, best, amb = _search(image, dens, tol, dens, dummy, False, r, c, odr, odc, ods,
                                   sq, kw, big)
            parent[r, c] = p
            # as C: sqrt in double, stored in the image's type
            dist_parent[r, c] = math.sqrt(np.float64(best))
            near[r, c] = amb


@njit(cache=True)
def _near_pixels(dens, tol, near, kw):
    """Flagged pixels, and every pixel whose density is within tolerance of a flagged one."""
    height, width = dens.shape
    need = near.copy()
    for r in range(height):
        for c in range(width):
            if near[r, c]:
                for r_ in range(max(r - kw, 0), min(r + kw + 1, height)):
                    for c_ in range(max(c - kw, 0), min(c + kw + 1, width)):
                        if abs(dens[r_, c_] - dens[r, c]) <= tol[r, c] + tol[r_, c_]:
                            need[r_, c_] = 1
    return np.flatnonzero(need)


@njit(cache=True, nogil=True)
def _reparent_cpu(image, dens, tol, exact, has_exact, pixels, parent, dist_parent,
                  odr, odc, ods, sq, kw, big, lo, hi):
    """Redoes the parent search of ``pixels[lo:hi]`` with exact densities where they are close."""
    width = image.shape[1]
    for k in range(lo, hi):
        r, c = divmod(pixels[k], width)
        p, best, _ = _search(image, dens, tol, exact, has_exact, True, r, c, odr, odc, ods,
                             sq, kw, big)
        parent[r, c] = p
        dist_parent[r, c] = math.sqrt(np.float64(best))


@njit(cache=True)
def _labels_cpu(parent, dist_parent, max_dist):
    """Cuts parents further than ``max_dist``, takes each pixel's root, and ranks the roots."""
    n = parent.size
    root = parent.ravel().copy()
    far = dist_parent.ravel()
    for i in range(n):
        if far[i] > max_dist:
            root[i] = i
    for i in range(n):
        j = i
        while root[j] != j:
            j = root[j]
        k = i
        while root[k] != j:  # path compression
            nxt = root[k]
            root[k] = j
            k = nxt
    rank = np.empty(n, np.intp)
    count = 0
    for i in range(n):
        if root[i] == i:
            rank[i] = count
            count += 1
    labels = np.empty(n, np.intp)
    for i in range(n):
        labels[i] = rank[root[i]]
    return labels.reshape(parent.shape)


def _offsets(kw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window offsets (dr, dc) but (0, 0), sorted by dr**2 + dc**2, with that squared distance.

    A pixel is never its own parent candidate (its density is not higher than itself).
    """
    dr, dc = np.meshgrid(np.arange(-kw, kw + 1), np.arange(-kw, kw + 1), indexing="ij")
    dr, dc = dr.ravel(), dc.ravel()
    ds = (dr * dr + dc * dc).astype(np.float64)
    order = np.argsort(ds, kind="stable")[1:]  # (0, 0) comes first: the only ds == 0
    return dr[order].astype(np.int64), dc[order].astype(np.int64), ds[order]


def _per_task(n: int, threads: int) -> int:
    """Rows (or pixels) per shared task: about 16 tasks per thread, so that a thread slowed by a
    busy machine leaves its share to the others."""
    return max(1, n // (16 * worker_threads(threads)))


def _exact_densities(image, dens, pixels, kw, inv, sq, threads: int = 0) -> None:
    """Exact densities at the flat ``pixels``, written into ``dens`` (which holds the noise)."""
    share_rows(lambda lo, hi: _density_exact_cpu(image, dens, pixels, kw, inv, sq, lo, hi),
               pixels.size, _per_task(pixels.size, threads), threads)


def _density_pairs(planes, noise, kw, inv, sq, threads: int = 0) -> np.ndarray:
    """float64 fast densities: the noise plus every task's band of pair terms, in task order."""
    height = planes.shape[1]
    bands = {}

    def task(lo, hi):
        bands[lo] = _density_pairs_cpu(planes, kw, inv, sq, lo, hi)

    share_rows(task, height, _per_task(height, threads), threads)
    dens = noise.copy()
    for lo in sorted(bands):
        band = bands[lo]
        dens[lo:lo + len(band)] += band
    return dens


def _density_tolerance(dens: np.ndarray, noise: np.ndarray, kw: int) -> np.ndarray:
    """Bound on |fast density - scikit-image's density| per pixel (float64).

    Both are float64 sums of the noise and n <= (2 kw + 1)**2 terms, scikit-image's in window
    order, the fast one in any order and grouping of at most m = n + kw + 2 additions (pair terms
    by rows, then the bands). The fast terms are within _EXP_REL_ERR of the C exp's, and a sum of
    any order is within gamma_m = m 2**-53 / (1 - m 2**-53) of the exact sum of its inputs
    relatively to the sum of their magnitudes, |density| + 2 |noise|. So the gap is at most
    (_EXP_REL_ERR + 2 gamma_m) (|density| + 2 |noise|): doubled for the slack in using the fast
    density in place of the exact one, plus an absolute term for exponentials below 1e-307.
    """
    n = (2 * kw + 1) ** 2 + kw + 2
    rel = 2.0 * (_EXP_REL_ERR + 2.0 * n * _ULP_HALF)
    return rel * (np.abs(dens) + 2.0 * np.abs(noise)) + n * 1e-307


def _quickshift_cpu(image: np.ndarray, kernel_size: float, max_dist: float, noise: np.ndarray,
                    exact: bool = False, threads: int = 0):
    """scikit-image's ``_quickshift_cython`` on an (H, W, C) C-contiguous float32/float64 image.

    Args:
        image: (H, W, C) float32 or float64, C-contiguous.
        kernel_size, max_dist: as scikit-image, cast to the image's type as its Cython does.
        noise: (H, W) ``normal(scale=1e-5)`` draws, already cast to the image's type.
        exact: use the C library's exp for every density (taken for non-finite images).
        threads: threads the kernels may share the work between (0: Numba's thread count); the
            result does not depend on it.

    Returns:
        (labels (H, W) intp, parent (H, W) intp, dist_parent (H, W) in the image's type).
    """
    ftype = image.dtype.type
    height, width = image.shape[:2]
    with np.errstate(over="ignore", invalid="ignore"):
        ks = ftype(kernel_size)
        inv = ftype(-0.5 / np.float64(ks * ks))
        kw = int(math.ceil(np.float64(ftype(3) * ks)))
        max_dist_t = ftype(max_dist)
        big = ftype(np.finfo(np.float64).max)  # float32: inf, as C's (float)DBL_MAX
    # Windows wider than the image visit the same pixels as the image-wide one.
    kw = min(kw, max(height, width))
    sq = (np.arange(-kw, kw + 1, dtype=np.float64) ** 2).astype(image.dtype)
    odr, odc, ods = _offsets(kw)
    if image.size == 0 or height * width == 0:
        empty = np.zeros((height, width), np.intp)
        return empty, empty.copy(), np.zeros((height, width), image.dtype)

    single = image.dtype == np.float32
    if exact:
        dens = noise.copy()
        _exact_densities(image, dens, np.arange(height * width), kw, inv, sq, threads)
        tol = np.zeros((height, width), np.float64)
    else:
        planes = np.ascontiguousarray(image.transpose(2, 0, 1))
        if single:
            dens = np.empty_like(noise)
            undecided = np.zeros((height, width), np.uint8)
            share_rows(lambda lo, hi: _density_f32_cpu(planes, noise, kw, inv, sq, dens,
                                                       undecided, lo, hi),
                       height, _per_task(height, threads), threads)
            redo = np.flatnonzero(undecided)
            if redo.size:
                dens.ravel()[redo] = noise.ravel()[redo]
                _exact_densities(image, dens, redo, kw, inv, sq, threads)
            tol = np.zeros((height, width), np.float64)
        else:
            dens = _density_pairs(planes, noise, kw, inv, sq, threads)
            tol = _density_tolerance(dens, noise, kw)

    parent = np.empty((height, width), np.intp)
    dist_parent = np.empty((height, width), image.dtype)
    near = np.zeros((height, width), np.uint8)
    share_rows(lambda lo, hi: _parents_cpu(image, dens, tol, odr, odc, ods, sq, kw, big, parent,
                                           dist_parent, near, lo, hi),
               height, _per_task(height, threads), threads)
    if not (exact or single) and near.any():
        pixels = _near_pixels(dens, tol, near, kw)
        exact_dens = noise.copy()
        _exact_densities(image, exact_dens, pixels, kw, inv, sq, threads)
        has_exact = np.zeros((height, width), np.bool_)
        has_exact.ravel()[pixels] = True
        redo = np.flatnonzero(near)
        share_rows(lambda lo, hi: _reparent_cpu(image, dens, tol, exact_dens, has_exact, redo,
                                                parent, dist_parent, odr, odc, ods, sq, kw, big,
                                                lo, hi),
                   redo.size, _per_task(redo.size, threads), threads)
    labels = _labels_cpu(parent, dist_parent, max_dist_t)
    return labels, parent, dist_parent
