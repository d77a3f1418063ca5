"""Identity LoRA training on a loaded SD 1.5 / SDXL pipeline (diffusers + peft).

The method is DreamBooth-LoRA as diffusers' `examples/dreambooth/train_dreambooth_lora(_sdxl).py`
and kohya's sd-scripts run it: rank-r LoRA on the UNet attention projections (`to_q`, `to_k`,
`to_v`, `to_out.0`; optionally the CLIP `q/k/v/out_proj`), noise-prediction MSE against the
scheduler's target (epsilon, or velocity for v-prediction models), constant learning rate, AdamW
(betas 0.9/0.999, weight decay 1e-2, eps 1e-8, gradient norm clipped at 1.0: the scripts'
defaults), batch size 1, latents cached once (VAE posterior mean x scaling factor).

Memory: the frozen weights are the cached pipeline's own tensors (bf16/fp16 on a GPU), shared by a
structural copy of the UNet that carries the LoRA layers, so the base is never modified and never
copied; gradient checkpointing and autocast keep activations small; bitsandbytes' 8-bit AdamW is
used on CUDA when it is installed.

Determinism and resume: every random draw of step k (which photo, the noise, the timestep) comes
from a generator seeded with (seed, k), so no RNG state has to be carried; the LoRA weights, the
optimizer state and the step are saved at each checkpoint into the run folder, and a run with the
same inputs continues from there. On the CPU a resumed run is bitwise identical to an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import model_cache, runtime
from ..files import atomic_path
from ..image.checkpoint import ImageModel, offload_all, pipeline_modules, rebuild_pipeline
from ..image.lora import share_clone
from . import kohya

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
STATE_FILE = "state.pt"
TABLE_FILE = "checkpoints.json"
FORMAT_VERSION = 1

# Presets. Learning rate 1e-4, constant: diffusers' DreamBooth-LoRA READMEs (SD 1.5 and SDXL
# examples) and kohya's usual unet_lr. Steps: the README examples run 500 steps for 5 photos;
# ~100 steps per photo for 10 photos is kohya's common rule of thumb, hence 1000/1600 for the
# larger presets. Rank/alpha: diffusers' default rank is 4; identity LoRAs are usually trained at
# 8..32 with alpha = rank or rank/2 (kohya guides). Resolution: the base model's native size.
PRESETS: dict[str, dict[str, float]] = {
    "quick": {"rank": 8, "alpha": 8.0, "learning_rate": 1e-4, "steps": 500},
    "standard": {"rank": 16, "alpha": 8.0, "learning_rate": 1e-4, "steps": 1000},
    "strong": {"rank": 32, "alpha": 16.0, "learning_rate": 1e-4, "steps": 1600},
}
NATIVE_RESOLUTION = {"sd15": 512, "sdxl_base": 1024}
CHECKPOINTS_PER_RUN = 4   # default checkpoint_every = steps / 4
SAMPLE_PROMPT = "photo of {trigger} person"


class IdentityTrainError(ValueError):
    """A training input or state problem, worded for the user."""


@dataclass(frozen=True)
class TrainSettings:
    """Resolved training settings (no 0 = preset placeholders left)."""
    rank: int
    alpha: float
    learning_rate: float
    steps: int
    resolution: int
    checkpoint_every: int
    train_text_encoder: bool = False
    seed: int = 0
    samples: int = 2
    sample_steps: int = 20
    sample_cfg: float = 7.0

    def trajectory_key(self) -> dict:
        """What changes the weights at step k (steps, checkpoint spacing and sampling do not:
        the learning rate is constant, so a longer run is the shorter one continued)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("steps", "checkpoint_every", "samples", "sample_steps", "sample_cfg")}


def resolve_settings(preset: str, arch: str, rank: int = 0, alpha: float = 0.0,
                     learning_rate: float = 0.0, steps: int = 0, resolution: int = 0,
                     checkpoint_every: int = 0, **others) -> TrainSettings:
    """The preset's values with every override that is > 0 (0 or -1 means 'preset').

    Raises IdentityTrainError for an unknown preset, an SDXL refiner, or a resolution that is not
    a multiple of 64 (the UNet downsamples latents 3 times and the VAE 8x)."""
    if preset not in PRESETS:
        raise IdentityTrainError(f"unknown preset '{preset}'; choose {', '.join(PRESETS)}.")
    if arch not in NATIVE_RESOLUTION:
        raise IdentityTrainError("identity LoRAs are trained on an SD 1.5 or SDXL base model, not "
                                 "an SDXL refiner.")
    p = PRESETS[preset]
    pick = lambda v, d: v if v and v > 0 else d  # noqa: E731
    steps = int(pick(steps, p["steps"]))
    res = int(pick(resolution, NATIVE_RESOLUTION[arch]))
    if res % 64:
        raise IdentityTrainError(f"resolution must be a multiple of 64 (got {res}).")
    every = int(pick(checkpoint_every, max(1, math.ceil(steps / CHECKPOINTS_PER_RUN))))
    return TrainSettings(rank=int(pick(rank, p["rank"])), alpha=float(pick(alpha, p["alpha"])),
                         learning_rate=float(pick(learning_rate, p["learning_rate"])),
                         steps=steps, resolution=res, checkpoint_every=min(every, steps), **others)


@dataclass
class Sample:
    """One training example: uint8 [H,W,3] image (H, W multiples of 64) and its caption."""
    name: str
    image: np.ndarray
    caption: str


def as_samples(items: Sequence[Any]) -> list[Sample]:
    """16a's TrainItem objects (name, image, caption) or (image, caption) / (name, image, caption)
    tuples -> Samples; raises IdentityTrainError for an empty list or a bad image."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            name, image, caption = item if len(item) == 3 else (f"photo {i + 1}", *item)
        else:
            name, image, caption = item.name, item.image, item.caption
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise IdentityTrainError(f"{name}: expected a uint8 [H,W,3] image, got "
                                     f"{image.dtype} {tuple(image.shape)}.")
        if image.shape[0] % 64 or image.shape[1] % 64:
            raise IdentityTrainError(f"{name}: {image.shape[1]}x{image.shape[0]} is not a multiple "
                                     "of 64 (crop it to a training bucket first).")
        out.append(Sample(str(name), image, str(caption)))
    if not out:
        raise IdentityTrainError("no training photos: give at least 3 photos of the person.")
    return out


def dataset_hash(samples: Sequence[Sample]) -> str:
    """sha256 (first 16 hex digits) over each sample's name-free pixels, size and caption."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.image.shape}|{s.caption}|".encode())
        digest.update(np.ascontiguousarray(s.image).tobytes())
    return digest.hexdigest()[:16]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step (stateless: resume needs no RNG state)."""
    mixed = hashlib.sha256(f"{int(seed)}:{int(step)}".encode()).digest()
    return torch.Generator("cpu").manual_seed(int.from_bytes(mixed[:8], "little") & (2**63 - 1))


def sample_order(seed: int, epoch: int, count: int) -> list[int]:
    return torch.randperm(count, generator=step_generator(seed, -1 - epoch)).tolist()


# ----------------------------------------------------------------------------- the trainer

@dataclass
class FixedBatch:
    """Latents, noise, timesteps and conditioning held fixed to measure the loss."""
    index: list[int]
    noise: list[torch.Tensor]
    timesteps: list[torch.Tensor]


class LoRATrainer:
    """LoRA layers on copies of a pipeline's UNet (and text encoders), trained in place.

    ``pipe``: a diffusers SD 1.5 / SDXL pipeline (or a ModelRef to one); it is not modified.
    """

    def __init__(self, pipe: Any, arch: str, samples: Sequence[Sample], settings: TrainSettings,
                 device: torch.device | None = None):
        from peft import LoraConfig

        self.base = model_cache.resolve(pipe)
        self.arch, self.settings = arch, settings
        self.samples = list(samples)
        self.device = device or next(self.base.unet.parameters()).device
        self.weight_dtype = next(self.base.unet.parameters()).dtype
        self.autocast_dtype = None
        if self.device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scheduler = _training_scheduler(self.base)
        self.prediction = self.scheduler.config.prediction_type

        self.unet = self._lora_copy(self.base.unet, LoraConfig(
            r=settings.rank, lora_alpha=settings.alpha, target_modules=UNET_TARGETS,
            init_lora_weights="gaussian", lora_dropout=0.0))
        self.text_encoders: dict[str, torch.nn.Module] = {}
        for name in ("text_encoder", "text_encoder_2"):
            module = getattr(self.base, name, None)
            if module is None:
                continue
            if settings.train_text_encoder:
                module = self._lora_copy(module, LoraConfig(
                    r=settings.rank, lora_alpha=settings.alpha, target_modules=TEXT_TARGETS,
                    init_lora_weights="gaussian", lora_dropout=0.0))
            self.text_encoders[name] = module
        self._init_lora(settings.seed)
        self.params = [p for m in self.lora_modules().values() for p in m.parameters() if p.requires_grad]
        self.optimizer, self.optimizer_name = _optimizer(self.params, settings.learning_rate, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.text_pipe = rebuild_pipeline(self.base, {**self.base.components, **self.text_encoders,
                                                      "unet": self.unet})
        self.text_pipe.set_progress_bar_config(disable=True)
        self.latents = self._encode_latents()
        self._cond_cache: dict[str, tuple] = {}
        self.step = 0

    # -- construction
    def _lora_copy(self, module: torch.nn.Module, config) -> torch.nn.Module:
        from peft import inject_adapter_in_model

        plain_tensors(module)
        clone = share_clone(module)
        for p in clone.parameters():
            p.requires_grad_(False)  # the shared base tensors: frozen (they are inference weights)
        clone = inject_adapter_in_model(config, clone, adapter_name="default")
        for name, p in clone.named_parameters():
            if "lora_" in name:
                # LoRA weights train in fp32 whatever the base dtype (autocast does the matmuls).
                p.data = p.data.to(self.device, torch.float32)
                p.requires_grad_(True)
        if hasattr(clone, "enable_gradient_checkpointing"):
            clone.enable_gradient_checkpointing()
        elif hasattr(clone, "gradient_checkpointing_enable"):
            clone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        clone.train()
        return clone

    def lora_modules(self) -> dict[str, torch.nn.Module]:
        out = {"unet": self.unet}
        if self.settings.train_text_encoder:
            out.update(self.text_encoders)
        return out

    def _init_lora(self, seed: int) -> None:
        """lora_A ~ N(0, 1/rank) (peft's 'gaussian' init, as diffusers' scripts use), lora_B = 0,
        drawn from a generator of ``seed`` so the start is the same on every run."""
        gen = torch.Generator("cpu").manual_seed(int(seed) & (2**63 - 1))
        with torch.no_grad():
            for component, module in self.lora_modules().items():
                for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
                    if ".lora_A." in name:
                        p.copy_(torch.randn(p.shape, generator=gen) / self.settings.rank)
                    elif ".lora_B." in name:
                        p.zero_()

    def _encode_latents(self) -> list[torch.Tensor]:
        vae = self.base.vae
        scale = float(vae.config.scaling_factor)
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        out = []
        with torch.no_grad():
            for s in self.samples:
                runtime.check_interrupted()
                pixels = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                pixels = pixels.to(vae.device, vae.dtype)
                mean = vae.encode(pixels).latent_dist.mean
                out.append(((mean.float() - shift) * scale).cpu())
        return out

    # -- conditioning
    def _condition(self, caption: str, height: int, width: int, grad: bool):
        if not grad and caption in self._cond_cache:
            embeds, added = self._cond_cache[caption]
        else:
            with torch.set_grad_enabled(grad), self._autocast():
                if self.arch == "sd15":
                    embeds = self.text_pipe.encode_prompt(caption, self.device, 1, False)[0]
                    added = None
                else:
                    embeds, _n, pooled, _np = self.text_pipe.encode_prompt(
                        caption, device=self.device, num_images_per_prompt=1,
                        do_classifier_free_guidance=False)
                    added = {"text_embeds": pooled}
            if not grad:
                self._cond_cache[caption] = (embeds.detach(), added)
        if added is not None:
            # SDXL micro-conditioning: original size, crop top-left, target size (pixels).
            ids = torch.tensor([[height, width, 0, 0, height, width]], device=self.device,
                               dtype=added["text_embeds"].dtype)
            added = {**added, "time_ids": ids}
        return embeds, added

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # -- one loss
    def loss(self, index: int, noise: torch.Tensor, timestep: torch.Tensor,
             grad: bool = True) -> torch.Tensor:
        """Noise-prediction MSE of sample ``index`` at ``timestep`` with ``noise`` (fp32 scalar)."""
        latents = self.latents[index].to(self.device)
        noise = noise.to(self.device)
        t = timestep.to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        if self.prediction == "epsilon":
            target = noise
        elif self.prediction == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, t)
        else:
            raise IdentityTrainError(f"unsupported prediction type {self.prediction}")
        h, w = self.samples[index].image.shape[:2]
        text_grad = grad and self.settings.train_text_encoder
        embeds, added = self._condition(self.samples[index].caption, h, w, text_grad)
        with torch.set_grad_enabled(grad), self._autocast():
            pred = self.unet(noisy.to(self.weight_dtype), t, encoder_hidden_states=embeds,
                             added_cond_kwargs=added).sample
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def draw(self, step: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(sample index, noise, timestep) of training step ``step`` (0-based)."""
        n = len(self.samples)
        index = sample_order(self.settings.seed, step // n, n)[step % n]
        gen = step_generator(self.settings.seed, step)
        noise = torch.randn(self.latents[index].shape, generator=gen)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (1,), generator=gen)
        return index, noise, t

    def fixed_batch(self, count: int = 4, seed: int = 1234) -> FixedBatch:
        gen = torch.Generator("cpu").manual_seed(seed)
        index = [i % len(self.samples) for i in range(count)]
        noise = [torch.randn(self.latents[i].shape, generator=gen) for i in index]
        ts = [torch.randint(0, self.scheduler.config.num_train_timesteps, (1,), generator=gen)
              for _ in index]
        return FixedBatch(index, noise, ts)

    def eval_loss(self, batch: FixedBatch) -> float:
        """Mean loss over a fixed batch, without gradients."""
        with torch.no_grad():
            return float(np.mean([self.loss(i, n, t, grad=False).item()
                                  for i, n, t in zip(batch.index, batch.noise, batch.timesteps)]))

    def train_step(self, example: tuple[int, torch.Tensor, torch.Tensor] | None = None) -> float:
        """One optimizer step on ``example`` (sample index, noise, timestep), by default this
        step's own draw; returns its loss."""
        index, noise, t = example if example is not None else self.draw(self.step)
        loss = self.loss(index, noise, t)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.detach())

    # -- state
    def peft_states(self) -> dict[str, dict[str, torch.Tensor]]:
        from peft import get_peft_model_state_dict

        return {name: {k: v.detach().cpu().clone() for k, v in
                       get_peft_model_state_dict(module, adapter_name="default").items()}
                for name, module in self.lora_modules().items()}

    def load_peft_states(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        from peft import set_peft_model_state_dict

        for name, module in self.lora_modules().items():
            result = set_peft_model_state_dict(module, states[name], adapter_name="default")
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise IdentityTrainError(f"checkpoint does not fit this model ({name}: "
                                         f"{unexpected[:2]}...)")

    def state(self) -> dict:
        return {"version": FORMAT_VERSION, "step": self.step, "lora": self.peft_states(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "optimizer_name": self.optimizer_name}

    def load_state(self, state: dict) -> None:
        self.load_peft_states(state["lora"])
        if state.get("optimizer_name") == self.optimizer_name:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])

    def kohya_tensors(self) -> dict[str, torch.Tensor]:
        return kohya.to_kohya(self.peft_states(), self.settings.alpha, self.arch)

    # -- samples
    def render(self, prompt: str, seeds: Sequence[int], size: int, steps: int,
               cfg: float) -> np.ndarray:
        """uint8 [N,H,W,3] images from the current weights, one per seed."""
        from ..image.generate import make_scheduler

        modules = list(self.lora_modules().values())
        for m in modules:
            m.eval()
        try:
            pipe = rebuild_pipeline(self.base, {**self.text_pipe.components,
                                                "scheduler": make_scheduler(self.base, "default")})
            pipe.set_progress_bar_config(disable=True)
            images = []
            with torch.inference_mode(), self._autocast():
                for seed in seeds:
                    runtime.check_interrupted()
                    gen = torch.Generator("cpu").manual_seed(int(seed))
                    out = pipe(prompt=prompt, width=size, height=size, num_inference_steps=steps,
                               guidance_scale=cfg, generator=gen, output_type="np").images
                    images.append(np.clip(np.asarray(out[0], dtype=np.float32) * 255 + 0.5, 0, 255)
                                  .astype(np.uint8))
            return np.stack(images)
        finally:
            for m in modules:
                m.train()


def plain_tensors(module: torch.nn.Module) -> None:
    """Replace inference tensors among ``module``'s parameters and buffers by normal tensors with
    the same values, in place in the module (the cached pipeline then infers exactly as before;
    one tensor is held twice at a time, and LoRA copies made earlier keep the old ones alive).

    ComfyUI runs every node under `torch.inference_mode()`, so a pipeline loaded by a node holds
    inference tensors, and autograd refuses them in a graph ("Inference tensors cannot be saved
    for backward", "... do not track version counter") even when they need no gradient. Swapping
    `.data` is not enough: the Parameter object itself stays an inference tensor."""
    with torch.inference_mode(False), torch.no_grad():
        for m in module.modules():
            for name, p in list(m._parameters.items()):  # noqa: SLF001
                if p is not None and p.is_inference():
                    m._parameters[name] = torch.nn.Parameter(  # noqa: SLF001
                        p.detach().clone(), requires_grad=p.requires_grad)
            for name, b in list(m._buffers.items()):  # noqa: SLF001
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()  # noqa: SLF001


def _training_scheduler(pipe):
    from diffusers import DDPMScheduler

    config = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(config)


def _optimizer(params: list, lr: float, device: torch.device):
    kwargs = dict(lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    if device.type == "cuda":
        try:
            import bitsandbytes as bnb  # optional: halves optimizer memory (8-bit moments)

            return bnb.optim.AdamW8bit(params, **kwargs), "AdamW8bit"
        except Exception:  # noqa: BLE001 - not installed, or no CUDA build of it
            pass
    return torch.optim.AdamW(params, **kwargs), "AdamW"


# ----------------------------------------------------------------------------- a whole run

@dataclass
class CheckpointRow:
    step: int
    loss: float
    similarity: float | None
    file: str
    samples: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    path: str
    best: CheckpointRow
    table: list[CheckpointRow]
    samples: np.ndarray
    resumed_from: int
    reused: bool
    loss_first: float | None
    loss_last: float | None
    seconds_per_step: float | None
    optimizer: str
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"Identity LoRA: {os.path.basename(self.path)} (checkpoint step {self.best.step})"]
        if self.reused:
            lines.append("finished run reused (same photos, model and settings)")
        if self.resumed_from:
            lines.append(f"resumed from step {self.resumed_from}")
        if self.loss_first is not None and self.loss_last is not None:
            lines.append(f"loss {self.loss_first:.4f} (first 10 steps) -> {self.loss_last:.4f} "
                         f"(last 10); optimizer {self.optimizer}")
        if self.seconds_per_step:
            lines.append(f"{self.seconds_per_step:.3f} s/step")
        lines.append("step | loss | face similarity")
        for row in self.table:
            sim = "n/a" if row.similarity is None else f"{row.similarity:.3f}"
            mark = "  <- kept" if row.step == self.best.step else ""
            lines.append(f"{row.step} | {row.loss:.4f} | {sim}{mark}")
        return "\n".join(lines + self.notes)


def run_key(model_key: str, arch: str, trigger: str, data_hash: str, settings: TrainSettings) -> str:
    blob = json.dumps({"model": model_key, "arch": arch, "trigger": trigger, "data": data_hash,
                       "settings": settings.trajectory_key(), "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_identity(model: ImageModel) -> str:
    """The base model's cache key (file stamps, dtype, device) plus applied LoRAs."""
    return repr((getattr(model.pipe, "key", model.name), model.loras))


def _atomic_torch_save(obj, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _save_png(image: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _load_png(path: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def train_identity_lora(model: ImageModel, items: Sequence[Any], trigger: str,
                        settings: TrainSettings, out_path: str, run_dir: str, *,
                        name: str = "", data_hash: str | None = None,
                        similarity: Callable[[np.ndarray], float | None] | None = None,
                        notes: Sequence[str] = ()) -> TrainResult:
    """Train (or resume, or reuse) an identity LoRA and write the best checkpoint to ``out_path``.

    ``items``: training samples (see `as_samples`). ``run_dir``: the run folder for checkpoints
    (`state.pt`, `step_<k>.safetensors`, sample PNGs, `checkpoints.json`); the caller keys it by
    `run_key`. ``similarity``: uint8 [N,H,W,3] samples -> mean face similarity to the photos
    (None when no face was found); without it the last checkpoint is kept.
    Raises IdentityTrainError for bad inputs and runtime's interrupt on Cancel (the last
    checkpoint stays in ``run_dir``)."""
    samples = as_samples(items)
    trigger = (trigger or "").strip()
    if not trigger:
        raise IdentityTrainError("the trigger word is empty: give a rare token such as 'ohwx'.")
    data_hash = data_hash or dataset_hash(samples)
    os.makedirs(run_dir, exist_ok=True)
    table_path = os.path.join(run_dir, TABLE_FILE)
    table = [CheckpointRow(**r) for r in json.load(open(table_path))] \
        if os.path.isfile(table_path) else []
    table = [r for r in table if os.path.isfile(os.path.join(run_dir, r.file))]
    state_path = os.path.join(run_dir, STATE_FILE)
    sample_seeds = [int(settings.seed) + 1000 + i for i in range(max(settings.samples, 0))]
    prompt = SAMPLE_PROMPT.format(trigger=trigger)
    meta_args = dict(arch=model.arch, trigger=trigger, base_model=model.name, rank=settings.rank,
                     alpha=settings.alpha, learning_rate=settings.learning_rate,
                     resolution=settings.resolution, num_images=len(samples), dataset_hash=data_hash,
                     seed=settings.seed, name=name or os.path.splitext(os.path.basename(out_path))[0],
                     train_text_encoder=settings.train_text_encoder)
    done = [r for r in table if r.step <= settings.steps]
    finished = any(r.step == settings.steps for r in done)

    trainer = None
    resumed_from = 0
    losses: list[float] = []
    seconds = None
    optimizer_name = ""
    if not finished:
        runtime.check_interrupted()
        if model.offloaded:
            # training needs the UNet, VAE and text encoders on the device at once; each part is
            # moved by hand (pipe.to() refuses pipelines with offload hooks) and offload_all
            # puts them back below
            offload_all(model)
            for part in pipeline_modules(model.pipe):
                part.to(runtime.torch_device())
        try:
            # ComfyUI runs nodes in inference mode; training needs autograd (and normal tensors,
            # see plain_tensors)
            with torch.inference_mode(False), torch.enable_grad():
                trainer = LoRATrainer(model.pipe, model.arch, samples, settings)
                optimizer_name = trainer.optimizer_name
                if os.path.isfile(state_path):
                    state = torch.load(state_path, map_location="cpu", weights_only=True)
                    if int(state["step"]) <= settings.steps:
                        trainer.load_state(state)
                        resumed_from = trainer.step
                losses, seconds = _train_loop(trainer, settings, run_dir, table, table_path,
                                              state_path, prompt, sample_seeds, similarity,
                                              meta_args)
        finally:
            del trainer
            if model.offloaded:
                offload_all(model)
            runtime.release_memory()
        done = [r for r in table if r.step <= settings.steps]
    scored = [r for r in done if r.similarity is not None]
    best = max(scored, key=lambda r: (r.similarity, r.step)) if scored else max(done, key=lambda r: r.step)
    tensors, meta = kohya.read(os.path.join(run_dir, best.file))
    meta.update({"ss_steps": str(best.step), "spinbot.checkpoint_table": json.dumps(
        [[r.step, round(r.loss, 5), r.similarity] for r in done])})
    if best.similarity is not None:
        meta["spinbot.face_similarity"] = f"{best.similarity:.4f}"
    kohya.save(out_path, tensors, meta)
    images = np.stack([_load_png(os.path.join(run_dir, f)) for f in best.samples]) \
        if best.samples else np.zeros((1, 64, 64, 3), np.uint8)
    extra_notes = list(notes)
    if similarity is None:
        extra_notes.append("no face recogniser: the last checkpoint was kept")
    return TrainResult(path=out_path, best=best, table=done, samples=images,
                       resumed_from=resumed_from, reused=finished, optimizer=optimizer_name,
                       loss_first=float(np.mean(losses[:10])) if losses else None,
                       loss_last=float(np.mean(losses[-10:])) if losses else None,
                       seconds_per_step=seconds, metadata=meta, notes=extra_notes)


def _train_loop(trainer: LoRATrainer, settings: TrainSettings, run_dir: str,
                table: list[CheckpointRow], table_path: str, state_path: str, prompt: str,
                sample_seeds: list[int], similarity, meta_args: dict) -> tuple[list[float], float | None]:
    losses: list[float] = []
    todo = settings.steps - trainer.step
    started = time.perf_counter()
    with runtime.Progress(max(todo, 1), desc="SpinBot identity LoRA") as progress:
        while trainer.step < settings.steps:
            runtime.check_interrupted()
            losses.append(trainer.train_step())
            done = len(losses)
            per_step = (time.perf_counter() - started) / done
            eta = per_step * (settings.steps - trainer.step)
            text = (f"step {trainer.step}/{settings.steps}  loss {np.mean(losses[-20:]):.4f}  "
                    f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
            preview = None
            if trainer.step % settings.checkpoint_every == 0 or trainer.step == settings.steps:
                row = _checkpoint(trainer, settings, run_dir, table, table_path, state_path,
                                  prompt, sample_seeds, similarity, meta_args, losses)
                if row.samples and runtime.IN_COMFYUI:
                    from PIL import Image

                    preview = ("JPEG", Image.open(os.path.join(run_dir, row.samples[0])), 512)
                sim = "" if row.similarity is None else f"  face {row.similarity:.3f}"
                text += f"  [checkpoint {row.step}{sim}]"
            progress.update(1, preview)
            progress.text(text)
    return losses, (time.perf_counter() - started) / max(len(losses), 1) if losses else None


def _checkpoint(trainer: LoRATrainer, settings: TrainSettings, run_dir: str,
                table: list[CheckpointRow], table_path: str, state_path: str, prompt: str,
                sample_seeds: list[int], similarity, meta_args: dict,
                losses: list[float]) -> CheckpointRow:
    step = trainer.step
    file = f"step_{step:06d}.safetensors"
    kohya.save(os.path.join(run_dir, file), trainer.kohya_tensors(),
               kohya.metadata(steps=step, **meta_args))
    images = trainer.render(prompt, sample_seeds, settings.resolution, settings.sample_steps,
                            settings.sample_cfg) if sample_seeds else np.zeros((0, 1, 1, 3), np.uint8)
    names = []
    for i, image in enumerate(images):
        names.append(f"step_{step:06d}_sample_{i}.png")
        _save_png(image, os.path.join(run_dir, names[-1]))
    score = similarity(images) if similarity is not None and len(images) else None
    row = CheckpointRow(step=step, loss=float(np.mean(losses[-settings.checkpoint_every:])),
                        similarity=None if score is None else float(score), file=file,
                        samples=names)
    table[:] = [r for r in table if r.step != step] + [row]
    table.sort(key=lambda r: r.step)
    # state last: a crash between the files leaves the previous state, which is still valid
    with atomic_path(table_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump([asdict(r) for r in table], f, indent=1)
    _atomic_torch_save(trainer.state(), state_path)
    return row
