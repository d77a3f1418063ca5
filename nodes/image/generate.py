"""Text-to-image with a loaded SpinBot image model (SD 1.5 / SDXL, optional SDXL refiner).

Every call builds a fresh pipeline object over the model's components with its own scheduler, so
scheduler state never leaks between runs or into the cached base. Image i of a batch uses seed
`seed + i`, so one image can be reproduced alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .. import runtime
from .checkpoint import ARCH_LABELS, ImageModel, ImageModelError, offload_all, rebuild_pipeline

# name -> (diffusers scheduler class, extra config)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "default": ("", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++ 2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++ 2m karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                        "use_karras_sigmas": True}),
    "dpm++ 2m sde karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                            "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

# preset -> {family: (width, height)}; SDXL sizes are its training buckets closest to the ratio.
SIZE_PRESETS: dict[str, dict[str, tuple[int, int]] | None] = {
    "custom": None,
    "portrait 9:16": {"sd15": (432, 768), "sdxl": (768, 1344)},
    "square 1:1": {"sd15": (512, 512), "sdxl": (1024, 1024)},
    "landscape 16:9": {"sd15": (768, 432), "sdxl": (1344, 768)},
}


@dataclass
class ImageSettings:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    cfg: float = 7.0
    scheduler: str = "default"
    seed: int = 0
    batch_size: int = 1
    refiner_split: float = 0.8


def resolve_size(preset: str, arch: str, width: int, height: int) -> tuple[int, int]:
    table = SIZE_PRESETS.get(preset)
    if table is not None:
        width, height = table["sd15" if arch == "sd15" else "sdxl"]
    if width % 8 or height % 8 or width < 8 or height < 8:
        raise ImageModelError(f"width and height must be positive multiples of 8 (got {width}x{height}).")
    return int(width), int(height)


def with_trigger(prompt: str, triggers: tuple[str, ...] | list[str]) -> str:
    """Prepend each LoRA trigger word the prompt does not already contain (whole words)."""
    missing = [w for w in triggers
               if w and not re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", prompt, re.IGNORECASE)]
    return ", ".join(missing + ([prompt] if prompt.strip() else []))


def make_scheduler(pipe, name: str):
    import diffusers

    if name not in SCHEDULERS:
        raise ImageModelError(f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name) if cls_name else type(pipe.scheduler)
    # diffusers lets values a config only inherited (`_use_default_values`) fall back to the new
    # class's defaults, and save_pretrained writes them out explicitly: without dropping that list
    # the same model would sample differently from a single file and from a saved folder.
    config = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
    return cls.from_config(config, **extra)


def _fresh(model: ImageModel, scheduler: str):
    pipe = rebuild_pipeline(model.pipe, {**model.pipe.components,
                                         "scheduler": make_scheduler(model.pipe, scheduler)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _step_callback(progress: runtime.Progress):
    def on_step_end(_pipe, _step, _timestep, callback_kwargs):
        progress.update(1)
        runtime.check_interrupted()
        return callback_kwargs
    return on_step_end


def generate_images(model: ImageModel, settings: ImageSettings,
                    refiner: ImageModel | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,3] float32 in 0..1."""
    if model.arch == "sdxl_refiner":
        raise ImageModelError("An SDXL refiner cannot start from noise: load an SDXL base model as "
                              "'model' and connect the refiner to 'refiner'.")
    if refiner is not None and (model.arch != "sdxl_base" or refiner.arch != "sdxl_refiner"):
        raise ImageModelError(f"'refiner' must be an SDXL refiner used with an SDXL base model (got "
                              f"{ARCH_LABELS[refiner.arch]} refining {ARCH_LABELS[model.arch]}).")
    if settings.steps < 1 or settings.batch_size < 1:
        raise ImageModelError("steps and batch size must be at least 1.")
    prompt = with_trigger(settings.prompt, model.trigger_words)
    generators = [torch.Generator("cpu").manual_seed((int(settings.seed) + i) % 2**64)
                  for i in range(settings.batch_size)]
    common = dict(prompt=prompt, negative_prompt=settings.negative or None,
                  num_inference_steps=int(settings.steps), guidance_scale=float(settings.cfg),
                  num_images_per_prompt=int(settings.batch_size), generator=generators)
    split = min(max(float(settings.refiner_split), 0.05), 0.95)
    runtime.check_interrupted()
    # Offloaded models start with every part on the CPU and end so, cancelled or not: accelerate's
    # hooks only check a part's first weight, and LoRA copies share weights with their base.
    offload_all(model, refiner)
    try:
        with runtime.Progress(settings.steps, desc="SpinBot image") as progress, \
                torch.inference_mode():
            callback = _step_callback(progress)
            pipe = _fresh(model, settings.scheduler)
            if refiner is None:
                images = pipe(width=settings.width, height=settings.height, output_type="pt",
                              callback_on_step_end=callback, **common).images
            else:
                latents = pipe(width=settings.width, height=settings.height, output_type="latent",
                               denoising_end=split, callback_on_step_end=callback, **common).images
                ref = _fresh(refiner, settings.scheduler)
                images = ref(image=latents, denoising_start=split, output_type="pt",
                             callback_on_step_end=callback, **common).images
    finally:
        offload_all(model, refiner)
    return images.float().clamp(0, 1).permute(0, 2, 3, 1).contiguous().cpu()
