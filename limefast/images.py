"""Image files in, (H, W, 3) uint8 RGB arrays out: the one loader of the command line, the
dataset runner and the demo, with the resize policy said out loud."""

from __future__ import annotations

import numpy as np

RESIZE_POLICIES = ("crop", "stretch")


def load_image(path, size=None, *, resize: str = "crop") -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (grayscale, palette and RGBA converted, alpha
    dropped), resized with bilinear filtering.

    Args:
        path: a local (or mounted) file path.
        size: None or 0 keeps the file's size; an int S or a pair (H, W) is the output size.
        resize: ``"crop"`` scales the image to cover the output and crops its centre (the
            aspect ratio is kept, as torchvision's tutorials do); ``"stretch"`` scales each axis
            to the output size.

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        ValueError: an unknown policy or size.
        OSError, PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError: a file that
            cannot be decoded, as Pillow raises it (callers word it for their users).
    """
    from PIL import Image

    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}; got {resize!r}")
    target = None
    if size:
        height, width = (size, size) if np.ndim(size) == 0 else size
        target = (int(height), int(width))
        if min(target) < 1:
            raise ValueError(f"size must be positive; got {size!r}")
    with Image.open(path) as img:
        img.load()
        rgb = img.convert("RGB")
    if target is not None:
        height, width = target
        if resize == "stretch":
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        else:
            scale = max(height / rgb.height, width / rgb.width)
            w = max(width, round(rgb.width * scale))
            h = max(height, round(rgb.height * scale))
            rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
            left, top = (w - width) // 2, (h - height) // 2
            rgb = rgb.crop((left, top, left + width, top + height))
    return np.asarray(rgb, dtype=np.uint8).copy()
