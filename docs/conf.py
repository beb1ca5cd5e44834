"""Sphinx configuration of limefast's documentation: `make docs` builds it into docs/_build/html.

Sphinx with the pydata theme, MyST Markdown for the pages and myst-nb for the tutorials (the
scientific Python convention: scikit-image, NumPy, SciPy), autodoc with napoleon for the
Google-style docstrings. Warnings are errors (`-W` in the Makefile), nitpicky references
included: a page or docstring that names something that does not exist fails the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The kernels' background preload is for users' scripts; the build imports and documents.
os.environ.setdefault("LIMEFAST_PRELOAD", "0")

import limefast  # noqa: E402

project = "limefast"
author = "limefast contributors"
copyright = "limefast contributors"
version = release = limefast.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "jupyter_execute", "execute_notebooks.py"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST: anchors for headings (links such as device.md#options), colon fences.
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# The tutorials run at every build, top to bottom: a cell that raises fails the build, and a
# notebook slower than the bound fails it too. Their outputs are never committed. `make docs`
# empties _build, runs them all into this cache in parallel (execute_notebooks.py), then builds;
# a notebook missing from the cache, or changed since, is run here.
nb_execution_mode = os.environ.get("LIMEFAST_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(Path(__file__).parent / "_build" / ".jupyter_cache")
nb_execution_timeout = 150
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_excludepatterns: list[str] = []

# autodoc: signatures and parameters from the code, Google-style sections through napoleon.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Every cross-reference must resolve, except to the libraries limefast takes types from (their
# own docs are not built here and intersphinx needs the network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(np|numpy|torch|PIL|Image|ray|pd|pandas|fastapi|httpx|keras|matplotlib|"
               r"collections|typing|pathlib|os|concurrent|threading|sklearn|optional)(\..*)?"),
    (r"py:class", r"(Path|Sequence|Mapping|Callable|Iterable|Iterator|ArrayLike|Any|NDArray|"
                  r"Axes|Tensor|nn\.Module|Module|Future)"),
    # limefast.detection.protocol's alias of a Callable, as a class's signature names it
    (r"py:class", r"AffinityFn"),
    (r"py:class", r"(int|float|str|bool|bytes|dict|list|tuple|None|object|callable|type)"),
]

html_theme = "pydata_sphinx_theme"
html_title = f"limefast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
# A JSON example with "..." in it (cli.md) is drawn without colours rather than failing.
suppress_warnings = ["misc.highlighting_failure"]
