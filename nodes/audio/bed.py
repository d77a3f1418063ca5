"""Music and ambience beds under a narration: sources, looping, fades, ducking, levels.

ComfyUI-free engine of `SpinBotAudioBed`. Waveforms are float32 ``[C,T]`` tensors or arrays in
-1..1; rates are samples per second; levels are dB, dBFS or LUFS (ITU-R BS.1770 via pyloudnorm,
the meter `media.normalize_loudness` uses).

Ducking is a gain computer of our own rather than ffmpeg's ``sidechaincompress``: a compressor's
gain reduction depends on how far the voice goes over its threshold (ratio, knee, the voice's
momentary level), so the bed would drop by a varying amount that only approximates the asked
``ducking_db``. Here the voice's envelope only decides *when* the voice speaks; while it does the
bed sits exactly ``ducking_db`` lower, and attack/release are straight ramps in dB of the asked
lengths. The whole track is known in advance, so the attack ramp runs ahead of each phrase (the bed
is fully down when the first syllable starts) instead of trailing it as a real-time side-chain must.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from ..media import MediaError, check_audio, mix_channels, resample

SOURCES = ("music input", "pink noise", "brown noise", "white noise", "drone", "tone")
FITS = ("loop", "trim")

# Output rate: the voice's when it is CD rate or more; a TTS voice (F5-TTS: 24 kHz) would cut the
# music at 12 kHz, so lower voice rates are mixed at 48 kHz, the rate of video soundtracks.
MIX_RATE = 48000
MIN_VOICE_RATE_KEPT = 44100
MIN_MUSIC_SECONDS = 0.010  # shorter than one period of a 100 Hz tone: nothing to loop
# Loop seam: an equal-power crossfade (uncorrelated material keeps its level through it) of 100 ms,
# long enough that two unrelated waveforms blend without a click, short enough not to smear a beat;
# never more than a quarter of the music, so a short loop is mostly itself.
LOOP_CROSSFADE_SECONDS = 0.1
# Voice envelope: RMS over 30 ms windows every 5 ms. 30 ms spans a few pitch periods of any voice
# (so the envelope does not ripple at the pitch) and is shorter than a syllable.
ENVELOPE_WINDOW_SECONDS = 0.030
GAIN_HOP_SECONDS = 0.005
# Speech = envelope within 30 dB of the voice's loud level (95th percentile of the envelope over
# non-silent windows), the range of syllable levels within a phrase; never below -60 dBFS (TTS
# and microphone noise floors sit under it).
SPEECH_RANGE_DB = 30.0
SPEECH_FLOOR_DBFS = -60.0
# The gate stays open 150 ms after the last speech window, so the bed does not pump up in the
# gaps between words (plosives and word breaks last well under that).
SPEECH_HOLD_SECONDS = 0.15
SILENT_VOICE_LUFS = -70.0  # BS.1770's absolute gate: a voice under it has no speech to measure
VOICE_CUT_FADE_SECONDS = 0.005  # a voice cut at the video's end is faded, not clicked off
PEAK_CEILING_DB = -1.0  # `media.normalize_loudness`'s default ceiling (EBU R128 / streaming specs)
GENERATED_LEVEL_SECONDS = 60  # how much of a generated bed its loudness is measured on
TRUE_PEAK_OVERSAMPLING = 4  # ITU-R BS.1770-4 Annex 2: 4x at 48 kHz


@dataclass
class BedSettings:
    """What `make_bed_mix` is asked for; units in the names (dB relative, seconds, LUFS)."""
    source: str = "pink noise"
    bed_level_db: float = -18.0
    ducking_db: float = 10.0
    attack_seconds: float = 0.1
    release_seconds: float = 0.4
    fade_in_seconds: float = 2.0
    fade_out_seconds: float = 3.0
    fit: str = "loop"
    target_lufs: float = -14.0
    tail_seconds: float = 2.0
    seed: int = 0


@dataclass
class BedResult:
    """The mix ``[C,T]`` at ``rate`` and what was measured on it (``None`` where not measurable)."""
    wave: torch.Tensor
    rate: int
    voice_lufs: float | None = None
    bed_speech_dbfs: float | None = None
    bed_pause_dbfs: float | None = None
    final_lufs: float | None = None
    sample_peak_dbfs: float | None = None
    true_peak_dbtp: float | None = None
    loops: int = 0
    speech_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        """A few lines for the node's ``report`` output."""
        def db(v: float | None, unit: str) -> str:
            return "n/a" if v is None or not math.isfinite(v) else f"{v:.1f} {unit}"

        c, seconds = self.wave.shape[0], self.wave.shape[-1] / self.rate
        ducked = (self.bed_pause_dbfs - self.bed_speech_dbfs
                  if self.bed_speech_dbfs is not None and self.bed_pause_dbfs is not None
                  else math.nan)
        lines = [f"audio bed: {seconds:.3f} s ({self.wave.shape[-1]} samples) at {self.rate} Hz, "
                 f"{'stereo' if c == 2 else 'mono'}",
                 f"voice: {db(self.voice_lufs, 'LUFS')}, speech {self.speech_seconds:.2f} s",
                 f"bed on the mix (RMS): under speech {db(self.bed_speech_dbfs, 'dBFS')}, "
                 f"in pauses {db(self.bed_pause_dbfs, 'dBFS')}"
                 + (f" (ducked {ducked:.1f} dB)" if math.isfinite(ducked) else ""),
                 f"final: {db(self.final_lufs, 'LUFS')}, sample peak "
                 f"{db(self.sample_peak_dbfs, 'dBFS')}, "
                 f"true peak {db(self.true_peak_dbtp, 'dBTP')}",
                 ("loops: none (generated to length)" if self.loops == 0 else
                  f"loops: {self.loops} play{'s' if self.loops > 1 else ''} of the music, "
                  f"{self.loops - 1} crossfaded seam{'' if self.loops == 2 else 's'}")]
        return "\n".join(lines + self.notes)


# --------------------------------------------------------------------------- measurement

def integrated_lufs(wave: np.ndarray | torch.Tensor, rate: int) -> float:
    """BS.1770 integrated loudness of ``[C,T]`` (pyloudnorm); ``-inf`` for silence.

    A clip shorter than one 0.4 s gating block is measured repeated to that length (its loudness
    as a loop), so a short voice or bed still gets a level instead of none."""
    import pyloudnorm

    data = np.asarray(wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else wave,
                      dtype=np.float64)
    block = int(math.ceil(0.4 * rate)) + 1
    if data.shape[-1] == 0:
        return -math.inf
    if data.shape[-1] < block:
        data = np.tile(data, (1, -(-block // data.shape[-1])))
    return float(pyloudnorm.Meter(rate).integrated_loudness(data.T))


def true_peak_dbtp(wave: np.ndarray, rate: int) -> float:
    """Peak of ``[C,T]`` after 4x polyphase oversampling (BS.1770-4 Annex 2), in dBTP.

    Done one second at a time (with margins for the filter) so a 10-minute stereo track does not
    need a 4x float64 copy in memory."""
    from scipy.signal import resample_poly

    up, margin, step = TRUE_PEAK_OVERSAMPLING, 64, max(int(rate), 1)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    for a in range(0, wave.shape[-1], step):
        lo, hi = max(a - margin, 0), min(a + step + margin, wave.shape[-1])
        over = resample_poly(wave[:, lo:hi].astype(np.float64), up, 1, axis=-1)
        keep = over[:, (a - lo) * up:(a - lo + min(step, wave.shape[-1] - a)) * up]
        if keep.size:
            peak = max(peak, float(np.abs(keep).max()))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _chunks(total: int, multiple: int = 1, size: int = 1 << 20):
    """``(start, stop)`` pieces of ``range(total)``, each start a multiple of ``multiple``."""
    step = max(size // multiple, 1) * multiple
    for a in range(0, total, step):
        yield a, min(a + step, total)


# --------------------------------------------------------------------------- sources

def _run_source(name: str, args: str, samples: int, channels: int) -> np.ndarray:
    """Pull ``samples`` float32 samples ``[channels, samples]`` from one ffmpeg source filter."""
    import av

    graph = av.filter.Graph()
    source = graph.add(name, args)
    planar = graph.add("aformat", "sample_fmts=fltp")
    source.link_to(planar)
    planar.link_to(graph.add("abuffersink"))
    graph.configure()
    pieces, have = [], 0
    while have < samples:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        pieces.append(frame.to_ndarray())
        have += pieces[-1].shape[-1]
    out = np.concatenate(pieces, axis=1) if pieces else np.zeros((channels, 0), np.float32)
    if out.shape != (channels, samples) and out.shape[-1] < samples:
        raise MediaError(f"ffmpeg's {name} filter gave {out.shape[-1]} of {samples} samples")
    return np.ascontiguousarray(out[:, :samples], dtype=np.float32)


def _seconds_arg(samples: int, rate: int) -> str:
    # One sample over: the filters round their duration to whole frames of samples.
    return f"{(samples + 1) / rate:.9f}"


# Drone: A1 (55 Hz) with a fifth, octave and twelfth above, each as two sines detuned by a
# fraction of a hertz (the slow beating of an organ or synth pad), every partial faded in and out
# by its own slow sine (0.05-0.2 Hz). Every frequency is a multiple of 1/DRONE_PERIOD_SECONDS, so
# the drone repeats exactly after that period and is rendered once and tiled: aevalsrc evaluates
# its expression per sample (~3 s per stereo minute), too slow to run for a whole narration.
DRONE_ROOT_HZ = 55.0
DRONE_PARTIALS = ((1.0, 0.40), (1.5, 0.25), (2.0, 0.20), (3.0, 0.10))  # (ratio, amplitude)
DRONE_PERIOD_SECONDS = 20
TONE_HZ = 220.0  # A3, a plain test/placeholder tone


def _drone_expression(rng: np.random.Generator) -> str:
    q = 1.0 / DRONE_PERIOD_SECONDS
    terms = []
    for ratio, amp in DRONE_PARTIALS:
        lfo = q * int(rng.integers(1, 5))  # 0.05..0.2 Hz
        phase = float(rng.uniform(0, 2 * math.pi))
        for _ in range(2):
            # Base pitch kept on the 0.05 Hz grid, detuned by 1..6 grid steps (0.05-0.3 Hz).
            detune = q * int(rng.integers(1, 7)) * int(rng.choice((-1, 1)))
            f = round(DRONE_ROOT_HZ * ratio / q) * q + detune
            p = float(rng.uniform(0, 2 * math.pi))
            terms.append(f"{amp / 2:.4f}*sin(2*PI*{f:.4f}*t+{p:.4f})"
                         f"*(0.65+0.35*sin(2*PI*{lfo:.4f}*t+{phase:.4f}))")
    return "+".join(terms)


def generate_source(kind: str, samples: int, rate: int, channels: int,
                    seed: int) -> tuple[np.ndarray, str]:
    """A generated bed ``[channels, samples]`` float32 and a line saying what it is.

    ``kind``: "pink noise" / "brown noise" / "white noise" (ffmpeg ``anoisesrc``, one generator
    per channel seeded ``seed + c`` so stereo channels are uncorrelated), "drone" (``aevalsrc``,
    see DRONE_*; the seed picks detunings, phases and modulation rates, the right channel gets its
    own), "tone" (``sine`` at 220 Hz, the seed is not used). Same seed -> same samples.
    Raises MediaError for an unknown kind.
    """
    seed = int(seed)
    if kind.endswith(" noise"):
        colour = kind.split()[0]
        chans = [_run_source("anoisesrc", f"sample_rate={rate}:amplitude=0.5:color={colour}:"
                             f"seed={(seed + c) % 2 ** 32}:duration={_seconds_arg(samples, rate)}",
                             samples, 1)[0] for c in range(channels)]
        return np.stack(chans), f"source: {colour} noise (ffmpeg anoisesrc, seed {seed})"
    if kind == "tone":
        mono = _run_source("sine", f"frequency={TONE_HZ}:sample_rate={rate}:"
                           f"duration={_seconds_arg(samples, rate)}", samples, 1)
        return np.repeat(mono, channels, axis=0), f"source: {TONE_HZ:.0f} Hz tone (ffmpeg sine)"
    if kind == "drone":
        rng = np.random.default_rng(seed % 2 ** 63)
        exprs = "|".join(_drone_expression(rng) for _ in range(channels))
        period = min(samples, DRONE_PERIOD_SECONDS * rate)
        one = _run_source("aevalsrc", f"exprs={exprs}:s={rate}:d={_seconds_arg(period, rate)}",
                          period, channels)
        reps = -(-samples // period)
        return (np.tile(one, (1, reps))[:, :samples],
                f"source: drone on A1 (ffmpeg aevalsrc: 4 partials x 2 detuned sines, slow "
                f"amplitude modulation, seed {seed})")
    raise MediaError(f"source: unknown kind {kind!r}; pick one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------------- fitting and fades

def loop_to_length(music: np.ndarray, samples: int, crossfade: int) -> tuple[np.ndarray, int]:
    """Repeat ``[C,M]`` to ``[C,samples]`` with an equal-power crossfade of ``crossfade`` samples
    (at most M/4) at each seam; returns the bed and how many times the music starts (1 when it is
    long enough and is only trimmed)."""
    c, m = music.shape
    if m >= samples:
        return music[:, :samples].copy(), 1
    x = max(min(int(crossfade), m // 4), 0)
    step = m - x
    # Play k covers [k*step, k*step + m): outside the seams it is music[x:step]; in a seam the end
    # of play k fades out under the start of play k+1.
    t = (np.arange(x) + 0.5) / max(x, 1)
    seam = (music[:, step:] * np.cos(0.5 * np.pi * t) + music[:, :x] * np.sin(0.5 * np.pi * t))
    period = np.concatenate([music[:, x:step], seam.astype(np.float32)], axis=1)
    reps = -(-(samples - x) // step)
    out = np.concatenate([music[:, :x], np.tile(period, (1, reps))], axis=1)[:, :samples]
    plays = -(-(samples - x) // step)
    return np.ascontiguousarray(out, dtype=np.float32), int(plays)


def fade_gain(samples: int, rate: int, fade_in_s: float, fade_out_s: float,
              end: int | None = None) -> np.ndarray:
    """Per-sample gain ``[samples]``: linear 0->1 over the first ``fade_in_s`` seconds and 1->0 over
    the ``fade_out_s`` seconds before ``end`` (default: the end); zero after ``end``. Fades longer
    together than ``end`` shrink in proportion (`fade_lengths`)."""
    end = samples if end is None else min(end, samples)
    g = np.ones(samples, np.float32)
    n_in, n_out = fade_lengths(end, rate, fade_in_s, fade_out_s)
    if n_in > 0:
        g[:n_in] = (np.arange(n_in, dtype=np.float64) / n_in).astype(np.float32)
    if n_out > 0:
        ramp = (n_out - 1 - np.arange(n_out, dtype=np.float64)) / n_out
        g[end - n_out:end] *= ramp.astype(np.float32)
    g[end:] = 0.0
    return g


def fade_lengths(end: int, rate: int, fade_in_s: float, fade_out_s: float) -> tuple[int, int]:
    """Fade-in and fade-out lengths in samples for a bed of ``end`` samples: scaled down together
    (keeping their ratio) when they add up to more than ``end``, so the bed still reaches its
    level (default 2 + 3 s fades on a 3 s clip would hold it 4.4 dB under it, at best)."""
    n_in, n_out = int(round(fade_in_s * rate)), int(round(fade_out_s * rate))
    if n_in + n_out > end > 0:
        whole = n_in + n_out
        n_in = n_in * end // whole
        n_out = end - n_in if n_out else 0
    return max(0, min(n_in, end)), max(0, min(n_out, end))


# --------------------------------------------------------------------------- ducking

def speech_blocks(voice: np.ndarray, rate: int) -> tuple[np.ndarray, int, float]:
    """Where the voice ``[C,T]`` speaks: a bool per GAIN_HOP_SECONDS block, the hop in samples,
    and the threshold used (dBFS; ``-inf`` when the voice is silent throughout)."""
    hop = max(int(round(GAIN_HOP_SECONDS * rate)), 1)
    win = max(int(round(ENVELOPE_WINDOW_SECONDS * rate)), 1)
    power = np.mean(np.square(voice, dtype=np.float64), axis=0)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    n = -(-voice.shape[-1] // hop)
    centre = np.arange(n) * hop + hop // 2
    lo = np.clip(centre - win // 2, 0, voice.shape[-1])
    hi = np.clip(centre + win - win // 2, 0, voice.shape[-1])
    with np.errstate(divide="ignore"):
        env = 10 * np.log10(np.maximum((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1), 0.0))
    audible = env[env > SPEECH_FLOOR_DBFS]
    if audible.size == 0:
        return np.zeros(n, bool), hop, -math.inf
    threshold = max(float(np.percentile(audible, 95)) - SPEECH_RANGE_DB, SPEECH_FLOOR_DBFS)
    speech = env > threshold
    hold = int(round(SPEECH_HOLD_SECONDS / GAIN_HOP_SECONDS))
    if hold and speech.any():
        # Each block stays open while a speech block lies within `hold` blocks before it.
        idx = np.where(speech, np.arange(n), -10 ** 9)
        speech = np.arange(n) - np.maximum.accumulate(idx) <= hold
    return speech, hop, threshold


def duck_curve(speech: np.ndarray, ducking_db: float, attack_blocks: float,
               release_blocks: float) -> np.ndarray:
    """Bed reduction in dB (>= 0) per block: exactly ``ducking_db`` while ``speech``, ramping
    linearly down over ``attack_blocks`` *before* each phrase and back up over ``release_blocks``
    after it; the smallest curve that never under-ducks speech and never moves faster.
    """
    target = np.where(speech, float(ducking_db), 0.0)
    if ducking_db <= 0 or not speech.any():
        return np.zeros(speech.shape, np.float64)
    i = np.arange(target.size, dtype=np.float64)

    def slew(values: np.ndarray, rate_db: float) -> np.ndarray:
        # d[i] = max(values[i], d[i-1] - rate) in closed form: a running max of values + rate*i.
        return np.maximum.accumulate(values + rate_db * i) - rate_db * i

    release = ducking_db / max(release_blocks, 1e-9)
    attack = ducking_db / max(attack_blocks, 1e-9)
    d = slew(target, release)                       # falls back no faster than the release
    d = slew(d[::-1], attack)[::-1]                 # rises no faster than the attack, ahead of time
    return np.minimum(d, ducking_db)


# --------------------------------------------------------------------------- the mix

def mix_rate(voice_rate: int) -> int:
    """The rate the mix is made at: the voice's when >= 44.1 kHz, otherwise 48 kHz."""
    return voice_rate if voice_rate >= MIN_VOICE_RATE_KEPT else MIX_RATE


def make_bed_mix(voice: dict, settings: BedSettings, music: dict | None = None,
                 video_seconds: float | None = None, check_interrupted=None) -> BedResult:
    """Mix a bed under ``voice`` (AUDIO) and return it loudness-normalised with its measurements.

    Length: ``round(video_seconds * rate)`` samples when given (the voice is cut at the end if it is
    longer), else the voice plus ``tail_seconds``. Rate: `mix_rate`. Channels: stereo when the voice
    or the music has two or more, else mono (5.1 is downmixed by `media.mix_channels`).
    Raises MediaError for a bad AUDIO (NaN/inf, empty, transposed: `media.check_audio`), for
    "music input" without ``music``, for music under 10 ms and for unknown source/fit names.
    ``check_interrupted`` (no arguments) is called between steps so Cancel stops the work.
    """
    s = settings
    tick = check_interrupted or (lambda: None)
    if s.source not in SOURCES:
        raise MediaError(f"source: unknown {s.source!r}; pick one of {', '.join(SOURCES)}")
    if s.fit not in FITS:
        raise MediaError(f"fit: unknown {s.fit!r}; pick one of {', '.join(FITS)}")
    for name in ("bed_level_db", "target_lufs", "ducking_db", "attack_seconds", "release_seconds",
                 "fade_in_seconds", "fade_out_seconds", "tail_seconds"):
        value = float(getattr(s, name))
        signed = name in ("bed_level_db", "target_lufs")
        if not math.isfinite(value) or (not signed and value < 0):
            raise MediaError(f"{name}: must be a finite number{'' if signed else ' >= 0'}, "
                             f"got {value!r}")
    if video_seconds is not None and not (math.isfinite(video_seconds) and video_seconds > 0):
        raise MediaError("video: its duration must be a positive number of seconds, "
                         f"got {video_seconds!r}")
    if s.source == "music input" and music is None:
        raise MediaError("source is 'music input' but nothing is connected to the 'music' input: "
                         "connect an AUDIO to 'music' or pick a generated source (pink noise, "
                         "brown noise, white noise, drone, tone)")

    notes: list[str] = []
    voice_wave, voice_rate = check_audio(voice, "voice", notes)
    music_wave = music_rate = None
    if s.source == "music input":
        music_wave, music_rate = check_audio(music, "music", notes)
        if music_wave.shape[-1] < MIN_MUSIC_SECONDS * music_rate:
            raise MediaError(f"music: {music_wave.shape[-1]} samples at {music_rate} Hz is "
                             f"{1000 * music_wave.shape[-1] / music_rate:.2f} ms; a bed needs at "
                             f"least {MIN_MUSIC_SECONDS * 1000:.0f} ms of music to loop or trim")
    elif music is not None:
        notes.append(f"music input connected but source is '{s.source}': the music is not used")

    rate = mix_rate(voice_rate)
    stereo = voice_wave.shape[0] >= 2 or (music_wave is not None and music_wave.shape[0] >= 2)
    channels = 2 if stereo else 1
    if voice_rate != rate:
        notes.append(f"voice resampled {voice_rate} -> {rate} Hz")
    voice_wave, how = mix_channels(resample(voice_wave, voice_rate, rate), channels)
    if how:
        notes.append(how.replace("audio:", "voice:", 1))
    v = voice_wave.numpy().astype(np.float32, copy=False)
    tick()

    # Length on the output clock.
    if video_seconds is not None:
        total = int(round(video_seconds * rate))
        if v.shape[-1] > total:
            notes.append(f"voice is {(v.shape[-1] - total) / rate:.3f} s longer than the video: "
                         "cut at the video's end")
            v = v[:, :total].copy()
            n = min(int(VOICE_CUT_FADE_SECONDS * rate), total)
            if n:
                v[:, total - n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    else:
        total = v.shape[-1] + int(round(s.tail_seconds * rate))
    if v.shape[-1] < total:
        v = np.pad(v, ((0, 0), (0, total - v.shape[-1])))

    # The bed, at its natural level.
    loops, bed_end = 0, total
    if music_wave is not None:
        if music_rate != rate:
            notes.append(f"music resampled {music_rate} -> {rate} Hz")
        mw, how = mix_channels(resample(music_wave, music_rate, rate), channels)
        if how:
            notes.append(how.replace("audio:", "music:", 1))
        mw = mw.numpy().astype(np.float32, copy=False)
        if s.fit == "loop":
            bed, loops = loop_to_length(mw, total, int(round(LOOP_CROSSFADE_SECONDS * rate)))
            seam_ms = 1000 * min(LOOP_CROSSFADE_SECONDS, mw.shape[-1] / rate / 4)
            notes.append(f"music {mw.shape[-1] / rate:.2f} s, "
                         + (f"looped: {loops} plays with {seam_ms:.0f} ms crossfades" if loops > 1
                            else "trimmed to length"))
        else:
            bed, loops = mw[:, :total].copy(), 1  # scaled in place below: never the caller's
            if mw.shape[-1] < total:
                bed_end = mw.shape[-1]
                bed = np.pad(bed, ((0, 0), (0, total - bed_end)))
                notes.append(f"music {mw.shape[-1] / rate:.2f} s is shorter than the mix "
                             f"({total / rate:.2f} s) and 'trim' does not loop: it fades out at "
                             f"{bed_end / rate:.2f} s, silence after")
            else:
                notes.append(f"music {mw.shape[-1] / rate:.2f} s trimmed to {total / rate:.2f} s")
    else:
        bed, line = generate_source(s.source, total, rate, channels, s.seed)
        notes.append(line)
    tick()

    # Levels: the bed `bed_level_db` under the voice's integrated loudness.
    voice_lufs = integrated_lufs(v, rate)
    silent = not math.isfinite(voice_lufs) or voice_lufs < SILENT_VOICE_LUFS
    # The bed's level is the music's own (one play, as much as is used) or, for a generated
    # source, that of its first minute: the sources are stationary (the drone repeats every 20 s),
    # and a 10-minute bed would cost a full BS.1770 pass more.
    span = max(mw.shape[-1] if music_wave is not None else 0, GENERATED_LEVEL_SECONDS * rate)
    bed_lufs = integrated_lufs(bed[:, :min(bed_end, span)], rate)
    reference = s.target_lufs if silent else voice_lufs
    if math.isfinite(bed_lufs):
        bed *= np.float32(10 ** ((reference + s.bed_level_db - bed_lufs) / 20))
    else:
        notes.append("bed: silent, nothing to level")
    bed *= fade_gain(total, rate, s.fade_in_seconds, s.fade_out_seconds, bed_end)[None]
    n_in, n_out = fade_lengths(bed_end, rate, s.fade_in_seconds, s.fade_out_seconds)
    if n_in + n_out < round((s.fade_in_seconds + s.fade_out_seconds) * rate) - 1:
        notes.append(f"fades: {s.fade_in_seconds:g} s in + {s.fade_out_seconds:g} s out shortened "
                     f"to {n_in / rate:.2f} + {n_out / rate:.2f} s to fit the "
                     f"{bed_end / rate:.2f} s bed")
    tick()

    # Ducking.
    speech, hop, threshold = speech_blocks(v, rate)
    if silent or not speech.any():
        speech[:] = False
        notes.append("voice: no speech detected (silent or under -70 LUFS), so no ducking; the bed "
                     f"is set to {s.target_lufs:.1f} + {s.bed_level_db:.1f} dB and the mix is not "
                     "normalised")
    duck = duck_curve(speech, s.ducking_db, s.attack_seconds * rate / hop,
                      s.release_seconds * rate / hop)
    # Ducking and mixing in place, a chunk at a time: per-sample arrays of a 10-minute track are
    # 115 MB a channel, so no whole-length gain or index array is made.
    centres = np.arange(duck.size) * hop + (hop - 1) / 2
    block_gain = 10 ** (-duck / 20)
    for a, b in _chunks(total):
        bed[:, a:b] *= np.interp(np.arange(a, b), centres, block_gain).astype(np.float32)
    pre = bed
    pre += v
    del bed
    tick()

    # Final level.
    if silent:
        out = pre
        if np.abs(out).max() > 10 ** (PEAK_CEILING_DB / 20):
            from ..media import limit_peaks

            out = limit_peaks(out, rate, 10 ** (PEAK_CEILING_DB / 20)).astype(np.float32)
            notes.append(f"peaks limited to {PEAK_CEILING_DB:.0f} dBFS")
    else:
        from ..media import normalize_loudness

        mixed, line = normalize_loudness(torch.from_numpy(pre), rate, s.target_lufs,
                                         PEAK_CEILING_DB)
        out = mixed.numpy()
        notes.append(line)
    tick()

    # Measured on the mix: the bed is what remains once the voice, at the gain the mix got
    # (least squares; exact unless the limiter acted), is taken out of it.
    num = den = 0.0
    for a, b in _chunks(total):
        p64 = pre[:, a:b].astype(np.float64)
        num += float(np.sum(p64 * out[:, a:b]))
        den += float(np.sum(p64 * p64))
    del pre
    g = num / den if den > 0 else 1.0
    power = np.zeros(duck.size)  # residual energy per gain block, all channels
    for a, b in _chunks(total, hop):
        r = out[:, a:b].astype(np.float64) - g * v[:, a:b]
        power[a // hop:a // hop + -(-(b - a) // hop)] = np.add.reduceat(
            np.square(r).sum(axis=0), np.arange(0, b - a, hop))
    # Speech windows: fully ducked blocks; pauses: blocks with no ducking. Both clear of the fades.
    starts = np.arange(duck.size) * hop
    ends = np.minimum(starts + hop, total)
    n_in, n_out = fade_lengths(bed_end, rate, s.fade_in_seconds, s.fade_out_seconds)
    steady = (starts >= n_in) & (ends <= bed_end - n_out)
    speech_mask = steady & speech & (duck >= s.ducking_db - 1e-6)
    pause_mask = steady & ~speech & (duck <= 1e-6)

    def bed_dbfs(mask: np.ndarray) -> float | None:
        count = float((ends - starts)[mask].sum()) * out.shape[0]
        energy = float(power[mask].sum())
        if count == 0:
            return None
        return 10 * math.log10(energy / count) if energy > 0 else -math.inf

    result = BedResult(
        wave=torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), rate=rate,
        voice_lufs=None if silent else voice_lufs,
        bed_speech_dbfs=bed_dbfs(speech_mask), bed_pause_dbfs=bed_dbfs(pause_mask),
        final_lufs=integrated_lufs(out, rate),
        sample_peak_dbfs=20 * math.log10(float(np.abs(out).max())) if np.any(out) else -math.inf,
        true_peak_dbtp=true_peak_dbtp(out, rate), loops=loops,
        speech_seconds=float(speech.sum()) * hop / rate, notes=notes)
    if math.isfinite(threshold) and not silent:
        notes.insert(0, f"ducking: {s.ducking_db:.1f} dB while the voice speaks (envelope over "
                        f"{threshold:.1f} dBFS), attack {s.attack_seconds:.2f} s ahead, release "
                        f"{s.release_seconds:.2f} s")
    return result
