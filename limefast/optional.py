"""Optional dependencies, one way: ``require`` imports a module or says how to install it;
``available`` says whether it imports; ``notebook_requires`` is a tutorial's first cell."""

from __future__ import annotations

import importlib

# The extra of limefast that installs each optional module (a submodule inherits its package's).
EXTRAS = {"torch": "torch", "torchvision": "torch", "numba.cuda": "cuda", "cupy": "cuda",
          "ray": "dataset", "pyarrow": "dataset", "lime": "bench", "captum": "bench",
          "shap": "bench", "fastapi": "serve", "uvicorn": "serve",
          "prometheus_client": "serve", "httpx": "serve"}


def install_hint(module: str) -> str:
    """The command that installs ``module``: its limefast extra, else the package itself."""
    top = module.split(".")[0]
    extra = EXTRAS.get(module) or EXTRAS.get(top)
    return f"pip install 'limefast[{extra}]'" if extra else f"pip install {top}"


def require(module: str, feature: str):
    """``module`` imported, or an ImportError naming ``feature`` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs {module}: {install_hint(module)} "
                          f"(import failed: {exc})") from exc


def available(*modules: str) -> bool:
    """Whether every one of ``modules`` imports (each is imported, so a broken install says
    False too)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
    return True


def notebook_requires(*modules: str) -> bool:
    """For a notebook's first cell: True when every one of ``modules`` imports; else print the
    command that installs each missing one and, in IPython, make every later cell print it
    instead of running (a tutorial without its extra says what to install, not a traceback).

    Args:
        modules: module names, such as ``"torch"`` or ``"keras"``.

    Returns:
        Whether all of them import.
    """
    missing = [module for module in modules if not available(module)]
    if not missing:
        return True
    hints = "; ".join(f"{module}: {install_hint(module)}" for module in dict.fromkeys(missing))
    message = f"this notebook needs {', '.join(missing)} ({hints}); its cells are skipped"
    print(message)
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is not None:
        skip = [f"print({message!r})\n"]
        shell.input_transformers_post.append(lambda _lines: skip)
    return False
