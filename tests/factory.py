"""The tiny-model factory: small, randomly initialised models in the real release layouts.

Every architecture the pack loads gets a builder here that writes files with the same folder,
file names, key names and formats as the public release, only with tiny widths, so the pack's real
loading code runs in tests and in a real ComfyUI without downloading anything.

    python -m tests.factory --out /path/to/ComfyUI/models          # every tiny model
    python -m tests.factory --out DIR --only upscale_models         # one group

Builders are registered with `@builder(group)` and return the paths they wrote. Outputs of these
models are noise; tests assert on shapes, timing, files and errors, never on quality.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch

Builder = Callable[[Path], list[Path]]
BUILDERS: dict[str, list[Builder]] = {}


def builder(group: str) -> Callable[[Builder], Builder]:
    """Register a function that writes tiny models for one ComfyUI model folder (group)."""
    def register(fn: Builder) -> Builder:
        BUILDERS.setdefault(group, []).append(fn)
        return fn
    return register


def seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build(out: str | Path, only: list[str] | None = None) -> list[Path]:
    """Write the tiny models of the chosen groups (all by default) under ``out``."""
    out = Path(out)
    written: list[Path] = []
    for group, fns in BUILDERS.items():
        if only and group not in only:
            continue
        for fn in fns:
            written.extend(fn(out / group))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="models root, e.g. ComfyUI/models")
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="groups to build")
    args = parser.parse_args(argv)
    if not BUILDERS:
        print("no tiny models are registered yet", file=sys.stderr)
        return 1
    for path in build(args.out, args.only):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else path.stat().st_size
        print(f"{os.path.relpath(path, args.out)}\t{size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
