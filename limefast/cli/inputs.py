"""What the command line reads and writes, checked before any work starts.

Every problem with the user's input (an unknown model, an unreadable image, weights that do not
fit, an output folder that cannot be written) raises ``InputError`` with one line that says what
is wrong; the command line prints it and exits with status 2. Outputs are written into a hidden
staging folder inside the output folder and moved into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from limefast import images
from limefast.core.checks import first_line
from limefast.imagenet import MEAN as IMAGENET_MEAN
from limefast.imagenet import STD as IMAGENET_STD
from limefast.optional import require

# Seconds a stalled download of pretrained weights may wait on the network before giving up.
DOWNLOAD_TIMEOUT = 20.0


class InputError(ValueError):
    """Bad input from the user: one line of explanation, exit status 2."""


# -- images -----------------------------------------------------------------------------------

def load_image(path: str, size: int, resize: str = "crop") -> np.ndarray:
    """``limefast.images.load_image`` for the command line: (size, size, 3) uint8 RGB, resized
    by ``resize`` (``--resize``); ``size`` 0 keeps the image as it is. InputError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        return images.load_image(path, size or None, resize=resize)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {first_line(exc)}") from exc


def image_names(paths: list[str]) -> list[str]:
    """A distinct, file-system-safe name per image: its stem, numbered when stems repeat."""
    names, seen = [], {}
    for path in paths:
        stem = _safe(Path(path).stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")


# -- models -----------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready to explain: ``classifier`` takes (N, H, W, 3) uint8, returns probabilities.

    ``module`` is the torch module (None for a plain callable from a factory), with the
    preprocessing ``mean``/``std`` (on images scaled to [0, 1]) that Grad-CAM must repeat.
    """

    spec: str
    tag: str
    classifier: object
    module: object = None
    weights: str = "random"
    categories: list | None = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    notes: list = field(default_factory=list)

    def label_name(self, label: int) -> str:
        if self.categories and 0 <= label < len(self.categories):
            return str(self.categories[label])
        return f"class {label}"


def load_model(spec: str, weights: str | None, *, device=None, precision="auto",
               mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int = 0,
               batch_size: int | None = None, compile: str | None = None) -> LoadedModel:
    """The model ``spec`` names: a torchvision classification model, or ``module:factory``.

    Args:
        spec: torchvision model name (``resnet18``), or ``package.module:function`` returning a
            ``torch.nn.Module`` (wrapped in a TorchClassifier) or any ``classifier_fn``.
        weights: None (random weights, with a warning), ``DEFAULT`` (torchvision's pretrained
            weights, downloaded if not cached) or a state-dict file.
        device, precision, batch_size, compile: the TorchClassifier's.
        mean, std: preprocessing of a module's input.
        seed: seeds torch before building, so random weights are the same on every run.
    """
    categories = None
    if ":" in spec:
        # A factory may return a NumPy classifier_fn: torch is seeded only where the factory's
        # module imported it (importing torch for a NumPy model costs a second or two).
        module = _from_factory(spec, before_call=lambda: _seed_loaded_torch(seed))
        torch = sys.modules.get("torch")
        if weights == "DEFAULT":
            raise InputError(f"--weights DEFAULT asks torchvision for pretrained weights; "
                             f"{spec} is not a torchvision model (give a weights file)")
    else:
        torch = require("torch", f"--model {spec} (a torchvision model)")
        torch.manual_seed(seed)
        module, categories = _torchvision_model(spec, weights)
    tag = _safe(spec.replace(":", "-")) or "model"
    if torch is None or not isinstance(module, torch.nn.Module):
        if weights not in (None, "DEFAULT"):
            raise InputError(f"--weights {weights}: {spec} returned a callable, not a torch "
                             "module, so there is nothing to load the weights into")
        return LoadedModel(spec, tag, module, None, "given by the factory", None)
    described = "random"
    if weights is not None and weights != "DEFAULT":
        load_state_dict_file(module, weights, spec)
        described = weights
    elif weights == "DEFAULT":
        described = "DEFAULT"
    module.eval()
    classifier = _torch_classifier(module, mean, std, device, precision, batch_size, spec,
                                   compile)
    loaded = LoadedModel(spec, tag, classifier, module, described, categories, tuple(mean),
                         tuple(std))
    if weights is None:
        loaded.notes.append(f"{spec} has random weights (no --weights file): its explanations "
                            "describe an untrained network")
    return loaded


def _from_factory(spec: str, before_call=None):
    # A console script does not look in the current folder: the resolver puts it on the path.
    return ImportedFactory(spec, os.getcwd()).build(before_call)


def _seed_loaded_torch(seed: int) -> None:
    """Seed torch, if it is imported, so a factory's random weights are the same every run."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


@dataclass(frozen=True)
class ImportedFactory:
    """A model factory named by ``module:attribute`` or ``path/to/file.py:attribute``.

    Picklable (it is only the name), so each Ray worker imports the module and calls the
    attribute itself. ``cwd`` is put on ``sys.path`` first, as ``python -m`` would.
    """

    spec: str
    cwd: str

    def resolve(self):
        module_name, sep, attribute = self.spec.rpartition(":")
        if not sep or not module_name or not attribute:
            raise InputError(
                f"--model must be MODULE:FACTORY or FILE.py:FACTORY (a callable with no "
                f"arguments returning the classifier); got {self.spec!r}"
            )
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = os.path.join(self.cwd, module_name)
            spec = importlib.util.spec_from_file_location(
                f"_limefast_model_{abs(hash(path))}", path)
            if spec is None or not os.path.isfile(path):
                raise InputError(f"--model file {path!r} does not exist")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if self.cwd not in sys.path:
                sys.path.insert(0, self.cwd)
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise InputError(f"--model {self.spec}: cannot import {module_name}: "
                                 f"{first_line(exc)}") from exc
        try:
            factory = getattr(module, attribute)
        except AttributeError:
            raise InputError(f"--model {self.spec}: {module_name} has no callable "
                             f"{attribute!r}") from None
        if not callable(factory):
            raise InputError(f"--model: {self.spec} is not callable; got {type(factory).__name__}")
        return factory

    def __call__(self):
        return self.resolve()()

    def build(self, before_call=None):
        """Call the factory, every failure of the user's code reported in one line;
        ``before_call()`` runs once its module is imported, just before the call."""
        factory = self.resolve()
        if before_call is not None:
            before_call()
        try:
            built = factory()
        except Exception as exc:  # noqa: BLE001 - any failure of user code, in one line
            name = self.spec.rpartition(":")[2]
            raise InputError(f"--model {self.spec}: {name}() failed: {first_line(exc)}") from exc
        if not callable(built):
            raise InputError(f"--model {self.spec}: the factory returned "
                             f"{type(built).__name__}, not a torch module or a classifier "
                             "function")
        return built



# torchvision's model families: the submodule ``list_models`` looks in, and what the error says.
FAMILIES = {"classification": ("", "classification"), "detection": ("detection", "detection"),
            "segmentation": ("segmentation", "segmentation")}


def torchvision_names(family: str = "classification") -> list[str]:
    import torchvision

    sub = FAMILIES[family][0]
    module = getattr(torchvision.models, sub) if sub else torchvision.models
    return sorted(torchvision.models.list_models(module=module))


def _torchvision_model(name: str, weights: str | None, family: str = "classification"):
    import torchvision

    names = torchvision_names(family)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        sub = FAMILIES[family][0]
        where = f"torchvision.models.{sub}" if sub else "torchvision.models"
        raise InputError(f"unknown model {name!r}: not a torchvision {FAMILIES[family][1]} "
                         f"model{hint}; use one of torchvision.models.list_models(module="
                         f"{where}) or module:factory")
    extra = {"init_weights": False} if name in ("inception_v3", "googlenet") else {}
    if family != "classification":  # no pretrained backbone either: nothing is downloaded
        extra = {"weights_backbone": None}
    module = torchvision.models.get_model(name, weights=None, **extra)
    if weights != "DEFAULT":
        return module, None
    enum = torchvision.models.get_model_weights(name).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    chatter = io.StringIO()  # torch.hub's "Downloading: ..." line: the error alone is enough
    try:
        with contextlib.redirect_stderr(chatter):
            state = enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network, disk and hash failures alike
        raise InputError(f"cannot get torchvision's pretrained weights {enum} for {name}: "
                         f"{first_line(exc)} (download them where the network allows it, or give "
                         "--weights FILE)") from exc
    finally:
        socket.setdefaulttimeout(previous)
    if chatter.getvalue().strip():
        print(f"limefast: downloaded {enum} for {name}", file=sys.stderr)
    own = module.state_dict()
    # FCN's and DeepLabV3's weights carry their training's auxiliary head, which a model built
    # without weights lacks (torchvision adds it only with them): it is not used at inference
    state = {k: v for k, v in state.items() if k in own or not k.startswith("aux_classifier.")}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"torchvision's weights {enum} do not fit {name}: "
                         f"{first_line(exc)}") from exc
    return module, list(enum.meta.get("categories") or []) or None


def load_state_dict_file(module, path: str, spec: str) -> None:
    """Load a state dict saved with ``torch.save`` into ``module``, or say why it does not fit."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read weights file {path}: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise InputError(f"cannot read weights file {path}: {first_line(exc)}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"weights file {path} holds {type(state).__name__}, not a state dict "
                         "(save one with torch.save(model.state_dict(), path))")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    problems = []
    if mismatched:
        k = mismatched[0]
        problems.append(f"{len(mismatched)} shape mismatch(es), first {k}: "
                        f"{tuple(own[k].shape)} in the model, {tuple(state[k].shape)} in the file")
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]}")
    if problems:
        raise InputError(f"weights file {path} does not fit {spec}: {'; '.join(problems)}")
    module.load_state_dict(state)


def _torch_classifier(module, mean, std, device, precision, batch_size, spec, compile=None):
    import torch

    try:
        from limefast.device.classifier import TorchClassifier
    except ImportError as exc:
        raise InputError(f"--model {spec} needs limefast.TorchClassifier: "
                         f"{first_line(exc)}") from exc
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        module.to(device)  # a TorchClassifier wants the model on its device already
        return TorchClassifier(module, mean=mean, std=std, device=device, precision=precision,
                               batch_size=batch_size, compile=compile)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"--model {spec} on --device {device}: {first_line(exc)}") from exc


# -- output -----------------------------------------------------------------------------------

class Staging:
    """Outputs go to a hidden folder inside ``out``; ``commit`` moves them into place.

    Creating ``out`` and the staging folder up front checks that it can be written before any
    work; ``abort`` removes what was staged (and ``out`` itself if this run created it).
    """

    def __init__(self, out: str):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"output folder {out} exists and is not a folder")
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=".limefast-", dir=self.out))
        except OSError as exc:
            self._remove_out()
            raise InputError(f"cannot write to output folder {out}: {first_line(exc)}") from exc

    def path(self, *parts: str) -> Path:
        """Where to write ``out/parts...`` for now (parent folders created)."""
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def commit(self) -> list[Path]:
        """Move every staged file into ``out`` (same relative path), replacing older files."""
        moved = []
        for staged in sorted(p for p in self.root.rglob("*") if p.is_file()):
            target = self.out / staged.relative_to(self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            moved.append(target)
        shutil.rmtree(self.root, ignore_errors=True)
        return moved

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._remove_out()

    def _remove_out(self) -> None:
        if self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass
