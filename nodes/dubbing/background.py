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
from ..voice.text import is_speakable

# 100 Hz - 5 kHz holds the voice's fundamental (about 85-255 Hz for adult voices) and its
# formants and most consonant energy; below (hum, bass, kick) and above (cymbals, air, hiss) is
# kept under the new speech.
SPEECH_BAND_HZ = (100.0, 5000.0)
BAND_ORDER = 4  # Butterworth order; run forward and backward: 8th-order slopes, zero phase
BAND_MARGIN_SECONDS = 0.5  # overlap per chunk so the two-pass filter has settled at its edges
# The drop of the original speech is measured in the telephone band (ITU-T G.712: 300-3400 Hz),
# which carries speech intelligibility and lies well inside the ducked band, so the figure is the
# ducking itself and not the split filter's slopes.
MEASURE_BAND_HZ = (300.0, 3400.0)
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
    speech_drop_db: float | None  # 300-3400 Hz (or its mid), original vs bed, fully ducked
    background_under_speech_db: float | None  # what is not ducked as speech, same blocks
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
                 f"measured: original speech band dropped {db(self.speech_drop_db)} "
                 f"({MEASURE_BAND_HZ[0]:.0f}-{MEASURE_BAND_HZ[1]:.0f} Hz), background outside "
                 f"it under speech {db(self.background_under_speech_db)}, "
                 f"original outside speech changed {db(self.outside_change_db)}",
                 f"bed level: under speech {db(self.bed_under_speech_dbfs, 'dBFS')}, outside "
                 f"{db(self.bed_outside_dbfs, 'dBFS')}"]
        return "\n".join(lines + self.notes)


def _sos(band: tuple[float, float], rate: int) -> np.ndarray:
    """A Butterworth band-pass (BAND_ORDER) as second-order sections; the top edge kept under
    0.45 x the rate so low rates still get a valid filter."""
    from scipy.signal import butter

    return butter(BAND_ORDER, [band[0], min(band[1], 0.45 * rate)], btype="bandpass", fs=rate,
                  output="sos")


def _filt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase (forward and backward) filtering of ``[C,T]`` float64."""
    from scipy.signal import sosfiltfilt

    pad = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    return sosfiltfilt(sos, x, axis=-1, padlen=max(pad, 0))


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
    # Whisper marks music and noise as '♪', '...' or emoji: not speech, so not ducked (Dub Voice
    # leaves them to the original too). Blank text is kept: a slot without a transcript.
    marks = [g for g in segs if g.text.strip() and not is_speakable(g.text)]
    segs = [g for g in segs if g not in marks]
    notes: list[str] = [f"segment {g.index} ({g.text[:40]!r}, {g.start:.2f}-{g.end:.2f} s) has "
                        "no words (music or sound marks): not ducked" for g in marks]
    wave, rate = check_audio(original, "original", notes)
    if wave.shape[0] > 2:
        wave, how = mix_channels(wave, 2)
        notes.append(how.replace("audio:", "original:", 1))
    x = wave.numpy().astype(np.float32, copy=False)
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
    split = _sos(SPEECH_BAND_HZ, rate)
    core = _sos(MEASURE_BAND_HZ, rate)

    def centre(sig: np.ndarray) -> np.ndarray:
        # For a centred dialogue mix the mid (L+R)/2, the same in both channels, so the band's
        # side (L-R) stays with the background.
        return sig.mean(axis=0, keepdims=True) if stereo_centre else sig

    # Chunk by chunk (with settling margins for the two-pass filters): a 10-minute stereo track
    # never needs whole-length copies of its band, rest and bed.
    centres = starts + (hop - 1) / 2
    g_sp, g_bg = 10 ** (-duck_sp / 20), 10 ** (-duck_bg / 20)
    full = (duck_sp >= s.speech_reduction_db - 1e-6) & (duck_bg >= s.background_ducking_db - 1e-6)
    none = (duck_sp <= 1e-6) & (duck_bg <= 1e-6)
    sums = np.zeros(10)  # energies; see the names in the MixResult below
    margin = int(BAND_MARGIN_SECONDS * rate)
    out = np.empty_like(x)
    for a in range(0, total, CHUNK_SAMPLES):
        b = min(a + CHUNK_SAMPLES, total)
        lo, up = max(a - margin, 0), min(b + margin, total)
        xs = x[:, lo:up].astype(np.float64)
        ducked = centre(_filt(split, xs))
        t = np.arange(lo, up)
        bed = ducked * np.interp(t, centres, g_sp) + (xs - ducked) * np.interp(t, centres, g_bg)
        keep = slice(a - lo, b - lo)
        out[:, a:b] = bed[:, keep]
        # Measured on the bed itself: its speech core (300-3400 Hz, or that core's centre) and
        # what is not the ducked part, re-split from it, against the original's.
        k = np.arange(a, b) // hop
        f, n = full[k], none[k]
        bed_part = centre(_filt(split, bed))[:, keep]
        parts = (centre(_filt(core, xs))[:, keep], centre(_filt(core, bed))[:, keep],
                 (xs - ducked)[:, keep], bed[:, keep] - bed_part)
        for i, sig in enumerate(parts):
            sums[i] += float(np.square(sig[:, f]).sum()) / sig.shape[0]
        sums[4] += float(np.square(xs[:, keep][:, n]).sum()) / c
        sums[5] += float(np.square(bed[:, keep][:, n]).sum()) / c
        sums[6] += float(np.square(bed[:, keep][:, f]).sum()) / c
        sums[7] += float(f.sum())
        sums[8] += float(n.sum())
        tick()
    mean_full = sums[6] / sums[7] if sums[7] else math.nan
    mean_none = sums[5] / sums[8] if sums[8] else math.nan
    result = MixResult(
        wave=torch.empty(0), rate=rate,
        speech_drop_db=_ratio_db(sums[0], sums[1]) if sums[7] else None,
        background_under_speech_db=_ratio_db(sums[2], sums[3]) if sums[7] else None,
        outside_change_db=_ratio_db(sums[4], sums[5]) if sums[8] else None,
        bed_under_speech_dbfs=_dbfs(mean_full), bed_outside_dbfs=_dbfs(mean_none),
        speech_seconds=float(active.sum()) * hop / rate, settings=s, notes=notes)
    if result.speech_drop_db is None:
        notes.append("speech band: the original has nothing in it under the speech to measure")
    if s.centre_only and not stereo_centre:
        notes.append("centre_only: the original is mono, so the whole speech band is ducked")
    out += v
    ceiling = 10 ** (PEAK_CEILING_DB / 20)
    if float(np.abs(out).max()) > ceiling:
        out = limit_peaks(out, rate, ceiling).astype(np.float32)
        notes.append(f"peaks limited to {PEAK_CEILING_DB:.0f} dBFS (ffmpeg alimiter)")
    result.wave = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    return result
