"""Slow, obviously right twins of limefast's kernels, for tests only."""

from __future__ import annotations

import numpy as np


def naive_perturb(image, fudged, segments, rows):
    """lime's per-sample loop (lime_image.LimeImageExplainer.data_labels), without the model."""
    out = np.empty((len(rows),) + image.shape, image.dtype)
    for i, row in enumerate(rows):
        temp = image.copy()
        mask = np.zeros(segments.shape, dtype=bool)
        for z in np.where(row == 0)[0]:
            mask[segments == z] = True
        temp[mask] = fudged[mask]
        out[i] = temp
    return out


def naive_segment_means(image, segments):
    """Per-segment channel means in float64, segment by segment, as lime computes them."""
    labels = np.unique(segments)
    return np.array([[np.mean(image[segments == s][:, c]) for c in range(image.shape[2])]
                     for s in labels])


def naive_quickshift(image, kernel_size, max_dist, noise):
    """scikit-image's ``_quickshift_cython``, one window offset at a time, in NumPy.

    ``image`` is the preprocessed (H, W, C) float32/float64 image, ``noise`` the (H, W) tie-break
    noise in its dtype. Every pixel's sums run in scikit-image's order (window offsets in row-major
    order), exp is Python's ``math.exp`` (the C library's), and for float32 each density step is
    formed in float64 and rounded back, as C does. Returns (labels, parent, dist_parent).
    """
    import math

    dtype = image.dtype
    ftype = dtype.type
    height, width, _ = image.shape
    with np.errstate(over="ignore"):
        ks = ftype(kernel_size)
        inv = ftype(-0.5 / np.float64(ks * ks))
        kw = int(math.ceil(np.float64(ftype(3) * ks)))
        big = ftype(np.finfo(np.float64).max)
    exp = np.vectorize(math.exp, otypes=[np.float64])
    rows, cols = np.mgrid[0:height, 0:width]

    def offset_dists(dr, dc):
        r2, c2 = rows + dr, cols + dc
        inside = (r2 >= 0) & (r2 < height) & (c2 >= 0) & (c2 < width)
        a, b = image[rows[inside], cols[inside]], image[r2[inside], c2[inside]]
        dist = np.zeros(inside.sum(), dtype)
        for ch in range(image.shape[2]):
            t = a[:, ch] - b[:, ch]
            dist += t * t
        dist += ftype(dr) * ftype(dr)
        dist += ftype(dc) * ftype(dc)
        return inside, r2[inside], c2[inside], dist

    dens = noise.astype(dtype).copy()
    for dr in range(-kw, kw + 1):
        for dc in range(-kw, kw + 1):
            inside, _, _, dist = offset_dists(dr, dc)
            terms = exp((dist * inv).astype(np.float64))
            dens[inside] = (dens[inside].astype(np.float64) + terms).astype(dtype)

    parent = np.arange(height * width).reshape(height, width)
    closest = np.full((height, width), big, dtype)
    for dr in range(-kw, kw + 1):
        for dc in range(-kw, kw + 1):
            inside, r2, c2, dist = offset_dists(dr, dc)
            higher = dens[r2, c2] > dens[inside]
            better = higher & (dist < closest[inside])
            idx = np.flatnonzero(inside.ravel())[better]
            closest.ravel()[idx] = dist[better]
            parent.ravel()[idx] = r2[better] * width + c2[better]
    dist_parent = np.sqrt(closest.astype(np.float64)).astype(dtype)

    flat = parent.ravel().copy()
    too_far = dist_parent.ravel() > ftype(max_dist)
    flat[too_far] = np.arange(height * width)[too_far]
    old = np.zeros_like(flat)
    while (old != flat).any():
        old = flat
        flat = flat[flat]
    labels = np.unique(flat, return_inverse=True)[1].reshape(height, width)
    return labels, parent, dist_parent


def naive_robust_stderr(x, y, w, alpha=1.0, clusters=None):
    """Standard errors of ``Ridge(alpha).fit(x, y, sample_weight=w)``: the textbook HC1
    sandwich on explicitly weighted, centred data, and the ridge's shrinkage bias
    ``alpha (Xc' W Xc + alpha I)^-1 coef`` in quadrature; one formula, no shared code.
    With ``clusters`` (N,) ids, the cluster-robust CR1 sandwich: a loop over the clusters,
    each one's summed score ``sum_i w_i e_i xc_i`` an outer product, times
    ``G / (G - 1) * (n - 1) / (n - p - 1)``."""
    from sklearn.linear_model import Ridge

    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    model = Ridge(alpha=alpha).fit(x, y, sample_weight=w)
    resid = y - model.predict(x)
    xc = x - np.average(x, axis=0, weights=w)
    bread = np.linalg.inv(xc.T @ np.diag(w) @ xc + alpha * np.eye(p))
    if clusters is None:
        meat = xc.T @ np.diag((w * resid) ** 2) @ xc
        cov = bread @ meat @ bread * n / (n - p - 1)
    else:
        ids = np.unique(clusters)
        meat = np.zeros((p, p))
        for c in ids:
            score = (xc[clusters == c] * (w * resid)[clusters == c, None]).sum(0)
            meat += np.outer(score, score)
        g = len(ids)
        cov = bread @ meat @ bread * g / (g - 1) * (n - 1) / (n - p - 1)
    bias = alpha * bread @ model.coef_
    return model.coef_, np.sqrt(np.diag(cov) + bias ** 2)
