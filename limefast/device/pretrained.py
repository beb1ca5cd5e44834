"""The models users already have: Hugging Face ``transformers`` image classifiers and timm
models, taken as they come.

Two things differ from a plain ``nn.Module`` returning a tensor:

- *Outputs.* A ``transformers`` classifier returns an ``ImageClassifierOutput``, its class
  scores in ``.logits``. ``logits_of`` takes them out; ``logits_module`` wraps a model so that a
  trace or ``torch.compile`` sees a module returning one tensor. A tuple is not guessed at (which
  item holds the scores is the model's business): the classifier's check asks for a wrapper.
- *Normalisation.* Each carries its own: a ``transformers`` image processor's ``image_mean`` /
  ``image_std`` (with ``do_normalize``), timm's ``model.pretrained_cfg["mean"/"std"]``.
  ``normalisation_of`` reads them, so ``TorchClassifier(model, processor=processor)`` (or a timm
  model alone) normalises as the model was trained.

Neither package is imported here: the objects are read by their attributes.
"""

from __future__ import annotations

from collections.abc import Mapping

from limefast.device._torch import import_torch

IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def logits_of(out):
    """The (N, n_classes) tensor in a model's output: the tensor itself, ``out.logits`` (a
    ``transformers`` ``ModelOutput``) or ``out["logits"]``. Anything else, a tuple included, is
    returned as it is (the caller's check names it). No torch call: it runs inside every
    forward, traced or compiled."""
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    return out if logits is None else logits


def logits_module(model):
    """``model`` wrapped so that its forward returns ``logits_of`` its output: what a trace or
    ``torch.compile`` is given. In eval mode, like the model."""
    torch = import_torch()

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return logits_of(self.inner(x))

    return LogitsOnly(model).eval()


def normalisation_of(model, processor=None):
    """``(mean, std, source)`` the model's own configuration gives, or None.

    Args:
        model: a ``torch.nn.Module``; a timm model's ``pretrained_cfg`` (``mean``, ``std``) is
            read when no processor is given.
        processor: a ``transformers`` image processor (``AutoImageProcessor``,
            ``ViTImageProcessor``, ...): its ``image_mean`` and ``image_std``, or the identity
            when its ``do_normalize`` is False.

    Raises:
        TypeError: ``processor`` has no ``image_mean`` / ``image_std``.
    """
    if processor is not None:
        name = type(processor).__name__
        if getattr(processor, "do_normalize", True) is False:
            return (*IDENTITY, f"{name} (do_normalize=False)")
        mean = getattr(processor, "image_mean", None)
        std = getattr(processor, "image_std", None)
        if mean is None or std is None:
            raise TypeError(f"processor must be a transformers image processor with image_mean "
                            f"and image_std; got {name}")
        return _per_channel(mean), _per_channel(std), f"{name}.image_mean/image_std"
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("mean") is not None and cfg.get("std") is not None:
        return _per_channel(cfg["mean"]), _per_channel(cfg["std"]), "timm pretrained_cfg"
    return None


def _per_channel(values):
    """A processor's mean or std as a tuple; a single number stands for every RGB channel."""
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    return tuple(float(v) for v in values)
