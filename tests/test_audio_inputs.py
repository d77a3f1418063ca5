"""AUDIO as it really arrives: surround layouts, odd dtypes/devices/shapes, and clips shorter than
the loudness meter's window. Every node that reads AUDIO goes through ``media.check_audio``; every
channel reduction goes through ``media.mix_channels``."""
from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from spinbot.nodes import media
from spinbot.nodes.lipsync import audio as lipsync_audio
from spinbot.nodes.lipsync import engine as lipsync_engine
from spinbot.nodes.media import MediaError
from spinbot.nodes.motion.generate import duration_of
from spinbot.nodes.script.nodes_script import SpinBotDirectScript, SpinBotSubtitles
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo, SpinBotVideoCombine
from spinbot.nodes.voice import profiles
from tests.mp4probe import probe

RATE = 48000


def db(x) -> float:
    """RMS level in dBFS (-inf for silence)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(x, dtype=np.float64)))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def sine(seconds: float, freq: float = 440.0, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def frames(n: int = 10, h: int = 48, w: int = 64) -> torch.Tensor:
    return torch.full((n, h, w, 3), 0.5)


COMBINE = dict(fps=25.0, filename_prefix="SpinBot/audio_in", crf=30, preset="ultrafast",
               audio_bitrate="192k", length_policy="pad video with last frame",
               normalize_loudness=False, loudness_lufs=-14.0)


def combine(**kw):
    return SpinBotVideoCombine().combine(**{**COMBINE, **kw})["result"]


# --------------------------------------------------------------------------- downmix by layout

def test_51_tone_in_front_left_stays_on_the_left_through_video_combine(spinbot_dirs):
    """6-ch 48 kHz (FL FR FC LFE BL BR), a 440 Hz tone only in channel 0."""
    tone = sine(1.0)
    wave = np.zeros((6, tone.size), np.float32)
    wave[0] = tone
    path, report = combine(images=frames(25), audio=media.make_audio(wave, RATE))
    p = probe(path)
    assert p.audio_channels == 2
    body = p.audio[:, RATE // 4:3 * RATE // 4]  # clear of AAC edge effects
    left, right = db(body[0]), db(body[1])
    assert left == pytest.approx(db(tone), abs=0.5)  # the tone at (close to) its own level
    assert right < left - 40
    assert "downmixed to stereo (ITU-R BS.775" in report and "LFE dropped" in report

    mixed, note = media.mix_channels(torch.from_numpy(wave), 2)
    assert db(mixed[0]) == pytest.approx(db(tone), abs=0.01)
    assert mixed[1].abs().max() == 0
    assert "5.1 (FL FR FC LFE BL BR)" in note


def _ffmpeg_matrix(layout: str, out_layout: str, fmt: str) -> np.ndarray:
    """libswresample's default rematrix gains, measured with an impulse per input channel."""
    n = av.AudioLayout(layout).nb_channels
    gains = []
    for k in range(n):
        block = np.zeros((1024, n), np.float32)
        block[:, k] = 0.25
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate = RATE
        resampler = av.AudioResampler(format=fmt, layout=out_layout, rate=RATE)
        out = np.concatenate([o.to_ndarray() for o in resampler.resample(frame)
                              + resampler.resample(None)], axis=1).astype(np.float64)
        if fmt == "s16p":
            out /= 32768.0
        gains.append(out[:, 100:900].mean(axis=1) / 0.25)
    return np.array(gains).T


@pytest.mark.parametrize("channels", [3, 4, 5, 6, 7, 8])
def test_downmix_matrix_is_ffmpegs_default_for_the_layout(channels):
    name, labels = media.CHANNEL_LAYOUTS[channels]
    assert [c.name for c in av.AudioLayout(name).channels] == list(labels)
    expected = _ffmpeg_matrix(name, "stereo", "fltp")
    np.testing.assert_allclose(media.downmix_matrix(channels, 2).numpy(), expected, atol=1e-4)
    # Mono: ffmpeg's float mono matrix, a further -3 dB so that stereo -> mono is the mean.
    mono = _ffmpeg_matrix(name, "mono", "fltp") * math.sqrt(0.5)
    np.testing.assert_allclose(media.downmix_matrix(channels, 1).numpy(), mono, atol=1e-4)


def test_stereo_to_mono_is_ffmpegs_ac1_mean():
    np.testing.assert_allclose(media.downmix_matrix(2, 1).numpy(),
                               _ffmpeg_matrix("stereo", "mono", "s16p"), atol=1e-4)
    tone = torch.from_numpy(sine(0.5))
    only_left, note = media.mix_channels(torch.stack([tone, torch.zeros_like(tone)]), 1)
    assert db(only_left) == pytest.approx(db(tone) - 6.02, abs=0.01)
    assert "averaged to mono" in note
    centred = media.to_channels(torch.stack([tone, tone]), 1)
    assert torch.allclose(centred[0], tone)  # a centred voice keeps its level


@pytest.mark.parametrize("channels, centre", [(3, 2), (5, 2), (6, 2), (8, 2)])
def test_centre_goes_to_both_sides_at_minus_3_db(channels, centre):
    tone = sine(0.5)
    wave = np.zeros((channels, tone.size), np.float32)
    wave[centre] = tone
    mixed, _ = media.mix_channels(torch.from_numpy(wave), 2)
    for side in mixed:
        assert db(side) == pytest.approx(db(tone) - 3.01, abs=0.01)


def test_quad_backs_fold_into_their_own_side():
    tone = sine(0.5)
    wave = np.zeros((4, tone.size), np.float32)
    wave[3] = tone  # BR
    mixed, note = media.mix_channels(torch.from_numpy(wave), 2)
    assert mixed[0].abs().max() == 0
    assert db(mixed[1]) == pytest.approx(db(tone) - 3.01, abs=0.01)
    assert "quad (FL FR BL BR)" in note and "LFE" not in note


def test_a_downmix_that_would_clip_is_lowered_and_says_so():
    loud = torch.from_numpy(sine(0.2, amplitude=0.9))
    wave = torch.stack([loud, loud, loud, loud, loud, loud])  # 5.1, everything full
    mixed, note = media.mix_channels(wave, 2)
    peak = 0.9 * (1 + 2 * math.sqrt(0.5))  # FL + FC/sqrt2 + BL/sqrt2
    assert float(mixed.abs().max()) == pytest.approx(1.0, abs=1e-6)
    assert f"lowered by {20 * math.log10(peak):.1f} dB" in note


def test_unknown_channel_counts_mix_with_equal_weights_and_say_so():
    wave = torch.ones(10, 100) * 0.1
    mixed, note = media.mix_channels(wave, 2)
    assert torch.allclose(mixed, torch.full((2, 100), 0.1))
    assert "no standard layout" in note


def _surround_with_rumble(seconds: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """5.1: a 440 Hz tone in FL, a loud 50 Hz rumble in the LFE (which a downmix drops)."""
    tone = sine(seconds, 440.0, 0.4, rate)
    wave = np.zeros((6, tone.size), np.float32)
    wave[0] = tone
    wave[3] = sine(seconds, 50.0, 0.8, rate)
    return wave, tone


def _level_at(x: np.ndarray, rate: int, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(spectrum[int(round(freq * x.size / rate))])


def test_lipsync_mono_uses_the_layout_downmix():
    wave, tone = _surround_with_rumble(1.0, 16000)
    out = lipsync_audio.prepare_audio(media.make_audio(wave, 16000))
    np.testing.assert_allclose(out, tone / 2, atol=1e-6)  # FL -> L, then (L + R) / 2; no LFE


def test_voice_reference_uses_the_layout_downmix_and_notes_it():
    wave, _tone = _surround_with_rumble(3.0, RATE)
    ref, notes = profiles.prepare_reference(media.make_audio(wave, RATE))
    x = ref.numpy()
    assert _level_at(x, profiles.SAMPLE_RATE, 50.0) < 1e-3 * _level_at(x, profiles.SAMPLE_RATE, 440.0)
    assert any("5.1" in n and "LFE dropped" in n for n in notes)


def test_voice_reference_clipping_is_judged_per_channel():
    tone = sine(3.0, amplitude=1.4).clip(-1, 1)  # hard-clipped left channel
    quiet = sine(3.0, amplitude=0.1)
    _ref, notes = profiles.prepare_reference(media.make_audio(np.stack([tone, quiet]), RATE))
    assert any("clipped" in n for n in notes)


# --------------------------------------------------------------------------- odd AUDIO values

def test_integer_pcm_is_scaled_exactly_and_never_clipped():
    cases = [
        (np.array([-32768, 0, 16384, 32767], np.int16), [-1.0, 0.0, 0.5, 32767 / 32768]),
        (np.array([-2 ** 31, 2 ** 30, 2 ** 31 - 1], np.int32), [-1.0, 0.5, (2 ** 31 - 1) / 2 ** 31]),
        (np.array([0, 128, 192, 255], np.uint8), [-1.0, 0.0, 0.5, 127 / 128]),
        (np.array([-128, 64], np.int8), [-1.0, 0.5]),
    ]
    for data, expected in cases:
        for value in (data, torch.from_numpy(data)):
            wave, rate = media.check_audio({"waveform": value, "sample_rate": 8000})
            assert wave.dtype == torch.float32 and wave.shape == (1, data.size)
            np.testing.assert_allclose(wave[0].numpy(), expected, rtol=0, atol=1e-7)
    # Float beyond full scale is the caller's: kept, not clipped.
    loud, _ = media.check_audio({"waveform": torch.tensor([[1.5, -2.0]]), "sample_rate": 8000})
    assert loud.tolist() == [[1.5, -2.0]]


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 1, 8, dtype=torch.int64), "int64 are not audio"),
    (np.zeros((1, 8), np.uint16), "uint16 are not audio"),
    (torch.zeros(1, 1, 8, dtype=torch.bool), "bool are not audio"),
    (torch.zeros(1, 1, 8, dtype=torch.complex64), "not audio"),
    (torch.zeros(1, 1, 8, device="meta"), "'meta' device"),
    (np.zeros((48000, 2), np.float32), r"\[T,C\] array must be transposed"),
    (torch.zeros(1, 1, 1, 8), r"expected waveform \[B,C,T\], \[C,T\] or \[T\]"),
    ("not audio", "expected waveform"),
])
def test_unusable_waveforms_get_a_clear_error(bad, message):
    with pytest.raises(MediaError, match=message):
        media.check_audio({"waveform": bad, "sample_rate": 8000})


@pytest.mark.parametrize("rate", [0, -1, 44100.5, "fast", float("nan")])
def test_bad_sample_rates_get_a_clear_error(rate):
    with pytest.raises(MediaError, match="sample_rate"):
        media.check_audio({"waveform": torch.zeros(1, 1, 8), "sample_rate": rate})


def test_sample_rate_may_be_any_whole_number_type():
    for rate in (np.int64(16000), 16000.0, torch.tensor(16000)):
        assert media.check_audio({"waveform": torch.zeros(8), "sample_rate": rate})[1] == 16000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_waveform_comes_back_on_the_cpu():
    wave = torch.rand(1, 2, 100, device="cuda", dtype=torch.float16, requires_grad=True)
    out, _ = media.check_audio({"waveform": wave, "sample_rate": 8000})
    assert out.device.type == "cpu" and out.dtype == torch.float32 and not out.requires_grad
    assert torch.equal(out, wave[0].detach().float().cpu())


# An 8-bit-exact tone (multiples of 1/128), so every representation below holds it exactly.
TONE_K = np.round(64 * np.sin(2 * np.pi * 300 * np.arange(int(2.5 * 24000)) / 24000)).astype(np.int64)
CANONICAL = {"waveform": torch.from_numpy((TONE_K / 128).astype(np.float32))[None, None],
             "sample_rate": 24000}
VARIANTS = {
    "int16 numpy [T]": lambda: (TONE_K * 256).astype(np.int16),
    "int32 tensor [C,T]": lambda: torch.from_numpy(TONE_K * 2 ** 24).to(torch.int32)[None],
    "uint8 numpy [B,C,T]": lambda: (TONE_K + 128).astype(np.uint8)[None, None],
    "float16 [C,T] requiring grad": lambda: torch.tensor(
        TONE_K / 128, dtype=torch.float16)[None].requires_grad_(),
    "bfloat16 [B,C,T] requiring grad": lambda: torch.tensor(
        TONE_K / 128, dtype=torch.bfloat16)[None, None].requires_grad_(),
    "float64 numpy [C,T]": lambda: (TONE_K / 128)[None],
    "list [T]": lambda: (TONE_K / 128).tolist(),
}


def variant(name: str) -> dict:
    return {"waveform": VARIANTS[name](), "sample_rate": 24000}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_check_audio_gives_plain_float32_cpu(name):
    wave, rate = media.check_audio(variant(name))
    assert rate == 24000 and wave.dtype == torch.float32 and wave.device.type == "cpu"
    assert not wave.requires_grad
    assert torch.equal(wave, CANONICAL["waveform"][0])


@pytest.mark.parametrize("name", ["int16 numpy [T]", "bfloat16 [B,C,T] requiring grad"])
def test_every_audio_reading_node_takes_odd_audio(name, spinbot_dirs):
    odd = variant(name)
    # Voice profile (F5-TTS reference).
    ref, _ = profiles.prepare_reference(odd)
    assert torch.equal(ref, profiles.prepare_reference(CANONICAL)[0])
    # Lip-sync mel windows.
    mels, count = lipsync_engine.audio_windows(odd, 25.0)
    assert count == 63 and torch.equal(mels, lipsync_engine.audio_windows(CANONICAL, 25.0)[0])
    # Motion length from audio.
    assert duration_of(0.0, odd) == duration_of(0.0, CANONICAL) == 2.5
    # Subtitles stretched to the audio.
    script = SpinBotDirectScript().make("One sentence here. And another one.", "English", 2.5, 10.0)[2]
    assert SpinBotSubtitles().build(42, 2, 0.0, script=script, audio=odd) == \
        SpinBotSubtitles().build(42, 2, 0.0, script=script, audio=CANONICAL)
    # Images to video keeps the master audio, as plain float32.
    (video,) = SpinBotImagesToVideo().convert(frames(4), 25.0, audio=odd)
    assert torch.equal(video.audio["waveform"][0], CANONICAL["waveform"][0])
    # Video Combine writes the same track.
    got = probe(combine(images=frames(4), audio=odd)[0]).audio
    want = probe(combine(images=frames(4), audio=CANONICAL)[0]).audio
    np.testing.assert_array_equal(got, want)


def test_lipsync_node_runs_on_int16_numpy_audio(spinbot_dirs):
    from skimage import data

    from tests.factory_lipsync import tiny_wav2lip_gan
    from spinbot.nodes.lipsync.wav2lip import load_wav2lip

    pth, _safetensors = tiny_wav2lip_gan(spinbot_dirs["models"] / "lipsync")
    model = load_wav2lip(str(pth))

    class Box:
        def detect(self, frame):
            return [(178, 50, 268, 160, 0.99)]

    still = torch.from_numpy(np.ascontiguousarray(data.astronaut())).float().div(255)[None]
    audio = {"waveform": (TONE_K[:12000] * 256).astype(np.int16), "sample_rate": 24000}
    video = lipsync_engine.lip_sync(model, Box(), lipsync_engine.FrameSource(still, fps=25.0), audio,
                                    lipsync_engine.LipSyncSettings(smoothing_window=1))
    assert video.frame_count == 13
    assert torch.equal(video.audio["waveform"][0], CANONICAL["waveform"][0, :, :12000])


# --------------------------------------------------------------------------- loudness before padding

def test_a_10ms_tone_under_a_2s_video_is_not_raised(spinbot_dirs):
    tone = sine(0.010, amplitude=0.02)
    path, report = combine(images=frames(50), audio=media.make_audio(tone, RATE),
                           normalize_loudness=True, loudness_lufs=-14.0)
    p = probe(path)
    assert p.audio_seconds == pytest.approx(2.0, abs=1 / 25)
    peak = float(np.abs(p.audio).max())
    assert 20 * math.log10(peak / 0.02) < 3  # not raised (old code: about +33 dB)
    assert "shorter than 0.4 s, left as is" in report


def test_loudness_is_set_on_the_speech_not_on_the_padding(spinbot_dirs):
    """1 s of tone under a 4 s video: the written tone is at the target, the tail silent."""
    import pyloudnorm

    tone = sine(1.0, amplitude=0.05)
    path, report = combine(images=frames(100), audio=media.make_audio(tone, RATE),
                           normalize_loudness=True, loudness_lufs=-20.0)
    p = probe(path)
    meter = pyloudnorm.Meter(RATE)
    assert meter.integrated_loudness(p.audio[:, :RATE].T) == pytest.approx(-20.0, abs=0.5)
    assert np.abs(p.audio[:, int(1.2 * RATE):]).max() < 1e-3
    assert "-> -20.0 LUFS" in report


def test_trim_policy_measures_only_what_is_kept(spinbot_dirs):
    """Quiet first second, loud rest; trimmed to 1 s, the kept second is set to the target."""
    import pyloudnorm

    wave = np.concatenate([sine(1.0, amplitude=0.05), sine(3.0, amplitude=0.5)])
    path, _ = combine(images=frames(25), audio=media.make_audio(wave, RATE),
                      length_policy="trim audio to video", normalize_loudness=True,
                      loudness_lufs=-20.0)
    audio = probe(path).audio
    assert pyloudnorm.Meter(RATE).integrated_loudness(audio[:, :RATE].T) == pytest.approx(-20.0, abs=0.5)
