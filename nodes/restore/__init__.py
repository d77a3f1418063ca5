"""Restore stage: face restoration (GFPGAN / RestoreFormer / CodeFormer through spandrel) pasted back on the frame."""
