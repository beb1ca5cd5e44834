"""Module paths of earlier releases, kept importable: each old name is the new module itself
(the same object, so patching ``limefast.sampling`` patches ``limefast.core.sampling``).

``limefast.faithfulness`` and ``limefast.gradcam`` are not here on purpose: they are the public
functions, and a module of the same name would shadow them (``limefast.metrics`` and
``limefast.viz.cam`` are the modules).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "limefast._checks": "limefast.core.checks",
    "limefast.executor": "limefast.core.executor",
    "limefast.sampling": "limefast.core.sampling",
    "limefast.adaptive": "limefast.core.adaptive",
    "limefast.surrogate": "limefast.core.surrogate",
    "limefast.torch_classifier": "limefast.device.classifier",
    "limefast.surrogate_torch": "limefast.device.surrogate",
    "limefast.render": "limefast.viz.render",
    "limefast.dataset_worker": "limefast.dataset.worker",
    "limefast.dataset_cli": "limefast.dataset.command",
    "limefast._cli_inputs": "limefast.cli.inputs",
    "limefast.digits": "limefast.models.digits",
    "limefast.demo.digits": "limefast.models.digits",
    "limefast.demo.faces": "limefast.models.faces",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
