"""Import the pack the way ComfyUI does: by path, under a module name of our choosing.

The repository folder may be called anything (ComfyUI-SpinBot, main, a CI clone), so tests refer to
the pack as ``spinbot`` and this module registers it under that name.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack(name: str = "spinbot", root: str = ROOT) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(root, "__init__.py"), submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
