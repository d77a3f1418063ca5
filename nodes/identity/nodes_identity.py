"""Identity nodes (see this package's docstring)."""
from __future__ import annotations

import numpy as np
import torch

from .. import runtime
from ..lipsync.faces import DEFAULT_PACK, list_detector_packs, pack_identity
from ..media import MediaError
from .dataset import SEVERAL_FACES
from .faces import face_similarity, load_recognizer

CATEGORY = "SpinBot/identity"


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
    DESCRIPTION = ("Measures how alike the faces of two image batches are: the cosine "
                   "similarity of insightface ArcFace embeddings of the largest face in each "
                   "image. The pack's recognition model (w600k_r50.onnx in buffalo_l) embeds each "
                   "face aligned on its 5 keypoints; every image of A is compared with every "
                   "image of B (1 = the same crop; one person's photos typically score above "
                   "~0.4, different people near 0). Without B, the images of A are compared with "
                   "each other. The training node uses the same measure to pick its best "
                   "checkpoint.")
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
        return repr(pack_identity(face_pack))

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


# --------------------------------------------------------------------------- training

def _photo_list(photos, photo_folder: str) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 [H,W,3]) from the IMAGE batch and/or the folder under input/."""
    from .dataset import IdentityDataError, load_photo_folder

    out: list[tuple[str, np.ndarray]] = []
    if photo_folder and photo_folder.strip():
        out += load_photo_folder(photo_folder.strip())
    if photos is not None:
        out += [(f"photos[{i}]", f) for i, f in enumerate(_frames(photos, "photos"))]
    if not out:
        raise IdentityDataError("SpinBot Train Identity LoRA: no photos: connect an IMAGE batch to "
                                "'photos' or name a folder inside ComfyUI's input folder in "
                                "'photo_folder' (5-20 photos of the person)")
    return out


def _lora_output_path(name: str) -> tuple[str, str]:
    """(file name, full path) in the first loras folder; the path provably stays inside it."""
    import os

    from .kohya import LoRAFileError, safe_file_name

    file_name = safe_file_name(name)
    folder = os.path.realpath(runtime.model_folder_paths("loras")[0])
    path = os.path.realpath(os.path.join(folder, file_name))
    if os.path.dirname(path) != folder:
        raise LoRAFileError(f"LoRA name '{name}' leaves the loras folder ({folder}).")
    return file_name, path


class SpinBotTrainIdentityLoRA:
    DESCRIPTION = ("Trains an identity LoRA from 5-20 photos of one person (an IMAGE batch or a "
                   "folder under input/): faces are found with the insightface pack and cropped "
                   "with context (plus a few wider crops), captioned 'photo of <trigger> person', "
                   "and a rank-r LoRA on the UNet attention (optionally the text encoder) is "
                   "trained with peft on the loaded SD 1.5 / SDXL model (gradient checkpointing, "
                   "mixed precision, 8-bit AdamW when bitsandbytes is installed). Every "
                   "checkpoint renders fixed-seed samples whose face similarity to the photos "
                   "picks the best one, which is written to models/loras/<name>.safetensors "
                   "(kohya format: ComfyUI's LoraLoader and SpinBot Identity LoRA read it). Cancel "
                   "keeps the last checkpoint; running again with the same inputs resumes there, "
                   "and a finished run is reused.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("lora_name", "trigger_word", "samples", "report")
    OUTPUT_TOOLTIPS = (
        "The LoRA's file name in models/loras (pick it in SpinBot Identity LoRA or LoraLoader).",
        "The trigger word to put in prompts.",
        "The kept checkpoint's fixed-seed samples ('photo of <trigger> person').",
        "Photos used/dropped, loss, s/step and the table of checkpoints with their face "
        "similarity.")

    @classmethod
    def INPUT_TYPES(cls):
        from .train import PRESETS

        packs = list_detector_packs() or [DEFAULT_PACK]
        preset_text = "; ".join(f"{k}: rank {int(v['rank'])}, alpha {v['alpha']:g}, lr "
                                f"{v['learning_rate']:g}, {int(v['steps'])} steps"
                                for k, v in PRESETS.items())
        return {
            "required": {
                "image_model": ("SPINBOT_IMAGE_MODEL", {"tooltip": "The SD 1.5 or SDXL base "
                                "model from SpinBot Image Model (the LoRA is trained for it)."}),
                "trigger_word": ("STRING", {"default": "ohwx", "tooltip": "A rare token the LoRA "
                                 "binds to this person; prompts then say 'photo of ohwx person'."}),
                "name": ("STRING", {"default": "my-identity", "tooltip": "File name of the LoRA "
                         "in models/loras (letters, digits, spaces, _ . , ( ) + -; no folders)."}),
                "preset": (list(PRESETS), {"default": "standard", "tooltip": preset_text +
                           "; resolution: 512 (SD 1.5) / 1024 (SDXL). Any value below that is "
                           "not 0 overrides the preset."}),
                "photo_folder": ("STRING", {"default": "", "tooltip": "A folder inside ComfyUI's "
                                 "input folder with the photos (and optional <photo>.txt "
                                 "captions); empty when 'photos' is connected."}),
                "face_pack": (packs, {"default": DEFAULT_PACK if DEFAULT_PACK in packs else packs[0],
                              "tooltip": "insightface pack in models/insightface/models/ (face "
                              "detector + ArcFace recogniser, e.g. buffalo_l)."}),
                "rank": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "LoRA rank "
                         "(0 = preset). Higher learns more detail and makes a larger file."}),
                "alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                          "tooltip": "LoRA alpha (0 = preset); the update is scaled by alpha/rank."}),
                "learning_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.1, "step": 1e-5,
                                  "round": False, "tooltip": "AdamW learning rate, constant "
                                  "(0 = preset, 1e-4)."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 20000, "tooltip":
                          "Training steps, batch size 1 (0 = preset). Raising it later continues "
                          "a finished run."}),
                "resolution": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 64,
                               "tooltip": "Training size in pixels, a multiple of 64 "
                               "(0 = 512 for SD 1.5, 1024 for SDXL)."}),
                "checkpoint_every": ("INT", {"default": 0, "min": 0, "max": 20000, "tooltip":
                                     "Save a checkpoint, render samples and score them every N "
                                     "steps (0 = a quarter of the steps)."}),
                "train_text_encoder": ("BOOLEAN", {"default": False, "tooltip": "Also put LoRA "
                                       "layers on the CLIP text encoder(s): stronger binding of "
                                       "the trigger word, more memory."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip":
                         "Seeds the LoRA init, photo order, noise and timesteps (same seed, same "
                         "LoRA) and the sample renders."}),
                "samples": ("INT", {"default": 2, "min": 0, "max": 8, "tooltip": "Sample images "
                            "rendered at every checkpoint (0: none; the last checkpoint is kept)."}),
                "sample_steps": ("INT", {"default": 20, "min": 1, "max": 100, "tooltip":
                                 "Denoising steps of each sample render."}),
            },
            "optional": {
                "photos": ("IMAGE", {"tooltip": "Photos of the person as an IMAGE batch (e.g. "
                           "from Load Image); added to the folder's photos."}),
                "several_faces": (list(SEVERAL_FACES), {"default": SEVERAL_FACES[0], "tooltip":
                                  "Photos with more than one face (group photos): 'dominant' uses "
                                  "the largest face only when it is clearly bigger than the "
                                  "others and drops the photo with a note otherwise; 'largest' "
                                  "always uses the largest face (make sure it is the person)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, photo_folder: str = "", face_pack: str = "", name: str = "", **_inputs):
        """The photo folder's files (a replaced photo re-runs the node), the face pack's files,
        and whether the LoRA file is still there (a deleted one is written again)."""
        import os

        from .dataset import IdentityDataError, _photo_folder

        parts = [repr(pack_identity(face_pack))]
        if photo_folder and photo_folder.strip():
            try:
                parts.append(runtime.file_stamp(_photo_folder(photo_folder.strip())[1]))
            except IdentityDataError:
                parts.append(f"{photo_folder}|missing")
        try:
            parts.append(str(os.path.isfile(_lora_output_path(name)[1])))
        except ValueError:
            parts.append(f"{name}|bad")
        return "|".join(parts)

    def train(self, image_model, trigger_word, name, preset, photo_folder, face_pack, rank=0,
              alpha=0.0, learning_rate=0.0, steps=0, resolution=0, checkpoint_every=0,
              train_text_encoder=False, seed=0, samples=2, sample_steps=20, photos=None,
              several_faces="dominant"):
        import os

        from .dataset import load_folder_captions, prepare_photos
        from .faces import compare_embeddings, embed_largest
        from .train import resolve_settings, run_key, model_identity, train_identity_lora

        file_name, out_path = _lora_output_path(name)
        settings = resolve_settings(preset, image_model.arch, rank=int(rank), alpha=float(alpha),
                                    learning_rate=float(learning_rate), steps=int(steps),
                                    resolution=int(resolution),
                                    checkpoint_every=int(checkpoint_every),
                                    train_text_encoder=bool(train_text_encoder), seed=int(seed),
                                    samples=int(samples), sample_steps=int(sample_steps))
        raw = _photo_list(photos, photo_folder)
        captions = load_folder_captions(photo_folder.strip()) if photo_folder.strip() else None
        device = runtime.torch_device().type
        notes: list[str] = []
        try:
            recognizer = load_recognizer(face_pack, device=device)
            detector = recognizer
        except Exception as exc:  # noqa: BLE001 - a pack without recognition: detector only
            from ..lipsync.faces import load_detector

            recognizer = None
            detector = load_detector(face_pack, device=device)
            notes.append(f"no face recogniser in '{face_pack}' ({exc}): the last checkpoint is kept")
        photo_set = prepare_photos(raw, trigger_word, settings.resolution, detector, recognizer,
                                   captions=captions, several_faces=several_faces)
        similarity = None
        if recognizer is not None:
            faces = [i.image for i in photo_set.items if i.kind == "face"]
            reference = embed_largest(faces, recognizer)

            def similarity(images):
                result = compare_embeddings(embed_largest(list(images), recognizer), reference)
                return float(result.mean) if result.pairs else None
        trigger = " ".join(trigger_word.split())
        key = run_key(model_identity(image_model), image_model.arch, trigger,
                      photo_set.dataset_hash, settings)
        run_dir = os.path.join(runtime.output_dir(), "spinbot_identity_runs",
                               f"{os.path.splitext(file_name)[0]}-{key}")
        result = train_identity_lora(image_model, photo_set.items, trigger, settings, out_path,
                                     run_dir, name=os.path.splitext(file_name)[0],
                                     data_hash=photo_set.dataset_hash, similarity=similarity,
                                     notes=notes)
        report = "\n".join([photo_set.report(), result.report(), f"run folder: {run_dir}"])
        images = torch.from_numpy(result.samples.astype(np.float32) / 255.0)
        return {"ui": {"text": [report]}, "result": (file_name, trigger, images, report)}


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotFaceSimilarity": SpinBotFaceSimilarity,
    "SpinBotTrainIdentityLoRA": SpinBotTrainIdentityLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotFaceSimilarity": "SpinBot Face Similarity",
    "SpinBotTrainIdentityLoRA": "SpinBot Train Identity LoRA",
}
