"""The Vocos vocoder (mel -> 24 kHz waveform): ConvNeXt backbone + ISTFT head.

Loads the ``charactr/vocos-mel-24khz`` release unchanged: ``config.yaml`` (jsonargparse style
``feature_extractor`` / ``backbone`` / ``head`` sections with ``init_args``) and
``pytorch_model.bin`` (a plain state dict read with ``torch.load(weights_only=True)``). Attribute
names follow the release keys (``backbone.embed``, ``backbone.convnext.N.dwconv``, ``head.out``,
``head.istft.window``); the feature extractor's torchaudio buffers are not needed for decoding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VocosConfig:
    input_channels: int = 100
    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8
    n_fft: int = 1024
    hop_length: int = 256
    padding: str = "same"
    sample_rate: int = 24000

    @classmethod
    def from_yaml(cls, path: str) -> "VocosConfig":
        import yaml

        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
        backbone = (cfg.get("backbone") or {}).get("init_args") or {}
        head = (cfg.get("head") or {}).get("init_args") or {}
        feats = (cfg.get("feature_extractor") or {}).get("init_args") or {}
        head_class = (cfg.get("head") or {}).get("class_path", "vocos.heads.ISTFTHead")
        if not head_class.endswith("ISTFTHead"):
            raise ValueError(f"{path}: only the ISTFT head (mel Vocos) is supported, got {head_class}")
        if backbone.get("adanorm_num_embeddings"):
            raise ValueError(f"{path}: conditional (EnCodec) Vocos models are not supported")
        return cls(input_channels=int(backbone.get("input_channels", 100)),
                   dim=int(backbone.get("dim", 512)),
                   intermediate_dim=int(backbone.get("intermediate_dim", 1536)),
                   num_layers=int(backbone.get("num_layers", 8)),
                   n_fft=int(head.get("n_fft", 1024)), hop_length=int(head.get("hop_length", 256)),
                   padding=str(head.get("padding", "same")),
                   sample_rate=int(feats.get("sample_rate", 24000)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, cfg: VocosConfig):
        super().__init__()
        self.embed = nn.Conv1d(cfg.input_channels, cfg.dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, 1 / cfg.num_layers)
                                      for _ in range(cfg.num_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # [B, n_mels, T] -> [B, T, dim]
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding (overlap-add by fold, window-envelope normalised)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, padding: str = "same"):
        super().__init__()
        if padding not in ("same", "center"):
            raise ValueError(f"padding must be 'same' or 'center', got {padding!r}")
        self.n_fft, self.hop_length, self.win_length, self.padding = n_fft, hop_length, win_length, padding
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # complex [B, n_fft//2+1, T]
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window,
                               center=True)
        pad = (self.win_length - self.hop_length) // 2
        frames = spec.shape[-1]
        ifft = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward") * self.window[None, :, None]
        size = (frames - 1) * self.hop_length + self.win_length
        fold = dict(output_size=(1, size), kernel_size=(1, self.win_length), stride=(1, self.hop_length))
        y = nn.functional.fold(ifft, **fold)[:, 0, 0, pad:-pad]
        env = self.window.square().expand(1, frames, -1).transpose(1, 2)
        env = nn.functional.fold(env, **fold).squeeze()[pad:-pad]
        return y / env.clamp(min=1e-11)


class ISTFTHead(nn.Module):
    def __init__(self, cfg: VocosConfig):
        super().__init__()
        self.out = nn.Linear(cfg.dim, cfg.n_fft + 2)
        self.istft = ISTFT(cfg.n_fft, cfg.hop_length, cfg.n_fft, cfg.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag, phase = self.out(x.to(self.out.weight.dtype)).float().transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(mag).clamp(max=1e2)
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        return self.istft(spec)


class Vocos(nn.Module):
    def __init__(self, cfg: VocosConfig):
        super().__init__()
        self.config = cfg
        self.backbone = VocosBackbone(cfg)
        self.head = ISTFTHead(cfg)

    @torch.no_grad()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, frames]`` log-mel -> ``[B, frames * hop]`` waveform."""
        x = self.backbone(mel.to(self.backbone.embed.weight.dtype))
        return self.head(x).float()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.decode(mel)


def vocos_state_dict(raw: dict) -> dict[str, torch.Tensor]:
    """The decoder keys of a release state dict (feature-extractor buffers dropped)."""
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    return {k: v for k, v in raw.items() if not k.startswith("feature_extractor.")}


def load_vocos(folder: str, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> Vocos:
    """Vocos from a folder holding ``config.yaml`` and ``pytorch_model.bin`` (or
    ``model.safetensors``)."""
    cfg = VocosConfig.from_yaml(os.path.join(folder, "config.yaml"))
    weights = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(weights):
        raw = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        raw = load_file(os.path.join(folder, "model.safetensors"))
    model = Vocos(cfg)
    sd = vocos_state_dict(raw)
    sd.setdefault("head.istft.window", model.head.istft.window)
    model.load_state_dict(sd, strict=True)
    # The ISTFT and its window stay float32: half precision breaks the envelope division.
    model.backbone.to(device=device, dtype=dtype)
    model.head.to(device=device)
    model.head.out.to(dtype=dtype)
    return model.eval()
