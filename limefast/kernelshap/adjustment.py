"""The regression adjustment of the KernelSHAP fit (Witter, Liu and Musco, NeurIPS 2025).

Boosted trees g are fitted to the coalitions' outputs; a tree's Shapley values are exact
(``TreeProxy.shapley``), so only those of the residual game ``v - g`` are estimated, by the
constrained fit of ``limefast.kernelshap.estimator``: ``phi = phi(g) + fit(v - g)``. The values
still add up (both parts do), the design and the images are the same, and a design that holds
every coalition gives the Shapley values themselves.

The standard errors are the stratified sandwich's on the residuals of proxies fitted without
the coalitions they are taken at (two folds of pairs): the proxy fitted to all of them follows
them more closely than the coalitions not drawn, and its own residuals would understate the
error. A label for which these errors come out larger than the plain fit's (a nearly additive
game, which the fit already describes and the trees only blur) keeps the plain fit.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from limefast.kernelshap.estimator import Design, ShapleyFit, _r2, fit


def _one_openmp_thread():
    """scikit-learn's boosting on one OpenMP thread: its trees are small, and its threads
    would contend with the caller's (the executor's, the kernels')."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


class TreeProxy:
    """A gradient-boosted tree model of the game on 0/1 coalitions, whose Shapley values are
    exact: a leaf reached by a path that needs the superpixels P on and Q off is the game
    ``value * [P in S, Q outside S]``, worth ``value (|P|-1)! |Q|! / (|P|+|Q|)!`` to each of P
    and ``-value |P|! (|Q|-1)! / (|P|+|Q|)!`` to each of Q (the order in which i comes after
    the rest of P and before Q).

    The trees are scikit-learn's histogram gradient boosting (on 0/1 columns a split is
    ``x <= 0.5``); their nodes are read from its fitted predictors."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def fit(cls, rows: np.ndarray, values: np.ndarray, weights: np.ndarray,
            seed: int = 0) -> TreeProxy:
        """Boosted trees on (n, F) 0/1 ``rows`` against (n,) ``values``."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        model = HistGradientBoostingRegressor(
            max_iter=PROXY_TREES, max_depth=PROXY_DEPTH, learning_rate=PROXY_LEARNING_RATE,
            min_samples_leaf=PROXY_MIN_LEAF, early_stopping=False, random_state=seed)
        with _one_openmp_thread():
            model.fit(np.asarray(rows, dtype=np.float64), values, sample_weight=weights)
        return cls(model)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        with _one_openmp_thread():
            return self.model.predict(np.asarray(rows, dtype=np.float64))

    def shapley(self, f: int) -> np.ndarray:
        """(F,) exact Shapley values of the game ``S -> proxy(1_S)``."""
        phi = np.zeros(f)
        for (predictor,) in self.model._predictors:
            nodes = predictor.nodes
            stack = [(0, (), ())]
            while stack:
                node, on, off = stack.pop()
                if nodes["is_leaf"][node]:
                    value = float(nodes["value"][node])
                    p, q = len(on), len(off)
                    norm = math.factorial(p + q)
                    if p:
                        phi[list(on)] += value * math.factorial(p - 1) * math.factorial(q) / norm
                    if q:
                        phi[list(off)] -= value * math.factorial(p) * math.factorial(q - 1) / norm
                    continue
                j = int(nodes["feature_idx"][node])  # x_j <= threshold goes left: j hidden
                stack.append((int(nodes["left"][node]), on, off + (j,)))
                stack.append((int(nodes["right"][node]), on + (j,), off))
        return phi


# The proxy: 100 boosted trees of depth 4, learning rate 0.1, leaves of one coalition or more
# (chosen on the digits and shapes games of benchsuite.shapley_games: 30 or 50 trees of depth 3
# gave errors up to twice as large; leaves of 5 or more coalitions 3x larger at 5F images,
# 1.4x smaller at 10F-20F); PROXY_FOLDS proxies more, each on the other folds' pairs, give the
# standard errors.
PROXY_TREES, PROXY_DEPTH, PROXY_LEARNING_RATE, PROXY_MIN_LEAF = 100, 4, 0.1, 1
PROXY_FOLDS = 2


def regression_adjusted(design: Design, targets: np.ndarray) -> ShapleyFit:
    """``fit`` with a regression adjustment (Witter, Liu and Musco, NeurIPS 2025): a tree
    proxy g of the game is fitted to the coalitions, its Shapley values are exact
    (``TreeProxy.shapley``), and the constrained fit estimates those of the residual game
    ``v - g`` only. The values add up, and are exact when the design is.

    The proxy fitted to the coalitions follows them more closely than the coalitions not
    drawn, so the standard errors are those of the residuals of proxies that did not see them
    (pair u in fold u mod ``PROXY_FOLDS``, the full and empty coalitions in every training
    set). A label whose adjusted values have the larger estimated error (a game the constrained
    fit already describes, nearly additive) keeps the plain fit's."""
    y = np.asarray(targets, dtype=np.float64)
    plain = fit(design, y)
    if design.exact or not plain.identified:
        return plain
    try:
        return _adjusted(design, y, plain)
    except AttributeError as exc:  # scikit-learn's tree internals moved: the plain fit
        warnings.warn(f"limefast: KernelSHAP's regression adjustment is unavailable with this "
                      f"scikit-learn ({exc}); the values are the constrained fit's alone",
                      RuntimeWarning, stacklevel=3)
        return plain


def _adjusted(design: Design, y: np.ndarray, plain: ShapleyFit) -> ShapleyFit:
    """``regression_adjusted`` past its exact and unidentified cases."""
    f, n = design.rows.shape[1], len(y)
    z = design.rows.astype(np.float64)
    fold = np.concatenate([[-1, -1], np.repeat(np.arange((n - 2) // 2) % PROXY_FOLDS, 2)])
    proxied = np.zeros((f, y.shape[1]))
    resid, held_out = np.empty_like(y), np.empty_like(y)
    for label in range(y.shape[1]):
        proxy = TreeProxy.fit(z, y[:, label], np.ones(n))
        proxied[:, label] = proxy.shapley(f)
        resid[:, label] = y[:, label] - proxy.predict(z)
        held_out[:, label] = resid[:, label]
        for k in range(PROXY_FOLDS):
            test = fold == k
            if test.any() and (~test).sum() > 2:
                other = TreeProxy.fit(z[~test], y[~test, label], np.ones((~test).sum()))
                held_out[test, label] = y[test, label] - other.predict(z[test])
    adjusted = fit(design, resid)
    honest = fit(design, held_out)
    keep = (np.einsum("ffl->l", honest.cov) < np.einsum("ffl->l", plain.cov))
    out = plain
    out.values = np.where(keep, adjusted.values + proxied, plain.values)
    out.values += (y[0] - y[1] - out.values.sum(0)) / f  # efficiency to the sum's rounding
    out.cov = np.where(keep, honest.cov, plain.cov)
    out.stderr = np.where(keep, honest.stderr, plain.stderr)
    out.score = _r2(z[2:], design.weights[2:] / design.weights[2:].sum(), y[2:] - y[1],
                    out.values)
    return out
