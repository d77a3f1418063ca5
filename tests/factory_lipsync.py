"""Tiny Wav2Lip generators in the official release layout (folder ``lipsync``).

- ``wav2lip.pth`` / ``wav2lip_gan.pth``: what Wav2Lip's training script saves (wav2lip_train.py
  ``save_checkpoint``): ``{"state_dict", "optimizer", "global_step", "global_epoch"}``, the state
  dict keyed ``module.<layer>`` because training ran under ``nn.DataParallel``, the optimizer an
  Adam ``state_dict()``. Written in torch's legacy (pre-1.6, non-zip) format like the releases,
  which were saved with torch 1.1.
- ``wav2lip_gan.safetensors``: the same GAN weights as a plain safetensors state dict without the
  prefix, the form community conversions take.

Only the base width shrinks (1 instead of 16: every layer 16x narrower); the layer list, key names,
kernel sizes and strides are the release's, so the real loader and the 96x96 / 80x16 inputs apply.
BatchNorm statistics come from a few training-mode batches, so they are not the 0/1 defaults.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tests.factory import builder, seeded

TINY_BASE_CHANNELS = 1


def _wav2lip_module():
    from tests._pack import load_pack

    load_pack()
    import spinbot.nodes.lipsync.wav2lip as wav2lip

    return wav2lip


def train_tiny_wav2lip(seed: int, base_channels: int = TINY_BASE_CHANNELS):
    """A tiny generator after one Adam step on random data, and its optimizer (both seeded)."""
    wav2lip = _wav2lip_module()
    gen = seeded(seed)
    model = wav2lip.Wav2Lip(base_channels)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.weight.data.normal_(0.0, 1.0 / module.weight[0].numel() ** 0.5, generator=gen)
            module.bias.data.normal_(0.0, 0.05, generator=gen)
    # A steeper last layer spreads the sigmoid output over 0..1 (varied, rarely saturated) instead
    # of a flat ~0.5, so comparisons between code paths see real values.
    model.output_block[1].weight.data.mul_(6.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(2):
        audio = torch.randn(4, 1, 80, 16, generator=gen)
        faces = torch.rand(4, 6, 96, 96, generator=gen)
        loss = torch.nn.functional.l1_loss(model(audio, faces), faces[:, 3:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), optimizer


def write_release_pth(path: Path, model: torch.nn.Module, optimizer=None, step: int = 250000,
                      epoch: int = 400) -> Path:
    """Save like upstream's save_checkpoint under nn.DataParallel, in the legacy format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    checkpoint = {"state_dict": state,
                  "optimizer": optimizer.state_dict() if optimizer is not None else None,
                  "global_step": step, "global_epoch": epoch}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path


def write_safetensors(path: Path, model: torch.nn.Module, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@builder("lipsync")
def tiny_wav2lip(folder: Path) -> list[Path]:
    model, optimizer = train_tiny_wav2lip(seed=60)
    return [write_release_pth(folder / "wav2lip.pth", model, optimizer)]


@builder("lipsync")
def tiny_wav2lip_gan(folder: Path) -> list[Path]:
    model, optimizer = train_tiny_wav2lip(seed=61)
    return [write_release_pth(folder / "wav2lip_gan.pth", model, optimizer),
            write_safetensors(folder / "wav2lip_gan.safetensors", model)]
