"""Pictures of explanations, drawn with NumPy and Pillow: superpixels tinted by weight.

- ``render_explanation``: the image with the superpixels of strongest weight tinted, positive in
  green and negative in red, and their boundaries drawn (visualime's ``render_explanation`` form:
  an image, a segment mask and one weight per segment). Given standard errors, superpixels whose
  weight the explanation is not sure of are drawn faded.
- ``heatmap``: every superpixel coloured by its weight, on one symmetric scale.
- ``cam_overlay``: a Grad-CAM map in a jet palette over the image.

``viz.panel`` lays pictures out (tiles with titles, curves); ``viz.plot`` draws into matplotlib.

Every function returns a (H, W, 3) uint8 array, or a PIL image with ``as_pil=True``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageColor
from skimage.segmentation import find_boundaries

# CSS "green" is (0, 128, 0): too dark to read as a tint over a photo.
_NAMED = {"green": (0, 200, 0), "red": (220, 0, 0)}
# Anchors of the jet palette Grad-CAM pictures are usually drawn in.
_JET = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0],
                 [128, 0, 0]], dtype=np.float64)
# Share of its opacity a superpixel keeps when its confidence interval crosses zero.
_FADED = 0.25


def colour(value) -> tuple[int, int, int]:
    """An RGB triple from a colour name (``"green"``, any CSS name, ``"#rrggbb"``) or a triple."""
    if isinstance(value, str):
        if value.lower() in _NAMED:
            return _NAMED[value.lower()]
        try:
            return ImageColor.getrgb(value)[:3]
        except ValueError as exc:
            raise ValueError(f"unknown colour {value!r}: use a CSS name, '#rrggbb' or an RGB "
                             "triple") from exc
    triple = tuple(int(v) for v in np.asarray(value).ravel())
    if len(triple) != 3 or not all(0 <= v <= 255 for v in triple):
        raise ValueError(f"a colour must be a name or an RGB triple of 0..255; got {value!r}")
    return triple


def to_rgb8(image) -> np.ndarray:
    """A displayable (H, W, 3) uint8 copy of an image.

    Integer images are clipped to 0..255; float images in [0, 1] are scaled by 255, other floats
    are clipped to 0..255. (H, W) and (H, W, 1) are repeated to three channels; a fourth (alpha)
    channel is dropped.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                         f"got shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.copy()
    if image.dtype.kind == "f" and image.size and image.min() >= 0 and image.max() <= 1:
        image = image * 255.0
    return np.clip(np.round(image.astype(np.float64)), 0, 255).astype(np.uint8)


def segment_weights(weights, n_segments: int, *, fill: float = 0.0,
                    name: str = "weight") -> np.ndarray:
    """(n_segments,) float64 values from an array, a dict or ``local_exp``'s (feature, weight)
    pairs; segments without a value get ``fill``. ``name`` is what errors call a value."""
    if isinstance(weights, Mapping):
        weights = list(weights.items())
    if isinstance(weights, np.ndarray) and weights.ndim == 1:
        if weights.shape[0] != n_segments:
            raise ValueError(f"{name}s must have one value per segment ({n_segments}); "
                             f"got {weights.shape[0]}")
        return weights.astype(np.float64)
    out = np.full(n_segments, fill, dtype=np.float64)
    for feature, weight in weights:
        if not 0 <= int(feature) < n_segments:
            raise ValueError(f"{name} for segment {feature}, outside 0..{n_segments - 1}")
        out[int(feature)] = weight
    return out


def two_sided_z(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence``: intervals ``w +- z * se`` hold it.

    Args:
        confidence: coverage of the interval, in (0, 1); 0.9 gives z = 1.645.

    Returns:
        z, with ``scipy.stats.norm.ppf(0.5 + confidence / 2) == z``.
    """
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), such as 0.9; "
                         f"got {confidence!r}")
    return float(NormalDist().inv_cdf(0.5 + confidence / 2))


def _uncertain(weights: np.ndarray, stderr: np.ndarray, z: float) -> np.ndarray:
    """Where the interval ``w +- z * se`` reaches zero, or ``se`` is unknown (NaN): the
    explanation cannot tell the weight's sign."""
    return ~(np.abs(weights) > z * stderr)


def _stderr_values(stderr, n_segments: int) -> np.ndarray:
    """(n_segments,) standard errors; NaN (unknown) where none is given."""
    se = segment_weights(stderr, n_segments, fill=np.nan, name="standard error")
    if np.any(se < 0):
        bad = np.flatnonzero(se < 0)
        raise ValueError(f"standard errors must be >= 0 (NaN or inf when unknown); got "
                         f"{se[bad[0]]} for segment {bad[0]}")
    return se


def select_segments(weights: np.ndarray, segments: np.ndarray, coverage: float | None = None,
                    num_segments: int | None = None) -> np.ndarray:
    """Segments of positive weight, strongest first, until they cover ``coverage`` of the image
    (the segment that reaches it included) or number ``num_segments``; all of them if neither."""
    order = np.argsort(-weights, kind="stable")
    order = order[weights[order] > 0]
    if num_segments is not None:
        return order[:max(0, int(num_segments))]
    if coverage is None:
        return order
    area = np.bincount(segments.ravel(), minlength=weights.shape[0])[order]
    reached = np.cumsum(area) >= coverage * segments.size
    stop = int(np.argmax(reached)) + 1 if reached.any() else order.shape[0]
    return order[:stop] if coverage > 0 else order[:0]


def render_explanation(image, segments, weights, positive="green", negative="red",
                       coverage: float | None = 0.05, opacity: float = 0.6, *,
                       num_segments: int | None = None, boundaries: bool = True,
                       as_pil: bool = False, stderr=None, confidence: float = 0.9):
    """The image with its strongest superpixels tinted: evidence for in ``positive``, against in
    ``negative``.

    With ``stderr``, a chosen superpixel whose interval ``w +- z * se`` reaches zero (z the
    two-sided normal quantile of ``confidence``), or whose standard error is NaN or missing, is
    faded: tinted at a quarter of the opacity it would have, and not outlined. The others are
    drawn exactly as without ``stderr``.

    Args:
        image: (H, W, C) or (H, W) image (uint8, or floats in [0, 1] or [0, 255]).
        segments: (H, W) integer labels 0..n-1.
        weights: (n,) weight per segment, or ``local_exp[label]``'s (segment, weight) pairs.
        positive, negative: colours (name or RGB triple) of each sign; None leaves it out.
        coverage: share of the image each sign's segments cover, strongest first.
        opacity: tint of the strongest segment; weaker ones are tinted less.
        num_segments: take this many segments of each sign instead of a coverage.
        boundaries: outline the chosen segments in their colour.
        as_pil: return a PIL image.
        stderr: standard error of each weight, in the forms ``weights`` takes
            (``explanation.stderr[label]``); None draws every chosen superpixel in full.
        confidence: coverage of the intervals, in (0, 1).

    Returns:
        (H, W, 3) uint8 array, or a PIL image.
    """
    out = to_rgb8(image).astype(np.float64)
    segments = np.asarray(segments)
    if segments.shape != out.shape[:2]:
        raise ValueError(f"segments must have the image's shape {out.shape[:2]}; "
                         f"got {segments.shape}")
    w = segment_weights(weights, int(segments.max()) + 1)
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity}")
    z = two_sided_z(confidence)
    faded = None if stderr is None else _uncertain(w, _stderr_values(stderr, w.shape[0]), z)
    for sign, tint in ((1.0, positive), (-1.0, negative)):
        if tint is None:
            continue
        rgb = np.asarray(colour(tint), dtype=np.float64)
        chosen = select_segments(sign * w, segments, coverage, num_segments)
        if chosen.size == 0:
            continue
        # Opacity grows with the weight, so the order of the chosen segments stays visible.
        alpha_of = np.zeros(w.shape[0])
        strength = sign * w[chosen]
        alpha_of[chosen] = opacity * (0.35 + 0.65 * strength / strength.max())
        if faded is not None:
            alpha_of[faded] *= _FADED
            outlined = chosen[~faded[chosen]]
        else:
            outlined = chosen
        alpha = alpha_of[segments][..., None]
        out = out * (1 - alpha) + rgb * alpha
        if boundaries and outlined.size:
            keep = np.zeros(w.shape[0], dtype=np.int64)
            keep[outlined] = outlined + 1
            # Padded with "not chosen", so outlines close along the image's border too.
            labels = np.pad(keep[segments], 1)
            edge = (find_boundaries(labels, mode="inner") & (labels > 0))[1:-1, 1:-1]
            out[edge] = rgb
    return _finish(out, as_pil)


def weight_map(segments, weights) -> np.ndarray:
    """(H, W) float64: each pixel carries its segment's weight (the tutorials' heatmap)."""
    segments = np.asarray(segments)
    return segment_weights(weights, int(segments.max()) + 1)[segments]


def heatmap(segments, weights, *, positive="green", negative="red", scale: float | None = None,
            image=None, boundaries: bool = False, as_pil: bool = False):
    """Every superpixel coloured by its weight: white at 0, ``positive``/``negative`` at +-scale.

    Args:
        segments: (H, W) integer labels 0..n-1.
        weights: (n,) weight per segment, or (segment, weight) pairs.
        positive, negative: colours of the two signs.
        scale: weight drawn at full colour; default the largest ``|weight|`` (give two maps the
            same scale to compare them).
        image: optional image shown faintly under the colours.
        boundaries: outline every segment in grey.
        as_pil: return a PIL image.

    Returns:
        (H, W, 3) uint8 array, or a PIL image.
    """
    values = weight_map(segments, weights)
    if scale is None:
        scale = float(np.abs(values).max())
    t = np.clip(values / scale, -1, 1)[..., None] if scale > 0 else np.zeros(values.shape + (1,))
    if image is None:
        base = np.full(values.shape + (3,), 255.0)
    else:
        grey = to_rgb8(image).astype(np.float64).mean(axis=-1, keepdims=True)
        base = np.repeat(155.0 + 0.39 * grey, 3, axis=-1)  # faded: the colours stay readable
    pos, neg = (np.asarray(colour(c), dtype=np.float64) for c in (positive, negative))
    out = np.where(t >= 0, base * (1 - t) + pos * t, base * (1 + t) - neg * t)
    if boundaries:
        out[find_boundaries(np.asarray(segments), mode="inner")] = 160.0
    return _finish(out, as_pil)


def cam_overlay(image, cam, opacity: float = 0.5, *, as_pil: bool = False):
    """A class-activation map in the jet palette over the image.

    Args:
        image: (H, W, C) or (H, W) image.
        cam: (H, W) map in [0, 1] (``limefast.gradcam``'s output for one image).
        opacity: weight of the palette against the image.
        as_pil: return a PIL image.
    """
    base = to_rgb8(image).astype(np.float64)
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, 1)
    if cam.shape != base.shape[:2]:
        raise ValueError(f"cam must have the image's shape {base.shape[:2]}; got {cam.shape}")
    pos = cam * (len(_JET) - 1)
    lo = np.minimum(pos.astype(np.int64), len(_JET) - 2)
    frac = (pos - lo)[..., None]
    palette = _JET[lo] * (1 - frac) + _JET[lo + 1] * frac
    return _finish(base * (1 - opacity) + palette * opacity, as_pil)


def _finish(out: np.ndarray, as_pil: bool):
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out) if as_pil else out


def explanation_label(explanation, label=None):
    """``label``, or the explanation's first top label, or its first explained label."""
    if label is not None:
        if label not in explanation.local_exp:
            raise KeyError(f"label {label} was not explained; explained labels: "
                           f"{sorted(explanation.local_exp)}")
        return label
    top = getattr(explanation, "top_labels", None)
    if top:
        return top[0]
    if not explanation.local_exp:
        raise ValueError("the explanation has no explained label")
    return next(iter(explanation.local_exp))


# Names that lived here before the pictures were split by job: still importable from here.
_MOVED = {"plot_explanation": "limefast.viz.plot", "panel": "limefast.viz.panel",
          "curve_plot": "limefast.viz.panel", "font": "limefast.viz.panel",
          "png_bytes": "limefast.viz.panel"}


def __getattr__(name):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

