"""Output file names that can never leave ComfyUI's output folder."""
from __future__ import annotations

import os
import re

from . import runtime


class OutputPathError(ValueError):
    """A filename prefix that points outside the output folder or is not a usable name."""


_COUNTER = re.compile(r"_(\d{5,})_?\.")


def safe_output_path(filename_prefix: str, extension: str, root: str | None = None) -> tuple[str, str, str]:
    """Pick ``<output>/<subfolder>/<name>_NNNNN_.<ext>`` for a prefix like ComfyUI's savers do.

    Absolute prefixes, drive letters, ``..`` components and symlinks that resolve outside the
    output folder are refused with an error rather than silently rewritten, so the user learns
    where the file did not go. Returns ``(full_path, subfolder, filename)``.
    """
    root = os.path.realpath(root or runtime.output_dir())
    prefix = (filename_prefix or "").strip().replace("\\", "/")
    if not prefix or prefix.endswith("/"):
        raise OutputPathError(f"filename_prefix {filename_prefix!r} does not name a file")
    if prefix.startswith("/") or re.match(r"^[A-Za-z]:", prefix) or "\x00" in prefix:
        raise OutputPathError(
            f"filename_prefix {filename_prefix!r} is an absolute path; use a name relative to the "
            f"output folder, e.g. 'SpinBot/video'")
    parts = [p for p in prefix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OutputPathError(
            f"filename_prefix {filename_prefix!r} tries to leave the output folder ({root})")
    *sub, base = parts
    folder = os.path.realpath(os.path.join(root, *sub))
    if os.path.commonpath([folder, root]) != root:
        raise OutputPathError(
            f"filename_prefix {filename_prefix!r} resolves outside the output folder ({root})")
    os.makedirs(folder, exist_ok=True)
    counter = _next_counter(folder, base)
    filename = f"{base}_{counter:05d}_.{extension.lstrip('.')}"
    return os.path.join(folder, filename), "/".join(sub), filename


def _next_counter(folder: str, base: str) -> int:
    highest = 0
    for name in os.listdir(folder):
        if name.startswith(base + "_"):
            m = _COUNTER.match(name[len(base):])
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def partial_path(final_path: str) -> str:
    """Where a file is written before it is complete (hidden, same folder, same device)."""
    folder, name = os.path.split(final_path)
    return os.path.join(folder, f".{name}.partial")
