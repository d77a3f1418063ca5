"""Upscale stage: ESRGAN-family upscalers (spandrel) over IMAGE frames or a SPINBOT_VIDEO."""
