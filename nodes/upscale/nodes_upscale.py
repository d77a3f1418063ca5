"""Upscale node: ESRGAN-family models (loaded with spandrel) over IMAGE frames or a SPINBOT_VIDEO."""
from __future__ import annotations


import torch

from .. import runtime
from ..media import MediaError
from ..video.store import SpinBotVideo
from .engine import UpscaleSettings, upscale_images, upscale_video
from .model import DEFAULT_MODEL, FOLDER, PRECISIONS, list_upscalers, load_upscaler

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/upscale"


def _model_choices() -> list[str]:
    # An empty dropdown cannot be saved in a workflow; offer the recommended file, whose absence
    # then gives an error saying where to put it and where to download it.
    return list_upscalers() or [DEFAULT_MODEL]


class SpinBotUpscale:
    DESCRIPTION = ("Upscales frames with an ESRGAN-family model from ComfyUI's upscale_models folder "
                   "(Real-ESRGAN x4plus/x2plus/anime 6B, realesr-general-x4v3, and anything else "
                   "spandrel loads). Frames stream through the model a few at a time in overlapping "
                   "tiles whose seams are cross-faded; out of GPU memory, the tile size halves and "
                   "the batch retries. IMAGE in gives IMAGE out; a SPINBOT_VIDEO in gives a "
                   "SPINBOT_VIDEO out (written to disk chunk by chunk, audio and segments kept).")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE", VIDEO)
    RETURN_NAMES = ("images", "video")
    OUTPUT_TOOLTIPS = (
        "The upscaled frames when 'images' is connected (None otherwise).",
        "The upscaled video, with the input's fps, audio and segments, when 'video' is "
        "connected (None otherwise).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        choices = _model_choices()
        default = DEFAULT_MODEL if DEFAULT_MODEL in choices else choices[0]
        return {
            "required": {
                "model_name": (choices, {"default": default, "tooltip":
                               f"Upscaler file in ComfyUI's models/{FOLDER} folder. "
                               "realesr-general-x4v3 is small and fast for video; RealESRGAN_x4plus "
                               "is sharper and slower."}),
                "target_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 16.0, "step": 0.05,
                                           "tooltip": "Output size relative to the input. 0 uses "
                                           "the model's native scale; a smaller value (e.g. 2 with "
                                           "an x4 model) resamples after the model."}),
                "tile": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 8, "tooltip":
                                 "Tile size in input pixels; 0 runs whole frames. Smaller tiles "
                                 "need less GPU memory."}),
                "overlap": ("INT", {"default": 32, "min": 0, "max": 512, "step": 2, "tooltip":
                                    "Pixels of context each tile reads around its share; the seam "
                                    "is cross-faded over it. Larger hides seams better but costs "
                                    "time."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip":
                              "auto: fp16 (or bf16) on a GPU where the model supports it, fp32 "
                              "on CPU. Choose fp32 if a model gives black or speckled frames."}),
                "frames_per_batch": ("INT", {"default": 4, "min": 1, "max": 256, "tooltip":
                                             "Frames sent through the model at once; memory grows "
                                             "with it. Lowered automatically when memory runs "
                                             "out."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to upscale, [B,H,W,C]. Connect this or "
                                                "'video'."}),
                "video": (VIDEO, {"tooltip": "A SpinBot video to upscale from disk, chunk by "
                                             "chunk. Connect this or 'images'."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model_name: str = "", **_inputs):
        # The result depends on the model file's content, not just its name: a replaced file
        # must not serve cached results. Size and mtime stand in for the content.
        return runtime.model_stamp(FOLDER, model_name)

    def upscale(self, model_name: str, target_scale: float, tile: int, overlap: int,
                precision: str, frames_per_batch: int, images: torch.Tensor | None = None,
                video: SpinBotVideo | None = None):
        if images is None and video is None:
            raise MediaError("SpinBot Upscale: connect 'images' or 'video'")
        settings = UpscaleSettings(target_scale=float(target_scale), tile=int(tile),
                                   overlap=int(overlap), precision=precision,
                                   frames_per_batch=int(frames_per_batch))
        upscaler = load_upscaler(model_name)
        out_images = upscale_images(upscaler, images, settings) if images is not None else None
        out_video = upscale_video(upscaler, video, settings) if video is not None else None
        return (out_images, out_video)


NODE_CLASS_MAPPINGS = {"SpinBotUpscale": SpinBotUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotUpscale": "SpinBot Upscale"}
