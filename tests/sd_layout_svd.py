"""Tiny Stable Video Diffusion checkpoints in the release (SGM / ComfyUI single-file) layout.

The tiny models keep the release's block structure (4 UNet levels, 2 resnets per level, one
transformer per attention block, 4 VAE levels with 2 resnets) so their UNet and VAE key names are
exactly the release's; only widths shrink (channels are multiples of 32 because diffusers' SVD
blocks use 32 norm groups) and the CLIP image encoder has 2 layers instead of 32.

`svd_release_keys.txt.gz` beside this file lists the tensor names of the released
svd_xt.safetensors (UNet, temporal VAE decoder, conditioning VAE encoder, CLIP ViT-H/14 image
encoder) as read by DiffSynth-Studio's SVD converters; tests compare both the pack's converter
(on full-size configs, no weights) and this writer against it.
"""
from __future__ import annotations

import copy
import gzip
from pathlib import Path

import torch

from tests.sd_layout import copy_config_folder

CONFIGS = Path(__file__).resolve().parent.parent / "nodes" / "motion" / "configs"
RELEASE_KEYS = Path(__file__).resolve().parent / "svd_release_keys.txt.gz"

# Widths grow where the release's do (320/640/1280/1280, VAE 128/256/512/512) so the same blocks
# carry shortcut convolutions (`skip_connection`, `nin_shortcut`) as in the release.
TINY_UNET = {"block_out_channels": [32, 64, 96, 96], "num_attention_heads": [1, 2, 3, 3],
             "cross_attention_dim": 32, "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 24, "sample_size": 8}
TINY_VAE = {"block_out_channels": [32, 64, 96, 96], "sample_size": 64}
TINY_IMAGE_ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                      "num_hidden_layers": 2, "patch_size": 32, "projection_dim": 32}


def release_keys() -> set[str]:
    with gzip.open(RELEASE_KEYS, "rt", encoding="utf-8") as f:
        return set(f.read().split())


def write_tiny_config(arch: str, folder: Path, frames: int | None = None) -> dict[str, dict]:
    """Copy the pack's published config folder for ``arch`` with tiny sizes into ``folder``."""
    src = CONFIGS / arch
    overrides = {"unet": dict(TINY_UNET), "vae": TINY_VAE, "image_encoder": TINY_IMAGE_ENCODER}
    if frames:
        overrides["unet"]["num_frames"] = frames
    return copy_config_folder(src, folder, overrides)


def _strip(c: dict) -> dict:
    return {k: v for k, v in c.items()
            if not k.startswith("_") and k not in ("architectures", "torch_dtype")}


def build_components(configs: dict[str, dict], seed: int,
                     only: tuple[str, ...] = ("unet", "vae", "image_encoder")) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    builders = {"unet": lambda: UNetSpatioTemporalConditionModel.from_config(_strip(configs["unet"])),
                "vae": lambda: AutoencoderKLTemporalDecoder.from_config(_strip(configs["vae"])),
                "image_encoder": lambda: CLIPVisionModelWithProjection(
                    CLIPVisionConfig(**_strip(configs["image_encoder"])))}
    torch.manual_seed(seed)
    models = {name: builders[name]() for name in only}
    # diffusers zero-initialises output convs and the temporal mixers start at 0.5 / 0: give
    # every all-zero weight small noise so the output depends on the image, seed and settings.
    with torch.no_grad():
        for model in models.values():
            for p in model.parameters():
                if p.ndim > 1 and not p.any():
                    p.normal_(0, 0.02)
    return {k: m.eval() for k, m in models.items()}


def to_release_state_dict(models: dict, configs: dict) -> dict[str, torch.Tensor]:
    """diffusers/transformers state dicts -> the SGM single-file names (inverse of the pack's
    `nodes/motion/svd_keys.py` sources: 1x1 convs for VAE attention, fused q/k/v, transposed
    projection)."""
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.motion import svd_keys as K

    out: dict[str, torch.Tensor] = {}
    unet_sd = models["unet"].state_dict()
    for key, (srcs, _t) in K.unet_sources(unet_sd.keys(), configs["unet"]).items():
        out[srcs[0]] = unet_sd[key]
    vae_sd = models["vae"].state_dict()
    for prefix in K.ENCODER_PREFIXES:  # the release holds both copies of the encoder
        for key, (srcs, _t) in K.vae_sources(vae_sd.keys(), configs["vae"], prefix).items():
            if key.startswith("decoder.") and prefix != K.ENCODER_PREFIXES[0]:
                continue
            if key.startswith("quant_conv.") and prefix != K.ENCODER_PREFIXES[0]:
                continue
            tensor = vae_sd[key]
            if ".attn_1." in srcs[0] and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
            out[srcs[0]] = tensor
    enc_sd = models["image_encoder"].state_dict()
    fused: dict[str, list] = {}
    for key, (srcs, _t) in K.image_encoder_sources(enc_sd.keys()).items():
        name = srcs[0]
        if name.endswith(("in_proj_weight", "in_proj_bias")):
            fused.setdefault(name, [None, None, None])["qkv".index(key.split(".")[-2][0])] = enc_sd[key]
        elif name.endswith(".proj"):
            out[name] = enc_sd[key].T
        else:
            out[name] = enc_sd[key]
    for name, parts in fused.items():
        out[name] = torch.cat(parts)
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def write_tiny_checkpoint(path: Path, arch: str = "svd_xt", seed: int = 0,
                          frames: int | None = None) -> tuple[Path, dict]:
    """Write ``path`` (.safetensors, release keys) and its tiny config folder ``<stem>.config/``;
    returns the config folder and the diffusers models (for round-trip tests)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    config_dir = path.with_suffix(".config")
    configs = write_tiny_config(arch, config_dir, frames)
    models = build_components(copy.deepcopy(configs), seed)
    save_file(to_release_state_dict(models, configs), str(path))
    return config_dir, models


def write_tiny_clip_vision(path: Path, seed: int = 3) -> Path:
    """A tiny CLIP vision model in the transformers layout ComfyUI's clip_vision files use."""
    from safetensors.torch import save_file
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        configs = write_tiny_config("svd_xt", Path(tmp))
    model = build_components(configs, seed, only=("image_encoder",))["image_encoder"]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
