"""PEFT LoRA weights <-> kohya / sd-scripts `.safetensors` files.

The kohya layout (sd-scripts `networks/lora.py`, read by ComfyUI's `comfy/lora.py`, A1111/Forge
and diffusers' `lora_state_dict`): one entry per patched Linear,

    lora_unet_<diffusers module path, '.' -> '_'>.lora_down.weight   [rank, in]
    lora_unet_<...>.lora_up.weight                                    [out, rank]
    lora_unet_<...>.alpha                                             scalar (scale = alpha / rank)

and `lora_te_` (SD 1.5 CLIP) / `lora_te1_`, `lora_te2_` (SDXL's two encoders) for text-encoder
layers with the transformers module path (`text_model_encoder_layers_0_self_attn_q_proj`).
The UNet names are the diffusers module paths for both SD 1.5 and SDXL: sd-scripts writes SDXL
files with the LDM block names instead, and every reader above maps both (ComfyUI's
`model_lora_keys_unet` lists `lora_unet_<diffusers path>` for every UNet weight).
Metadata follows sd-scripts' `ss_*` keys plus the `modelspec.*` keys of Stability's model spec.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

from ..files import atomic_path

PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
SDXL_TE1 = "lora_te1_"
# sd-scripts' ss_base_model_version values and Stability model-spec architectures.
BASE_VERSION = {"sd15": "sd_v1", "sdxl_base": "sdxl_base_v1-0"}
MODELSPEC_ARCH = {"sd15": "stable-diffusion-v1/lora", "sdxl_base": "stable-diffusion-xl-v1-base/lora"}


class LoRAFileError(ValueError):
    """A LoRA file that cannot be written or read, worded for the user."""


def kohya_prefix(component: str, arch: str) -> str:
    """`lora_unet_`, `lora_te_` (SD 1.5) / `lora_te1_` (SDXL first encoder), `lora_te2_`."""
    if component == "text_encoder" and arch != "sd15":
        return SDXL_TE1
    try:
        return PREFIXES[component]
    except KeyError:
        raise LoRAFileError(f"no kohya prefix for component '{component}'") from None


def to_kohya(component_states: dict[str, dict[str, torch.Tensor]], alpha: float,
             arch: str) -> dict[str, torch.Tensor]:
    """kohya tensors from PEFT state dicts.

    ``component_states``: {component: peft state dict} as `peft.get_peft_model_state_dict` gives
    it (`<module>.lora_A.weight` [rank, in], `<module>.lora_B.weight` [out, rank]). Tensors are
    copied to contiguous fp16 on the CPU (the storage sd-scripts uses by default; ``alpha`` is
    stored as an fp16 scalar beside each pair the same way). Raises LoRAFileError on a lone A/B."""
    out: dict[str, torch.Tensor] = {}
    for component, state in component_states.items():
        prefix = kohya_prefix(component, arch)
        for key, down in state.items():
            if not key.endswith(".lora_A.weight"):
                if not key.endswith(".lora_B.weight"):
                    raise LoRAFileError(f"unexpected LoRA tensor {component}.{key}")
                continue
            module = key[: -len(".lora_A.weight")]
            up = state.get(module + ".lora_B.weight")
            if up is None:
                raise LoRAFileError(f"{component}.{module} has lora_A but no lora_B")
            if component != "unet" and not module.startswith("text_model."):
                # kohya names CLIP layers by their path in CLIPTextModel (text_model.encoder...);
                # peft's state dict of the encoder can come without that first level
                module = "text_model." + module
            base = prefix + module.replace(".", "_")
            out[base + ".lora_down.weight"] = down.detach().to("cpu", torch.float16).contiguous()
            out[base + ".lora_up.weight"] = up.detach().to("cpu", torch.float16).contiguous()
            out[base + ".alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return out


def metadata(*, arch: str, trigger: str, base_model: str, rank: int, alpha: float, steps: int,
             learning_rate: float, resolution: int, num_images: int, dataset_hash: str, seed: int,
             name: str, train_text_encoder: bool, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Safetensors metadata (all values strings) in sd-scripts' and model-spec's key names.

    `ss_tag_frequency` lists the trigger once per training image under a `1_<trigger>` folder
    name, which is how kohya's folder convention records the instance token (the pack's loader
    reads the trigger from `modelspec.trigger_phrase` first)."""
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(int(rank)),
        "ss_network_alpha": repr(float(alpha)),
        "ss_base_model_version": BASE_VERSION[arch],
        "ss_sd_model_name": base_model,
        "ss_v2": "False",
        "ss_max_train_steps": str(int(steps)),
        "ss_steps": str(int(steps)),
        "ss_learning_rate": repr(float(learning_rate)),
        "ss_unet_lr": repr(float(learning_rate)),
        "ss_text_encoder_lr": repr(float(learning_rate)) if train_text_encoder else "0",
        "ss_network_train_unet_only": str(not train_text_encoder),
        "ss_resolution": f"({int(resolution)}, {int(resolution)})",
        "ss_num_train_images": str(int(num_images)),
        "ss_seed": str(int(seed)),
        "ss_output_name": name,
        "ss_training_comment": f"SpinBot identity LoRA; trigger '{trigger}'",
        "ss_tag_frequency": json.dumps({f"1_{trigger}": {trigger: int(num_images)}}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCH[arch],
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": name,
        "modelspec.trigger_phrase": trigger,
        "modelspec.resolution": f"{int(resolution)}x{int(resolution)}",
        "spinbot.trigger_word": trigger,
        "spinbot.dataset_hash": dataset_hash,
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save(path: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """Write ``path`` atomically (a temp file beside it, then rename), so a Cancel or crash never
    leaves a half-written LoRA that ComfyUI would list."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a kohya file."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


_NAME = re.compile(r"^[\w][\w .,()+\-]*$")


def safe_file_name(name: str) -> str:
    """``name`` as a LoRA file name (``<name>.safetensors``) that stays inside the loras folder.

    Letters, digits, spaces and ``_ . , ( ) + -``, not starting with a dot or space, at most 120
    characters; no folders. Raises LoRAFileError naming the bad value otherwise."""
    stem = (name or "").strip()
    if stem.lower().endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    if not stem or len(stem) > 120 or not _NAME.match(stem) or ".." in stem:
        raise LoRAFileError(
            f"LoRA name '{name}' is not a plain file name: use at most 120 letters, digits, "
            "spaces and _ . , ( ) + - (no folders, no '..'); the file goes into models/loras/.")
    return stem + ".safetensors"
