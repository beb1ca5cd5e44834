"""``ImageExplanation``: what an explanation returns, with lime's attributes and the
uncertainty limefast adds (standard errors, rows fitted, images evaluated, why it stopped)."""

from __future__ import annotations

import numpy as np


class ImageExplanation:
    """An explanation: per-label surrogate weights over the image's superpixels.

    Attributes:
        image: (H, W, C) the explained image (RGB if a grayscale image was given).
        segments: (H, W) integer superpixel labels 0..n-1; feature ``z`` is segment ``z``.
        intercept, local_exp, score, local_pred: dicts keyed by label. ``local_exp[label]`` is a
            list of ``(feature, weight)`` sorted by decreasing ``|weight|``.
        top_labels: labels by decreasing predicted probability (only with ``top_labels=``).
        stderr: dict keyed by label: feature -> standard error of its weight (HC1 sandwich of
            the weighted ridge: how much the weight would move with other random rows).
        num_samples: the 0/1 rows the surrogate was fitted on.
        num_evaluated: the images the model saw (fewer than ``num_samples`` with ``dedupe``).
        converged: False when the rows stopped short of the target: ``num_samples="auto"``
            at ``max_samples``, or stopped because more rows would not pay, before the stated
            figure reached ``target_overlap``, or any explanation cut by its ``time_budget``;
            True otherwise.
        stop_reason: 'num_samples' (the fixed count), 'settled' (``expected_overlap``
            reached ``target_overlap``), 'diminishing' (more rows were projected to raise it
            by less than ``min_gain`` per 1000), 'max_samples', 'flat' (the model's output did
            not move over ``"auto"``'s first round) or 'time_budget'.
        expected_overlap: dict keyed by label: the expected share of the ``top_k`` superpixels
            shown (the first ``top_k`` of ``local_exp``) that are also in the top ``top_k``
            of the converged explanation, the one unlimited rows would give. Calibrated: of
            explanations stating 0.8, the shown top k share about 80% with a reference at many
            rows (``limefast.core.adaptive`` says how it is estimated). Chance, ``top_k / n``,
            when the label's output never moved; nan when there are too few rows to tell.
        top_k: the k of ``expected_overlap`` (``stable_features``, else ``num_features``
            when it is smaller than the superpixel count, else 5).
        target_overlap: the ``expected_overlap`` at which ``num_samples="auto"`` stops (the
            target; an explanation that stopped for another reason states less). None for a
            fixed count.
        min_gain: ``num_samples="auto"``'s least projected gain per 1000 rows worth the rows
            (None for a fixed count).
        sampler: the design of the rows, ``"lime"`` or ``"paired"`` (``explain_instance``'s
            ``sampler``).
        prediction: (n_classes,) float64, the model's outputs on the image itself (row 0 of
            the samples, the unperturbed image), as the explanation used them.
        timings: seconds spent in each stage of the explanation.
    """

    def __init__(self, image: np.ndarray, segments: np.ndarray):
        self.image = image
        self.segments = segments
        self.intercept = {}
        self.local_exp = {}
        self.local_pred = {}
        self.score = {}
        self.stderr = {}
        self.num_samples = 0
        self.num_evaluated = 0
        self.converged = True
        self.stop_reason = "num_samples"
        self.expected_overlap = {}
        self.top_k = None
        self.target_overlap = None
        self.min_gain = None
        self.sampler = "lime"
        self.prediction = None
        self.timings = {}

    def overlap_caption(self, label) -> str:
        """One line on how settled the label's shown superpixels are."""
        value = self.expected_overlap.get(label, float("nan"))
        text = (f"top {self.top_k}: expected overlap {value:.2f}" if np.isfinite(value)
                else f"top {self.top_k}: overlap unknown")
        return text + ("" if self.converged else f" ({self.stop_reason}, not converged)")

    def interval(self, label, confidence: float = 0.9) -> dict:
        """feature -> (low, high): the normal ``confidence`` interval of each weight
        (``w +- z * stderr``; nan where no standard error is known)."""
        from limefast.viz.render import two_sided_z

        z = two_sided_z(confidence)
        if label not in self.local_exp:
            raise KeyError('Label not in explanation')
        se = self.stderr.get(label, {})
        return {f: (w - z * se.get(f, np.nan), w + z * se.get(f, np.nan))
                for f, w in self.local_exp[label]}

    def get_image_and_mask(self, label, positive_only=True, negative_only=False, hide_rest=False,
                           num_features=5, min_weight=0.):
        """The image with the explanation's superpixels marked, and their mask.

        Args:
            label: label to show; KeyError if it was not explained.
            positive_only: only superpixels with positive weight above ``min_weight``.
            negative_only: only superpixels with negative weight, ``|w| > min_weight``.
                If neither, the first ``num_features`` superpixels of either sign with
                ``|w| >= min_weight`` are marked -1 (negative) or +1, and channel 0 (negative)
                or 1 (positive) of their pixels is set to the image's maximum.
            hide_rest: start from a float64 black image instead of a copy of the image.
            num_features: how many superpixels to take.
            min_weight: minimum weight of a superpixel to take.

        Returns:
            (image, mask): (H, W, C) image and (H, W) mask of the segments' dtype, for
            ``skimage.segmentation.mark_boundaries``.
        """
        if label not in self.local_exp:
            raise KeyError('Label not in explanation')
        if positive_only & negative_only:
            raise ValueError("Positive_only and negative_only cannot be true at the same time.")
        segments, image, exp = self.segments, self.image, self.local_exp[label]
        temp = np.zeros(image.shape) if hide_rest else image.copy()
        lut = np.zeros(int(segments.max()) + 1, dtype=np.int8)
        if positive_only or negative_only:
            if positive_only:
                fs = [f for f, w in exp if w > 0 and w > min_weight][:num_features]
            else:
                fs = [f for f, w in exp if w < 0 and abs(w) > min_weight][:num_features]
            lut[np.asarray(fs, dtype=np.intp)] = 1
            mask = lut[segments].astype(segments.dtype)
            chosen = mask.astype(bool)
            temp[chosen] = image[chosen]
            return temp, mask
        for f, w in exp[:num_features]:
            if np.abs(w) < min_weight:
                continue
            lut[f] = -1 if w < 0 else 1
        mask = lut[segments].astype(segments.dtype)
        chosen = mask != 0
        temp[chosen] = image[chosen]
        if chosen.any():
            if image.ndim != 3 or image.shape[2] < 2:
                raise ValueError(
                    "marking both signs colours channel 0 or 1: it needs an image with at least "
                    f"2 channels; got shape {image.shape} (use positive_only or negative_only)"
                )
            peak = np.max(image)
            temp[mask == -1, 0] = peak
            temp[mask == 1, 1] = peak
        return temp, mask

    def render(self, label=None, *, positive="green", negative="red", coverage=0.05,
               opacity=0.6, num_segments=None, boundaries=True, as_pil=False,
               fade_uncertain=False, confidence=0.9, caption=False):
        """The image with the label's strongest superpixels tinted and outlined.

        Args:
            label: label to show; default the first top label (or first explained label).
            positive, negative, coverage, opacity, num_segments, boundaries, as_pil: as for
                ``limefast.render_explanation``.
            fade_uncertain: fade the superpixels whose ``confidence`` interval
                (``w +- z * stderr``) crosses zero: the explanation is not sure of their sign.
            caption: add a strip below the image stating ``expected_overlap[label]`` (and
                whether the explanation converged).

        Returns:
            (H, W, 3) uint8 array, or a PIL image with ``as_pil=True``.
        """
        from limefast.viz.render import explanation_label, render_explanation

        label = explanation_label(self, label)
        stderr = self.stderr.get(label, {}) if fade_uncertain else None
        out = render_explanation(self.image, self.segments, self.local_exp[label],
                                 positive=positive, negative=negative, coverage=coverage,
                                 opacity=opacity, num_segments=num_segments,
                                 boundaries=boundaries, as_pil=False, stderr=stderr,
                                 confidence=confidence)
        if caption:
            from limefast.viz.panel import captioned

            out = captioned(out, self.overlap_caption(label))
        if as_pil:
            from PIL import Image

            return Image.fromarray(out)
        return out

    def plot(self, label=None, ax=None, **kwargs):
        """A bar chart of the label's strongest weights with their intervals, into a
        matplotlib Axes (a new figure when ``ax`` is None); ``kwargs`` as for
        ``limefast.viz.plot.plot_explanation``.

        Returns:
            The matplotlib Axes.
        """
        from limefast.viz.plot import plot_explanation

        return plot_explanation(self, label, ax, **kwargs)

    def heatmap(self, label=None, *, colored=False, as_pil=False, **kwargs):
        """The label's weight of every pixel's superpixel.

        Args:
            label: label to show; default the first top label (or first explained label).
            colored: return colours (``limefast.viz.render.heatmap``, which takes ``kwargs``)
                instead of the weights.
            as_pil: return a coloured PIL image.

        Returns:
            (H, W) float64 weights; with ``colored`` a (H, W, 3) uint8 array or PIL image.
        """
        from limefast.viz import render

        label = render.explanation_label(self, label)
        if not (colored or as_pil):
            return render.weight_map(self.segments, self.local_exp[label])
        return render.heatmap(self.segments, self.local_exp[label], as_pil=as_pil, **kwargs)

    def _repr_lines(self, label) -> list[str]:
        """The lines a notebook shows under the picture of ``label``."""
        rows = (f"{self.num_evaluated} images evaluated" if self.num_evaluated == self.num_samples
                else f"{self.num_evaluated} images evaluated for {self.num_samples} rows")
        return [f"label {label}: {self.overlap_caption(label)}", rows]

    def _repr_png_(self) -> bytes:
        """Notebooks show the first top label: its tinted superpixels beside the weights of every
        superpixel, with ``expected_overlap`` and ``num_evaluated`` written under them."""
        from limefast.viz import panel, render

        label = render.explanation_label(self)
        return panel.png_bytes(panel.captioned_lines(self._repr_picture(label),
                                                     self._repr_lines(label)))

    def _repr_html_(self) -> str:
        """The picture of ``_repr_png_`` without its text, the text as an HTML caption."""
        from limefast.viz import panel, render

        label = render.explanation_label(self)
        return panel.html_figure(self._repr_picture(label), self._repr_lines(label))

    def _repr_picture(self, label) -> np.ndarray:
        """(H, W, 3) uint8: the label's tinted superpixels beside its weight of every one."""
        from limefast.viz import panel

        return panel.panel([
            (f"label {label}", self.render(label)),
            ("weights", self.heatmap(label, colored=True, image=self.image)),
        ], tile=max(160, min(320, self.segments.shape[0])), as_pil=False)
