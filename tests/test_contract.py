"""The ComfyUI custom-node contract: every node class is well-formed and the pack imports cleanly."""
from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys

import pytest

import spinbot
from tests._pack import ROOT

CLASSES = spinbot.NODE_CLASS_MAPPINGS
CORE_TYPES = {"IMAGE", "AUDIO", "MASK", "LATENT", "INT", "FLOAT", "STRING", "BOOLEAN"}


def test_exports():
    assert CLASSES, "no nodes registered"
    assert set(spinbot.NODE_DISPLAY_NAME_MAPPINGS) == set(CLASSES)
    assert spinbot.WEB_DIRECTORY == "./web"
    assert os.path.isdir(os.path.join(ROOT, "web"))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_node_class_is_well_formed(name):
    cls = CLASSES[name]
    assert name.startswith("SpinBot"), name
    assert spinbot.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("SpinBot ")
    assert cls.CATEGORY.startswith("SpinBot/") and len(cls.CATEGORY.split("/")) == 2
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for inp, spec in (types.get(section) or {}).items():
            assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, (name, inp)
            kind = spec[0]
            assert isinstance(kind, (list, str)), (name, inp)
            if isinstance(kind, str):
                assert kind in CORE_TYPES or kind.startswith("SPINBOT_"), (name, inp, kind)
            opts = spec[1] if len(spec) == 2 else {}
            assert len(opts.get("tooltip", "")) > 10, f"{name}.{inp} has no tooltip"
            if isinstance(kind, list):
                assert kind and opts.get("default", kind[0]) in kind, (name, inp)
    returns = cls.RETURN_TYPES
    assert isinstance(returns, tuple)
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
        assert len(getattr(cls, attr)) == len(returns), (name, attr)
    # the pack wraps FUNCTION in a metrics stage (functools.wraps): check the node's own code
    sig_params = set(inspect.unwrap(getattr(cls, cls.FUNCTION)).__code__.co_varnames)
    for section in ("required", "optional", "hidden"):
        for inp in types.get(section) or {}:
            assert inp in sig_params, f"{name}.{cls.FUNCTION} does not take '{inp}'"


COLLIDING = {"nodes", "utils", "comfy", "server", "folder_paths", "execution", "comfy_extras",
             "app", "main"}


def _python_files():
    for base, dirs, files in os.walk(os.path.join(ROOT, "nodes")):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(base, f)
    yield os.path.join(ROOT, "__init__.py")


@pytest.mark.parametrize("path", sorted(_python_files()), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_absolute_import_collides_with_comfyui(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        for n in names:
            top = n.split(".")[0]
            if top in COLLIDING:
                assert os.path.basename(path) == "runtime.py", f"{path} imports {n}"
            assert top != "torchaudio", f"{path} imports torchaudio"


def test_imports_under_dashed_folder_name_without_comfyui(tmp_path):
    """ComfyUI loads custom nodes by path with the folder name as module name."""
    pack = tmp_path / "ComfyUI-SpinBot"
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv", "output"))
    code = (
        "import importlib.util, sys\n"
        f"p = {str(pack)!r}\n"
        "spec = importlib.util.spec_from_file_location('ComfyUI-SpinBot', p + '/__init__.py',"
        " submodule_search_locations=[p])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ComfyUI-SpinBot'] = m\n"
        "spec.loader.exec_module(m)\n"
        "assert 'folder_paths' not in sys.modules and 'nodes' not in sys.modules\n"
        "print(len(m.NODE_CLASS_MAPPINGS), m.WEB_DIRECTORY)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(CLASSES)), "./web"]


def test_pyproject_registry_fields():
    import tomllib

    data = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    project = data["project"]
    assert project["name"] == "spinbot"
    assert "comfyui" not in project["name"].lower()
    for field in ("version", "description", "license", "urls"):
        assert project.get(field), field
    comfy = data["tool"]["comfy"]
    for field in ("PublisherId", "DisplayName", "Icon"):
        assert comfy.get(field), field
    reqs = open(os.path.join(ROOT, "requirements.txt")).read()
    deps = [l.split(">")[0].split("=")[0].strip().lower() for l in reqs.splitlines()
            if l.strip() and not l.startswith("#")]
    assert "torch" not in deps and "torchaudio" not in deps and "torchvision" not in deps
    assert all(">=" in l for l in reqs.splitlines() if l.strip() and not l.startswith("#"))
