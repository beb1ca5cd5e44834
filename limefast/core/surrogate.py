"""The local surrogate: weighted ridge regressions for every explained label at once.

lime fits one scikit-learn ``Ridge`` per label and, for forward selection, one per label, round and
candidate feature. Every one of those fits is a solve against the same weighted, centred Gram
matrix ``G = Xc' W Xc`` (``Xc`` the 0/1 rows centred by their weighted mean), so it is built once,
in float64, and each fit becomes a small solve with ``G[S, S] (+ alpha I)``. The result equals
``Ridge(alpha, fit_intercept=True).fit(X[:, S], y, sample_weight=w)`` up to rounding (scikit-learn
solves the same normal equations by Cholesky).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from limefast import config

FEATURE_SELECTION_METHODS = ("auto", "none", "forward_selection", "highest_weights", "lasso_path")


def resolve_method(method: str, num_features: int) -> str:
    """lime's ``auto``: forward selection up to 6 features, highest weights beyond."""
    if method == "auto":
        return "forward_selection" if num_features <= 6 else "highest_weights"
    return method


def ranked(features, coef) -> list:
    """lime's ``local_exp`` of one label: (feature, weight) pairs by decreasing ``|weight|``,
    ties in the order the features were selected (``sorted`` is stable)."""
    return sorted(zip(features, coef), key=lambda x: np.abs(x[1]), reverse=True)


@dataclass
class LabelFit:
    """One label's surrogate, in lime's return types, and the standard errors of its weights."""

    intercept: float
    local_exp: list
    score: float
    local_pred: np.ndarray
    stderr: dict = field(default_factory=dict)  # feature -> standard error of its weight


def robust_scale(n_samples: int, n_coef: int, unit: int = 1) -> float:
    """The sandwich's small-sample factor: HC1's n / (n - p - 1) for independent rows (p
    coefficients and the intercept), and for rows drawn in units of ``unit`` (the complement
    pairs of ``sampler="paired"``) the cluster-robust CR1, ``G / (G - 1) * (n - 1) /
    (n - p - 1)`` with G units (HC1 again when ``unit`` is 1). 1 when the fit has no degrees
    of freedom left."""
    dof = n_samples - n_coef - 1
    if dof <= 0:
        return 1.0
    units = -(-n_samples // unit)
    if unit == 1:
        return n_samples / dof
    return units / (units - 1) * (n_samples - 1) / dof if units > 1 else 1.0


def unit_sums(u, unit: int):
    """(G, ...) sums of the rows of ``u`` (N, ...) in consecutive units of ``unit`` rows (a
    last unit cut short counts as it is): the scores a cluster-robust sandwich multiplies out.
    ``u`` is a NumPy array or a torch tensor; with ``unit`` 1 it is returned as it is."""
    if unit == 1:
        return u
    short = -u.shape[0] % unit
    if short:
        tail = (short,) + tuple(u.shape[1:])
        u = (np.concatenate([u, np.zeros(tail, u.dtype)]) if isinstance(u, np.ndarray)
             else _cat([u, u.new_zeros(tail)]))
    return u.reshape((u.shape[0] // unit, unit) + tuple(u.shape[1:])).sum(1)


def _cat(tensors):
    import torch

    return torch.cat(tensors)


class WeightedProblem:
    """The weighted least-squares problem shared by all labels of one explanation.

    Args:
        data: (N, F) 0/1 rows (any integer dtype); row 0 is the explained instance.
        targets: (N, L) classifier outputs of the explained labels, float64.
        weights: (N,) kernel weights.
        unit: rows drawn together (``sampling.design_unit``): 1 for lime's independent rows,
            2 for complement pairs, whose standard errors treat a pair as one draw.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                 unit: int = 1):
        self.data = data
        self.y = targets
        self.w = weights
        self.unit = unit
        # Offsets as scikit-learn's _preprocess_data computes them (weighted means), then the
        # Gram matrix and X'y summed over row blocks: memory stays at one block of float64 rows
        # whatever num_samples is.
        self.x_offset = self._blocks(lambda x, w: w @ x).sum(0) / weights.sum()
        self.y_offset = np.average(targets, axis=0, weights=weights)
        n_features = data.shape[1]
        self.gram = np.zeros((n_features, n_features))
        self.xty = np.zeros((n_features, targets.shape[1]))
        for rows in self._row_blocks():
            sw = np.sqrt(weights[rows])[:, None]
            xw = (data[rows] - self.x_offset) * sw
            self.gram += xw.T @ xw
            self.xty += xw.T @ ((targets[rows] - self.y_offset) * sw)

    def _row_blocks(self):
        n, f = self.data.shape
        step = max(1, config.ROW_DRAW_ELEMENTS // max(1, f))
        step = -(-step // self.unit) * self.unit  # whole units: the sandwich sums within them
        return [slice(a, min(n, a + step)) for a in range(0, n, step)]

    def _blocks(self, fn):
        return np.stack([fn(self.data[rows].astype(np.float64), self.w[rows])
                         for rows in self._row_blocks()])

    def predict(self, features: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
        """(N,) surrogate predictions ``X[:, features] @ coef + intercept``."""
        out = np.empty(self.data.shape[0])
        for rows in self._row_blocks():
            out[rows] = self.data[rows][:, features].astype(np.float64) @ coef + intercept
        return out

    # -- fitting ---------------------------------------------------------------------------
    def ridge(self, features: np.ndarray, label: int, alpha: float) -> tuple[np.ndarray, float]:
        """Coefficients and intercept of the weighted ridge on ``features`` for one label."""
        features = np.asarray(features, dtype=np.intp)
        if features.size == 0:
            return np.zeros(0), float(self.y_offset[label])
        a = self.gram[np.ix_(features, features)]
        if alpha:
            a = a + alpha * np.eye(features.size)
        b = self.xty[features, label]
        coef = _solve_pos(a, b)
        intercept = self.y_offset[label] - self.x_offset[features] @ coef
        return coef, intercept

    def ridge_all(self, alpha: float) -> np.ndarray:
        """(F, L) coefficients of the weighted ridge on all features for every label."""
        a = self.gram + alpha * np.eye(self.gram.shape[0])
        return _solve_pos(a, self.xty)

    def r2(self, features: np.ndarray, coef: np.ndarray, intercept: float, label: int) -> float:
        """Weighted R^2 exactly as ``sklearn.metrics.r2_score(..., sample_weight=w)``."""
        y = self.y[:, label]
        pred = self.predict(features, coef, intercept)
        w = self.w
        numerator = np.sum(w * (y - pred) ** 2)
        denominator = np.sum(w * (y - np.average(y, weights=w)) ** 2)
        if denominator != 0:
            return float(1 - numerator / denominator)
        return 1.0 if numerator == 0 else 0.0

    def stderr(self, features: np.ndarray, coef: np.ndarray, intercept: float, label: int,
               alpha: float) -> np.ndarray:
        """Standard errors of a weighted ridge's coefficients on ``features``, against the
        coefficients more rows of the same explanation would give.

        ``coef = M^-1 Xc' W yc`` with ``M = Xc' W Xc + alpha I`` (the centred Gram matrix the fit
        used). Over redraws of the rows its covariance is the heteroscedasticity-robust (HC1)
        sandwich ``M^-1 (sum_i w_i^2 e_i^2 xc_i xc_i') M^-1 * n / (n - p - 1)``, with ``e_i`` the
        fit's residuals: no assumption that the model's answers are linear in the superpixels or
        equally noisy everywhere. Rows drawn in units (complement pairs) are not independent: their
        scores ``w_i e_i xc_i`` are summed within each unit before the outer product (the
        cluster-robust sandwich, ``robust_scale``'s CR1 factor). The penalty also shrinks the
        coefficients, by about ``alpha M^-1 coef``, a bias that fades as rows are added; it is added
        in quadrature, so the error is a root-mean-square error and intervals ``w +- z * se`` cover
        the many-row weights (without it, nominal 90% intervals at 300 rows covered them less than
        80% of the time). The centring offsets are treated as fixed.
        """
        features = np.asarray(features, dtype=np.intp)
        k = features.size
        if k == 0:
            return np.zeros(0)
        meat = np.zeros((k, k))
        for rows in self._row_blocks():
            x = self.data[rows][:, features].astype(np.float64)
            resid = self.y[rows, label] - (x @ coef + intercept)
            u = unit_sums((x - self.x_offset[features]) * (self.w[rows] * resid)[:, None],
                          self.unit)
            meat += u.T @ u
        bread = np.linalg.pinv(self.gram[np.ix_(features, features)] + alpha * np.eye(k),
                               hermitian=True)
        cov = bread @ meat @ bread * robust_scale(self.data.shape[0], k, self.unit)
        shrinkage = alpha * (bread @ coef)
        return np.sqrt(np.clip(np.diag(cov), 0.0, None) + shrinkage ** 2)

    # -- feature selection -----------------------------------------------------------------
    def select(self, method: str, label: int, num_features: int) -> np.ndarray:
        """lime_base.LimeBase.feature_selection for one label (column ``label`` of targets)."""
        n = self.gram.shape[0]
        method = resolve_method(method, num_features)
        if method == "none":
            return np.arange(n)
        if method == "forward_selection":
            return self._forward_selection(label, num_features)
        if method == "highest_weights":
            return self._highest_weights(label, num_features)
        if method == "lasso_path":
            return self._lasso_path(label, num_features)
        raise ValueError(f"unknown feature_selection {method!r}")

    def _forward_selection(self, label: int, num_features: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_forward", {})
        if num_features not in cache:
            cache[num_features] = self._forward_selection_all(num_features)
        return cache[num_features][label]

    def _forward_selection_all(self, num_features: int) -> np.ndarray:
        """Greedy forward selection for every label at once: (L, rounds) chosen features.

        Each round adds, per label, the unused feature whose unregularised fit with the chosen
        ones has the best R^2. For a label R^2 = explained / TSS with the explained sum of
        squares b_S' G_S^-1 b_S, so a round is one stacked solve over labels x candidates
        (candidates already chosen get an identity system and are ruled out). np.argmax takes
        the first maximum: ties go to the lowest index, as lime's strict ``score > max_`` does.
        """
        n, n_labels = self.gram.shape[0], self.xty.shape[1]
        tss = np.sum(self.w[:, None] * (self.y - self.y_offset) ** 2, axis=0)
        used = np.empty((n_labels, 0), dtype=np.intp)
        cand = np.arange(n)
        for _ in range(min(num_features, n)):
            k = used.shape[1]
            idx = np.empty((n_labels, n, k + 1), dtype=np.intp)
            idx[:, :, :k] = used[:, None, :]
            idx[:, :, k] = cand[None, :]
            taken = (used[:, None, :] == cand[None, :, None]).any(-1)  # (L, n)
            a = self.gram[idx[..., :, None], idx[..., None, :]]
            a[taken] = np.eye(k + 1)
            rhs = self.xty[idx, np.arange(n_labels)[:, None, None]]
            explained = np.einsum("lcj,lcj->lc", rhs, _solve_batched(a, rhs))
            explained = np.where(np.isfinite(explained) & ~taken, explained, -np.inf)
            best = np.argmax(explained, axis=1)
            # a constant target scores every candidate alike: the first unused one wins
            constant = ~(tss > 0)
            best[constant] = np.argmax(~taken[constant], axis=1)
            used = np.concatenate([used, best[:, None]], axis=1)
        return used

    def _highest_weights(self, label: int, num_features: int) -> np.ndarray:
        coef = self._ridge_all_cached(0.01)[:, label] * self.data[0]
        # Python's sorted(key=abs, reverse=True) is stable: ties keep index order.
        order = np.argsort(-np.abs(coef), kind="stable")
        return order[:num_features]

    def _ridge_all_cached(self, alpha: float) -> np.ndarray:
        cache = self.__dict__.setdefault("_ridge_all", {})
        if alpha not in cache:
            cache[alpha] = self.ridge_all(alpha)
        return cache[alpha]

    def _lasso_path(self, label: int, num_features: int) -> np.ndarray:
        # lime's code, with the weighted data shared by all labels.
        if not hasattr(self, "_lasso_x"):
            self._lasso_x = (self.data - np.average(self.data, axis=0, weights=self.w)) * np.sqrt(
                self.w[:, np.newaxis]
            )
        y = self.y[:, label]
        weighted_labels = (y - np.average(y, weights=self.w)) * np.sqrt(self.w)
        nonzero = np.arange(self._lasso_x.shape[1])
        from sklearn.linear_model import lars_path  # lasso_path only: scikit-learn on use

        _, _, coefs = lars_path(self._lasso_x, weighted_labels, method="lasso", verbose=False)
        for i in range(len(coefs.T) - 1, 0, -1):
            nonzero = coefs.T[i].nonzero()[0]
            if len(nonzero) <= num_features:
                break
        return np.asarray(nonzero, dtype=np.intp)

    # -- the whole surrogate of one label --------------------------------------------------
    def fit_label(self, label: int, num_features: int, method: str, model_regressor=None,
                  random_state=None) -> LabelFit:
        """lime_base.LimeBase.explain_instance_with_data for column ``label`` of the targets."""
        used = self.select(method, label, num_features)
        if model_regressor is None:
            alpha = 1.0
            coef, intercept = self.ridge(used, label, alpha=alpha)
            score = self.r2(used, coef, intercept, label)
            local_pred = np.array([self.data[0, used].astype(np.float64) @ coef + intercept])
        else:
            # A user's regressor is used exactly as lime uses it, on lime's int64 rows.
            y = self.y[:, label]
            x = self.data[:, used].astype(np.int64)
            model_regressor.fit(x, y, sample_weight=self.w)
            score = model_regressor.score(x, y, sample_weight=self.w)
            local_pred = model_regressor.predict(x[0].reshape(1, -1))
            coef, intercept = model_regressor.coef_, model_regressor.intercept_
            # The sandwich of a ridge with the regressor's own penalty (0 if it has none); for
            # other estimators (Lasso, ...) it is the least-squares approximation.
            alpha = float(getattr(model_regressor, "alpha", 0.0) or 0.0)
        exp = ranked(used, coef)
        se = self.stderr(used, np.asarray(coef, dtype=np.float64).ravel(), float(intercept),
                         label, alpha)
        return LabelFit(np.float64(intercept), exp, score, local_pred,
                        dict(zip((int(f) for f in used), se.tolist())))


def _solve_pos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a symmetric positive (semi)definite system as scikit-learn's Ridge does.

    Cholesky first; for a singular matrix (alpha=0 with collinear columns) scikit-learn falls back
    to its SVD solver, which is the minimum-norm least-squares solution.
    """
    import scipy.linalg  # here, not at the top: ``from limefast import lime_image`` stays light

    try:
        return scipy.linalg.solve(a, b, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return np.linalg.lstsq(a, b, rcond=None)[0]


def _solve_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a stack of small systems ``a[...] x[...] = b[...]``; pseudo-inverse if singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.einsum("...ij,...j->...i", np.linalg.pinv(a, hermitian=True), b)
