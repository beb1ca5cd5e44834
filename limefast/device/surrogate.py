"""The local surrogate on a PyTorch device: ``limefast.core.surrogate``'s batched ridge, in
torch.linalg.

Same mathematics as ``WeightedProblem`` (read its docstring first): one weighted, centred Gram
matrix ``G = Xc' W Xc`` in float64 serves every fit, and each fit is a small solve with
``G[S, S] (+ alpha I)``. Here every explained label is solved at once: forward selection's
candidate fits of one round are one batched solve over (labels, candidates), highest-weights is
one solve with a right-hand side per label, and the final ridge is one batched Cholesky over the
labels' selected features. The matrices are tiny (features x features), so float64 costs nothing
even on GPUs with slow float64; the (samples x features) products are the only real work.

The results stay on the device until the end: one packed (labels, 2k + 3) float64 tensor (chosen
features, coefficients, intercept, score, local prediction) comes back to the host, where they
become ``LabelFit``s in lime's return types.
"""

from __future__ import annotations

import numpy as np
import torch

from limefast.core.surrogate import LabelFit, ranked, resolve_method, robust_scale, unit_sums

DEVICE_METHODS = ("none", "forward_selection", "highest_weights")


class DeviceProblem:
    """``WeightedProblem`` for every label at once, on the device of ``rows``.

    Args:
        rows: (N, F) 0/1 rows on the device (any integer dtype); row 0 is the instance.
        targets: (N, L) classifier outputs of the explained labels, on the same device.
        weights: (N,) kernel weights (host or device).
        unit: rows drawn together (complement pairs: 2), as ``WeightedProblem`` takes it.
    """

    def __init__(self, rows: torch.Tensor, targets: torch.Tensor, weights, unit: int = 1):
        device = rows.device
        self.unit = unit
        weights = np.asarray(weights, dtype=np.float64) if not torch.is_tensor(weights) else weights
        if not torch.is_tensor(weights) and weights.sum() == 0:
            raise ZeroDivisionError("Weights sum to zero, can't be normalized")
        self.x = rows.to(torch.float64)
        self.y = targets.to(torch.float64)
        self.w = torch.as_tensor(weights, dtype=torch.float64).to(device, non_blocking=True)
        total = self.w.sum()
        # np.average(a, axis=0, weights=w): sum(w * a) / sum(w)
        self.x_offset = (self.w @ self.x) / total
        self.y_offset = (self.w @ self.y) / total
        sw = self.w.sqrt()[:, None]
        xw = (self.x - self.x_offset) * sw
        self.gram = xw.T @ xw  # (F, F)
        self.xty = (xw.T @ ((self.y - self.y_offset) * sw)).T.contiguous()  # (L, F)
        self.n_features = self.gram.shape[0]
        self.n_labels = self.y.shape[1]

    # -- feature selection, every label at once -----------------------------------------------
    def select(self, method: str, num_features: int) -> torch.Tensor:
        """(L, k) chosen features per label, in lime's order (``lime_base.feature_selection``)."""
        n, labels = self.n_features, self.n_labels
        method = resolve_method(method, num_features)
        if method == "none":
            return torch.arange(n, device=self.gram.device).expand(labels, n)
        if method == "forward_selection":
            return self._forward_selection(num_features)
        if method == "highest_weights":
            return self._highest_weights(num_features)
        raise ValueError(f"feature_selection {method!r} has no device implementation; "
                         f"use one of {DEVICE_METHODS} or 'auto'")

    def _forward_selection(self, num_features: int) -> torch.Tensor:
        # As WeightedProblem._forward_selection: each round keeps the candidate with the largest
        # explained sum of squares b_S' G_S^-1 b_S (R^2 = explained / TSS for a fixed label);
        # here the candidates of every label form one batched solve.
        n, labels, device = self.n_features, self.n_labels, self.gram.device
        tss = (self.w[:, None] * (self.y - self.y_offset) ** 2).sum(0)  # (L,)
        used = torch.empty((labels, 0), dtype=torch.long, device=device)
        taken = torch.zeros((labels, n), dtype=torch.int8, device=device)
        label_index = torch.arange(labels, device=device)
        for k in range(min(num_features, n)):
            # Unused features in increasing order: a stable sort puts the untaken (0) first.
            cand = torch.sort(taken, dim=1, stable=True).indices[:, :n - k]  # (L, C)
            c = cand.shape[1]
            idx = torch.cat([used[:, None, :].expand(labels, c, k), cand[:, :, None]], dim=2)
            a = self.gram[idx[..., :, None], idx[..., None, :]]  # (L, C, k+1, k+1)
            rhs = torch.gather(self.xty[:, None, :].expand(labels, c, n), 2, idx)  # (L, C, k+1)
            sol = _solve_batched(a, rhs)
            explained = (rhs * sol).sum(-1)  # (L, C)
            explained = torch.where(torch.isfinite(explained), explained,
                                    torch.full_like(explained, -torch.inf))
            # argmax takes the first maximum: ties go to the lowest index, as lime's strict >.
            first = torch.zeros_like(tss, dtype=torch.long)  # constant target: all score the same
            pick = torch.where(tss > 0, explained.argmax(dim=1), first)
            best = cand[label_index, pick]
            used = torch.cat([used, best[:, None]], dim=1)
            taken[label_index, best] = 1
        return used

    def _highest_weights(self, num_features: int) -> torch.Tensor:
        n = self.n_features
        eye = torch.eye(n, dtype=torch.float64, device=self.gram.device)
        coef = _solve_pos((self.gram + 0.01 * eye)[None], self.xty[:, :, None])[..., 0]  # (L, F)
        score = (coef * self.x[0]).abs()
        # Python's sorted(key=abs, reverse=True) is stable: ties keep index order.
        order = torch.sort(-score, dim=1, stable=True).indices
        return order[:, :num_features]

    # -- the surrogate of every label ----------------------------------------------------------
    def fit(self, method: str, num_features: int) -> torch.Tensor:
        """Packed (L, 3k + 3) results: features, coefficients, their standard errors,
        intercept, score, local_pred."""
        idx = self.select(method, num_features)  # (L, k)
        labels, k = idx.shape
        eye = torch.eye(k, dtype=torch.float64, device=idx.device)
        a = self.gram[idx[:, :, None], idx[:, None, :]] + eye  # Ridge(alpha=1)
        b = torch.gather(self.xty, 1, idx)
        coef = _solve_pos(a, b[:, :, None])[..., 0]  # (L, k)
        intercept = self.y_offset - (self.x_offset[idx] * coef).sum(1)
        full = torch.zeros((labels, self.n_features), dtype=torch.float64, device=idx.device)
        full.scatter_(1, idx, coef)
        pred = self.x @ full.T + intercept  # (N, L)
        numerator = (self.w[:, None] * (self.y - pred) ** 2).sum(0)
        denominator = (self.w[:, None] * (self.y - self.y_offset) ** 2).sum(0)
        score = torch.where(denominator != 0, 1 - numerator / denominator,
                            (numerator == 0).to(torch.float64))
        local_pred = pred[0]
        stderr = self._stderr(idx, a, self.y - pred, coef)
        return torch.cat([idx.to(torch.float64), coef, stderr, intercept[:, None],
                          score[:, None], local_pred[:, None]], dim=1)

    def _stderr(self, idx: torch.Tensor, bread: torch.Tensor, resid: torch.Tensor,
                coef: torch.Tensor, alpha: float = 1.0):
        """(L, k) standard errors, as ``WeightedProblem.stderr`` (its docstring has the
        formula: the HC1 sandwich and the ridge's shrinkage), for every label at once."""
        n, k = self.x.shape[0], idx.shape[1]
        if k == 0:
            return torch.zeros_like(idx, dtype=torch.float64)
        xs = (self.x[:, idx] - self.x_offset[idx]).permute(1, 0, 2)  # (L, N, k)
        u = xs * (self.w[:, None] * resid).T[:, :, None]
        u = unit_sums(u.transpose(0, 1), self.unit).transpose(0, 1)  # (L, units, k)
        meat = u.transpose(1, 2) @ u
        inv = torch.linalg.pinv(bread, hermitian=True)
        cov = inv @ meat @ inv * robust_scale(n, k, self.unit)
        shrinkage = alpha * (inv @ coef[:, :, None])[..., 0]
        return (torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0) + shrinkage ** 2).sqrt()


def unpack(packed: np.ndarray) -> list[LabelFit]:
    """``LabelFit``s (lime's types: np.int64 features, np.float64 weights) from ``fit``."""
    k = (packed.shape[1] - 3) // 3
    fits = []
    for row in packed:
        used = row[:k].astype(np.intp)
        coef = row[k:2 * k]
        exp = ranked(used, coef)
        stderr = dict(zip((int(f) for f in used), row[2 * k:3 * k].tolist()))
        fits.append(LabelFit(np.float64(row[3 * k]), exp, float(row[3 * k + 1]),
                             np.array([row[3 * k + 2]]), stderr))
    return fits


def fit_labels(rows: torch.Tensor, targets: torch.Tensor, weights, method: str,
               num_features: int, unit: int = 1) -> list[LabelFit]:
    """One ``LabelFit`` per column of ``targets``, solved on their device; one transfer back."""
    packed = DeviceProblem(rows, targets, weights, unit).fit(method, num_features)
    return unpack(packed.cpu().numpy())


def _solve_pos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cholesky solve, as scikit-learn's Ridge; minimum-norm least squares where not positive."""
    chol, info = torch.linalg.cholesky_ex(a)
    x = torch.cholesky_solve(b, chol)
    if bool((info != 0).any()):  # alpha > 0 keeps this off the normal path
        x = torch.where((info != 0)[..., None, None], torch.linalg.pinv(a, hermitian=True) @ b, x)
    return x


def _solve_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The stack of small systems ``a[...] x = b[...]`` of one round; if any is singular, the
    pseudo-inverse for the whole stack, as ``np.linalg.solve`` raising makes the CPU path do."""
    lu, pivots, info = torch.linalg.lu_factor_ex(a)
    if bool((info != 0).any()):
        # numpy's pinv cut-off: singular values below 1e-15 * the largest.
        pinv = torch.linalg.pinv(a, hermitian=True, rtol=1e-15)
        return (pinv @ b[..., None])[..., 0]
    return torch.linalg.lu_solve(lu, pivots, b[..., None])[..., 0]
