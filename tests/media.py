"""Test media made in code: a real face photo, tones, noise and (when espeak-ng exists) speech."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import soundfile as sf
import torch


def astronaut(size: int | None = None) -> np.ndarray:
    """skimage's astronaut photo (a real face), uint8 [H,W,3], optionally resized square."""
    from skimage import data

    img = data.astronaut()
    if size:
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
    return img


def astronaut_image(size: int | None = None) -> torch.Tensor:
    return torch.from_numpy(np.array(astronaut(size))).float().div(255.0)[None]


def tone(seconds: float, rate: int = 24000, freq: float = 220.0, amplitude: float = 0.3,
         channels: int = 1) -> np.ndarray:
    """A sine with a little noise, float32 [C,T]."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(0)
    wave = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    return np.repeat(wave[None].astype(np.float32), channels, axis=0)


def tone_audio(seconds: float, rate: int = 24000, channels: int = 1, **kw) -> dict:
    return {"waveform": torch.from_numpy(tone(seconds, rate, channels=channels, **kw))[None],
            "sample_rate": rate}


def write_wav(path: str, wave: np.ndarray, rate: int) -> str:
    sf.write(path, wave.T, rate, subtype="PCM_16")
    return path


def speech_wav(path: str, text: str, voice: str = "en") -> str | None:
    """Speech from espeak-ng into ``path``; None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-v", voice, "-w", path, text], check=True, capture_output=True)
    return path if os.path.getsize(path) > 44 else None
