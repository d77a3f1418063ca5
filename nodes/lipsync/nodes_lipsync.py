"""SpinBot Wav2Lip: lip-sync a face (frames, one still image, or a SPINBOT_VIDEO) to speech."""
from __future__ import annotations

import torch

from .. import runtime
from ..manifest import require_model
from ..media import MediaError
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo, load_video
from .engine import LOOP_MODES, FrameSource, LipSyncSettings, get_wav2lip, lip_sync, video_key
from .faces import (DEFAULT_PACK, NO_FACE_POLICIES, Pads, find_pack, list_detector_packs,
                    load_detector, pack_identity)
from .paste import RESIZE_MODES, MouthRegion

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/lipsync"
FOLDER = "lipsync"
SUFFIXES = (".pth", ".pt", ".safetensors")
DEFAULT_MODEL = "wav2lip_gan.pth"


def _model_choices() -> list[str]:
    # An empty dropdown cannot be saved in a workflow: offer the recommended name, whose absence
    # then gives an error saying where to put it and where to get it.
    return runtime.list_models(FOLDER, SUFFIXES) or [DEFAULT_MODEL]


def _upscale_choices() -> list[str]:
    from ..upscale.model import list_upscalers

    return [*RESIZE_MODES, *list_upscalers()]


def _crop_upscaler_identity(crop_upscale: str) -> str:
    """The crop upscaler's choice, with its file's stamp when it is a model."""
    if crop_upscale in RESIZE_MODES:
        return crop_upscale
    from ..upscale.model import FOLDER as UPSCALE_FOLDER

    return runtime.model_stamp(UPSCALE_FOLDER, crop_upscale)


class _CropUpscaler:
    """An upscale_models file run on the 96x96 generated crops before they are resized."""

    def __init__(self, name: str, device: torch.device):
        from ..upscale.model import load_upscaler, pick_dtype

        self.upscaler = load_upscaler(name)
        self.dtype = pick_dtype(self.upscaler, "auto", device)
        self.upscaler.to(device, self.dtype)

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        return self.upscaler.forward(crops.to(self.dtype))

    def close(self) -> None:
        self.upscaler.to(runtime.offload_device(), torch.float32)


class SpinBotWav2Lip:
    DESCRIPTION = (
        "Lip-syncs a face to speech with Wav2Lip. Faces are found with an insightface detector "
        "pack (models/insightface/models/<pack>), their boxes smoothed over time; only the "
        "mouth region is replaced, feathered and colour-matched, so the rest of every frame "
        "stays exactly as it was. Give frames or one still image (IMAGE) or a SPINBOT_VIDEO. "
        "The result has ceil(speech seconds x fps) frames and carries the speech; a shorter "
        "video is looped. Frames are written to disk as they are made, so long clips fit.")
    CATEGORY = CATEGORY
    FUNCTION = "lipsync"
    RETURN_TYPES = (VIDEO,)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The lip-synced video with the speech as its audio track.",)

    @classmethod
    def INPUT_TYPES(cls):
        models = _model_choices()
        packs = list_detector_packs() or [DEFAULT_PACK]
        return {
            "required": {
                "model_name": (models, {"default": DEFAULT_MODEL if DEFAULT_MODEL in models
                                        else models[0], "tooltip":
                               f"Wav2Lip checkpoint in ComfyUI's models/{FOLDER} folder. "
                               "wav2lip_gan.pth gives sharper mouths; wav2lip.pth slightly "
                               "more accurate sync."}),
                "face_detector": (packs, {"default": DEFAULT_PACK if DEFAULT_PACK in packs
                                          else packs[0], "tooltip":
                                  "insightface pack in models/insightface/models/ (buffalo_l, "
                                  "antelopev2, ...); only its face detector is used."}),
                "audio": ("AUDIO", {"tooltip": "The speech. Any sample rate and channel "
                                               "count; the output carries it unchanged."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                  "round": 0.001,
                                  "tooltip": "Frame rate for IMAGE input (Wav2Lip was trained at "
                                  "25). A SPINBOT_VIDEO keeps its own frame rate."}),
                "batch_size": ("INT", {"default": 16, "min": 1, "max": 512, "tooltip":
                                       "Frames through the model at once. Larger is faster on a "
                                       "GPU and uses more memory; the result is the same."}),
                "face_index": ("INT", {"default": -1, "min": -1, "max": 32, "tooltip":
                                       "Which face to animate: -1 the largest, 0 the leftmost, "
                                       "1 the next one to the right, ..."}),
                "pad_top": ("INT", {"default": 0, "min": -256, "max": 512, "tooltip":
                                    "Pixels added above the detected face box."}),
                "pad_bottom": ("INT", {"default": 10, "min": -256, "max": 512, "tooltip":
                                       "Pixels added below the face box; include the chin "
                                       "(upstream's default is 10)."}),
                "pad_left": ("INT", {"default": 0, "min": -256, "max": 512, "tooltip":
                                     "Pixels added left of the face box."}),
                "pad_right": ("INT", {"default": 0, "min": -256, "max": 512, "tooltip":
                                      "Pixels added right of the face box."}),
                "smoothing_window": ("INT", {"default": 5, "min": 1, "max": 61, "tooltip":
                                             "Frames over which face boxes are averaged (centred) "
                                             "to stop the mouth jittering; 1 turns it off. Lower "
                                             "it for fast head motion."}),
                "no_face": (list(NO_FACE_POLICIES), {"default": "pass through", "tooltip":
                            "Frames where no face is found: 'pass through' leaves them unchanged, "
                            "'error' stops and lists them. With no face in any frame it is "
                            "always an error."}),
                "loop_mode": (list(LOOP_MODES), {"default": "ping-pong", "tooltip":
                              "When the speech is longer than the video: play it forward and "
                              "back (no jump), restart it, or hold the last frame."}),
                "mouth_feather": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.05,
                                            "tooltip": "Softness of the mouth patch's edge, as a "
                                            "fraction of its size. 0 is a hard edge."}),
                "color_match": ("BOOLEAN", {"default": True, "tooltip":
                                            "Match the generated mouth's colours to the skin "
                                            "around it (hides the colour shift of the model)."}),
                "crop_upscale": (_upscale_choices(), {"default": "bicubic", "tooltip":
                                 "How the 96x96 generated face is enlarged to the face box: a "
                                 "bicubic or bilinear resize, or a model from upscale_models "
                                 "(sharper, slower) run on the crop first."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Frames of the face, or one still image (animated "
                                               "for the whole speech). Connect this or 'video'."}),
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video (or a core VIDEO) of the face "
                                                   "(read from disk chunk by chunk). Used "
                                                   "instead of 'image' when both are connected."}),
                "detect_every": ("INT", {"default": 1, "min": 1, "max": 30, "tooltip":
                                 "Run the face detector on every n-th frame of a video and "
                                 "interpolate the boxes in between: n times less detection work "
                                 "for a steady head. 1 detects every frame. A still image is "
                                 "always detected once."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model_name: str = "", face_detector: str = "", crop_upscale: str = "",
                   **_inputs):
        # The result depends on the files' content, not just their names: the Wav2Lip file, the
        # detector pack and the crop upscaler's file.
        return repr((runtime.model_stamp(FOLDER, model_name), pack_identity(face_detector),
                     _crop_upscaler_identity(crop_upscale)))

    def lipsync(self, model_name: str, face_detector: str, audio: dict, fps: float,
                batch_size: int, face_index: int, pad_top: int, pad_bottom: int, pad_left: int,
                pad_right: int, smoothing_window: int, no_face: str, loop_mode: str,
                mouth_feather: float, color_match: bool, crop_upscale: str,
                image: torch.Tensor | None = None, video: SpinBotVideo | None = None,
                detect_every: int = 1):
        if image is None and video is None:
            raise MediaError("SpinBot Wav2Lip: connect 'image' (frames or one still image) or "
                             "'video'")
        source = FrameSource(images=image, video=as_spinbot_video(video), fps=fps)
        resize = crop_upscale if crop_upscale in RESIZE_MODES else "bicubic"
        settings = LipSyncSettings(
            fps=source.fps, batch_size=int(batch_size), face_index=int(face_index),
            pads=Pads(int(pad_top), int(pad_bottom), int(pad_left), int(pad_right)),
            smoothing_window=int(smoothing_window), no_face=no_face, loop_mode=loop_mode,
            mouth=MouthRegion(feather=float(mouth_feather)), color_match=bool(color_match),
            resize_mode=resize, detect_every=max(1, int(detect_every)))
        model_path = require_model(FOLDER, model_name)
        find_pack(face_detector)  # a missing pack fails before any work, naming the folder
        key = video_key(source, audio, settings,
                        [runtime.file_stamp(model_path), _crop_upscaler_identity(crop_upscale)],
                        pack_identity(face_detector))
        existing = load_video(key)  # the same inputs were lip-synced before (a re-queue)
        if existing is not None:
            return (existing,)

        device = runtime.torch_device()
        model = detector = upscaler = None
        try:
            detector = load_detector(face_detector, device=device.type)
            model = get_wav2lip(model_path, device, runtime.torch_dtype(device, allow_bf16=False))
            if crop_upscale not in RESIZE_MODES:
                upscaler = _CropUpscaler(crop_upscale, device)
            result = lip_sync(model, detector, source, audio, settings, key=key,
                              crop_upscaler=upscaler)
        finally:
            if upscaler is not None:
                upscaler.close()
            del model, detector, upscaler
            runtime.release_memory()
        return (result,)


NODE_CLASS_MAPPINGS = {"SpinBotWav2Lip": SpinBotWav2Lip}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotWav2Lip": "SpinBot Wav2Lip"}
