"""Motion stage: Stable Video Diffusion (SVD / SVD-XT) from ComfyUI checkpoints with diffusers."""
