"""``num_samples="auto"``: draw rows in rounds, and stop when the superpixels a reader is shown
are likely to be the ones many more rows would show.

*The cost promise.* ``"auto"`` never evaluates more images than ``max_samples``, and by default
that is lime's own default, ``num_samples=1000`` (``config.AUTO_MAX_SAMPLES``). The rows are
lime's rows: the explainer draws ``max_samples`` of them in lime's order and the rounds take
them as prefixes, so an explanation that stopped at n rows is exactly the fixed
``num_samples=n`` explanation of the same seed, and one that reaches the cap is lime's
explanation at ``max_samples`` rows: by default lime's default explanation, draw for draw (the
random state then has advanced exactly as lime's). Nothing depends on ``batch_size``.

*What every explanation states.* For each explained label, ``expected_overlap`` is the expected
share of the shown top k superpixels (k = ``stable_features``, else ``num_features`` when it is
smaller than the superpixel count, else ``get_image_and_mask``'s 5) that are also in the top k
of the *converged* explanation, the weights the same surrogate would have with unlimited rows.
It is estimated from the weights ``w`` of the ridge on all superpixels (lime's surrogate, alpha
1) and their joint heteroscedasticity-robust (HC1 sandwich) covariance ``V``, the covariance
whose diagonal ``explanation.stderr`` reports: ``config.AUTO_DRAWS`` draws of
``w + s * V^(1/2) z`` with standard normal ``z`` (fixed draws, ``config.AUTO_DRAW_SEED``: the
figure is a function of the rows alone, never of the explainer's random state or of
``batch_size``), and the mean share of the shown set in each draw's top k. The spread factor
``s = config.AUTO_SPREAD`` is there to calibrate this plug-in estimate (``s = 1``), which could
err either way: the shown ranking is chosen on the same noisy weights (overconfident), the
sandwich is itself noisy, and a reference a reader checks against has noise of its own. ``s``
was chosen on the tuning half of the sampling study only (``limefast.benchsuite.study``), for
the stated figure to match the measured overlap with a 16000-row reference in each quartile of
the stated figure; there the plain plug-in, ``s = 1``, did best. The held-out half checks it.

*The rule.* After each round (``round_sizes``) every explained label's ridge is refreshed from
running weighted sums (``RunningFit``), and the explanation stops at the first round at which
the explained labels' ``expected_overlap``, averaged over the labels, reaches
``target_overlap`` (``config.AUTO_TARGET_OVERLAP`` by default, the smallest target whose mean
overlap on the study's tuning half came within 0.01 of lime's at 1000 rows), or at
``max_samples``. The average, not the least of them: with ``top_labels=3`` a reader sees three
top-k sets, and the expected share of them that is right is the mean (on the tuning half it
cost 8% fewer images than asking it of every label, at the same mean overlap). Each label
states its own figure. Labels whose outputs never moved are left out of the rule.

*What it guarantees.* The cost: at most ``max_samples`` images, and at the cap exactly lime's
explanation. The figure is an estimate, not a bound: on the held-out half of the study, among
explanations stating about p, the shown top k shared about p of the reference's (the README
gives the measured calibration). Since "auto" stops once the figure reaches the target, an
explanation that stopped early has a figure of about the target, while lime's 1000 rows would
often have done better on that image: the mean overlap of "auto" matches lime's only with a
target well above it, and the saving is what the images that settle early leave out.
Near-tied weights at the boundary keep the figure low: such an explanation runs to the cap,
says ``converged=False`` and states its low figure. The figure
describes how the weights would move with other random rows of the same explanation, not the
model's own noise, nor whether a linear surrogate suits the model.

*A flat model.* When the explained outputs do not move over the first round's rows (equal to
``config.AUTO_FLAT_TOLERANCE`` of their size), no number of rows can rank the superpixels: the
explanation stops after that round with ``stop_reason="flat"`` and ``converged=False``, and
warns. Its stated figure is chance, ``k / F``.
"""

from __future__ import annotations

import numpy as np

from limefast import config
from limefast.core.surrogate import robust_scale


def shown_count(stable_features, num_features: int, n_features: int) -> int:
    """k: the superpixels a reader is shown (see the module docstring)."""
    k = stable_features or (num_features if num_features < n_features
                            else config.AUTO_STABLE_FEATURES)
    return max(1, min(int(k), n_features))


def is_flat(targets: np.ndarray) -> np.ndarray:
    """(L,) bool: the label's outputs over these rows are one value, to float rounding."""
    y = np.asarray(targets, dtype=np.float64)
    size = np.maximum(1.0, np.abs(y).max(axis=0))
    return np.ptp(y, axis=0) <= config.AUTO_FLAT_TOLERANCE * size


def sandwich(x: np.ndarray, resid: np.ndarray, weights: np.ndarray, x_offset: np.ndarray,
             inv: np.ndarray) -> np.ndarray:
    """The (F, F) HC1 sandwich covariance of a weighted ridge's coefficients,
    ``M^-1 (sum_i w_i^2 e_i^2 xc_i xc_i') M^-1 * n / (n - p - 1)``, with ``inv = M^-1``, the
    rows ``x`` (N, F), their residuals (N,), weights (N,) and weighted column means."""
    u = (x - x_offset) * (weights * resid)[:, None]
    return inv @ (u.T @ u) @ inv * robust_scale(x.shape[0], x.shape[1])


def _draws(n_features: int) -> np.ndarray:
    """The fixed standard normal draws, (AUTO_DRAWS, F)."""
    rng = np.random.default_rng(config.AUTO_DRAW_SEED)
    return rng.standard_normal((config.AUTO_DRAWS, n_features))


def _root(cov: np.ndarray) -> np.ndarray:
    """A square root ``R`` of a covariance, ``R R' = cov`` (clipped at 0: the sandwich is
    positive semidefinite up to rounding)."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def _top_mask(values: np.ndarray, k: int) -> np.ndarray:
    """(D, F) bool: each row's k largest entries (ties at the k-th all count)."""
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1:k]
    return values >= kth


def expected_overlap(weights: np.ndarray, cov: np.ndarray, shown, spread: float | None = None,
                     draws: np.ndarray | None = None) -> float:
    """The expected share of ``shown`` (the k features a reader sees) in the top k by |weight|
    of the converged weights, drawn from ``N(weights, spread^2 cov)``.

    Args:
        weights: (F,) the fitted weights.
        cov: (F, F) their covariance (the sandwich), or (F,) variances alone (the weights then
            drawn independently); nan entries make the figure nan.
        shown: the k shown features.
        spread: the standard errors' factor, default ``config.AUTO_SPREAD``.
        draws: (D, F) standard normal draws, default the module's fixed ones.

    Returns:
        A number in [0, 1]; 1 when everything is shown.
    """
    shown = np.fromiter(shown, dtype=np.intp)
    f, k = weights.shape[0], shown.size
    if k >= f:
        return 1.0
    if not np.all(np.isfinite(cov)):
        return float("nan")
    spread = config.AUTO_SPREAD if spread is None else spread
    z = _draws(f) if draws is None else draws
    noise = z * np.sqrt(np.clip(cov, 0.0, None)) if cov.ndim == 1 else z @ _root(cov).T
    converged = _top_mask(np.abs(weights + spread * noise), k)
    return float(np.clip(converged[:, shown].sum(axis=1).mean() / k, 0.0, 1.0))


def top_set(weights: np.ndarray, k: int) -> frozenset:
    """The top k features by |weight| (ties in feature order, as the explanation sorts)."""
    order = np.argsort(-np.abs(weights), kind="stable")
    return frozenset(int(f) for f in order[:k])


def stated_overlaps(data: np.ndarray, targets: np.ndarray, weights: np.ndarray, shown: list,
                    alpha: float = 1.0) -> list[float]:
    """Every label's ``expected_overlap`` of its shown set, from the rows of an explanation.

    Args:
        data: (N, F) 0/1 rows.
        targets: (N, L) the labels' outputs, float64.
        weights: (N,) kernel weights.
        shown: per label, the features the explanation shows (its first k).
        alpha: the ridge's penalty.

    Returns:
        L numbers in [0, 1] (chance, ``k / F``, for a label whose outputs never moved).
    """
    fit = RunningFit(data.shape[1], targets.shape[1])
    fit.add(data, targets, weights)
    return fit.overlaps([len(s) for s in shown], shown, alpha)


class RunningFit:
    """Weighted sums of the rows seen so far, for every explained label.

    Args:
        n_features: superpixels F.
        n_labels: explained labels L.
    """

    def __init__(self, n_features: int, n_labels: int):
        self.sw = 0.0
        self.sx = np.zeros(n_features)
        self.sxx = np.zeros((n_features, n_features))
        self.sy = np.zeros(n_labels)
        self.sxy = np.zeros((n_features, n_labels))
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._w: list[np.ndarray] = []

    @property
    def n(self) -> int:
        return sum(len(w) for w in self._w)

    def add(self, rows: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> None:
        """One round: (n, F) 0/1 rows, (n, L) outputs, (n,) kernel weights."""
        x = rows.astype(np.float64)
        xw = x * weights[:, None]
        self.sw += float(weights.sum())
        self.sx += xw.sum(0)
        self.sxx += xw.T @ x
        self.sy += weights @ targets
        self.sxy += xw.T @ targets
        self._x.append(x)
        self._y.append(np.asarray(targets, dtype=np.float64))
        self._w.append(weights)

    def flat(self) -> np.ndarray:
        """(L,) bool: ``is_flat`` over the rows so far."""
        return is_flat(np.concatenate(self._y))

    def ridge(self, alpha: float = 1.0):
        """(coef (F, L), intercept (L,), M^-1 (F, F), x offset (F,)) of the weighted ridge of
        every label on all features, as ``WeightedProblem`` would fit it on these rows."""
        if not self.sw > 0:
            raise ZeroDivisionError("Weights sum to zero, can't be normalized")
        x_offset = self.sx / self.sw
        y_offset = self.sy / self.sw
        gram = self.sxx - np.outer(self.sx, self.sx) / self.sw
        xty = self.sxy - np.outer(self.sx, self.sy) / self.sw
        inv = np.linalg.pinv(gram + alpha * np.eye(gram.shape[0]), hermitian=True)
        coef = inv @ xty
        return coef, y_offset - x_offset @ coef, inv, x_offset

    def overlaps(self, ks, shown=None, alpha: float = 1.0) -> list[float]:
        """Per label, ``expected_overlap`` of ``shown[label]`` (default: the current top
        ``ks[label]``); chance, k / F, for a flat label."""
        x, y, w = np.concatenate(self._x), np.concatenate(self._y), np.concatenate(self._w)
        n_features = x.shape[1]
        coef, intercept, inv, x_offset = self.ridge(alpha)
        flat = is_flat(y)
        out = []
        for label, k in enumerate(ks):
            beta = coef[:, label]
            top = top_set(beta, k) if shown is None else shown[label]
            if k >= n_features:
                out.append(1.0)
            elif flat[label]:
                out.append(k / n_features)
            else:
                resid = y[:, label] - (x @ beta + intercept[label])
                out.append(expected_overlap(beta, sandwich(x, resid, w, x_offset, inv), top))
        return out


def round_sizes(first: int, cap: int, growth: float, minimum: int):
    """The rows of each round: ``first``, then ``max(minimum, growth * rows so far)``, up to
    ``cap`` rows in all (deterministic: a function of the settings alone)."""
    done = 0
    size = min(first, cap)
    while done < cap:
        size = min(size, cap - done)
        yield size
        done += size
        size = max(minimum, int(growth * done))
