from __future__ import annotations

import os

import pytest

from tests._pack import load_pack

os.environ.setdefault("SPINBOT_PROGRESS", "0")
load_pack()


@pytest.fixture(autouse=True)
def spinbot_dirs(tmp_path, monkeypatch):
    """Every test gets its own output, temp, input and models folders."""
    dirs = {}
    for name in ("output", "temp", "input", "models"):
        path = tmp_path / name
        path.mkdir()
        dirs[name] = path
        monkeypatch.setenv(f"SPINBOT_{name.upper()}_DIR", str(path))
    return dirs
