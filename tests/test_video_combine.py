"""SpinBot Video Combine: what it writes decodes with the right frames, timing, audio and subtitles."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from spinbot.nodes.media import MediaError
from spinbot.nodes.outputs import OutputPathError
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo, SpinBotVideoCombine
from tests.media import astronaut_image, tone_audio
from tests.mp4probe import probe, workflow_from

DEFAULTS = dict(fps=25.0, filename_prefix="SpinBot/test", crf=19, preset="veryfast",
                audio_bitrate="192k", length_policy="pad video with last frame",
                normalize_loudness=True, loudness_lufs=-14.0)


def combine(**kw):
    args = {**DEFAULTS, **kw}
    return SpinBotVideoCombine().combine(**args)


def ramp(n=20, h=48, w=64):
    """Frames whose brightness encodes their index (to check order after decoding)."""
    levels = torch.linspace(0.1, 0.9, n)
    return levels[:, None, None, None].expand(n, h, w, 3).clone()


def test_frames_fps_size_and_ui(spinbot_dirs):
    out = combine(images=ramp(20), fps=12.5)
    path, report = out["result"]
    assert os.path.dirname(path) == str(spinbot_dirs["output"] / "SpinBot")
    p = probe(path)
    assert (p.video_frames, p.width, p.height, p.fps) == (20, 64, 48, 12.5)
    assert p.codecs == ["h264"]
    means = [p.first_frame.mean(), p.last_frame.mean()]
    assert means[0] == pytest.approx(0.1 * 255, abs=4) and means[1] == pytest.approx(0.9 * 255, abs=4)
    ui = out["ui"]["spinbot_video"][0]
    assert ui == {"filename": os.path.basename(path), "subfolder": "SpinBot", "type": "output",
                  "format": "video/mp4", "frame_rate": 12.5}
    assert "20 frames 64x48 @ 12.5 fps" in report


def test_audio_longer_than_video_pads_video_and_reports(spinbot_dirs):
    audio = tone_audio(2.0, rate=24000)
    path, report = combine(images=ramp(10), audio=audio)["result"]
    p = probe(path)
    assert p.video_frames == 50  # ceil(2.0 s * 25 fps)
    assert p.audio_rate == 24000  # kept at full rate
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / 25
    assert "padded with 40 copies of its last frame" in report
    assert np.abs(p.last_frame.astype(int) - p.first_frame.astype(int)).mean() > 10


def test_trim_audio_policy(spinbot_dirs):
    path, report = combine(images=ramp(25), audio=tone_audio(3.0, rate=48000, channels=2),
                           length_policy="trim audio to video")["result"]
    p = probe(path)
    assert p.video_frames == 25 and p.audio_channels == 2
    assert p.audio_seconds == pytest.approx(1.0, abs=1 / 25)
    assert "audio trimmed" in report


def test_shorter_audio_is_padded_with_silence(spinbot_dirs):
    path, report = combine(images=ramp(50), audio=tone_audio(1.0, rate=44100))["result"]
    p = probe(path)
    assert p.audio_seconds == pytest.approx(2.0, abs=1 / 25)
    tail = p.audio[:, int(1.3 * 44100):int(1.9 * 44100)]
    assert np.abs(tail).max() < 1e-3
    assert "shorter than the video" in report


def test_audio_loudness_normalised_and_rate_resampled_when_aac_cannot(spinbot_dirs):
    import pyloudnorm

    path, report = combine(images=ramp(50), audio=tone_audio(2.0, rate=22000, amplitude=0.05))["result"]
    p = probe(path)
    assert p.audio_rate == 48000 and "resampled 22000 Hz -> 48000 Hz" in report
    lufs = pyloudnorm.Meter(48000).integrated_loudness(p.audio.T.astype(np.float64))
    assert lufs == pytest.approx(-14.0, abs=1.0)
    path2, report2 = combine(images=ramp(50), audio=tone_audio(2.0, rate=48000, amplitude=0.05),
                             normalize_loudness=False)["result"]
    quiet = pyloudnorm.Meter(48000).integrated_loudness(probe(path2).audio.T.astype(np.float64))
    assert quiet < -20 and "loudness" not in report2


def test_peaks_are_limited_and_loudness_still_reaches_target(spinbot_dirs):
    import pyloudnorm

    audio = tone_audio(3.0, rate=48000, amplitude=0.05)
    audio["waveform"][..., 1000:1200] = 0.99  # a spike: the target gain alone would clip it
    path, report = combine(images=ramp(75), audio=audio)["result"]
    assert "peaks limited to -1 dBFS" in report
    decoded = probe(path).audio
    assert np.abs(decoded).max() < 0.95  # -1 dBFS = 0.891, plus AAC's overshoot
    lufs = pyloudnorm.Meter(48000).integrated_loudness(decoded.T.astype(np.float64))
    assert lufs == pytest.approx(-14.0, abs=0.7)


def test_odd_size_is_padded(spinbot_dirs):
    path, report = combine(images=torch.rand(5, 33, 47, 3))["result"]
    p = probe(path)
    assert (p.width, p.height) == (48, 34)
    assert "padded to 48x34" in report


def test_subtitles_soft_track(spinbot_dirs):
    srt = ("1\n00:00:00,000 --> 00:00:00,800\nHello {there}, ünïcode\nsecond line\n\n"
           "2\n00:00:01,200 --> 00:00:01,900\nBye.\n")
    path, report = combine(images=ramp(50), subtitles=srt)["result"]
    p = probe(path)
    assert p.codecs == ["h264", "mov_text"]
    assert p.subtitles == [(0.0, 0.8, "Hello {there}, ünïcode\nsecond line"), (1.2, 1.9, "Bye.")]
    assert "2 cues" in report


def test_workflow_is_embedded(spinbot_dirs):
    prompt = {"1": {"class_type": "SpinBotVideoCombine", "inputs": {}}}
    workflow = {"nodes": [{"id": 1}], "links": []}
    path, _ = combine(images=ramp(5), prompt=prompt, extra_pnginfo={"workflow": workflow})["result"]
    p = probe(path)
    assert json.loads(p.metadata["prompt"]) == prompt
    assert workflow_from(p) == workflow


def test_spinbot_video_input_streams_and_carries_audio(spinbot_dirs):
    audio = tone_audio(1.0, rate=24000)
    (video,) = SpinBotImagesToVideo().convert(ramp(30, 32, 32), 30.0, audio=audio)
    path, report = combine(video=video, fps=25.0)["result"]
    p = probe(path)
    assert p.video_frames == 30 and p.fps == 30.0
    assert p.audio_seconds == pytest.approx(1.0, abs=1 / 30)
    assert "video's own 30 fps" in report


def _no_files(root):
    return [os.path.join(b, f) for b, _d, fs in os.walk(root) for f in fs]


def test_zero_frames_is_an_error_and_leaves_no_file(spinbot_dirs):
    with pytest.raises(MediaError, match="no frames"):
        combine(images=torch.zeros(0, 16, 16, 3))
    assert _no_files(spinbot_dirs["output"]) == []


def test_nan_frame_is_an_error_naming_it_and_leaves_no_file(spinbot_dirs):
    frames = torch.rand(40, 16, 16, 3)
    frames[33, 2, 2, 1] = float("nan")
    with pytest.raises(MediaError, match=r"frame\(s\) 33 contain NaN"):
        combine(images=frames)
    assert _no_files(spinbot_dirs["output"]) == []


def test_both_or_neither_frame_inputs_is_an_error(spinbot_dirs):
    with pytest.raises(MediaError, match="exactly one"):
        combine()


@pytest.mark.parametrize("prefix", ["../../x", "/tmp/evil", "a/../../b", "..", "C:/x", "a/"])
def test_hostile_prefix_stays_inside_output(spinbot_dirs, prefix):
    with pytest.raises(OutputPathError):
        combine(images=ramp(3), filename_prefix=prefix)
    assert _no_files(spinbot_dirs["output"]) == []
    assert not os.path.exists("/tmp/evil_00001_.mp4")


def test_symlink_leaving_output_is_refused(spinbot_dirs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, spinbot_dirs["output"] / "link")
    with pytest.raises(OutputPathError, match="outside"):
        combine(images=ramp(3), filename_prefix="link/x")
    assert list(outside.iterdir()) == []


def test_counter_increments(spinbot_dirs):
    a = combine(images=ramp(3))["result"][0]
    b = combine(images=ramp(3))["result"][0]
    assert a.endswith("test_00001_.mp4") and b.endswith("test_00002_.mp4")


def test_cancel_mid_encode_leaves_no_file(spinbot_dirs, monkeypatch):
    from spinbot.nodes import runtime

    calls = {"n": 0}
    real = runtime.check_interrupted

    def interrupt_on_third():
        calls["n"] += 1
        if calls["n"] == 3:
            runtime.request_interrupt()
        real()

    monkeypatch.setattr(runtime, "check_interrupted", interrupt_on_third)
    with pytest.raises(runtime.Interrupted):
        combine(images=torch.rand(100, 16, 16, 3))
    assert _no_files(spinbot_dirs["output"]) == []


def test_astronaut_portrait_with_speech_length(spinbot_dirs):
    path, _ = combine(images=astronaut_image(128), audio=tone_audio(1.5, rate=24000))["result"]
    p = probe(path)
    assert p.video_frames == 38 and (p.width, p.height) == (128, 128)


def test_burned_in_subtitles_change_only_frames_with_a_cue(spinbot_dirs):
    srt = "1\n00:00:00,400 --> 00:00:00,800\nHELLO WORLD\n"
    frames = torch.full((30, 96, 160, 3), 0.5)
    soft, _ = combine(images=frames, subtitles=srt, crf=0, preset="ultrafast")["result"]
    burned, report = combine(images=frames, subtitles=srt, burn_in_subtitles=True, crf=0,
                             preset="ultrafast")["result"]
    assert "burned into the frames" in report

    import av

    def decoded(path):
        with av.open(path) as c:
            return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]

    a, b = decoded(soft), decoded(burned)
    diff = [np.abs(x - y).max() for x, y in zip(a, b)]
    assert max(diff[:9]) <= 3 and max(diff[21:]) <= 3  # 0.4 s = frame 10, 0.8 s = frame 20
    assert min(diff[11:19]) > 50


def test_second_subtitle_track_with_languages(spinbot_dirs):
    """A translation in track 1 and the original in track 2, each tagged with its ISO 639-2
    language (codes or names); track 2 is clipped and its overlaps shown like track 1; burn-in
    draws track 1 only; an unknown language is an error naming the widget."""
    from spinbot.nodes.dubbing.languages import LanguageError

    first = "1\n00:00:00,000 --> 00:00:00,800\nHola.\n\n2\n00:00:01,000 --> 00:00:03,000\nAdiós.\n"
    second = ("1\n00:00:00,000 --> 00:00:00,800\nHello.\n\n"
              "2\n00:00:00,400 --> 00:00:01,200\nOver.\n\n"  # overlaps the first
              "3\n00:00:01,900 --> 00:00:05,000\nBye.\n")  # runs past the 2 s video
    path, report = combine(images=ramp(50), subtitles=first, subtitles_2=second,
                           subtitle_language="Spanish", subtitle_language_2="eng")["result"]
    p = probe(path)
    assert p.codecs == ["h264", "mov_text", "mov_text"]
    assert [lang for lang, _ in p.subtitle_tracks] == ["spa", "eng"]
    assert p.subtitles == p.subtitle_tracks[0][1] == [(0.0, 0.8, "Hola."), (1.0, 2.0, "Adiós.")]
    assert p.subtitle_tracks[1][1] == [(0.0, 0.4, "Hello."), (0.4, 0.8, "Hello.\nOver."),
                                       (0.8, 1.2, "Over."), (1.9, 2.0, "Bye.")]
    assert "subtitles: 2 cues as a mov_text track, language 'spa'" in report
    assert "subtitles_2: 3 cues as a mov_text track, language 'eng'" in report
    assert "subtitles_2: 0 cues after the video's end (2.000s) dropped, 1 cut at it" in report
    # only the second track: one track, tagged; defaults are 'und'
    p = probe(combine(images=ramp(50), subtitles_2=second, subtitle_language_2="de")["result"][0])
    assert [lang for lang, _ in p.subtitle_tracks] == ["deu"]
    p = probe(combine(images=ramp(50), subtitles=first)["result"][0])
    assert [lang for lang, _ in p.subtitle_tracks] == ["und"]
    # burn-in: track 2 alone draws nothing
    frames = torch.full((20, 64, 96, 3), 0.5)
    plain = probe(combine(images=frames, fps=10.0)["result"][0]).first_frame
    burned = probe(combine(images=frames, fps=10.0, subtitles_2=second,
                           burn_in_subtitles=True)["result"][0]).first_frame
    assert np.abs(burned.astype(int) - plain.astype(int)).max() <= 3
    with pytest.raises(LanguageError, match="subtitle_language_2"):
        combine(images=ramp(5), subtitles_2=second, subtitle_language_2="Klingonese")
