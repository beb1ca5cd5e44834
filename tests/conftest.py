"""Shared fixtures: bundled images, cheap classifiers, and the reference lime.

The helpers live in the bench suite (``limefast.benchsuite.inputs`` and ``.models``), the one
home the benchmarks take them from too; the tests import them from here under their names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# No background preload in the test process: tests that spy on kernels or count calls would see
# its warm-up's. Only while limefast is imported here: the subprocesses the tests start (the
# command line, limefast serve) run with it, as users run them.
_PRELOAD = os.environ.get("LIMEFAST_PRELOAD")
os.environ["LIMEFAST_PRELOAD"] = "0"

# pytest puts the repository's root first on sys.path (pyproject's pythonpath, for tests.*
# imports). Its kernels/ folder is installed as limefast.kernels, but from the root it would
# also shadow the PyPI package `kernels`, which transformers imports: the root goes last.
_ROOT = Path(__file__).resolve().parents[1]
_at_root = [p for p in sys.path if p and Path(p).resolve() == _ROOT]
if _at_root:
    sys.path[:] = [p for p in sys.path if p not in _at_root] + _at_root[:1]

from limefast.benchsuite.inputs import bundled  # noqa: E402, F401 - the tests' import
from limefast.benchsuite.inputs import lime_segments as quickshift_segments  # noqa: E402, F401
from limefast.benchsuite.models import GridModel as GridClassifier  # noqa: E402

if _PRELOAD is None:
    del os.environ["LIMEFAST_PRELOAD"]
else:
    os.environ["LIMEFAST_PRELOAD"] = _PRELOAD


@pytest.fixture
def grid_classifier():
    return GridClassifier()


@pytest.fixture(scope="module")
def trained_models_cache(tmp_path_factory):
    """``limefast.models``' trained models cached in a folder of the test module's own (trained
    once per module, whatever the user's cache holds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIMEFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _gpu_available() -> bool:
    """A real CUDA GPU, usable by numba and (when installed) PyTorch; the simulator is not one."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        from numba import cuda

        if not cuda.is_available():
            return False
    except Exception:  # noqa: BLE001 - no driver, no toolkit: no GPU
        return False
    try:
        import torch
    except ImportError:
        return True
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip ``cuda``-marked tests where there is no GPU (torchvision's ``cpu_and_cuda``)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked or _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible; the simulator is not one)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for a test module, small; its workers import the tests' helpers (the models
    a test names as module:factory)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: limefast[dataset]")
    pytest.importorskip("pyarrow")
    tests = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "TQDM_DISABLE": "1"}},
             configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run_cli(argv, capsys):
    """(exit status, stderr) of the ``limefast`` command line run in this process; argparse's
    usage errors exit instead."""
    from limefast.cli import commands

    try:
        code = commands.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err
