"""Dubbed speech fitted to the original timing: SpinBot Dub Voice's engine (ComfyUI-free).

Each translated segment keeps its original slot ``[start, end]``. It is spoken by F5-TTS in the
original speaker's voice and fitted to the slot in two steps:

1. **F5's own duration control.** F5-TTS generates exactly the number of mel frames it is asked
   for (upstream ``infer_process`` takes that total as ``fix_duration`` or derives it from
   ``speed``; `voice.engine.plan` gives the natural length, its ``speed=1`` estimate). The frames
   asked for are the slot's, bounded to ``natural / max_speed_change .. natural *
   max_speed_change`` so the model is never asked to cram or drag a sentence beyond that.
2. **A bounded tempo change.** What is still off is taken up by ffmpeg's ``atempo`` (WSOLA:
   tempo changes, pitch kept), run through PyAV's filter graph, by at most ``max_tempo_change``
   either way.

A segment that is still longer than its slot after both (it needs more than
``max_speed_change * max_tempo_change``) is reported; it **overruns into the gap after its slot**
and is **cut** (10 ms fade) only where it would reach the next segment's start (or the end of the
audio), so every segment starts exactly at its original start. A segment that is shorter ends
early (silence fills the rest of its slot).

The reference voice is a saved profile or is cut automatically from the original audio: runs of
neighbouring original segments (gaps under ``REFERENCE_MAX_GAP_SECONDS``) spanning 5-12 s are
candidates and the one with the best speech-to-noise ratio wins (see `stretch_snr_db`); its
transcript is those segments' original-language text (F5 needs the words the reference says).

Every segment's F5 waveform is cached on disk (``<temp>/spinbot-dub/<key>.npy``, written
atomically) by a content key of everything that makes it (model files, reference audio and text,
piece texts, frame counts, seeds, sampler settings), so a re-run after Cancel synthesizes only the
segments that had not finished.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from .. import runtime
from ..files import atomic_path, trim_oldest
from ..media import MediaError, check_audio, filter_audio, make_audio, mix_channels, resample
from ..script.segments import Segment
from ..video.store import content_key
from ..voice import engine
from ..voice.mel import F5_MEL
from ..voice.profiles import (MAX_SECONDS, MIN_SECONDS, SILENCE_DBFS, VoiceError, VoiceProfile,
                              _clipping, _frame_db, make_profile)
from ..voice.text import is_speakable, spoken_text, text_problem

F5_RATE = F5_MEL.sample_rate
HOP_SECONDS = F5_MEL.hop_length / F5_MEL.sample_rate
# Reference stretch: F5-TTS works best with 5-12 s of reference (its own preprocessing keeps at
# most 12 s, `profiles.MAX_SECONDS`); 3 s is accepted when no longer clean stretch exists.
REFERENCE_MIN_SECONDS = 5.0
REFERENCE_FALLBACK_SECONDS = 3.0
# Segments further apart than this are not joined into one reference: a longer pause is where
# a different speaker may start (segments carry no speaker label).
REFERENCE_MAX_GAP_SECONDS = 1.0
REFERENCE_FALLBACK_GAP_SECONDS = 3.0
# Context kept around the cut so the first and last syllables are whole; never past the midpoint
# of the gap to a neighbouring segment.
REFERENCE_PAD_SECONDS = 0.15
# Speech-to-noise: the loud level (95th percentile of 20 ms frame levels) over the floor (10th
# percentile). Speech pauses between words and syllables for well over 10 % of the time, so the
# floor is the noise under it; capped where the floor is digital silence.
SNR_CAP_DB = 60.0
CLIPPED_PENALTY_DB = 20.0
CUT_FADE_SECONDS = 0.010  # a segment cut at the next one's start is faded, not clicked off
TEMPO_EPSILON = 0.005  # tempo changes under 0.5 % are not worth an atempo pass
CACHE_SUBDIR = "spinbot-dub"
CACHE_MAX_BYTES = 512 << 20  # oldest segment waveforms go first over this (~1.5 h of 24 kHz float)


@dataclass(frozen=True)
class FitSettings:
    """Sampler settings (as SpinBot F5-TTS) and the two fitting bounds (ratios >= 1)."""
    nfe_steps: int = 32
    cfg_strength: float = 2.0
    sway: float = -1.0
    seed: int = 0
    max_speed_change: float = 1.3
    max_tempo_change: float = 1.25
    cross_fade: float = 0.15


@dataclass
class Reference:
    profile: VoiceProfile
    source: str  # one line saying where it came from
    start: float | None = None
    end: float | None = None
    snr_db: float | None = None


@dataclass
class SegmentFit:
    index: int
    slot: float
    natural: float  # F5's speed-1 estimate, seconds
    f5: float  # what F5 was asked for (= generated), seconds
    tempo: float  # atempo factor applied (1 = none); >1 faster
    spoken: float  # fitted length before any cut, seconds
    placed: float  # length on the timeline after any cut, seconds
    cached: bool
    over_bound: bool
    cut: bool


@dataclass
class DubVoiceResult:
    wave: torch.Tensor  # float32 [1, T] at rate, T = the original's sample count
    rate: int
    segments: tuple[Segment, ...]
    fits: list[SegmentFit]
    reference: Reference
    settings: FitSettings
    notes: list[str] = field(default_factory=list)

    @property
    def over_bound(self) -> list[SegmentFit]:
        return [f for f in self.fits if f.over_bound]

    def report(self) -> str:
        """Lines for the node's ``report`` output: reference, bounds, one line per segment."""
        s = self.settings
        n = self.wave.shape[-1]
        lines = [f"dub voice: {len(self.fits)} segments on the original timeline, "
                 f"{n / self.rate:.3f} s ({n} samples) at {self.rate} Hz",
                 f"reference: {self.reference.source}",
                 f"fit: F5-TTS duration control within {s.max_speed_change:g}x of its natural "
                 f"length, then atempo (pitch kept) within {s.max_tempo_change:g}x; longer "
                 "speech overruns into the gap after its slot and is cut at the next segment",
                 f"reused from cache: {sum(f.cached for f in self.fits)} of {len(self.fits)} "
                 "segments"]
        for f, seg in zip(self.fits, self.segments):
            line = (f"  #{f.index + 1} {seg.start:.3f}-{seg.end:.3f} s: slot {f.slot:.2f} s, "
                    f"natural {f.natural:.2f} s -> F5 {f.f5:.2f} s -> tempo {f.tempo:.3f}x -> "
                    f"{f.spoken:.2f} s")
            if f.over_bound:
                line += (f" (over the bound: needs {f.natural / f.slot:.2f}x, "
                         f"{'cut' if f.cut else 'overruns'} "
                         f"{max(f.spoken - f.slot, 0):.2f} s)")
            elif f.cut:
                line += " (cut at the next segment)"
            lines.append(line)
        over = self.over_bound
        lines.append(f"over the bound: {len(over)} segment(s)"
                     + (": " + ", ".join(f"#{f.index + 1}" for f in over) if over else ""))
        return "\n".join(lines + self.notes)


# --------------------------------------------------------------------------- tempo

def atempo(wave: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """``wave`` (float32 ``[T]``) played ``factor`` times faster with its pitch kept: ffmpeg's
    ``atempo`` filter (WSOLA) through PyAV. Output length is ``T / factor`` give or take a few
    ms (trimmed or padded to exactly ``round(T / factor)``). ``factor`` must lie in 0.5..2 (the
    range one atempo instance handles in every ffmpeg version); raises ValueError otherwise."""
    factor = float(factor)
    if not (math.isfinite(factor) and 0.5 <= factor <= 2.0):
        raise ValueError(f"tempo factor {factor} outside 0.5..2")
    want = int(round(len(wave) / factor))
    if len(wave) == 0:
        return np.zeros(0, np.float32)
    out = filter_audio(np.asarray(wave, np.float32)[None], rate, "atempo",
                       f"tempo={factor:.6f}")[0]
    if len(out) < want:
        out = np.pad(out, (0, want - len(out)))
    return np.ascontiguousarray(out[:want], dtype=np.float32)


# --------------------------------------------------------------------------- reference

def stretch_snr_db(wave: np.ndarray, rate: int) -> tuple[float, float]:
    """(speech-to-noise ratio in dB, loud level in dBFS) of a mono stretch ``[T]``: the 95th
    percentile of its 20 ms frame levels over the 10th (the floor between syllables), capped at
    SNR_CAP_DB."""
    db = _frame_db(wave, rate)
    loud = float(np.percentile(db, 95))
    floor = float(np.percentile(db, 10))
    return min(loud - floor, SNR_CAP_DB), loud


def _runs(segments: Sequence[Segment], lo: float, hi: float,
          max_gap: float = REFERENCE_MAX_GAP_SECONDS) -> list[tuple[int, int]]:
    """(first, last) index pairs of neighbouring segments, no gap over ``max_gap`` seconds
    between them, spanning ``lo``..``hi`` seconds."""
    out = []
    for i in range(len(segments)):
        for j in range(i, len(segments)):
            if j > i and segments[j].start - segments[j - 1].end > max_gap:
                break
            span = segments[j].end - segments[i].start
            if span > hi:
                break
            if span >= lo:
                out.append((i, j))
    return out


def pick_reference(mono: np.ndarray, rate: int, segments: Sequence[Segment],
                   max_seconds: float = MAX_SECONDS) -> tuple[float, float, str, float]:
    """The cleanest stretch of whole neighbouring segments for a voice reference.

    ``mono`` is the original audio ``[T]`` at ``rate``; ``segments`` the original-language
    segments (their text becomes the transcript). Candidates span 5..``max_seconds`` s less the
    padding (3 s when none does; then across pauses up to 3 s; then single segments of 2 s or
    more); the best `stretch_snr_db` wins, clipped stretches lose CLIPPED_PENALTY_DB, silent
    ones (under -50 dBFS) are skipped. Returns (start s, end s, text, snr dB) of the cut, padded
    by REFERENCE_PAD_SECONDS. Raises VoiceError when no stretch has sound or none is long enough.
    """
    segs = sorted((s for s in segments if s.end > s.start and s.text.strip()),
                  key=lambda s: s.start)
    # The padded cut must stay within the profile's limit: a longer one would be cut at a pause
    # by `prepare_reference` and no longer match its transcript.
    limit = max_seconds - 2 * REFERENCE_PAD_SECONDS
    # Preferred first: 5-12 s without long pauses; then shorter; then across pauses of up to
    # 3 s (short sentences with breaths between them); then one segment of 2 s or more.
    runs = (_runs(segs, REFERENCE_MIN_SECONDS, limit)
            or _runs(segs, REFERENCE_FALLBACK_SECONDS, limit)
            or _runs(segs, REFERENCE_FALLBACK_SECONDS, limit, REFERENCE_FALLBACK_GAP_SECONDS)
            or _runs(segs, MIN_SECONDS, limit, 0.0))
    if not runs:
        longest = max((s.end - s.start for s in segs), default=0.0)
        raise VoiceError(
            f"no stretch of the original speech lasts {MIN_SECONDS:g}-{limit:g} s (longest "
            f"segment {longest:.1f} s) to take the speaker's voice from: connect a 'voice' "
            "from SpinBot Voice Profile")
    best = None
    total = len(mono)
    for i, j in runs:
        a = segs[i].start - REFERENCE_PAD_SECONDS
        b = segs[j].end + REFERENCE_PAD_SECONDS
        if i > 0:
            a = max(a, (segs[i - 1].end + segs[i].start) / 2)
        if j + 1 < len(segs):
            b = min(b, (segs[j].end + segs[j + 1].start) / 2)
        a, b = max(a, 0.0), min(b, total / rate)
        piece = mono[int(round(a * rate)):int(round(b * rate))]
        if len(piece) < rate * 0.5:
            continue
        snr, loud = stretch_snr_db(piece, rate)
        if loud < SILENCE_DBFS:
            continue
        score = snr - (CLIPPED_PENALTY_DB if _clipping(piece) > 1e-4 else 0.0)
        if best is None or score > best[0]:
            text = " ".join(s.text.strip() for s in segs[i:j + 1])
            best = (score, a, b, text, snr)
    if best is None:
        raise VoiceError("the original audio has no speech where its segments are (silent "
                         "under -50 dBFS): there is no voice to clone; connect a 'voice' from "
                         "SpinBot Voice Profile or check the audio input")
    return best[1], best[2], best[3], best[4]


def require_sound(wave: torch.Tensor, rate: int) -> np.ndarray:
    """The original ``[C,T]`` mixed to mono float32 ``[T]``; raises VoiceError when it is
    silent (peak under -80 dBFS or no 20 ms frame over -50 dBFS): nothing to dub, no voice."""
    mono = mix_channels(wave, 1)[0][0].numpy().astype(np.float32)
    if (len(mono) == 0 or float(np.abs(mono).max()) < 1e-4
            or _frame_db(mono, rate).max() < SILENCE_DBFS):
        raise VoiceError("the original audio is silent (no speech): there is no voice to clone "
                         "and nothing to dub; check the 'audio' input")
    return mono


def reference_from_audio(audio: dict, original_segments: Sequence[Segment] | None,
                         timing_segments: Sequence[Segment]) -> Reference:
    """A voice profile cut from the original ``audio`` (see `pick_reference`).

    With ``original_segments`` their text is the transcript; without, the stretch is chosen on
    ``timing_segments``' times (the translated segments keep the original times) and transcribed
    with Whisper (`profiles.make_profile`), which needs a model in models/whisper.
    Raises VoiceError for silent audio or no usable stretch."""
    wave, rate = check_audio(audio, "audio")
    mono = require_sound(wave, rate)
    source_segs = original_segments if original_segments else timing_segments
    a, b, text, snr = pick_reference(mono, rate, source_segs)
    cut = wave[:, int(round(a * rate)):int(round(b * rate))]
    profile = make_profile(make_audio(cut, rate), text if original_segments else "",
                           name="auto reference")
    how = ("its original-language text" if original_segments
           else "transcribed by Whisper (no original_segments connected)")
    shown = profile.text if len(profile.text) <= 60 else profile.text[:57] + "..."
    return Reference(profile, f"cut from the original audio {a:.2f}-{b:.2f} s ({b - a:.1f} s, "
                     f"speech-to-noise {snr:.1f} dB), transcript {how}: {shown!r}", a, b, snr)


# --------------------------------------------------------------------------- segment cache

def _cache_dir() -> str:
    path = os.path.join(runtime.temp_dir(), CACHE_SUBDIR)
    os.makedirs(path, exist_ok=True)
    return path


def _cache_load(key: str) -> np.ndarray | None:
    path = os.path.join(_cache_dir(), key + ".npy")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if data.dtype != np.float32 or data.ndim != 1:
        return None
    os.utime(path)
    return data


def _cache_save(key: str, wave: np.ndarray) -> None:
    """Atomic: a temp file renamed into place, so Cancel or a crash never leaves half a file."""
    folder = _cache_dir()
    with atomic_path(os.path.join(folder, key + ".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(wave, dtype=np.float32), allow_pickle=False)
    trim_oldest(folder, ".npy", max_bytes=CACHE_MAX_BYTES)


# --------------------------------------------------------------------------- synthesis + fit

def plan_segment(profile: VoiceProfile, text: str, slot: float, index: int,
                 settings: FitSettings) -> tuple[str, list[engine.Piece], float, float]:
    """(reference text, pieces with their frame counts set, natural seconds, asked seconds) for
    one segment: F5's natural length scaled to the slot within ``max_speed_change``.
    Seeds: ``seed + 1000 * index + chunk`` (as SpinBot F5-TTS)."""
    ref_text, pieces = engine.plan(profile, [text], engine.Settings(speed=1.0))
    ref_frames = profile.wave.shape[-1] // F5_MEL.hop_length
    natural_frames = sum(p.frames - ref_frames for p in pieces)
    natural = natural_frames * HOP_SECONDS
    bound = max(float(settings.max_speed_change), 1.0)
    asked = min(max(slot, natural / bound), natural * bound)
    ratio = asked / natural if natural > 0 else 1.0
    out = [replace(p, frames=ref_frames + max(int(round((p.frames - ref_frames) * ratio)), 1),
                   seed=int(settings.seed) + 1000 * index + k) for k, p in enumerate(pieces)]
    return ref_text, out, natural, sum(p.frames - ref_frames for p in out) * HOP_SECONDS


def dub_voice(models: tuple, model_stamp: str, reference: Reference,
              segments: Sequence[Segment], audio_samples: int, rate: int,
              settings: FitSettings) -> DubVoiceResult:
    """Speak every segment in the reference voice, fitted to its slot, on a silent track of
    ``audio_samples`` samples at ``rate`` (the original's): ``[1, audio_samples]``.

    ``models`` is (F5 model, Vocos) on their compute device; ``model_stamp`` identifies their
    files for the cache key. A zero-length segment (start == end, e.g. Whisper's last words at
    the audio's very end) has nothing to fill: it is skipped with a line in the result's notes.
    Raises MediaError for a segment whose times are not finite or run backwards (end < start),
    for one of positive length starting outside the audio, and when no segment is left;
    VoiceError for text (a segment's or the reference's) F5 cannot say;
    `runtime.Interrupted` on Cancel (finished segments stay cached)."""
    f5, vocoder = models
    profile = reference.profile
    for bound, name in ((settings.max_speed_change, "max_speed_change"),
                        (settings.max_tempo_change, "max_tempo_change")):
        if not (math.isfinite(bound) and 1.0 <= bound <= 2.0):
            raise MediaError(f"{name} must lie in 1..2, got {bound}")
    segs = sorted(segments, key=lambda s: s.start)
    total_seconds = audio_samples / rate
    problem = text_problem(spoken_text(profile.text), f5.vocab)
    if problem or not is_speakable(profile.text):
        raise VoiceError(f"F5-TTS cannot say the reference text ({profile.text[:40]!r}): "
                         f"{problem or 'it has no words'}")
    notes: list[str] = []
    kept: list[Segment] = []
    for k, seg in enumerate(segs, 1):  # numbered from 1 in time order, as in the report
        if not (math.isfinite(seg.start) and math.isfinite(seg.end) and seg.end >= seg.start):
            raise MediaError(f"segment {k} ({seg.text[:40]!r}) has no slot: start "
                             f"{seg.start} s, end {seg.end} s")
        if seg.end == seg.start:
            notes.append(f"segment {k} ({seg.text[:40]!r}) skipped: zero length at "
                         f"{seg.start:.3f} s, no time to speak it in")
            continue
        if seg.start < 0 or seg.start >= total_seconds:
            raise MediaError(f"segment {k} ({seg.text[:40]!r}) starts at {seg.start:.3f} "
                             f"s, outside the original audio (0-{total_seconds:.3f} s)")
        problem = text_problem(spoken_text(seg.text), f5.vocab)
        if problem:
            raise VoiceError(f"F5-TTS cannot say segment {k} ({seg.text[:40]!r}): {problem}")
        if not is_speakable(seg.text):
            # Whisper writes music and noise as '♪', '...' or emoji: nothing to say, like a
            # blank segment; the original audio stays there instead of failing the whole dub.
            notes.append(f"segment {k} ({seg.text[:40]!r}) skipped: no words to speak "
                         "(music or sound marks), the original audio stays")
            continue
        kept.append(seg)
    if not kept:
        raise MediaError(f"segments: none of the {len(segs)} segments has a length to speak in "
                         "(start == end) and words to say (not only music/sound marks)")
    segs = kept
    out = np.zeros(audio_samples, np.float32)
    fits: list[SegmentFit] = []
    timed: list[Segment] = []
    plans = [plan_segment(profile, seg.text, seg.end - seg.start, k, settings)
             for k, seg in enumerate(segs)]
    bar = runtime.Progress(sum(len(p[1]) for p in plans) * int(settings.nfe_steps),
                           "SpinBot Dub Voice")
    fade = max(int(settings.cross_fade * F5_RATE), 0)
    sampler = engine.Settings(nfe_steps=int(settings.nfe_steps),
                              cfg_strength=float(settings.cfg_strength),
                              sway=float(settings.sway), max_batch=4)
    try:
        for k, (seg, (ref_text, pieces, natural, asked)) in enumerate(zip(segs, plans)):
            runtime.check_interrupted()
            key = content_key("dub-voice-f5", model_stamp, profile.wave, ref_text,
                              [(p.text, p.frames, p.seed) for p in pieces],
                              sampler.nfe_steps, sampler.cfg_strength, sampler.sway)
            wave = _cache_load(key)
            cached = wave is not None
            if cached:
                bar.update(len(pieces) * int(settings.nfe_steps))
            else:
                waves = engine.synthesize_pieces(f5, vocoder, profile, ref_text, pieces, sampler,
                                                 on_step=bar.update)
                wave = engine._crossfade_join(waves, fade)
                _cache_save(key, wave)
            slot = seg.end - seg.start
            f5_seconds = len(wave) / F5_RATE
            bound = float(settings.max_tempo_change)
            tempo = min(max(f5_seconds / slot, 1.0 / bound), bound)
            if abs(tempo - 1.0) > TEMPO_EPSILON:
                wave = atempo(wave, F5_RATE, tempo)
            else:
                tempo = 1.0
            placed = resample(torch.from_numpy(wave)[None], F5_RATE, rate)[0].numpy()
            spoken = len(placed) / rate
            a = int(round(seg.start * rate))
            limit = int(round(segs[k + 1].start * rate)) if k + 1 < len(segs) else audio_samples
            limit = max(min(limit, audio_samples), a)
            n = min(len(placed), limit - a)
            cut = n < len(placed)
            piece = placed[:n].copy()
            if cut:
                m = min(int(CUT_FADE_SECONDS * rate), n)
                if m:
                    piece[n - m:] *= np.linspace(1.0, 0.0, m, dtype=np.float32)
            out[a:a + n] += piece
            # One video frame at 25 fps: speech that still ends later than that is over the bound.
            over = spoken > slot + 1 / 25
            fits.append(SegmentFit(k, slot, natural, f5_seconds, tempo, spoken, n / rate, cached,
                                   over, cut))
            timed.append(replace(seg, start=round(a / rate, 6), end=round((a + n) / rate, 6),
                                 estimated=False))
        bar.finish()
    finally:
        bar.close()
    return DubVoiceResult(torch.from_numpy(out)[None], rate, tuple(timed), fits, reference,
                          settings, notes)
