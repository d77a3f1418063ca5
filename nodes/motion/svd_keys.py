"""Key names of Stable Video Diffusion single files (the SGM / ComfyUI layout) for diffusers models.

The released `svd.safetensors`, `svd_xt.safetensors` and `svd_xt_1_1.safetensors` keep the
original generative-models names:

- UNet: `model.diffusion_model.*` (VideoUNet: `input_blocks` / `middle_block` / `output_blocks`;
  each resnet has a temporal `time_stack` resnet and a `time_mixer.mix_factor`; each transformer
  has temporal `time_stack.N` blocks, `time_pos_embed.0/2` and `time_mixer.mix_factor`);
- VAE decoder: `first_stage_model.decoder.*` (resnets with `time_stack` and `mix_factor`,
  `conv_out.time_mix_conv` for the temporal output conv);
- VAE encoder used for the conditioning frame: `conditioner.embedders.3.encoder.encoder.*` plus
  `conditioner.embedders.3.encoder.quant_conv` (diffusers' own conversion reads it from there);
  `first_stage_model.encoder.*` is used when that copy is absent;
- CLIP ViT-H/14 image encoder: `conditioner.embedders.0.open_clip.model.visual.*` (OpenCLIP
  names: `transformer.resblocks.N.attn.in_proj_weight`, `conv1`, `ln_pre`, `proj`, ...).

diffusers 0.42 cannot read these files (`from_single_file` has no SVD support), so this module
names, for every parameter of a diffusers model, the tensor of the single file it comes from and
how its shape changes. Loading is then a plain `load_state_dict`.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

UNET_PREFIX = "model.diffusion_model."
DECODER_PREFIX = "first_stage_model.decoder."
ENCODER_PREFIXES = ("conditioner.embedders.3.encoder.encoder.", "first_stage_model.encoder.")
QUANT_CONV_PREFIX = "conditioner.embedders.3.encoder.quant_conv."
VISUAL_PREFIX = "conditioner.embedders.0.open_clip.model.visual."

# (source keys, function of the source tensors) for one diffusers parameter
Source = tuple[tuple[str, ...], Callable[..., torch.Tensor]]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _resnet_inner(name: str) -> str:
    return {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
            "norm2": "out_layers.0", "conv2": "out_layers.3",
            "conv_shortcut": "skip_connection"}.get(name, name)


def _split(key: str, head: str) -> tuple[str, str]:
    rest = key[len(head):]
    first, _, tail = rest.partition(".")
    return first, tail


# ----------------------------------------------------------------------------- UNet

def _unet_block(key: str, per: int, up_attn: list[bool]) -> tuple[str, str, str]:
    """(LDM block prefix, kind, rest) for a diffusers UNetSpatioTemporalConditionModel key."""
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for dif, ldm in simple.items():
        if key.startswith(dif + "."):
            return ldm, "plain", key[len(dif) + 1:]
    parts = key.split(".")
    if parts[0] == "mid_block":
        kind, idx, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        slot = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, idx)]
        return f"middle_block.{slot}", kind, rest
    if parts[0] in ("down_blocks", "up_blocks"):
        i, kind = int(parts[1]), parts[2]
        if kind in ("downsamplers", "upsamplers"):
            rest = ".".join(parts[5:])  # <kind>.0.conv.<param>
            if parts[0] == "down_blocks":
                return f"input_blocks.{(i + 1) * per}.0.op", "plain", rest
            slot = 2 if up_attn[i] else 1
            return f"output_blocks.{i * per + per - 1}.{slot}.conv", "plain", rest
        j, rest = int(parts[3]), ".".join(parts[4:])
        sub = 0 if kind == "resnets" else 1
        if parts[0] == "down_blocks":
            return f"input_blocks.{i * per + j + 1}.{sub}", kind, rest
        return f"output_blocks.{i * per + j}.{sub}", kind, rest
    raise KeyError(key)


def unet_source_name(key: str, config: dict) -> str:
    per = int(config["layers_per_block"]) + 1
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    block, kind, rest = _unet_block(key, per, up_attn)
    if kind == "resnets":
        head, _, tail = rest.partition(".")
        if head == "spatial_res_block":
            inner, _, param = tail.partition(".")
            rest = f"{_resnet_inner(inner)}.{param}"
        elif head == "temporal_res_block":
            inner, _, param = tail.partition(".")
            rest = f"time_stack.{_resnet_inner(inner)}.{param}"
        # time_mixer.mix_factor keeps its name
    elif kind == "attentions":
        if rest.startswith("temporal_transformer_blocks."):
            rest = "time_stack." + rest[len("temporal_transformer_blocks."):]
        elif rest.startswith("time_pos_embed.linear_"):
            n = rest[len("time_pos_embed.linear_")]
            rest = f"time_pos_embed.{0 if n == '1' else 2}" + rest[len("time_pos_embed.linear_1"):]
    return f"{UNET_PREFIX}{block}.{rest}"


def unet_sources(keys: Iterable[str], config: dict) -> dict[str, Source]:
    return {k: ((unet_source_name(k, config),), _same) for k in keys}


# ----------------------------------------------------------------------------- VAE

_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
_VAE_TEMPORAL = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                 "conv2": "out_layers.3"}


def _squeeze_1x1(t: torch.Tensor) -> torch.Tensor:
    # the original VAE keeps attention projections as 1x1 convolutions
    return t[:, :, 0, 0] if t.ndim == 4 else t


def _vae_attention(rest: str) -> tuple[str, Callable]:
    inner, _, param = rest.partition(".")
    if inner == "to_out":  # to_out.0.<param>
        param = param.partition(".")[2]
    return f"{_VAE_ATTN[inner]}.{param}", _squeeze_1x1


def vae_source(key: str, config: dict, encoder_prefix: str) -> Source:
    n = len(config["block_out_channels"])
    parts = key.split(".")
    if key.startswith("quant_conv."):
        return (QUANT_CONV_PREFIX + key[len("quant_conv."):],), _same
    part = parts[0]
    prefix = encoder_prefix if part == "encoder" else DECODER_PREFIX
    rest = ".".join(parts[1:])
    transform: Callable = _same
    if rest.startswith("conv_norm_out."):
        name = "norm_out." + rest[len("conv_norm_out."):]
    elif rest.startswith("time_conv_out."):
        name = "conv_out.time_mix_conv." + rest[len("time_conv_out."):]
    elif rest.startswith(("conv_in.", "conv_out.")):
        name = rest
    elif rest.startswith("mid_block.attentions.0."):
        inner, transform = _vae_attention(rest[len("mid_block.attentions.0."):])
        name = "mid.attn_1." + inner
    elif rest.startswith("mid_block.resnets."):
        j, tail = _split(rest, "mid_block.resnets.")
        name = f"mid.block_{int(j) + 1}." + _vae_resnet(tail)
    elif rest.startswith(("down_blocks.", "up_blocks.")):
        group = "down" if rest.startswith("down") else "up"
        i, tail = _split(rest, f"{group}_blocks.")
        level = int(i) if group == "down" else n - 1 - int(i)
        if ".downsamplers.0.conv." in "." + tail or tail.startswith(("downsamplers.", "upsamplers.")):
            sampler = "downsample" if group == "down" else "upsample"
            name = f"{group}.{level}.{sampler}.conv." + tail.split(".conv.", 1)[1]
        else:
            j, inner = _split(tail, "resnets.")
            name = f"{group}.{level}.block.{j}." + _vae_resnet(inner)
    else:
        raise KeyError(key)
    return (prefix + name,), transform


def _vae_resnet(tail: str) -> str:
    """Inner name of a VAE resnet: plain (encoder) or spatial/temporal/time_mixer (decoder)."""
    head, _, rest = tail.partition(".")
    if head == "spatial_res_block":
        tail = rest
    elif head == "temporal_res_block":
        inner, _, param = rest.partition(".")
        return f"time_stack.{_VAE_TEMPORAL[inner]}.{param}"
    elif head == "time_mixer":
        return "mix_factor"
    return tail.replace("conv_shortcut.", "nin_shortcut.")


def vae_sources(keys: Iterable[str], config: dict, encoder_prefix: str) -> dict[str, Source]:
    return {k: vae_source(k, config, encoder_prefix) for k in keys}


# ----------------------------------------------------------------------------- CLIP image encoder

_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1",
               "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def image_encoder_source(key: str, prefix: str = VISUAL_PREFIX) -> Source:
    """transformers CLIPVisionModelWithProjection key -> OpenCLIP `visual.*` tensor(s)."""
    simple = {"vision_model.embeddings.class_embedding": "class_embedding",
              "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
              "vision_model.embeddings.position_embedding.weight": "positional_embedding",
              "vision_model.pre_layrnorm.weight": "ln_pre.weight",
              "vision_model.pre_layrnorm.bias": "ln_pre.bias",
              "vision_model.post_layernorm.weight": "ln_post.weight",
              "vision_model.post_layernorm.bias": "ln_post.bias"}
    if key in simple:
        return (prefix + simple[key],), _same
    if key == "visual_projection.weight":
        return (prefix + "proj",), lambda t: t.T.contiguous()
    head = "vision_model.encoder.layers."
    if not key.startswith(head):
        raise KeyError(key)
    n, tail = _split(key, head)
    block = f"{prefix}transformer.resblocks.{n}."
    inner, _, param = tail.rpartition(".")
    if inner in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        index = "qkv".index(inner[len("self_attn.")])
        return (block + f"attn.in_proj_{param}",), lambda t, i=index: t.chunk(3, dim=0)[i].contiguous()
    return (block + f"{_CLIP_LAYER[inner]}.{param}",), _same


def image_encoder_sources(keys: Iterable[str], prefix: str = VISUAL_PREFIX) -> dict[str, Source]:
    return {k: image_encoder_source(k, prefix) for k in keys}
