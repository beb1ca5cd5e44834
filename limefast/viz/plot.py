"""``plot_explanation``: a matplotlib bar chart of a label's strongest weights with their
confidence intervals, for notebooks (matplotlib is imported when it is called)."""

from __future__ import annotations

import numpy as np

from limefast.core.checks import positive_int
from limefast.optional import require
from limefast.viz.render import _stderr_values, _uncertain, colour, explanation_label, two_sided_z


def plot_explanation(explanation, label=None, ax=None, *, num_features: int = 10,
                     confidence: float = 0.9, positive="green", negative="red"):
    """A horizontal bar chart of a label's strongest weights, with their confidence intervals.

    Bars run from the strongest ``|weight|`` at the top down. When ``explanation.stderr`` has the
    label, each bar carries an error bar of ``+- z * se`` (z the two-sided normal quantile of
    ``confidence``), and a bar whose interval reaches zero, or whose standard error is NaN, inf or
    missing, is drawn light and hatched. The title names the label and, when the explanation has
    them (neither None nor 0), ``num_samples`` (rows the surrogate was fitted on) and
    ``num_evaluated`` (images the model saw).

    Args:
        explanation: an ``ImageExplanation`` (``local_exp``, optionally ``stderr``,
            ``num_samples``, ``num_evaluated``).
        label: label to show; default the first top label (or first explained label).
        ax: matplotlib Axes to draw into; None makes a new figure (needs matplotlib).
        num_features: how many weights to show, largest ``|weight|`` first.
        confidence: coverage of the intervals, in (0, 1).
        positive, negative: bar colours of each sign (name or RGB triple).

    Returns:
        The matplotlib Axes drawn into.
    """
    label = explanation_label(explanation, label)
    num_features = positive_int("num_features", num_features)
    z = two_sided_z(confidence)
    top = sorted(explanation.local_exp[label], key=lambda fw: -abs(fw[1]))[:num_features]
    features = [int(f) for f, _ in top]
    w = np.array([float(v) for _, v in top], dtype=np.float64)
    stderr = (getattr(explanation, "stderr", None) or {}).get(label)
    if stderr is not None:
        n_segments = int(np.asarray(explanation.segments).max()) + 1
        se = _stderr_values(stderr, n_segments)[np.asarray(features, dtype=np.intp)]
        faded = _uncertain(w, se, z)
        # An infinite bar would stretch the axis to nothing: unknown widths are left out.
        xerr = np.where(np.isfinite(se), z * se, np.nan)
    else:
        faded, xerr = np.zeros(len(features), dtype=bool), None
    if ax is None:
        ax = _pyplot().subplots(figsize=(6, 1.4 + 0.3 * max(1, len(features))),
                                layout="constrained")[1]
    rgb = [np.array(colour(positive if v >= 0 else negative)) / 255 for v in w]
    y = np.arange(len(features))[::-1]  # the strongest on top
    bars = ax.barh(y, w, xerr=xerr, color=[(*c, 1.0) for c in rgb],
                   error_kw={"ecolor": (0.2, 0.2, 0.2), "capsize": 3, "linewidth": 1})
    for bar, c, light in zip(bars, rgb, faded):
        if light:
            bar.set_facecolor((*c, 0.3))
            bar.set_edgecolor((*c, 1.0))
            bar.set_hatch("//")
    ax.axvline(0, color=(0.4, 0.4, 0.4), linewidth=0.8)
    ax.set_yticks(y, labels=[str(f) for f in features])
    ax.set_ylabel("superpixel")
    ax.set_xlabel(f"weight (± {100 * confidence:g}% interval)" if xerr is not None else "weight")
    counts = [f"{n} {what}" for n, what in
              ((getattr(explanation, "num_samples", None), "rows fitted"),
               (getattr(explanation, "num_evaluated", None), "images evaluated"))
              if n]  # None on explanations made before they were counted, 0 on hand-made ones
    ax.set_title(f"label {label}" + (f" ({', '.join(counts)})" if counts else ""))
    return ax


def _pyplot():
    return require("matplotlib.pyplot", "plot_explanation")
