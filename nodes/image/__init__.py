"""Image stage: SD 1.5 / SDXL from ComfyUI checkpoints with diffusers, identity LoRAs, stage image."""
