"""Tiny Stable Diffusion models written in the original (LDM / ComfyUI checkpoint) layout.

The factory builds tiny diffusers models from configs and saves them the way the public single-file
releases are laid out (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.*` for SD 1.5; `conditioner.embedders.0.transformer.*` (CLIP-L) and
`conditioner.embedders.1.model.*` (OpenCLIP bigG) for SDXL; `conditioner.embedders.0.model.*` for
the refiner). diffusers only converts in the other direction, so the reverse mapping lives here;
tests load the result back with diffusers' own `from_single_file` and compare weights.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent.parent / "nodes" / "image" / "configs"

# ----------------------------------------------------------------------------- tiny configs

TINY_VOCAB = 260  # 256 byte symbols + </w> forms of a few + 2 specials (see write_tiny_tokenizer)


def _clip(hidden: int, act: str, vocab: int, projection: int | None = None) -> dict:
    return {"hidden_size": hidden, "intermediate_size": hidden * 2, "num_attention_heads": 4,
            "num_hidden_layers": 2, "hidden_act": act, "projection_dim": projection or hidden,
            "vocab_size": vocab, "bos_token_id": vocab - 2, "eos_token_id": vocab - 1,
            "pad_token_id": vocab - 1}


_TINY_VAE = {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1,
             "sample_size": 64, "force_upcast": False}


def tiny_overrides(kind: str, vocab: int) -> dict[str, dict]:
    """Component config overrides that shrink the published configs of one architecture."""
    if kind == "sd15":
        return {"unet": {"block_out_channels": [16, 16, 32, 32], "norm_num_groups": 8,
                         "attention_head_dim": 2, "cross_attention_dim": 32, "sample_size": 8},
                "vae": _TINY_VAE, "text_encoder": _clip(32, "quick_gelu", vocab)}
    if kind == "sdxl_base":
        return {"unet": {"block_out_channels": [16, 32, 32], "norm_num_groups": 8,
                         "attention_head_dim": [2, 2, 4], "cross_attention_dim": 32 + 48,
                         "transformer_layers_per_block": [1, 1, 2], "addition_time_embed_dim": 8,
                         "projection_class_embeddings_input_dim": 48 + 6 * 8, "sample_size": 8},
                "vae": _TINY_VAE, "text_encoder": _clip(32, "quick_gelu", vocab),
                "text_encoder_2": _clip(48, "gelu", vocab, projection=48)}
    if kind == "sdxl_refiner":
        return {"unet": {"block_out_channels": [16, 16, 32, 32], "norm_num_groups": 8,
                         "attention_head_dim": [2, 2, 4, 4], "cross_attention_dim": 48,
                         "transformer_layers_per_block": 1, "addition_time_embed_dim": 8,
                         "projection_class_embeddings_input_dim": 48 + 5 * 8, "sample_size": 8},
                "vae": _TINY_VAE, "text_encoder_2": _clip(48, "gelu", vocab, projection=48)}
    raise ValueError(kind)


def copy_config_folder(src: Path, folder: Path, overrides: dict[str, dict]) -> dict[str, dict]:
    """Copy a diffusers config folder (``model_index.json`` + ``<component>/*.json``) into
    ``folder``, updating each component's config with ``overrides[component]``; returns the
    component configs as written."""
    configs: dict[str, dict] = {}
    for path in sorted(src.rglob("*.json")):
        rel = path.relative_to(src)
        data = json.loads(path.read_text())
        component = rel.parts[0] if len(rel.parts) > 1 else None
        if component in overrides:
            data.update(overrides[component])
        if component:
            configs[component] = data
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(data, indent=2))
    return configs


def write_tiny_config(kind: str, folder: Path) -> dict[str, dict]:
    """Copy the pack's published config folder for ``kind`` with tiny sizes into ``folder``."""
    src = CONFIGS / kind
    configs = copy_config_folder(src, folder, tiny_overrides(kind, TINY_VOCAB))
    for name in ("tokenizer", "tokenizer_2"):
        if name in json.loads((src / "model_index.json").read_text()) and \
                json.loads((src / "model_index.json").read_text())[name][0]:
            write_tiny_tokenizer(folder / name, pad="!" if name == "tokenizer_2" else None)
    return configs


def _byte_symbols() -> list[str]:
    # GPT-2 / CLIP byte-to-unicode table: printable bytes map to themselves, the rest to 256+.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def write_tiny_tokenizer(folder: Path, pad: str | None = None) -> Path:
    """A CLIP BPE tokenizer with a 260-entry vocabulary: every byte symbol, the end-of-word forms
    of two letters, and the start/end specials as the last two ids (like CLIP's 49406/49407)."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in ("a</w>", "e</w>"):
        vocab[s] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == TINY_VOCAB
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad or "<|endoftext|>"}))
    return folder


# ----------------------------------------------------------------------------- diffusers -> LDM

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _unet_prefixes(cfg: dict) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every block of a UNet2DConditionModel."""
    per = cfg["layers_per_block"] + 1
    pairs = [("time_embedding.linear_1", "time_embed.0", False),
             ("time_embedding.linear_2", "time_embed.2", False),
             ("add_embedding.linear_1", "label_emb.0.0", False),
             ("add_embedding.linear_2", "label_emb.0.2", False),
             ("conv_in", "input_blocks.0.0", False), ("conv_norm_out", "out.0", False),
             ("conv_out", "out.2", False), ("mid_block.resnets.0", "middle_block.0", True),
             ("mid_block.attentions.0", "middle_block.1", False),
             ("mid_block.resnets.1", "middle_block.2", True)]
    n = len(cfg["down_block_types"])
    for i in range(n):
        for j in range(per - 1):
            pairs.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{i * per + j + 1}.0", True))
            pairs.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{i * per + j + 1}.1", False))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * per}.0.op", False))
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(per):
            pairs.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{i * per + j}.0", True))
            pairs.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{i * per + j}.1", False))
        slot = 2 if kind.startswith("CrossAttn") else 1
        pairs.append((f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{i * per + per - 1}.{slot}.conv", False))
    return pairs


def _rename(key: str, pairs: list[tuple[str, str, bool]], inner: dict[str, str]) -> str:
    for dif, ldm, is_resnet in pairs:
        if key.startswith(dif + "."):
            rest = key[len(dif) + 1:]
            if is_resnet:
                head, _, tail = rest.partition(".")
                rest = f"{inner.get(head, head)}.{tail}"
            return f"{ldm}.{rest}"
    raise KeyError(f"no LDM name for diffusers key {key}")


def unet_to_ldm(sd: dict, cfg: dict) -> dict:
    pairs = _unet_prefixes(cfg)
    return {"model.diffusion_model." + _rename(k, pairs, _RESNET): v for k, v in sd.items()}


def vae_to_ldm(sd: dict, cfg: dict) -> dict:
    n = len(cfg["block_out_channels"])
    pairs: list[tuple[str, str, bool]] = []
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", True),
                  (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", True),
                  (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", True),
                  (f"{part}.conv_norm_out", f"{part}.norm_out", False)]
    for i in range(n):
        for j in range(cfg["layers_per_block"] + 1):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", True))
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{n - 1 - i}.block.{j}", True))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", False))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{n - 1 - i}.upsample.conv", False))
    inner = {"conv_shortcut": "nin_shortcut", "group_norm": "norm", "to_q": "q", "to_k": "k",
             "to_v": "v", "to_out": "proj_out"}
    out = {}
    for k, v in sd.items():
        if k.split(".")[0] in ("quant_conv", "post_quant_conv") or k.split(".")[1] in ("conv_in", "conv_out"):
            out["first_stage_model." + k] = v
            continue
        name = _rename(k, pairs, inner).replace("proj_out.0.", "proj_out.")
        if ".attn_1." in name and v.ndim == 2:
            v = v[:, :, None, None]  # LDM keeps the VAE attention projections as 1x1 convs
        out["first_stage_model." + name] = v
    return out


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """transformers CLIPTextModel keys -> `<prefix>text_model.*` (newer transformers drop the
    `text_model.` level; the release files always have it)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in sd.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    """transformers CLIPTextModelWithProjection keys -> OpenCLIP (`<prefix>transformer.resblocks.*`)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": sd.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": sd.pop("final_layer_norm.bias"),
           prefix + "text_projection": sd.pop("text_projection.weight").T.contiguous(),
           prefix + "logit_scale": torch.tensor(4.6052)}
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")])
            for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                         ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[dst + f"{b}.{kind}"] = sd.pop(f"{src}{a}.{kind}")
    if sd:
        raise KeyError(f"unmapped OpenCLIP keys: {sorted(sd)[:5]}")
    return out


# ----------------------------------------------------------------------------- building

def build_components(kind: str, configs: dict[str, dict], seed: int) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    models: dict[str, torch.nn.Module] = {}
    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    models["unet"] = UNet2DConditionModel.from_config(strip(configs["unet"]))
    models["vae"] = AutoencoderKL.from_config(strip(configs["vae"]))
    if "text_encoder" in configs and kind != "sdxl_refiner":
        models["text_encoder"] = CLIPTextModel(CLIPTextConfig(**strip(configs["text_encoder"])))
    if "text_encoder_2" in configs:
        models["text_encoder_2"] = CLIPTextModelWithProjection(
            CLIPTextConfig(**strip(configs["text_encoder_2"])))
    # Random init leaves the UNet's output conv at zero (diffusers zero-inits it); give every
    # zero tensor small noise so outputs depend on the prompt, seed and LoRAs.
    with torch.no_grad():
        for model in models.values():
            for p in model.parameters():
                if p.ndim > 1 and not p.any():
                    p.normal_(0, 0.02)
    return {k: m.eval() for k, m in models.items()}


def to_ldm_state_dict(kind: str, models: dict, configs: dict) -> dict[str, torch.Tensor]:
    sd = unet_to_ldm(models["unet"].state_dict(), configs["unet"])
    sd.update(vae_to_ldm(models["vae"].state_dict(), configs["vae"]))
    if kind == "sd15":
        sd.update(clip_to_ldm(models["text_encoder"].state_dict(), "cond_stage_model.transformer."))
    elif kind == "sdxl_base":
        sd.update(clip_to_ldm(models["text_encoder"].state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_ldm(models["text_encoder_2"].state_dict(), "conditioner.embedders.1.model."))
    else:
        sd.update(open_clip_to_ldm(models["text_encoder_2"].state_dict(), "conditioner.embedders.0.model."))
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def write_tiny_checkpoint(path: Path, kind: str, seed: int = 0) -> tuple[Path, dict]:
    """Write ``path`` (.safetensors, LDM keys) and its tiny config folder ``<stem>.config/``
    beside it; returns the config folder and the diffusers models (for round-trip tests)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    config_dir = path.with_suffix(".config")
    configs = write_tiny_config(kind, config_dir)
    models = build_components(kind, copy.deepcopy(configs), seed)
    save_file(to_ldm_state_dict(kind, models, configs), str(path),
              metadata={"modelspec.architecture": {"sd15": "stable-diffusion-v1",
                                                   "sdxl_base": "stable-diffusion-xl-v1-base",
                                                   "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}[kind]})
    return config_dir, models


# ----------------------------------------------------------------------------- tiny LoRAs

_UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
_TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def lora_targets(kind: str, seed: int = 0) -> dict[str, dict[str, tuple[int, int]]]:
    """{component: {diffusers module name: (out, in)}} of the tiny base's attention layers."""
    configs = {}
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_tiny_config(kind, Path(tmp))
    models = build_components(kind, configs, seed)
    targets: dict[str, dict[str, tuple[int, int]]] = {}
    for component, model in models.items():
        if component == "vae":
            continue
        wanted = _UNET_TARGETS if component == "unet" else _TE_TARGETS
        for name, module in model.named_modules():
            if name.endswith(wanted) and isinstance(module, torch.nn.Linear):
                if component != "unet" and not name.startswith("text_model."):
                    name = "text_model." + name
                targets.setdefault(component, {})[name] = (module.out_features, module.in_features)
    targets["_unet_config"] = configs["unet"]  # type: ignore[assignment]
    return targets


def write_tiny_lora(path: Path, kind: str, fmt: str, trigger: str = "", rank: int = 4,
                    seed: int = 1, metadata: dict | None = None) -> Path:
    """A rank-``rank`` LoRA on every attention projection of the tiny ``kind`` base.
    ``fmt`` "kohya": `lora_unet_*` (SD 1.5: diffusers names; SDXL: LDM block names, as sd-scripts
    writes them), `lora_te_*` / `lora_te1_*` / `lora_te2_*`, `.alpha`; "peft": diffusers keys
    `unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder(_2).<module>...`."""
    from safetensors.torch import save_file

    targets = lora_targets(kind)
    unet_cfg = targets.pop("_unet_config")
    pairs = _unet_prefixes(unet_cfg)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    te_names = {"text_encoder": "lora_te1_" if kind != "sd15" else "lora_te_", "text_encoder_2": "lora_te2_"}
    for component, modules in targets.items():
        for name, (out_f, in_f) in sorted(modules.items()):
            down = torch.randn(rank, in_f, generator=gen) / in_f ** 0.5
            up = torch.randn(out_f, rank, generator=gen) * 0.5
            if fmt == "peft":
                sd[f"{component}.{name}.lora_A.weight"] = down
                sd[f"{component}.{name}.lora_B.weight"] = up
                continue
            if component == "unet":
                flat = _rename(name + ".w", pairs, {})[:-2] if kind != "sd15" else name
                base = "lora_unet_" + flat.replace(".", "_")
            else:
                base = te_names[component] + name.replace(".", "_")
            sd[f"{base}.lora_down.weight"] = down
            sd[f"{base}.lora_up.weight"] = up
            sd[f"{base}.alpha"] = torch.tensor(float(rank))
    meta = {"ss_base_model_version": "sd_v1" if kind == "sd15" else "sdxl_base_v1-0"} \
        if fmt == "kohya" else {}
    if trigger and fmt == "kohya":
        meta["ss_tag_frequency"] = json.dumps({"10_" + trigger: {trigger: 12, "portrait": 5}})
    elif trigger:
        meta["modelspec.trigger_phrase"] = trigger
    meta.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    return path
