"""Scene nodes (see this package's docstring): SpinBot Camera Motion and SpinBot Transitions."""
from __future__ import annotations

import torch

from ..script.segments import SEGMENTS_TYPE
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo
from .camera import EASINGS, MOTIONS, camera_motion
from .transitions import TRANSITIONS, apply_transitions

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/scene"


class SpinBotCameraMotion:
    DESCRIPTION = ("Ken Burns camera motion over stills: push in, pull out or pan across each "
                   "image, eased and sub-pixel smooth (the crop window moves continuously and is "
                   "resampled bilinearly, so slow moves glide instead of stepping), at any frame "
                   "rate. With segments, segment k gets frames round(start_k x fps) up to where "
                   "the next starts, showing image k (or the one image); the audio's length (else "
                   "the segments' end, else duration_seconds) sets the video's length. Frames go "
                   "to disk a few at a time; a re-run with the same inputs reuses them.")
    CATEGORY = CATEGORY
    FUNCTION = "animate"
    RETURN_TYPES = (VIDEO, "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = (
        "The camera-motion video, carrying the audio and the segments (without segments and "
        "with several images: one segment per image, with empty text, so SpinBot Transitions "
        "finds the cuts).",
        "Frames and path of each segment, and the render speed (or that stored frames were "
        "reused).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The stills: one per segment (image k is shown "
                                     "during segment k) or one for the whole video. Without "
                                     "segments, several images share the length equally. A "
                                     "still of another aspect is cover-fitted (centre crop)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                  "round": 0.001, "tooltip": "Frame rate of the video; any "
                                  "value (23.976, 29.97 ...)."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 1, "tooltip":
                                  "Frame width in pixels; 0 takes the image's (or keeps its "
                                  "aspect when height is set). Odd sizes are kept; Video "
                                  "Combine pads them by one edge column for H.264."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 1, "tooltip":
                                   "Frame height in pixels; 0 takes the image's (or keeps its "
                                   "aspect when width is set)."}),
                "motion": (list(MOTIONS), {"default": "auto", "tooltip":
                           "Camera path of every segment. auto: push in, pan right, pull out, "
                           "pan left, ... in turn (one image for all segments: push in and pull "
                           "out alternate, so the camera never jumps). 'pan left' moves the "
                           "camera left (the picture slides right). static: the whole image, "
                           "still."}),
                "zoom": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "How far the camera moves: push in / pull out "
                                   "magnify by 1+zoom over a segment; pans view the image "
                                   "magnified by 1+zoom and cross its whole spare margin. 0 "
                                   "stands still."}),
                "easing": (list(EASINGS), {"default": "ease in-out", "tooltip":
                           "Speed over each segment. ease in-out: cosine, (1-cos(pi t))/2, "
                           "starts and stops gently; linear: constant speed; ease out: "
                           "quadratic 1-(1-t)^2, starts at full speed and settles."}),
                "duration_seconds": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 3600.0,
                                     "step": 0.01, "tooltip": "Length of the video when neither "
                                     "audio nor segments are connected."}),
            },
            "optional": {
                "segments": (SEGMENTS_TYPE, {"tooltip": "Narration segments (script or voice "
                             "stage): one camera move per segment, cut where each starts; "
                             "carried on the video."}),
                "audio": ("AUDIO", {"tooltip": "The master track: carried on the video, and "
                                    "its length is the video's length."}),
            },
        }

    def animate(self, images: torch.Tensor, fps: float, width: int, height: int, motion: str,
                zoom: float, easing: str, duration_seconds: float, segments=None,
                audio: dict | None = None):
        return camera_motion(images, fps, width, height, motion, zoom, easing,
                             duration_seconds, segments=segments, audio=audio)


class SpinBotTransitions:
    DESCRIPTION = ("Crossfade, fade through black or a plain cut at the segment boundaries of a "
                   "SpinBot video, keeping its frame count, fps, audio and segments (the audio "
                   "clock never moves). A window of duration_seconds is centred on each boundary; "
                   "in a crossfade the outgoing clip blends into the incoming one, each side "
                   "holding its last / first frame where it has none. Works chunk by chunk in "
                   "the video store: chunks away from boundaries are referenced, not copied.")
    CATEGORY = CATEGORY
    FUNCTION = "transition"
    RETURN_TYPES = (VIDEO, "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = (
        "The video with transitions: same frame count, fps, audio and segments as the input.",
        "Boundaries used, windows shrunk because segments are short, and how many stored "
        "chunks were rewritten or referenced.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video (or a core VIDEO) with scene "
                                                   "cuts, e.g. from SpinBot Camera Motion or "
                                                   "SpinBot SVD with segments."}),
                "transition": (list(TRANSITIONS), {"default": "crossfade", "tooltip":
                               "crossfade: the scenes blend; fade through black: out to black "
                               "at the boundary and back in; cut: no change."}),
                "duration_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0,
                                     "step": 0.01, "tooltip": "Length of each transition, "
                                     "centred on the boundary; shrunk where a segment is "
                                     "shorter (the report says where)."}),
            },
            "optional": {
                "segments": (SEGMENTS_TYPE, {"tooltip": "Boundaries to use (each segment's "
                             "start, on the frame round(start x fps)); default: the video's "
                             "own segments."}),
            },
        }

    def transition(self, video: SpinBotVideo, transition: str, duration_seconds: float,
                   segments=None):
        return apply_transitions(as_spinbot_video(video), transition, duration_seconds, segments)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotCameraMotion": SpinBotCameraMotion,
    "SpinBotTransitions": SpinBotTransitions,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotCameraMotion": "SpinBot Camera Motion",
    "SpinBotTransitions": "SpinBot Transitions",
}
