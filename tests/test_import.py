"""A user's first second: ``import limefast`` is cheap, the background load leaves no trace but
ready kernels, and the version is written once. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numba", "scipy", "sklearn", "pandas", "torch", "scipy.stats", "matplotlib")


def fresh(code: str, **env) -> dict:
    """Run ``code`` in a new interpreter from the repository's root; its last line is JSON."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_pulls_in_nothing_heavy():
    got = fresh(f"""
import json, sys
import limefast
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
""", LIMEFAST_PRELOAD="0")
    assert got == []


def test_public_names_resolve_lazily():
    got = fresh("""
import json, sys
import limefast
names = {n: type(getattr(limefast, n)).__name__ for n in limefast.__all__ if n != "TorchClassifier"}
print(json.dumps([names, "lime_image" in dir(limefast), "torch" in sys.modules]))
""", LIMEFAST_PRELOAD="0")
    names, listed, torch_loaded = got
    assert names["lime_image"] == "module" and names["LimeImageExplainer"] == "type"
    assert names["faithfulness"] == "function" and names["__version__"] == "str"
    assert listed and not torch_loaded  # gradcam imports torch only when called
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        import limefast

        limefast.nothing_here  # noqa: B018


def test_preload_warms_without_side_effects():
    """The background load finishes without error, imports no scikit-learn, pandas, torch or
    scipy.stats, leaves numpy's global random state alone, and the first explanation after it
    is the one a process without it gives."""
    code = """
import json, sys, numpy as np
np.random.seed(5)
state = np.random.get_state()[1].tolist()
import limefast
from limefast import _preload
finished = _preload.wait(120)
untouched = np.random.get_state()[1].tolist() == state
heavy = sorted(m for m in ("sklearn", "pandas", "torch", "scipy.stats") if m in sys.modules)
from limefast import lime_image
image = (np.random.RandomState(0).rand(24, 24, 3) * 255).astype(np.uint8)
w = np.random.RandomState(1).rand(3, 2)
fn = lambda b: np.asarray(b, float).reshape(len(b), -1, 3).mean(1) @ w
seg = lambda im: np.indices(im.shape[:2]).sum(0) // 6
e = lime_image.LimeImageExplainer(random_state=3).explain_instance(
    image, fn, top_labels=1, num_samples=300, segmentation_fn=seg, progress_bar=False)
label = e.top_labels[0]
print(json.dumps([finished, repr(_preload.error()), untouched, heavy,
                  [[int(f), float(v)] for f, v in e.local_exp[label]]]))
"""
    warm = fresh(code, LIMEFAST_PRELOAD="1")
    cold = fresh(code, LIMEFAST_PRELOAD="0")
    finished, error, untouched, heavy, weights = warm
    assert finished and error == "None" and untouched
    assert heavy == []
    assert weights == cold[4]


def test_the_steps_that_do_not_hold_the_import_lock_import_nothing():
    """The background load's kernel steps run while other threads may import, so they must find
    every module they need already imported by the steps before them (scikit-image's lazily
    loaded colour module once slipped through)."""
    got = fresh("""
import json, os, sys
import limefast
from limefast import _preload, _warmup
seen = []
def plan():
    def watched(step):
        def run():
            before = set(sys.modules)
            step.run()
            seen.append([step.imports, step.numba, sorted(set(sys.modules) - before)])
        return _preload.Step(run, imports=step.imports, numba=step.numba)
    return [watched(step) for step in _warmup.steps()]
os.environ["LIMEFAST_PRELOAD"] = "1"
_preload.start(plan)
print(json.dumps([_preload.wait(120), repr(_preload.error()), seen]))
""", LIMEFAST_PRELOAD="0")
    finished, error, seen = got
    assert finished and error == "None"
    assert sum(numba and not imports for imports, numba, _ in seen) == 4  # the explanations
    assert [new for imports, _, new in seen if not imports and new] == []
    assert any(new for imports, _, new in seen if imports)  # the import steps do import


def test_version_written_once():
    import importlib.metadata

    import limefast

    assert importlib.metadata.version("limefast") == limefast.__version__
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "\nversion =" not in text.split("[tool")[0]


def test_a_user_import_between_taking_and_holding_its_module_lock_does_not_deadlock():
    """A thread fetches a module lock under the import lock, lets go of it, and only then
    takes the module lock: a window in which it holds nothing yet. Widened here to 50 ms (the
    main thread's import of scikit-image), the preload must still not start its imports then
    (it would wait on that module while the user's import waits on the import lock)."""
    code = """
import importlib._bootstrap as b, json, threading, time
enter = b._ModuleLockManager.__enter__
def slow_enter(self):
    self._lock = b._get_module_lock(self._name)
    if self._name == "skimage" and threading.current_thread() is threading.main_thread():
        time.sleep(0.05)
    self._lock.acquire()
b._ModuleLockManager.__enter__ = slow_enter
import limefast
import skimage
from skimage import transform
import scipy.spatial, numba
from limefast import _preload
print(json.dumps([_preload.wait(120), repr(_preload.error())]))
"""
    for _ in range(2):
        assert fresh(code, LIMEFAST_PRELOAD="1") == [True, "None"]


# Where the parent forks: as soon as the background load is importing Numba (a step that holds
# the import lock, and imports logging's users), or once a kernel step holds the compiler lock.
FORK_MOMENTS = {
    "importing": """
while "numba" not in sys.modules:
    time.sleep(0.0005)
""",
    "loading kernels": """
while "numba.core.compiler_lock" not in sys.modules or not hasattr(
        sys.modules["numba.core.compiler_lock"], "global_compiler_lock"):
    time.sleep(0.001)
lock = _preload._compiler_lock()
t0 = time.monotonic()
while time.monotonic() - t0 < 20:  # until a step holds the compiler lock
    if not lock.acquire(blocking=False):
        break
    lock.release()
""",
}


@pytest.mark.parametrize("moment", sorted(FORK_MOMENTS))
def test_a_fork_during_a_warm_up_step_leaves_a_working_child(moment):
    """A fork while a warm-up step runs waits for the step, so the child (which has no
    preload thread) can still import, compile and load kernels; and the fork handlers of the
    modules the step imports (logging's above all) neither deadlock with it nor complain."""
    code = """
import json, os, signal, sys, time
import limefast
from limefast import _preload
""" + FORK_MOMENTS[moment] + """
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    import numpy as np
    from limefast import lime_image
    image = (np.random.RandomState(0).rand(32, 32, 3) * 60000).astype(np.uint16)  # not warmed
    lime_image.LimeImageExplainer(random_state=0).explain_instance(
        image, lambda b: np.stack([b.reshape(len(b), -1).mean(1)] * 2, 1), top_labels=1,
        num_samples=50, segmentation_fn=lambda im: np.indices(im.shape[:2]).sum(0) // 8,
        progress_bar=False)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(json.dumps([os.WIFEXITED(status), os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1]))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "LIMEFAST_PRELOAD": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, 0]
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]


def test_background_imports_wait_while_another_thread_is_importing(tmp_path, monkeypatch):
    """The guard itself: while another thread is inside an import (holding its module lock),
    ``alone`` does not run its step; once that import is done, it does. The step runs holding
    Numba's compiler lock."""
    import importlib
    import threading

    from limefast import _preload

    monkeypatch.setattr(_preload, "_STOP", threading.Event())  # not at exit
    (tmp_path / "gate_mod.py").write_text("import threading\nevent = threading.Event()\n")
    (tmp_path / "slow_mod.py").write_text("import gate_mod\ngate_mod.event.wait(30)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = importlib.import_module("gate_mod")
    importer = threading.Thread(target=importlib.import_module, args=("slow_mod",))
    importer.start()
    try:
        for _ in range(200):  # until the other thread is inside slow_mod's import
            if _preload._others_importing():
                break
            threading.Event().wait(0.01)
        assert _preload._others_importing()
        ran = []
        assert not _preload.alone(_preload.Step(lambda: ran.append(1), imports=True),
                                  wait_seconds=0.3)
        assert ran == []
    finally:
        gate.event.set()
        importer.join(30)
    assert not _preload._others_importing()
    from numba.core.compiler_lock import global_compiler_lock

    step = _preload.Step(lambda: ran.append(global_compiler_lock._lock._is_owned()),
                         imports=True, numba=True)
    assert _preload.alone(step, wait_seconds=5)
    assert ran == [True]


def test_the_drop_in_line_imports_no_numba_scipy_or_tqdm():
    """``from limefast import lime_image`` and an explainer cost numpy and little more: the
    stages behind Numba's kernels, scipy.linalg and tqdm come with the first explanation."""
    got = fresh("""
import json, sys
from limefast import lime_image
explainer = lime_image.LimeImageExplainer(random_state=0)
before = sorted(m for m in ("numba", "scipy", "tqdm", "skimage", "limefast.kernels.perturb")
                if m in sys.modules)
import numpy as np
image = (np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)
explainer.explain_instance(image, lambda b: np.ones((len(b), 2)) / 2, num_samples=20,
                           segmentation_fn=lambda im: np.indices(im.shape[:2]).sum(0) // 8,
                           progress_bar=False)
after = sorted(m for m in ("numba", "scipy", "tqdm") if m in sys.modules)
print(json.dumps([before, after, lime_image.SamplingWarning.__module__]))
""", LIMEFAST_PRELOAD="0")
    assert got == [[], ["numba", "scipy", "tqdm"], "limefast.core.rounds"]


# -- the import graph ----------------------------------------------------------------------------

# Cycles allowed to stand (none: the serve command and the Ray app share limefast.serve.builder).
KNOWN_CYCLES: set = set()


def _package_files() -> dict[str, Path]:
    """{module name: file} of limefast, ``kernels/`` as ``limefast.kernels`` (as installed)."""
    files = {}
    for base, prefix in ((ROOT / "limefast", "limefast"), (ROOT / "kernels", "limefast.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if prefix == "limefast" and parts[0] == "kernels":
                continue  # the checkout's link to kernels/
            name = ".".join((prefix, *parts))
            files[name.removesuffix(".__init__")] = path
    return files


def _import_graph() -> dict[str, set[str]]:
    """{module: the limefast modules it imports}. Every import statement counts, the ones inside
    functions too (a lazy import is a dependency all the same, only a later one), except those
    under ``if TYPE_CHECKING:``, which never run. An edge goes to the module a statement names
    (``from limefast import config`` -> limefast.config), not to the packages Python imports
    on the way."""
    import ast

    files = _package_files()

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and ast.unparse(node.test).endswith("TYPE_CHECKING")
                   for n in ast.walk(node)}
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                edges |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else known(base)
                          for a in node.names}
        graph[module] = edges - {None, module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    """Each module depends only downward: the background load runs what it is handed, and the
    stages read the kernels-loading flag from a leaf (``limefast._loading``)."""
    graph = _import_graph()
    assert {"limefast", "limefast._preload", "limefast.lime_image",
            "limefast.kernels.perturb"} <= graph.keys()
    assert "limefast.core.rounds" in graph["limefast.lime_image"]  # lazy imports are seen
    assert graph["limefast._preload"] <= {"limefast._loading", "limefast.kernels.threads"}
    assert _cycles(graph) - KNOWN_CYCLES == set()


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == {frozenset("abc")}
