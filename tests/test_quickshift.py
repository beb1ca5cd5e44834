"""limefast.segmentation.quickshift gives scikit-image's labels, bit for bit."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import inspect
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import naive_quickshift
from numba import njit
from skimage import data, transform
from skimage.segmentation import quickshift as sk_quickshift

from limefast import config
from limefast.kernels import quickshift as qs_kernels
from limefast.kernels.quickshift import _fast_exp
from limefast.segmentation import LIME_QUICKSHIFT as LIME
from limefast.segmentation import quickshift


def photo(name: str, shape: tuple[int, int], crop: bool = False) -> np.ndarray:
    """A bundled photo as uint8, resized (or centre-cropped) to ``shape``."""
    image = getattr(data, name)()
    if crop:
        r0 = (image.shape[0] - shape[0]) // 2
        c0 = (image.shape[1] - shape[1]) // 2
        return np.ascontiguousarray(image[r0:r0 + shape[0], c0:c0 + shape[1]])
    resized = transform.resize(image, shape + image.shape[2:], anti_aliasing=True)
    return (resized * 255).round().astype(np.uint8)


def assert_same(ours, ref):
    """Same labels (and tree) as scikit-image, same dtypes."""
    if isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref)
        for a, b in zip(ours, ref):
            b = np.asarray(b)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    else:
        assert ours.dtype == ref.dtype
        assert ours.shape == ref.shape
        np.testing.assert_array_equal(ours, ref)


COLOUR = ["astronaut", "chelsea", "coffee", "rocket"]


def test_lime_parameters_are_lime_0_2_0_1s_default_segmentation(monkeypatch):
    """``LIME_QUICKSHIFT`` is what lime's ``explain_instance`` gives its default quickshift."""
    import lime.lime_image as lime_ref

    seen = {}

    class Stop(Exception):
        pass

    def recorder(algo_type, **kwargs):
        seen.update(kwargs, algo_type=algo_type)
        raise Stop

    monkeypatch.setattr(lime_ref, "SegmentationAlgorithm", recorder)
    with pytest.raises(Stop):
        lime_ref.LimeImageExplainer(random_state=0).explain_instance(
            photo("astronaut", (20, 20)), lambda batch: np.ones((len(batch), 2)) / 2,
            random_seed=7)
    assert seen == {**LIME, "algo_type": "quickshift", "random_seed": 7}


@pytest.mark.parametrize("name", COLOUR + ["camera"])
@pytest.mark.parametrize("shape,crop", [((20, 20), False), ((37, 52), False), ((40, 40), True)])
def test_bundled_images_lime_parameters(name, shape, crop):
    image = photo(name, shape, crop)
    kwargs = dict(LIME, convert2lab=image.ndim == 3)
    labels = quickshift(image, **kwargs)
    assert_same(labels, sk_quickshift(image, **kwargs))
    assert labels.min() == 0 and np.unique(labels).size == labels.max() + 1


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_lime_parameters_larger_image(name):
    image = photo(name, (96, 128))
    assert_same(quickshift(image, **LIME), sk_quickshift(image, **LIME))


PARAMETERS = [
    {},  # scikit-image's defaults
    dict(ratio=0.5, kernel_size=3, max_dist=6),
    dict(ratio=1.0, kernel_size=1, max_dist=2),
    dict(ratio=0.3, kernel_size=2.5, max_dist=1e9),
    dict(ratio=0.8, kernel_size=3, max_dist=0),
    dict(ratio=0.2, kernel_size=4, max_dist=200, sigma=1.5),
    dict(ratio=2, kernel_size=2, max_dist=8, sigma=0.6, convert2lab=False),
    dict(ratio=0.5, kernel_size=7, max_dist=20, convert2lab=False),
]


@pytest.mark.parametrize("kwargs", PARAMETERS)
@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_every_parameter(kwargs, name):
    image = photo(name, (28, 33))
    assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


@pytest.mark.parametrize("kwargs", PARAMETERS[:3] + [dict(LIME), dict(LIME, convert2lab=False)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_return_tree(kwargs, dtype):
    image = photo("astronaut", (24, 30))
    if dtype == np.float32:
        image = (image / 255).astype(np.float32)
    ours = quickshift(image, return_tree=True, **kwargs)
    assert_same(ours, sk_quickshift(image, return_tree=True, **kwargs))
    assert ours[2].dtype == (np.float32 if dtype == np.float32 else np.float64)


def test_channel_axis():
    image = np.moveaxis(photo("chelsea", (22, 26)), -1, 0)
    assert_same(quickshift(image, channel_axis=0, **LIME),
                sk_quickshift(image, channel_axis=0, **LIME))


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2**31 - 1])
def test_int_rng(seed):
    image = photo("chelsea", (25, 25))
    assert_same(quickshift(image, rng=seed, **LIME), sk_quickshift(image, rng=seed, **LIME))


def test_rng_breaks_ties():
    image = np.zeros((16, 16, 3))  # every density ties: the noise alone decides
    labels = [quickshift(image, rng=seed, kernel_size=2, max_dist=2, convert2lab=False)
              for seed in (0, 1)]
    for seed, lab in zip((0, 1), labels):
        assert_same(lab, sk_quickshift(image, rng=seed, kernel_size=2, max_dist=2,
                                       convert2lab=False))
    assert not np.array_equal(labels[0], labels[1])


@pytest.mark.parametrize("seed", [3, 42])
def test_generator_rng(seed):
    # scikit-image 0.26 takes only int seeds (its Cython types the seed as int); a Generator here
    # draws the same noise as its default_rng(seed), and is advanced by exactly that draw.
    image = photo("coffee", (21, 23))
    gen = np.random.default_rng(seed)
    assert_same(quickshift(image, rng=gen, **LIME), sk_quickshift(image, rng=seed, **LIME))
    twin = np.random.default_rng(seed)
    twin.normal(scale=0.00001, size=(21, 23))
    assert gen.random() == twin.random()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float16, np.float32,
                                   np.float64, np.bool_])
def test_input_dtypes(dtype):
    image = photo("rocket", (23, 19))
    if dtype == np.bool_:
        image = image > 128
    elif np.dtype(dtype).kind == "f":
        image = (image / 255).astype(dtype)
    else:
        image = image.astype(dtype)
    for kwargs in (LIME, dict(LIME, convert2lab=False)):
        assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_constant_image_is_one_segment(dtype):
    image = np.full((30, 25, 3), 0.4 if dtype != np.uint8 else 100, dtype)
    labels = quickshift(image, **LIME)
    assert np.unique(labels).size == 1
    assert_same(labels, sk_quickshift(image, **LIME))


def test_grey_image_without_lab():
    image = photo("camera", (33, 27))
    for kwargs in (dict(kernel_size=2, max_dist=5), LIME):
        assert_same(quickshift(image, convert2lab=False, **kwargs),
                    sk_quickshift(image, convert2lab=False, **kwargs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_pixels(dtype):
    image = (photo("coffee", (18, 18)) / 255).astype(dtype)
    image[4, 5, 1] = np.nan
    image[10, 2, 0] = np.inf
    kwargs = dict(kernel_size=2, max_dist=6, convert2lab=False, return_tree=True)
    assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (0, 0)])
def test_empty_image(shape):
    image = np.zeros(shape)
    kwargs = dict(convert2lab=False)
    assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


@pytest.mark.parametrize("kwargs", [
    dict(ratio=0), dict(ratio=-0.5), dict(ratio=np.float64(0.3)), dict(max_dist=np.nan),
    dict(max_dist=-np.inf), dict(max_dist=1e300), dict(rng=np.uint8(7)), dict(rng=True),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_arguments(kwargs, dtype):
    # a float64 numpy ratio turns a float32 image into float64, as in scikit-image
    image = np.random.default_rng(0).random((12, 13, 3)).astype(dtype)
    kwargs = dict(kwargs, return_tree=True)
    assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


@pytest.mark.parametrize("image", [
    np.zeros((4, 5, 0)),  # no channels: spatial distances only
    np.asfortranarray(np.random.default_rng(1).random((12, 13, 2))),
    np.random.default_rng(2).random((24, 26, 3))[::-2, ::2],
    np.random.default_rng(3).random((10, 11, 3)).astype(">f8"),
])
def test_layouts(image):
    assert_same(quickshift(image, convert2lab=False), sk_quickshift(image, convert2lab=False))


def test_kernel_wider_than_image():
    image = photo("astronaut", (9, 13))
    for kwargs in (dict(kernel_size=10, max_dist=1e3), dict(kernel_size=60.5, max_dist=5)):
        assert_same(quickshift(image, **kwargs), sk_quickshift(image, **kwargs))


def test_same_signature_as_scikit_image():
    ours = inspect.signature(quickshift).parameters
    theirs = inspect.signature(sk_quickshift).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].kind == theirs[name].kind
        assert ours[name].default == theirs[name].default


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_independent_of_thread_count(threads, monkeypatch):
    # more threads than rows per task: blocks of one row, shared in any order
    monkeypatch.setattr(config, "CPU_THREADS", threads)
    image = photo("chelsea", (40, 48))
    labels = quickshift(image, **LIME)
    labels32 = quickshift((image / 255).astype(np.float32), **LIME)
    assert_same(labels, sk_quickshift(image, **LIME))
    assert_same(labels32, sk_quickshift((image / 255).astype(np.float32), **LIME))


# --- the kernels' own guarantees ------------------------------------------------------------

def _lab(image, ratio=0.2, dtype=np.float64):
    from skimage.color import rgb2lab
    from skimage.util import img_as_float

    lab = rgb2lab(img_as_float(image).astype(dtype))
    return np.ascontiguousarray(lab * ratio)


def _fast_density(image, noise, kw, inv, sq):
    dens = np.empty_like(noise)
    undecided = np.zeros(noise.shape, np.uint8)
    qs_kernels._density_f32_cpu(np.ascontiguousarray(image.transpose(2, 0, 1)), noise, kw, inv,
                                sq, dens, undecided, 0, len(noise))
    return dens, undecided


def _exact_density(image, noise, kw, inv, sq):
    dens = noise.copy()
    qs_kernels._density_exact_cpu(image, dens, np.arange(noise.size), kw, inv, sq, 0, noise.size)
    return dens


@njit
def _fast_exp_array(x):
    """The kernels' polynomial exp over an array."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = _fast_exp(x[i])
    return out


def test_fast_exp_within_assumed_bound():
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(200_000) * 708, -rng.random(50_000) * 2,
                        -rng.random(10_000) * 1e-8, -np.arange(0, 708, 0.125), [0.0, -0.0]])
    ref = np.array([math.exp(v) for v in x])
    rel = np.abs(_fast_exp_array(x) - ref) / ref
    assert rel.max() <= qs_kernels._EXP_REL_ERR / 4
    tiny = _fast_exp_array(np.array([-708.5, -745.0, -1e300, -np.inf]))
    assert np.all((tiny >= 0) & (tiny < 4e-308))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name,channels", [("astronaut", 3), ("rocket", 3), ("coffee", 2)])
def test_fast_density_within_tolerance(name, channels, threads, monkeypatch):
    monkeypatch.setattr(config, "CPU_THREADS", threads)  # another split into bands
    image = np.ascontiguousarray(_lab(photo(name, (40, 44)))[..., :channels])
    noise = np.random.default_rng(5).normal(scale=1e-5, size=image.shape[:2])
    kw = 12
    sq = np.arange(-kw, kw + 1, dtype=np.float64) ** 2
    fast = qs_kernels._density_pairs(np.ascontiguousarray(image.transpose(2, 0, 1)), noise, kw,
                                     -0.5 / 16, sq, threads=config.CPU_THREADS)
    exact = _exact_density(image, noise, kw, -0.5 / 16, sq)
    gap = np.abs(fast - exact)
    assert np.all(gap <= qs_kernels._density_tolerance(fast, noise, kw) / 4)
    assert gap.max() > 0  # the tolerance is needed: the fast exp is not the C library's


def test_float32_density_exact_where_decided():
    image = _lab(photo("astronaut", (48, 48)), dtype=np.float32)
    noise = np.random.default_rng(2).normal(scale=1e-5, size=image.shape[:2]).astype(np.float32)
    kw = 12
    sq = (np.arange(-kw, kw + 1, dtype=np.float64) ** 2).astype(np.float32)
    inv = np.float32(-0.5 / 16)
    fast, undecided = _fast_density(image, noise, kw, inv, sq)
    exact = _exact_density(image, noise, kw, inv, sq)
    decided = undecided == 0
    np.testing.assert_array_equal(fast[decided], exact[decided])
    assert 0 < undecided.sum() < undecided.size // 10  # the fallback is exercised, and rare


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_path_matches_fast_path(dtype):
    image = _lab(photo("chelsea", (30, 34)), dtype=dtype)
    noise = np.random.default_rng(9).normal(scale=1e-5, size=image.shape[:2]).astype(dtype)
    fast = qs_kernels._quickshift_cpu(image, 4, 200, noise)
    exact = qs_kernels._quickshift_cpu(image, 4, 200, noise, exact=True)
    for a, b in zip(fast, exact):
        np.testing.assert_array_equal(a, b)


def test_every_comparison_undecided_still_exact(monkeypatch):
    # A huge tolerance sends every pixel through the exact re-search (densities recomputed with
    # the C library's exp): the answer must not change.
    image = photo("rocket", (26, 31))
    reference = sk_quickshift(image, return_tree=True, **LIME)
    real = qs_kernels._density_tolerance
    monkeypatch.setattr(qs_kernels, "_density_tolerance",
                        lambda dens, noise, kw: real(dens, noise, kw) * 1e12)
    assert_same(quickshift(image, return_tree=True, **LIME), reference)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(1, 14), st.integers(1, 14)),
    channels=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.float32, np.float64]),
    kernel_size=st.sampled_from([1, 1.5, 2, 3.3]),
    max_dist=st.sampled_from([0.5, 3, 10, 1e6]),
    ratio=st.sampled_from([0.2, 1.0, 3.0]),
    levels=st.sampled_from([2, 5, 256]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_images_match_scikit_image_and_naive(shape, channels, dtype, kernel_size,
                                                    max_dist, ratio, levels, seed):
    rng = np.random.default_rng(seed)
    # few grey levels make exact density ties, which only the noise breaks
    image = rng.integers(0, levels, shape + (channels,)) * (255 // max(levels - 1, 1))
    image = image.astype(np.uint8) if dtype == np.uint8 else (image / 255).astype(dtype)
    convert2lab = channels == 3 and bool(rng.integers(2))
    kwargs = dict(kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                  convert2lab=convert2lab, return_tree=True, rng=int(seed % 1000))
    ours = quickshift(image, **kwargs)
    assert_same(ours, sk_quickshift(image, **kwargs))

    from skimage.color import rgb2lab
    from skimage.util import img_as_float

    prepared = img_as_float(image)
    prepared = rgb2lab(prepared) if convert2lab else prepared
    prepared = np.ascontiguousarray(prepared * ratio)
    noise = np.random.default_rng(int(seed % 1000)).normal(scale=1e-5, size=shape)
    naive = naive_quickshift(prepared, kernel_size, max_dist, noise.astype(prepared.dtype))
    for a, b in zip(ours, naive):
        np.testing.assert_array_equal(a, b)


# --- errors -------------------------------------------------------------------------------

RGB = np.zeros((8, 8, 3), np.uint8)


@pytest.mark.parametrize("image,kwargs,error,fragment", [
    (np.zeros(7), {}, ValueError, "(H, W) or (H, W, C)"),
    (np.zeros((2, 3, 4, 3)), {}, ValueError, "got shape (2, 3, 4, 3)"),
    (np.zeros((8, 8, 4)), {}, ValueError, "pass convert2lab=False"),
    (np.zeros((8, 8)), {}, ValueError, "got 1 channel"),
    (RGB, dict(kernel_size=0.5), ValueError, "kernel_size should be >= 1"),
    (RGB, dict(kernel_size=np.nan), ValueError, "finite number"),
    (RGB, dict(kernel_size=1e12), ValueError, "finite number"),
    (RGB, dict(kernel_size="4"), TypeError, "kernel_size must be a real number"),
    (RGB, dict(max_dist=None), TypeError, "max_dist must be a real number"),
    (RGB, dict(ratio="a"), TypeError, "ratio must be a real number"),
    (RGB, dict(sigma=-1), ValueError, "sigma must be >= 0"),
    (RGB, dict(channel_axis=3), ValueError, "channel_axis must be in [-3, 2]"),
    (RGB, dict(channel_axis=1.0), TypeError, "channel_axis must be an int"),
    (RGB, dict(rng="x"), TypeError, "numpy.random.Generator"),
    (RGB, dict(rng=None), TypeError, "int seed"),
    (RGB, dict(rng=-1), ValueError, "non-negative"),
    (np.array([["a", "b"], ["c", "d"]]), {}, TypeError, "astype"),
    (RGB.astype(complex), {}, TypeError, "got complex128"),
])
def test_bad_input(image, kwargs, error, fragment):
    with pytest.raises(error) as info:
        quickshift(image, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("image,kwargs", [
    (np.zeros((2, 3, 4, 3)), {}),
    (np.zeros((8, 8, 4)), {}),
    (RGB, dict(kernel_size=0.5)),
    (RGB, dict(sigma=-1)),
])
def test_bad_input_same_error_type_as_scikit_image(image, kwargs):
    with pytest.raises(ValueError):
        sk_quickshift(image, **kwargs)
    with pytest.raises(ValueError):
        quickshift(image, **kwargs)


def test_failed_call_does_not_draw_from_generator():
    gen = np.random.default_rng(1)
    state = gen.bit_generator.state
    with pytest.raises(ValueError):
        quickshift(RGB, kernel_size=0, rng=gen)
    assert gen.bit_generator.state == state
