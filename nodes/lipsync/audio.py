"""Wav2Lip's audio features: the official mel spectrogram and its per-video-frame windows.

The mel follows Wav2Lip's audio.py + hparams.py (itself from the Tacotron-2 recipe): 16 kHz,
pre-emphasis 0.97, STFT with n_fft 800 / hop 200 / Hann window 800 (librosa's centred STFT with
reflect padding, the default of the librosa 0.7 the release pinned), magnitude, 80 Slaney mel
bands 55..7600 Hz (librosa.filters.mel defaults), dB with a -100 dB floor minus 20 dB reference,
then scaled symmetrically to -4..4 and clipped. That gives 80 mel frames per second; each video
frame sees a window of 16 (0.2 s) starting at ``int(i * 80 / fps)``.

Only NumPy is needed: the filterbank is computed here with librosa's formula (the tests compare it
with librosa itself), so the pack does not depend on librosa at run time.
"""
from __future__ import annotations

import math

import numpy as np

from ..media import check_audio, resample, to_channels

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel frames per second
MEL_WINDOW = 16

_mel_basis: np.ndarray | None = None


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above (librosa,
    htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, freqs)


def mel_filterbank() -> np.ndarray:
    """``[80, 401]`` triangular Slaney-normalised filters, as ``librosa.filters.mel(sr=16000,
    n_fft=800, n_mels=80, fmin=55, fmax=7600)`` builds them."""
    global _mel_basis
    if _mel_basis is None:
        fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
        mel_f = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
        fdiff = np.diff(mel_f)
        ramps = mel_f[:, None] - fft_freqs[None, :]
        lower = -ramps[:-2] / fdiff[:-1, None]
        upper = ramps[2:] / fdiff[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # equal area per band ("slaney")
        _mel_basis = weights
    return _mel_basis


def _stft_magnitude(wave: np.ndarray) -> np.ndarray:
    """``|STFT|`` ``[401, 1 + len // 200]``: centred frames (reflect padding), periodic Hann."""
    pad = N_FFT // 2
    mode = "reflect" if len(wave) > pad else "constant"  # reflect needs more samples than pad
    padded = np.pad(wave, pad, mode=mode)
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def wav2lip_mel(wave_16k: np.ndarray) -> np.ndarray:
    """Mono 16 kHz samples -> Wav2Lip's normalised mel ``[80, 1 + len // 200]`` (float32, -4..4)."""
    wave = np.asarray(wave_16k, dtype=np.float64).reshape(-1)
    if wave.size == 0:
        raise ValueError("wav2lip_mel: the audio has no samples")
    # Pre-emphasis y[n] = x[n] - 0.97 x[n-1] (upstream: scipy.signal.lfilter([1, -0.97], [1], x)).
    emphasised = np.empty_like(wave)
    emphasised[0] = wave[0]
    emphasised[1:] = wave[1:] - PREEMPHASIS * wave[:-1]
    mel = mel_filterbank() @ _stft_magnitude(emphasised)
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, mel)) - REF_LEVEL_DB
    normalised = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_chunks(mel: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Exactly ``frames`` mel windows ``[frames, 80, 16]``, window ``i`` starting at
    ``int(i * 80 / fps)`` as in Wav2Lip's inference.py.

    Windows that would run past the end are the last 16 mel frames (upstream takes that window
    once and stops; here every later frame repeats it, so video and audio lengths can differ by
    rounding). A mel shorter than one window is padded with silence (-4).
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise ValueError(f"mel_chunks: expected a mel shaped [80, T], got {mel.shape}")
    if not fps > 0:
        raise ValueError(f"mel_chunks: fps must be positive, got {fps}")
    frames = int(frames)
    if frames < 0:
        raise ValueError(f"mel_chunks: frames must be >= 0, got {frames}")
    if mel.shape[1] < MEL_WINDOW:
        mel = np.pad(mel, ((0, 0), (0, MEL_WINDOW - mel.shape[1])), constant_values=-MAX_ABS_VALUE)
    last_start = mel.shape[1] - MEL_WINDOW
    step = 80.0 / fps  # upstream's mel_idx_multiplier, kept as the same float expression
    starts = [min(int(i * step), last_start) for i in range(frames)]
    out = np.empty((frames, N_MELS, MEL_WINDOW), dtype=np.float32)
    for i, start in enumerate(starts):
        out[i] = mel[:, start:start + MEL_WINDOW]
    return out


def prepare_audio(audio: dict) -> np.ndarray:
    """ComfyUI AUDIO (any channels and rate; first batch item) -> mono float32 16 kHz ``[T]``."""
    wave, rate = check_audio(audio, "lip-sync audio")
    mono = resample(to_channels(wave, 1), rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono[0].detach().cpu().numpy(), dtype=np.float32)


def frame_count(audio_seconds: float, fps: float) -> int:
    """Video frames needed to cover ``audio_seconds`` at ``fps``: ``ceil(seconds * fps)``, where a
    product within 1e-6 of an integer counts as that integer (3.0 s x 29.97 fps and the like)."""
    if not fps > 0:
        raise ValueError(f"frame_count: fps must be positive, got {fps}")
    exact = max(0.0, float(audio_seconds)) * float(fps)
    nearest = round(exact)
    if abs(exact - nearest) < 1e-6:
        return int(nearest)
    return int(math.ceil(exact))
