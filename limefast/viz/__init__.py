"""Pictures of explanations: ``render`` (tinted superpixels, heatmaps, Grad-CAM overlays),
``panel`` (tiles side by side, curves), ``plot`` (a matplotlib bar chart) and
``cam`` (Grad-CAM, to set beside LIME)."""

from limefast.viz.cam import gradcam, last_conv_block
from limefast.viz.panel import label_panel
from limefast.viz.plot import plot_explanation
from limefast.viz.render import heatmap, render_explanation

__all__ = ["gradcam", "heatmap", "label_panel", "last_conv_block", "plot_explanation",
           "render_explanation"]
