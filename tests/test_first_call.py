"""The first explanation of a process, while the kernels are still loading, runs its small
stages in NumPy (``limefast._loading.kernels_loading``): the NumPy twins give the kernels' very
results, on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from limefast import _loading, config
from limefast import lime_image as lime_fast
from limefast.kernels.perturb import PerturbPlan
from limefast.kernels.segment_means import segment_means, segment_means_numpy
from limefast.segmentation import quickshift

DTYPES = [np.uint8, np.uint16, np.float16, np.float32, np.float64]


def random_image(rng, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 50).astype(dtype)


def random_segments(rng, shape, n):
    """Every label 0..n-1 present, in blobs and scattered pixels."""
    seg = rng.integers(0, n, shape)
    seg.flat[:n] = np.arange(n)
    return seg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_segment_means_twin_is_the_kernel(dtype, channels):
    rng = np.random.default_rng([channels, np.dtype(dtype).num])
    for _ in range(3):
        h, w, n = rng.integers(3, 40), rng.integers(3, 40), rng.integers(1, 12)
        image = random_image(rng, (h, w, channels), dtype)
        segments = random_segments(rng, (h, w), n)
        np.testing.assert_array_equal(segment_means_numpy(image, segments, n),
                                      segment_means(image, segments, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_perturbation_twin_writes_the_kernel_s_bytes(dtype):
    rng = np.random.default_rng(np.dtype(dtype).num)
    for channels in (1, 3):
        h, w, n = rng.integers(2, 30), rng.integers(2, 30), rng.integers(1, 10)
        image = random_image(rng, (h, w, channels), dtype)
        fudged = random_image(rng, (h, w, channels), dtype)
        plan = PerturbPlan(image, fudged, random_segments(rng, (h, w), n))
        rows = rng.integers(0, 2, (int(rng.integers(1, 50)), n)).astype(np.int8)
        ours, kernel = plan.new_buffer(len(rows) + 2), plan.new_buffer(len(rows) + 2)
        ours[:] = kernel[:] = random_image(rng, ours.shape, dtype)  # rows past n untouched
        plan.write_numpy(rows, ours)
        plan.write(rows, kernel)
        assert ours.tobytes() == kernel.tobytes()


def test_quickshift_twin_is_the_kernel(monkeypatch):
    rng = np.random.default_rng(7)
    for _ in range(4):
        image = (np.kron(rng.random((4, 4, 3)), np.ones((6, 6, 1))) * 255
                 + rng.random((24, 24, 3)) * 30).astype(np.uint8)
        kernel = quickshift(image, kernel_size=3, max_dist=20, ratio=0.5, rng=3)
        monkeypatch.setattr(_loading, "kernels_loading", lambda: True)
        twin = quickshift(image, kernel_size=3, max_dist=20, ratio=0.5, rng=3)
        monkeypatch.undo()
        np.testing.assert_array_equal(twin, kernel)
        assert twin.dtype == kernel.dtype


@pytest.mark.parametrize("hide_color", [None, 0])
def test_a_first_call_on_numpy_is_the_kernels_explanation(monkeypatch, hide_color):
    """Default quickshift, the means, the perturbed images: all on the twins, the same
    explanation; a large image goes to the kernels even while they load."""
    rng = np.random.default_rng(11)
    image = (np.kron(rng.random((5, 5, 3)), np.ones((6, 6, 1))) * 255).astype(np.uint8)
    w = rng.random((3, 4))

    def classify(batch):
        z = batch.reshape(len(batch), -1, 3).mean(1) / 255 @ w
        return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    def explain():
        return lime_fast.LimeImageExplainer(random_state=4).explain_instance(
            image, classify, top_labels=2, num_samples=300, hide_color=hide_color,
            progress_bar=False)

    kernel = explain()
    used = []
    real = PerturbPlan.write_numpy

    def spy(self, rows, out):
        used.append(len(rows))
        real(self, rows, out)

    monkeypatch.setattr(_loading, "kernels_loading", lambda: True)
    monkeypatch.setattr(PerturbPlan, "write_numpy", spy)
    twin = explain()
    assert sum(used) == 300  # every perturbed image came from the twin
    assert twin.top_labels == kernel.top_labels
    np.testing.assert_array_equal(twin.segments, kernel.segments)
    for label in kernel.local_exp:
        assert twin.local_exp[label] == kernel.local_exp[label]
    monkeypatch.setattr(config, "FIRST_CALL_NUMPY_BYTES", 0)
    used.clear()
    explain()
    assert used == []
