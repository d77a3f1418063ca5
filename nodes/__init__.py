"""SpinBot nodes: one sub-package per stage, each with a ComfyUI-free engine and a nodes_*.py file.

Only `runtime` touches ComfyUI internals; everything else uses relative imports so the pack loads
under any folder name (ComfyUI imports it by path as `ComfyUI-SpinBot`).
"""
from __future__ import annotations

# The node modules (and torch with them) load on first use of the mappings (PEP 562), so the
# standard-library tools in this package (client.py, the render command) start without them.
_MAPPINGS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")


def _load_nodes() -> None:
    """Import every stage's node module, merge their mappings and register the model folders."""
    from . import metrics, runtime
    from .audio import nodes_audio
    from .dubbing import nodes_dubbing
    from .identity import nodes_identity
    from .image import nodes_image
    from .interpolate import nodes_interpolate
    from .lipsync import nodes_lipsync
    from .motion import nodes_motion
    from .overlay import nodes_overlay
    from .restore import nodes_restore
    from .scene import nodes_scene
    from .script import nodes_script
    from .upscale import nodes_upscale
    from .video import nodes_video
    from .voice import nodes_voice

    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for module in (nodes_video, nodes_upscale, nodes_script, nodes_image, nodes_motion, nodes_voice,
                   nodes_lipsync, nodes_scene, nodes_overlay, nodes_audio, nodes_interpolate,
                   nodes_identity, nodes_dubbing, nodes_restore):
        classes.update(module.NODE_CLASS_MAPPINGS)
        names.update(module.NODE_DISPLAY_NAME_MAPPINGS)
    # Every node's main function runs as a metrics stage (time, peak RAM/VRAM, frames) of its run.
    for key, cls in classes.items():
        metrics.instrument_node(cls, key)
    runtime.register_model_folders()
    globals().update(NODE_CLASS_MAPPINGS=classes, NODE_DISPLAY_NAME_MAPPINGS=names)


def __getattr__(name: str):
    if name in _MAPPINGS:
        _load_nodes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
