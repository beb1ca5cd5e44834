"""Explanations on a PyTorch device: ``classifier`` (``TorchClassifier``), ``executor`` (the
stages run on the device), ``workspaces`` (its model-ready buffers), ``surrogate`` (the batched
ridge in ``torch.linalg``), ``cuda`` (CUDA graphs, uploads, ``segment_means`` of GPU images),
``options`` (its arguments checked), ``features`` (what the CPU computes natively) and
``_torch`` (the helpers they share). Needs the ``torch`` extra."""

from limefast.optional import require

require("torch", "limefast.device")  # the install hint, before any module imports torch

from limefast.device.classifier import TorchClassifier  # noqa: E402
from limefast.device.cuda import segment_means  # noqa: E402
from limefast.device.executor import DevicePrediction, TorchExecutor  # noqa: E402

__all__ = ["DevicePrediction", "TorchClassifier", "TorchExecutor", "segment_means"]
