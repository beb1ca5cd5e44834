"""What a notebook shows for an explanation or a panel of labels left at the end of a cell:
the top label's superpixels, with its ``expected_overlap`` and ``num_evaluated`` under them."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from conftest import GridClassifier, bundled
from PIL import Image

from limefast.lime_image import LimeImageExplainer
from limefast.viz import label_panel, panel


def grid_segments(h, w, rows, cols):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy * rows // h) * cols + xx * cols // w


def _explain(grid=4, **kwargs):
    image = bundled("coffee", 48)
    segments = grid_segments(48, 48, grid, grid)
    return LimeImageExplainer(random_state=3).explain_instance(
        image, GridClassifier(seed=2), top_labels=2, segmentation_fn=lambda _: segments,
        progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def explanation():
    return _explain(num_samples=150)


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _html_png(markup: str) -> np.ndarray:
    found = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', markup)
    assert found, markup[:200]
    return _png(base64.b64decode(found.group(1)))


def test_png_is_the_top_label_with_its_figures_under_it(explanation):
    label = explanation.top_labels[0]
    picture = explanation._repr_picture(label)
    shown = _png(explanation._repr_png_())
    # The picture, then two strips of text (18 px each) under it, at least as wide.
    assert shown.shape[0] == picture.shape[0] + 36 and shown.shape[1] >= picture.shape[1]
    np.testing.assert_array_equal(shown[:picture.shape[0], :picture.shape[1]], picture)
    strips = shown[picture.shape[0]:]
    assert (strips[:18] < 128).any() and (strips[18:] < 128).any()  # text on both lines
    # The first tile is the label's render, scaled to the tile height (as panel scales 48 px).
    tile = picture.shape[0] - 28
    rendered = Image.fromarray(explanation.render(label)).resize((tile, tile), Image.BILINEAR)
    np.testing.assert_array_equal(picture[20:20 + tile, 8:8 + tile], np.asarray(rendered))


def test_html_states_overlap_and_images_evaluated(explanation):
    label = explanation.top_labels[0]
    markup = explanation._repr_html_()
    overlap = explanation.expected_overlap[label]
    assert np.isfinite(overlap)
    assert f"label {label}: top {explanation.top_k}: expected overlap {overlap:.2f}" in markup
    assert f"{explanation.num_evaluated} images evaluated<" in markup
    assert explanation.num_evaluated == 150
    np.testing.assert_array_equal(_html_png(markup), explanation._repr_picture(label))


def test_fewer_images_than_rows_are_said():
    exp = _explain(grid=2, num_samples=400, dedupe=True)  # 4 superpixels: 16 distinct rows
    assert exp.num_evaluated < exp.num_samples == 400
    text = f"{exp.num_evaluated} images evaluated for 400 rows"
    assert text in exp._repr_html_()
    assert text in label_panel(exp).lines()


def test_unconverged_auto_says_why():
    with pytest.warns(UserWarning, match="short of target_overlap=0.999"):
        exp = _explain(num_samples="auto", max_samples=150, target_overlap=0.999)
    assert not exp.converged
    assert f"({exp.stop_reason}, not converged)" in exp._repr_html_()


def test_ipython_sends_png_and_html(explanation):
    formatters = pytest.importorskip("IPython.core.formatters", reason="IPython: limefast[docs]")
    data, _ = formatters.DisplayFormatter().format(explanation)
    assert data["image/png"] == explanation._repr_png_()
    assert data["text/html"] == explanation._repr_html_()
    data, _ = formatters.DisplayFormatter().format(label_panel(explanation))
    assert {"image/png", "text/html", "text/plain"} <= set(data)
    assert data["text/plain"] == f"LabelPanel(labels={explanation.top_labels})"


def test_label_panel_shows_each_label(explanation):
    shown = label_panel(explanation)
    assert shown.labels == list(explanation.top_labels)
    tiles = [explanation.render(label) for label in shown.labels]
    titled = [(shown._title(label), tile) for label, tile in zip(shown.labels, tiles)]
    expected = panel.panel(titled, tile=160)
    np.testing.assert_array_equal(np.asarray(shown.image), np.asarray(expected))
    lines = shown.lines()
    for label, line in zip(shown.labels, lines):
        assert line == f"label {label}: {explanation.overlap_caption(label)}"
        assert f"overlap {explanation.expected_overlap[label]:.2f}" in shown._title(label)
    assert lines[-1] == "150 images evaluated"
    png = _png(shown._repr_png_())
    assert png.shape[0] == shown.image.height + 18 * len(lines)
    np.testing.assert_array_equal(_html_png(shown._repr_html_()), np.asarray(shown.image))


def test_label_panel_one_label_and_columns(explanation, tmp_path):
    second = explanation.top_labels[1]
    one = label_panel(explanation, second)
    assert one.labels == [second]
    stacked = label_panel(explanation, columns=1)
    assert stacked.image.height > one.image.height and stacked.image.width == one.image.width
    stacked.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        # Text wider than the picture widens the canvas (white on the right).
        assert img.size == Image.fromarray(stacked.picture()).size
        assert img.height == stacked.image.height + 18 * 3 and img.width >= one.image.width


def test_label_panel_bad_labels(explanation):
    with pytest.raises(KeyError, match="label 99 was not explained"):
        label_panel(explanation, [explanation.top_labels[0], 99])
    with pytest.raises(ValueError, match="at least one label; got an empty list"):
        label_panel(explanation, [])


def test_progress_bars_take_the_notebook_form():
    """Every tqdm bar of limefast comes from ``tqdm.auto``: a widget in Jupyter, text elsewhere."""
    import ast
    from pathlib import Path

    import limefast

    sources = list(Path(limefast.__file__).parent.rglob("*.py"))
    plain = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "tqdm":
                plain.append(f"{path.name}: from tqdm import ...")
            elif isinstance(node, ast.Import) and any(a.name == "tqdm" for a in node.names):
                plain.append(f"{path.name}: import tqdm")
    assert not plain, plain
    users = [p.name for p in sources if "from tqdm.auto import tqdm" in p.read_text()]
    assert len(users) >= 3, users  # the rounds, KernelSHAP and the dataset driver
