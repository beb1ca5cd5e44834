"""Where the trained models live: small state-dict files in limefast's cache folder, written
atomically, trained again when missing or unreadable."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from limefast.optional import require


def cache_dir() -> Path:
    """Folder of limefast's cached files: ``$LIMEFAST_CACHE``, else the user cache folder."""
    if os.environ.get("LIMEFAST_CACHE"):
        return Path(os.environ["LIMEFAST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "limefast"


def cached_model(path: Path | None, build, train, what: str, retrain: bool = False):
    """(model in eval mode, trained?): the state dict at ``path`` loaded into ``build()``, or,
    when there is none (or it is unreadable, or ``retrain``), ``train()`` saved there."""
    torch = require("torch", "limefast.models")
    model = None
    if path is not None and path.is_file() and not retrain:
        model = build()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways
            warnings.warn(f"ignoring unreadable cached {what} model {path}: {exc}", stacklevel=3)
            model = None
    trained = model is None
    if trained:
        model = train()
        if path is not None:
            _save_atomically(model, path, what)
    return model.eval(), trained


def _save_atomically(model, path: Path, what: str) -> None:
    torch = require("torch", "limefast.models")
    # A half-written file must never be mistaken for a model: write aside, then rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not cache the {what} model at {path}: {exc} (set "
                      "LIMEFAST_CACHE to a writable folder)", stacklevel=4)


