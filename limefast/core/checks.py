"""Argument checks shared by the public entry points.

Each check says what it received and what it wants, and raises before any work starts.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from pathlib import Path

import numpy as np


class RelabelWarning(UserWarning):
    """Segments were not labelled 0..n-1 and have been relabelled."""


def positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; TypeError/ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


class ArgumentTypeError(ValueError, TypeError):
    """An argument of the wrong kind: both a ValueError (the issue a user meets: "what values
    does this take?") and the TypeError earlier releases raised for it."""


def int_or_auto(name: str, value, minimum: int = 1):
    """``"auto"``, or ``value`` as an int >= ``minimum``; a clear ValueError otherwise."""
    if isinstance(value, str):
        if value == "auto":
            return "auto"
        raise ValueError(f"{name} must be an integer >= {minimum} or 'auto'; got {value!r}")
    try:
        return positive_int(name, value, minimum)
    except TypeError:
        raise ArgumentTypeError(
            f"{name} must be an integer >= {minimum} or 'auto'; got {value!r}") from None


def optional_int(name: str, value, minimum: int = 1):
    """None, or ``value`` as an int >= ``minimum``."""
    return None if value is None else positive_int(name, value, minimum)


def open_unit(name: str, value):
    """None, or ``value`` as a float strictly between 0 and 1."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number between 0 and 1 (exclusive); "
                                f"got {value!r}")
    if not 0 < value < 1:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), e.g. 0.9; got {value!r}")
    return float(value)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def non_negative(name: str, value):
    """None, or ``value`` as a finite float of at least 0."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number of at least 0; got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of at least 0, e.g. 0.05; "
                         f"got {value!r}")
    return float(value)


def time_budget(value):
    """None, or a positive finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"time_budget must be a positive number of seconds; got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"time_budget must be a positive number of seconds; got {value!r}")
    return float(value)


def image_array(image) -> np.ndarray:
    """A 2-D or 3-D numeric, finite, non-empty NumPy image (not yet converted to RGB)."""
    if hasattr(image, "__cuda_array_interface__") or (
        hasattr(image, "device") and hasattr(image, "cpu") and hasattr(image, "numpy")
    ):
        image = _device_to_numpy(image)
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - any failure means "not an image"
            raise TypeError(f"image must be a NumPy array; got {type(image).__name__}") from exc
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C); got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    if image.dtype.kind not in "iuf":
        hint = " (use image.astype(np.uint8))" if image.dtype.kind == "b" else ""
        raise TypeError(f"image must have an integer or float dtype; got {image.dtype}{hint}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; replace them before explaining")
    return image


def _device_to_numpy(image) -> np.ndarray:
    if hasattr(image, "detach"):
        return image.detach().cpu().numpy()
    if hasattr(image, "get"):
        return image.get()
    raise TypeError(f"cannot read a device array of type {type(image).__name__} on the host")


def segments_array(segments, image_shape: tuple) -> tuple[np.ndarray, int]:
    """Segments as integer labels 0..n-1 of shape (H, W), and n.

    lime treats feature ``z`` as the segment labelled ``z``; labels that are not 0..n-1 (SLIC's
    ``start_label=1``, say) make it create a feature with no pixels and never switch the last
    segment off. limefast relabels in sorted order instead and warns.
    """
    segments = np.asarray(segments)
    if segments.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"segments must have the image's height and width {tuple(image_shape[:2])}; "
            f"got shape {segments.shape}"
        )
    if segments.dtype.kind == "f":
        if not np.isfinite(segments).all() or np.any(segments != np.round(segments)):
            raise ValueError("segments must hold integer labels; got non-integer floats")
        segments = segments.astype(np.int64)
    elif segments.dtype.kind not in "iub":
        raise TypeError(f"segments must be integer labels; got dtype {segments.dtype}")
    elif segments.dtype.kind == "b":
        segments = segments.astype(np.int64)
    lo, hi = segments.min(), segments.max()
    if lo == 0 and hi < segments.size:
        present = np.zeros(int(hi) + 1, dtype=bool)
        present[segments.ravel()] = True
        if present.all():
            return segments, int(hi) + 1
    uniques, inverse = np.unique(segments, return_inverse=True)
    n = uniques.size
    dtype = segments.dtype if np.can_cast(np.min_scalar_type(n - 1), segments.dtype) else np.int64
    warnings.warn(
        f"segments are labelled {_describe(uniques)}, not 0..{n - 1}: relabelled 0..{n - 1} in "
        "sorted order (lime would add an empty feature and never hide the last segment)",
        RelabelWarning,
        stacklevel=3,
    )
    return inverse.reshape(segments.shape).astype(dtype, copy=False), n


def _describe(uniques: np.ndarray) -> str:
    if uniques.size <= 6:
        return "{" + ", ".join(str(u) for u in uniques) + "}"
    return f"{uniques[0]}..{uniques[-1]} ({uniques.size} distinct)"


def label_list(labels, n_classes: int | None) -> list:
    """Explicitly requested labels, each an index into the classifier's output.

    With ``n_classes=None`` only the types are checked (before the classifier has run).
    """
    try:
        labels = list(labels)
    except TypeError as exc:
        raise TypeError(f"labels must be an iterable of class indices; got {labels!r}") from exc
    for label in labels:
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Integral):
            raise TypeError(f"labels must be integer class indices; got {label!r}")
        if n_classes is None:
            if label < 0:
                raise ValueError(f"labels must be class indices >= 0; got {label}")
        elif not 0 <= label < n_classes:
            raise ValueError(
                f"label {label} is outside the classifier's output of {n_classes} classes "
                f"(valid: 0..{n_classes - 1})"
            )
    return labels


def output_folder(path, prog: str) -> Path | None:
    """``path`` created (with its parents) as a Path, or None after one line on stderr saying
    why it cannot be: what a command reports before it exits with status 2."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{prog}: cannot write to output folder {out}: {exc.strerror or exc}",
              file=sys.stderr)
        return None
    return out
