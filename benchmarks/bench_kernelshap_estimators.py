"""KernelSHAP's estimator against shapiq 1.4.1's approximators and the published Leverage SHAP
and Regression MSR at equal budget: thin cases over the engine's
``limefast.benchsuite.shapley_estimators`` (its docstring says what each estimator is) on the
tabulated superpixel games of ``limefast.benchsuite.shapley_games``.

The quick configuration: the digits and shapes CNNs, two held-out images each cut into 12
superpixels (exact values from all 4096 coalitions), two seeds, budgets 60 to 1024 images.
The first run tabulates the games (16,384 model images, cached); the comparison then takes a
few minutes on two cores. The README's table is the full configuration:
``python -m limefast.benchsuite.shapley_estimators``.

Run: ``.venv/bin/python -m pytest benchmarks/bench_kernelshap_estimators.py -s``.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import check, note
from limefast.benchsuite import shapley_estimators

pytest.importorskip("shapiq")
pytest.importorskip("torch")


def test_kernelshap_error_against_shapiq_and_the_published_estimators():
    study = shapley_estimators.estimator_study(shapley_estimators.EstimatorConfig.quick())
    for line in shapley_estimators.markdown(study):
        note(line)
    to_shapiq = min(study["ratio_to_shapiq_best"].values())
    to_published = min(study["ratio_to_published"].values())
    check("kernelshap_error_vs_shapiq", to_shapiq, f"{to_shapiq:.2f}x")
    check("kernelshap_error_vs_published", to_published, f"{to_published:.2f}x")
    ours = study["mean"]["limefast (new)"]
    budgets = study["budgets"]
    # The error falls with the budget, and the new estimator is no worse than the old one.
    assert ours[budgets[-1]] < ours[budgets[0]]
    assert all(ours[b] <= study["mean"]["limefast (before)"][b] for b in budgets)
