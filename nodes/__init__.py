"""SpinBot nodes: one sub-package per stage, each with a ComfyUI-free engine and a nodes_*.py file.

Only `runtime` touches ComfyUI internals; everything else uses relative imports so the pack loads
under any folder name (ComfyUI imports it by path as `ComfyUI-SpinBot`).
"""
from __future__ import annotations

from . import metrics, runtime
from .image import nodes_image
from .lipsync import nodes_lipsync
from .motion import nodes_motion
from .script import nodes_script
from .upscale import nodes_upscale
from .video import nodes_video
from .voice import nodes_voice

_NODE_MODULES = (nodes_video, nodes_upscale, nodes_script, nodes_image, nodes_motion, nodes_voice,
                 nodes_lipsync)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _NODE_MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
# Every node's main function runs as a metrics stage (time, peak RAM/VRAM, frames) of its run.
for _name, _cls in NODE_CLASS_MAPPINGS.items():
    metrics.instrument_node(_cls, _name)

runtime.register_model_folders()
