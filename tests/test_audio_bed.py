"""SpinBot Audio Bed: ducking measured on the mix, loudness (pack meter and ffmpeg's ebur128),
exact lengths, click-free loop seams, seeded generated sources and their spectra, fades, and the
bad inputs (silent voice, too-short music, no music connected, NaN, mono/stereo/5.1 music)."""
from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from spinbot.nodes import runtime
from spinbot.nodes.audio import bed, nodes_audio
from spinbot.nodes.media import MediaError
from spinbot.nodes.video.store import write_video

VOICE_HZ, BED_HZ = 1000.0, 300.0


def audio(wave: np.ndarray, rate: int) -> dict:
    wave = np.asarray(wave, np.float32)
    while wave.ndim < 3:
        wave = wave[None]
    return {"waveform": torch.from_numpy(wave.copy()), "sample_rate": rate}


def sine(seconds: float, rate: int, freq: float, amp: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def bursts(seconds: float, rate: int, on: list[tuple[float, float]], amp: float = 0.3) -> np.ndarray:
    """A VOICE_HZ tone switched on in the given (start, end) windows: 'speech' and 'pauses'."""
    t = np.arange(int(round(seconds * rate))) / rate
    gate = np.zeros_like(t, dtype=bool)
    for a, b in on:
        gate |= (t >= a) & (t < b)
    return (amp * np.sin(2 * np.pi * VOICE_HZ * t) * gate)[None].astype(np.float32)


def band_db(x: np.ndarray, rate: int, freq: float) -> float:
    """Amplitude (dBFS of a sine) of ``freq`` in mono ``x`` (single-bin DFT, Goertzel's sum)."""
    t = np.arange(x.size) / rate
    return 20 * math.log10(2 * abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) / x.size)


def settings(**kw) -> bed.BedSettings:
    base = dict(source="music input", bed_level_db=-12.0, ducking_db=10.0, attack_seconds=0.1,
                release_seconds=0.3, fade_in_seconds=0.0, fade_out_seconds=0.0, fit="loop",
                target_lufs=-16.0, tail_seconds=1.0, seed=0)
    base.update(kw)
    return bed.BedSettings(**base)


SPEECH = [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]


@pytest.mark.parametrize("ducking_db", [6.0, 15.0])
def test_ducking_lowers_the_bed_by_the_asked_db_while_the_voice_speaks(ducking_db):
    voice = bursts(7.0, 24000, SPEECH)
    music = sine(2.7, 44100, BED_HZ, 0.2, channels=2)  # looped, resampled
    res = bed.make_bed_mix(audio(voice, 24000), settings(ducking_db=ducking_db),
                           music=audio(music, 44100))
    w, rate = res.wave.numpy(), res.rate
    # Windows clear of the attack (0.1 s ahead), hold (0.15 s) + release (0.3 s) ramps and of the
    # loop seams (2.6-2.7 s, 5.2-5.3 s).
    seg = lambda a, b: w[0, int(a * rate):int(b * rate)]  # noqa: E731
    speech = [band_db(seg(a + 0.1, b - 0.1), rate, BED_HZ) for a, b in ((1.0, 2.0), (3.0, 4.0), (5.3, 6.0))]
    pause = [band_db(seg(a, b), rate, BED_HZ) for a, b in ((0.2, 0.8), (2.0 + 0.5, 2.85), (4.5, 4.85))]
    for s_db in speech:
        for p_db in pause:
            assert p_db - s_db == pytest.approx(ducking_db, abs=1.0), (speech, pause)
    # The voice itself is untouched by the ducking: the same level in every burst.
    voice_levels = [band_db(seg(a + 0.1, b - 0.1), rate, VOICE_HZ) for a, b in SPEECH]
    assert max(voice_levels) - min(voice_levels) < 0.1
    # The report measures the same thing on the mix.
    assert res.bed_pause_dbfs - res.bed_speech_dbfs == pytest.approx(ducking_db, abs=0.5)
    reported = float(re.search(r"ducked (-?[\d.]+) dB", res.report()).group(1))
    assert reported == pytest.approx(ducking_db, abs=0.5)


def test_no_ducking_at_zero_db_and_the_bed_sits_at_its_level_under_the_voice():
    voice = bursts(6.0, 48000, [(1.0, 5.0)])
    res = bed.make_bed_mix(audio(voice, 48000), settings(ducking_db=0.0, bed_level_db=-20.0),
                           music=audio(sine(1.0, 48000, BED_HZ, 0.1), 48000))
    w, rate = res.wave.numpy()[0], res.rate
    inside = band_db(w[int(2 * rate):int(4 * rate)], rate, BED_HZ)
    outside = band_db(w[int(0.2 * rate):int(0.8 * rate)], rate, BED_HZ)
    assert abs(inside - outside) < 0.3
    # Bed 20 LU under the voice: for two sines (K-weighting differs by < 0.5 dB at 300 vs 1000 Hz)
    # the amplitude ratio is about 20 dB.
    voice_db = band_db(w[int(2 * rate):int(4 * rate)], rate, VOICE_HZ)
    assert voice_db - inside == pytest.approx(20.0, abs=1.0)


def _ebur128(path: str) -> tuple[float, float]:
    """Integrated loudness and true peak by ffmpeg's ebur128 filter (an independent meter)."""
    run = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", path, "-af",
                          "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True,
                         check=True)
    summary = run.stderr[run.stderr.rindex("Summary:"):]
    lufs = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return lufs, peak


@pytest.mark.parametrize("target,source", [(-14.0, "pink noise"), (-23.0, "drone")])
def test_final_loudness_meets_the_target(tmp_path, target, source):
    rng = np.random.default_rng(1)
    voice = bursts(6.0, 24000, SPEECH, amp=0.05) + 0.002 * rng.standard_normal((1, 144000)).astype(np.float32)
    res = bed.make_bed_mix(audio(voice, 24000), settings(source=source, target_lufs=target,
                                                         bed_level_db=-10.0))
    w = res.wave.numpy()
    import pyloudnorm

    assert pyloudnorm.Meter(res.rate).integrated_loudness(w.T.astype(np.float64)) == \
        pytest.approx(target, abs=0.5)
    assert res.final_lufs == pytest.approx(target, abs=0.5)
    assert np.abs(w).max() <= 10 ** (-1.0 / 20) + 1e-6  # the -1 dBFS ceiling
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed: the ebur128 cross-check needs it")
    path = str(tmp_path / "mix.wav")
    sf.write(path, w.T, res.rate, subtype="FLOAT")
    lufs, true_peak = _ebur128(path)
    assert lufs == pytest.approx(target, abs=0.5)
    assert true_peak == pytest.approx(res.true_peak_dbtp, abs=0.5)


def test_loud_voice_is_limited_and_still_meets_the_target():
    voice = bursts(5.0, 48000, [(0.5, 4.5)], amp=0.9)
    voice[0, 48000:48010] = 1.0  # a spike the gain would push far over the ceiling
    res = bed.make_bed_mix(audio(voice, 48000), settings(source="white noise", target_lufs=-9.0))
    assert res.final_lufs == pytest.approx(-9.0, abs=0.5)
    assert np.abs(res.wave.numpy()).max() <= 10 ** (-1.0 / 20) + 1e-6


def test_length_is_exactly_the_videos_or_the_voice_plus_the_tail(spinbot_dirs):
    node = nodes_audio.SpinBotAudioBed()
    frames = np.zeros((37, 48, 64, 3), np.uint8)
    for fps in (23.976, 25.0, 29.97):
        video = write_video(f"bed-test-{fps}", fps, iter([frames]))
        out, report = node.mix(audio(bursts(1.0, 24000, [(0.2, 0.8)]), 24000), "pink noise",
                               -18.0, 10.0, 0.1, 0.4, 0.2, 0.3, "loop", -14.0, 2.0, 0, video=video)
        assert out["sample_rate"] == 48000
        assert out["waveform"].shape == (1, 1, round(37 / fps * 48000))
    # A voice longer than the video is cut at its end, and the report says so.
    video = write_video("bed-test-short", 25.0, iter([frames[:10]]))
    out, report = node.mix(audio(bursts(1.0, 44100, [(0.2, 0.9)]), 44100), "tone", -18.0, 10.0,
                           0.1, 0.4, 0.0, 0.0, "loop", -14.0, 2.0, 0, video=video)
    assert out["waveform"].shape[-1] == round(0.4 * 44100) and out["sample_rate"] == 44100
    assert "longer than the video" in report
    # No video: the voice plus the tail.
    out, _ = node.mix(audio(bursts(1.5, 24000, [(0.2, 1.0)]), 24000), "brown noise", -18.0, 10.0,
                      0.1, 0.4, 0.0, 0.0, "loop", -14.0, 0.75, 0)
    assert out["waveform"].shape[-1] == round(1.5 * 48000) + round(0.75 * 48000)


def _max_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=-1)).max())


def test_loop_seams_have_no_click():
    rate = 48000
    # 0.5173 s of 330 Hz ends mid-cycle: butt-joined copies jump by most of the amplitude.
    music = sine(0.5173, rate, 330.0, 0.5, channels=2)
    smooth = _max_step(music)  # the sine's own largest step, 2*pi*330/48000*0.5 ~ 0.0216
    butt = np.tile(music, (1, 8))
    assert _max_step(butt) > 5 * smooth  # the check below would catch a plain loop
    looped, plays = bed.loop_to_length(music, 4 * rate, int(bed.LOOP_CROSSFADE_SECONDS * rate))
    assert looped.shape == (2, 4 * rate)
    assert plays == math.ceil((4 * rate - 4800) / (music.shape[-1] - 4800))
    assert _max_step(looped) < 1.5 * smooth
    # Through the node, with a silent voice (no ducking, no normalisation, bed unfaded).
    res = bed.make_bed_mix(audio(np.zeros((1, 3 * rate), np.float32), rate),
                           settings(bed_level_db=-6.0), music=audio(music, rate))
    w = res.wave.numpy()
    level = float(np.abs(w).max())
    assert _max_step(w) < 1.5 * smooth * level / 0.5 * math.sqrt(2)
    assert res.loops > 1 and "plays with 100 ms crossfades" in res.report()


@pytest.mark.parametrize("kind", ["pink noise", "brown noise", "white noise", "drone"])
def test_generated_sources_are_seed_deterministic_and_differ_across_seeds(kind):
    a, line = bed.generate_source(kind, 24000, 24000, 2, seed=7)
    b, _ = bed.generate_source(kind, 24000, 24000, 2, seed=7)
    c, _ = bed.generate_source(kind, 24000, 24000, 2, seed=8)
    assert a.shape == (2, 24000) and a.dtype == np.float32 and np.abs(a).max() > 0.01
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-3)
    # The two channels are different signals (a stereo bed, not mono twice).
    corr = np.corrcoef(a[0], a[1])[0, 1]
    assert corr < 0.9, corr
    assert "seed 7" in line


def test_generated_sources_have_the_exact_length_asked():
    for kind in ("pink noise", "tone", "drone"):
        for n in (1, 1023, 8000 * 21 + 7):  # the drone tiles its 20 s period past 20 s
            x, _ = bed.generate_source(kind, n, 8000, 1, seed=1)
            assert x.shape == (1, n), (kind, n)


def test_the_drone_repeats_without_a_seam():
    rate = 8000
    x, _ = bed.generate_source("drone", (bed.DRONE_PERIOD_SECONDS + 2) * rate, rate, 1, seed=3)
    seam = bed.DRONE_PERIOD_SECONDS * rate
    steps = np.abs(np.diff(x[0]))
    assert steps[seam - 2:seam + 2].max() < 1.5 * np.percentile(steps, 99.9)


@pytest.mark.parametrize("kind,slope,tol", [("pink noise", -3.0, 0.5), ("brown noise", -6.0, 0.6),
                                            ("white noise", 0.0, 0.5)])
def test_noise_colour_spectrum_slope(kind, slope, tol):
    from scipy.signal import welch

    rate = 48000
    x, _ = bed.generate_source(kind, 10 * rate, rate, 1, seed=2)
    f, p = welch(x[0], rate, nperseg=8192)
    # 300 Hz - 6 kHz: above ffmpeg's brown-noise leak corner (~150 Hz at 48 kHz) and clear of
    # Nyquist.
    band = (f > 300) & (f < 6000)
    measured = np.polyfit(np.log2(f[band]), 10 * np.log10(p[band]), 1)[0]  # dB per octave
    assert measured == pytest.approx(slope, abs=tol)


def test_fades_follow_the_asked_linear_ramp():
    from scipy.signal import hilbert

    rate = 48000
    res = bed.make_bed_mix(audio(np.zeros((1, 3 * rate), np.float32), rate),
                           settings(source="tone", fade_in_seconds=1.0, fade_out_seconds=1.5,
                                    tail_seconds=1.0))
    w = res.wave.numpy()[0]
    assert w.size == 4 * rate
    env = np.abs(hilbert(w))
    steady = np.median(env[int(1.5 * rate):int(2.0 * rate)])
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert env[int(t * rate)] / steady == pytest.approx(t, abs=0.02)
    for t in (2.7, 3.0, 3.5, 3.9):
        assert env[int(t * rate)] / steady == pytest.approx((4.0 - t) / 1.5, abs=0.02)
    assert abs(w[-1]) < 1e-3 and abs(w[0]) < 1e-3


# --------------------------------------------------------------------------- bad inputs

def test_silent_voice_means_no_ducking_and_says_so():
    rate = 48000
    res = bed.make_bed_mix(audio(np.zeros((1, 3 * rate), np.float32), rate),
                           settings(source="pink noise", bed_level_db=-18.0, target_lufs=-14.0))
    assert res.voice_lufs is None and res.speech_seconds == 0.0
    assert "no speech detected" in res.report() and "no ducking" in res.report()
    # The bed is placed at target + bed level (nothing to normalise the mix against).
    assert res.final_lufs == pytest.approx(-32.0, abs=0.5)


def test_music_input_without_music_is_a_clear_error():
    with pytest.raises(MediaError, match=r"'music input'.*'music' input"):
        bed.make_bed_mix(audio(bursts(2.0, 24000, [(0.5, 1.5)]), 24000), settings())
    node = nodes_audio.SpinBotAudioBed()
    with pytest.raises(MediaError, match="'music'"):
        node.mix(audio(bursts(2.0, 24000, [(0.5, 1.5)]), 24000), "music input", -18.0, 10.0,
                 0.1, 0.4, 0.0, 0.0, "loop", -14.0, 1.0, 0)


def test_music_shorter_than_10_ms_is_refused_and_10_ms_loops():
    voice = audio(bursts(2.0, 48000, [(0.5, 1.5)]), 48000)
    with pytest.raises(MediaError, match=r"music: .*at least 10 ms"):
        bed.make_bed_mix(voice, settings(), music=audio(sine(0.009, 48000, 440.0, 0.3), 48000))
    res = bed.make_bed_mix(voice, settings(), music=audio(sine(0.010, 48000, 440.0, 0.3), 48000))
    assert res.wave.shape[-1] == 3 * 48000 and res.loops > 200


@pytest.mark.parametrize("which", ["voice", "music"])
def test_nan_in_audio_is_an_error_naming_the_input(which):
    voice = bursts(2.0, 48000, [(0.5, 1.5)])
    music = sine(1.0, 48000, 300.0, 0.2)
    (voice if which == "voice" else music)[0, 100] = np.nan
    with pytest.raises(MediaError, match=rf"{which}: .*NaN"):
        bed.make_bed_mix(audio(voice, 48000), settings(), music=audio(music, 48000))


@pytest.mark.parametrize("music_channels,voice_channels,out_channels", [
    (1, 1, 1), (2, 1, 2), (1, 2, 2), (6, 1, 2)])
def test_mono_stereo_and_5_1_music(music_channels, voice_channels, out_channels):
    rate = 44100
    music = np.zeros((music_channels, rate), np.float32)
    if music_channels == 6:
        music[2] = sine(1.0, rate, BED_HZ, 0.3)[0]   # FC: -3 dB into both fronts
        music[3] = sine(1.0, rate, 60.0, 0.5)[0]     # LFE: dropped
    else:
        music[:] = sine(1.0, rate, BED_HZ, 0.3)
    voice = np.repeat(bursts(3.0, 24000, [(0.5, 2.5)]), voice_channels, 0)
    res = bed.make_bed_mix(audio(voice, 24000), settings(), music=audio(music, rate))
    assert res.wave.shape[0] == out_channels and res.rate == 48000
    report = res.report()
    assert "music resampled 44100 -> 48000 Hz" in report
    assert "voice resampled 24000 -> 48000 Hz" in report
    if music_channels == 6:
        assert "5.1" in report and "LFE dropped" in report
        w = res.wave.numpy()[:, int(0.1 * 48000):int(0.4 * 48000)]
        assert band_db(w[0], 48000, BED_HZ) == pytest.approx(band_db(w[1], 48000, BED_HZ), abs=0.01)
        assert band_db(w[0], 48000, 60.0) < band_db(w[0], 48000, BED_HZ) - 60
    if voice_channels == 1 and out_channels == 2:
        assert "voice: mono copied to 2 channels" in report


def test_node_reuses_a_finished_mix_and_cancel_leaves_nothing(spinbot_dirs):
    node = nodes_audio.SpinBotAudioBed()
    nodes_audio._RESULTS.clear()
    args = (audio(bursts(2.0, 24000, [(0.5, 1.5)]), 24000), "pink noise", -18.0, 10.0, 0.1, 0.4,
            0.2, 0.2, "loop", -14.0, 1.0, 5)
    runtime.request_interrupt(True)
    with pytest.raises(runtime.Interrupted):
        node.mix(*args)
    assert not nodes_audio._RESULTS
    first, report = node.mix(*args)
    assert "voice: -" in report and "LUFS" in report and "reused" not in report
    again, report2 = node.mix(*args)
    assert again is first and "reused" in report2
    # A different seed is a different bed.
    other, _ = node.mix(*args[:-1], 6)
    assert not torch.equal(other["waveform"], first["waveform"])


@pytest.mark.parametrize("fit", ["trim", "loop"])
def test_inputs_are_not_modified(fit):
    """Same rate and layout for the output: the mix must not scale the caller's tensors in place."""
    rate = 48000
    voice = audio(np.repeat(bursts(2.0, rate, [(0.5, 1.5)]), 2, 0), rate)
    music = audio(sine(3.0, rate, BED_HZ, 0.4, channels=2), rate)
    before = (voice["waveform"].clone(), music["waveform"].clone())
    bed.make_bed_mix(voice, settings(fit=fit, fade_in_seconds=0.5), music=music)
    assert torch.equal(voice["waveform"], before[0]) and torch.equal(music["waveform"], before[1])


def test_a_voice_shorter_than_one_loudness_block_is_measured_and_ducks():
    """BS.1770 gates in 0.4 s blocks: a 0.3 s "Hi." still has a level and still ducks the bed."""
    res = bed.make_bed_mix(audio(bursts(0.3, 48000, [(0.0, 0.3)]), 48000),
                           settings(source="pink noise", tail_seconds=1.5))
    assert res.voice_lufs is not None and res.speech_seconds > 0.25
    assert res.bed_pause_dbfs - res.bed_speech_dbfs == pytest.approx(10.0, abs=0.5)
