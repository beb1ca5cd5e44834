"""The tutorial notebooks as committed: no outputs (the docs build and ``make notebooks`` run
them), and every limefast name they use, with every name of ``limefast.__all__``, in the API
reference (docs/api.md); and every ``limefast.`` name the docs pages write as code exists.
Running the notebooks is ``make notebooks`` (nbmake) and ``make docs``."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

import limefast

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", "_build", "jupyter_execute", ".ipynb_checkpoints", "build", ".git"}
NOTEBOOKS = sorted(p for p in ROOT.rglob("*.ipynb") if not SKIP & set(p.relative_to(ROOT).parts))
API = ROOT / "docs" / "api.md"


def committed_outputs(notebook: dict) -> list[str]:
    """What a notebook holds that only running it writes: outputs, execution counts, saved
    widget state; one line per finding, empty when it is clean."""
    found = []
    for i, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i}: execution_count {cell['execution_count']}")
    if "widgets" in notebook.get("metadata", {}):
        found.append("metadata: saved widget state")
    return found


def test_tutorials_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"pytorch_resnet.ipynb", "gradcam_lime_kernelshap.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    found = committed_outputs(json.loads(path.read_text()))
    assert not found, (f"{path.relative_to(ROOT)} is committed with outputs ({'; '.join(found)}):"
                       " clear them (Jupyter: Edit > Clear Outputs of All Cells, or "
                       "`jupyter nbconvert --clear-output --inplace NOTEBOOK`)")


def test_the_check_sees_outputs():
    cell = {"cell_type": "code", "source": "1", "metadata": {}, "outputs": [],
            "execution_count": None}
    clean = {"cells": [dict(cell)], "metadata": {}}
    assert committed_outputs(clean) == []
    ran = {"cells": [dict(cell, execution_count=1, outputs=[{"output_type": "execute_result"}])],
           "metadata": {"widgets": {}}}
    assert committed_outputs(ran) == ["cell 0: 1 output(s)", "cell 0: execution_count 1",
                                      "metadata: saved widget state"]


def documented() -> dict[int, str]:
    """id(object) -> name of every object docs/api.md documents (an autodoc directive, or
    ``py:data`` for a constant)."""
    out = {}
    for name in re.findall(r"^\.\. (?:auto\w+|py:data):: (\S+)", API.read_text(), flags=re.M):
        out[id(resolve(name))] = name
    return out


def resolve(name: str):
    """The object a dotted name names: a module, or an attribute of the longest module."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def used_names(source: str) -> set[str]:
    """Dotted limefast names a code cell imports, and the attributes it takes of imported
    limefast modules (``panel.panel`` after ``from limefast.viz import panel``)."""
    tree = ast.parse(source)
    names, modules = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("limefast"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if isinstance(resolve(full), type(limefast)):
                    modules[alias.asname or alias.name] = full
                else:
                    names.add(full)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("limefast"):
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            names.add(f"{modules[node.value.id]}.{node.attr}")
    return names


def test_every_public_name_is_documented():
    known = documented()
    missing = [name for name in limefast.__all__ if name != "__version__"
               and id(getattr(limefast, name)) not in known]
    assert not missing, f"docs/api.md has no entry for limefast.{missing}"
    assert ".. py:data:: limefast.__version__" in API.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_name_a_tutorial_uses_is_documented(path):
    known = documented()
    cells = json.loads(path.read_text())["cells"]
    used = set().union(*(used_names("".join(c["source"])) for c in cells
                         if c["cell_type"] == "code"))
    assert used, f"{path.name} uses no limefast name"
    missing = sorted(name for name in used if id(resolve(name)) not in known)
    assert not missing, f"{path.name} uses {missing}: add them to docs/api.md"


def test_used_names_reads_imports_and_attributes():
    source = ("from limefast import lime_image, TorchClassifier\n"
              "from limefast.viz import panel\nimport limefast.metrics as m\n"
              "panel.panel([]); m.faithfulness; lime_image.LimeImageExplainer\n")
    assert used_names(source) == {"limefast.TorchClassifier", "limefast.viz.panel.panel",
                                  "limefast.metrics.faithfulness",
                                  "limefast.lime_image.LimeImageExplainer"}


def test_notebook_requires_says_what_to_install_and_skips(capsys):
    from limefast.optional import notebook_requires

    assert notebook_requires("json") is True and capsys.readouterr().out == ""
    interactive = pytest.importorskip("IPython.core.interactiveshell",
                                      reason="IPython: limefast[docs]")
    shell = interactive.InteractiveShell.instance()
    try:
        first = shell.run_cell("from limefast.optional import notebook_requires\n"
                               "ok = notebook_requires('json', 'lime.no_such_module')")
        assert first.error_in_exec is None and shell.user_ns["ok"] is False
        later = shell.run_cell("raise RuntimeError('this cell must not run')")
        assert later.success and later.error_in_exec is None
        out = capsys.readouterr().out
        line = ("this notebook needs lime.no_such_module (lime.no_such_module: pip install "
                "'limefast[bench]'); its cells are skipped")
        assert out.count(line) == 2, out
    finally:
        interactive.InteractiveShell.clear_instance()


DOC_PAGES = sorted(p for p in [*ROOT.glob("docs/**/*.md"), ROOT / "README.md",
                               ROOT / "benchmarks" / "README.md"]
                   if not SKIP & set(p.relative_to(ROOT).parts))


def named_in(text: str) -> set[str]:
    """Dotted ``limefast.`` names written as code (between backticks) in a Markdown page."""
    return {name for code in re.findall(r"`([^`\n]+)`", text)
            for name in re.findall(r"(?<![\w/.])(limefast(?:\.[A-Za-z_]\w*)+)", code)}


def test_named_in_reads_code_spans_only():
    assert named_in("`limefast.viz.panel` and limefast.nothing, `x = limefast.faithfulness(e)`"
                    " `limefast/viz/panel.py`") == {"limefast.viz.panel", "limefast.faithfulness"}


@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT)) for p in DOC_PAGES])
def test_docs_name_only_what_exists(page):
    missing = []
    for name in sorted(named_in(page.read_text())):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"{page.relative_to(ROOT)} names {missing}, which do not exist"
