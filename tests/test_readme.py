"""The README's generated sections match the code and the manifest; its commands exist."""
from __future__ import annotations

import os
import re

from tests import readme
from tests._pack import ROOT


def test_generated_sections_are_current():
    text = open(readme.README, encoding="utf-8").read()
    for name, make in readme.SECTIONS.items():
        assert readme.section(text, name) == make(), f"run: python -m tests.readme --write ({name})"


def test_readme_commands_point_at_real_files():
    text = open(readme.README, encoding="utf-8").read()
    assert "bash .ci/run demo" in text and "bash .ci/run\n" in text
    for path in re.findall(r"`((?:workflows|tests|benchmarks|nodes)/[\w/.-]+)`", text):
        assert os.path.exists(os.path.join(ROOT, path)), path
