"""Pictures of explanations: ``render`` (tinted superpixels, heatmaps, panels, bar charts) and
``cam`` (Grad-CAM, to set beside LIME)."""

from limefast.viz.cam import gradcam, last_conv_block
from limefast.viz.render import heatmap, plot_explanation, render_explanation

__all__ = ["gradcam", "heatmap", "last_conv_block", "plot_explanation", "render_explanation"]
