"""Upscale models from ComfyUI's ``upscale_models`` folder, loaded with spandrel.

spandrel (the loader ComfyUI itself uses) recognises the architecture from the state dict: the
Real-ESRGAN releases (RRDBNet x4/x2, anime 6B, SRVGGNet "realesr-general"), ESRGAN, SwinIR, HAT,
DAT, SPAN and the rest of its list. Reading, building and the dtype choice are shared with the
face restorer in `nodes/spandrel_models.py`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .. import model_cache, runtime, spandrel_models
from ..manifest import require_model
from ..spandrel_models import PRECISIONS, SUFFIXES

FOLDER = "upscale_models"
DEFAULT_MODEL = "realesr-general-x4v3.pth"

log = logging.getLogger("spinbot.upscale")


class UpscaleModelError(ValueError):
    """A model file that cannot be used as an upscaler, with a message for the user."""


@dataclass
class Upscaler(spandrel_models.SpandrelModel):
    """A loaded image-to-image model and what the tiler needs to know about it."""

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def multiple_of(self) -> int:
        return int(self.descriptor.size_requirements.multiple_of)

    @property
    def minimum_size(self) -> int:
        return int(self.descriptor.size_requirements.minimum)

    def describe(self) -> str:
        tags = ", ".join(self.descriptor.tags)
        return f"{self.name}: {self.architecture} x{self.scale}" + (f" ({tags})" if tags else "")

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


def load_upscaler_file(path: str, name: str | None = None) -> Upscaler:
    """Load a model file with spandrel and check that it maps RGB images to RGB images."""
    from spandrel import ImageModelDescriptor

    name = name or os.path.basename(path)
    descriptor = spandrel_models.load_descriptor(
        path, name, UpscaleModelError, "upscalers",
        unsupported=lambda n: (
            f"'{name}' is not an image upscaler that spandrel recognises (the file in the "
            f"'{FOLDER}' folder holds {n} tensors of another kind of model). Put "
            "an ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, SPAN or similar upscaler there"),
        looks_like="an upscaler")
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UpscaleModelError(f"'{name}' is a {descriptor.architecture.name} model "
                                f"({descriptor.purpose}), not an image upscaler")
    spandrel_models.finish_rgb(descriptor, name, UpscaleModelError)
    return Upscaler(descriptor=descriptor, name=name, path=path)


def pick_dtype(upscaler: Upscaler, precision: str, device: torch.device) -> torch.dtype:
    """The dtype to run in: ``auto`` is fp16 (else bf16) on GPUs where the model allows it,
    float32 on CPU. An explicit half precision the model cannot do falls back to float32;
    an unknown precision raises `UpscaleModelError` (see `spandrel_models.pick_dtype`)."""
    return spandrel_models.pick_dtype(upscaler.descriptor, upscaler.name, precision, device,
                                      UpscaleModelError, log)
