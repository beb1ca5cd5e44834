"""limefast: LIME image explanations with compiled kernels.

``from limefast import lime_image`` is a drop-in for ``from lime import lime_image``;
``limefast.KernelShapImageExplainer`` gives Shapley values over superpixels on the same stages.
``limefast.TorchClassifier`` (needs the ``torch`` extra) runs explanations on a PyTorch device.
Pictures and comparisons: ``limefast.render_explanation``, ``limefast.gradcam`` (torch) and
``limefast.faithfulness``; the ``limefast`` command line explains image files.

The house: ``core/`` the backend-neutral pipeline, ``segmentation/``, ``device/`` (PyTorch),
``kernelshap/`` (the Shapley explainer), ``viz/`` and ``metrics/``, ``wrappers/`` (lime's
mirror), ``models/`` (the small models the project trains), and the apps ``cli/``,
``dataset/``, ``demo/``, ``benchsuite/``; the compiled kernels are ``limefast.kernels``.

``import limefast`` is cheap: every public name is loaded on first use (SPEC 1's lazy
loading), and a background thread loads Numba, the explainer and the cached kernels meanwhile
(``limefast._preload`` runs what ``limefast._warmup`` lists; ``LIMEFAST_PRELOAD=0`` turns it
off).
"""

from limefast import _moved, _preload

__version__ = "0.1.0"

__all__ = ["ImageExplanation", "KernelShapImageExplainer", "LimeImageExplainer", "TorchClassifier",
           "faithfulness", "gradcam", "lime_image", "render_explanation", "__version__"]

# Public name -> the module that defines it (a module's own name: the module itself).
_LAZY = {
    "lime_image": "limefast.lime_image",
    "ImageExplanation": "limefast.lime_image",
    "LimeImageExplainer": "limefast.lime_image",
    "KernelShapImageExplainer": "limefast.kernelshap",
    "TorchClassifier": "limefast.device.classifier",
    "faithfulness": "limefast.metrics.curves",
    "gradcam": "limefast.viz.cam",  # imports torch only when called
    "render_explanation": "limefast.viz.render",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        module = import_module(_LAZY[name])
        value = module if module.__name__.rpartition(".")[2] == name else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'limefast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _warm_up() -> list:
    """The background load's steps, asked for on its own thread (the plan imports numpy)."""
    from limefast._warmup import steps

    return steps()


_moved.install()
_preload.start(_warm_up)
