"""Identity nodes (see this package's docstring)."""
from __future__ import annotations

import numpy as np
import torch

from .. import runtime
from ..lipsync.faces import DEFAULT_PACK, find_pack, list_detector_packs
from ..media import MediaError
from .faces import face_similarity, load_recognizer

CATEGORY = "SpinBot/identity"


def _pack_identity(pack: str) -> list:
    """The pack's name and content stamp (its files), so a replaced pack re-runs the node."""
    try:
        return [pack, runtime.file_stamp(find_pack(pack))]
    except FileNotFoundError:
        return [pack]


def _frames(images: torch.Tensor, what: str) -> list[np.ndarray]:
    """IMAGE [B,H,W,C] float 0..1 -> uint8 [H,W,3] frames; MediaError naming ``what`` otherwise."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 \
            or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MediaError(f"SpinBot Face Similarity: '{what}' must be an IMAGE batch [B,H,W,C], "
                         f"got {shape}")
    x = images.detach().to("cpu", torch.float32).clamp(0, 1)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    x = (x[..., :3] * 255.0 + 0.5).to(torch.uint8).numpy()
    return [np.ascontiguousarray(f) for f in x]


class SpinBotFaceSimilarity:
    DESCRIPTION = ("How alike the faces of two image batches are: insightface's ArcFace "
                   "recognition model (w600k_r50.onnx in buffalo_l) embeds the largest face of "
                   "every image, aligned on its 5 keypoints, and compares every image of A with "
                   "every image of B by cosine similarity (1 = the same crop; one person's photos "
                   "typically score above ~0.4, different people near 0). Without B, the images "
                   "of A are compared with each other. The training node uses the same measure "
                   "to pick its best checkpoint.")
    CATEGORY = CATEGORY
    FUNCTION = "compare"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("similarity", "report")
    OUTPUT_TOOLTIPS = (
        "Mean cosine similarity of the largest faces over all compared pairs (A x B, or pairs "
        "of different images of A), -1..1. Images without a face are left out.",
        "The mean, min and max, the per-pair matrix (rows A, columns B) and the images in which "
        "no face was found, by index.")

    @classmethod
    def INPUT_TYPES(cls):
        packs = list_detector_packs() or [DEFAULT_PACK]
        return {
            "required": {
                "image_a": ("IMAGE", {"tooltip": "Images with faces, e.g. generated samples or "
                                      "a video's frames. The largest face of each is compared."}),
                "face_pack": (packs, {"default": DEFAULT_PACK if DEFAULT_PACK in packs
                                      else packs[0], "tooltip":
                                      "insightface pack in models/insightface/models/ with a "
                                      "detector and an ArcFace recognition model (buffalo_l: "
                                      "det_10g.onnx + w600k_r50.onnx; antelopev2 works too)."}),
            },
            "optional": {
                "image_b": ("IMAGE", {"tooltip": "Reference images, e.g. the training photos. "
                                      "Leave empty to compare the images of A with each other "
                                      "(how consistent one batch is)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, face_pack: str = "", **_inputs):
        # The result depends on the pack's files, not only its name.
        return repr(_pack_identity(face_pack))

    def compare(self, image_a: torch.Tensor, face_pack: str,
                image_b: torch.Tensor | None = None):
        a = _frames(image_a, "image_a")
        b = None if image_b is None else _frames(image_b, "image_b")
        if b is None and len(a) < 2:
            raise MediaError("SpinBot Face Similarity: 'image_a' has one image and 'image_b' is "
                             "not connected; connect reference images to 'image_b' or give "
                             "'image_a' at least two images to compare with each other")
        recognizer = load_recognizer(face_pack, device=runtime.torch_device().type)
        result = face_similarity(a, b, recognizer,
                                 names_a=[f"a[{i}]" for i in range(len(a))],
                                 names_b=None if b is None else [f"b[{j}]" for j in range(len(b))])
        for side, frames, missing in (("image_a", a, result.missing_a),
                                      ("image_b", b, result.missing_b)):
            if frames is not None and len(missing) == len(frames):
                raise MediaError(f"SpinBot Face Similarity: no face found in any of the "
                                 f"{len(frames)} image(s) of '{side}'; use images with a clear, "
                                 "front-facing face of at least ~64 px")
        report = f"face pack {face_pack}\n" + result.report()
        return {"ui": {"text": [report]}, "result": (float(result.mean), report)}


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotFaceSimilarity": SpinBotFaceSimilarity,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotFaceSimilarity": "SpinBot Face Similarity",
}
