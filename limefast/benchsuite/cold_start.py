"""The ``cold_start`` section: what a user's first minute costs, each figure from fresh
interpreters (nothing here can be measured in the suite's own, warm, process).

- ``import limefast``: seconds, numpy's and Numba's own imports counted where they happen.
- ``from limefast import lime_image``, the drop-in's line, right after it: the seconds a user's
  first line costs in all (``drop_in_s``; the background load goes on after it).
- The first explanation's extra time: the first call in a process minus the median of the next
  three, at 28x28 and at 224x224, called right after the imports and after a one-second pause
  (a user loading a model meanwhile), each the median over fresh processes.
- ``limefast explain`` for one image, as a whole process (Python's start included), against a
  warm explanation of the same image in a process that has made one before.

The model is a NumPy classifier (the grid model's kind of cost), so the figures are limefast's
own; the default quickshift segments the image, as a user's first call does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

# The classifier_fn every measurement explains with: a file, so `limefast explain` loads it too.
MODEL = """
import numpy as np

def make():
    w = np.random.RandomState(1).rand(3, 10)

    def classify(batch):
        z = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1, 3).mean(1) / 255 @ w
        e = np.exp(4 * (z - z.max(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)

    return classify
"""

FIRST_CALL = """
import json, sys, time
t0 = time.perf_counter()
import limefast
imported = time.perf_counter() - t0
from limefast import lime_image
drop_in = time.perf_counter() - t0
import numpy as np
sys.path.insert(0, {folder!r})
import coldmodel
classify = coldmodel.make()
time.sleep({pause})
image = np.load({image!r})
times = []
for _ in range(4):
    t = time.perf_counter()
    lime_image.LimeImageExplainer(random_state=0).explain_instance(
        image, classify, top_labels=1, num_samples={samples}, progress_bar=False)
    times.append(time.perf_counter() - t)
print(json.dumps({{"import": imported, "drop_in": drop_in, "calls": times}}))
"""


@dataclass
class ColdConfig:
    """Sizes of the section: fresh processes per figure and samples per explanation."""

    processes: int = 5
    samples: int = 1000
    sides: tuple = (28, 224)
    pauses: tuple = (0.0, 1.0)

    @classmethod
    def quick(cls) -> ColdConfig:
        return cls(processes=1, samples=300)


def _python(code: str, env=None, cwd=None) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"cold_start: a fresh process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _image(side: int, path: Path) -> Path:
    import numpy as np

    from .inputs import photo

    np.save(path, photo(side))
    return path


def cold_start(cfg: ColdConfig | None = None, progress=print) -> dict:
    """The section's results (JSON-ready); see the module docstring."""
    cfg = cfg or ColdConfig()
    env = {k: v for k, v in os.environ.items() if k != "LIMEFAST_PRELOAD"}
    out: dict = {"processes": cfg.processes, "samples": cfg.samples, "first_call": []}
    with tempfile.TemporaryDirectory(prefix="limefast-cold-") as tmp:
        folder = Path(tmp)
        (folder / "coldmodel.py").write_text(textwrap.dedent(MODEL))
        imports, drop_ins = [], []
        for side in cfg.sides:
            image = _image(side, folder / f"image{side}.npy")
            for pause in cfg.pauses:
                extra, warm = [], []
                for _ in range(cfg.processes):
                    got = _python(FIRST_CALL.format(folder=str(folder), pause=pause,
                                                    image=str(image), samples=cfg.samples),
                                  env=env)
                    imports.append(got["import"])
                    drop_ins.append(got["drop_in"])
                    later = statistics.median(got["calls"][1:])
                    extra.append(got["calls"][0] - later)
                    warm.append(later)
                row = {"side": side, "pause_s": pause,
                       "first_extra_s": statistics.median(extra),
                       "warm_s": statistics.median(warm), "extra_all": extra}
                out["first_call"].append(row)
                progress(f"{side}x{side}, pause {pause:g} s: first call +{row['first_extra_s']:.3f}"
                         f" s over a warm {row['warm_s']:.3f} s")
        out["import_s"] = statistics.median(imports)
        out["import_all"] = imports
        out["drop_in_s"] = statistics.median(drop_ins)
        out["drop_in_all"] = drop_ins
        progress(f"import limefast: {out['import_s']:.3f} s, with `from limefast import "
                 f"lime_image`: {out['drop_in_s']:.3f} s (medians of {len(imports)})")
        out["cli"] = _cli(cfg, folder, env)
        progress(f"limefast explain, one 224x224 image: {out['cli']['wall_s']:.2f} s wall "
                 f"against a warm explanation's {out['cli']['warm_s']:.3f} s")
    return out


def _cli(cfg: ColdConfig, folder: Path, env: dict) -> dict:
    """Whole-process wall time of ``limefast explain`` on one 224x224 image file."""
    import numpy as np
    from PIL import Image

    image = np.load(folder / "image224.npy") if (folder / "image224.npy").exists() else None
    if image is None:
        image = np.load(_image(224, folder / "image224.npy"))
    Image.fromarray(image).save(folder / "photo.png")
    walls = []
    for i in range(cfg.processes):
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "limefast.cli", "explain", "photo.png", "--model",
             "coldmodel:make", "--size", "0", "--num-samples", str(cfg.samples),
             "--top-labels", "1", "--out", f"out{i}"],
            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        walls.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(f"cold_start: limefast explain failed: {done.stderr[-2000:]}")
    warm = _python(FIRST_CALL.format(folder=str(folder), pause=0.0,
                                     image=str(folder / "image224.npy"), samples=cfg.samples),
                   env=env)
    warm_s = statistics.median(warm["calls"][1:])
    wall = statistics.median(walls)
    return {"wall_s": wall, "warm_s": warm_s, "ratio": wall / warm_s, "wall_all": walls}
