"""ComfyUI's media conventions, in one place.

IMAGE: float32 tensor ``[B, H, W, C]`` in 0..1 (C = 3; 4 is accepted and the alpha dropped).
AUDIO: ``{"waveform": float32 [B, C, T], "sample_rate": int}``.
Frames on disk and in encoders are uint8 ``[N, H, W, 3]`` numpy arrays.
"""
from __future__ import annotations

from math import gcd

import numpy as np
import torch


class MediaError(ValueError):
    """Input media that cannot be used, with a message for the user."""


# --------------------------------------------------------------------------- images

def check_image(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Validate an IMAGE batch and return it as contiguous float32 RGB."""
    if not isinstance(image, torch.Tensor):
        raise MediaError(f"{what}: expected an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise MediaError(f"{what}: expected IMAGE shaped [B,H,W,C] with C in 1/3/4, got {tuple(image.shape)}")
    if image.shape[0] == 0:
        raise MediaError(f"{what}: the batch has no frames")
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    return image.float().contiguous()


def images_to_uint8(image: torch.Tensor, what: str = "image", first_index: int = 0) -> np.ndarray:
    """IMAGE -> uint8 ``[N,H,W,3]``; NaN/inf frames are an error naming the frame."""
    image = check_image(image, what)
    # A per-frame sum is NaN/inf exactly when the frame holds one: one cheap reduction instead of
    # a full boolean mask.
    finite = torch.isfinite(image.flatten(1).sum(dim=1))
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        shown = ", ".join(str(first_index + i) for i in bad[:10])
        raise MediaError(f"{what}: frame(s) {shown} contain NaN or infinite values")
    # One fused pass; +0.5 then truncation rounds half up, like round() on the 0..255 range.
    return image.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()


def uint8_to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> IMAGE float32 in 0..1."""
    return torch.from_numpy(np.array(frames, dtype=np.uint8)).float().div_(255.0)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column where one is odd."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return frames
    return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


# --------------------------------------------------------------------------- audio

def make_audio(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> dict:
    """Build an AUDIO dict from ``[T]``, ``[C,T]`` or ``[B,C,T]`` samples."""
    wave = torch.as_tensor(waveform, dtype=torch.float32)
    while wave.ndim < 3:
        wave = wave.unsqueeze(0)
    return {"waveform": wave.contiguous(), "sample_rate": int(sample_rate)}


def check_audio(audio: dict, what: str = "audio") -> tuple[torch.Tensor, int]:
    """Validate an AUDIO dict; returns ``(waveform [C,T] of the first batch item, rate)``."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise MediaError(f"{what}: expected an AUDIO dict with 'waveform' and 'sample_rate'")
    wave = torch.as_tensor(audio["waveform"]).float()
    rate = int(audio["sample_rate"])
    if wave.ndim == 3:
        wave = wave[0]
    elif wave.ndim == 1:
        wave = wave.unsqueeze(0)
    if wave.ndim != 2 or wave.shape[-1] == 0:
        raise MediaError(f"{what}: expected waveform [B,C,T] with samples, got {tuple(audio['waveform'].shape)}")
    if rate <= 0:
        raise MediaError(f"{what}: sample_rate must be positive, got {rate}")
    if not bool(torch.isfinite(wave).all()):
        raise MediaError(f"{what}: the waveform contains NaN or infinite samples")
    return wave, rate


def audio_duration(audio: dict) -> float:
    wave, rate = check_audio(audio)
    return wave.shape[-1] / rate


def to_channels(wave: torch.Tensor, channels: int) -> torch.Tensor:
    """``[C,T]`` -> ``[channels,T]``: downmix by averaging, upmix by repeating mono."""
    have = wave.shape[0]
    if have == channels:
        return wave
    if channels == 1:
        return wave.mean(dim=0, keepdim=True)
    if have == 1:
        return wave.expand(channels, -1).contiguous()
    return to_channels(wave.mean(dim=0, keepdim=True), channels)


def resample(wave: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    """Band-limited polyphase resampling of ``[..., T]`` (scipy, no torchaudio)."""
    if rate_in == rate_out:
        return wave
    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    out = resample_poly(wave.detach().cpu().double().numpy(), rate_out // g, rate_in // g, axis=-1)
    return torch.from_numpy(out.astype(np.float32))


def fit_length(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """Trim or zero-pad ``[C,T]`` to exactly ``samples``."""
    have = wave.shape[-1]
    if have >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - have))


def normalize_loudness(wave: torch.Tensor, rate: int, target_lufs: float,
                       peak_ceiling_db: float = -1.0) -> tuple[torch.Tensor, str]:
    """Scale ``[C,T]`` to an integrated loudness (ITU-R BS.1770 via pyloudnorm).

    When the gain would push peaks over ``peak_ceiling_db``, ffmpeg's look-ahead limiter
    (``alimiter``, latency-compensated so sync is kept) holds them under it instead of lowering
    the whole track. Returns the new waveform and a one-line report of what was done.
    """
    import pyloudnorm

    data = wave.detach().cpu().double().numpy()
    if data.shape[-1] < int(0.4 * rate):  # one BS.1770 gating block
        return wave, "loudness: clip shorter than 0.4 s, left as is"
    meter = pyloudnorm.Meter(rate)
    measured = meter.integrated_loudness(data.T)
    if not np.isfinite(measured):
        return wave, "loudness: silent audio, left as is"
    ceiling = 10 ** (peak_ceiling_db / 20)
    out, final, gain_db, note = data, measured, 0.0, ""
    # Limiting removes peak energy, so the loudness lands under the target; a second or third
    # round of gain + limiting converges on it.
    for _ in range(3):
        step_db = target_lufs - final
        if abs(step_db) < 0.1:
            break
        gain_db += step_db
        out = out * 10 ** (step_db / 20)
        if np.abs(out).max() > ceiling:
            out = limit_peaks(out, rate, ceiling)
            note = f", peaks limited to {peak_ceiling_db:.0f} dBFS"
        final = meter.integrated_loudness(out.T)
    return (torch.from_numpy(out.astype(np.float32)),
            f"loudness: {measured:.1f} LUFS -> {final:.1f} LUFS (target {target_lufs:.1f}, "
            f"gain {gain_db:+.1f} dB{note})")


def limit_peaks(samples: np.ndarray, rate: int, ceiling: float) -> np.ndarray:
    """ffmpeg's alimiter over ``[C,T]`` float samples, output aligned with the input."""
    import av
    from fractions import Fraction

    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=f"1/{rate}")
    limiter = graph.add("alimiter", f"limit={ceiling:.6f}:attack=5:release=50:level=disabled:latency=1")
    planar = graph.add("aformat", "sample_fmts=fltp")  # alimiter emits packed doubles
    source.link_to(limiter)
    limiter.link_to(planar)
    planar.link_to(graph.add("abuffersink"))
    graph.configure()
    pieces: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                pieces.append(graph.pull().to_ndarray())
            except (av.BlockingIOError, av.EOFError):
                return

    block = 1 << 14
    for start in range(0, samples.shape[1], block):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, start:start + block], dtype=np.float32),
            format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    out = np.concatenate(pieces, axis=1)[:, :samples.shape[1]]
    return np.clip(out, -ceiling, ceiling)
