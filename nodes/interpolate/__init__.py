"""Interpolation stage: RIFE frame interpolation streamed through the video store."""
