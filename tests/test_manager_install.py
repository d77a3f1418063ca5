"""Installation the way ComfyUI-Manager does it, offline, into a real ComfyUI.

ComfyUI-Manager's command line (`cm-cli`, PyPI package `comfyui-manager`) installs a pack from a git
URL: it clones the repository into `custom_nodes/`, pip-installs each line of its requirements.txt
and runs its install.py. The URL here is `file://localhost/...` (the Manager only accepts URLs
with a host) pointing at a clone of this checkout's HEAD, so nothing leaves the machine. ComfyUI
is then restarted and every SpinBot node must be in /object_info, with torch untouched.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import spinbot
from tests._pack import ROOT

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]

_HELD = ("torch", "torchvision", "torchaudio")


def _versions() -> dict:
    code = ("import json, importlib.metadata as m\n"
            "out = {}\n"
            f"for name in {_HELD!r}:\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: out[name] = None\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))


def test_comfyui_manager_installs_the_pack_from_a_git_url(tmp_path):
    pytest.importorskip("cm_cli", reason="comfyui-manager is not installed")
    from tests.comfyui_server import ComfyUI

    # A scratch copy of ComfyUI: the Manager installs into <COMFYUI_PATH>/custom_nodes and this
    # ComfyUI version has no way to point it elsewhere.
    comfy = tmp_path / "ComfyUI"
    scratch = {"custom_nodes", "models", "output", "input", "temp", "user"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = os.path.samefile(folder, COMFYUI_PATH)
        return {n for n in names if n == "__pycache__" or (top and n in scratch)}

    shutil.copytree(COMFYUI_PATH, comfy, symlinks=True, ignore=ignore)
    (comfy / "custom_nodes").mkdir()
    source = tmp_path / "git" / "ComfyUI-SpinBot"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", ROOT, str(source)], check=True)

    before = ComfyUI(str(comfy), str(comfy), link_pack=False)
    try:
        assert not [n for n in before.get("/object_info") if n.startswith("SpinBot")]
    finally:
        before.stop()

    held = _versions()
    env = {**os.environ, "COMFYUI_PATH": str(comfy)}
    run = subprocess.run(
        [sys.executable, "-m", "cm_cli", "install", f"file://localhost{source}",
         "--user-directory", str(tmp_path / "manager-user"), "--exit-on-fail"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "[INSTALLED]" in run.stdout, run.stdout[-4000:]
    installed = comfy / "custom_nodes" / "ComfyUI-SpinBot"
    assert (installed / ".git").is_dir() and (installed / "__init__.py").is_file()
    assert _versions() == held, "installing the pack changed torch"

    after = ComfyUI(str(comfy), str(comfy), link_pack=False)  # the restart the Manager asks for
    try:
        info = after.get("/object_info")
        log = after.log()
    finally:
        after.stop()
    missing = [name for name in spinbot.NODE_CLASS_MAPPINGS if name not in info]
    assert not missing, f"not in /object_info after the Manager install: {missing}\n{log}"
    for name in spinbot.NODE_CLASS_MAPPINGS:
        assert info[name]["python_module"] == "custom_nodes.ComfyUI-SpinBot", info[name]["python_module"]
    assert "IMPORT FAILED" not in log, log
