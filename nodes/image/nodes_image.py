"""Image stage nodes: SD 1.5 / SDXL model loader, identity LoRA loader, stage image."""
from __future__ import annotations

from dataclasses import replace

import torch

from .. import manifest, runtime
from ..script.segments import SEGMENTS_TYPE, coerce_segments
from .checkpoint import ImageModelError, load_image_model, source_files
from .generate import SCHEDULERS, SIZE_PRESETS, ImageSettings, generate_images, resolve_size
from .lora import apply_loras

IMAGE_MODEL = "SPINBOT_IMAGE_MODEL"
CATEGORY = "SpinBot/image"
NONE = "none"
DIFFUSERS_PREFIX = "diffusers/"
LORA_SLOTS = 3


def _checkpoint_choices() -> list[str]:
    files = runtime.list_models("checkpoints", suffixes=[".safetensors"])
    folders = [DIFFUSERS_PREFIX + d for d in runtime.list_models("diffusers", dirs=True)]
    # An empty dropdown cannot be saved in a workflow: offer the manifest's file names, whose
    # absence then gives an error saying where to put them and where to get them.
    return files + folders or [m.path for m in manifest.models()
                               if m.folder == "checkpoints" and m.stage == "image"]


def _model_path(name: str) -> str:
    if name.startswith(DIFFUSERS_PREFIX):
        path = runtime.find_model("diffusers", name[len(DIFFUSERS_PREFIX):])
        folder = "diffusers"
    else:
        path, folder = runtime.find_model("checkpoints", name), "checkpoints"
    if path is None:
        raise ImageModelError(f"'{name}' was not found in models/{folder}. Put an SD 1.5 or SDXL "
                              ".safetensors checkpoint (e.g. sd_xl_base_1.0.safetensors from "
                              "huggingface.co/stabilityai) in models/checkpoints.")
    return path


class SpinBotImageModel:
    DESCRIPTION = ("Loads a Stable Diffusion 1.5 or SDXL model (base or refiner) with diffusers, "
                   "fully offline: single-file checkpoints from models/checkpoints (architecture "
                   "recognised from the weights) or diffusers folders from models/diffusers. The "
                   "loaded model is cached and shared; LoRAs are applied to copies.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (IMAGE_MODEL,)
    RETURN_NAMES = ("image_model",)
    OUTPUT_TOOLTIPS = ("The loaded SD 1.5 / SDXL pipeline, for SpinBot Identity LoRA or SpinBot "
                       "Stage Image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_checkpoint_choices(), {"tooltip": "An SD 1.5 or SDXL .safetensors "
                           "checkpoint from models/checkpoints, or a diffusers folder from "
                           "models/diffusers (listed as diffusers/<name>)."}),
            "vae": ([NONE] + runtime.list_models("vae", suffixes=[".safetensors"]), {
                    "default": NONE, "tooltip": "Optional VAE from models/vae that replaces the "
                    "checkpoint's own (e.g. sdxl-vae-fp16-fix for fp16 SDXL)."}),
            "precision": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip":
                          "auto: fp16/bf16 on a GPU, fp32 on CPU."}),
            "offload": (["auto", "none", "model_cpu_offload"], {"default": "auto", "tooltip":
                        "auto: keep the model on the GPU when it fits, else move each part to "
                        "the GPU only while it runs (slower, much less VRAM)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, checkpoint: str = "", vae: str = NONE, **_):
        try:
            path = _model_path(checkpoint)
        except ImageModelError:
            return f"{checkpoint}|missing|{runtime.model_stamp('vae', vae)}"
        vae_path = runtime.find_model("vae", vae) if vae and vae != NONE else None
        # every file the load reads: a diffusers folder's weights, the .config folder beside a
        # single file, the CLIP tokenizer folder and the VAE
        stamps = [runtime.file_stamp(f) for f in source_files(path, vae_path)]
        if vae_path is None:
            stamps.append(runtime.model_stamp("vae", vae))  # "none", or a name not found
        return "|".join(stamps)

    def load(self, checkpoint: str, vae: str, precision: str, offload: str):
        vae_path = None
        if vae and vae != NONE:
            vae_path = runtime.find_model("vae", vae)
            if vae_path is None:
                raise ImageModelError(f"VAE '{vae}' was not found in models/vae.")
        return (load_image_model(_model_path(checkpoint), vae_path, precision, offload),)


class SpinBotIdentityLoRA:
    DESCRIPTION = ("Applies up to three LoRAs (kohya/A1111 or diffusers/PEFT files from "
                   "models/loras) with their strengths to the UNet and text encoders of a copy of "
                   "the model; the shared base stays untouched. Outputs the trigger word found in "
                   "the LoRA's metadata so prompts can include it.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (IMAGE_MODEL, "STRING")
    RETURN_NAMES = ("image_model", "trigger_word")
    OUTPUT_TOOLTIPS = ("The model with the LoRAs merged into copies of the affected layers.",
                       "Trigger words from the LoRAs' metadata (comma separated; empty if none).")

    @classmethod
    def INPUT_TYPES(cls):
        loras = [NONE] + runtime.list_models("loras", suffixes=[".safetensors"])
        required = {"image_model": (IMAGE_MODEL, {"tooltip": "From SpinBot Image Model."})}
        for i in range(1, LORA_SLOTS + 1):
            required[f"lora_{i}"] = (loras, {"default": NONE, "tooltip":
                                     f"LoRA {i} from models/loras ('none' to skip). The identity "
                                     "LoRA usually goes first."})
            required[f"strength_{i}"] = ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0,
                                         "step": 0.05, "tooltip": f"Weight of LoRA {i}: 0 has no "
                                         "effect, 1 is full strength."})
        return {"required": required}

    @classmethod
    def IS_CHANGED(cls, **inputs):
        return "|".join(runtime.model_stamp("loras", inputs.get(f"lora_{i}", NONE)) +
                        f"@{inputs.get(f'strength_{i}')}" for i in range(1, LORA_SLOTS + 1))

    def apply(self, image_model, lora_1=NONE, strength_1=1.0, lora_2=NONE, strength_2=1.0,
              lora_3=NONE, strength_3=1.0):
        inputs = {"lora_1": lora_1, "strength_1": strength_1, "lora_2": lora_2,
                  "strength_2": strength_2, "lora_3": lora_3, "strength_3": strength_3}
        chosen = []
        for i in range(1, LORA_SLOTS + 1):
            name = inputs.get(f"lora_{i}", NONE)
            if not name or name == NONE:
                continue
            path = runtime.find_model("loras", name)
            if path is None:
                raise ImageModelError(f"LoRA '{name}' was not found in models/loras.")
            chosen.append((path, name, float(inputs.get(f"strength_{i}", 1.0))))
        if not chosen:
            return (image_model, ", ".join(image_model.trigger_words))
        model = apply_loras(image_model, chosen)
        return (model, ", ".join(model.trigger_words))


class SpinBotStageImage:
    DESCRIPTION = ("Paints the stage: the scene prompt (from SpinBot Stage Script or typed) "
                   "becomes an image with the loaded SD 1.5 / SDXL model, with the identity "
                   "LoRA's trigger word added when the prompt lacks it. With segments, one image "
                   "per segment, from the segment's own scene prompt when it has one. For SDXL "
                   "an optional refiner finishes the last steps (ensemble of experts).")
    CATEGORY = CATEGORY
    FUNCTION = "paint"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The generated images, [B,H,W,3] float32 in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_model": (IMAGE_MODEL, {"tooltip": "From SpinBot Image Model or SpinBot "
                                                         "Identity LoRA."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "The scene to paint; connect the 'stage' output of the script node."}),
                "negative": ("STRING", {"multiline": True, "default": "blurry, deformed, watermark",
                             "tooltip": "What to keep out of the image."}),
                "size_preset": (list(SIZE_PRESETS), {"default": "portrait 9:16", "tooltip":
                                "Sizes for the model family (SD 1.5 ~512, SDXL ~1024 buckets); "
                                "'custom' uses width and height."}),
                "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8,
                                  "tooltip": "Width in pixels when size_preset is custom."}),
                "height": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8,
                                   "tooltip": "Height in pixels when size_preset is custom."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200, "tooltip":
                                  "Denoising steps (refiner steps included)."}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Prompt guidance; 1 or less disables it (faster)."}),
                "scheduler": (list(SCHEDULERS), {"default": "dpm++ 2m karras", "tooltip":
                              "Sampler; 'default' keeps the checkpoint's own."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                                 "Image i of a batch uses seed + i."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip":
                                       "Images generated at once."}),
            },
            "optional": {
                "refiner": (IMAGE_MODEL, {"tooltip": "An SDXL refiner (from SpinBot Image Model) "
                                                     "for the last steps of an SDXL base."}),
                "refiner_split": ("FLOAT", {"default": 0.8, "min": 0.05, "max": 0.95, "step": 0.01,
                                            "tooltip": "Fraction of the noise schedule the base "
                                            "model handles before the refiner takes over."}),
                "segments": (SEGMENTS_TYPE, {"tooltip": "Story mode: one image (batch_size "
                             "images) per narration segment; segment k uses seed + k x "
                             "batch_size. A segment with its own scene prompt (a 'scene per "
                             "segment' script) is painted from that scene alone; the others from "
                             "the prompt plus the segment's words. Connect the script's or the "
                             "voice stage's segments."}),
            },
        }

    def paint(self, image_model, prompt, negative, size_preset, width, height, steps, cfg,
              scheduler, seed, batch_size, refiner=None, refiner_split=0.8, segments=None):
        width, height = resolve_size(size_preset, image_model.arch, int(width), int(height))
        settings = ImageSettings(prompt=prompt, negative=negative, width=width, height=height,
                                 steps=int(steps), cfg=float(cfg), scheduler=scheduler,
                                 seed=int(seed), batch_size=int(batch_size),
                                 refiner_split=float(refiner_split))
        segments = coerce_segments(segments) if segments else ()
        if not segments:
            images = generate_images(image_model, settings, refiner)
        else:
            images = torch.cat([generate_images(image_model, replace(
                settings, prompt=segment_prompt(prompt, seg.text, seg.scene),
                seed=int(seed) + k * int(batch_size)), refiner) for k, seg in enumerate(segments)])
        runtime.release_memory()
        return (images,)


def segment_prompt(scene: str, words: str, own_scene: str = "") -> str:
    """The prompt of one segment's image: its own scene prompt when it has one (written for that
    segment, already holding the character and trigger word), otherwise the shared scene prompt
    followed by what the segment says, so each image shows its part."""
    if own_scene and own_scene.strip():
        return own_scene.strip()
    return ", ".join(p.strip() for p in (scene, words) if p and p.strip())


NODE_CLASS_MAPPINGS = {"SpinBotImageModel": SpinBotImageModel,
                       "SpinBotIdentityLoRA": SpinBotIdentityLoRA,
                       "SpinBotStageImage": SpinBotStageImage}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotImageModel": "SpinBot Image Model",
                              "SpinBotIdentityLoRA": "SpinBot Identity LoRA",
                              "SpinBotStageImage": "SpinBot Stage Image"}
