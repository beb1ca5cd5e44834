"""Threads, interrupts, thread counts and pickling: the same answer however the work is run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import GridClassifier, bundled, quickshift_segments

from limefast import lime_image

IMAGE = bundled("coffee", 48)
SEGMENTS = quickshift_segments(IMAGE)
KW = dict(num_samples=80, segmentation_fn=lambda im: SEGMENTS, progress_bar=False)


def explain(explainer, **kwargs):
    return explainer.explain_instance(IMAGE, GridClassifier(), **{**KW, **kwargs})


def signature(e):
    return {int(k): [(int(f), float(w)) for f, w in v] for k, v in e.local_exp.items()}


def test_one_explainer_per_thread_runs_in_parallel_and_matches_sequential():
    seeds = [0, 1, 2, 3, 4, 5]
    sequential = [signature(explain(lime_image.LimeImageExplainer(random_state=s)))
                  for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(
            lambda s: signature(explain(lime_image.LimeImageExplainer(random_state=s))), seeds))
    assert parallel == sequential


def test_shared_explainer_between_threads_equals_some_sequential_order():
    sequential_explainer = lime_image.LimeImageExplainer(random_state=7)
    sequential = [signature(explain(sequential_explainer)) for _ in range(6)]
    shared = lime_image.LimeImageExplainer(random_state=7)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: signature(explain(shared)), range(6)))
    # each call got the rows of one of the sequential calls, and no two calls got the same rows
    assert sorted(map(json.dumps, results)) == sorted(map(json.dumps, sequential))


def test_keyboard_interrupt_mid_explanation_leaves_the_explainer_usable():
    interrupted = lime_image.LimeImageExplainer(random_state=3)
    calls = []

    def classifier(batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return GridClassifier()(batch)

    with pytest.raises(KeyboardInterrupt):
        interrupted.explain_instance(IMAGE, classifier, **KW)
    # all draws happen before the model runs: the state is where a finished call leaves it
    reference = lime_image.LimeImageExplainer(random_state=3)
    explain(reference)
    assert signature(explain(interrupted)) == signature(explain(reference))


def test_explainer_pickles_and_keeps_its_random_state():
    explainer = lime_image.LimeImageExplainer(random_state=11)
    explain(explainer)
    clone = pickle.loads(pickle.dumps(explainer))
    assert signature(explain(clone)) == signature(explain(explainer))


SCRIPT = textwrap.dedent("""
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, {tests!r})
    from conftest import GridClassifier, bundled, quickshift_segments
    from limefast import lime_image
    image = bundled("rocket", 40)
    segments = quickshift_segments(image)
    def run(seed):
        e = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            image, GridClassifier(), num_samples=60, segmentation_fn=lambda im: segments,
            progress_bar=False)
        return {{str(k): [(int(f), w) for f, w in v] for k, v in e.local_exp.items()}}
    with ThreadPoolExecutor(4) as pool:  # concurrent first use of the compiled kernels
        print(json.dumps(list(pool.map(run, [0, 1, 2, 3]))))
""")


def _run_script(tmp_path: Path, env_extra: dict) -> list:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_answer_for_every_thread_count_and_a_cold_kernel_cache(tmp_path):
    one = _run_script(tmp_path, {"NUMBA_NUM_THREADS": "1"})
    two = _run_script(tmp_path, {"NUMBA_NUM_THREADS": "2",
                                 "NUMBA_CACHE_DIR": str(tmp_path / "fresh-cache")})
    assert one == two
