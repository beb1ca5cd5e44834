"""Pictures laid out for the command line, the demo and notebooks: tiles side by side with
titles (``panel``), deletion/insertion curves (``curve_plot``), PNG bytes (``png_bytes``), and
``label_panel``: several labels of one explanation, which a notebook shows as it shows an
explanation. Arrays in, (H, W, 3) uint8 arrays or PIL images out."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from limefast.viz.render import colour, to_rgb8


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


def captioned(picture: np.ndarray, text: str) -> np.ndarray:
    """(H, W, 3) uint8 ``picture`` above a white strip with ``text``; the canvas widens (white
    on the right) when the text is wider than the picture."""
    face = font(12)
    img = Image.fromarray(to_rgb8(picture))
    width = max(img.width, int(face.getlength(text)) + 8)
    canvas = Image.new("RGB", (width, img.height + 18), "white")
    canvas.paste(img, (0, 0))
    ImageDraw.Draw(canvas).text((4, img.height + 2), text, fill=(30, 30, 30), font=face)
    return np.asarray(canvas).copy()


def captioned_lines(picture: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """(H, W, 3) uint8 ``picture`` above one strip of text per line (``captioned``)."""
    for line in lines:
        picture = captioned(picture, line)
    return picture


def html_figure(picture, lines: Sequence[str]) -> str:
    """An HTML ``<figure>``: the picture as an inline PNG, ``lines`` (escaped) under it."""
    data = base64.b64encode(png_bytes(picture)).decode("ascii")
    caption = "<br>".join(html.escape(line) for line in lines)
    return (f'<figure style="margin: 0"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(lines[0]) if lines else "explanation"}">'
            f'<figcaption style="font-family: monospace">{caption}</figcaption></figure>')


class LabelPanel:
    """Several labels of one explanation side by side, each label's strongest superpixels
    tinted (``ImageExplanation.render``), with each label's ``expected_overlap`` and the
    images the model saw written under them. A notebook shows it at the end of a cell
    (``_repr_png_`` / ``_repr_html_``); ``image`` is the PIL picture, ``save`` writes it.

    Attributes:
        explanation: the ``ImageExplanation`` shown.
        labels: the labels shown, in order.
        image: the (PIL) picture, without the text under it.
    """

    def __init__(self, explanation, labels: Sequence | None = None, *, tile: int | None = None,
                 columns: int | None = None):
        from limefast.viz.render import explanation_label

        if labels is None:
            labels = list(explanation.top_labels or explanation.local_exp)
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
            labels = [labels]
        if not labels:
            raise ValueError("label_panel needs at least one label; got an empty list")
        self.explanation = explanation
        self.labels = [explanation_label(explanation, label) for label in labels]
        tile = tile or max(160, min(256, explanation.segments.shape[0]))
        self.image = panel([(self._title(label), explanation.render(label))
                            for label in self.labels], tile=tile, columns=columns)

    def _title(self, label) -> str:
        value = self.explanation.expected_overlap.get(label, float("nan"))
        return f"label {label}" + (f", overlap {value:.2f}" if np.isfinite(value) else "")

    def lines(self) -> list[str]:
        """The text under the picture: each label's overlap caption, then the images seen."""
        exp = self.explanation
        rows = (f"{exp.num_evaluated} images evaluated" if exp.num_evaluated == exp.num_samples
                else f"{exp.num_evaluated} images evaluated for {exp.num_samples} rows")
        return [f"label {label}: {exp.overlap_caption(label)}" for label in self.labels] + [rows]

    def picture(self) -> np.ndarray:
        """(H, W, 3) uint8: the picture with its text under it."""
        return captioned_lines(np.asarray(self.image), self.lines())

    def save(self, path) -> None:
        """Write the picture with its text (PNG, or any format Pillow infers from ``path``)."""
        Image.fromarray(self.picture()).save(path)

    def _repr_png_(self) -> bytes:
        return png_bytes(self.picture())

    def _repr_html_(self) -> str:
        return html_figure(self.image, self.lines())

    def __repr__(self) -> str:
        return f"LabelPanel(labels={self.labels})"


def label_panel(explanation, labels: Sequence | None = None, *, tile: int | None = None,
                columns: int | None = None) -> LabelPanel:
    """Several labels of one explanation side by side, shown by a notebook at the end of a cell.

    Args:
        explanation: an ``ImageExplanation`` (LIME or KernelSHAP).
        labels: the labels to show, or one label; default ``top_labels`` (else every explained
            label). KeyError names a label that was not explained.
        tile: height of each picture in pixels (default the image's, within 160..256).
        columns: pictures per row (all in one row by default).

    Returns:
        A ``LabelPanel``: ``.image`` is the PIL picture, ``.save(path)`` writes it.
    """
    return LabelPanel(explanation, labels, tile=tile, columns=columns)


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
