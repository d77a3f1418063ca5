"""The tiny-model factory: small, randomly initialised models in the real release layouts.

Every architecture the pack loads gets a builder here that writes files with the same folder,
file names, key names and formats as the public release, only with tiny widths, so the pack's real
loading code runs in tests and in a real ComfyUI without downloading anything.

    python -m tests.factory --out /path/to/ComfyUI/models          # every tiny model
    python -m tests.factory --out DIR --only upscale_models         # one group

Builders are registered with `@builder(group)` and return the paths they wrote. Outputs of these
models are noise; tests assert on shapes, timing, files and errors, never on quality.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch

Builder = Callable[[Path], list[Path]]
BUILDERS: dict[str, list[Builder]] = {}


def builder(group: str) -> Callable[[Builder], Builder]:
    """Register a function that writes tiny models for one ComfyUI model folder (group)."""
    def register(fn: Builder) -> Builder:
        BUILDERS.setdefault(group, []).append(fn)
        return fn
    return register


def seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build(out: str | Path, only: list[str] | None = None) -> list[Path]:
    """Write the tiny models of the chosen groups (all by default) under ``out``."""
    out = Path(out)
    written: list[Path] = []
    for group, fns in BUILDERS.items():
        if only and group not in only:
            continue
        for fn in fns:
            written.extend(fn(out / group))
    return written


# --------------------------------------------------------------------------- upscale_models
# Real-ESRGAN releases (github.com/xinntao/Real-ESRGAN): basicsr RRDBNet / SRVGGNetCompact state
# dicts saved with torch.save, wrapped under "params_ema" (RRDBNet) or "params" (SRVGG). Only the
# widths shrink: num_feat 8 and one or two blocks; the dense-block growth stays 32 because spandrel
# (like basicsr's defaults) assumes it. The x2 model takes 12 channels: it pixel-unshuffles by 2
# and then upsamples x4 like the x4 model, which is how spandrel tells the two apart.

_RRDB_GROWTH = 32


def _conv(sd: dict, name: str, out_ch: int, in_ch: int, gen: torch.Generator,
          gain: float = 1.0, bias: float = 0.0) -> None:
    std = gain / (in_ch * 9) ** 0.5
    sd[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
    sd[f"{name}.bias"] = torch.randn(out_ch, generator=gen) * 0.01 + bias


def rrdbnet_state_dict(in_ch: int = 3, num_feat: int = 8, num_block: int = 1, seed: int = 0,
                       out_gain: float = 2.0) -> dict[str, torch.Tensor]:
    """basicsr RRDBNet keys (conv_first, body.N.rdbK.convJ, conv_body, conv_up1/2, conv_hr,
    conv_last), random weights; ``out_gain`` keeps the output mostly inside 0..1 (varied, not
    clamped) for the given seed, so comparisons between code paths see real values."""
    gen = seeded(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv_first", num_feat, in_ch, gen)
    for b in range(num_block):
        for r in (1, 2, 3):
            for c in range(1, 5):
                _conv(sd, f"body.{b}.rdb{r}.conv{c}", _RRDB_GROWTH,
                      num_feat + (c - 1) * _RRDB_GROWTH, gen, gain=0.5)
            _conv(sd, f"body.{b}.rdb{r}.conv5", num_feat, num_feat + 4 * _RRDB_GROWTH, gen, gain=0.5)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(sd, name, num_feat, num_feat, gen)
    _conv(sd, "conv_last", 3, num_feat, gen, gain=out_gain, bias=0.5)
    return sd


def srvgg_state_dict(num_feat: int = 8, num_conv: int = 2, scale: int = 4,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact keys: body.0 conv, then (PReLU, conv) pairs, a PReLU and the last conv
    producing 3*scale^2 channels for the pixel shuffle; the net adds a nearest-upsampled input."""
    gen = seeded(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "body.0", num_feat, 3, gen)
    index = 1
    for _ in range(num_conv):
        sd[f"body.{index}.weight"] = torch.full((num_feat,), 0.25)  # PReLU slopes
        _conv(sd, f"body.{index + 1}", num_feat, num_feat, gen)
        index += 2
    sd[f"body.{index}.weight"] = torch.full((num_feat,), 0.25)
    _conv(sd, f"body.{index + 1}", 3 * scale * scale, num_feat, gen, gain=0.3)
    return sd


def _save(folder: Path, filename: str, wrapper: str, sd: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    torch.save({wrapper: sd}, path)
    return [path]


@builder("upscale_models")
def tiny_realesrgan_x4plus(folder: Path) -> list[Path]:
    return _save(folder, "RealESRGAN_x4plus.pth", "params_ema", rrdbnet_state_dict(seed=40))


@builder("upscale_models")
def tiny_realesrgan_x2plus(folder: Path) -> list[Path]:
    return _save(folder, "RealESRGAN_x2plus.pth", "params_ema",
                 rrdbnet_state_dict(in_ch=12, seed=20, out_gain=0.3))


@builder("upscale_models")
def tiny_realesrgan_x4plus_anime_6b(folder: Path) -> list[Path]:
    # The release has 6 blocks (hence the name); the tiny one keeps the name with 2 blocks.
    return _save(folder, "RealESRGAN_x4plus_anime_6B.pth", "params_ema",
                 rrdbnet_state_dict(num_block=2, seed=46, out_gain=0.5))


@builder("upscale_models")
def tiny_realesr_general_x4v3(folder: Path) -> list[Path]:
    return _save(folder, "realesr-general-x4v3.pth", "params", srvgg_state_dict(seed=43))



# --------------------------------------------------------------------------- checkpoints / loras
# Stable Diffusion single-file checkpoints under the release file names, in the original (LDM)
# key layout, each with its tiny diffusers config (and tiny CLIP tokenizer) in `<stem>.config/`
# beside it: the pack's loader prefers that folder over its shipped full-size configs. See
# tests/sd_layout.py for the diffusers -> LDM key mapping.

@builder("checkpoints")
def tiny_sd15(folder: Path) -> list[Path]:
    from tests.sd_layout import write_tiny_checkpoint
    path = folder / "v1-5-pruned-emaonly.safetensors"
    return [path, write_tiny_checkpoint(path, "sd15", seed=15)[0]]


@builder("checkpoints")
def tiny_sdxl_base(folder: Path) -> list[Path]:
    from tests.sd_layout import write_tiny_checkpoint
    path = folder / "sd_xl_base_1.0.safetensors"
    return [path, write_tiny_checkpoint(path, "sdxl_base", seed=10)[0]]


@builder("checkpoints")
def tiny_sdxl_refiner(folder: Path) -> list[Path]:
    from tests.sd_layout import write_tiny_checkpoint
    path = folder / "sd_xl_refiner_1.0.safetensors"
    return [path, write_tiny_checkpoint(path, "sdxl_refiner", seed=11)[0]]


@builder("loras")
def tiny_identity_loras(folder: Path) -> list[Path]:
    from tests.sd_layout import write_tiny_lora
    return [write_tiny_lora(folder / "spinbot-identity-sd15.safetensors", "sd15", "kohya", "ohwx person"),
            write_tiny_lora(folder / "spinbot-identity-sd15-peft.safetensors", "sd15", "peft", "sks face", seed=2),
            write_tiny_lora(folder / "spinbot-identity-sdxl.safetensors", "sdxl_base", "kohya", "ohwx person", seed=3)]


def _load_stage_builders() -> None:
    # Stages keep their builders beside this file as tests/factory_<stage>.py; importing them
    # registers their @builder functions.
    import importlib
    for path in sorted(Path(__file__).parent.glob("factory_*.py")):
        importlib.import_module(f"{__package__ or 'tests'}.{path.stem}")


_load_stage_builders()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="models root, e.g. ComfyUI/models")
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="groups to build")
    args = parser.parse_args(argv)
    if not BUILDERS:
        print("no tiny models are registered yet", file=sys.stderr)
        return 1
    for path in build(args.out, args.only):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else path.stat().st_size
        print(f"{os.path.relpath(path, args.out)}\t{size} bytes")
    return 0


if __name__ == "__main__":
    # Run through the importable module so stage builders (which import tests.factory) register
    # into the same BUILDERS this main reads.
    from tests.factory import main as _main
    raise SystemExit(_main())
