"""Collect the repository root as a plain directory, not a Python package.

The root holds the pack's ``__init__.py`` (ComfyUI's entry point). pytest would treat the root as
a package and import that file under the checkout's folder name, which fails when the name is not
an identifier (``ComfyUI-SpinBot``, CI clones). Tests import the pack as ``spinbot`` instead
(tests/_pack.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests._pack import ROOT


def pytest_collect_directory(path: Path, parent):
    if path == Path(ROOT):
        return pytest.Dir.from_parent(parent, path=path)
    return None
