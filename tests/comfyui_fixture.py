"""What the real-ComfyUI test modules share: their skip marks and the body of their ``comfy``
server fixture (a scratch base directory, optional tiny models and input files, one server).

Light on purpose: `tests.comfyui_server` (which loads the pack) is imported only when a server is
started, so a module without ``COMFYUI_PATH`` is collected and skipped cheaply. Each module keeps
its own fixture and scope::

    pytestmark = comfyui_marks()

    @pytest.fixture(scope="module")
    def comfy(tmp_path_factory):
        yield from serve(tmp_path_factory, "comfy", models=True)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


def comfyui_marks() -> list:
    """``pytestmark`` of a real-ComfyUI module: marked ``comfyui``, skipped without
    ``COMFYUI_PATH``."""
    return [pytest.mark.comfyui,
            pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]


def serve(tmp_path_factory, folder: str, models: bool | list[str] = False,
          prepare: Callable[[Path], None] | None = None,
          skip_first_visit: bool = False) -> Iterator["object"]:
    """Start a ComfyUI on a scratch base directory ``<tmp>/<folder>N`` and yield it; stopped when
    the fixture ends (also when a setup step after the start fails). ``models``: True writes every
    tiny factory model group under ``models/``, a list only those groups (`tests.factory.build`).
    ``prepare(base)`` runs before the start (input files; ``base/input`` may not exist yet).
    ``skip_first_visit`` marks the web UI's tutorial done (for browser tests)."""
    from tests.comfyui_server import ComfyUI

    base = tmp_path_factory.mktemp(folder)
    if models:
        from tests import factory

        factory.build(base / "models", only=None if models is True else list(models))
    if prepare is not None:
        prepare(base)
    server = ComfyUI(COMFYUI_PATH, str(base))
    try:
        if skip_first_visit:
            server.skip_first_visit()
        yield server
    finally:
        server.stop()
