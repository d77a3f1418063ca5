"""The model manifest: every model file the pack uses, where it goes, where it comes from.

`nodes/data/models.json` is the single source for the README's model table, `install.py
--models`, and the errors raised when a model is missing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache

from . import runtime

MANIFEST_PATH = os.path.join(os.path.dirname(__file__), "data", "models.json")


@dataclass(frozen=True)
class ModelFile:
    id: str
    folder: str       # ComfyUI model folder (checkpoints, upscale_models, tts, ...)
    path: str         # path inside that folder, '/'-separated
    url: str | None   # direct download URL, None for files obtained otherwise
    source: str       # the public page users can check
    size_bytes: int | None
    sha256: str | None
    license: str
    stage: str
    notes: str = ""
    # For a folder entry (an insightface pack): the files inside it the pack needs, which is
    # what install.py and the workflows' model metadata check. Empty for single files.
    contains: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "contains", tuple(self.contains or ()))


class MissingModelError(FileNotFoundError):
    """A model the workflow needs is not installed. The message says what to put where."""

    def __init__(self, folder: str, names: list[str], source: str | None = None,
                 hint: str | None = None):
        self.folder, self.names, self.source = folder, list(names), source
        where = ", ".join(model_folder_hint(folder))
        parts = [f"model not found: put {' or '.join(repr(n) for n in names)} in the "
                 f"'{folder}' model folder ({where})"]
        if source:
            parts.append(f"download it from {source}")
        parts.append("or run: python install.py --models <preset> (see README)")
        if hint:
            parts.append(hint)
        super().__init__("; ".join(parts))


def model_folder_hint(folder: str) -> list[str]:
    return runtime.model_folder_paths(folder)


@lru_cache(maxsize=1)
def _load() -> dict:
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def models() -> list[ModelFile]:
    return [ModelFile(**entry) for entry in _load()["models"]]


def presets() -> dict[str, dict]:
    return _load()["presets"]


def model(model_id: str) -> ModelFile:
    for m in models():
        if m.id == model_id:
            return m
    raise KeyError(f"no model {model_id!r} in the manifest")


def entries_for(folder: str, path: str) -> ModelFile | None:
    return next((m for m in models() if m.folder == folder and m.path == path), None)


def require_model(folder: str, name: str, alternatives: list[str] | None = None) -> str:
    """Full path of an installed model, or a MissingModelError naming folder, files and source."""
    for candidate in [name, *(alternatives or [])]:
        path = runtime.find_model(folder, candidate)
        if path is not None:
            return path
    known = entries_for(folder, name)
    raise MissingModelError(folder, [name, *(alternatives or [])],
                            source=known.source if known else None)
