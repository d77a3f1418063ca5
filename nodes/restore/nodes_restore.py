"""Restore nodes (see this package's docstring)."""
from __future__ import annotations

import torch

from .. import runtime
from ..lipsync.faces import (DEFAULT_PACK, find_pack, list_detector_packs, load_detector,
                             pack_identity)
from ..media import MediaError
from ..video.load import VIDEO_INPUT, as_spinbot_video
from .model import DEFAULT_MODEL, FOLDER, PRECISIONS, list_restorers, load_restorer, pick_dtype
from .restore import RestoreSettings, RestoreStats, restore_images, restore_video

VIDEO = "SPINBOT_VIDEO"
RESTORER = "SPINBOT_FACE_RESTORE_MODEL"
CATEGORY = "SpinBot/restore"
# Frame rate of the video output made from an IMAGE input, which carries none (SpinBot Upscale's).
IMAGE_FPS = 25.0
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _model_choices() -> list[str]:
    # An empty dropdown cannot be saved in a workflow: offer the recommended file, whose absence
    # then gives an error saying where to put it and where to download it.
    return list_restorers() or [DEFAULT_MODEL]


class SpinBotFaceRestoreModel:
    DESCRIPTION = ("Loads a face restoration model from ComfyUI's models/facerestore_models "
                   "folder (the folder facerestore_cf and Impact Pack use) with spandrel: "
                   "GFPGANv1.4 / v1.3 and RestoreFormer; CodeFormer too when the "
                   "spandrel_extra_arches package is installed. A file of another kind (an "
                   "upscaler, say) is an error naming what it is. The model is cached.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (RESTORER, "STRING")
    RETURN_NAMES = ("face_restore_model", "report")
    OUTPUT_TOOLTIPS = ("The loaded face restoration model, for SpinBot Face Restore.",
                       "The file's architecture as spandrel detected it.")

    @classmethod
    def INPUT_TYPES(cls):
        choices = _model_choices()
        default = DEFAULT_MODEL if DEFAULT_MODEL in choices else choices[0]
        return {"required": {
            "model_name": (choices, {"default": default, "tooltip":
                           f"Face restoration model in models/{FOLDER}: GFPGANv1.4.pth "
                           "(recommended), RestoreFormer.pth, or codeformer.pth with "
                           "spandrel_extra_arches installed."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name: str = "", **_inputs):
        # A replaced file with the same name must load again: size and mtime stand for content.
        return runtime.model_stamp(FOLDER, model_name)

    def load(self, model_name: str):
        model = load_restorer(model_name)
        return (model, model.describe())


class SpinBotFaceRestore:
    DESCRIPTION = ("Restores faces in frames: each face found by the insightface detector is "
                   "aligned on its five keypoints to the 512x512 FFHQ template, restored by the "
                   "model (GFPGAN, RestoreFormer, CodeFormer), warped back and blended in with "
                   "the lip-sync stage's feathered mask, by 'strength'. Pixels outside the mask "
                   "and frames without a face stay exactly as they were. A SPINBOT_VIDEO streams "
                   "chunk by chunk (audio and segments kept); IMAGE in gives IMAGE out. Both "
                   "outputs always carry a value. The same inputs reuse the earlier result.")
    CATEGORY = CATEGORY
    FUNCTION = "restore"
    RETURN_TYPES = ("IMAGE", VIDEO, "STRING")
    RETURN_NAMES = ("images", "video", "report")
    OUTPUT_TOOLTIPS = (
        "The restored frames of 'images'. With only 'video' connected: the restored video's "
        "first frame, as a preview (SpinBot Video to Images reads any range of its frames).",
        "The restored video with the input's fps, audio and segments. With only 'images' "
        f"connected: the restored frames stored as a video at {IMAGE_FPS:g} fps.",
        "Model and precision, frames, faces restored per frame, frames without a face, time.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        packs = list_detector_packs() or [DEFAULT_PACK]
        return {
            "required": {
                "face_restore_model": (RESTORER, {"tooltip": "From SpinBot Face Restore "
                                                  "Model."}),
                "face_detector": (packs, {"default": DEFAULT_PACK if DEFAULT_PACK in packs
                                          else packs[0], "tooltip":
                                          "insightface pack in models/insightface/models whose "
                                          "SCRFD detector (det_10g.onnx) finds the faces and "
                                          "their five keypoints."}),
                "strength": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "0 keeps the original frames, 1 pastes the "
                                       "restored face fully inside the mask. Below 1 keeps some "
                                       "of the original skin texture."}),
                "only_largest_face": ("BOOLEAN", {"default": True, "tooltip":
                                      "On: restore only the largest face of each frame (the "
                                      "speaker). Off: every detected face."}),
                "codeformer_fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0,
                                                  "step": 0.05, "tooltip":
                                                  "CodeFormer only: 0 restores most, 1 stays "
                                                  "closest to the input face. Other models "
                                                  "ignore it."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip":
                              "auto: bf16 on a GPU where the model allows it (spandrel marks "
                              "these models as not fp16-safe), fp32 on CPU."}),
                "faces_per_batch": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip":
                                            "Aligned faces sent through the model at once; "
                                            "lowered automatically when memory runs out."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to restore, [B,H,W,C]. Connect this "
                                                "or 'video'."}),
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video (or a core VIDEO) to "
                                                "restore from disk, chunk by chunk. Connect "
                                                "this or 'images'."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, face_detector: str = "", **_inputs):
        # The model's file stamp travels in its ModelRef key; the detector pack is a name here,
        # so a replaced pack must change the cache key itself.
        return repr(pack_identity(face_detector))

    def restore(self, face_restore_model, face_detector: str, strength: float,
                only_largest_face: bool, codeformer_fidelity: float, precision: str,
                faces_per_batch: int, images: torch.Tensor | None = None, video=None):
        from .. import model_cache
        from ..upscale.nodes_upscale import images_as_video

        video = as_spinbot_video(video)
        if images is None and video is None:
            raise MediaError("SpinBot Face Restore: connect 'images' or 'video'")
        settings = RestoreSettings(strength=float(strength),
                                   only_largest_face=bool(only_largest_face),
                                   fidelity=float(codeformer_fidelity), precision=precision,
                                   faces_per_batch=int(faces_per_batch))
        find_pack(face_detector)  # a missing pack fails before any work, naming the folder
        restorer = model_cache.resolve(face_restore_model)
        device = runtime.torch_device()
        detector = load_detector(face_detector, device=device.type)
        stats = RestoreStats()
        lines = [f"SpinBot Face Restore: {restorer.describe()}, "
                 f"{_DTYPE_NAMES[pick_dtype(restorer, precision, device)]} on "
                 f"{device.type}; detector {face_detector}; strength {settings.strength:g}, "
                 f"{'largest face' if settings.only_largest_face else 'all faces'}"]
        out_images = out_video = None
        if images is not None:
            out_images = restore_images(restorer, detector, images, settings, stats, device)
        if video is not None:
            out_video, reused = restore_video(restorer, detector, video, settings, stats,
                                              pack_identity(face_detector), device)
            if reused:
                lines.append("video: strength 0, the input video is passed on" if
                             settings.strength <= 0 else "video: reused the finished result "
                             "of the same inputs")
        if stats.frames:
            lines.append(stats.summary() + f" in {stats.seconds:.1f} s")
        # ComfyUI does not tell a node which outputs are linked, and a linked None reaches the
        # next node as a broken input: each output is derived from the other when missing.
        if out_video is None:
            out_video = images_as_video(out_images, IMAGE_FPS)
        if out_images is None:
            out_images = torch.from_numpy(out_video.read(0, 1)).float().div_(255.0)
        return (out_images, out_video, "\n".join(lines))


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotFaceRestoreModel": SpinBotFaceRestoreModel,
    "SpinBotFaceRestore": SpinBotFaceRestore,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotFaceRestoreModel": "SpinBot Face Restore Model",
    "SpinBotFaceRestore": "SpinBot Face Restore",
}
