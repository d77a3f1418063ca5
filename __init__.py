"""ComfyUI-SpinBot: local talking-avatar video nodes for ComfyUI.

ComfyUI imports this folder by path; the names below are the custom-node contract.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
