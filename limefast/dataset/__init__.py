"""Whole datasets on Ray Data: the driver (``driver``), what each worker runs (``worker``) and
the ``limefast explain-dataset`` command (``command``); detectors and segmenters
(``detection``). Ray is imported only when a run starts."""

from limefast.dataset.detection import DetectorFactory
from limefast.dataset.driver import DatasetRun, explain_dataset, ray_available, read_results
from limefast.dataset.worker import image_seed, load_image, overlay_name

__all__ = ["DatasetRun", "DetectorFactory", "explain_dataset", "image_seed", "load_image",
           "overlay_name", "ray_available", "read_results"]
