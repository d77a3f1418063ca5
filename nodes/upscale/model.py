"""Upscale models from ComfyUI's ``upscale_models`` folder, loaded with spandrel.

spandrel (the loader ComfyUI itself uses) recognises the architecture from the state dict: the
Real-ESRGAN releases (RRDBNet x4/x2, anime 6B, SRVGGNet "realesr-general"), ESRGAN, SwinIR, HAT,
DAT, SPAN and the rest of its list. Weights are read here with safetensors or
``torch.load(weights_only=True)``; spandrel only detects and builds the network.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .. import model_cache, runtime
from ..manifest import require_model

FOLDER = "upscale_models"
SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
DEFAULT_MODEL = "realesr-general-x4v3.pth"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

log = logging.getLogger("spinbot.upscale")


class UpscaleModelError(ValueError):
    """A model file that cannot be used as an upscaler, with a message for the user."""


@dataclass
class Upscaler:
    """A loaded image-to-image model and what the tiler needs to know about it."""

    descriptor: "object"  # spandrel.ImageModelDescriptor (import kept lazy)
    name: str
    path: str

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def multiple_of(self) -> int:
        return int(self.descriptor.size_requirements.multiple_of)

    @property
    def minimum_size(self) -> int:
        return int(self.descriptor.size_requirements.minimum)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    def describe(self) -> str:
        tags = ", ".join(self.descriptor.tags)
        return f"{self.name}: {self.architecture} x{self.scale}" + (f" ({tags})" if tags else "")

    def size_bytes(self) -> int:
        model = self.descriptor.model
        return sum(t.numel() * t.element_size()
                   for t in [*model.parameters(), *model.buffers()])

    def to(self, device: torch.device, dtype: torch.dtype) -> "Upscaler":
        self.descriptor.to(device=device, dtype=dtype)
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in 0..1 (the model's device and dtype) -> ``[B,3,H*s,W*s]`` in 0..1."""
        return self.descriptor(image)


def list_upscalers() -> list[str]:
    return runtime.list_models(FOLDER, SUFFIXES)


_CACHE_SIZE = 2  # the video upscaler and a lip-sync crop upscaler


def load_upscaler(name: str) -> Upscaler:
    """``name`` from the upscale_models folder(s), from the pack's model cache (loaded on the
    CPU when it is not there; ComfyUI can unload it); a missing file names folder and source.
    The engine moves it to the device for a run and back afterwards."""
    path = require_model(FOLDER, name)
    return model_cache.cached_model("upscale", ("upscale", runtime.file_stamp(path)),
                                lambda: load_upscaler_file(path, name), name=name,
                                modules=lambda up: [up.descriptor.model], limit=_CACHE_SIZE)


def _read_state_dict(path: str, name: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUFFIXES:
        raise UpscaleModelError(f"'{name}': unsupported file type '{ext}'; upscalers are "
                                f"{', '.join(SUFFIXES)} files")
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, TorchScript or pickled code
        raise UpscaleModelError(
            f"'{name}' could not be read as a model file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); re-download it") from exc


def load_upscaler_file(path: str, name: str | None = None) -> Upscaler:
    """Load a model file with spandrel and check that it maps RGB images to RGB images."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError, \
        canonicalize_state_dict

    name = name or os.path.basename(path)
    raw = _read_state_dict(path, name)
    if not isinstance(raw, dict) or not raw:
        raise UpscaleModelError(f"'{name}' holds no state dict (got {type(raw).__name__})")
    state_dict = canonicalize_state_dict(raw)
    try:
        descriptor = ModelLoader().load_from_state_dict(state_dict)
    except UnsupportedModelError as exc:
        raise UpscaleModelError(
            f"'{name}' is not an image upscaler that spandrel recognises (the file in the "
            f"'{FOLDER}' folder holds {len(state_dict)} tensors of another kind of model). Put "
            "an ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, SPAN or similar upscaler there") from exc
    except Exception as exc:  # a known architecture with inconsistent tensors
        raise UpscaleModelError(f"'{name}' looks like an upscaler but does not load "
                                f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UpscaleModelError(f"'{name}' is a {descriptor.architecture.name} model "
                                f"({descriptor.purpose}), not an image upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscaleModelError(
            f"'{name}' maps {descriptor.input_channels}-channel images to "
            f"{descriptor.output_channels}-channel ones; only RGB models are supported")
    descriptor.eval()
    for param in descriptor.model.parameters():
        param.requires_grad_(False)
    return Upscaler(descriptor=descriptor, name=name, path=path)


def pick_dtype(upscaler: Upscaler, precision: str, device: torch.device) -> torch.dtype:
    """The dtype to run in: ``auto`` is fp16 (else bf16) on GPUs where the model allows it,
    float32 on CPU. An explicit half precision the model cannot do falls back to float32."""
    if precision not in PRECISIONS:
        raise UpscaleModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    half = bool(upscaler.descriptor.supports_half)
    bf16 = bool(upscaler.descriptor.supports_bfloat16)
    if precision == "fp32":
        return torch.float32
    if precision == "auto":
        if device.type == "cpu":
            return torch.float32
        if half:
            return torch.float16
        if bf16 and (device.type != "cuda" or torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float32
    wanted, ok = (torch.float16, half) if precision == "fp16" else (torch.bfloat16, bf16)
    if not ok:
        log.warning("%s does not support %s; running in fp32", upscaler.name, precision)
        return torch.float32
    return wanted
