"""Interpolate nodes (see this package's docstring)."""
from __future__ import annotations

from .. import metrics, runtime
from ..script.segments import SEGMENTS_TYPE
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo
from .engine import MAX_MULTIPLIER, InterpolationSettings, interpolate_video
from .model import DEFAULT_MODEL, FOLDER, list_rife_models, load_rife

VIDEO = "SPINBOT_VIDEO"
RIFE = "SPINBOT_RIFE"
CATEGORY = "SpinBot/interpolate"


def _model_choices() -> list[str]:
    # An empty dropdown cannot be saved in a workflow: offer the recommended file, whose absence
    # then gives an error saying where to put it and where to download it.
    return list_rife_models() or [DEFAULT_MODEL]


class SpinBotFrameInterpolationModel:
    DESCRIPTION = ("Loads a RIFE 4.x frame interpolation model from ComfyUI's "
                   f"models/{FOLDER} folder: rife47.pth / rife49.pth (recommended; the files "
                   "ComfyUI-Frame-Interpolation uses), rife46.pth or rife417.pth, as .pth or "
                   ".safetensors. The version is read from the file's keys; a file of another "
                   "kind is an error listing the keys that differ. The model is cached.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (RIFE, "STRING")
    RETURN_NAMES = ("rife_model", "report")
    OUTPUT_TOOLTIPS = ("The loaded RIFE model, for SpinBot Frame Interpolation.",
                       "Which RIFE version the file holds and its block widths.")

    @classmethod
    def INPUT_TYPES(cls):
        choices = _model_choices()
        default = DEFAULT_MODEL if DEFAULT_MODEL in choices else choices[0]
        return {"required": {
            "model_name": (choices, {"default": default, "tooltip":
                           f"RIFE checkpoint in models/{FOLDER}. rife47.pth and rife49.pth "
                           "are the usual choices."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name: str = "", **_inputs):
        # A replaced file with the same name must load again: size and mtime stand for content.
        return runtime.model_stamp(FOLDER, model_name)

    def load(self, model_name: str):
        model = load_rife(model_name)
        return (model, model.describe())


class SpinBotFrameInterpolation:
    DESCRIPTION = ("Raises a video's frame rate with RIFE, SVD's 8 fps x3 to 24 fps say: n "
                   "frames become exactly n x multiplier frames at fps x multiplier, the "
                   "original frames unchanged and the last one held, so the duration and the "
                   "audio sync do not move. Streams through the video store chunk by chunk. "
                   "Scene cuts are never blended: at segment boundaries and detected hard cuts "
                   "the in-between frames repeat the last frame before the cut. fp16 on CUDA, "
                   "fp32 on CPU. The same inputs reuse the earlier result.")
    CATEGORY = CATEGORY
    FUNCTION = "interpolate"
    RETURN_TYPES = (VIDEO, "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = (
        "The video at fps x multiplier with n x multiplier frames, with the input's audio and "
        "segments.",
        "Frames in/out, fps, the cuts kept (segment boundaries and detected ones, as times) and "
        "the speed.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (VIDEO_INPUT, {"tooltip": "The video to interpolate (a SpinBot video or a "
                                                  "core VIDEO)."}),
                "rife_model": (RIFE, {"tooltip": "From SpinBot Frame Interpolation Model."}),
                "multiplier": ("INT", {"default": 3, "min": 2, "max": MAX_MULTIPLIER, "tooltip":
                                       "Output frames per input frame: 8 fps x3 = 24 fps, "
                                       "x4 = 32 fps; 6 fps x4 = 24 fps."}),
                "scale": ("FLOAT", {"default": 1.0, "min": 0.25, "max": 4.0, "step": 0.25,
                                    "tooltip": "RIFE's flow scale, a power of two: 1.0 up to "
                                    "1080p, 0.5 for 4K or very fast motion (coarser flow), 2.0 "
                                    "for small frames with fine motion."}),
                "scene_cut_threshold": ("FLOAT", {"default": 40.0, "min": 0.0, "max": 255.0,
                                                  "step": 1.0, "tooltip":
                                                  "A pair of frames whose mean absolute "
                                                  "difference (0-255 levels, all pixels and "
                                                  "channels) is above this is a cut and is not "
                                                  "blended. Motion within a shot stays well "
                                                  "below 30; a hard cut is typically 50-100. "
                                                  "0 turns detection off (segment boundaries "
                                                  "still count)."}),
            },
            "optional": {
                "segments": (SEGMENTS_TYPE, {"tooltip": "Segments whose boundaries are cuts, "
                                             "instead of the video's own segments."}),
            },
        }

    def interpolate(self, video: SpinBotVideo, rife_model, multiplier: int, scale: float,
                    scene_cut_threshold: float, segments=None):
        video = as_spinbot_video(video)
        settings = InterpolationSettings(multiplier=int(multiplier), scale=float(scale),
                                         scene_cut_threshold=float(scene_cut_threshold))
        out, report = interpolate_video(rife_model, video, settings, segments=segments)
        if not report.reused:
            metrics.add_frames(report.interpolated_frames)
        return (out, report.text())


NODE_CLASS_MAPPINGS = {
    "SpinBotFrameInterpolationModel": SpinBotFrameInterpolationModel,
    "SpinBotFrameInterpolation": SpinBotFrameInterpolation,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SpinBotFrameInterpolationModel": "SpinBot Frame Interpolation Model",
    "SpinBotFrameInterpolation": "SpinBot Frame Interpolation",
}
