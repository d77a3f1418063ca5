"""Motion stage nodes: SVD / SVD-XT model loader and the SVD image-to-video node."""
from __future__ import annotations

import os

import torch

from .. import runtime
from ..script.segments import SEGMENTS_TYPE, coerce_segments
from .checkpoint import MotionModel, MotionModelError, load_motion_model, source_files
from .generate import FIT_MODES, MotionSettings, animate, duration_of

MOTION_MODEL = "SPINBOT_SVD_MODEL"
VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/motion"
NONE = "none"
DIFFUSERS_PREFIX = "diffusers/"


def _checkpoint_choices() -> list[str]:
    files = runtime.list_models("checkpoints", suffixes=[".safetensors"])
    # SVD files first: the same folder holds the image stage's checkpoints
    files = sorted(files, key=lambda f: "svd" not in os.path.basename(f).lower())
    folders = [DIFFUSERS_PREFIX + d for d in runtime.list_models("diffusers", dirs=True)]
    return files + folders or ["svd_xt.safetensors"]


def _model_path(name: str) -> str:
    if name.startswith(DIFFUSERS_PREFIX):
        path, folder = runtime.find_model("diffusers", name[len(DIFFUSERS_PREFIX):]), "diffusers"
    else:
        path, folder = runtime.find_model("checkpoints", name), "checkpoints"
    if path is None:
        raise MotionModelError(f"'{name}' was not found in models/{folder}. Put svd_xt.safetensors "
                               "(huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt) or "
                               "svd.safetensors in models/checkpoints.")
    return path


class SpinBotSVDModel:
    DESCRIPTION = ("Loads Stable Video Diffusion (SVD, 14 frames, or SVD-XT / XT 1.1, 25 frames) "
                   "with diffusers, fully offline, from the single files ComfyUI uses "
                   "(models/checkpoints/svd_xt.safetensors ...) or a diffusers folder. fp16 on a "
                   "GPU; with less than ~20 GB of VRAM the 16 GB policy (model CPU offload, UNet "
                   "forward chunking, chunked VAE decode) switches on by itself.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MOTION_MODEL,)
    RETURN_NAMES = ("svd_model",)
    OUTPUT_TOOLTIPS = ("The loaded SVD pipeline, for SpinBot SVD.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_checkpoint_choices(), {"tooltip": "svd.safetensors, svd_xt.safetensors "
                           "or svd_xt_1_1.safetensors from models/checkpoints, or a diffusers "
                           "StableVideoDiffusionPipeline folder from models/diffusers."}),
            "clip_vision": ([NONE] + runtime.list_models("clip_vision", suffixes=[".safetensors"]),
                            {"default": NONE, "tooltip": "CLIP ViT-H/14 image encoder from "
                             "models/clip_vision (e.g. clip_vision_h.safetensors); only needed "
                             "when the checkpoint has none. 'none' uses the checkpoint's own."}),
            "precision": (["auto", "fp16", "bf16", "fp32"], {"default": "auto", "tooltip":
                          "auto: fp16 on a GPU (SVD's release precision), fp32 on CPU."}),
            "memory": (["auto", "low_vram", "full"], {"default": "auto", "tooltip":
                       "auto: the 16 GB policy when VRAM is short; low_vram: always (slower, "
                       "~8-10 GB at 576x1024); full: everything stays on the GPU (fastest)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, checkpoint: str = "", clip_vision: str = NONE, **_):
        folder, name = "checkpoints", checkpoint
        if checkpoint.startswith(DIFFUSERS_PREFIX):
            folder, name = "diffusers", checkpoint[len(DIFFUSERS_PREFIX):]
        vision = runtime.find_model("clip_vision", clip_vision) if clip_vision != NONE else None
        path = runtime.find_model(folder, name)
        if path is None:
            return f"{checkpoint}|missing|{runtime.file_stamp(vision)}"
        # every file the load reads: a diffusers folder's weights, the .config folder, clip_vision
        return "|".join(runtime.file_stamp(f) for f in source_files(path, vision))

    def load(self, checkpoint: str, clip_vision: str = NONE, precision: str = "auto",
             memory: str = "auto"):
        vision = None
        if clip_vision and clip_vision != NONE:
            vision = runtime.find_model("clip_vision", clip_vision)
            if vision is None:
                raise MotionModelError(f"'{clip_vision}' was not found in models/clip_vision.")
        return (load_motion_model(_model_path(checkpoint), vision, precision, memory),)


class SpinBotSVD:
    DESCRIPTION = ("Animates a still image (the first frame) with Stable Video Diffusion into a "
                   "SPINBOT_VIDEO written clip by clip to disk. Without a duration it makes one "
                   "clip; with duration_seconds, segments or audio it chains clips (each starts "
                   "from the previous clip's last frame, with a short cross-fade) until "
                   "ceil(duration x output_fps) frames are covered. Audio and segments are "
                   "attached to the video for SpinBot Video Combine. With one image per segment "
                   "(a story), each segment gets its own scene, cut where it starts.")
    CATEGORY = CATEGORY
    FUNCTION = "animate"
    RETURN_TYPES = (VIDEO, "IMAGE", "INT")
    RETURN_NAMES = ("video", "last_frame", "frame_count")
    OUTPUT_TOOLTIPS = ("The frames on disk with fps (and audio/segments when connected).",
                       "The video's last frame, to continue from it elsewhere.",
                       "Number of frames written.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "svd_model": (MOTION_MODEL, {"tooltip": "From SpinBot SVD Model."}),
                "image": ("IMAGE", {"tooltip": "The first frame. With 'segments' connected, a "
                                               "batch of one image per segment (SpinBot Stage "
                                               "Image with segments) gives each segment its own "
                                               "scene, cut where the segment starts; otherwise "
                                               "only the first image is used."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 2048, "step": 64, "tooltip":
                                  "Video width; rounded down to a multiple of 64 (SVD trained at "
                                  "1024x576)."}),
                "height": ("INT", {"default": 576, "min": 64, "max": 2048, "step": 64, "tooltip":
                                   "Video height; rounded down to a multiple of 64."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How the image meets the "
                        "video size: crop fills and centre-crops, pad letterboxes on black, "
                        "stretch ignores the aspect ratio."}),
                "frames": ("INT", {"default": 0, "min": 0, "max": 128, "tooltip": "Frames per "
                                   "clip; 0 uses the model's own (14 for SVD, 25 for SVD-XT)."}),
                "fps_conditioning": ("INT", {"default": 6, "min": 1, "max": 60, "tooltip":
                                     "The frame rate SVD is told the clip has (a motion hint, "
                                     "not the output rate)."}),
                "motion_bucket_id": ("INT", {"default": 127, "min": 1, "max": 1023, "tooltip":
                                     "More motion with higher values."}),
                "noise_aug_strength": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1.0,
                                       "step": 0.01, "tooltip": "Noise added to the first frame: "
                                       "more gives more motion and less likeness."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200, "tooltip":
                                  "Denoising steps per clip."}),
                "min_guidance": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                           "tooltip": "Guidance on the first frame (rises "
                                           "linearly to max_guidance on the last)."}),
                "max_guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                           "tooltip": "Guidance on the last frame."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                                 "Clip k of a chain uses seed + k."}),
                "decode_chunk_size": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                                      "Frames the VAE decodes at once; 0: the memory policy "
                                      "decides (8, or 2 under the 16 GB policy, which also "
                                      "caps larger values)."}),
                "output_fps": ("FLOAT", {"default": 8.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                         "round": 0.001,
                                         "tooltip": "Frame rate of the video; each generated "
                                         "frame is one video frame."}),
            },
            "optional": {
                "duration_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0,
                                     "step": 0.01, "tooltip": "Length to cover in seconds; 0 "
                                     "takes it from segments or audio, or makes one clip."}),
                "segments": (SEGMENTS_TYPE, {"tooltip": "Narration segments (from the script or "
                             "voice stage): the video covers up to the last segment's end."}),
                "audio": ("AUDIO", {"tooltip": "Narration audio: the video covers its length "
                                    "and carries it."}),
                "crossfade": ("INT", {"default": 3, "min": 0, "max": 24, "tooltip": "Frames over "
                              "which each chained clip fades in from the previous clip's last "
                              "frame."}),
            },
        }

    def animate(self, svd_model: MotionModel, image: torch.Tensor, width: int, height: int,
                fit: str, frames: int, fps_conditioning: int, motion_bucket_id: int,
                noise_aug_strength: float, steps: int, min_guidance: float, max_guidance: float,
                seed: int, decode_chunk_size: int, output_fps: float,
                duration_seconds: float = 0.0, segments=None, audio: dict | None = None,
                crossfade: int = 3):
        settings = MotionSettings(
            width=int(width), height=int(height), fit=fit, frames=int(frames),
            fps_conditioning=int(fps_conditioning), motion_bucket_id=int(motion_bucket_id),
            noise_aug_strength=float(noise_aug_strength), steps=int(steps),
            min_guidance=float(min_guidance), max_guidance=float(max_guidance), seed=int(seed),
            decode_chunk_size=int(decode_chunk_size), output_fps=float(output_fps),
            crossfade=int(crossfade))
        seg_dicts = [s.to_dict() for s in coerce_segments(segments)] if segments else None
        duration = duration_of(float(duration_seconds or 0.0), audio, seg_dicts)
        video = animate(svd_model, image, settings, duration, audio=audio, segments=seg_dicts,
                        model_key=f"{svd_model.name}|{svd_model.extra.get('stamp', '')}")
        runtime.release_memory()
        last = torch.from_numpy(video.read(video.frame_count - 1)).float().div(255.0)
        return (video, last, video.frame_count)


NODE_CLASS_MAPPINGS = {"SpinBotSVDModel": SpinBotSVDModel, "SpinBotSVD": SpinBotSVD}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotSVDModel": "SpinBot SVD Model", "SpinBotSVD": "SpinBot SVD"}
