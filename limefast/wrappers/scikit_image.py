"""Drop-in for ``lime.wrappers.scikit_image`` (lime 0.2.0.1): segmentation algorithms as callables.

Same classes, arguments, parameter filtering and errors as lime's, with two differences:
``'quickshift'`` is served by the compiled ``limefast.segmentation.quickshift`` (same labels as
scikit-image's), and an unknown ``algo_type`` raises ``ValueError`` where lime builds an object
that fails later. As in lime on scikit-image >= 0.21, a ``random_seed=`` parameter is not an
argument of quickshift (its seed is ``rng``) and is silently dropped, so quickshift uses its
default ``rng=42``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from typing import Any

from limefast.segmentation import quickshift

ALGORITHMS = ("quickshift", "slic", "felzenszwalb")


class TargetNotCallableError(TypeError, AttributeError):
    """``target_fn`` is neither a function nor callable.

    An ``AttributeError`` too, because lime raises one (``target_fn.__call__``) in this case.
    """


def has_arg(fn: Callable, arg_name: str) -> bool:
    """Whether ``fn`` accepts ``arg_name`` as a keyword argument (lime's ``has_arg``).

    ``**kwargs`` does not count: only named positional-or-keyword and keyword-only parameters do.

    Args:
        fn: callable to inspect.
        arg_name: keyword argument name to look for.

    Returns:
        True if ``fn`` has a parameter ``arg_name`` that can be passed by keyword.
    """
    try:
        signature = inspect.signature(fn)
    except ValueError:  # no signature (some extension callables): try their __call__
        signature = inspect.signature(fn.__call__)
    parameter = signature.parameters.get(arg_name)
    if parameter is None:
        return False
    return parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              inspect.Parameter.KEYWORD_ONLY)


class BaseWrapper:
    """Base class of the scikit-image wrappers: a target function and the parameters it takes.

    Args:
        target_fn: function or callable object to wrap.
        **target_params: parameters to pass to ``target_fn``.
    """

    def __init__(self, target_fn: Callable | None = None, **target_params: Any):
        self.target_fn = target_fn
        self.target_params = target_params

    def _target_functions(self) -> list[Callable]:
        if self.target_fn is None:
            if callable(self):
                return [self.__call__]
            raise TypeError(
                "invalid argument: tested object is not callable, please provide a valid "
                "target_fn"
            )
        if isinstance(self.target_fn, (types.FunctionType, types.MethodType)):
            return [self.target_fn]
        if not callable(self.target_fn):
            raise TargetNotCallableError(
                f"target_fn must be a function or a callable object; got "
                f"{type(self.target_fn).__name__} {self.target_fn!r}"
            )
        return [self.target_fn.__call__]

    def _check_params(self, parameters: Iterable[str]) -> None:
        """Checks that every name in ``parameters`` is a keyword argument of the target.

        Args:
            parameters: parameter names (a dict's keys, a list), not a single string.

        Raises:
            ValueError: a name is not an argument of the target function.
            TypeError: the target is not callable, or ``parameters`` is a string or not iterable.
        """
        functions = self._target_functions()
        if isinstance(parameters, str):
            raise TypeError(
                f"invalid argument: list or dictionnary expected; got the string "
                f"{parameters!r} (wrap it in a list: [{parameters!r}])"
            )
        if not isinstance(parameters, Iterable):
            raise TypeError(
                f"invalid argument: list or dictionnary expected; got "
                f"{type(parameters).__name__}"
            )
        for name in parameters:
            for fn in functions:
                if not has_arg(fn, name):
                    raise ValueError(f"{name} is not a valid parameter")

    def set_params(self, **params: Any) -> None:
        """Replaces the target parameters with ``params``.

        Raises:
            ValueError: a parameter is not an argument of the target function.
        """
        self._check_params(params)
        self.target_params = params

    def filter_params(self, fn: Callable, override: dict | None = None) -> dict:
        """The target parameters that ``fn`` accepts, updated with ``override``.

        Args:
            fn: function whose keyword arguments select the parameters.
            override: values added or replaced after filtering.

        Returns:
            Dict of the parameters in both ``target_params`` and ``fn``'s arguments.
        """
        override = override or {}
        result = {name: value for name, value in self.target_params.items()
                  if has_arg(fn, name)}
        result.update(override)
        return result


class SegmentationAlgorithm(BaseWrapper):
    """A scikit-image segmentation with fixed parameters, called on an image.

    Args:
        algo_type: ``'quickshift'`` (limefast's compiled, identical quickshift), ``'slic'`` or
            ``'felzenszwalb'`` (scikit-image's).
        **target_params: parameters of the algorithm; those it does not take are dropped.

    Raises:
        ValueError: unknown ``algo_type``.
    """

    def __init__(self, algo_type: str, **target_params: Any):
        self.algo_type = algo_type
        if not isinstance(algo_type, str) or algo_type not in ALGORITHMS:
            raise ValueError(
                f"algo_type must be one of {', '.join(repr(a) for a in ALGORITHMS)}; "
                f"got {algo_type!r}"
            )
        if algo_type == "quickshift":
            fn = quickshift
        else:  # scikit-image's segmentation modules import scipy.ndimage: only when asked for
            import skimage.segmentation

            fn = getattr(skimage.segmentation, algo_type)
        BaseWrapper.__init__(self, fn, **target_params)
        self.set_params(**self.filter_params(fn))

    def __call__(self, *args: Any):
        """Segments ``args[0]``, an image, into (H, W) integer labels."""
        return self.target_fn(args[0], **self.target_params)
