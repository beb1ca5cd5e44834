"""Grad-CAM (Selvaraju et al., 2017) for a batch of images, on the model's device.

For class ``c`` and a layer's feature maps ``A_k`` (N, K, h, w), Grad-CAM weighs each map by the
mean gradient of the class score over it, ``alpha_k = mean_ij d y_c / d A_k[i, j]``, and keeps
the positive part of the weighted sum, ``relu(sum_k alpha_k A_k)``, upsampled (bilinear) to the
input's size. ``y_c`` is the model's output before any softmax (torchvision models return logits).

The default layer is the model's last convolutional block: of the modules whose output is a
spatial feature map (4-D, more than one pixel; pooling and dropout layers aside), the last one to
finish during a forward pass. For a ResNet that is ``layer4`` (after the last residual sum), for
Inception-v3 ``Mixed_7c`` (all its branches, not the last convolution of one of them), for a
``features`` Sequential of convolutions the Sequential.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from limefast.optional import require

if TYPE_CHECKING:
    import torch
    from torch import nn


def _torch():
    # Imported on first use, so that ``import limefast`` (which exports gradcam) stays torch-free.
    return require("torch", "limefast.gradcam")


def gradcam(model, images, target_layer=None, labels=None, *, mean=None, std=None, scale=None,
            normalize: bool = True, batch_size: int | None = None) -> np.ndarray:
    """Grad-CAM maps of a batch of images.

    Args:
        model: a ``torch.nn.Module`` returning (N, n_classes) scores, or a
            ``limefast.TorchClassifier`` (its module and its preprocessing are used).
        images: a (N, C, H, W) float tensor, fed to the model as it is; or NumPy images
            (N, H, W, C) or one (H, W, C), preprocessed as a TorchClassifier would:
            ``(image * scale - mean) / std`` with ``scale`` 1/255 for integer images.
        target_layer: the layer whose feature maps are weighed: a module of ``model``, its
            dotted name (``"layer4"``, ``"features.6"``), or None for the last convolutional
            block.
        labels: class of each image: None for the top-scoring class, an int for all, or a
            sequence of N ints.
        mean, std, scale: preprocessing of NumPy images (defaults: the TorchClassifier's, or
            0, 1 and 1/255 for integer images).
        normalize: divide each map by its maximum, so it lies in [0, 1].
        batch_size: images per forward and backward pass (default: all at once).

    Returns:
        (N, H, W) float32 maps, on the host.
    """
    torch = _torch()
    module, prep = _module_and_preprocessing(model)
    for name, value in (("mean", mean), ("std", std), ("scale", scale)):
        if value is not None:
            prep[name] = value
    device = _device_of(module)
    inputs = _as_input(images, prep)
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("images is an empty batch")
    layer = _resolve_layer(module, target_layer, inputs[:1].to(device))
    label_list = _labels(labels, n)
    step = n if batch_size is None else max(1, int(batch_size))
    was_training = module.training
    module.eval()
    try:
        maps = [_cam(module, layer, inputs[i:i + step].to(device),
                     None if label_list is None else label_list[i:i + step])
                for i in range(0, n, step)]
    finally:
        module.train(was_training)
    cams = torch.cat(maps).float()
    if normalize:
        peak = cams.flatten(1).amax(dim=1).clamp_min(torch.finfo(cams.dtype).tiny)
        cams = cams / peak[:, None, None]
    return cams.cpu().numpy()


def _cam(module: nn.Module, layer: nn.Module, x: torch.Tensor, labels) -> torch.Tensor:
    """(n, H, W) Grad-CAM maps of one batch, before normalisation."""
    torch = _torch()
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # gradients flow even through frozen weights
            scores = module(x)
            if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
                raise ValueError(f"the model must return (N, n_classes) scores; got "
                                 f"{getattr(scores, 'shape', type(scores).__name__)}")
            if not captured:
                raise ValueError("target_layer did not run during the model's forward pass")
            acts = captured[-1]
            if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
                raise ValueError(f"target_layer must output (N, K, h, w) feature maps; got "
                                 f"{getattr(acts, 'shape', type(acts).__name__)}")
            if labels is None:
                chosen = scores.argmax(dim=1)
            else:
                chosen = torch.as_tensor(labels, device=scores.device)
                if int(chosen.max()) >= scores.shape[1]:
                    raise ValueError(f"label {int(chosen.max())} is outside the model's "
                                     f"{scores.shape[1]} classes")
            picked = scores.gather(1, chosen[:, None].long()).sum()
            (grads,) = torch.autograd.grad(picked, acts)
    finally:
        handle.remove()
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * acts).sum(dim=1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam.float(), size=x.shape[2:], mode="bilinear",
                                    align_corners=False)
    return cam[:, 0]


def _module_and_preprocessing(model) -> tuple[nn.Module, dict]:
    nn = _torch().nn
    if isinstance(model, nn.Module):
        return model, {}
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):  # a TorchClassifier: its module and preprocessing
        prep = {name: getattr(model, name) for name in ("mean", "std", "scale")
                if getattr(model, name, None) is not None}
        return inner, prep
    raise TypeError(f"model must be a torch.nn.Module or a limefast.TorchClassifier; got "
                    f"{type(model).__name__}")


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return _torch().device("cpu")


def _as_input(images, prep: dict) -> torch.Tensor:
    """(N, C, H, W) float tensor on the host (or where a given tensor lives)."""
    torch = _torch()
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"a tensor of images must be (N, C, H, W); got shape "
                             f"{tuple(images.shape)}")
        return images if images.is_floating_point() else images.float()
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.dtype.kind not in "iuf":
        raise ValueError(f"images must be a (N, C, H, W) tensor or NumPy (N, H, W, C) / (H, W, "
                         f"C) numbers; got {array.dtype} array of shape {array.shape}")
    scale = prep.get("scale")
    if scale is None:
        scale = 1 / 255 if array.dtype.kind in "iu" else 1.0
    channels = array.shape[-1]
    mean = np.broadcast_to(np.asarray(prep.get("mean", 0.0), np.float32), (channels,))
    std = np.broadcast_to(np.asarray(prep.get("std", 1.0), np.float32), (channels,))
    x = (array.astype(np.float32) * np.float32(scale) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _labels(labels, n: int):
    if labels is None:
        return None
    if isinstance(labels, numbers.Integral):
        return [int(labels)] * n
    labels = [int(label) for label in labels]
    if len(labels) != n:
        raise ValueError(f"labels must be one int or {n} ints (one per image); got {len(labels)}")
    if min(labels) < 0:
        raise ValueError(f"labels must be class indices >= 0; got {min(labels)}")
    return labels


def _resolve_layer(module: nn.Module, target_layer, probe: torch.Tensor) -> nn.Module:
    nn = _torch().nn
    if isinstance(target_layer, nn.Module):
        if not any(m is target_layer for m in module.modules()):
            raise ValueError("target_layer is not a submodule of the model")
        return target_layer
    if isinstance(target_layer, str):
        try:
            return module.get_submodule(target_layer)
        except AttributeError as exc:
            names = [name for name, m in module.named_modules() if name and _is_conv(m)]
            raise ValueError(f"the model has no layer {target_layer!r} (convolutions: "
                             f"{', '.join(names[-4:]) or 'none'})") from exc
    if target_layer is not None:
        raise TypeError(f"target_layer must be a module, a name or None; got {target_layer!r}")
    return last_conv_block(module, probe)


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, _torch().nn.modules.conv._ConvNd)


def last_conv_block(module: nn.Module, probe: torch.Tensor) -> nn.Module:
    """The last module to finish on a spatial feature map when ``module`` runs on ``probe``."""
    torch = _torch()
    nn = torch.nn
    not_features = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
                    nn.modules.dropout._DropoutNd, nn.Identity)
    finished: list[nn.Module] = []

    def record(m, _inputs, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            finished.append(m)

    handles = [m.register_forward_hook(record) for m in module.modules()
               if m is not module and not isinstance(m, not_features)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(probe)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError("the model has no layer with a spatial output: give target_layer")
    return finished[-1]
