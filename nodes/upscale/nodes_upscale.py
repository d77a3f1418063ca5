"""Upscale node: ESRGAN-family models (loaded with spandrel) over IMAGE frames or a SPINBOT_VIDEO."""
from __future__ import annotations


import torch

from .. import runtime
from ..media import MediaError
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo, content_key, write_video
from .engine import UpscaleSettings, upscale_images, upscale_video
from .model import DEFAULT_MODEL, FOLDER, PRECISIONS, list_upscalers, load_upscaler

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/upscale"
# Frame rate of the video output made from an IMAGE input, which carries none: the default of
# SpinBot Images to Video.
IMAGE_FPS = 25.0


def _model_choices() -> list[str]:
    # An empty dropdown cannot be saved in a workflow; offer the recommended file, whose absence
    # then gives an error saying where to put it and where to download it.
    return list_upscalers() or [DEFAULT_MODEL]


class SpinBotUpscale:
    DESCRIPTION = ("Upscales frames with an ESRGAN-family model from ComfyUI's upscale_models folder "
                   "(Real-ESRGAN x4plus/x2plus/anime 6B, realesr-general-x4v3, and anything else "
                   "spandrel loads). Frames stream through the model a few at a time in overlapping "
                   "tiles whose seams are cross-faded; out of GPU memory, the tile size halves and "
                   "the batch retries. IMAGE in gives IMAGE out (and the same frames as a "
                   f"SPINBOT_VIDEO at {IMAGE_FPS:g} fps); a SPINBOT_VIDEO in gives a SPINBOT_VIDEO "
                   "out (written to disk chunk by chunk, audio and segments kept) and its first "
                   "upscaled frame as IMAGE. Both outputs always carry a value.")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE", VIDEO)
    RETURN_NAMES = ("images", "video")
    OUTPUT_TOOLTIPS = (
        "The upscaled frames of 'images'. With only 'video' connected: the video's first "
        "upscaled frame, as a preview (SpinBot Video to Images reads any range of its frames; "
        "all of them as IMAGE could exceed the RAM the video path exists to save).",
        "The upscaled video, with the input's fps, audio and segments. With only 'images' "
        f"connected: the upscaled frames stored as a video at {IMAGE_FPS:g} fps (an IMAGE batch "
        "has no frame rate; SpinBot Images to Video on the 'images' output sets another).",
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
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video (or a core VIDEO) to upscale "
                                                   "from disk, chunk by chunk. Connect this or "
                                                   "'images'."}),
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
        video = as_spinbot_video(video)
        settings = UpscaleSettings(target_scale=float(target_scale), tile=int(tile),
                                   overlap=int(overlap), precision=precision,
                                   frames_per_batch=int(frames_per_batch))
        upscaler = load_upscaler(model_name)
        out_images = upscale_images(upscaler, images, settings) if images is not None else None
        out_video = upscale_video(upscaler, video, settings) if video is not None else None
        # ComfyUI does not tell a node which outputs are linked, and a linked None reaches the
        # next node as a broken input: the output without its own input is derived from the
        # other one, as the tooltips say.
        if out_video is None:
            out_video = images_as_video(out_images, IMAGE_FPS)
        if out_images is None:
            out_images = torch.from_numpy(out_video.read(0, 1)).float().div_(255.0)
        return (out_images, out_video)


def images_as_video(images: torch.Tensor, fps: float) -> SpinBotVideo:
    """An IMAGE batch ``[B,H,W,3]`` stored as a SPINBOT_VIDEO at ``fps`` (reused when the same
    frames were stored before); NaN/inf frames are a `MediaError` naming them."""
    key = content_key("upscale_images_video", images, float(fps))
    batches = (images[i:i + 16] for i in range(0, images.shape[0], 16))
    return write_video(key, fps, batches)


NODE_CLASS_MAPPINGS = {"SpinBotUpscale": SpinBotUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotUpscale": "SpinBot Upscale"}
