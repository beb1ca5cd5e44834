"""CUDA kernels against their CPU twins.

Each kernel test runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, marker ``cudasim``:
``make test`` runs them in a process of their own) and on a real GPU where there is one (marker
``cuda``). The compile tests build every kernel to PTX for sm_80 and sm_90 with
``numba.cuda.compile_ptx`` and read ``ptxas -v``: no register spills. They need neither a GPU
nor the simulator, and skip cleanly without ptxas or libNVVM.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from numba.core import config as numba_config

from limefast import config
from limefast.imagenet import MEAN, STD
from limefast.kernels import model_ready
from limefast.kernels import segment_means_cuda as smc
from limefast.kernels.segment_means import segment_means

SIM = bool(numba_config.ENABLE_CUDASIM)
BACKENDS = [pytest.param("cudasim", marks=pytest.mark.cudasim),
            pytest.param("cuda", marks=pytest.mark.cuda)]


def _use(backend, monkeypatch):
    if backend == "cudasim" and not SIM:
        pytest.skip("simulator tests run with NUMBA_ENABLE_CUDASIM=1 (make test's second line)")
    if backend == "cuda" and SIM:
        pytest.skip("the CUDA simulator is on in this process: no real GPU")
    # Small blocks and a short grid: tiny inputs still cross block and grid-stride boundaries.
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(config, "CUDA_MAX_GRID_Y", 2)
    return {"threads_per_block": config.CUDA_THREADS_PER_BLOCK,
            "max_grid_y": config.CUDA_MAX_GRID_Y}


# -- model-ready batches -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("image_dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_model_ready_cuda_matches_cpu(backend, image_dtype, out_dtype, channels_last,
                                      monkeypatch):
    launch = _use(backend, monkeypatch)
    rng = np.random.RandomState(int(np.dtype(image_dtype).num) + 7 * channels_last)
    g, h, w, c = 2, 5, 7, 3  # 35 pixels: three blocks of 16
    images = (rng.rand(g, h * w * c) * 255).astype(image_dtype)
    fudged = (rng.rand(g, h * w * c) * 255).astype(image_dtype)
    segments = rng.randint(0, 4, (g, h * w)).astype(np.int32)
    rows = rng.randint(0, 2, (9, 5)).astype(np.uint8)
    inst = rng.randint(0, g, 9).astype(np.int32)
    k, b = model_ready.normalise_coefficients(1 / 255, MEAN, STD)
    row0, n = 2, 5  # five samples on a grid of height 2: the grid-stride loop runs
    expected = np.zeros((n, h * w * c), np.float32)
    model_ready.launch_model_ready_cpu(images, fudged, segments, rows, inst, row0, n, k, b,
                                       expected, channels_last)
    out = model_ready.as_cuda_array(np.full((n + 1, h * w * c), -7, out_dtype))
    model_ready.launch_model_ready_cuda(*(model_ready.as_cuda_array(a) for a in (
        images, fudged, segments, rows, inst)), row0, n, model_ready.as_cuda_array(k),
        model_ready.as_cuda_array(b), out, channels_last, **launch)
    got = out.copy_to_host()
    # The product is rounded before the sum on both (no FMA): float32 results are identical;
    # float16 is the float32 value rounded to nearest.
    np.testing.assert_array_equal(got[:n], expected.astype(out_dtype))
    assert (got[n:] == -7).all()  # rows past n_rows untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_ready_cuda_with_shared_segments(backend, monkeypatch):
    """The NumPy call path: each image its own original, one (1, P) segmentation for all."""
    launch = _use(backend, monkeypatch)
    rng = np.random.RandomState(3)
    batch = rng.randint(0, 256, (3, 4, 6, 3)).astype(np.uint8)
    k, b = model_ready.normalise_coefficients(1 / 255, MEAN, STD)
    expected = np.zeros((3, 72), np.float32)
    model_ready.model_ready_cpu(batch, k, b, expected, True)
    flat = batch.reshape(3, -1)
    out = model_ready.as_cuda_array(np.zeros((3, 72), np.float32))
    model_ready.launch_model_ready_cuda(
        *(model_ready.as_cuda_array(a) for a in (flat, flat, np.zeros((1, 24), np.int32),
                                                 np.ones((3, 1), np.uint8),
                                                 np.arange(3, dtype=np.int32))),
        0, 3, model_ready.as_cuda_array(k), model_ready.as_cuda_array(b), out, True, **launch)
    np.testing.assert_array_equal(out.copy_to_host(), expected)


# -- per-segment means -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,shape,n_segments", [
    (np.uint8, (9, 11, 3), 6),
    (np.float32, (24, 20, 2), 3),  # segments of > 128 pixels: the pairwise stack is walked
    (np.float64, (7, 9, 3), 5),
    (np.int16, (6, 6, 1), 4),
])
def test_segment_means_cuda_matches_cpu(backend, dtype, shape, n_segments, monkeypatch):
    launch = _use(backend, monkeypatch)
    rng = np.random.RandomState(n_segments)
    if np.dtype(dtype).kind == "f":
        image = (rng.rand(*shape) * 100 - 30).astype(dtype)
    else:
        info = np.iinfo(dtype)
        image = rng.randint(max(info.min, -500), min(info.max, 500) + 1, shape).astype(dtype)
    segments = rng.randint(0, n_segments, shape[:2]).astype(np.int32)
    segments.ravel()[:n_segments] = np.arange(n_segments)
    got = smc.segment_means_cuda(image, segments, n_segments,
                                 threads_per_block=launch["threads_per_block"]).copy_to_host()
    # Bit for bit: the same pairwise sums in the same order and dtype, a float64 division.
    np.testing.assert_array_equal(got, segment_means(image, segments, n_segments))


def test_segment_means_cuda_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        smc.segment_means_cuda(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32), 1)
    with pytest.raises(TypeError, match="float16"):
        smc.segment_means_cuda(np.zeros((4, 4, 3), np.float16), np.zeros((4, 4), np.int32), 1)
    pytest.importorskip("torch")
    from limefast.device import segment_means

    with pytest.raises(TypeError, match="takes a CUDA array"):
        segment_means(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int32), 1)
    import torch

    with pytest.raises(TypeError, match="takes a CUDA array; got one on cpu"):
        segment_means(torch.zeros((4, 4, 3)), np.zeros((4, 4), np.int32), 1)

    with pytest.raises(TypeError, match="on a CUDA device"):
        model_ready.as_cuda_array(torch.zeros(3))


# -- PTX for the GPUs we target ----------------------------------------------------------------

def _segment_means_signatures(image_dtype, threads: int = config.CUDA_THREADS_PER_BLOCK) -> dict:
    """{name: (python function, numba signature)} of the four per-segment-means kernels for one
    image dtype, as ``limefast.device`` launches them."""
    from numba import from_dtype, types

    def arr(dtype, ndim):
        return types.Array(from_dtype(np.dtype(dtype)), ndim, "C")

    i32 = arr(np.int32, 1)
    return {
        "_segment_counts_cuda": (smc._segment_counts_cuda, types.void(i32, i32)),
        "_segment_offsets_cuda": (smc._segment_offsets_cuda, types.void(i32, i32)),
        "_segment_order_cuda": (smc._make_order_kernel(threads), types.void(i32, i32, i32)),
        "_segment_sums_cuda": (smc._make_sums_kernel(smc.accumulator_for(image_dtype)),
                               types.void(arr(image_dtype, 2), i32, i32, arr(np.float64, 2))),
    }


def _ptx_cases():
    cases = {}
    for image_dtype, out_dtype in [(np.uint8, np.float32), (np.uint8, np.float16),
                                   (np.float32, np.float32), (np.float32, np.float16)]:
        name = f"_model_ready_cuda[{np.dtype(image_dtype)}->{np.dtype(out_dtype)}]"
        cases[name] = (model_ready._model_ready_cuda,
                       model_ready.model_ready_signature(image_dtype, out_dtype))
    for image_dtype in (np.uint8, np.float32):
        for name, case in _segment_means_signatures(image_dtype).items():
            cases[f"{name}[{np.dtype(image_dtype)}]"] = case
    return cases


PTX_CASES = _ptx_cases()
_PTXAS_LINE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def ptxas_report(ptx: str, cc: tuple[int, int], tmp_path) -> dict:
    """Registers and spills of the kernel in ``ptx``, from ``ptxas -v``."""
    path = tmp_path / f"kernel_sm{cc[0]}{cc[1]}.ptx"
    path.write_text(ptx)
    done = subprocess.run(["ptxas", "-v", f"-arch=sm_{cc[0]}{cc[1]}", str(path), "-o",
                           str(path.with_suffix(".cubin"))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spills = _PTXAS_LINE.search(done.stderr)
    registers = _REGISTERS.search(done.stderr)
    assert spills and registers, done.stderr
    return {"registers": int(registers.group(1)), "spill_stores": int(spills.group(1)),
            "spill_loads": int(spills.group(2))}


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
@pytest.mark.parametrize("name", list(PTX_CASES))
def test_kernels_compile_to_ptx_without_spills(name, cc, tmp_path):
    if SIM:
        pytest.skip("compile_ptx is not available under the CUDA simulator")
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas (CUDA toolkit) is not on PATH")
    from numba import cuda

    pyfunc, signature = PTX_CASES[name]
    try:
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=cc)
    except Exception as exc:  # noqa: BLE001 - libNVVM missing or too old for this cc
        if "NVVM" in str(exc) or "nvvm" in str(exc) or "libdevice" in str(exc):
            pytest.skip(f"libNVVM cannot build for {cc}: {exc}")
        raise
    report = ptxas_report(ptx, cc, tmp_path)
    print(f"{name} sm_{cc[0]}{cc[1]}: {report}")
    assert report["spill_stores"] == 0 and report["spill_loads"] == 0, report
