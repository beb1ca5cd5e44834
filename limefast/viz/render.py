"""Pictures of explanations, drawn with NumPy and Pillow (matplotlib only for one plot).

- ``render_explanation``: the image with the superpixels of strongest weight tinted, positive in
  green and negative in red, and their boundaries drawn (visualime's ``render_explanation`` form:
  an image, a segment mask and one weight per segment). Given standard errors, superpixels whose
  weight the explanation is not sure of are drawn faded.
- ``plot_explanation``: a matplotlib bar chart of a label's strongest weights with their
  confidence intervals, for notebooks (matplotlib is imported when it is called).
- ``heatmap``: every superpixel coloured by its weight, on one symmetric scale.
- ``cam_overlay``: a Grad-CAM map in a jet palette over the image.
- ``curve_plot`` and ``panel``: deletion/insertion curves, and tiles side by side with titles,
  for the command line and the demo.

Every function returns a (H, W, 3) uint8 array, or a PIL image with ``as_pil=True``.
"""

from __future__ import annotations

import io
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont
from scipy.special import ndtri
from skimage.segmentation import find_boundaries

from limefast.core.checks import positive_int
from limefast.optional import require

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
    return float(ndtri(0.5 + confidence / 2))


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


def font(size: int = 12):
    """Pillow's bundled font at ``size`` pixels (a bitmap font on Pillow without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no sizes
        return ImageFont.load_default()


def curve_plot(x: np.ndarray, curves: Sequence[tuple[str, np.ndarray, object]],
               size: tuple[int, int] = (160, 128), *, xlabel: str = "share switched",
               as_pil: bool = False):
    """Line plot of curves over x in [0, 1]: probabilities against a share.

    The y axis runs from 0 to 1, or to a round value above the curves when they all stay under
    0.5 (an untrained model's probabilities are tiny, and flat at 0 on a [0, 1] axis).

    Args:
        x: (K,) values in [0, 1].
        curves: (name, (K,) values, colour) for each curve; names are written as a legend.
        size: (width, height) in pixels.
        xlabel: what x is.
        as_pil: return a PIL image.
    """
    width, height = size
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    small, label_font = font(10), font(12)  # at 10 px Pillow's font draws spaces 2 px wide
    peak = max([float(np.max(ys)) for _, ys, _ in curves] + [0.0])
    ymax = 1.0 if peak > 0.5 or peak <= 0 else _round_up(peak)
    ticks = [(v, f"{v * ymax:.2g}") for v in (0.0, 0.5, 1.0)]
    left = 8 + max(small.getlength(text) for _, text in ticks)
    right, top, bottom = 6, 6, 28
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    draw.rectangle([x0, y1, x1, y0], outline=(90, 90, 90))
    for v, text in ticks:
        y = y0 + (y1 - y0) * v
        draw.line([x0 - 3, y, x0, y], fill=(90, 90, 90))
        draw.text((2, y - 6), text, fill=(60, 60, 60), font=small)
    draw.text((x0, y0 + 3), "0", fill=(60, 60, 60), font=small)
    draw.text((x1 - 6, y0 + 3), "1", fill=(60, 60, 60), font=small)
    draw.text(((x0 + x1 - label_font.getlength(xlabel)) // 2, y0 + 13), xlabel, fill=(60, 60, 60),
              font=label_font)
    legend_y = y1 + 2
    for name, ys, tint in curves:
        xs = x0 + (x1 - x0) * np.clip(np.asarray(x, dtype=np.float64), 0, 1)
        yv = y0 + (y1 - y0) * np.clip(np.asarray(ys, dtype=np.float64) / ymax, 0, 1)
        rgb = colour(tint)
        draw.line(list(zip(xs.tolist(), yv.tolist())), fill=rgb, width=2)
        draw.text((x1 - label_font.getlength(name) - 4, legend_y), name, fill=rgb,
                  font=label_font)
        legend_y += 13
    return canvas if as_pil else np.asarray(canvas).copy()


def _round_up(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= value."""
    power = 10.0 ** np.floor(np.log10(value))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value))


def panel(tiles: Sequence[tuple[str, np.ndarray]], *, tile: int = 160,
          header: str | None = None, columns: int | None = None, as_pil: bool = True):
    """Tiles side by side, each scaled to ``tile`` pixels high with its title above it.

    Args:
        tiles: (title, (H, W, 3) uint8 image) pairs; small images are enlarged without blur.
        tile: height of every tile in pixels.
        header: a line of text above the row.
        columns: tiles per row (all in one row by default).
        as_pil: return a PIL image (else an array).
    """
    columns = columns or max(1, len(tiles))
    title_font, header_font = font(12), font(14)
    scaled = []
    for title, picture in tiles:
        img = Image.fromarray(to_rgb8(picture))
        w = max(1, round(img.width * tile / img.height))
        resample = Image.NEAREST if tile % img.height == 0 else Image.BILINEAR
        scaled.append((title, img.resize((w, tile), resample)))
    widths = [img.width for _, img in scaled]
    col_width = max(widths) + 8
    rows = (len(scaled) + columns - 1) // columns
    head = 22 if header else 0
    cell_h = tile + 20
    canvas = Image.new("RGB", (col_width * columns + 8, head + rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(canvas)
    if header:
        draw.text((8, 4), header, fill=(0, 0, 0), font=header_font)
    for i, (title, img) in enumerate(scaled):
        x = 8 + (i % columns) * col_width
        y = head + (i // columns) * cell_h + 4
        draw.text((x, y), _fit(title, title_font, img.width), fill=(30, 30, 30),
                  font=title_font)
        canvas.paste(img, (x, y + 16))
    return canvas if as_pil else np.asarray(canvas).copy()


def _fit(text: str, face, width: int) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def png_bytes(picture) -> bytes:
    """PNG encoding of an array or PIL image."""
    img = picture if isinstance(picture, Image.Image) else Image.fromarray(to_rgb8(picture))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


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
