"""limefast as users install it: the sdist and wheel built, checked, and installed into a clean
virtual environment that cannot see this checkout, then used from a folder outside it.

Run by ``make test`` (``make install-check``): ``python tests/check_wheel.py``. Steps:

1. ``python -m build`` (the sdist, then the wheel built from the sdist) and ``twine check``;
2. a fresh ``venv`` with the wheel, its core dependencies and pytest, nothing else (not even
   pip: the running environment's pip installs into it);
3. from an empty folder: the installed package holds every module of the checkout, every one
   imports (a module that needs an
   optional extra may only fail with an ImportError that names the missing package and the
   extra); ``import limefast`` imports none of numba, scipy, scikit-learn, pandas or torch; the
   drop-in and ``KernelShapImageExplainer`` explain a small image; ``limefast explain`` explains
   an image file the check writes, with a NumPy model from a factory file it writes;
4. the test suite collects with only the core dependencies: tests of optional parts skip with a
   reason, none errors.

Exits non-zero at the first failure, with what failed. Keep it to a few minutes: the packages
come from pip's cache after the first run, and no bytecode is compiled beyond what is imported.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside the clean environment, from a folder outside the checkout.
USE_INSTALLED = r'''
import importlib, json, os, pkgutil, sys, time
t0 = time.perf_counter()
import limefast
import_s = time.perf_counter() - t0
heavy = sorted(m for m in ("numba", "scipy", "sklearn", "pandas", "torch") if m in sys.modules)
root = os.path.dirname(limefast.__file__)
checkout = sys.argv[1]
assert not root.startswith(checkout), f"limefast imported from the checkout: {root}"
assert "site-packages" in root, f"limefast not from site-packages: {root}"

OPTIONAL = {"torch", "torchvision", "ray", "pyarrow", "fastapi", "uvicorn", "starlette",
            "prometheus_client", "httpx", "matplotlib", "lime", "shap", "captum", "keras",
            "cupy", "transformers", "timm", "pydantic"}
imported, optional = [], {}
for info in pkgutil.walk_packages(limefast.__path__, "limefast."):
    if info.name.endswith(".__main__"):  # an app's entry point runs when imported
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        text = str(exc)
        if missing in OPTIONAL or any(f"needs {m}" in text for m in OPTIONAL):
            optional[info.name] = text.splitlines()[0][:160]
        else:
            raise
assert "limefast.kernels.perturb" in imported, imported

import numpy as np
from skimage.segmentation import slic
from limefast import KernelShapImageExplainer, lime_image

rng = np.random.RandomState(0)
image = (np.kron(rng.rand(4, 4, 3), np.ones((8, 8, 1))) * 255).astype(np.uint8)  # 16 blocks
weights = rng.rand(3, 2)

def classifier(batch):
    z = batch.reshape(len(batch), -1, 3).mean(1) / 255 @ weights
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

seg = lambda im: slic(im, n_segments=16, compactness=20, start_label=0)
e = lime_image.LimeImageExplainer(random_state=0).explain_instance(
    image, classifier, top_labels=2, num_samples=300, segmentation_fn=seg, progress_bar=False)
assert len(e.top_labels) == 2 and len(e.local_exp[e.top_labels[0]]) > 4, e.local_exp
s = KernelShapImageExplainer(random_state=0).explain_instance(
    image, classifier, top_labels=1, num_samples=256, segmentation_fn=seg, progress_bar=False)
label = s.top_labels[0]
total = s.base_value[label] + sum(v for _, v in s.local_exp[label])
assert abs(total - classifier(image[None])[0, label]) < 1e-9, total
walked = []  # every module file installed, importable or not without its extra
for folder, _, files in os.walk(root):
    rel = os.path.relpath(folder, os.path.dirname(root)).replace(os.sep, ".")
    walked += [rel if f == "__init__.py" else f"{rel}.{f[:-3]}" for f in files
               if f.endswith(".py")]
print(json.dumps({"import_s": import_s, "heavy_at_import": heavy, "modules": len(imported),
                  "optional": optional, "version": limefast.__version__, "walked": walked}))
'''

MODEL_FILE = '''
import numpy as np

def make():
    """A classifier_fn: (N, H, W, 3) uint8 -> (N, 3) probabilities."""
    w = np.random.RandomState(1).rand(3, 3)

    def classify(batch):
        z = batch.reshape(len(batch), -1, 3).mean(1) / 255 @ w * 4
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return classify
'''


def source_modules() -> list[str]:
    """Every module of the checkout's package, as the wheel should hold it: limefast/... and
    kernels/ as limefast.kernels."""
    names = []
    for base, prefix in ((ROOT / "limefast", "limefast"), (ROOT / "kernels", "limefast.kernels")):
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts or prefix == "limefast.kernels":
                names.append(".".join((prefix, *parts)))
    return names


def run(cmd, **kwargs):
    shown = [c if len(str(c)) < 120 else "<script>" for c in cmd]
    print("+", " ".join(map(str, shown)), flush=True)
    done = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, timeout=900,
                          **kwargs)
    if done.returncode != 0:
        print("--- its output:", done.stdout[-4000:], "--- its errors:", done.stderr[-4000:],
              sep="\n", flush=True)
        raise SystemExit(f"check_wheel: failed ({done.returncode}): {' '.join(map(str, cmd))}")
    return done.stdout


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="limefast-wheel-") as tmp:
        tmp = Path(tmp)
        dist, venv, work = tmp / "dist", tmp / "venv", tmp / "work"
        work.mkdir()
        # The sdist, then the wheel from the sdist (as pip builds an sdist); the build backend
        # of this environment, so no download is needed.
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], cwd=tmp)
        files = sorted(glob.glob(str(dist / "*")))
        run([sys.executable, "-m", "twine", "check", "--strict", *files])
        wheel = next(f for f in files if f.endswith(".whl"))

        # No pip of its own in the venv (ensurepip copies and compiles one): this pip installs
        # into it (--python). No bytecode compiled at install: the check's processes write it
        # for what they import, the first time (that is why PYTHONDONTWRITEBYTECODE is dropped),
        # not for every file of scipy, scikit-learn and the rest. Fewer files to delete, too.
        run([sys.executable, "-m", "venv", "--without-pip", venv])
        py = venv / "bin" / "python"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE",
                            "PYTHONPYCACHEPREFIX")}
        env["LIMEFAST_PRELOAD"] = "0"  # what import limefast itself pulls in, alone
        run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-compile",
             "--disable-pip-version-check", wheel, "pytest"], env=env)

        found = json.loads(run([py, "-c", USE_INSTALLED, str(ROOT)], cwd=work, env=env))
        print(f"  installed {found['version']}: {found['modules']} modules import, "
              f"{len(found['optional'])} need an extra; import limefast "
              f"{found['import_s']:.3f} s")
        for name, why in sorted(found["optional"].items()):
            print(f"    {name}: {why}")
        missing = sorted(set(source_modules()) - set(found["walked"]))
        if missing:
            raise SystemExit(f"check_wheel: the wheel lacks modules of the source: {missing}")
        if found["heavy_at_import"]:
            raise SystemExit(f"check_wheel: import limefast imported {found['heavy_at_import']}")

        import numpy as np
        from PIL import Image

        rng = np.random.RandomState(2)
        blocks = np.kron(rng.rand(5, 6, 3), np.ones((8, 8, 1))) * 255  # 30 flat blocks
        Image.fromarray(blocks.astype("uint8")).save(work / "photo.png")
        (work / "tinymodel.py").write_text(textwrap.dedent(MODEL_FILE))
        cli = venv / "bin" / "limefast"
        run([cli, "explain", "photo.png", "--model", "tinymodel:make", "--size", "0",
             "--num-samples", "200", "--top-labels", "1", "--segmentation", "slic",
             "--out", "out"], cwd=work, env={**env, "LIMEFAST_PRELOAD": "1"})
        written = json.loads(next((work / "out").rglob("explanation.json")).read_text())
        if not written.get("explanations") and not written.get("top_labels"):
            raise SystemExit(f"check_wheel: explanation.json has no explanation: {written}")
        print("  limefast explain wrote", sorted(p.name for p in (work / "out").rglob("*.*")))

        # The suite collects with the core dependencies alone: optional parts skip, none errors.
        # A copy of it beside no source tree, so its imports find the installed package.
        suite = tmp / "suite"
        shutil.copytree(ROOT / "tests", suite / "tests",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", suite)  # pytest's settings and markers
        out = run([py, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                   "tests"], cwd=suite, env=env)
        print("  core-only collection:", out.strip().splitlines()[-1])
    print(f"check_wheel: passed in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
