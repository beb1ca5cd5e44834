"""limefast: LIME image explanations with compiled kernels.

``from limefast import lime_image`` is a drop-in for ``from lime import lime_image``.
"""

from . import lime_image
from .lime_image import ImageExplanation, LimeImageExplainer

__version__ = "0.1.0"

__all__ = ["ImageExplanation", "LimeImageExplainer", "lime_image", "__version__"]
