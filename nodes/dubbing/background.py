"""The original track kept under the dubbed speech: SpinBot Dub Mix's engine (ComfyUI-free).

Method: **band-split ducking**. The original is split, zero-phase, into its speech band
(SPEECH_BAND_HZ, a Butterworth band-pass run forward and backward) and the rest (the original
minus that band, so the two sum back to the original exactly). Where the original speech was
(the segments' slots) or the new speech plays (its envelope, `audio.bed.speech_blocks`), the
speech band is lowered by ``speech_reduction_db`` and the rest by ``background_ducking_db``, with
`audio.bed.duck_curve`'s attack/release ramps (the attack runs ahead of each phrase). Outside
those regions the original passes unchanged. Music and ambience outside the speech band stay
nearly whole under the new speech; what shares the band with the voice is lowered with it, so
the original speech is *ducked*, not separated: it drops by the asked dB, the background in the
band drops with it. Everything is measured on the result and reported.

With ``centre_only`` on a stereo original only the band's centre (mid, (L+R)/2) is treated as
speech and its sides (L-R) as background: film and TV mixes put dialogue in the centre, so stereo
music and ambience in the speech band keep their width and most of their level; speech recorded
off-centre (a stereo microphone pair) would leak through its side, so it is off by default.

Waveforms are float32 ``[C,T]``; rates in Hz; levels in dB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..audio.bed import GAIN_HOP_SECONDS, PEAK_CEILING_DB, duck_curve, speech_blocks
from ..media import MediaError, check_audio, limit_peaks, mix_channels, resample
from ..script.segments import Segment

# 100 Hz - 5 kHz holds the voice's fundamental (about 85-255 Hz for adult voices) and its
# formants and most consonant energy; below (hum, bass, kick) and above (cymbals, air, hiss) is
# kept under the new speech.
SPEECH_BAND_HZ = (100.0, 5000.0)
BAND_ORDER = 4  # Butterworth order; run forward and backward: 8th-order slopes, zero phase
BAND_MARGIN_SECONDS = 0.5  # overlap per chunk so the two-pass filter has settled at its edges
CHUNK_SAMPLES = 1 << 20
SILENT_DBFS = -70.0
# Never a silent bed: the background outside the speech band goes at most this far down.
MAX_BACKGROUND_DB = 20.0  # an original quieter than this throughout has nothing to keep


@dataclass(frozen=True)
class MixSettings:
    speech_reduction_db: float = 24.0
    background_ducking_db: float = 4.0
    attack_seconds: float = 0.05
    release_seconds: float = 0.3
    centre_only: bool = False  # stereo: duck only the band's centre (mid), keep its sides


@dataclass
class MixResult:
    wave: torch.Tensor  # [C,T] at rate, T = the original's length
    rate: int
    speech_drop_db: float | None  # speech band (or its mid), original vs bed, fully ducked
    background_under_speech_db: float | None  # everything else, original vs bed, same blocks
    outside_change_db: float | None  # whole original vs bed where nothing is ducked
    bed_under_speech_dbfs: float | None
    bed_outside_dbfs: float | None
    speech_seconds: float
    settings: MixSettings
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        def db(v: float | None, unit: str = "dB") -> str:
            return "n/a" if v is None or not math.isfinite(v) else f"{v:.1f} {unit}"

        s = self.settings
        c, n = self.wave.shape
        part = "band's centre (mid)" if s.centre_only and c == 2 else "band"
        lines = [f"dub mix: {n / self.rate:.3f} s ({n} samples) at {self.rate} Hz, "
                 f"{'stereo' if c == 2 else 'mono'}",
                 f"method: band-split ducking (original speech is ducked, not separated): the "
                 f"{SPEECH_BAND_HZ[0]:.0f}-{SPEECH_BAND_HZ[1]:.0f} Hz {part} -"
                 f"{s.speech_reduction_db:.1f} dB, the rest -{s.background_ducking_db:.1f} dB "
                 f"where the original or new speech is ({self.speech_seconds:.2f} s), attack "
                 f"{s.attack_seconds:.2f} s ahead, release {s.release_seconds:.2f} s",
                 f"measured: original speech band dropped {db(self.speech_drop_db)}, background "
                 f"outside it under speech {db(self.background_under_speech_db)}, "
                 f"original outside speech changed {db(self.outside_change_db)}",
                 f"bed level: under speech {db(self.bed_under_speech_dbfs, 'dBFS')}, outside "
                 f"{db(self.bed_outside_dbfs, 'dBFS')}"]
        return "\n".join(lines + self.notes)


def _band(x: np.ndarray, rate: int) -> np.ndarray:
    """The speech band of ``[C,T]``, zero-phase, a chunk at a time with settling margins."""
    from scipy.signal import butter, sosfiltfilt

    hi = min(SPEECH_BAND_HZ[1], 0.45 * rate)
    sos = butter(BAND_ORDER, [SPEECH_BAND_HZ[0], hi], btype="bandpass", fs=rate, output="sos")
    margin = int(BAND_MARGIN_SECONDS * rate)
    out = np.empty_like(x)
    total = x.shape[-1]
    for a in range(0, total, CHUNK_SAMPLES):
        b = min(a + CHUNK_SAMPLES, total)
        lo, up = max(a - margin, 0), min(b + margin, total)
        part = x[:, lo:up].astype(np.float64)
        pad = min(3 * (2 * len(sos) + 1), part.shape[-1] - 1)
        y = sosfiltfilt(sos, part, axis=-1, padlen=max(pad, 0))
        out[:, a:b] = y[:, a - lo:a - lo + (b - a)]
    return out


def _energy(x: np.ndarray, mask: np.ndarray, hop: int) -> float:
    """Mean square of ``[C,T]`` over the hop-blocks where ``mask``; NaN when none."""
    total = x.shape[-1]
    starts = np.arange(mask.size) * hop
    blocks = np.add.reduceat(np.square(x, dtype=np.float64).sum(axis=0), starts[starts < total])
    sizes = np.minimum(starts + hop, total) - starts
    keep = mask[:blocks.size]
    count = float(sizes[:blocks.size][keep].sum()) * x.shape[0]
    return float(blocks[keep].sum()) / count if count else math.nan


def _ratio_db(before: float, after: float) -> float | None:
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0:
        return None
    return 10 * math.log10(before / after) if after > 0 else math.inf


def _dbfs(power: float) -> float | None:
    if not math.isfinite(power):
        return None
    return 10 * math.log10(power) if power > 0 else -math.inf


def dub_mix(original: dict, speech: dict, segments: Sequence[Segment],
            settings: MixSettings, check_interrupted=None) -> MixResult:
    """The new ``speech`` over the ``original`` with the original speech ducked (module doc).

    Output: the original's rate and length; its channel count (more than two are downmixed to
    stereo). The speech (any rate, mono or stereo) is resampled and cut or padded to that length.
    Raises MediaError for no segments, a silent original (nothing to keep), a bad AUDIO
    (`media.check_audio`) or settings out of range (speech band 0-60 dB, background 0-20 dB,
    ramps 0-5 s)."""
    tick = check_interrupted or (lambda: None)
    s = settings
    for name, hi in (("speech_reduction_db", 60.0), ("background_ducking_db", MAX_BACKGROUND_DB),
                     ("attack_seconds", 5.0), ("release_seconds", 5.0)):
        v = float(getattr(s, name))
        if not (math.isfinite(v) and 0.0 <= v <= hi):
            raise MediaError(f"{name} must lie in 0..{hi:g}, got {v!r}")
    segs = [g for g in segments if g.end > g.start]
    if not segs:
        raise MediaError("segments: none with a start before its end; connect the segments of "
                         "the speech (SpinBot Transcribe/Translate or SpinBot Dub Voice)")
    notes: list[str] = []
    wave, rate = check_audio(original, "original", notes)
    if wave.shape[0] > 2:
        wave, how = mix_channels(wave, 2)
        notes.append(how.replace("audio:", "original:", 1))
    x = wave.numpy().astype(np.float32, copy=True)
    c, total = x.shape
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0 or 20 * math.log10(peak) < SILENT_DBFS:
        raise MediaError("original: the audio is silent (peak under -70 dBFS): there is no "
                         "background to keep; connect the video's own sound")
    new, new_rate = check_audio(speech, "speech", notes)
    if new_rate != rate:
        new = resample(new, new_rate, rate)
        notes.append(f"speech resampled {new_rate} -> {rate} Hz")
    new, how = mix_channels(new, c)
    if how:
        notes.append(how.replace("audio:", "speech:", 1))
    v = new.numpy().astype(np.float32, copy=False)
    if v.shape[-1] != total:
        notes.append(f"speech is {v.shape[-1] / rate:.3f} s, the original {total / rate:.3f} s: "
                     "speech " + ("cut" if v.shape[-1] > total else "padded with silence"))
        v = v[:, :total] if v.shape[-1] > total else np.pad(v, ((0, 0), (0, total - v.shape[-1])))
    tick()

    # Where to duck: the new speech's envelope, plus every segment's slot (the original speech
    # there must go even where the new speech ends early).
    active, hop, _threshold = speech_blocks(v, rate)
    starts = np.arange(active.size) * hop
    for g in segs:
        a, b = int(round(g.start * rate)), int(round(g.end * rate))
        active |= (starts + hop > a) & (starts < b)
    attack, release = s.attack_seconds * rate / hop, s.release_seconds * rate / hop
    duck_sp = duck_curve(active, s.speech_reduction_db, attack, release)
    duck_bg = duck_curve(active, s.background_ducking_db, attack, release)
    tick()

    stereo_centre = bool(s.centre_only) and c == 2

    def speech_part(sig: np.ndarray) -> np.ndarray:
        # The part that is ducked like speech: the band, or for a centred dialogue mix its mid
        # (L+R)/2, the same in both channels, so the band's side (L-R) stays with the background.
        band = _band(sig, rate)
        return band.mean(axis=0, keepdims=True) if stereo_centre else band

    ducked = speech_part(x)
    rest = x - ducked
    tick()
    centres = starts + (hop - 1) / 2
    g_sp, g_bg = 10 ** (-duck_sp / 20), 10 ** (-duck_bg / 20)
    bed = np.empty_like(x)
    for a in range(0, total, CHUNK_SAMPLES):
        b = min(a + CHUNK_SAMPLES, total)
        t = np.arange(a, b)
        bed[:, a:b] = (ducked[:, a:b] * np.interp(t, centres, g_sp)
                       + rest[:, a:b] * np.interp(t, centres, g_bg))
    tick()

    # Measured on the bed itself: band and rest re-split from it, blocks fully ducked (both
    # curves at their asked depth) against blocks not ducked at all.
    full = (duck_sp >= s.speech_reduction_db - 1e-6) & (duck_bg >= s.background_ducking_db - 1e-6)
    none = (duck_sp <= 1e-6) & (duck_bg <= 1e-6)
    bed_part = speech_part(bed)
    result = MixResult(
        wave=torch.empty(0), rate=rate,
        speech_drop_db=_ratio_db(_energy(ducked, full, hop), _energy(bed_part, full, hop)),
        background_under_speech_db=_ratio_db(_energy(rest, full, hop),
                                             _energy(bed - bed_part, full, hop)),
        outside_change_db=_ratio_db(_energy(x, none, hop), _energy(bed, none, hop)),
        bed_under_speech_dbfs=_dbfs(_energy(bed, full, hop)),
        bed_outside_dbfs=_dbfs(_energy(bed, none, hop)),
        speech_seconds=float(active.sum()) * hop / rate, settings=s, notes=notes)
    if result.speech_drop_db is None:
        notes.append("speech band: the original has nothing in it under the speech to measure")
    if s.centre_only and not stereo_centre:
        notes.append("centre_only: the original is mono, so the whole speech band is ducked")
    del ducked, rest, bed_part
    out = bed + v
    ceiling = 10 ** (PEAK_CEILING_DB / 20)
    if float(np.abs(out).max()) > ceiling:
        out = limit_peaks(out, rate, ceiling).astype(np.float32)
        notes.append(f"peaks limited to {PEAK_CEILING_DB:.0f} dBFS (ffmpeg alimiter)")
    result.wave = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    return result
