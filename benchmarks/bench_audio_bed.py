"""Audio bed benchmark (figures, not assertions): seconds of mixed audio per second of CPU time
for `make_bed_mix`, the engine of SpinBot Audio Bed, on a long narration.

    python -m benchmarks.bench_audio_bed [--minutes 10] [--rate 48000] [--sources "music input,pink noise,drone"]

The voice is stereo speech-like bursts (noise-modulated tones, pauses between phrases) at
``--rate``; the music input is 37 s of stereo 44.1 kHz (looped and resampled), so the figure
includes resampling, looping, both BS.1770 measurements, ducking, normalisation and the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--sources", default="music input,pink noise,drone")
    args = ap.parse_args()

    sys.path.insert(0, ROOT)
    from tests._pack import load_pack

    load_pack()
    import torch

    from spinbot.nodes.audio.bed import BedSettings, make_bed_mix

    rate, n = args.rate, int(round(args.minutes * 60 * args.rate))
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    # Phrases of 2-5 s with 0.4-1.2 s pauses.
    gate = np.zeros(n, np.float32)
    pos = 0.5
    while pos < n / rate:
        length = rng.uniform(2, 5)
        gate[int(pos * rate):int((pos + length) * rate)] = 1.0
        pos += length + rng.uniform(0.4, 1.2)
    speech = (0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * gate
              ).astype(np.float32)
    voice = {"waveform": torch.from_numpy(np.stack([speech, speech]))[None], "sample_rate": rate}
    mt = np.arange(37 * 44100) / 44100
    music = np.stack([0.3 * np.sin(2 * np.pi * 220 * mt), 0.3 * np.sin(2 * np.pi * 277 * mt)])
    music = {"waveform": torch.from_numpy(music.astype(np.float32))[None], "sample_rate": 44100}
    seconds = n / rate
    print(f"{args.minutes:g} min narration, stereo {rate} Hz, {os.cpu_count()} CPUs")
    for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
        t0 = time.perf_counter()
        res = make_bed_mix(voice, BedSettings(source=source), music=music)
        took = time.perf_counter() - t0
        print(f"  {source:12s} {took:6.2f} s  {seconds / took:7.1f} s of audio per s   "
              f"final {res.final_lufs:.2f} LUFS, bed {res.bed_pause_dbfs:.1f} / "
              f"{res.bed_speech_dbfs:.1f} dBFS (pause / speech), loops {res.loops}")


if __name__ == "__main__":
    main()
