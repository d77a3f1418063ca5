"""Tiny RIFE 4.x (IFNet) checkpoints for the frame_interpolation folder.

The releases people use in ComfyUI (ComfyUI-Frame-Interpolation's ``rife47.pth``, ``rife49.pth``)
are plain IFNet state dicts saved with ``torch.save``, keys without the training ``module.``
prefix. The tiny ones keep every key (8 residual convolutions per block, the 4-channel encoder
output and the 24-channel block heads, which fix the inputs of the next block) and shrink only the
block and encoder widths.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tests.factory import builder

TINY_BLOCKS = (16, 16, 8, 8)
TINY_ENCODER = 8


def tiny_config(version: str = "4.7"):
    """The released layout ``version`` ("4.6", "4.7", "4.17") with tiny widths."""
    from dataclasses import replace

    from spinbot.nodes.interpolate.ifnet import released_config

    config = released_config(version)
    return replace(config, block_channels=TINY_BLOCKS,
                   encoder_channels=TINY_ENCODER if config.encoder_channels else 0)


def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for the keys of ``shapes``, drawn in sorted-key order from one seeded
    generator, so two implementations with the same keys get identical weights. Weights are
    N(0, 1/fan_in) (outputs stay in range through 20 layers), biases N(0, 0.01^2), the residual
    scales ``beta`` 1 + N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = torch.randn(shape, generator=gen)
        if key.endswith("beta"):
            out[key] = 1.0 + 0.1 * noise
        elif len(shape) > 1:
            fan_in = 1
            for size in shape[1:]:
                fan_in *= size
            out[key] = noise / fan_in ** 0.5
        else:
            out[key] = 0.01 * noise
    return out


def tiny_state_dict(version: str = "4.7", seed: int = 0) -> dict[str, torch.Tensor]:
    from spinbot.nodes.interpolate.ifnet import IFNet

    net = IFNet(tiny_config(version))
    return seeded_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, seed)


@builder("frame_interpolation")
def tiny_rife(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, version, seed in (("rife47.pth", "4.7", 0), ("rife49.pth", "4.7", 1)):
        path = folder / name
        torch.save(tiny_state_dict(version, seed), path)
        written.append(path)
    return written


# Parity fixture (tests/rife_parity.npz): the upstream IFNet of Fannovel16/ComfyUI-Frame-
# Interpolation (vfi_models/rife/rife_arch.py, commit 26545cc2dd95bc3d27f056016300673bdeee78f5, run
# from a scratch copy, never committed here) filled with `seeded_state_dict(seed=PARITY_SEED)` of
# its full-size keys, run on `parity_frames` with ensemble off; every second pixel stored as fp16.
PARITY_SEED = 7
# label, layout, scale, timestep
PARITY_CASES = (("4.6", "4.6", 1.0, 0.5), ("4.7", "4.7", 1.0, 0.5),
                ("4.7_scale0.5_t0.25", "4.7", 0.5, 0.25), ("4.17", "4.17", 1.0, 0.5))


def parity_frames(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``[1,3,size,size]`` frames of smooth colour patterns, the second moved 3 px right and
    1 px down: a closed formula, so the fixture does not depend on a random generator."""
    import math

    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")

    def frame(dx: float, dy: float) -> torch.Tensor:
        u, v = (xs - dx) / size, (ys - dy) / size
        return torch.stack((0.5 + 0.4 * torch.sin(2 * math.pi * (1.5 * u + 0.5 * v)),
                            0.5 + 0.4 * torch.cos(2 * math.pi * 1.2 * v),
                            0.5 + 0.3 * torch.sin(2 * math.pi * (u * v * 2 + u)))).float()[None]

    return frame(0.0, 0.0), frame(3.0, 1.0)
