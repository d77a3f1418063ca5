"""Tiny-model builders for the motion stage (Stable Video Diffusion).

`checkpoints/svd_xt.safetensors`: the SVD-XT single file in the release key layout (see
tests/sd_layout_svd.py) with its tiny diffusers config in `svd_xt.config/` beside it, which the
pack's loader prefers over its shipped full-size configs. `clip_vision/clip_vision_h.safetensors`:
a tiny CLIP vision model in the transformers layout of ComfyUI's clip_vision files.
"""
from __future__ import annotations

from pathlib import Path

from tests.factory import builder


@builder("checkpoints")
def tiny_svd_xt(folder: Path) -> list[Path]:
    from tests.sd_layout_svd import write_tiny_checkpoint
    path = folder / "svd_xt.safetensors"
    return [path, write_tiny_checkpoint(path, "svd_xt", seed=25)[0]]


@builder("clip_vision")
def tiny_clip_vision_h(folder: Path) -> list[Path]:
    from tests.sd_layout_svd import write_tiny_clip_vision
    return [write_tiny_clip_vision(folder / "clip_vision_h.safetensors", seed=14)]
