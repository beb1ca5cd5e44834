"""What a request may carry, checked before any work: image files (base64 or a raw body) and
nested pixel lists, within limits. Every refusal is a ``RequestError`` with an HTTP status and
one line that says what came in and what is wanted."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import threading
import warnings

import numpy as np

from limefast import images
from limefast.core.checks import first_line

_WARNINGS_LOCK = threading.Lock()


class RequestError(Exception):
    """A request the server refuses: ``status`` (400, 404, 413, ...) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold.

    Attributes:
        max_body_bytes: the request body.
        max_pixels: an image's height x width, read from its header before decoding (a small
            file that claims a huge image is refused without being decompressed).
        max_instances: images in one request.
        size, resize: how image files are brought to the model's size, as ``limefast explain``
            does (``--size``, ``--resize``); nested pixel lists are taken as they are.
        channels: the channels the model takes (a (H, W) image is made RGB when it is 3).
        max_samples: the most rows one explanation may draw (``num_samples``, or
            ``max_samples`` with ``"auto"``): the rows are drawn before any model call.
    """

    max_body_bytes: int = 32 << 20
    max_pixels: int = 4096 * 4096
    max_instances: int = 16
    size: int = 224
    resize: str = "crop"
    channels: int = 3
    max_samples: int = 20000


def decode_file(data: bytes, limits: Limits) -> np.ndarray:
    """An image file's bytes as (H, W, 3) uint8 RGB at ``limits.size``.

    Raises:
        RequestError: 400 for bytes that are not an image, 413 for an image over
            ``limits.max_pixels`` (checked from the header, before decoding).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: reads the header only
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(400, f"the data is not an image file Pillow can read: "
                                f"{first_line(exc)}") from None
    if width * height > limits.max_pixels:
        raise RequestError(413, f"the image is {width}x{height} = {width * height} pixels, over "
                                f"the server's limit of {limits.max_pixels} (--max-image-pixels)")
    if limits.channels != 3:
        raise RequestError(400, f"the model takes {limits.channels}-channel images: send them "
                                "as nested pixel lists (image files are decoded to RGB)")
    try:
        # catch_warnings swaps the process's filters: one decode at a time, or two threads
        # would restore each other's. Our own limit is checked above.
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return images.load_image(io.BytesIO(data), limits.size or None,
                                     resize=limits.resize)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(400, f"cannot decode the image: {first_line(exc)}") from None


def decode_instance(instance, limits: Limits, where: str) -> np.ndarray:
    """One KServe V1 instance: ``{"b64": "<base64 of an image file>"}`` or nested pixel lists
    ((H, W) or (H, W, C) integers 0..255)."""
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise RequestError(400, f"{where}: an object instance must be "
                                    f'{{"b64": "<base64 of an image file>"}}; got keys '
                                    f"{sorted(instance)}")
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"{where}: b64 is not valid base64: "
                                    f"{first_line(exc)}") from None
        try:
            return decode_file(data, limits)
        except RequestError as exc:
            raise RequestError(exc.status, f"{where}: {exc}") from None
    if isinstance(instance, list):
        return pixels(instance, limits, where)
    raise RequestError(400, f'{where}: an instance is {{"b64": ...}} or a nested list of pixels; '
                            f"got {type(instance).__name__}")


def pixels(values: list, limits: Limits, where: str) -> np.ndarray:
    """Nested lists of integers 0..255 as a (H, W, C) uint8 image for the model."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise RequestError(400, f"{where}: the pixel lists are ragged (rows or pixels of "
                                "different lengths)") from None
    if array.dtype.kind not in "iuf" or array.ndim not in (2, 3):
        raise RequestError(400, f"{where}: pixels must be an (H, W) or (H, W, C) nested list of "
                                f"numbers; got {array.ndim} level(s) of {array.dtype}")
    height, width = array.shape[:2]
    if height * width > limits.max_pixels:
        raise RequestError(413, f"{where}: the image is {width}x{height} pixels, over the "
                                f"server's limit of {limits.max_pixels}")
    if min(height, width) < 2:
        raise RequestError(400, f"{where}: an image needs at least 2x2 pixels; got shape "
                                f"{array.shape}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.ndim == 2 and limits.channels == 3:
        array = np.repeat(array[:, :, None], 3, axis=2)  # gray2rgb, as explain_instance does
    elif channels != limits.channels:
        raise RequestError(400, f"{where}: the model takes {limits.channels}-channel images; "
                                f"got shape {array.shape} ({channels} channel(s))")
    if array.dtype.kind == "f" and not (np.isfinite(array).all()
                                        and (array == np.round(array)).all()):
        raise RequestError(400, f"{where}: pixels must be integers 0..255 (an 8-bit image)")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise RequestError(400, f"{where}: pixels must be integers 0..255; got values "
                                f"{array.min()}..{array.max()}")
    return np.ascontiguousarray(array, dtype=np.uint8)
