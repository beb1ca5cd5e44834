"""``num_samples="auto"``: draw rows in rounds, and stop when the superpixels a reader is shown
are likely to be the ones many more rows would show.

*The cost promise.* ``"auto"`` never evaluates more images than ``max_samples``, and by default
that is lime's own default, ``num_samples=1000`` (``config.AUTO_MAX_SAMPLES``). The explainer
draws ``max_samples`` rows of the row design (``sampler``, by default ``config.AUTO_SAMPLER``,
complement pairs) and the rounds take them as prefixes of whole units, so an explanation that
stopped at n rows is exactly the fixed ``num_samples=n`` explanation of the same seed and
design. *The contract with lime:* by default ``"auto"`` does not take lime's rows; its rows
keep lime's distribution (each superpixel on with probability 1/2), so it converges to lime's
explanation, the estimand, with less noise per image. With ``sampler="lime"`` the rows are
lime's, and an explanation that reaches the cap is lime's explanation at ``max_samples`` rows,
draw for draw. Nothing depends on ``batch_size``.

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

*The rule.* After each round (``round_sizes``: a first round of ``config.AUTO_MIN_SAMPLES``
rows, then rounds of ``config.AUTO_ROUND_MIN``) every explained label's ridge is refreshed from
running weighted sums (``RunningFit``), and the explanation stops at the first round at which
either
- the explained labels' ``expected_overlap``, averaged over the labels, reaches
  ``target_overlap`` (default per fill, ``rounds.auto_defaults``): ``stop_reason="settled"``,
  ``converged=True``; or
- more rows would not pay: that average is at least ``config.AUTO_GAIN_FLOOR`` (0.75) and is
  projected to rise by less than ``min_gain`` (likewise; 0: never) per 1000 more
  rows, to every horizon (``horizons``: 1.5 and 2 times the rows so far, and the cap):
  ``stop_reason="diminishing"``, ``converged=False``, the figure stated, no warning;
or at ``max_samples``. The projection (``projected_overlap``) draws the converged weights as
the stated figure does, and the rows to come as a fit of their own around them with the
covariance shrunk by the rows' ratio; it is the expected overlap of the top k shown after ``m``
rows with the converged top k, as seen now. The two stops split the work: images whose top k
settles stop at the target; images whose top k cannot settle within the cap (near-tied weights
at the boundary, a noisy model) stop as soon as more rows buy little, instead of paying up to
the cap for a figure that hardly moves; the rows go to the images where they buy the most
overlap. Why both: the mean overlap a reader gets per image seen is what the issue of cost
asks for, and a level alone spends the cap on the images that gain least from it.
The average over labels, not the least of them: with ``top_labels=3`` a reader sees three
top-k sets, and the expected share of them that is right is the mean. Each label states its
own figure. Labels whose outputs never moved are left out of the rule.

*How the defaults were chosen.* On the tuning half of the sampling study
(``python -m limefast.benchsuite.study --tune``), which scores every prefix of each case's
1000 rows of each row design once and replays the rule on them: per fill, the (design,
target, least gain) of a grid with the fewest images whose mean overlap with 16000-row
references stays within a margin of lime's at 1000 rows (0.0075 with the mean fill, 0.0175
with a constant one), overall and on every model. With the mean fill that is complement pairs,
0.97 and 0.04 (3.6x fewer images on the tuning half); with a constant fill no setting saved
more than 1.09x within the margins, and lime's rows, 0.92 and no gain stop were kept. The
held-out half (fresh images, and two models no tuning run saw) checks them;
docs/guide/fewer-calls.md gives the figures.

*What it guarantees.* The cost: at most ``max_samples`` images, and at the cap exactly lime's
explanation. The figure is an estimate, not a bound: on the held-out half of the study, among
explanations stating about p, the shown top k shared about p of the reference's
(docs/guide/fewer-calls.md gives the measured calibration). An explanation that stopped early
states a figure of about the target, or below it when more rows would not have paid; lime's
1000 rows would often have done a little better on that image: the saving is what those images
leave out. The figure
describes how the weights would move with other random rows of the same explanation, not the
model's own noise, nor whether a linear surrogate suits the model. ``min_gain=0`` turns the
second stop off (near-ties then run to the cap, stating their low figure).

*What the checks cost.* Each round refits every explained label's ridge and sandwich and takes
one square root of its F x F covariance (F^3; past ``config.AUTO_JOINT_MAX_FEATURES`` the
variances alone), and, only when the rule needs them, projects to its horizons from the same
256 draws: measured on a 2-core AMD EPYC about 0.8 ms per label and round at 64 superpixels
and 5.7 ms at 196. An explanation that runs to the cap checks up to 35 times, so for a model
cheaper than that per 25 images (a NumPy toy) a fixed count is faster; for a CNN the images
saved dominate.

*A flat model.* When the explained outputs do not move over the first round's rows (equal to
``config.AUTO_FLAT_TOLERANCE`` of their size), no number of rows can rank the superpixels: the
explanation stops after that round with ``stop_reason="flat"`` and ``converged=False``, and
warns. Its stated figure is chance, ``k / F``.
"""

from __future__ import annotations

import functools

import numpy as np

from limefast import config
from limefast.core.surrogate import robust_scale, unit_sums


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
             inv: np.ndarray, joint: bool = True, unit: int = 1) -> np.ndarray:
    """The (F, F) HC1 sandwich covariance of a weighted ridge's coefficients,
    ``M^-1 (sum_i w_i^2 e_i^2 xc_i xc_i') M^-1 * n / (n - p - 1)``, with ``inv = M^-1``, the
    rows ``x`` (N, F), their residuals (N,), weights (N,) and weighted column means; with
    ``joint=False`` its diagonal alone, (F,), without the F^3 product. Rows drawn in units of
    ``unit`` (complement pairs) give the cluster-robust sandwich (the scores summed within a
    unit, ``surrogate.robust_scale``'s CR1 factor)."""
    u = unit_sums((x - x_offset) * (weights * resid)[:, None], unit)
    scale = robust_scale(x.shape[0], x.shape[1], unit)
    if not joint:
        return ((u @ inv) ** 2).sum(axis=0) * scale
    return inv @ (u.T @ u) @ inv * scale


def _draws(n_features: int, which: int = 0) -> np.ndarray:
    """The fixed standard normal draws, (AUTO_DRAWS, F): ``which`` 0 for the converged
    weights, 1 for the rows to come (``Figures``). Read-only, kept for the next call."""
    return _cached_draws(n_features, which, config.AUTO_DRAWS, config.AUTO_DRAW_SEED)


@functools.lru_cache(maxsize=32)
def _cached_draws(n_features: int, which: int, count: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed + which).standard_normal((count, n_features))
    z.flags.writeable = False
    return z


def _root(cov: np.ndarray) -> np.ndarray:
    """A square root ``R`` of a covariance, ``R R' = cov`` (clipped at 0: the sandwich is
    positive semidefinite up to rounding)."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def _top_mask(values: np.ndarray, k: int) -> np.ndarray:
    """(D, F) bool: each row's k largest entries (ties at the k-th all count)."""
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1:k]
    return values >= kth


def _scaler(cov: np.ndarray, spread: float):
    """``z -> spread * noise``: standard normal draws ``z`` (D, F) scaled to the covariance,
    joint (F, F) (one square root, taken here) or independent (F,)."""
    if cov.ndim == 1:
        sd = np.sqrt(np.clip(cov, 0.0, None))
        return lambda z: spread * (z * sd)
    root = _root(cov)
    return lambda z: spread * (z @ root.T)


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
    converged = _top_mask(np.abs(weights + _scaler(cov, spread)(z)), k)
    return float(np.clip(converged[:, shown].sum(axis=1).mean() / k, 0.0, 1.0))


def horizons(n: int, cap: int) -> list[int]:
    """The row counts the gain of more rows is projected to from ``n``: ``n`` times each of
    ``config.AUTO_HORIZONS``, and the cap (those beyond ``n``, at most ``cap``)."""
    return sorted({m for m in [min(cap, int(n * h)) for h in config.AUTO_HORIZONS] + [cap]
                   if m > n})


class Figures:
    """One label's figures after ``n`` of at most ``cap`` rows: ``stated``, the
    ``expected_overlap`` of its current top k, and, on demand, ``gains()``, what the rows to
    come are projected to add to it at each of ``horizons(n, cap)``.

    The projection draws the converged weights as ``expected_overlap`` does, ``N(w, s^2 V)``,
    and the ``m - n`` rows to come as a fit of their own around them, ``N(converged,
    s^2 V n / (m - n))``, weighted ``(m - n) / m``: the expected overlap, once ``m`` rows are
    in, of the top k then shown with the converged top k, seen from the first ``n``. One
    square root of ``V`` and one set of draws serve the stated figure and every horizon.

    Args:
        weights: (F,) the fitted weights.
        cov: (F, F) their covariance, or (F,) variances alone.
        k: the features shown.
        n, cap: the rows so far and the most there may be.
    """

    def __init__(self, weights: np.ndarray, cov: np.ndarray, k: int, n: int, cap: int):
        f = weights.shape[0]
        self.k, self.n, self.cap = k, n, cap
        self._weights, self._gains = weights, None
        self._scale = None
        if k >= f:
            self.stated = 1.0
            self._gains = {}
        elif not np.all(np.isfinite(cov)):
            self.stated = float("nan")
            self._gains = {}
        else:
            self._scale = _scaler(cov, config.AUTO_SPREAD)
            self._converged = weights + self._scale(_draws(f))
            self._mask = _top_mask(np.abs(self._converged), k)
            shown = np.fromiter(top_set(weights, k), dtype=np.intp)
            self.stated = float(np.clip(self._mask[:, shown].sum(axis=1).mean() / k, 0, 1))

    @classmethod
    def fixed(cls, stated: float) -> Figures:
        """A label whose figure cannot move (a flat output: chance)."""
        out = cls.__new__(cls)
        out.stated, out._gains = stated, {}
        return out

    def projected(self, m: int) -> float:
        """The expected overlap once ``m`` (> n) rows are in."""
        if self._scale is None:
            return self.stated
        n, w = self.n, self._weights
        later = (n / m) * w + ((m - n) / m) * self._converged \
            + (np.sqrt(n * (m - n)) / m) * self._scale(_draws(w.shape[0], 1))
        both = self._mask & _top_mask(np.abs(later), self.k)
        return float(np.clip(both.sum(axis=1).mean() / self.k, 0.0, 1.0))

    def gains(self) -> dict:
        """``{m: projected(m) - stated}`` for the ``horizons(n, cap)``."""
        if self._gains is None:
            self._gains = {m: self.projected(m) - self.stated
                           for m in horizons(self.n, self.cap)}
        return self._gains


def projected_overlap(weights: np.ndarray, cov: np.ndarray, n: int, m: int, k: int) -> float:
    """``Figures.projected``: the expected overlap once ``m`` rows are in, seen from ``n``."""
    return Figures(weights, cov, k, n, m).projected(m)


def gain_rate(gains: list[dict], n: int) -> float:
    """The most the explained labels' mean expected overlap is projected to gain per 1000 more
    rows, over the horizons: ``max_m mean_labels(gain_m) * 1000 / (m - n)`` (0 at the cap)."""
    if not gains or not gains[0]:
        return 0.0
    return max(float(np.mean([g[m] for g in gains])) * 1000.0 / (m - n) for m in gains[0])


def decide(stated: list[float], gains, n: int, cap: int, target: float,
           min_gain: float) -> str | None:
    """The rule: "settled" when the labels' mean stated overlap reaches ``target``;
    "diminishing" when there are rows left (``n < cap``), that mean is at least
    ``config.AUTO_GAIN_FLOOR`` and the rows to come are projected to add less than
    ``min_gain`` (> 0) per 1000 at every horizon; else None (go on, or at the cap stop there:
    "max_samples"). ``stated`` and ``gains`` (a list of ``{m: gain}``, or a function giving
    it, called only when needed) hold the live labels only."""
    if not stated:
        return None
    mean = float(np.mean(stated))
    if not np.isfinite(mean):
        return None
    if mean >= target:
        return "settled"
    if n < cap and min_gain > 0 and mean >= config.AUTO_GAIN_FLOOR and \
            gain_rate(gains() if callable(gains) else gains, n) < min_gain:
        return "diminishing"
    return None


def top_set(weights: np.ndarray, k: int) -> frozenset:
    """The top k features by |weight| (ties in feature order, as the explanation sorts)."""
    order = np.argsort(-np.abs(weights), kind="stable")
    return frozenset(int(f) for f in order[:k])


def stated_overlaps(data: np.ndarray, targets: np.ndarray, weights: np.ndarray, shown: list,
                    alpha: float = 1.0, unit: int = 1) -> list[float]:
    """Every label's ``expected_overlap`` of its shown set, from the rows of an explanation.

    Args:
        data: (N, F) 0/1 rows.
        targets: (N, L) the labels' outputs, float64.
        weights: (N,) kernel weights.
        shown: per label, the features the explanation shows (its first k).
        alpha: the ridge's penalty.
        unit: rows drawn together (``sampling.design_unit``).

    Returns:
        L numbers in [0, 1] (chance, ``k / F``, for a label whose outputs never moved).
    """
    fit = RunningFit(data.shape[1], targets.shape[1], unit)
    fit.add(data, targets, weights)
    return fit.overlaps([len(s) for s in shown], shown, alpha)


class RunningFit:
    """Weighted sums of the rows seen so far, for every explained label.

    Args:
        n_features: superpixels F.
        n_labels: explained labels L.
        unit: rows drawn together (``sampling.design_unit``); rounds add whole units.
    """

    def __init__(self, n_features: int, n_labels: int, unit: int = 1):
        self.unit = unit
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
        return [f.stated for f in self._figures(ks, shown, alpha, None)]

    def figures(self, k: int, cap: int, alpha: float = 1.0) -> list[Figures]:
        """Per label, the ``Figures`` of its current top k with ``cap`` rows at most (a fixed
        chance, k / F, for a flat label)."""
        return self._figures([k] * self.sy.shape[0], None, alpha, cap)

    def _figures(self, ks, shown, alpha, cap):
        x, y, w = np.concatenate(self._x), np.concatenate(self._y), np.concatenate(self._w)
        n_features = x.shape[1]
        coef, intercept, inv, x_offset = self.ridge(alpha)
        flat = is_flat(y)
        out = []
        for label, k in enumerate(ks):
            beta = coef[:, label]
            if k >= n_features:
                out.append(Figures.fixed(1.0))
            elif flat[label]:
                out.append(Figures.fixed(k / n_features))
            else:
                resid = y[:, label] - (x @ beta + intercept[label])
                # past AUTO_JOINT_MAX_FEATURES the variances alone, as the explanation states
                cov = sandwich(x, resid, w, x_offset, inv,
                               joint=n_features <= config.AUTO_JOINT_MAX_FEATURES,
                               unit=self.unit)
                if cap is not None:
                    out.append(Figures(beta, cov, k, x.shape[0], cap))
                else:
                    top = top_set(beta, k) if shown is None else shown[label]
                    out.append(Figures.fixed(expected_overlap(beta, cov, top)))
        return out


def round_sizes(first: int, cap: int, growth: float, minimum: int, unit: int = 1):
    """The rows of each round: ``first``, then ``max(minimum, growth * rows so far)``, each
    rounded up to whole units of ``unit`` rows, up to ``cap`` rows in all (deterministic: a
    function of the settings alone)."""
    done = 0
    size = min(first, cap)
    while done < cap:
        size = min(-(-size // unit) * unit, cap - done)
        yield size
        done += size
        size = max(minimum, int(growth * done))
