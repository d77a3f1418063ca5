"""pytest hooks: collect the repository root as a plain directory, and turn skipped real-ComfyUI
tests into failures where a ComfyUI is provided.

The root holds the pack's ``__init__.py`` (ComfyUI's entry point). pytest would treat the root as
a package and import that file under the checkout's folder name, which fails when the name is not
an identifier (``ComfyUI-SpinBot``, CI clones). Tests import the pack as ``spinbot`` instead
(tests/_pack.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._pack import ROOT


def pytest_collect_directory(path: Path, parent):
    if path == Path(ROOT):
        return pytest.Dir.from_parent(parent, path=path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where a real ComfyUI is provided (``SPINBOT_REQUIRE_COMFYUI=1``, set by .ci/run), a skipped
    real-ComfyUI test is a failure: a missing browser, package or server must not pass silently."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and item.get_closest_marker("comfyui") is not None
            and os.environ.get("SPINBOT_REQUIRE_COMFYUI") == "1"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"real-ComfyUI test skipped where it is required: {reason}"
