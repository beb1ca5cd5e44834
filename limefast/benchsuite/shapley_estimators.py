"""Shapley estimators at equal budget on tabulated superpixel games (``shapley_games``).

Each estimator gets a game and a budget of model images (the full and empty coalitions
included) and returns (F,) values; the error is Musco and Witter's relative squared error
``||phi_hat - phi||^2 / ||phi||^2`` against the exact values from the whole table.

- ``limefast``: ``limefast.kernelshap.estimator`` as the explainer runs it (its allocation
  among coalition sizes named: "kernel", "leverage", "sqrt"), its paired strata without
  replacement and the constrained fit; ``limefast-msr`` adds the tree regression adjustment
  of ``adjustment.regression_adjusted``.
- ``leverage-shap``: Leverage SHAP as published (Musco and Witter, ICLR 2025, Algorithm 1 with
  their paired Bernoulli sampling): each coalition of size s kept with probability
  ``min(1, 2c / C(F, s))`` (leverage scores are equal within a size and across sizes), ``c``
  chosen so that the expected count is the budget, a kept coalition with its complement, rows
  weighted by ``kernel / probability``, the regression solved in the projection onto the
  efficient values.
- ``regression-msr``: Regression MSR as published (Witter, Liu and Musco, NeurIPS 2025):
  paired coalitions drawn i.i.d. with size mass ``1 / sqrt(s (F - s))``, uniform within a
  size; a gradient-boosted tree proxy fitted to them; its exact Shapley values plus the Monte
  Carlo estimate of the residual game's, ``phi_i(g) + 1/m sum_S r(S) (p_{|S|-1} [i in S] -
  p_{|S|} [i not in S]) / D(S)``.
- ``shapiq <name>``: shapiq 1.4.1's approximators of the Shapley value on the same table.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from limefast.kernelshap import adjustment, estimator

SHAPIQ_APPROXIMATORS = ("KernelSHAP", "kADDSHAP", "UnbiasedKernelSHAP", "SVARM",
                        "PermutationSamplingSV", "StratifiedSamplingSV", "OwenSamplingSV")


def relative_error(estimate: np.ndarray, exact: np.ndarray) -> float:
    """``||estimate - exact||^2 / ||exact||^2``."""
    return float(np.sum((estimate - exact) ** 2) / np.sum(exact ** 2))


# -- limefast ---------------------------------------------------------------------------------
def limefast_values(game, budget: int, seed: int, allocation: str = "kernel",
                    adjust: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """limefast's values and standard errors on ``game`` for ``budget`` images."""
    design = estimator.CoalitionDesign(game.n_features, np.random.RandomState(seed),
                                       allocation=allocation).grow(budget)
    targets = game(design.rows)[:, None]
    fit = (adjustment.regression_adjusted(design, targets) if adjust
           else estimator.fit(design, targets))
    return fit.values[:, 0], fit.stderr[:, 0]


# -- Leverage SHAP, as published --------------------------------------------------------------
def leverage_shap(game, budget: int, seed: int) -> np.ndarray:
    """Leverage SHAP with paired Bernoulli sampling (Musco and Witter, ICLR 2025)."""
    f = game.n_features
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, f)
    counts = np.array([math.comb(f, s) for s in sizes], dtype=float)
    wanted = min(budget - 2, 2 ** f - 2)
    lo, hi = 0.0, float(counts.max())
    for _ in range(200):  # c: sum over sizes of min(C(F, s), 2c) = wanted
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(counts, 2 * c).sum() < wanted else (lo, c)
    prob = np.minimum(1.0, 2 * c / counts)
    rows, weights = [np.ones(f), np.zeros(f)], [0.0, 0.0]
    for s in range(1, f // 2 + 1):
        p = prob[s - 1]
        kept = rng.binomial(math.comb(f, s), p)
        middle = 2 * s == f
        if middle:
            kept //= 2
        pool = estimator._all_of_size(f, s)
        if middle:  # each pair once: the coalition that holds superpixel 0
            pool = pool[pool[:, 0] == 1]
        pick = pool[rng.choice(len(pool), size=min(kept, len(pool)), replace=False)]
        w = 1.0 / (p * math.comb(f, s) * s * (f - s))
        for r in pick:
            rows += [r, 1 - r]
            weights += [w, w]
    z = np.asarray(rows, dtype=float)
    y = game(z.astype(np.int8))
    v1, v0 = y[0], y[1]
    z, y, w = z[2:], y[2:] - v0, np.asarray(weights[2:])
    b = y - (v1 - v0) * z.sum(1) / f
    proj = np.eye(f) - 1.0 / f
    a = z @ proj
    lhs = a.T @ (w[:, None] * a)
    rhs = a.T @ (w * b)
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0] + (v1 - v0) / f


# -- Regression MSR, as published -------------------------------------------------------------
def regression_msr(game, budget: int, seed: int) -> np.ndarray:
    """Regression MSR with a gradient-boosted tree proxy (Witter, Liu and Musco, NeurIPS 2025):
    paired i.i.d. coalitions, size mass ``1 / sqrt(s (F - s))``."""
    f = game.n_features
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, f)
    size_mass = 1.0 / np.sqrt(sizes * (f - sizes))
    size_mass /= size_mass.sum()
    m = (budget - 2) // 2
    drawn = rng.choice(sizes, size=m, p=size_mass)
    keys = rng.random((m, f))
    order = np.argsort(keys, axis=1)
    z = (np.argsort(order, axis=1) < drawn[:, None]).astype(np.int8)
    z = np.concatenate([z, 1 - z])
    full, empty = np.ones((1, f), np.int8), np.zeros((1, f), np.int8)
    y = game(np.concatenate([full, empty, z]))
    v1, v0, y = y[0], y[1], y[2:]
    everything = np.concatenate([full, empty, z])
    proxy = adjustment.TreeProxy.fit(everything, np.concatenate([[v1, v0], y]),
                                    np.ones(len(everything)), seed)
    phi = proxy.shapley(f)
    resid = y - proxy.predict(z)
    k = z.sum(1).astype(int)
    weight = np.array([1.0 / (f * math.comb(f - 1, j)) for j in range(f)] + [0.0])
    d = size_mass[k - 1] / np.array([math.comb(f, j) for j in range(f + 1)])[k]
    inside = np.concatenate([[0.0], weight[:-1]])[k]  # p_{|S|-1}
    contrib = (z * inside[:, None] - (1 - z) * weight[k][:, None]) * (resid / d)[:, None]
    phi = phi + contrib.mean(0)
    # The full and empty coalitions are evaluated, not sampled: their terms exactly.
    r1, r0 = v1 - proxy.predict(full)[0], v0 - proxy.predict(empty)[0]
    return phi + (r1 - r0) / f


# -- shapiq 1.4.1 -----------------------------------------------------------------------------
def shapiq_values(game, budget: int, seed: int, name: str) -> np.ndarray:
    """(F,) Shapley values of shapiq's approximator ``name`` on the tabulated game."""
    import shapiq

    class Table(shapiq.Game):
        def __init__(self):
            super().__init__(n_players=game.n_features, normalize=False)

        def value_function(self, coalitions):
            return game(np.asarray(coalitions, dtype=np.int8))

    cls = getattr(shapiq.approximator, name)
    kwargs = {"random_state": seed}
    if name in ("KernelSHAP", "kADDSHAP"):
        kwargs["pairing_trick"] = True
    if name == "kADDSHAP":
        kwargs["max_order"] = 2
    approximator = cls(n=game.n_features, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = approximator.approximate(budget=budget, game=Table())
    out = np.zeros(game.n_features)
    for i in range(game.n_features):
        out[i] = values[(i,)]
    return out


# -- the comparison ---------------------------------------------------------------------------
def estimators(shapiq_names=SHAPIQ_APPROXIMATORS) -> dict:
    """name -> callable(game, budget, seed) -> (F,) values."""
    out = {
        "limefast (before)": lambda g, b, s: limefast_values(g, b, s)[0],
        "limefast (new)": lambda g, b, s: limefast_values(g, b, s, adjust=True)[0],
        "limefast (leverage sizes)": lambda g, b, s: limefast_values(g, b, s, "leverage")[0],
        "leverage-shap": leverage_shap,
        "regression-msr": regression_msr,
    }
    for name in shapiq_names:
        out[f"shapiq {name}"] = (lambda n: lambda g, b, s: shapiq_values(g, b, s, n))(name)
    return out


def compare(games, budgets, seeds: int, names=None, progress=None) -> dict:
    """Errors of every estimator: {name: {budget: [errors over games and seeds]}} and the
    seconds each took."""
    table = estimators() if names is None else {k: v for k, v in estimators().items()
                                                  if k in names}
    errors = {name: {b: [] for b in budgets} for name in table}
    seconds = {name: 0.0 for name in table}
    for game in games:
        exact = game.exact_values()
        for budget in budgets:
            for name, run in table.items():
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    values = run(game, budget, seed)
                    seconds[name] += time.perf_counter() - t0
                    errors[name][budget].append(relative_error(values, exact))
        if progress:
            progress(f"compared on {game.name}")
    return {"errors": errors, "seconds": seconds}


@dataclass
class EstimatorConfig:
    """The games and budgets of the comparison; ``quick()`` is the bench file's (a few
    minutes on two cores), the default the README's table."""

    models: tuple = ("digits-cnn", "shapes-cnn", "blobs-cnn")
    images: tuple = (4, 4, 2)  # games per model
    superpixels: int = 14
    seeds: int = 2
    budgets: tuple = (70, 140, 280, 512, 1024, 2048)  # 5F, 10F, 20F, then fixed counts
    shapiq: tuple = ("KernelSHAP", "kADDSHAP", "UnbiasedKernelSHAP", "SVARM",
                     "PermutationSamplingSV")

    @classmethod
    def quick(cls) -> EstimatorConfig:
        return cls(models=("digits-cnn", "shapes-cnn"), images=(2, 2), superpixels=12,
                   seeds=2, budgets=(60, 120, 240, 512, 1024))


def estimator_study(cfg: EstimatorConfig | None = None, progress=None) -> dict:
    """Mean and median errors per estimator and budget, shapiq's best at each budget, and
    the ratios of shapiq's best and of the published estimators' best to limefast's."""
    from limefast.benchsuite.shapley_games import load_games

    cfg = cfg or EstimatorConfig()
    games = []
    for model, count in zip(cfg.models, cfg.images):
        games += load_games((model,), images=count, superpixels=cfg.superpixels,
                            progress=progress)
    names = [n for n in estimators(cfg.shapiq)]
    result = compare(games, cfg.budgets, cfg.seeds, names=names, progress=progress)
    mean = {n: {b: float(np.mean(e[b])) for b in cfg.budgets}
            for n, e in result["errors"].items()}
    median = {n: {b: float(np.median(e[b])) for b in cfg.budgets}
              for n, e in result["errors"].items()}
    ours = mean["limefast (new)"]
    shapiq_best, published_best = {}, {}
    for b in cfg.budgets:
        name = min((n for n in mean if n.startswith("shapiq")), key=lambda n: mean[n][b])
        shapiq_best[b] = (name, mean[name][b])
        published_best[b] = min(mean["leverage-shap"][b], mean["regression-msr"][b])
    return {
        "games": [g.name for g in games], "superpixels": cfg.superpixels, "seeds": cfg.seeds,
        "budgets": list(cfg.budgets), "mean": mean, "median": median,
        "seconds": result["seconds"],
        "shapiq_best": {b: {"name": n, "error": e} for b, (n, e) in shapiq_best.items()},
        "ratio_to_shapiq_best": {b: shapiq_best[b][1] / ours[b] for b in cfg.budgets},
        "ratio_to_published": {b: published_best[b] / ours[b] for b in cfg.budgets},
    }


def markdown(study: dict) -> list[str]:
    """The study as a Markdown table: mean error per estimator and budget, then the ratios."""
    budgets = study["budgets"]
    lines = ["| estimator | " + " | ".join(str(b) for b in budgets) + " | seconds |",
             "|---|" + "---:|" * (len(budgets) + 1)]
    for name, per in study["mean"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per[b]:.2e}" for b in budgets)
                     + f" | {study['seconds'][name]:.0f} |")
    lines.append("| shapiq's best | " + " | ".join(
        study["shapiq_best"][b]["name"].replace("shapiq ", "") for b in budgets) + " | |")
    lines.append("| shapiq's best / limefast (new) | " + " | ".join(
        f"{study['ratio_to_shapiq_best'][b]:.1f}x" for b in budgets) + " | |")
    lines.append("| published best / limefast (new) | " + " | ".join(
        f"{study['ratio_to_published'][b]:.1f}x" for b in budgets) + " | |")
    return lines


if __name__ == "__main__":  # python -m limefast.benchsuite.shapley_estimators [--quick]
    import sys

    start = time.perf_counter()
    study = estimator_study(EstimatorConfig.quick() if "--quick" in sys.argv else None,
                            progress=lambda m: print(
                                f"{time.perf_counter() - start:.0f} s: {m}", flush=True))
    print("\n".join(markdown(study)))
    print("median errors:")
    for name, per in study["median"].items():
        print(f"  {name}: " + " ".join(f"{per[b]:.2e}" for b in study["budgets"]))
