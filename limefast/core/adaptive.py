"""``num_samples="auto"``: draw rows in rounds, and stop when the ranking a reader sees is settled.

The rows are lime's rows: the explainer draws ``max_samples`` of them in lime's order, and the
rounds take them as prefixes, so an explanation that stopped at n rows is exactly the fixed
``num_samples=n`` explanation of the same seed (the random state then has advanced by the
``max_samples`` rows). Nothing depends on ``batch_size``.

After each round every explained label's ridge on all superpixels (lime's surrogate, alpha 1) is
refreshed from running weighted sums (``RunningFit``: the centred Gram matrix of any prefix is
``Sxx - Sx Sx' / Sw``, updated with each round's rows, never rebuilt), and the stopping rule is
checked:

*The rule.* Let k be the number of superpixels the reader is shown (``num_features`` when it
is smaller than the superpixel count, else ``get_image_and_mask``'s 5; ``stable_features=``
sets it). Order the label's weights by |w|; the k-th and (k+1)-th features are the boundary of
the shown set. With ``g = |w_k| - |w_k+1|`` and ``sd`` its heteroscedasticity-robust (HC1
sandwich) standard error, the boundary is *settled* when

- ``g > z * sd`` (the shown set is the right one, a one-sided test at ``confidence``, as S-LIME
  tests the k-th against the (k+1)-th feature; Zhou, Hooker and Wang, KDD 2021), or
- ``z * sd < indifference * max|w|``: the two boundary weights are known to within that
  fraction of the label's largest weight, so whichever of them is shown, the reader sees a
  weight that close to the other's.

The explanation stops after the first round at which every label is settled and its top-k set
equals that of the round before (two looks agreeing guard against a lucky round). A model whose
weights never separate (flat: every weight 0, or pure noise) reaches ``max_samples`` and the
explanation says ``converged = False``.

What it guarantees: at the stop, for each label, the shown set differs from the set more rows
would give only by features whose weights are, at the stated confidence, within the
indifference zone of the boundary. It does not promise the order inside the shown set, and the
test is repeated after each round (a sequential test without a multiplicity correction; the
second look is the guard). The standard errors are those of a random design: they describe how
much the weights would move with other rows of the same explanation, not the model's own noise.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from limefast.core.surrogate import robust_scale


def z_value(confidence: float) -> float:
    """The one-sided normal quantile of ``confidence``."""
    return float(NormalDist().inv_cdf(confidence))


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
        self._y.append(targets)
        self._w.append(weights)

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

    def boundaries(self, k: int, z: float, indifference: float):
        """Per label: (settled, top-k features as a frozenset) under the module's rule."""
        n_features = self.sx.shape[0]
        if k >= n_features:  # everything is shown: no boundary to settle
            everything = frozenset(range(n_features))
            return [(True, everything)] * self.sy.shape[0]
        x, y, w = np.concatenate(self._x), np.concatenate(self._y), np.concatenate(self._w)
        coef, intercept, inv, x_offset = self.ridge()
        xc = x - x_offset
        scale = robust_scale(x.shape[0], n_features)
        out = []
        for label in range(coef.shape[1]):
            beta = coef[:, label]
            a, b, gap, shown = boundary(beta, k)
            # d' coef = |w_a| - |w_b| (signs fixed): its sandwich variance is
            # sum_i (w_i e_i xc_i' M^-1 d)^2 with the ridge's residuals e_i.
            d = np.sign(beta[a]) * inv[:, a] - np.sign(beta[b]) * inv[:, b]
            resid = y[:, label] - (x @ beta + intercept[label])
            sd = float(np.sqrt(np.sum((w * resid * (xc @ d)) ** 2) * scale))
            out.append((is_settled(gap, sd, z, indifference, np.abs(beta).max()), shown))
        return out


def boundary(weights: np.ndarray, k: int):
    """The shown set's boundary: the k-th and (k+1)-th features by |weight| (ties in feature
    order), the gap ``|w_k| - |w_k+1|`` and the top-k set. Needs ``k < len(weights)``."""
    order = np.argsort(-np.abs(weights), kind="stable")
    a, b = order[k - 1], order[k]
    return a, b, abs(weights[a]) - abs(weights[b]), frozenset(int(f) for f in order[:k])


def is_settled(gap: float, sd: float, z: float, indifference: float, largest: float) -> bool:
    """The module's rule for one label: the gap is ``z`` standard errors wide, or the two
    boundary weights are known to within ``indifference`` of the ``largest`` |weight|."""
    return bool(gap > z * sd or z * sd < indifference * largest)


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
