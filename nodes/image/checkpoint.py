"""Loading Stable Diffusion 1.5 / SDXL pipelines offline from ComfyUI's model folders.

Single-file checkpoints (models/checkpoints) are recognised from their keys and built with
diffusers' `from_single_file` against a config folder that never comes from the hub:
- `<checkpoint without extension>.config/` beside the file when present (a model with non-standard
  sizes brings its own diffusers config; the tiny test models use this), else
- the published diffusers configs shipped in `configs/<arch>/`.
CLIP tokenizers (vocab.json + merges.txt) are looked up in that config folder, in
models/text_encoders/clip-vit-large-patch14/, then in ComfyUI's bundled comfy/sd1_tokenizer.
Diffusers folders (models/diffusers/<name>) load with `from_pretrained(local_files_only=True)`.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .. import model_cache, runtime

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
ARCH_LABELS = {"sd15": "SD 1.5", "sdxl_base": "SDXL base", "sdxl_refiner": "SDXL refiner"}
TOKENIZER_FOLDER = "text_encoders/clip-vit-large-patch14"
_CACHE_SIZE = 2           # base pipelines kept (a base and a refiner)
_DERIVED_CACHE_SIZE = 4   # LoRA copies kept (they hold only their patched layers)


class ImageModelError(ValueError):
    """A checkpoint, config or tokenizer problem, worded for the user."""


@dataclass(frozen=True)
class ImageModel:
    """SPINBOT_IMAGE_MODEL: a diffusers pipeline plus what the stage node needs to know.

    ``pipe`` is a `model_cache.ModelRef` into the model cache (it reloads the pipeline after ComfyUI
    unloaded it), so a node output holds no weights; anything with the pipeline's interface works
    too (tests wrap it)."""
    pipe: Any
    arch: str                      # sd15 | sdxl_base | sdxl_refiner
    name: str
    trigger_words: tuple[str, ...] = ()
    loras: tuple[tuple[str, float], ...] = ()
    offloaded: bool = False        # model CPU offload hooks move each part to `device` in turn
    device: str = "cpu"
    extra: dict = field(default_factory=dict, compare=False)

    def with_pipe(self, pipe: Any, rebuild=None, **changes) -> "ImageModel":
        """This model with another pipeline (a LoRA copy sharing this one's weights).

        With ``rebuild`` (a function that makes the pipeline again, e.g. re-applies the LoRAs)
        the copy goes into the model cache as a child of this model's pipeline, so ComfyUI can
        unload it and it comes back when used; without it the pipeline is held as it is."""
        if rebuild is None or not isinstance(self.pipe, model_cache.ModelRef):
            return replace(self, pipe=pipe, **changes)
        key = self.pipe.key + (("derived", repr(changes.get("loras", self.loras))),)
        name = f"{self.name} + " + ", ".join(n for n, _s in changes.get("loras", self.loras))
        options = dict(name=name, modules=pipeline_modules, limit=_DERIVED_CACHE_SIZE,
                       parent=self.pipe.key)
        model_cache.put_model("image_lora", key, model_cache.resolve(pipe), **options)
        ref = model_cache.ModelRef("image_lora", key, lambda: model_cache.resolve(rebuild()), **options)
        return replace(self, pipe=ref, **changes)


# ----------------------------------------------------------------------------- detection

def detect_architecture(keys: set[str] | list[str], name: str = "checkpoint") -> str:
    """sd15 / sdxl_base / sdxl_refiner from the original (LDM) key names, else a clear error."""
    keys = set(keys)
    has_unet = "model.diffusion_model.input_blocks.0.0.weight" in keys
    if has_unet and any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl_base"
    if has_unet and any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return "sdxl_refiner"
    if has_unet and any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd15"
    if has_unet and any(k.startswith("cond_stage_model.model.") for k in keys):
        raise ImageModelError(f"{name} is a Stable Diffusion 2.x checkpoint; SpinBot supports SD 1.5 "
                              "and SDXL checkpoints.")
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in keys):
        raise ImageModelError(f"{name} has a diffusion model but no text encoder SpinBot recognises "
                              "(UNet-only files belong in models/diffusion_models, not checkpoints). "
                              "Use a full SD 1.5 or SDXL checkpoint.")
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise ImageModelError(f"{name} is not a Stable Diffusion 1.5 / SDXL checkpoint (keys such as "
                          f"{sample}). Put SD 1.5 or SDXL .safetensors files in models/checkpoints.")


def read_checkpoint_keys(path: str) -> set[str]:
    from safetensors import safe_open

    if not path.lower().endswith(".safetensors"):
        raise ImageModelError(f"{os.path.basename(path)}: only .safetensors checkpoints are loaded "
                              "(pickled .ckpt files can run code); convert it to safetensors.")
    try:
        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    except Exception as exc:  # safetensors raises several types for damaged headers
        raise ImageModelError(f"{os.path.basename(path)} is not a readable safetensors file "
                              f"(truncated or corrupt download?): {exc}") from exc


def config_folder(path: str, arch: str) -> str:
    own = os.path.splitext(path)[0] + ".config"
    return own if os.path.isfile(os.path.join(own, "model_index.json")) else os.path.join(CONFIGS_DIR, arch)


# ----------------------------------------------------------------------------- tokenizers

def comfyui_tokenizer_dir() -> str | None:
    """ComfyUI ships the CLIP BPE files in comfy/sd1_tokenizer; find them from its models folder."""
    finder = getattr(runtime, "comfyui_root", None)
    roots = [finder()] if finder else []
    roots += [os.path.dirname(os.path.dirname(p)) for p in runtime.model_folder_paths("checkpoints")]
    for root in roots:
        candidate = os.path.join(root or "", "comfy", "sd1_tokenizer")
        if os.path.isfile(os.path.join(candidate, "vocab.json")):
            return candidate
    return None


def tokenizer_dirs(config_dir: str, subfolder: str) -> list[str]:
    dirs = [os.path.join(config_dir, subfolder)]
    dirs += [os.path.join(p, "clip-vit-large-patch14") for p in runtime.model_folder_paths("text_encoders")]
    comfy = comfyui_tokenizer_dir()
    return dirs + ([comfy] if comfy else [])


def load_tokenizer(config_dir: str, subfolder: str = "tokenizer"):
    from transformers import CLIPTokenizer

    for folder in tokenizer_dirs(config_dir, subfolder):
        if all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt")):
            # SDXL's second tokenizer is the same BPE padding with "!" (id 0), as OpenCLIP does.
            pad = "!" if subfolder == "tokenizer_2" and folder != os.path.join(config_dir, subfolder) \
                else None
            kwargs = {"pad_token": pad} if pad else {}
            return CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True,
                                                 **kwargs)
    raise ImageModelError(
        "The CLIP tokenizer files (vocab.json and merges.txt, about 1.5 MB) were not found. "
        f"Copy them into models/{TOKENIZER_FOLDER}/ (from the 'tokenizer' folder of any SD 1.5 "
        "diffusers model, or ComfyUI's comfy/sd1_tokenizer). Looked in: "
        + "; ".join(tokenizer_dirs(config_dir, subfolder)))


# ----------------------------------------------------------------------------- loading

def _pipeline_class(arch: str):
    import diffusers

    return {"sd15": diffusers.StableDiffusionPipeline,
            "sdxl_base": diffusers.StableDiffusionXLPipeline,
            "sdxl_refiner": diffusers.StableDiffusionXLImg2ImgPipeline}[arch]


@contextlib.contextmanager
def offline():
    """Hub access off while SpinBot loads (every path is local anyway); restored afterwards so
    other custom nodes in the same ComfyUI process keep their own behaviour."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def load_single_file(path: str, dtype: torch.dtype, vae_path: str | None = None) -> tuple[Any, str]:
    name = os.path.basename(path)
    arch = detect_architecture(read_checkpoint_keys(path), name)
    cfg = config_folder(path, arch)
    index = json.load(open(os.path.join(cfg, "model_index.json"), encoding="utf-8"))
    extra: dict[str, Any] = {}
    for sub in ("tokenizer", "tokenizer_2"):
        if (index.get(sub) or [None])[0]:
            extra[sub] = load_tokenizer(cfg, sub)
    if arch == "sd15":
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if vae_path:
        extra["vae"] = load_vae(vae_path, cfg, dtype)
    try:
        pipe = _pipeline_class(arch).from_single_file(path, config=cfg, local_files_only=True,
                                                      torch_dtype=dtype, **extra)
    except ImageModelError:
        raise
    except Exception as exc:
        raise ImageModelError(f"{name} looks like an {ARCH_LABELS[arch]} checkpoint but could not be "
                              f"built from it (damaged, or a variant with different sizes: put its "
                              f"diffusers config in {os.path.splitext(name)[0]}.config/ beside it): "
                              f"{exc}") from exc
    return pipe, arch


def load_vae(path: str, config_dir: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    keys = read_checkpoint_keys(path)
    if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys):
        raise ImageModelError(f"{os.path.basename(path)} is not a VAE (no encoder/decoder weights).")
    try:
        return AutoencoderKL.from_single_file(path, config=config_dir, subfolder="vae",
                                              local_files_only=True, torch_dtype=dtype)
    except Exception as exc:
        raise ImageModelError(f"VAE {os.path.basename(path)} does not fit this checkpoint: {exc}") from exc


def load_diffusers_folder(folder: str, dtype: torch.dtype, vae_path: str | None = None) -> tuple[Any, str]:
    import diffusers

    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise ImageModelError(f"{folder} is not a diffusers model folder (no model_index.json).")
    cls_name = json.load(open(index_path, encoding="utf-8")).get("_class_name", "")
    arch = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl_base",
            "StableDiffusionXLImg2ImgPipeline": "sdxl_refiner"}.get(cls_name)
    if arch is None:
        raise ImageModelError(f"{os.path.basename(folder)} is a {cls_name or 'unknown'} folder; "
                              "SpinBot loads SD 1.5 and SDXL pipelines.")
    extra = {"safety_checker": None, "requires_safety_checker": False} if arch == "sd15" else {}
    if vae_path:
        extra["vae"] = load_vae(vae_path, folder, dtype)
    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True,
                                                        torch_dtype=dtype, **extra)
    return pipe, arch


def rebuild_pipeline(pipe: Any, components: dict[str, Any]) -> Any:
    """A new pipeline of the same class over ``components``, with the same init options."""
    pipe = model_cache.resolve(pipe)
    accepted = inspect.signature(type(pipe).__init__).parameters
    options = {k: v for k, v in pipe.config.items()
               if k in accepted and k not in components and not k.startswith("_")}
    return type(pipe)(**components, **options)


def choose_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp32 / fp16 / bf16 when asked; auto is the runtime's choice: bf16 on GPUs that have it
    (no fp16 overflow in the SDXL VAE), else fp16 on GPUs and MPS, fp32 on CPU."""
    named = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in named and precision != "auto":
        raise ImageModelError(f"unknown precision '{precision}'; choose auto, fp32, fp16 or bf16.")
    return named.get(precision) or runtime.torch_dtype(device)


def model_bytes(pipe: Any) -> int:
    return sum(p.numel() * p.element_size() for m in pipe.components.values()
               if isinstance(m, torch.nn.Module) for p in m.parameters())


def choose_offload(device: torch.device, size_bytes: int, offload: str = "auto") -> bool:
    """Whether to use model CPU offload for a pipeline of ``size_bytes`` on ``device``.

    auto: off on CPU (the weights are in RAM already); on a GPU, ComfyUI is first asked to unload
    its own models, then offload is used when the free memory is under 1.5x the weights (the rest
    is activations, and the VAE decode of a 1024px SDXL image needs several GB). An explicit
    'model_cpu_offload' is honoured on every device."""
    if offload not in ("auto", "none", "model_cpu_offload"):
        raise ImageModelError(f"unknown offload '{offload}'; choose auto, none or model_cpu_offload.")
    if offload != "auto":
        return offload == "model_cpu_offload"
    if device.type == "cpu":
        return False
    runtime.make_room(int(size_bytes * 1.3), device)
    return runtime.free_memory_bytes(device) < size_bytes * 1.5


def place_pipeline(pipe: Any, device: torch.device, offload: bool) -> None:
    """Move the pipeline to the device, or give it accelerate's model CPU offload hooks (each
    model part goes to ``device`` for its forward and back to the CPU when the next one runs)."""
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


def offload_all(*models: "ImageModel | None") -> None:
    """Put every part of offloaded models back on the CPU (diffusers only does this for the
    pipeline object that was called, and SpinBot calls a fresh one per run)."""
    for model in models:
        if model is not None and model.offloaded:
            model.pipe.maybe_free_model_hooks()


def pipeline_modules(pipe: Any) -> list[torch.nn.Module]:
    """The torch modules of a pipeline (what its memory is made of)."""
    return [m for m in model_cache.resolve(pipe).components.values() if isinstance(m, torch.nn.Module)]


def source_files(path: str, vae_path: str | None = None) -> list[str]:
    """Every file or folder a load of ``path`` reads: the checkpoint (a diffusers folder as a
    whole), its own ``.config/`` folder, the separate VAE and the CLIP tokenizer folders."""
    files = [path]
    if not os.path.isdir(path):
        own = os.path.splitext(path)[0] + ".config"
        if os.path.isdir(own):
            files.append(own)
        files += [os.path.join(p, "clip-vit-large-patch14")
                  for p in runtime.model_folder_paths("text_encoders")]
    return files + ([vae_path] if vae_path else [])


def cache_key(path: str, vae_path: str | None, dtype: torch.dtype, device: torch.device,
              offload: str) -> tuple:
    """What a cached pipeline is: the stamps of the files it was built from, the dtype, the
    device and the offload *setting* (never the free memory the auto setting looked at)."""
    return ("image", tuple(runtime.file_stamp(f) for f in source_files(path, vae_path)),
            bool(vae_path), str(dtype), str(device), offload)


_ARCH_BY_CLASS = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl_base",
                  "StableDiffusionXLImg2ImgPipeline": "sdxl_refiner"}


def _build_pipeline(path: str, vae_path: str | None, dtype: torch.dtype, device: torch.device,
                    offload: str) -> Any:
    with offline():
        if os.path.isdir(path):
            pipe, _arch = load_diffusers_folder(path, dtype, vae_path)
        else:
            pipe, _arch = load_single_file(path, dtype, vae_path)
    pipe.set_progress_bar_config(disable=True)
    offloaded = choose_offload(device, model_bytes(pipe), offload)
    place_pipeline(pipe, device, offloaded)
    pipe.spinbot_offloaded = offloaded
    return pipe


def load_image_model(path: str, vae_path: str | None = None, precision: str = "auto",
                     offload: str = "auto") -> ImageModel:
    """The base pipeline for a checkpoint file or diffusers folder, from the model cache (loaded
    when it is not there; the two most recently used stay)."""
    device = runtime.torch_device()
    dtype = choose_dtype(device, precision)
    if offload not in ("auto", "none", "model_cpu_offload"):
        raise ImageModelError(f"unknown offload '{offload}'; choose auto, none or model_cpu_offload.")
    name = os.path.basename(path.rstrip("/\\"))
    key = cache_key(path, vae_path, dtype, device, offload)
    ref = model_cache.ModelRef("image", key,
                           lambda: _build_pipeline(path, vae_path, dtype, device, offload),
                           name=name, modules=pipeline_modules, limit=_CACHE_SIZE)
    pipe = ref.resolve()
    model = _handles.get(key)
    if model is None:
        model = ImageModel(pipe=ref, arch=_ARCH_BY_CLASS[type(pipe).__name__], name=name,
                           offloaded=bool(getattr(pipe, "spinbot_offloaded", False)),
                           device=str(device))
        _handles[key] = model
    return model


# The same load gives the same handle while one is in use (handles hold no weights).
_handles: "weakref.WeakValueDictionary[tuple, ImageModel]" = weakref.WeakValueDictionary()


def clear_cache() -> None:
    """Evict every cached image pipeline (bases and LoRA copies)."""
    model_cache.evict_models("image_lora")
    model_cache.evict_models("image")
