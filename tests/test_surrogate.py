"""The batched surrogate against scikit-learn and lime_base, on fresh random problems."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")
pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from lime.lime_base import LimeBase
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from limefast.core.surrogate import WeightedProblem


def random_problem(seed, n=200, f=15, labels=3):
    rng = np.random.RandomState(seed)
    data = rng.randint(0, 2, (n, f))
    data[0] = 1
    # Targets with real structure (a few features matter) plus noise.
    beta = rng.randn(f, labels) * (rng.rand(f, labels) < 0.4)
    targets = data @ beta + 0.3 * rng.randn(n, labels)
    weights = rng.rand(n) + 0.05
    return data, targets, weights


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([0.01, 0.5, 1.0, 10.0]))
def test_ridge_matches_sklearn(seed, alpha):
    data, targets, weights = random_problem(seed)
    problem = WeightedProblem(data, targets, weights)
    features = np.random.RandomState(seed).permutation(data.shape[1])[:7]
    for label in range(targets.shape[1]):
        ref = Ridge(alpha=alpha).fit(data[:, features], targets[:, label], sample_weight=weights)
        coef, intercept = problem.ridge(features, label, alpha)
        np.testing.assert_allclose(coef, ref.coef_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-9)
        score = problem.r2(features, coef, intercept, label)
        ref_score = ref.score(data[:, features], targets[:, label], sample_weight=weights)
        np.testing.assert_allclose(score, ref_score, rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["forward_selection", "highest_weights",
                                                 "lasso_path", "none", "auto"]),
       st.integers(1, 10))
def test_feature_selection_matches_lime_base(seed, method, num_features):
    data, targets, weights = random_problem(seed, n=150, f=12)
    problem = WeightedProblem(data, targets, weights)
    base = LimeBase(kernel_fn=None, random_state=0)
    for label in range(targets.shape[1]):
        ref = base.feature_selection(data, targets[:, label], weights, num_features, method)
        ours = problem.select(method, label, num_features)
        np.testing.assert_array_equal(ours, np.asarray(ref))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6))
def test_whole_label_fit_matches_lime_base(seed):
    data, targets, weights = random_problem(seed)
    problem = WeightedProblem(data, targets, weights)
    distances = -np.log(weights)  # any distances; the kernel returns the weights back
    base = LimeBase(kernel_fn=lambda d: np.exp(-d), random_state=0)
    for label in range(targets.shape[1]):
        intercept, exp, score, local_pred = base.explain_instance_with_data(
            data, targets, distances, label, 5, feature_selection="auto")
        fit = problem.fit_label(label, 5, "auto")
        assert [f for f, _ in fit.local_exp] == [f for f, _ in exp]
        np.testing.assert_allclose([w for _, w in fit.local_exp], [w for _, w in exp], rtol=1e-9)
        np.testing.assert_allclose(fit.intercept, intercept, rtol=1e-9)
        np.testing.assert_allclose(fit.score, score, rtol=1e-9)
        np.testing.assert_allclose(fit.local_pred, local_pred, rtol=1e-9)


def test_r2_degenerate_targets_follow_sklearn():
    data, _, weights = random_problem(1)
    constant = np.full((data.shape[0], 1), 0.25)
    problem = WeightedProblem(data, constant, weights)
    features = np.arange(4)
    coef, intercept = problem.ridge(features, 0, 1.0)
    assert problem.r2(features, coef, intercept, 0) == pytest.approx(
        r2_score(constant[:, 0], data[:, features] @ coef + intercept, sample_weight=weights))
    # forward selection on a constant target picks features in index order, as lime does
    np.testing.assert_array_equal(problem.select("forward_selection", 0, 3), [0, 1, 2])


def test_forward_selection_with_collinear_columns_does_not_crash():
    data, targets, weights = random_problem(2, n=40, f=6)
    data[:, 3] = data[:, 1]  # duplicate column: singular systems in some rounds
    problem = WeightedProblem(data, targets, weights)
    used = problem.select("forward_selection", 0, 6)
    assert sorted(used.tolist()) == list(range(6))
