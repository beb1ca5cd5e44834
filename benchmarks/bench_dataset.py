"""Issue 8 targets: ``explain_dataset`` on Ray (local mode) against a plain loop over
``explain_instance``, on this machine.

Same images, same model, same seeds (``image_seed``), in one process, alternating runs: the plain
loop (decode + explain_instance per image, all cores), the engine with 1 worker holding all cores,
and the engine with one 1-core worker per core. Reported:

- images per second of each, wall clock (median, min-max over rounds; the engine's includes its
  startup: actor start, imports, model build) and steady (once every worker has finished its
  first task, from the part files' times);
- the engine's overhead per image: with one worker, its time between two part files beyond the
  decode + explain seconds of the images in them (Ray's scheduling, attempt markers, Parquet
  writes), as a percentage of the explanation time measured in the same worker at the same time.
  On a shared machine this is the robust number: the loop and the engine runs are minutes apart
  and other processes' load changes in between (the 1-minute load average is recorded).

Settings (ResNet-18 with random weights, ``weights=None``, in a ``TorchClassifier``):

- ``small``: 64x64 images, 200 samples; seconds per run, so overhead shows.
- ``resnet18-224``: the issue's setting, 224x224, 1000 samples; tens of seconds per image on a
  2-core CPU. Runs only with ``LIMEFAST_BENCH_DATASET_FULL=1`` (or ``--full``).

Run: ``.venv/bin/python -m pytest benchmarks/bench_dataset.py -q -s`` or
``.venv/bin/python -m benchmarks.bench_dataset [--full]``; results in
``bench-results/dataset.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "small": {"side": 64, "num_samples": 200, "images": 32, "batch_images": 4, "rounds": 3},
    "resnet18-224": {"side": 224, "num_samples": 1000, "images": 6, "batch_images": 1,
                     "rounds": 1},
}
TOP_LABELS, SEED, MODEL_BATCH = 5, 0, 50
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
          "hubble_deep_field", "camera", "coins")


def resnet18_factory():
    """The benchmark's model, built once per worker."""
    from limefast import TorchClassifier
    from limefast.benchsuite.models import torchvision_model
    from limefast.imagenet import MEAN, STD

    return TorchClassifier(torchvision_model("resnet18"), mean=MEAN, std=STD, device="cpu")


MODEL_NAME = "limefast.TorchClassifier(resnet18)"


def make_images(folder: Path, side: int, count: int) -> list[Path]:
    """``count`` distinct (side, side) RGB PNGs from scikit-image's bundled photos."""
    from PIL import Image
    from skimage import data, transform

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()
        photo = photo if photo.ndim == 3 else np.stack([photo] * 3, -1)
        photo = photo[..., :3]
        if (i // len(PHOTOS)) % 2:
            photo = photo[:, ::-1]
        image = transform.resize(photo, (side, side), anti_aliasing=True, preserve_range=True)
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(image.round().astype(np.uint8)).save(paths[-1])
    return paths


def ray_up():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
                 object_store_memory=200 * 1024**2, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}})
    return ray


def measure(name: str, work: Path) -> dict:
    """Alternating rounds of the loop, the engine with 1 worker, the engine with 1 per core."""
    from limefast.dataset import explain_dataset, image_seed, load_image, read_results
    from limefast.lime_image import LimeImageExplainer

    s = SETTINGS[name]
    cores = os.cpu_count()
    t0 = time.perf_counter()
    ray_up()
    ray_init = time.perf_counter() - t0
    paths = make_images(work / name / "images", s["side"], s["images"])
    classifier = resnet18_factory()

    def loop():
        return [LimeImageExplainer(random_state=image_seed(SEED, p.name)).explain_instance(
            load_image(p), classifier, top_labels=TOP_LABELS, num_samples=s["num_samples"],
            batch_size=MODEL_BATCH, progress_bar=False) for p in paths]

    def engine(workers, threads):
        out = work / name / f"out-{workers}-{time.monotonic_ns()}"
        cpu0 = _ray_cpu_seconds()
        t = time.perf_counter()
        explain_dataset(paths[0].parent, resnet18_factory, output=out, concurrency=workers,
                        num_cpus_per_worker=threads, batch_images=s["batch_images"],
                        num_samples=s["num_samples"], top_labels=TOP_LABELS, seed=SEED,
                        model_batch_size=MODEL_BATCH, progress=False)
        seconds = time.perf_counter() - t
        cpu = {k: v - cpu0.get(k, 0.0) for k, v in _ray_cpu_seconds().items()}
        timeline = _timeline(out, workers)
        timeline["control_cpu"] = sum(v for (_, cmd), v in cpu.items() if "MapWorker" not in cmd)
        timeline["worker_cpu"] = sum(v for (_, cmd), v in cpu.items() if "MapWorker" in cmd)
        return seconds, timeline, out

    loop()  # warm: kernels loaded, torch initialised
    wall = {"loop": [], "engine_1_worker": [], "engine_per_core": []}
    steady = {"engine_1_worker": [], "engine_per_core": []}
    overhead, in_worker, control, load = [], [], [], [os.getloadavg()[0]]
    for _ in range(s["rounds"]):
        t = time.perf_counter()
        explanations = loop()
        wall["loop"].append(time.perf_counter() - t)
        for key, workers, threads in (("engine_1_worker", 1, cores),
                                      ("engine_per_core", cores, 1)):
            seconds, timeline, out = engine(workers, threads)
            wall[key].append(seconds)
            steady[key].append(timeline["steady"])
            if workers == 1:
                rows = read_results(out).to_pylist()
                overhead.append(timeline["overhead"])
                control.append(timeline["control_cpu"] / timeline["worker_cpu"])
                in_worker.append(timeline["explain_in_worker"])
        load.append(os.getloadavg()[0])
    worst = _agreement(rows, paths, explanations)

    n = len(paths)
    med = {k: statistics.median(v) for k, v in wall.items()}
    explain_s = statistics.median(in_worker)
    overhead_s = statistics.median(overhead)
    return {
        "setting": name, **s, "top_labels": TOP_LABELS, "model": MODEL_NAME,
        "model_batch_size": MODEL_BATCH, "cores": cores, "ray_init_s": ray_init,
        "load_average_1min": load, "wall_seconds": wall, "steady_seconds_per_image": steady,
        "images_per_s": {k: n / med[k] for k in wall},
        "images_per_s_range": {k: [n / max(v), n / min(v)] for k, v in wall.items()},
        "steady_images_per_s": {"loop": n / med["loop"],
                                **{k: 1 / statistics.median(v) for k, v in steady.items()}},
        "loop_seconds_per_image": med["loop"] / n,
        "explanation_in_worker_s": explain_s,
        "engine_startup_s": med["engine_1_worker"] - n * statistics.median(
            steady["engine_1_worker"]),
        "engine_overhead_per_image_s": overhead_s,
        "engine_overhead_per_image_all_rounds_s": overhead,
        "engine_overhead_pct": 100 * overhead_s / explain_s,
        "control_plane_cpu_pct_of_worker_cpu": 100 * statistics.median(control),
        "max_relative_difference_vs_loop": worst,
    }


def _timeline(output: Path, workers: int) -> dict:
    """From the part files' modification times (one file per task) and the rows' ``seconds``
    (each image's decoding and explanation, timed in the worker).

    ``steady``: seconds per image once every worker has finished its first task (actor start,
    model build and first task excluded; Ray's scheduling, decoding, the Parquet writes
    included). With one worker, its tasks run back to back, and ``overhead`` is the worker's
    time between two part files beyond its images' ``seconds``, per image: what the engine adds
    to each explanation, measured at the same moment as the explanations themselves.
    """
    import pyarrow.parquet as pq

    parts = sorted(output.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    times = [p.stat().st_mtime_ns / 1e9 for p in parts]
    seconds = []  # per part: the images' decode + explain seconds
    for part in parts:
        rows = pq.read_table(part, columns=["image_id", "seconds"]).to_pylist()
        seconds.append(list({r["image_id"]: r["seconds"] for r in rows}.values()))
    later = [s for part in seconds[workers:] for s in part]
    result = {"steady": (times[-1] - times[workers - 1]) / len(later), "overhead": float("nan"),
              "explain_in_worker": sum(later) / len(later)}
    if workers == 1:
        gaps = [t1 - t0 - sum(s) for t0, t1, s in zip(times, times[1:], seconds[1:])]
        result["overhead"] = sum(gaps) / len(later)
    return result


def _ray_cpu_seconds() -> dict:
    """CPU seconds so far of this process and of Ray's processes, by (pid, command); empty
    where /proc is not there."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found = {}
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if "ray" in cmd or pid == str(os.getpid()):
            found[int(pid), cmd[:120]] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def _agreement(rows, paths, explanations) -> float:
    """Largest relative difference between the engine's weights and the loop's (the engine's
    ``agreement``); infinite where an image's labels or their order differ."""
    from limefast.benchsuite.agreement import agreement

    by_image = {}
    for row in sorted(rows, key=lambda r: r["rank"]):
        by_image.setdefault(row["image_id"], {})[row["label"]] = dict(enumerate(row["weights"]))
    worst = 0.0
    for path, e in zip(paths, explanations):
        theirs = by_image.get(path.name, {})
        if list(theirs) != [int(label) for label in e.top_labels]:
            return float("inf")
        worst = max(worst, agreement(e, theirs)["max_rel_weight_diff"])
    return worst


def describe(r: dict) -> list[str]:
    ips, rng, steady = r["images_per_s"], r["images_per_s_range"], r["steady_images_per_s"]
    load = ", ".join(f"{x:.1f}" for x in r["load_average_1min"])
    return [
        f"dataset [{r['setting']}] {r['side']}x{r['side']}, {r['num_samples']} samples, "
        f"{r['images']} images, {r['model']}, {r['cores']} cores, {r['rounds']} round(s), "
        f"1-min load average {load}:",
        *(f"  {k:<16s} {ips[k]:7.3f} img/s wall (range {rng[k][0]:.3f}-{rng[k][1]:.3f}), "
          f"{steady[k]:7.3f} img/s steady" for k in ips),
        f"  loop: {r['loop_seconds_per_image']:.3f} s per image; in a worker: "
        f"{r['explanation_in_worker_s']:.3f} s per image (decode + explain_instance); engine "
        f"startup {r['engine_startup_s']:.2f} s per run (ray.init {r['ray_init_s']:.1f} s once)",
        f"  engine overhead per image (1 worker, between tasks, beyond decode + explain): "
        f"{r['engine_overhead_per_image_s'] * 1e3:.1f} ms = {r['engine_overhead_pct']:.2f}% of "
        f"an explanation",
        f"  Ray's control plane (driver, raylet, GCS, Ray Data's actors) used CPU time "
        f"{r['control_plane_cpu_pct_of_worker_cpu']:.1f}% of the worker's (1-worker runs)",
        "  engine rows vs loop: max relative difference "
        f"{r['max_relative_difference_vs_loop']:.1e}",
    ]


def save(results: list[dict]) -> None:
    import ray

    from limefast.benchsuite import machine

    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    path = out / "dataset.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = {r["setting"]: r for r in old.get("results", [])}
    runs.update({r["setting"]: r for r in results})
    path.write_text(json.dumps({"machine": {**machine(), "ray": ray.__version__},
                                "results": list(runs.values())}, indent=2))


def _bench(name, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("torchvision")
    from benchmarks.conftest import check, note, record

    r = measure(name, tmp_path)
    for key, value in r["steady_images_per_s"].items():
        record(f"dataset-{name} (steady s per image)", key, 1 / value)
    for line in describe(r):
        note(line)
    check("dataset_overhead", r["engine_overhead_pct"], f"{r['engine_overhead_pct']:.2f}% "
          f"({name})")
    save([r])
    assert r["max_relative_difference_vs_loop"] < 1e-6


def test_dataset_small(tmp_path):
    _bench("small", tmp_path)


@pytest.mark.skipif(not os.environ.get("LIMEFAST_BENCH_DATASET_FULL"),
                    reason="minutes on a small CPU: set LIMEFAST_BENCH_DATASET_FULL=1")
def test_dataset_resnet18_224(tmp_path):
    _bench("resnet18-224", tmp_path)


if __name__ == "__main__":
    names = ["small"] + (["resnet18-224"] if "--full" in sys.argv else [])
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, Path(tmp)) for name in names]
    for r in results:
        print("\n".join(describe(r)))
    save(results)
