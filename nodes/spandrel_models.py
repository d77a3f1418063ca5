"""What the spandrel-loaded image models (upscalers, face restorers) share: reading the weights,
building the network with spandrel, the RGB and freeze steps, the size and the run dtype.

Each caller passes its own error class (`UpscaleModelError`, `FaceRestoreModelError`) and the
words that name its kind of model, so the messages stay those of the node that failed.
Weights are read with safetensors or ``torch.load(weights_only=True)``; spandrel only detects
and builds the network.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class SpandrelModel:
    """A network spandrel built from a file: its descriptor, the file's name and path."""

    descriptor: "object"  # spandrel.ImageModelDescriptor (import kept lazy)
    name: str
    path: str

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    def size_bytes(self) -> int:
        """Bytes held by the network's parameters and buffers."""
        model = self.descriptor.model
        return sum(t.numel() * t.element_size()
                   for t in [*model.parameters(), *model.buffers()])

    def to(self, device: torch.device, dtype: torch.dtype):
        """Move the network to ``device`` in ``dtype``; returns self."""
        self.descriptor.to(device=device, dtype=dtype)
        return self


def read_state_dict(path: str, name: str, error: type[Exception], kind: str) -> dict:
    """The tensors of ``path`` on the CPU. ``kind`` names the model kind in the message
    ("upscalers"); an unsupported suffix or an unreadable file raises ``error``."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUFFIXES:
        raise error(f"'{name}': unsupported file type '{ext}'; {kind} are "
                    f"{', '.join(SUFFIXES)} files")
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, TorchScript or pickled code
        raise error(
            f"'{name}' could not be read as a model file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); re-download it") from exc


def load_descriptor(path: str, name: str, error: type[Exception], kind: str,
                    unsupported: Callable[[int], str], looks_like: str) -> "object":
    """The spandrel ``ModelDescriptor`` of ``path``. ``unsupported(n_tensors)`` is the message
    for a state dict spandrel does not recognise; ``looks_like`` ("an upscaler") names what a
    recognised but inconsistent file looks like. Every failure raises ``error``."""
    from spandrel import ModelLoader, UnsupportedModelError, canonicalize_state_dict

    raw = read_state_dict(path, name, error, kind)
    if not isinstance(raw, dict) or not raw:
        raise error(f"'{name}' holds no state dict (got {type(raw).__name__})")
    state_dict = canonicalize_state_dict(raw)
    try:
        return ModelLoader().load_from_state_dict(state_dict)
    except UnsupportedModelError as exc:
        raise error(unsupported(len(state_dict))) from exc
    except Exception as exc:  # a known architecture with inconsistent tensors
        raise error(f"'{name}' looks like {looks_like} but does not load "
                    f"({type(exc).__name__}: {exc})") from exc


def finish_rgb(descriptor: "object", name: str, error: type[Exception]) -> None:
    """Check that ``descriptor`` maps RGB images to RGB images (else ``error``), then put it in
    eval mode with gradients off (inference only)."""
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise error(
            f"'{name}' maps {descriptor.input_channels}-channel images to "
            f"{descriptor.output_channels}-channel ones; only RGB models are supported")
    descriptor.eval()
    for param in descriptor.model.parameters():
        param.requires_grad_(False)


def pick_dtype(descriptor: "object", name: str, precision: str, device: torch.device,
               error: type[Exception], logger: logging.Logger) -> torch.dtype:
    """The dtype to run in: ``auto`` is fp16 where spandrel says the architecture supports it,
    else bf16 where it does and the GPU has it, else float32; always float32 on the CPU. An
    explicit half precision the model cannot do falls back to float32 (a warning on the
    caller's ``logger``, so each node's log name stays its own). A precision
    not in `PRECISIONS` raises ``error``."""
    if precision not in PRECISIONS:
        raise error(f"precision must be one of {PRECISIONS}, got {precision!r}")
    half = bool(descriptor.supports_half)
    bf16 = bool(descriptor.supports_bfloat16)
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
        logger.warning("%s does not support %s; running in fp32", name, precision)
        return torch.float32
    return wanted
