"""Face restoration models from the ``facerestore_models`` folder, loaded with spandrel.

spandrel detects the architecture from the state dict and marks face restorers with the purpose
``"FaceSR"``: GFPGAN (v1.3/v1.4, the "clean" StyleGAN2 architecture; every size is fixed at the
release's 512 px, 512-wide style code, channel multiplier 2) and RestoreFormer (the GFPGAN repo's
``RestoreFormer.pth``; widths are read from the tensors). CodeFormer is an extra architecture of
the separate ``spandrel_extra_arches`` package: it is detected when that package is installed.
RestoreFormer++ is not an architecture spandrel 0.4 knows.

All of them take an aligned 512x512 face. The networks themselves work on ``[-1, 1]`` images, and
spandrel's own calls differ per architecture (its RestoreFormer call normalises, its GFPGAN and
CodeFormer calls do not, and every descriptor call clamps the output to 0..1, which cuts off the
lower half of a ``[-1, 1]`` output), so `FaceRestorer.forward` calls the network directly with
the normalisation of the upstream inference code (GFPGAN's ``gfpgan/utils.py``, CodeFormer's
``inference_codeformer.py``: ``normalize(x, 0.5, 0.5)`` in, ``(y + 1) / 2`` out).
Reading, building and the dtype choice are shared with the upscaler in
`nodes/spandrel_models.py` (safetensors or ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .. import model_cache, runtime, spandrel_models
from ..manifest import require_model
from ..spandrel_models import PRECISIONS, SUFFIXES

FOLDER = "facerestore_models"
DEFAULT_MODEL = "GFPGANv1.4.pth"
FACE_SIZE = 512  # the aligned face size of every release (the FFHQ template is for 512)
KNOWN_ARCHES = ("GFPGAN", "RestoreFormer", "CodeFormer")

log = logging.getLogger("spinbot.restore")


class FaceRestoreModelError(ValueError):
    """A model file that cannot be used as a face restorer, with a message for the user."""


def _install_extra_arches() -> bool:
    """Add spandrel_extra_arches (CodeFormer and others) to spandrel's registry when that
    package is installed; True when it is. Idempotent (the package ignores a second install)."""
    try:
        import spandrel_extra_arches
    except ImportError:
        return False
    # ComfyUI's upscale loader installs them the same way: spandrel's registry is global.
    spandrel_extra_arches.install(ignore_duplicates=True)
    return True


@dataclass
class FaceRestorer(spandrel_models.SpandrelModel):
    """A loaded face restoration model."""

    def describe(self) -> str:
        return f"{self.name}: {self.architecture} ({FACE_SIZE}x{FACE_SIZE} aligned faces, x1)"

    def forward(self, faces: torch.Tensor, fidelity: float = 0.5) -> torch.Tensor:
        """Aligned faces ``[B,3,512,512]`` in 0..1 (the model's device and dtype) -> restored
        faces of the same shape in 0..1. ``fidelity`` is CodeFormer's ``w`` (0: most
        restoration, 1: closest to the input); the other architectures ignore it."""
        model = self.descriptor.model
        x = faces * 2.0 - 1.0
        if self.architecture == "GFPGAN":
            # randomize_noise=False uses the noise maps stored in the release file: the same
            # face gives the same output, so a re-run reproduces a cached result.
            y = model(x, return_rgb=False, randomize_noise=False)[0]
        elif self.architecture == "CodeFormer":
            y = model(x, weight=float(fidelity))[0]
        else:  # RestoreFormer: the network returns (image, ...) in [-1, 1]
            y = model(x)[0]
        return y.add(1.0).mul_(0.5).clamp_(0.0, 1.0)


def list_restorers() -> list[str]:
    return runtime.list_models(FOLDER, SUFFIXES)


_CACHE_SIZE = 1


def load_restorer(name: str) -> "model_cache.ModelRef":
    """``name`` from the facerestore_models folder(s), through the pack's model cache (on the
    CPU; the restore engine moves it to the device for a run), as a `model_cache.ModelRef` to a
    `FaceRestorer`. The file is loaded here, so a bad file fails in the loader node. A missing
    file raises `MissingModelError` naming the folder and the download page."""
    path = require_model(FOLDER, name)
    key = ("face_restore", runtime.file_stamp(path))
    ref = model_cache.ModelRef("face_restore", key, lambda: load_restorer_file(path, name),
                               name=name, modules=lambda r: [r.descriptor.model],
                               limit=_CACHE_SIZE)
    ref.resolve()
    return ref


def load_restorer_file(path: str, name: str | None = None) -> FaceRestorer:
    """Load a model file with spandrel and check that it is an RGB face restorer (spandrel's
    purpose ``FaceSR``); `FaceRestoreModelError` names the file and what it is instead."""
    from spandrel import ImageModelDescriptor

    name = name or os.path.basename(path)
    extra = _install_extra_arches()
    codeformer_hint = "" if extra else (" (CodeFormer needs the spandrel_extra_arches package: "
                                        "pip install spandrel_extra_arches)")
    descriptor = spandrel_models.load_descriptor(
        path, name, FaceRestoreModelError, "face restore models",
        unsupported=lambda n: (
            f"'{name}' is not a model that spandrel recognises (the file in the '{FOLDER}' "
            f"folder holds {n} tensors of another kind of model); put GFPGANv1.4 "
            f"or RestoreFormer there{codeformer_hint}"),
        looks_like="a known model")
    arch = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "FaceSR":
        raise FaceRestoreModelError(
            f"'{name}' holds a model of architecture {arch} (spandrel purpose "
            f"'{descriptor.purpose}'), not a face restoration model; upscalers go in "
            "'upscale_models' (SpinBot Upscale). Face restore takes "
            f"GFPGAN or RestoreFormer files{codeformer_hint}")
    if arch not in KNOWN_ARCHES:
        raise FaceRestoreModelError(
            f"'{name}' holds a {arch} face model; SpinBot Face Restore runs "
            f"{', '.join(KNOWN_ARCHES)} "
            "(their input and output ranges are known)")
    spandrel_models.finish_rgb(descriptor, name, FaceRestoreModelError)
    return FaceRestorer(descriptor=descriptor, name=name, path=path)


def pick_dtype(restorer: FaceRestorer, precision: str, device: torch.device) -> torch.dtype:
    """The dtype to run in: ``auto`` is fp16 where spandrel says the architecture supports it,
    else bf16 where it does and the GPU has it, else float32; always float32 on the CPU. An
    explicit half precision the model cannot do falls back to float32 (spandrel 0.4 marks
    GFPGAN, RestoreFormer and CodeFormer as bf16-capable, not fp16-capable); an unknown
    precision raises `FaceRestoreModelError` (see `spandrel_models.pick_dtype`)."""
    return spandrel_models.pick_dtype(restorer.descriptor, restorer.name, precision, device,
                                      FaceRestoreModelError, log)
