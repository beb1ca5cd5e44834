"""limefast: LIME image explanations with compiled kernels.

``from limefast import lime_image`` is a drop-in for ``from lime import lime_image``.
``limefast.TorchClassifier`` (needs the ``torch`` extra) runs explanations on a PyTorch device.
"""

from . import lime_image
from .lime_image import ImageExplanation, LimeImageExplainer

__version__ = "0.1.0"

__all__ = ["ImageExplanation", "LimeImageExplainer", "TorchClassifier", "lime_image",
           "__version__"]


def __getattr__(name):
    # torch is optional and slow to import: load the torch-backed names on first use.
    if name == "TorchClassifier":
        from .torch_classifier import TorchClassifier

        return TorchClassifier
    raise AttributeError(f"module 'limefast' has no attribute {name!r}")
