"""Keep the README's generated sections true: the node list and the model table.

    python -m tests.readme --write    # regenerate both sections in README.md
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re

from tests._pack import ROOT, load_pack

README = os.path.join(ROOT, "README.md")


def node_list() -> str:
    pack = load_pack()
    rows = []
    for name, cls in sorted(pack.NODE_CLASS_MAPPINGS.items(), key=lambda kv: (kv[1].CATEGORY, kv[0])):
        first = cls.DESCRIPTION.split(". ")[0].rstrip(".")
        rows.append(f"- **{pack.NODE_DISPLAY_NAME_MAPPINGS[name]}** (`{cls.CATEGORY}`): {first}.")
    return "\n".join(rows) + "\n"


def model_table() -> str:
    spec = importlib.util.spec_from_file_location("spinbot_install", os.path.join(ROOT, "install.py"))
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    return install.models_markdown()


SECTIONS = {"nodes": node_list, "models": model_table}


def section(text: str, name: str) -> str:
    m = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if not m:
        raise ValueError(f"README.md has no '{name}' section markers")
    return m.group(1)


def write() -> None:
    text = open(README, encoding="utf-8").read()
    for name, make in SECTIONS.items():
        text = text.replace(section(text, name), make())
    open(README, "w", encoding="utf-8").write(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true")
    if parser.parse_args().write:
        write()
    else:
        print(node_list() + "\n" + model_table())
