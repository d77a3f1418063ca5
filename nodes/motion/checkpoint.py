"""Loading Stable Video Diffusion (SVD / SVD-XT) offline from ComfyUI's model folders.

- Single files from models/checkpoints (`svd.safetensors`, `svd_xt.safetensors`,
  `svd_xt_1_1.safetensors`, ...): recognised from their keys, converted name by name
  (`svd_keys.py`) into diffusers' UNetSpatioTemporalConditionModel, AutoencoderKLTemporalDecoder
  and transformers' CLIPVisionModelWithProjection. Configs come from `<file stem>.config/` beside
  the checkpoint when present (tiny test models, variants), else from the published configs
  shipped in `configs/svd` (14 frames) or `configs/svd_xt` (25 frames; chosen when the file name
  contains "xt"). The CLIP image encoder comes from the checkpoint, or from a models/clip_vision
  file (transformers or OpenCLIP key names) when the checkpoint has none.
- Diffusers folders (models/diffusers/<name> with model_index.json): `from_pretrained` with
  `local_files_only=True` (fp16 variant files are used when they are the only ones).

Nothing is ever fetched from a hub: `offline()` switches hub access off while loading.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import model_cache, runtime
from ..image.checkpoint import offline
from . import svd_keys

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
ARCH_LABELS = {"svd": "SVD (14 frames)", "svd_xt": "SVD-XT (25 frames)"}


class MotionModelError(ValueError):
    """A checkpoint, config or image-encoder problem, worded for the user."""


@dataclass
class MotionModel:
    """A loaded StableVideoDiffusionPipeline and how it was placed."""
    pipe: Any
    arch: str
    name: str
    dtype: torch.dtype
    device: torch.device
    extra: dict = field(default_factory=dict)

    @property
    def default_frames(self) -> int:
        return int(self.pipe.unet.config.num_frames)


# ----------------------------------------------------------------------------- detection

def _open(path: str):
    from safetensors import safe_open

    name = os.path.basename(path)
    if not path.lower().endswith(".safetensors"):
        raise MotionModelError(f"{name}: only .safetensors checkpoints are loaded (pickled .ckpt "
                               "files can run code); use the .safetensors release.")
    try:
        return safe_open(path, framework="pt")
    except Exception as exc:  # damaged headers raise several exception types
        raise MotionModelError(f"{name} is not a readable safetensors file (truncated or corrupt "
                               f"download?): {exc}") from exc


def detect_svd(keys: set[str] | list[str], name: str = "checkpoint") -> None:
    """Raise a clear MotionModelError unless the keys are an SVD image-to-video checkpoint."""
    keys = set(keys)
    unet = [k for k in keys if k.startswith(svd_keys.UNET_PREFIX)]
    temporal = any(".time_stack." in k for k in unet)
    video_vae = any(k.startswith(svd_keys.DECODER_PREFIX) and k.endswith("mix_factor") for k in keys)
    if unet and temporal and video_vae:
        return
    if unet and temporal:
        raise MotionModelError(f"{name} has a video UNet but no temporal VAE decoder (an SVD 'image "
                               "decoder' variant?); use svd.safetensors, svd_xt.safetensors or "
                               "svd_xt_1_1.safetensors.")
    if unet:
        raise MotionModelError(f"{name} is an image model (Stable Diffusion), not Stable Video "
                               "Diffusion: load it with SpinBot Image Model, and pick svd_xt."
                               "safetensors (or svd.safetensors) here.")
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise MotionModelError(f"{name} is not a Stable Video Diffusion checkpoint (keys such as "
                           f"{sample}). Put svd_xt.safetensors from huggingface.co/stabilityai/"
                           "stable-video-diffusion-img2vid-xt in models/checkpoints.")


def arch_for(path: str) -> str:
    return "svd_xt" if "xt" in os.path.basename(path).lower() else "svd"


def config_folder(path: str, arch: str) -> str:
    own = os.path.splitext(path)[0] + ".config"
    return own if os.path.isfile(os.path.join(own, "model_index.json")) else os.path.join(CONFIGS_DIR, arch)


def _config(folder: str, sub: str, fname: str = "config.json") -> dict:
    with open(os.path.join(folder, sub, fname), encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


# ----------------------------------------------------------------------------- building

def _empty(factory):
    """Build a module with parameters on the meta device (no random init, no memory)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def _fill(module: torch.nn.Module, sources: dict, handle, dtype: torch.dtype, what: str,
          name: str) -> torch.nn.Module:
    available = set(handle.keys())
    state = {}
    for key, (srcs, transform) in sources.items():
        missing = [s for s in srcs if s not in available]
        if missing:
            raise MotionModelError(f"{name}: the {what} weight {missing[0]} is missing (damaged "
                                   "file, or a variant SpinBot does not know).")
        tensor = transform(*(handle.get_tensor(s) for s in srcs))
        state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise MotionModelError(f"{name}: the {what} weights do not fit its config (a variant with "
                               f"other sizes? put its diffusers config in "
                               f"{os.path.splitext(name)[0]}.config/ beside it): {exc}") from exc
    return module.eval()


def _vision_config(folder: str):
    from transformers import CLIPVisionConfig

    data = _config(folder, "image_encoder")
    data.pop("architectures", None)
    data.pop("torch_dtype", None)
    return CLIPVisionConfig(**data)


def build_image_encoder(handle, cfg_dir: str, dtype: torch.dtype, name: str, prefix: str):
    from transformers import CLIPVisionModelWithProjection

    config = _vision_config(cfg_dir)
    model = _empty(lambda: CLIPVisionModelWithProjection(config))
    if prefix is None:  # transformers layout (models/clip_vision/*.safetensors from Comfy-Org)
        keys = set(handle.keys())
        sources = {}
        for k in model.state_dict():
            src = k if k in keys else "vision_model." + k if "vision_model." + k in keys else k
            sources[k] = ((src,), svd_keys._same)
    else:
        sources = svd_keys.image_encoder_sources(model.state_dict().keys(), prefix)
    return _fill(model, sources, handle, dtype, "image encoder", name)


def load_clip_vision(path: str, cfg_dir: str, dtype: torch.dtype):
    """A ViT-H/14 image encoder from models/clip_vision (transformers or OpenCLIP names)."""
    name = os.path.basename(path)
    with _open(path) as handle:
        keys = set(handle.keys())
        if "visual_projection.weight" in keys:
            return build_image_encoder(handle, cfg_dir, dtype, name, None)
        for prefix in ("visual.", svd_keys.VISUAL_PREFIX, "open_clip.model.visual."):
            if prefix + "proj" in keys:
                return build_image_encoder(handle, cfg_dir, dtype, name, prefix)
    raise MotionModelError(f"{name} is not a CLIP vision model (no visual_projection / visual.proj "
                           "weights); SVD needs CLIP ViT-H/14 (e.g. clip_vision_h.safetensors).")


def load_single_file(path: str, dtype: torch.dtype, clip_vision: str | None = None):
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler,
                           StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor

    name = os.path.basename(path)
    arch = arch_for(path)
    cfg = config_folder(path, arch)
    with _open(path) as handle:
        keys = set(handle.keys())
        detect_svd(keys, name)
        ucfg, vcfg = _config(cfg, "unet"), _config(cfg, "vae")
        unet = _empty(lambda: UNetSpatioTemporalConditionModel.from_config(ucfg))
        unet = _fill(unet, svd_keys.unet_sources(unet.state_dict().keys(), ucfg), handle, dtype,
                     "UNet", name)
        vae = _empty(lambda: AutoencoderKLTemporalDecoder.from_config(vcfg))
        enc_prefix = next((p for p in svd_keys.ENCODER_PREFIXES if p + "conv_in.weight" in keys), None)
        if enc_prefix is None:
            raise MotionModelError(f"{name} has no VAE encoder weights (first_stage_model.encoder); "
                                   "the file is incomplete.")
        vae_sources = svd_keys.vae_sources(vae.state_dict().keys(), vcfg, enc_prefix)
        if svd_keys.QUANT_CONV_PREFIX + "weight" not in keys:
            # the first-stage copy has no quant_conv: an identity 1x1 convolution is the same map
            channels = 2 * int(vcfg.get("latent_channels", 4))
            vae_sources["quant_conv.weight"] = ((svd_keys.DECODER_PREFIX + "conv_in.bias",),
                                                lambda _t, c=channels: torch.eye(c)[:, :, None, None])
            vae_sources["quant_conv.bias"] = ((svd_keys.DECODER_PREFIX + "conv_in.bias",),
                                              lambda _t, c=channels: torch.zeros(c))
        vae = _fill(vae, vae_sources, handle, dtype, "VAE", name)
        if clip_vision:
            image_encoder = load_clip_vision(clip_vision, cfg, dtype)
        elif svd_keys.VISUAL_PREFIX + "proj" in keys:
            image_encoder = build_image_encoder(handle, cfg, dtype, name, svd_keys.VISUAL_PREFIX)
        else:
            raise MotionModelError(f"{name} has no CLIP image encoder (conditioner.embedders.0."
                                   "open_clip.model.visual.*): choose a CLIP ViT-H/14 file from "
                                   "models/clip_vision (e.g. clip_vision_h.safetensors) as clip_vision.")
    scheduler = EulerDiscreteScheduler.from_pretrained(cfg, subfolder="scheduler", local_files_only=True)
    feature_extractor = CLIPImageProcessor.from_pretrained(os.path.join(cfg, "feature_extractor"),
                                                           local_files_only=True)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=scheduler, feature_extractor=feature_extractor)
    return pipe, arch


def load_diffusers_folder(folder: str, dtype: torch.dtype, clip_vision: str | None = None):
    from diffusers import StableVideoDiffusionPipeline

    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        raise MotionModelError(f"{folder} is not a diffusers model folder (no model_index.json).")
    with open(index, encoding="utf-8") as f:
        cls_name = json.load(f).get("_class_name", "")
    if cls_name != "StableVideoDiffusionPipeline":
        raise MotionModelError(f"{os.path.basename(folder)} is a {cls_name or 'unknown'} folder; "
                               "SpinBot SVD loads StableVideoDiffusionPipeline folders.")
    unet_dir = os.path.join(folder, "unet")
    files = os.listdir(unet_dir) if os.path.isdir(unet_dir) else []
    variant = "fp16" if files and all(".fp16." in f for f in files if f.endswith((".safetensors", ".bin"))) \
        and any(f.endswith(".safetensors") for f in files) else None
    extra = {}
    if clip_vision:
        extra["image_encoder"] = load_clip_vision(clip_vision, folder, dtype)
    pipe = StableVideoDiffusionPipeline.from_pretrained(folder, local_files_only=True,
                                                        dtype=dtype, variant=variant,
                                                        use_safetensors=True, **extra)
    frames = int(pipe.unet.config.num_frames)
    return pipe, "svd_xt" if frames >= 25 else "svd"


# ----------------------------------------------------------------------------- memory policy

LOW_VRAM_BYTES = 20 << 30  # below this (total or free) the 16 GB policy is on
# diffusers' documented SVD settings: decode 8 frames at once normally, 2 on a low-VRAM budget
FULL_DECODE_CHUNK, LOW_DECODE_CHUNK = 8, 2


@dataclass(frozen=True)
class MemoryPolicy:
    """How a run is placed: model CPU offload, UNet feed-forward chunking, VAE decode chunk."""
    offload: bool
    forward_chunking: bool
    decode_chunk_size: int   # frames decoded at once when not asked (0: all); a cap when offloading
    reason: str = ""


def memory_policy(device: torch.device, mode: str = "auto") -> MemoryPolicy:
    """`auto`: on CUDA with less than ~20 GB (total, or free after ComfyUI made room) switch on the
    16 GB policy; `low_vram` forces it; `full` keeps everything on the device."""
    if mode not in ("auto", "low_vram", "full"):
        raise MotionModelError(f"unknown memory mode '{mode}' (auto, low_vram or full)")
    if device.type == "cpu":
        return MemoryPolicy(False, False, 0, "cpu")
    if mode == "full":
        return MemoryPolicy(False, False, FULL_DECODE_CHUNK, "full (asked)")
    if mode == "low_vram":
        return MemoryPolicy(True, True, LOW_DECODE_CHUNK, "low_vram (asked)")
    total = runtime.total_memory_bytes(device)
    free = runtime.free_memory_bytes(device)
    if device.type == "cuda" and min(total, free) < LOW_VRAM_BYTES:
        return MemoryPolicy(True, True, LOW_DECODE_CHUNK, f"{total / 2**30:.0f} GB total, {free / 2**30:.0f} GB free")
    return MemoryPolicy(False, False, FULL_DECODE_CHUNK, f"{total / 2**30:.0f} GB total")


def apply_policy(pipe, device: torch.device, policy: MemoryPolicy) -> None:
    if device.type == "cpu":
        pipe.to(device)
        return
    if policy.offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if policy.forward_chunking:  # diffusers' documented SVD setting (chunk 1 along dim 0)
        pipe.unet.enable_forward_chunking()


# ----------------------------------------------------------------------------- cache

def source_files(path: str, clip_vision: str | None = None) -> list[str]:
    """Every file or folder a load of ``path`` reads: the checkpoint (a diffusers folder as a
    whole), its own ``.config/`` folder and the separate CLIP image encoder."""
    files = [path]
    own = os.path.splitext(path)[0] + ".config"
    if not os.path.isdir(path) and os.path.isdir(own):
        files.append(own)
    return files + ([clip_vision] if clip_vision else [])


def cache_key(path: str, clip_vision: str | None, dtype: torch.dtype, device: torch.device,
              memory: str) -> tuple:
    """What a cached pipeline is: stamps of the files read, dtype, device and the memory *mode*.
    The policy the auto mode picks from the free memory is decided once, when it loads: a key
    holding it would load a second copy whenever the free memory moved across the threshold."""
    return ("motion", tuple(runtime.file_stamp(f) for f in source_files(path, clip_vision)),
            bool(clip_vision), str(dtype), str(device), memory)


def resolve_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp16 on a GPU (SVD's release precision), fp32 on CPU, unless asked otherwise."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision in table:
        return table[precision]
    return torch.float32 if device.type == "cpu" else torch.float16


def _build_pipeline(path: str, clip_vision: str | None, dtype: torch.dtype,
                    device: torch.device, memory: str):
    policy = memory_policy(device, memory)
    model_cache.evict_models("motion")  # one SVD at a time: the old one goes before the new one loads
    with offline():
        if os.path.isdir(path):
            pipe, arch = load_diffusers_folder(path, dtype, clip_vision)
        else:
            pipe, arch = load_single_file(path, dtype, clip_vision)
    pipe.set_progress_bar_config(disable=True)
    if device.type != "cpu":
        size = sum(p.numel() * p.element_size() for m in pipeline_modules(pipe) for p in m.parameters())
        runtime.make_room(int(size * (0.6 if policy.offload else 1.3)), device)
    apply_policy(pipe, device, policy)
    pipe.spinbot_arch, pipe.spinbot_policy = arch, policy
    return pipe


def pipeline_modules(pipe) -> list[torch.nn.Module]:
    """The torch modules of a pipeline (what its memory is made of)."""
    return [m for m in model_cache.resolve(pipe).components.values() if isinstance(m, torch.nn.Module)]


def load_motion_model(path: str, clip_vision: str | None = None, precision: str = "auto",
                      memory: str = "auto") -> MotionModel:
    """The pipeline for a checkpoint file or diffusers folder, from the model cache (one SVD at
    a time: a second copy would not fit the budget), placed on the device under the memory
    policy when it loads."""
    device = runtime.torch_device()
    dtype = resolve_dtype(device, precision)
    if memory not in ("auto", "low_vram", "full"):
        raise MotionModelError(f"unknown memory mode '{memory}' (auto, low_vram or full)")
    key = cache_key(path, clip_vision, dtype, device, memory)
    name = os.path.basename(path.rstrip("/\\"))
    ref = model_cache.ModelRef("motion", key,
                           lambda: _build_pipeline(path, clip_vision, dtype, device, memory),
                           name=name, modules=pipeline_modules, limit=1)
    pipe = ref.resolve()
    return MotionModel(pipe=ref, arch=pipe.spinbot_arch, name=name, dtype=dtype, device=device,
                       extra={"policy": pipe.spinbot_policy, "stamp": repr(key[1:])})


def clear_cache() -> None:
    """Evict the cached SVD pipeline."""
    model_cache.evict_models("motion")
