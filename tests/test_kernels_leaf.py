"""``limefast.kernels`` is a leaf: it imports nothing else of limefast, and the library hands it
``limefast.config``'s tunables as arguments."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import limefast
from limefast import config
from limefast import lime_image as lime_fast
from limefast.kernels import model_ready, perturb, quickshift, segment_means_cuda, threads
from limefast.segmentation import quickshift as segment_quickshift

KERNELS = Path(limefast.kernels.__path__[0])
LIBRARY = Path(limefast.__path__[0])
# Each tunable argument of the kernels' host functions and the config value callers pass.
TUNABLES = {
    "task_bytes": "TASK_BYTES",
    "threads": "CPU_THREADS",
    "threads_per_block": "CUDA_THREADS_PER_BLOCK",
    "max_grid_y": "CUDA_MAX_GRID_Y",
}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports resolved
    against ``limefast.kernels``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1, f"{path.name}:{node.lineno} imports above kernels/"
                found.append((node.lineno, "limefast.kernels" + (f".{node.module}"
                                                                  if node.module else "")))
            else:
                found.append((node.lineno, node.module))
    return found


def test_kernels_import_nothing_of_limefast_but_themselves():
    files = sorted(KERNELS.glob("*.py"))
    assert {f.stem for f in files} >= {"perturb", "model_ready", "threads", "quickshift"}
    outside = [f"{f.name}:{line} imports {name}" for f in files
               for line, name in _imported_modules(f)
               if (name == "limefast" or name.startswith("limefast."))
               and not (name == "limefast.kernels" or name.startswith("limefast.kernels."))]
    assert not outside, outside
    for f in files:  # nor by another route: no dynamic imports, no name `config` in use
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            assert not (isinstance(node, ast.Name) and node.id in (
                "config", "__import__", "importlib", "import_module")), f"{f.name}:{node.lineno}"


def _tunable_callables() -> dict[str, set[str]]:
    """{name: its tunable parameters} of every function and class of the kernels that has any."""
    found = {}
    for module in (model_ready, perturb, quickshift, segment_means_cuda, threads):
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__ or not callable(obj):
                continue
            try:
                params = set(inspect.signature(obj).parameters)
            except (TypeError, ValueError):
                continue
            if params & TUNABLES.keys():
                found[name] = params & TUNABLES.keys()
    return found


def test_library_callers_pass_the_config_tunables():
    """Every call of a kernel host function in limefast/ passes each of its tunables as
    ``name=config.NAME``: the kernels' own defaults are for standalone use only."""
    callables = _tunable_callables()
    assert {"PerturbPlan", "RunPlan", "model_ready_cpu", "launch_model_ready_cuda",
            "segment_means_cuda", "_quickshift_cpu", "share_rows"} <= callables.keys()
    calls, missing = 0, []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in callables:
                continue
            calls += 1
            given = {kw.arg: ast.unparse(kw.value) for kw in node.keywords}
            for param in sorted(callables[name]):
                if given.get(param) != f"config.{TUNABLES[param]}":
                    missing.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {name}() "
                                   f"without {param}=config.{TUNABLES[param]}")
    assert calls >= 7  # executor, workspaces (2), cuda (2), classifier, quickshift
    assert not missing, missing


def _spy(monkeypatch, module):
    """Record (n_rows, rows_per_task, threads) of every ``share_rows`` call of ``module``."""
    seen = []
    real = module.share_rows

    def share_rows(kernel, n_rows, rows_per_task, threads=0):
        seen.append((n_rows, rows_per_task, threads))
        real(kernel, n_rows, rows_per_task, threads)

    monkeypatch.setattr(module, "share_rows", share_rows)
    return seen


@pytest.mark.parametrize("cpu_threads,task_bytes", [(1, 1), (3, 40_000)])
def test_config_reaches_the_perturbation_kernel(cpu_threads, task_bytes, monkeypatch):
    monkeypatch.setattr(config, "CPU_THREADS", cpu_threads)
    monkeypatch.setattr(config, "TASK_BYTES", task_bytes)
    seen = _spy(monkeypatch, perturb)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 30, 3), dtype=np.uint8)
    segments = np.arange(32 * 30).reshape(32, 30) // 97
    explainer = lime_fast.LimeImageExplainer(random_state=0)
    explainer.explain_instance(image, lambda b: np.ones((len(b), 2)) / 2, num_samples=40,
                               batch_size=10, segmentation_fn=lambda im: segments,
                               progress_bar=False)
    assert seen and sum(n for n, _, _ in seen) == 40
    assert {(per_task, t) for _, per_task, t in seen} == {
        (max(1, task_bytes // image.nbytes), cpu_threads)}


@pytest.mark.parametrize("cpu_threads", [1, 3])
def test_config_reaches_the_quickshift_kernels(cpu_threads, monkeypatch):
    monkeypatch.setattr(config, "CPU_THREADS", cpu_threads)
    seen = _spy(monkeypatch, quickshift)
    image = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    segment_quickshift(image, kernel_size=2, max_dist=10, ratio=0.5)
    assert seen and {t for _, _, t in seen} == {cpu_threads}


def test_share_rows_covers_every_block_once_and_runs_a_new_sites_first_block_alone():
    """Every row block runs exactly once, errors come back to the caller, and the first call
    from a call site runs its first block before any other thread starts (a Numba dispatcher's
    first call is not safe to race)."""
    from limefast.kernels import threads as kt

    for first_call in (True, False):
        seen, order = [], []

        def kernel(lo, hi, order=order, seen=seen):
            order.append(lo)
            seen.extend(range(lo, hi))

        if first_call:
            kt._STARTED.discard(kernel.__code__)
        kt.share_rows(kernel, 103, 10, threads=2)
        assert sorted(seen) == list(range(103))
        if first_call:
            assert order[0] == 0 and kernel.__code__ in kt._STARTED

    def failing(lo, hi):
        if lo == 50:
            raise RuntimeError("block 5")

    with pytest.raises(RuntimeError, match="block 5"):
        kt.share_rows(failing, 103, 10, threads=2)
