"""Superpixels: ``quickshift``, scikit-image's, label for label, from compiled kernels.

lime's own parameters for it (``LIME_QUICKSHIFT``) live here, the one home every caller takes
them from.
"""

from limefast.segmentation._quickshift import quickshift

# lime_image.LimeImageExplainer's default segmentation: SegmentationAlgorithm('quickshift', ...)
LIME_QUICKSHIFT = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}
# The segmentations the apps offer by name (limefast explain --segmentation, limefast serve's
# "segmentation" parameter): lime's default quickshift; slic and felzenszwalb with the
# parameters tutorials use.
SEGMENTATIONS = {
    "quickshift": LIME_QUICKSHIFT,
    "slic": dict(n_segments=100, compactness=10, sigma=1, start_label=0),
    "felzenszwalb": dict(scale=100, sigma=0.5, min_size=50),
}

__all__ = ["LIME_QUICKSHIFT", "SEGMENTATIONS", "quickshift"]
