"""F5-TTS checkpoint loading and conditional-flow-matching sampling (Euler ODE).

Sampling follows upstream ``CFM.sample``: the reference mel fills the start of the condition,
noise (seeded per item, drawn on the CPU so every device gets the same numbers) is integrated
from t=0 to 1 with Euler steps over a time grid that is EPSS-pruned for the NFE counts it knows
and warped by sway sampling (``t + s * (cos(pi/2 t) - 1 + t)``); classifier-free guidance
runs the conditional and the unconditional (no audio prompt, no text) pass as one batch and uses
``v = v_c + (v_c - v_u) * cfg``. The reference frames are put back at the end.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .f5_dit import DiT, DiTConfig, RotaryEmbedding, text_positions
from .text import load_vocab

_EPSS = {
    5: [0, 2, 4, 8, 16, 32], 6: [0, 2, 4, 6, 8, 16, 32], 7: [0, 2, 4, 6, 8, 16, 24, 32],
    10: [0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32],
    12: [0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32],
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32],
}
_SKIP_KEYS = {"initted", "step"}


@dataclass
class F5Model:
    dit: DiT
    vocab: dict[str, int]
    path: str

    @property
    def device(self) -> torch.device:
        return self.dit.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.proj_out.weight.dtype


def transformer_state_dict(raw: dict) -> dict[str, torch.Tensor]:
    """The DiT weights of an F5-TTS checkpoint, EMA preferred.

    Accepts the training ``.pt`` (``{"ema_model_state_dict": {...}, "model_state_dict": ...}``)
    and the released ``.safetensors`` (flat EMA dict); keys may carry ``ema_model.`` and must carry
    ``transformer.``; mel-extractor buffers, ``initted`` and ``step`` are dropped."""
    if "ema_model_state_dict" in raw:
        raw = raw["ema_model_state_dict"]
    elif "model_state_dict" in raw:
        raw = raw["model_state_dict"]
    out = {}
    for key, value in raw.items():
        if key in _SKIP_KEYS:
            continue
        if key.startswith("ema_model."):
            key = key[len("ema_model."):]
        if key.startswith("transformer.") and not key.endswith(".freqs_cis"):
            # freqs_cis: fixed text positions, recomputed here (some exports carry them)
            out[key[len("transformer."):]] = value
    if not out:
        raise ValueError("no 'transformer.*' weights in this checkpoint: not an F5-TTS model")
    return out


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        raw = load_file(path)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    return transformer_state_dict(raw)


_ARCH_FLAGS = ("text_mask_padding", "pe_attn_head")
_V0_FLAGS = {"text_mask_padding": False, "pe_attn_head": 1}  # configs/F5TTS_Base.yaml


def architecture_overrides(path: str) -> dict:
    """Behaviour flags the state dict cannot show, for a checkpoint at ``path``.

    An upstream training config (``*.yaml`` with ``model: arch:``) beside the checkpoint wins;
    otherwise the first release's folder/file name (``F5TTS_Base``, not ``v1``) means its flags;
    anything else is taken as v1 (the defaults)."""
    folder = os.path.dirname(path)
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".yaml", ".yml")):
            continue
        import yaml

        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        model = config.get("model") if isinstance(config, dict) else None
        arch = model.get("arch") if isinstance(model, dict) else None
        if not isinstance(arch, dict):
            continue
        backbone = str(model.get("backbone", "DiT"))
        if backbone != "DiT":
            raise ValueError(f"{path}: {name} describes a {backbone} model; only F5-TTS DiT "
                             "checkpoints are supported")
        return {k: arch[k] for k in _ARCH_FLAGS if k in arch}
    names = (os.path.basename(folder) + "/" + os.path.basename(path)).lower()
    if "f5tts_base" in names and "v1" not in names:
        return dict(_V0_FLAGS)
    return {}


def load_f5(path: str, vocab_path: str | None = None, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, arch: dict | None = None) -> F5Model:
    """DiT from an F5-TTS checkpoint with its ``vocab.txt`` (next to it unless given);
    ``arch`` overrides the behaviour flags (default: `architecture_overrides`)."""
    vocab_path = vocab_path or os.path.join(os.path.dirname(path), "vocab.txt")
    if not os.path.exists(vocab_path):
        raise FileNotFoundError(f"{path}: the vocabulary {vocab_path} is missing; F5-TTS models "
                                "need the vocab.txt they were trained with, next to the weights")
    vocab = load_vocab(vocab_path)
    sd = read_checkpoint(path)
    cfg = DiTConfig.from_state_dict(sd)
    flags = architecture_overrides(path) if arch is None else arch
    cfg = dataclasses.replace(cfg, **{k: flags[k] for k in _ARCH_FLAGS if k in flags})
    if cfg.text_num_embeds != len(vocab):
        raise ValueError(f"{path}: the model has {cfg.text_num_embeds} text tokens but "
                         f"{vocab_path} lists {len(vocab)}: use the vocab.txt of this checkpoint")
    with torch.device("meta"):
        dit = DiT(cfg)
    dit = dit.to_empty(device="cpu")
    if "rotary_embed.inv_freq" not in sd:  # a buffer; recompute when a checkpoint lacks it
        sd["rotary_embed.inv_freq"] = RotaryEmbedding(cfg.dim_head).inv_freq
    missing, unexpected = dit.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the F5-TTS DiT "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if dit.text_embed.text_blocks is not None:  # non-persistent buffer: rebuild after meta init
        dit.text_embed.freqs_cis = text_positions(cfg.text_dim, dit.text_embed.POSITIONS)
    dit = dit.to(device=device, dtype=dtype).eval()
    dit.rotary_embed.inv_freq = dit.rotary_embed.inv_freq.float()
    if dit.text_embed.text_blocks is not None:
        dit.text_embed.freqs_cis = dit.text_embed.freqs_cis.float()
    return F5Model(dit=dit, vocab=vocab, path=path)


# --------------------------------------------------------------------------- sampling

def time_grid(steps: int, sway: float | None, dtype=torch.float32, use_epss: bool = True) -> torch.Tensor:
    if use_epss and steps in _EPSS:
        t = torch.tensor(_EPSS[steps], dtype=dtype) / 32
    else:
        t = torch.linspace(0, 1, steps + 1, dtype=dtype)
    if sway is not None:
        t = t + sway * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


def initial_noise(durations: list[int], channels: int,
                  seed: int | None | list[int]) -> torch.Tensor:
    """``[B, max(dur), C]`` Gaussian noise, item i from its own generator seeded ``seed`` (or
    ``seed[i]``; upstream re-seeds per item with one seed), zero padded."""
    rows = []
    for i, d in enumerate(durations):
        s = seed[i] if isinstance(seed, (list, tuple)) else seed
        gen = torch.Generator().manual_seed(int(s)) if s is not None else None
        rows.append(torch.randn(int(d), channels, generator=gen))
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


@torch.no_grad()
def sample(model: F5Model, cond: torch.Tensor, text: torch.Tensor, durations: list[int] | int,
           *, cond_lens: list[int] | None = None, steps: int = 32, cfg_strength: float = 2.0,
           sway: float | None = -1.0, seed: int | list[int] | None = None, use_epss: bool = True,
           noise: torch.Tensor | None = None,
           on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Mel frames ``[B, N, C]`` (reference frames included) for ``cond`` [B, Nc, C] log-mels
    and ``text`` [B, Nt] ids (-1 padded) covering reference + new text."""
    dit, device, dtype = model.dit, model.device, model.dtype
    batch, cond_len, channels = cond.shape
    lens = torch.tensor(cond_lens if cond_lens is not None else [cond_len] * batch, dtype=torch.long)
    if isinstance(durations, int):
        durations = [durations] * batch
    dur = torch.tensor(durations, dtype=torch.long)
    dur = torch.maximum(torch.maximum((text != -1).sum(dim=-1), lens) + 1, dur).clamp(max=65536)
    n = int(dur.max())
    cond = torch.nn.functional.pad(cond.float(), (0, 0, 0, n - cond_len))
    cond_mask = (torch.arange(n)[None, :] < lens[:, None]).unsqueeze(-1)
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond)).to(device=device, dtype=dtype)
    mask = (torch.arange(n)[None, :] < dur[:, None]).to(device) if batch > 1 else None
    text = text.to(device)
    seq_len = mask.sum(dim=1) if mask is not None else n
    text_c = dit.embed_text(text, seq_len)
    x = (noise if noise is not None else initial_noise(dur.tolist(), channels, seed))
    x = x.to(device=device, dtype=dtype)
    use_cfg = cfg_strength >= 1e-5
    if use_cfg:
        text_u = dit.embed_text(text, seq_len, drop_text=True)
        text_both = torch.cat((text_c, text_u), dim=0)
        cond_both = torch.cat((step_cond, torch.zeros_like(step_cond)), dim=0)
        mask_both = torch.cat((mask, mask), dim=0) if mask is not None else None
    t = time_grid(steps, sway, torch.float32, use_epss)
    total = len(t) - 1
    for i in range(total):
        t_i = torch.full((batch,), float(t[i]), device=device, dtype=dtype)
        if use_cfg:
            v = dit(torch.cat((x, x), dim=0), cond_both, text_both, torch.cat((t_i, t_i)), mask_both)
            v_c, v_u = v.chunk(2, dim=0)
            v = v_c + (v_c - v_u) * cfg_strength
        else:
            v = dit(x, step_cond, text_c, t_i, mask)
        x = x + (t[i + 1] - t[i]).to(dtype) * v
        if on_step is not None:
            on_step(i + 1, total)
    out = torch.where(cond_mask.to(device), cond.to(device=device, dtype=dtype), x)
    return out.float().cpu()
