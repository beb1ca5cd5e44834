"""What "the same explanation" means when a float32 model runs two ways.

Two contracts, one helper each:

- ``assert_same_explanation``: exact by construction. The model saw the very same input bits in
  the very same batches (or is a float64 NumPy model), so its outputs are bitwise equal and the
  only difference left is the float64 surrogate's rounding: weights agree to a relative 1e-9.

- ``assert_float32_agreement``: a float32 forward computed by other kernels (another CPU's
  oneDNN code, ``ONEDNN_MAX_CPU_ISA``, another batch split, TorchScript's folded batch norms,
  another memory layout, a GPU) rounds differently. The contract is then:

  1. the same labels (``top_labels`` and the explained set);
  2. the same order of the features whose weights are clearly apart (by more than twice the
     tolerance); features closer than that may swap;
  3. every weight within ``tol`` of the reference, norm-wise: ``max|dw| <= tol``, and the
     intercept within ``(1 + F) * tol``.

How ``tol`` is derived (``weight_tolerance``), with u the unit roundoff of the forward's
arithmetic (2**-24 for float32, 2**-11 for TF32 on GPUs):

- The forward. One reduction of K terms rounds once per term; kernels that block or order the
  sum differently make independent roundings whose difference grows like sqrt(K) u of the
  largest partial sum (the probabilistic form of the textbook gamma_K = K u bound, Higham,
  *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sec. 2.8). Through L such layers
  the errors add in quadrature again: an output differs by about sqrt(L K) u of its scale.
  ``forward_rtol`` counts L and the widest K from the model's own layers and allows a factor
  ``SAFETY`` on top.
- The softmax. Its Jacobian is ``dp_i/dz_j = p_i (delta_ij - p_j)``: logits each off by at
  most e move a probability by at most ``2 p_i e``. With e = sqrt(L K) u Z (Z the largest
  |logit|, ``logit_scale``), a probability is good to a relative ``2 Z sqrt(L K) u``.
- The surrogate. A weight is a linear function of the outputs, ``w = A y`` with
  ``A = (G + alpha I)^-1 Xc' W``; for lime's balanced 0/1 rows ``G`` is about ``sum(W) / 4 I``
  and each row of ``A`` sums in absolute value to about 2 (``ROW_GAIN``). So
  ``max|dw| <= ROW_GAIN * forward_rtol * Y``, with Y the scale of the explained label's outputs,
  which the explanation itself states: its local prediction and intercept (both are outputs of
  the surrogate fitted to that label; a softmax or sigmoid keeps them within [0, 1]).
- The intercept is ``mean(y) - mean(x)' w``: each of the F weights adds at most its own error.

Nothing here was fitted to one machine: the tolerance follows from u, the model's shape and the
explanation's scale. (Seen on an AMD EPYC with and without ``ONEDNN_MAX_CPU_ISA=AVX2``/``SSE41``:
differences of 1e-3 to 1e-2 of the tolerance.)
"""

from __future__ import annotations

import math

import numpy as np

U_FLOAT32 = 2.0 ** -24
U_TF32 = 2.0 ** -11  # CUDA's default for float32 convolutions (10-bit mantissa)
SAFETY = 4.0
ROW_GAIN = 2.0
EXACT_RTOL = 1e-9  # the float64 surrogate's rounding, on bitwise-equal model outputs


def model_shape(model) -> tuple[int, int]:
    """(L, K): the number of convolution and linear layers of a torch module, and the widest
    reduction among them (in_channels / groups * kernel area, or in_features)."""
    import torch

    depth, widest = 0, 1
    module = getattr(model, "model", model)  # a TorchClassifier's module
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.conv._ConvNd):
            terms = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        elif isinstance(layer, torch.nn.Linear):
            terms = layer.in_features
        else:
            continue
        depth += 1
        widest = max(widest, terms)
    if depth == 0:
        raise ValueError(f"{type(module).__name__} has no convolution or linear layer to count")
    return depth, widest


def logit_scale(clf, images) -> float:
    """Z: the largest |logit| of a ``TorchClassifier``'s model on (N, H, W, C) ``images``."""
    import torch

    from limefast.device.pretrained import logits_of  # transformers' outputs too

    with torch.inference_mode():
        x = clf._model_ready(np.ascontiguousarray(images))
        return float(logits_of(clf.model(x)).abs().max())


def forward_rtol(model, unit: float = U_FLOAT32, logits: float = 1.0) -> float:
    """Relative difference two correct float32 forwards of ``model`` may show in its softmax
    probabilities (see the module docstring): ``SAFETY * sqrt(L * K) * unit * max(1, 2 Z)``,
    with ``logits`` the logit scale Z."""
    depth, widest = model_shape(model)
    return SAFETY * math.sqrt(depth * widest) * unit * max(1.0, 2.0 * logits)


def weight_tolerance(weights, intercept, local_pred, rtol: float) -> float:
    """``max|dw|`` allowed for one label whose model outputs are good to a relative ``rtol``:
    ``ROW_GAIN * rtol * Y``, Y the label's scale (intercept, local prediction, largest weight).
    """
    scale = max(abs(float(intercept)), abs(float(local_pred or 0.0)),
                float(np.abs(np.asarray(weights, dtype=float)).max(initial=0.0)))
    return ROW_GAIN * rtol * scale


def assert_label_agreement(ref: dict, ours: dict, ref_fit: tuple, our_fit: tuple, rtol: float,
                           what="") -> None:
    """One label's float32 contract. ``ref``/``ours`` map feature -> weight, in the order of
    the explanation (decreasing |w|); the fits are (intercept, local_pred or None)."""
    tol = weight_tolerance(list(ref.values()), *ref_fit, rtol)
    assert set(ref) == set(ours), f"{what}: other features selected"
    features = list(ref)
    diff = max((abs(ref[f] - ours[f]) for f in features), default=0.0)
    assert diff <= tol, f"{what}: max|dw| = {diff:.3e} > tol {tol:.3e}"
    position = {f: i for i, f in enumerate(ours)}
    for i, f in enumerate(features):
        for g in features[i + 1:]:
            if abs(ref[f]) - abs(ref[g]) > 2 * tol:
                assert position[f] < position[g], (
                    f"{what}: feature {f} (|w| {abs(ref[f]):.3e}) should rank before {g} "
                    f"(|w| {abs(ref[g]):.3e}); tol {tol:.3e}")
    bound = (1 + len(features)) * tol
    for name, a, b in zip(("intercept", "local_pred"), ref_fit, our_fit):
        if a is not None and b is not None:
            assert abs(float(a) - float(b)) <= bound, f"{what}: {name} {b} against {a}"


def assert_float32_agreement(ref, ours, rtol: float):
    """``ours`` is ``ref`` up to float32 forwards good to a relative ``rtol`` (``forward_rtol``).
    ``ref`` may be lime 0.2.0.1's explanation."""
    assert getattr(ref, "top_labels", None) == getattr(ours, "top_labels", None)
    assert set(ref.local_exp) == set(ours.local_exp)
    for label in ref.local_exp:
        assert_label_agreement(
            dict(ref.local_exp[label]), dict(ours.local_exp[label]),
            (ref.intercept[label], _local_pred(ref, label)),
            (ours.intercept[label], _local_pred(ours, label)), rtol, what=f"label {label}")


def _local_pred(explanation, label):
    """A label's local prediction; lime 0.2.0.1 keeps only the last label's (not a dict)."""
    if not isinstance(explanation.local_pred, dict):
        return None
    return float(np.ravel(explanation.local_pred[label])[0])


def assert_same_explanation(ref, ours, rtol: float = EXACT_RTOL, score_label=None):
    """The exact contract: the same labels, the same feature order, weights, intercepts, scores
    and local predictions to the surrogate's float64 rounding. ``ref`` may be lime 0.2.0.1's
    explanation (one score and local prediction, of ``score_label``)."""
    assert getattr(ref, "top_labels", None) == getattr(ours, "top_labels", None)
    assert set(ref.local_exp) == set(ours.local_exp)
    for label in ref.local_exp:
        a = np.array([w for _, w in ref.local_exp[label]])
        assert [f for f, _ in ref.local_exp[label]] == [f for f, _ in ours.local_exp[label]]
        np.testing.assert_allclose([w for _, w in ours.local_exp[label]], a, rtol=rtol,
                                   atol=1e-13)
        np.testing.assert_allclose(ours.intercept[label], ref.intercept[label], rtol=rtol)
        if isinstance(ref.score, dict):
            np.testing.assert_allclose(ours.score[label], ref.score[label], rtol=rtol,
                                       atol=1e-13)
            np.testing.assert_allclose(ours.local_pred[label], ref.local_pred[label],
                                       rtol=rtol)
    if score_label is not None:
        np.testing.assert_allclose(ours.score[score_label], ref.score, rtol=rtol, atol=1e-13)
        np.testing.assert_allclose(ours.local_pred[score_label], ref.local_pred, rtol=rtol)
        assert ours.local_pred[score_label].shape == (1,)
