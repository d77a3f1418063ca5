"""Command-line renderer and batch tools for ComfyUI-SpinBot."""
