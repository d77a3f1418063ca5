"""Log-mel features as F5-TTS and Vocos compute them, with torch.stft and no torchaudio.

Both models use torchaudio's ``MelSpectrogram(sample_rate=24000, n_fft=1024, win_length=1024,
hop_length=256, n_mels=100, power=1, center=True, norm=None, mel_scale="htk")`` followed by
``log(clamp(x, 1e-5))`` (F5-TTS ``get_vocos_mel_spectrogram``; Vocos' ``safe_log`` clamps at 1e-7,
which no real signal reaches). The filterbank below is torchaudio's ``melscale_fbanks`` formula
(HTK mel scale, triangles in Hz, no area normalisation), so features match to float precision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class MelSettings:
    sample_rate: int = 24000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 100
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5


F5_MEL = MelSettings()


def _hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """``[n_fft//2+1, n_mels]`` triangular HTK filterbank (torchaudio's melscale_fbanks)."""
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)
    n_freqs = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float32)
    m_pts = torch.linspace(float(_hz_to_mel(f_min)), float(_hz_to_mel(f_max)), n_mels + 2,
                           dtype=torch.float32)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def log_mel(wave: torch.Tensor, settings: MelSettings = F5_MEL) -> torch.Tensor:
    """``[T]`` or ``[B,T]`` waveform at ``settings.sample_rate`` -> ``[B, n_mels, frames]``.

    ``frames = T // hop + 1`` (centred STFT with reflect padding)."""
    if wave.ndim == 1:
        wave = wave.unsqueeze(0)
    if wave.ndim == 3:
        wave = wave.squeeze(1)
    wave = wave.float()
    window = torch.hann_window(settings.win_length, device=wave.device)
    spec = torch.stft(wave, settings.n_fft, hop_length=settings.hop_length,
                      win_length=settings.win_length, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    magnitude = spec.abs()
    fb = mel_filterbank(settings.sample_rate, settings.n_fft, settings.n_mels, settings.f_min,
                        settings.f_max).to(wave.device)
    mel = torch.matmul(magnitude.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log(torch.clamp(mel, min=settings.log_floor))


def frames_for(samples: int, hop_length: int = F5_MEL.hop_length) -> int:
    return samples // hop_length + 1


def seconds_to_frames(seconds: float, settings: MelSettings = F5_MEL) -> int:
    return int(math.floor(seconds * settings.sample_rate / settings.hop_length))
