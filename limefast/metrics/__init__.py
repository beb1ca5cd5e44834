"""How faithful an explanation is to its model: deletion and insertion curves (``curves``)."""

from limefast.metrics.curves import Faithfulness, area, faithfulness, segment_scores

__all__ = ["Faithfulness", "area", "faithfulness", "segment_scores"]
