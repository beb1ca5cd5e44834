"""limefast: LIME image explanations with compiled kernels.

``from limefast import lime_image`` is a drop-in for ``from lime import lime_image``;
``limefast.KernelShapImageExplainer`` gives Shapley values over superpixels on the same stages.
``limefast.TorchClassifier`` (needs the ``torch`` extra) runs explanations on a PyTorch device.
Pictures and comparisons: ``limefast.render_explanation``, ``limefast.gradcam`` (torch) and
``limefast.faithfulness``; the ``limefast`` command line explains image files.

The house: ``core/`` the backend-neutral pipeline, ``segmentation/``, ``device/`` (PyTorch),
``kernelshap/`` (the Shapley explainer), ``viz/`` and ``metrics/``, ``wrappers/`` (lime's
mirror), and the apps ``cli/``, ``dataset/``, ``demo/``, ``benchsuite/``; the compiled kernels
are ``limefast.kernels``.
"""

from limefast import _moved, lime_image
from limefast.kernelshap import KernelShapImageExplainer
from limefast.lime_image import ImageExplanation, LimeImageExplainer
from limefast.metrics.curves import faithfulness
from limefast.viz.cam import gradcam  # imports torch only when called
from limefast.viz.render import render_explanation

_moved.install()

__version__ = "0.1.0"

__all__ = ["ImageExplanation", "KernelShapImageExplainer", "LimeImageExplainer", "TorchClassifier",
           "faithfulness", "gradcam", "lime_image", "render_explanation", "__version__"]

# Loaded on first use: torch is optional and slow to import.
_LAZY = {"TorchClassifier": "limefast.device.classifier"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'limefast' has no attribute {name!r}")
