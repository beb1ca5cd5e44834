"""The KernelSHAP estimator: which coalitions the model sees, and the constrained fit.

Shapley values of F superpixels are the solution of a weighted least-squares problem over all
2^F coalitions (Lundberg and Lee, NeurIPS 2017): the Shapley kernel weighs a coalition of s
superpixels by ``(F - 1) / (C(F, s) s (F - s))``, and the empty and full coalitions, whose
weights are infinite, become the constraints ``phi_0 = f(none)`` and
``sum(phi) = f(all) - f(none)`` (efficiency).

*Exact.* When the 2^F coalitions fit in the budget, all of them are evaluated and the values come
from the Shapley formula itself, ``phi_i = sum_{S not i} s!(F-s-1)!/F! (f(S + i) - f(S))``,
written as one product over the coalitions for all labels at once: no regression, no rounding
beyond the sums.

*Sampled.* Otherwise the coalitions are split into strata: stratum s holds the coalitions of s
and F - s superpixels, taken as complementary pairs (S, not S), so each stratum is sampled in
pairs (paired sampling, Covert and Lee, AISTATS 2021; shap pairs every size but the middle one,
this pairs that one too). As shap's ``KernelExplainer`` does, the budget goes to strata from the
outside in, and a stratum whose share of the budget left (by its kernel mass) covers all its
pairs is enumerated whole. What is left is split between the other strata in proportion to their
mass (largest remainders), and each draws its pairs uniformly *without replacement*, so every
coalition the model sees is distinct. A stratum's coalitions share its exact kernel mass equally
(shap instead samples the sizes and weighs a coalition by how often it was drawn: the same
expectation with the count noise added). The fit is the constrained weighted least squares,
solved for every label against one KKT matrix.

*Standard errors.* The fitted values are a smooth function of the sampled sums
``A = sum w z z'`` and ``b = sum w z y``; linearised, ``dphi = H (db - dA phi)`` with ``H`` the
top-left block of the inverse KKT matrix. Each sampled stratum is a sample without replacement
of its pairs, so its share of ``db - dA phi`` has the stratified-sampling variance
``w^2 n (1 - n / N) S^2`` (S^2 the sample covariance of the pairs' ``sum z e``, e the
residuals; n drawn of N pairs, per-row weight w). Enumerated strata add nothing, so exact values
have standard error 0. The residuals are the fit's own, so the variance is scaled by
``pairs / (pairs - F + 1)`` (the small-sample factor HC1 applies to LIME's sandwich). A stratum
of which a single pair is drawn has no sample variance; its pair's own ``sum z e`` stands in for
it (a heuristic, conservative for that stratum). Too few coalitions to tell every superpixel
apart (a singular KKT matrix, or no more pairs than F - 1): the minimum-norm values that add
up, standard errors nan, and ``identified`` False.

*Regression adjustment*: ``limefast.kernelshap.adjustment`` (the explainer's default for
sampled designs) fits boosted trees to the outputs and this fit to what they leave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

# A stratum draws random pairs until it holds 1 / _ENUMERATE_DENOMINATOR of its pairs; past
# it, the pairs left are enumerated and shuffled (rejection would slow down near the end).
_ENUMERATE_DENOMINATOR = 2


@dataclass
class _Stratum:
    """Coalitions of ``size`` and ``F - size`` superpixels, drawn as complementary pairs."""

    size: int
    units: int  # pairs in the stratum (a Python int: it may exceed any float)
    mass: float  # the stratum's total Shapley kernel weight
    share: float  # the stratum's claim on the budget (ALLOCATIONS)
    rows: list = field(default_factory=list)  # drawn canonical coalitions, (F,) int8
    seen: set = field(default_factory=set)
    pending: np.ndarray | None = None  # shuffled pairs not drawn yet, once enumerated


# How the sampled budget is shared between the coalition sizes (per size, up to a constant):
# "kernel" by the Shapley kernel's mass (shap's rule), "leverage" equally (the leverage scores
# of the Shapley regression, Musco and Witter, ICLR 2025), "sqrt" in between, by
# 1 / sqrt(s (F - s)) (Witter, Liu and Musco, NeurIPS 2025, for a non-linear proxy).
ALLOCATIONS = {
    "kernel": lambda f, s: (f - 1) / (s * (f - s)),
    "leverage": lambda f, s: 1.0,
    "sqrt": lambda f, s: 1.0 / math.sqrt(s * (f - s)),
}


def shapley_kernel(n_features: int, size: int) -> float:
    """The Shapley kernel weight of one coalition of ``size`` of ``n_features`` superpixels
    (infinite for the empty and full coalitions)."""
    if size in (0, n_features):
        return math.inf
    return (n_features - 1) / (math.comb(n_features, size) * size * (n_features - size))


def fits_exactly(n_features: int, budget: int) -> bool:
    """Whether all 2^F coalitions fit in ``budget`` model images."""
    return n_features < 63 and (1 << n_features) <= budget


class CoalitionDesign:
    """The coalitions of one explanation and their weights, grown budget by budget.

    ``grow(budget)`` returns the design for at least ``budget`` images: the coalitions already
    returned stay (a round adds rows, never changes them), so rounds of ``num_samples="auto"``
    evaluate only what is new.

    Args:
        n_features: superpixels F >= 1.
        random_state: a ``np.random.RandomState``; drawn from only when coalitions are sampled.
    """

    def __init__(self, n_features: int, random_state: np.random.RandomState,
                 allocation: str = "kernel"):
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {sorted(ALLOCATIONS)}; got "
                             f"{allocation!r}")
        self.f = n_features
        self.rng = random_state
        f = n_features
        per_size = ALLOCATIONS[allocation]
        self.strata = [
            _Stratum(s, math.comb(f, s) // (2 if 2 * s == f else 1),
                     (f - 1) / (s * (f - s)) * (1 if 2 * s == f else 2),
                     per_size(f, s) * (1 if 2 * s == f else 2))
            for s in range(1, f // 2 + 1)
        ]
        self.counts = [0] * len(self.strata)
        self.exact = False

    def grow(self, budget: int) -> Design:
        """The design for ``budget`` images (>= 2): all coalitions when they fit, else the
        full and empty ones plus pairs from the strata."""
        if self.exact or fits_exactly(self.f, budget):
            self.exact = True
            return _exact_design(self.f)
        wanted = _allocate(self.strata, (budget - 2) // 2)
        self.counts = [max(a, b) for a, b in zip(self.counts, wanted)]
        for stratum, n in zip(self.strata, self.counts):
            self._draw(stratum, n)
        return self._design()

    def _draw(self, stratum: _Stratum, n: int) -> None:
        """Extend the stratum's pairs to ``n``, uniformly without replacement."""
        f, s = self.f, stratum.size
        while len(stratum.rows) < n:
            need = n - len(stratum.rows)
            # Compared in integers: C(F, F/2) overflows a float past about 1030 superpixels.
            if stratum.pending is None and n * _ENUMERATE_DENOMINATOR > stratum.units:
                every = _all_of_size(f, s)
                if 2 * s == f:  # each pair once: the coalition that holds superpixel 0
                    every = every[every[:, 0] == 1]
                left = np.array([r for r in every if r.tobytes() not in stratum.seen],
                                dtype=np.int8).reshape(-1, f)
                stratum.pending = left[self.rng.permutation(len(left))]
            if stratum.pending is not None:
                take, stratum.pending = stratum.pending[:need], stratum.pending[need:]
                stratum.rows.extend(take)
                stratum.seen.update(r.tobytes() for r in take)
                continue
            # Random s-subsets: the s smallest of F uniform keys.
            keys = self.rng.random_sample((need + need // 4 + 4, f))
            picked = np.argpartition(keys, s - 1, axis=1)[:, :s]
            cand = np.zeros((len(picked), f), dtype=np.int8)
            np.put_along_axis(cand, picked, 1, axis=1)
            for row in _canonical(cand, f):
                key = row.tobytes()
                if key not in stratum.seen and len(stratum.rows) < n:
                    stratum.seen.add(key)
                    stratum.rows.append(row)

    def _design(self) -> Design:
        f = self.f
        blocks = [np.ones((1, f), np.int8), np.zeros((1, f), np.int8)]
        weight, stratum_of = [0.0, 0.0], [-1, -1]
        sampled = {}
        for i, (stratum, n) in enumerate(zip(self.strata, self.counts)):
            if n == 0:
                continue
            rows = np.asarray(stratum.rows[:n], dtype=np.int8)
            # Pairs side by side: row 2u is the canonical coalition, 2u + 1 its complement.
            pairs = np.empty((2 * n, f), np.int8)
            pairs[0::2], pairs[1::2] = rows, 1 - rows
            blocks.append(pairs)
            weight += [stratum.mass / (2 * n)] * (2 * n)
            stratum_of += [i] * (2 * n)
            if n < stratum.units:
                sampled[i] = (n, stratum.units)
        return Design(np.concatenate(blocks), np.asarray(weight), np.asarray(stratum_of),
                      sampled, exact=False)


@dataclass
class Design:
    """Coalitions and weights. Row 0 is the full coalition (the image), row 1 the empty one
    (every superpixel hidden); their weights are 0 here, as they are constraints."""

    rows: np.ndarray  # (n, F) int8 0/1
    weights: np.ndarray  # (n,) per-row kernel weight
    stratum: np.ndarray  # (n,) stratum index, -1 for the constraint rows
    sampled: dict  # stratum index -> (pairs drawn, pairs in the stratum), for sampled strata
    exact: bool


@dataclass
class ShapleyFit:
    """Every label's values: (F, L) arrays, and the (L,) base values f(none)."""

    values: np.ndarray
    stderr: np.ndarray
    cov: np.ndarray  # (F, F, L) covariance of the values (0 when exact)
    base: np.ndarray
    score: np.ndarray  # weighted R^2 of the additive model on the coalitions seen
    identified: bool = True  # False: too few coalitions to tell the superpixels apart


def fit(design: Design, targets: np.ndarray) -> ShapleyFit:
    """Shapley values of every label from the model's outputs on the design's rows.

    Args:
        design: the coalitions (``CoalitionDesign.grow``).
        targets: (n, L) float64 outputs of the explained labels, one row per design row.

    Returns:
        A ShapleyFit; ``values.sum(0) + base`` equals ``targets[0]`` to rounding.
    """
    y = np.asarray(targets, dtype=np.float64)
    base, total = y[1], y[0] - y[1]
    z = design.rows[2:].astype(np.float64)
    t = y[2:] - base  # the outputs relative to the empty coalition
    f = design.rows.shape[1]
    if design.exact:
        values = _shapley_formula(design.rows.astype(np.float64), y - base, f)
        cov, identified = np.zeros((f, f, y.shape[1])), True
        w = np.array([shapley_kernel(f, k) for k in range(f + 1)])[
            design.rows[2:].sum(1).astype(np.intp)] if f > 1 else np.zeros(0)
    else:
        w = design.weights[2:] / design.weights[2:].sum() if len(t) else np.zeros(0)
        values, cov, identified = _constrained_fit(z, w, t, total, design)
    with np.errstate(invalid="ignore"):
        stderr = np.sqrt(np.clip(np.einsum("ffl->fl", cov), 0.0, None))
    score = _r2(z, w, t, values)
    return ShapleyFit(values, stderr, cov, base, score, identified)


def _shapley_formula(z: np.ndarray, t: np.ndarray, f: int) -> np.ndarray:
    """phi (F, L) from every coalition (rows of ``z``), with ``t = f(S) - f(none)``: a
    coalition with k members adds ``w(k-1) t`` to each member and ``-w(k) t`` to each other
    superpixel, ``w(k) = k!(F-k-1)!/F!`` (relative to the empty coalition, its term is 0)."""
    shap_w = np.array([1.0 / (f * math.comb(f - 1, k)) for k in range(f)] + [0.0])
    k = z.sum(1).astype(np.intp)
    both = np.concatenate([[0.0], shap_w[:-1]]) + shap_w  # w(k-1) + w(k)
    values = z.T @ (both[k][:, None] * t) - (shap_w[k] @ t)[None, :]
    return values


def _solve_kkt(kkt: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The solution and the inverse of a symmetric KKT system, and whether it is regular.
    Singular (too few coalitions to tell the superpixels apart): the pseudo-inverse, the
    minimum-norm values that add up."""
    if np.linalg.matrix_rank(kkt, hermitian=True) == kkt.shape[0]:
        try:
            inv = scipy.linalg.inv(kkt, check_finite=False)
            if np.isfinite(inv).all():
                return inv @ rhs, inv, True
        except (np.linalg.LinAlgError, ValueError):
            pass
    inv = np.linalg.pinv(kkt, hermitian=True)
    return inv @ rhs, inv, False


def _constrained_fit(z, w, t, total, design: Design):
    """Weighted least squares of ``t`` on ``z`` subject to ``sum(phi) = total``, every label
    against one KKT matrix; with the stratified sandwich's (F, F, L) covariance."""
    f = z.shape[1]
    zw = z * w[:, None]
    kkt = np.zeros((f + 1, f + 1))
    kkt[:f, :f] = zw.T @ z
    kkt[:f, f] = kkt[f, :f] = 1.0
    rhs = np.vstack([zw.T @ t, total[None, :]])
    solution, inv, regular = _solve_kkt(kkt, rhs)
    values = solution[:f]
    # Efficiency holds to the solve's rounding; make it hold to the sum's.
    values += (total - values.sum(0)) / f
    h = inv[:f, :f]
    resid = t - z @ values
    strata = design.stratum[2:]
    # Each sampled stratum's pairs, centred and scaled so that Q'Q sums the strata's
    # variances ``w^2 n (1 - n / N) S^2``. A stratum's rows are its pairs side by side.
    blocks = []
    for i, (n, population) in design.sampled.items():
        rows = np.flatnonzero(strata == i)
        q = (z[rows][:, :, None] * resid[rows][:, None, :]).reshape(n, 2, f, -1).sum(1)
        centred = q - q.mean(0) if n > 1 else q
        scale = w[rows[0]] ** 2 * n * (1.0 - n / population) / max(n - 1, 1)
        blocks.append(centred * np.sqrt(scale))
    n_labels = t.shape[1]
    # The residuals are those of the fit itself, smaller than the errors by the F - 1 free
    # values: the small-sample factor pairs / (pairs - F + 1), as HC1 is to LIME's sandwich.
    pairs = (len(t) // 2)
    if not regular or pairs <= f - 1:  # values not told apart by the coalitions: no error
        return values, np.full((f, f, n_labels), np.nan), False
    cov = np.zeros((f, f, n_labels))
    if blocks:
        q = np.concatenate(blocks)
        for label in range(n_labels):
            hq = q[:, :, label] @ h  # (units, F): H is symmetric
            cov[:, :, label] = hq.T @ hq
    return values, cov * (pairs / (pairs - f + 1)), True


def _r2(z, w, t, values) -> np.ndarray:
    """(L,) weighted R^2 of ``z @ values`` against ``t`` (1 where t is constant)."""
    if not len(t):
        return np.ones(t.shape[1])
    resid = np.sum(w[:, None] * (t - z @ values) ** 2, axis=0)
    spread = np.sum(w[:, None] * (t - np.average(t, axis=0, weights=w)) ** 2, axis=0) if (
        w.sum() > 0) else np.zeros(t.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, 1.0 - resid / spread, 1.0)


def _allocate(strata: list[_Stratum], pairs: int) -> list[int]:
    """Pairs per stratum for a budget of ``pairs``: strata enumerated from the outside in
    while their share covers them (shap's rule), the rest in proportion to mass."""
    counts = [0] * len(strata)
    mass_left = sum(s.share for s in strata)
    i = 0
    while i < len(strata) and pairs > 0 and (
            pairs * strata[i].share / mass_left >= strata[i].units * (1 - 1e-8)):
        counts[i] = strata[i].units
        pairs -= strata[i].units
        mass_left -= strata[i].share
        i += 1
    rest = list(range(i, len(strata)))
    while rest and pairs > 0:
        mass = sum(strata[j].share for j in rest)
        share = {j: pairs * strata[j].share / mass for j in rest}
        got = {j: min(int(share[j]), strata[j].units - counts[j]) for j in rest}
        left = pairs - sum(got.values())
        for j in sorted(rest, key=lambda j: got[j] - share[j]):  # largest remainders first
            if left <= 0:
                break
            if counts[j] + got[j] < strata[j].units:
                got[j] += 1
                left -= 1
        for j in rest:
            counts[j] += got[j]
        pairs = left
        rest = [j for j in rest if counts[j] < strata[j].units]
    return counts


def _exact_design(f: int) -> Design:
    """All 2^F coalitions: the full one, the empty one, then the others in binary order."""
    codes = np.concatenate([[(1 << f) - 1, 0], np.arange(1, (1 << f) - 1)]).astype(np.int64)
    rows = ((codes[:, None] >> np.arange(f)) & 1).astype(np.int8)
    n = rows.shape[0]
    return Design(rows, np.zeros(n), np.full(n, -1), {}, exact=True)


def _all_of_size(f: int, s: int) -> np.ndarray:
    """Every coalition of ``s`` of ``f`` superpixels, (C(f, s), f) int8 (small strata only)."""
    import itertools

    combos = np.array(list(itertools.combinations(range(f), s)), dtype=np.intp).reshape(-1, s)
    rows = np.zeros((len(combos), f), np.int8)
    np.put_along_axis(rows, combos, 1, axis=1)
    return rows


def _canonical(rows: np.ndarray, f: int) -> np.ndarray:
    """A pair's representative: the coalition itself, except in the middle stratum
    (2s = F), where it is the one of the pair that holds superpixel 0."""
    rows = np.asarray(rows, dtype=np.int8)
    if len(rows) and 2 * int(rows[0].sum()) == f:
        rows = np.where(rows[:, :1] == 1, rows, 1 - rows).astype(np.int8)
    return rows

