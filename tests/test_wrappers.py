"""limefast.wrappers.scikit_image behaves as lime 0.2.0.1's lime.wrappers.scikit_image."""

from __future__ import annotations

import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")

import functools
import subprocess
import sys

import lime.wrappers.scikit_image as lime_wrappers
import numpy as np
from lime.utils.generic_utils import has_arg as lime_has_arg
from skimage.data import chelsea
from skimage.segmentation import felzenszwalb, slic
from skimage.segmentation import quickshift as sk_quickshift
from skimage.util import img_as_float

from limefast import segmentation
from limefast.wrappers.scikit_image import BaseWrapper, SegmentationAlgorithm, has_arg

# --- lime's own tests (lime/tests/test_scikit_image.py), against our wrapper ----------------


def test_base_wrapper():
    obj_with_params = BaseWrapper(a=10, b="message")
    obj_without_params = BaseWrapper()

    def foo_fn():
        return "bar"

    obj_with_fn = BaseWrapper(foo_fn)
    assert obj_with_params.target_params == {"a": 10, "b": "message"}
    assert obj_without_params.target_params == {}
    assert obj_with_fn.target_fn() == "bar"


class Pipo:
    def __init__(self):
        self.name = "pipo"

    def __call__(self, message):
        return message


def test__check_params():
    def bar_fn(a):
        return str(a)

    obj_with_valid_fn = BaseWrapper(bar_fn, a=10, b="message")
    obj_with_valid_callable_fn = BaseWrapper(Pipo(), c=10, d="message")
    obj_with_invalid_fn = BaseWrapper([1, 2, 3], fn_name="invalid")

    # target_fn is not a callable or function/method: lime raises AttributeError
    with pytest.raises(AttributeError):
        obj_with_invalid_fn._check_params("fn_name")

    # parameters not in target_fn's arguments
    with pytest.raises(ValueError, match="c is not a valid parameter"):
        obj_with_valid_fn._check_params(["c"])
    with pytest.raises(ValueError, match="e is not a valid parameter"):
        obj_with_valid_callable_fn._check_params(["e"])

    # parameters in target_fn's arguments
    obj_with_valid_fn._check_params(["a"])
    obj_with_valid_callable_fn._check_params(["message"])

    # parameters neither a dict nor a list
    with pytest.raises(TypeError):
        obj_with_valid_fn._check_params(None)
    with pytest.raises(TypeError, match="list or dictionnary expected"):
        obj_with_valid_fn._check_params("param_name")


def test_set_params():
    obj = BaseWrapper(Pipo())
    obj.set_params(message="OK")
    assert obj.target_params == {"message": "OK"}
    assert obj.target_fn(**obj.target_params) == "OK"

    obj = BaseWrapper(Pipo())
    with pytest.raises(ValueError, match="invalid is not a valid parameter"):
        obj.set_params(invalid="KO")
    assert obj.target_params == {}


def test_filter_params():
    def baz_fn(a, b, c=True):
        return a + b if c else a

    obj_ = BaseWrapper(baz_fn, a=10, b=100, d=1000)
    assert obj_.filter_params(baz_fn) == {"a": 10, "b": 100}
    assert obj_.filter_params(baz_fn, override={"c": False}) == {"a": 10, "b": 100, "c": False}


def test_instanciate_segmentation_algorithm():
    # lime's test also passes random_seed=133 to scikit-image's quickshift, an argument since
    # renamed rng; the wrapper drops it, so the reference here is quickshift's default rng.
    img = img_as_float(chelsea()[::2, ::2])
    fn = SegmentationAlgorithm("quickshift", kernel_size=3, max_dist=6, ratio=0.5,
                               random_seed=133)
    original = sk_quickshift(img, kernel_size=3, max_dist=6, ratio=0.5)
    np.testing.assert_array_equal(fn(img), original)


# --- against lime's wrapper itself -----------------------------------------------------------

IMAGE = (img_as_float(chelsea()[60:124, 100:164]) * 255).astype(np.uint8)

ALGORITHM_PARAMS = [
    ("quickshift", dict(kernel_size=4, max_dist=200, ratio=0.2, random_seed=17)),
    ("quickshift", dict(kernel_size=2, max_dist=5, ratio=0.5, rng=3, sigma=0.5, unknown=1)),
    ("slic", dict(n_segments=30, compactness=5, start_label=0, random_seed=1)),
    ("felzenszwalb", dict(scale=50, sigma=0.5, min_size=10, bogus=True)),
]


@pytest.mark.parametrize("algo_type,params", ALGORITHM_PARAMS)
def test_same_parameters_and_segments_as_lime(algo_type, params):
    ours = SegmentationAlgorithm(algo_type, **params)
    theirs = lime_wrappers.SegmentationAlgorithm(algo_type, **params)
    assert ours.algo_type == theirs.algo_type
    assert ours.target_params == theirs.target_params
    segments = ours(IMAGE)
    np.testing.assert_array_equal(segments, theirs(IMAGE))
    assert segments.dtype == theirs(IMAGE).dtype


def test_lime_default_segmentation_drops_random_seed():
    # lime's explain_instance builds exactly this; quickshift then runs with rng=42
    fn = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2,
                               random_seed=123)
    assert fn.target_params == {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}
    assert fn.target_fn is segmentation.quickshift
    np.testing.assert_array_equal(
        fn(IMAGE), sk_quickshift(IMAGE, kernel_size=4, max_dist=200, ratio=0.2, rng=42))


def test_slic_and_felzenszwalb_are_scikit_image():
    assert SegmentationAlgorithm("slic").target_fn is slic
    assert SegmentationAlgorithm("felzenszwalb").target_fn is felzenszwalb


def test_call_uses_only_the_first_argument():
    fn = SegmentationAlgorithm("felzenszwalb", scale=10)
    np.testing.assert_array_equal(fn(IMAGE, "ignored"), felzenszwalb(IMAGE, scale=10))


def test_set_params_replaces_the_parameters():
    fn = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2)
    fn.set_params(kernel_size=2)
    assert fn.target_params == {"kernel_size": 2}
    with pytest.raises(ValueError, match="random_seed is not a valid parameter"):
        fn.set_params(random_seed=1)


@pytest.mark.parametrize("algo_type", ["watershed", "QuickShift", "", None, 3])
def test_unknown_algorithm(algo_type):
    with pytest.raises(ValueError) as info:
        SegmentationAlgorithm(algo_type)
    for name in ("'quickshift'", "'slic'", "'felzenszwalb'"):
        assert name in str(info.value)


def test_no_target_and_not_callable():
    with pytest.raises(TypeError, match="not callable"):
        BaseWrapper(a=1)._check_params(["a"])


def test_invalid_target_is_a_type_error_too():
    with pytest.raises(TypeError, match="target_fn must be a function or a callable"):
        BaseWrapper(42)._check_params(["x"])


def _pos_only(a, /, b, *, c, **kwargs):
    return a


class _Method:
    def method(self, x, *args, y=1):
        return x


@pytest.mark.parametrize("fn", [_pos_only, _Method().method, Pipo(),
                                functools.partial(_pos_only, 1), max, np.add, sk_quickshift,
                                segmentation.quickshift, slic])
@pytest.mark.parametrize("name", ["a", "b", "c", "kwargs", "x", "y", "args", "message",
                                  "image", "rng", "random_seed", "channel_axis", "out"])
def test_has_arg_as_lime(fn, name):
    assert has_arg(fn, name) == lime_has_arg(fn, name)


def test_lime_is_not_imported_at_runtime():
    code = ("import sys, limefast.wrappers.scikit_image, limefast.segmentation; "
            "assert not any(m == 'lime' or m.startswith('lime.') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
