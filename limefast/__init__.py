"""limefast: LIME image explanations with compiled kernels.

``from limefast import lime_image`` is a drop-in for ``from lime import lime_image``.
``limefast.TorchClassifier`` (needs the ``torch`` extra) runs explanations on a PyTorch device.
Pictures and comparisons: ``limefast.render_explanation``, ``limefast.gradcam`` (torch) and
``limefast.faithfulness``; the ``limefast`` command line explains image files.
"""

from . import lime_image
from .faithfulness import faithfulness
from .gradcam import gradcam  # imports torch only when called
from .lime_image import ImageExplanation, LimeImageExplainer
from .render import render_explanation

__version__ = "0.1.0"

__all__ = ["ImageExplanation", "LimeImageExplainer", "TorchClassifier", "faithfulness",
           "gradcam", "lime_image", "render_explanation", "__version__"]

# Loaded on first use: torch is optional and slow to import. (Functions named like their module,
# such as ``gradcam``, are imported above instead: importing the submodule would otherwise leave
# the module, not the function, as the package's attribute.)
_LAZY = {"TorchClassifier": ".torch_classifier"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'limefast' has no attribute {name!r}")
