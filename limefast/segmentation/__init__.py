"""Superpixels: ``quickshift``, scikit-image's, label for label, from compiled kernels.

lime's own parameters for it (``LIME_QUICKSHIFT``) live here, the one home every caller takes
them from.
"""

from limefast.segmentation._quickshift import quickshift

# lime_image.LimeImageExplainer's default segmentation: SegmentationAlgorithm('quickshift', ...)
LIME_QUICKSHIFT = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}

__all__ = ["LIME_QUICKSHIFT", "quickshift"]
