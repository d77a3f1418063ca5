"""Identity LoRAs applied to a copy of a cached base pipeline, never to the base itself.

kohya / A1111 files (`lora_unet_*`, `lora_te_*`, `lora_te1_*`, `lora_te2_*` with `.alpha`) and
diffusers / PEFT files (`unet.*.lora_A.weight`, `text_encoder.*.lora_B.weight`) are normalised by
diffusers' own key conversion. Each affected Linear/Conv gets a new weight
`W + strength * alpha/rank * up @ down` inside a structural copy of its model whose other
parameters are the base tensors (shared, not copied), so two workflows on one base with different
LoRAs cannot see each other's weights and memory grows only by the patched layers.

A base loaded with model CPU offload carries accelerate hooks on its model parts. The copy shares
the hook objects instead of copying them, drops them, and gets hooks of its own: every model part
of the copy is then a structural copy (weights still shared), so that setting up its offload
chain cannot rewire the base's.
"""
from __future__ import annotations

import copy
import json
import os
from collections import Counter
from typing import Any

import torch

from .checkpoint import ARCH_LABELS, ImageModel, ImageModelError, place_pipeline, rebuild_pipeline

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def read_lora(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    name = os.path.basename(path)
    if not path.lower().endswith(".safetensors"):
        raise ImageModelError(f"LoRA {name}: only .safetensors LoRA files are loaded.")
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:
        raise ImageModelError(f"LoRA {name} is not a readable safetensors file: {exc}") from exc


def trigger_word(metadata: dict[str, str]) -> str:
    """The trigger from `modelspec.trigger_phrase` / `trigger_word`, else the most frequent tag
    of kohya's `ss_tag_frequency` (trainers caption every image with the trigger)."""
    for key in ("modelspec.trigger_phrase", "trigger_word", "ss_trigger_word", "trigger_phrase"):
        if metadata.get(key, "").strip():
            return metadata[key].strip()
    try:
        datasets = json.loads(metadata.get("ss_tag_frequency", "") or "{}")
    except json.JSONDecodeError:
        return ""
    counts: Counter = Counter()
    for tags in datasets.values():
        if isinstance(tags, dict):
            counts.update({str(t).strip(): int(n) for t, n in tags.items() if str(t).strip()})
    return counts.most_common(1)[0][0] if counts else ""


def declared_arch(metadata: dict[str, str]) -> str | None:
    text = " ".join(metadata.get(k, "") for k in ("ss_base_model_version", "modelspec.architecture",
                                                  "ss_sd_model_name")).lower()
    if "xl" in text:
        return "sdxl"
    if any(t in text for t in ("sd_v1", "stable-diffusion-v1", "v1-5", "sd15")):
        return "sd15"
    return None


def _to_peft_names(entries: dict[str, Any]) -> dict[str, Any]:
    """Old diffusers names (`attn1.processor.to_k_lora.down`, `self_attn.to_k_lora.down`) that
    diffusers' kohya conversion produces -> PEFT names (`attn1.to_k.lora_A`, `k_proj.lora_A`)."""
    from diffusers.utils.state_dict_utils import (StateDictType, convert_state_dict_to_peft,
                                                  convert_unet_state_dict_to_peft)

    unet = {k: v for k, v in entries.items() if k.startswith("unet.")}
    text = {k: v for k, v in entries.items() if not k.startswith("unet.")}
    out = convert_unet_state_dict_to_peft(unet)
    if any("_lora.down" in k or "_lora.up" in k for k in text):
        text = convert_state_dict_to_peft(text, StateDictType.DIFFUSERS_OLD)
    out.update({k.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B."): v
                for k, v in text.items()})
    return out


def normalise(sd: dict[str, torch.Tensor], model: ImageModel,
              name: str) -> dict[tuple[str, str], tuple]:
    """{(component, module name): (down, up, alpha or None)} in diffusers module names."""
    import diffusers

    arch = model.arch
    cls = diffusers.StableDiffusionPipeline if arch == "sd15" else diffusers.StableDiffusionXLPipeline
    try:
        # The UNet config lets diffusers map SGM block names (input_blocks_4_1) of SDXL kohya files.
        converted, alphas = cls.lora_state_dict(dict(sd), unet_config=model.pipe.unet.config)
    except Exception as exc:
        raise ImageModelError(f"LoRA {name} is not a LoRA format SpinBot reads: {exc}") from exc
    entries = _to_peft_names({**converted, **{k: v for k, v in (alphas or {}).items()}})
    out: dict[tuple[str, str], tuple] = {}
    for key, down in entries.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        up = entries.get(module + ".lora_B.weight")
        if up is None:
            raise ImageModelError(f"LoRA {name}: {module} has a down weight but no up weight.")
        component, _, inner = module.partition(".")
        if component not in COMPONENTS:
            raise ImageModelError(f"LoRA {name} targets '{component}', which SD pipelines do not have.")
        alpha = next((entries[k] for k in (key + ".alpha", module + ".alpha") if k in entries), None)
        out[(component, inner)] = (down, up, None if alpha is None else float(alpha))
    if not out:
        raise ImageModelError(f"LoRA {name} holds no LoRA weights SpinBot recognises.")
    return out


def _find(module: torch.nn.Module, name: str) -> torch.nn.Module | None:
    modules = dict(module.named_modules())
    for candidate in (name, name.removeprefix("text_model."), "text_model." + name):
        if candidate in modules:
            return modules[candidate]
    return None


def delta_weight(down: torch.Tensor, up: torch.Tensor, alpha: float | None,
                 weight: torch.Tensor) -> torch.Tensor:
    rank = down.shape[0]
    scale = (alpha / rank) if alpha else 1.0
    # Linear: up [out,r] @ down [r,in]; conv (LoCon): up [out,r,1,1] @ down [r,in,k,k] flattened.
    return (up.float().flatten(1) @ down.float().flatten(1)).reshape(weight.shape) * scale


def share_clone(module: torch.nn.Module) -> torch.nn.Module:
    """A structural copy of ``module`` whose parameters and buffers ARE the original tensors,
    without the original's accelerate (offload) hooks."""
    memo = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    # A hook links to the previous model of the offload chain; copying it would copy that model.
    hooks = [m._hf_hook for m in module.modules() if hasattr(m, "_hf_hook")]  # noqa: SLF001
    memo.update({id(h): h for h in hooks})
    clone = copy.deepcopy(module, memo)
    if hooks:
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(clone, recurse=True)
    return clone


def apply_loras(model: ImageModel, loras: list[tuple[str, str, float]]) -> ImageModel:
    """``loras``: (path, display name, strength). Returns a new ImageModel; ``model`` is untouched."""
    family = "sd15" if model.arch == "sd15" else "sdxl"
    pending: dict[str, list[tuple[str, tuple, float]]] = {}
    triggers = list(model.trigger_words)
    for path, name, strength in loras:
        sd, meta = read_lora(path)
        declared = declared_arch(meta)
        if declared and declared != family:
            raise ImageModelError(f"LoRA {name} was trained for {ARCH_LABELS.get(declared, 'SDXL')} "
                                  f"but the model is {ARCH_LABELS[model.arch]}; pick a LoRA made "
                                  "for this base.")
        for (component, inner), parts in normalise(sd, model, name).items():
            pending.setdefault(component, []).append((inner, parts, float(strength), name))
        word = trigger_word(meta)
        if word and word not in triggers:
            triggers.append(word)
    components = dict(model.pipe.components)
    for component, patches in pending.items():
        base = components.get(component)
        if base is None:
            raise ImageModelError(f"LoRA {patches[0][3]} patches {component}, which "
                                  f"{ARCH_LABELS[model.arch]} does not have: it was made for "
                                  "another base model.")
        clone = share_clone(base)
        new_weights: dict[str, torch.Tensor] = {}
        for inner, (down, up, alpha), strength, name in patches:
            target = _find(clone, inner)
            weight = getattr(target, "weight", None)
            if weight is None:
                raise ImageModelError(f"LoRA {name} targets {component}.{inner}, which this "
                                      f"{ARCH_LABELS[model.arch]} model does not have: the LoRA "
                                      "was made for another base model.")
            if down.shape[1] * (down[0, 0].numel() if down.ndim == 4 else 1) != \
                    weight[0].numel() or up.shape[0] != weight.shape[0]:
                raise ImageModelError(
                    f"LoRA {name} does not fit {ARCH_LABELS[model.arch]}: {component}.{inner} is "
                    f"{tuple(weight.shape)} but the LoRA expects {up.shape[0]}x{down.shape[1]}. "
                    "It was made for another base model.")
            if strength == 0.0:
                continue
            key = id(target)
            current = new_weights.get(key, weight.detach().float())
            new_weights[key] = current + strength * delta_weight(down, up, alpha, weight).to(weight.device)
            target._spinbot_new_weight = new_weights[key]  # noqa: SLF001 - applied below
        for module in clone.modules():
            new = module.__dict__.pop("_spinbot_new_weight", None)
            if new is not None:
                module.weight = torch.nn.Parameter(new.to(module.weight.dtype), requires_grad=False)
        components[component] = clone
    if model.offloaded:
        for name, part in components.items():
            if isinstance(part, torch.nn.Module) and name not in pending:
                components[name] = share_clone(part)
    pipe = rebuild_pipeline(model.pipe, components)
    pipe.set_progress_bar_config(disable=True)
    if model.offloaded:
        place_pipeline(pipe, torch.device(model.device), offload=True)
    applied = model.loras + tuple((name, float(s)) for _path, name, s in loras)
    # Cached as a copy of the base: after ComfyUI unloads it, it is made again from the files.
    return model.with_pipe(pipe, rebuild=lambda: apply_loras(model, loras).pipe,
                           trigger_words=tuple(triggers), loras=applied)


def describe(model: ImageModel) -> dict[str, Any]:
    return {"arch": model.arch, "loras": list(model.loras), "triggers": list(model.trigger_words)}
