"""Optional dependencies, one way: ``require`` imports a module or says how to install it."""

from __future__ import annotations

import importlib

# The extra of limefast that installs each optional module.
EXTRAS = {"torch": "torch", "torchvision": "torch", "numba.cuda": "cuda", "cupy": "cuda",
          "ray": "dataset", "pyarrow": "dataset", "matplotlib": "bench", "lime": "bench"}


def require(module: str, feature: str):
    """``module`` imported, or an ImportError naming ``feature`` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module)
        hint = f"pip install 'limefast[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(f"{feature} needs {module}: {hint}") from exc
