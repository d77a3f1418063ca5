"""The F5-TTS DiT backbone (v1 Base and same-architecture fine-tunes), written from the published
architecture (SWivid/F5-TTS ``model/backbones/dit.py`` + ``model/modules.py``).

Attribute names match the checkpoint keys under ``transformer.``: ``time_embed.time_mlp``,
``text_embed.text_embed`` / ``text_embed.text_blocks.N`` (ConvNeXt-V2), ``input_embed.proj`` /
``input_embed.conv_pos_embed.conv1d``, ``rotary_embed.inv_freq``, ``transformer_blocks.N``
(``attn_norm``, ``attn.to_q/k/v/out.0``, ``ff.ff.0.0`` / ``ff.ff.2``), ``norm_out.linear``,
``proj_out``. The configuration is read from the state dict itself (`DiTConfig.from_state_dict`),
so fine-tunes with another vocabulary size load without a config file. Two behaviour flags are
not visible in the keys: ``text_mask_padding`` and ``pe_attn_head`` (v1: True / all heads; the
first F5TTS_Base: False / 1); `cfm.architecture_overrides` reads them from a training config.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiTConfig:
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: float = 2
    mel_dim: int = 100
    text_num_embeds: int = 2545
    text_dim: int = 512
    conv_layers: int = 4
    qk_norm: bool = False
    long_skip_connection: bool = False
    text_mask_padding: bool = True  # v1; the first F5TTS_Base (v0) used False
    pe_attn_head: int | None = None  # rotary on the first N heads only (v0: 1); None = all

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "DiTConfig":
        """Infer the architecture from ``transformer.*``-stripped keys and shapes."""
        try:
            dim = sd["time_embed.time_mlp.0.weight"].shape[0]
            vocab_rows, text_dim = sd["text_embed.text_embed.weight"].shape
            dim_head = sd["rotary_embed.inv_freq"].shape[0] * 2
            inner = sd["transformer_blocks.0.attn.to_q.weight"].shape[0]
            ff_inner = sd["transformer_blocks.0.ff.ff.0.0.weight"].shape[0]
            mel_dim = sd["proj_out.weight"].shape[0]
        except KeyError as exc:
            raise ValueError(f"not an F5-TTS DiT checkpoint (missing {exc.args[0]})") from None
        depth = 1 + max(int(m.group(1)) for k in sd
                        if (m := re.match(r"transformer_blocks\.(\d+)\.", k)))
        convs = [int(m.group(1)) for k in sd if (m := re.match(r"text_embed\.text_blocks\.(\d+)\.", k))]
        return cls(dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head,
                   ff_mult=ff_inner / dim, mel_dim=mel_dim, text_num_embeds=vocab_rows - 1,
                   text_dim=text_dim, conv_layers=1 + max(convs) if convs else 0,
                   qk_norm="transformer_blocks.0.attn.q_norm.weight" in sd,
                   long_skip_connection="long_skip_connection.weight" in sd)


# --------------------------------------------------------------------------- embeddings

def sinus_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t.float().unsqueeze(1) * freq.unsqueeze(0)
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(sinus_embedding(t, self.freq_dim).to(t.dtype))


def text_positions(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """``[length, dim]`` fixed sinusoidal positions (cos half, then sin half)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class GRN(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.grn = GRN(intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D]
        y = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y


class TextEmbedding(nn.Module):
    POSITIONS = 8192

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.mask_padding = cfg.text_mask_padding
        self.text_embed = nn.Embedding(cfg.text_num_embeds + 1, cfg.text_dim)  # 0 = filler
        if cfg.conv_layers > 0:
            self.register_buffer("freqs_cis", text_positions(cfg.text_dim, self.POSITIONS),
                                 persistent=False)
            self.text_blocks = nn.Sequential(*[ConvNeXtV2Block(cfg.text_dim, cfg.text_dim * 2)
                                               for _ in range(cfg.conv_layers)])
        else:
            self.text_blocks = None

    def forward(self, text: torch.Tensor, seq_len: int | torch.Tensor,
                drop_text: bool = False) -> torch.Tensor:
        """``text`` [B, Nt] token ids (-1 = padding) -> [B, N, text_dim] aligned to N mel frames."""
        text = text + 1
        valid = None
        if torch.is_tensor(seq_len):
            seq_len = seq_len.to(device=text.device, dtype=torch.long)
            n = int(seq_len.max().item())
        else:
            n = int(seq_len)
        text = F.pad(text[:, :n], (0, n - min(text.shape[1], n)), value=0)
        if torch.is_tensor(seq_len):
            valid = torch.arange(n, device=text.device).unsqueeze(0) < seq_len.unsqueeze(1)
            text = text.masked_fill(~valid, 0)
        filler = text == 0
        if drop_text:
            text = torch.zeros_like(text)
        x = self.text_embed(text)
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        if self.text_blocks is not None:
            pos = self.freqs_cis[:n].to(x.dtype)
            if valid is not None:
                pos = pos.unsqueeze(0) * valid.unsqueeze(-1).to(pos.dtype)
            x = x + pos
            if self.mask_padding:
                keep = ~filler.unsqueeze(-1)
                x = x * keep
                for block in self.text_blocks:
                    x = block(x) * keep
            else:
                x = self.text_blocks(x)
        return x


class ConvPositionEmbedding(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2), nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)
        keep = mask.unsqueeze(1) if mask is not None else None
        if keep is not None:
            x = x.masked_fill(~keep, 0.0)
        for layer in self.conv1d:
            x = layer(x)
            if keep is not None and isinstance(layer, nn.Conv1d):
                x = x.masked_fill(~keep, 0.0)
        return x.transpose(1, 2)


class InputEmbedding(nn.Module):
    def __init__(self, mel_dim: int, text_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + text_dim, out_dim)
        self.conv_pos_embed = ConvPositionEmbedding(out_dim)

    def forward(self, x, cond, text_embed, drop_audio_cond: bool = False, mask=None):
        if drop_audio_cond:
            cond = torch.zeros_like(cond)
        x = self.proj(torch.cat((x, cond, text_embed), dim=-1))
        return self.conv_pos_embed(x, mask=mask) + x


class RotaryEmbedding(nn.Module):
    """Rotary positions on interleaved pairs (x-transformers layout; ``inv_freq`` is saved)."""

    def __init__(self, dim_head: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim_head, 2).float() / dim_head)))

    def forward(self, seq_len: int) -> torch.Tensor:
        t = torch.arange(seq_len, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)
        return torch.stack((freqs, freqs), dim=-1).flatten(-2)  # [N, dim_head]


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``x`` [B, H, N, Dh]; rotates the first ``freqs.shape[-1]`` channels."""
    rot = freqs.shape[-1]
    xr, xp = x[..., :rot].float(), x[..., rot:]
    pairs = xr.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    out = xr * freqs.cos() + rotated * freqs.sin()
    return torch.cat((out.to(x.dtype), xp), dim=-1)


# --------------------------------------------------------------------------- transformer

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.to(self.weight.dtype), (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, qk_norm: bool = False,
                 pe_attn_head: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.pe_attn_head = pe_attn_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = RMSNorm(dim_head) if qk_norm else None
        self.k_norm = RMSNorm(dim_head) if qk_norm else None
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x, mask=None, rope=None):
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, -1).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None and self.pe_attn_head is not None:
            pn = self.pe_attn_head
            q = torch.cat((apply_rotary(q[:, :pn], rope), q[:, pn:]), dim=1)
            k = torch.cat((apply_rotary(k[:, :pn], rope), k[:, pn:]), dim=1)
        elif rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)  # F5 v1 attends over padding too
        out = self.to_out[0](out.transpose(1, 2).reshape(b, n, -1))
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out


class AdaLayerNorm(nn.Module):
    def __init__(self, dim: int, chunks: int = 6):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * chunks)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float):
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")),
                                nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x):
        return self.ff(x)


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.attn_norm = AdaLayerNorm(cfg.dim, 6)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dim_head, cfg.qk_norm, cfg.pe_attn_head)
        self.ff_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult)

    def forward(self, x, t, mask=None, rope=None):
        mod = self.attn_norm.linear(self.attn_norm.silu(t))
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.chunk(6, dim=1)
        h = self.attn_norm.norm(x) * (1 + scale_a[:, None]) + shift_a[:, None]
        x = x + gate_a[:, None] * self.attn(h, mask=mask, rope=rope)
        h = self.ff_norm(x) * (1 + scale_f[:, None]) + shift_f[:, None]
        return x + gate_f[:, None] * self.ff(h)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.text_embed = TextEmbedding(cfg)
        self.input_embed = InputEmbedding(cfg.mel_dim, cfg.text_dim, cfg.dim)
        self.rotary_embed = RotaryEmbedding(cfg.dim_head)
        self.transformer_blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.long_skip_connection = (nn.Linear(cfg.dim * 2, cfg.dim, bias=False)
                                     if cfg.long_skip_connection else None)
        self.norm_out = AdaLayerNorm(cfg.dim, 2)
        self.proj_out = nn.Linear(cfg.dim, cfg.mel_dim)

    def embed_text(self, text: torch.Tensor, seq_len: int | torch.Tensor,
                   drop_text: bool = False) -> torch.Tensor:
        return self.text_embed(text, seq_len, drop_text=drop_text)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text_embed: torch.Tensor,
                time: torch.Tensor, mask: torch.Tensor | None = None,
                drop_audio_cond: bool = False) -> torch.Tensor:
        """One velocity prediction. ``x``/``cond`` [B, N, mel], ``text_embed`` from `embed_text`
        (already dropped for the unconditional pass), ``time`` [B] or scalar in 0..1."""
        b, n = x.shape[:2]
        if time.ndim == 0:
            time = time.repeat(b)
        t = self.time_embed(time)
        h = self.input_embed(x, cond, text_embed, drop_audio_cond=drop_audio_cond, mask=mask)
        rope = self.rotary_embed(n)
        residual = h
        for block in self.transformer_blocks:
            h = block(h, t, mask=mask, rope=rope)
        if self.long_skip_connection is not None:
            h = self.long_skip_connection(torch.cat((h, residual), dim=-1))
        scale, shift = self.norm_out.linear(self.norm_out.silu(t)).chunk(2, dim=1)
        h = self.norm_out.norm(h) * (1 + scale)[:, None] + shift[:, None]
        return self.proj_out(h)
