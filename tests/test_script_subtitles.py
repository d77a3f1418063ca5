"""Subtitles from segments: wrapping, SRT/WebVTT that parse back, timings that cover the audio."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from spinbot.nodes.media import make_audio
from spinbot.nodes.script.nodes_script import SpinBotDirectScript, SpinBotSubtitles
from spinbot.nodes.script.ollama_client import ScriptError
from spinbot.nodes.script.segments import Segment, make_segments, retime
from spinbot.nodes.script.subtitles import (SubtitleError, build_srt, build_vtt,
                                            cues_from_segments, display_width, parse_vtt,
                                            wrap_text)
from spinbot.nodes.video.nodes_video import SpinBotVideoCombine
from spinbot.nodes.video.subtitles import parse_srt
from tests.media import speech_wav
from tests.mp4probe import probe

STORY = ("The lighthouse keeper climbed the stairs every evening, one hundred and twelve steps, "
         "carrying oil and a small brass key. Nobody in the village knew why he never missed a "
         "night. Then one winter the light went dark.")


def assert_monotonic(cues, total=None):
    assert cues and cues[0].start >= 0
    for a, b in zip(cues, cues[1:]):
        assert a.start < a.end <= b.start < b.end
    if total is not None:
        assert cues[-1].end <= total + 1e-3


@pytest.mark.parametrize("width", [12, 20, 42])
def test_wrap_respects_the_width_and_keeps_every_word(width):
    lines = wrap_text(STORY, width)
    assert all(len(line) <= width for line in lines)
    assert " ".join(lines) == STORY
    assert all(len(f"{a} {b.split()[0]}") > width for a, b in zip(lines, lines[1:]))  # greedy


def test_wrap_chinese_counts_double_width_and_never_starts_with_punctuation():
    text = "他说：“你好。”然后走了。今天天气很好！你去吗？圆周率约是3.14。"
    lines = wrap_text(text, 12)
    assert "".join(lines) == text
    assert all(display_width(line) <= 12 for line in lines)
    assert not any(line[0] in "。，、！？”：" for line in lines)
    assert display_width("你好") == 4


def test_wrap_cuts_a_word_longer_than_a_line():
    assert wrap_text("Pneumonoultramicroscopic dust", 10) == ["Pneumonoul", "tramicrosc",
                                                              "opic dust"]
    with pytest.raises(SubtitleError):
        wrap_text("x", 0)


def test_a_segment_too_long_for_two_lines_becomes_several_cues():
    seg = Segment(0, STORY, 2.0, 20.0, estimated=False)
    cues = cues_from_segments([seg], max_chars_per_line=30, max_lines=2)
    assert len(cues) > 1
    assert all(len(c.text.split("\n")) <= 2 for c in cues)
    assert all(len(line) <= 30 for c in cues for line in c.text.split("\n"))
    assert cues[0].start == 2.0 and cues[-1].end == 20.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:]))  # the segment's time is shared
    assert " ".join(" ".join(c.text.split("\n")) for c in cues) == STORY
    lengths = [len(c.text) for c in cues]
    durations = [c.end - c.start for c in cues]
    assert np.corrcoef(lengths, durations)[0, 1] > 0.95  # time in proportion to text


def test_srt_and_vtt_parse_back_to_the_same_cues():
    segments = make_segments(STORY + ' Tom & Jerry said "<hi>" --> bye.')
    srt, vtt = build_srt(segments, 32), build_vtt(segments, 32)
    srt_cues, vtt_cues = parse_srt(srt), parse_vtt(vtt)
    assert srt_cues == vtt_cues == cues_from_segments(segments, 32)
    assert vtt.startswith("WEBVTT\n\n") and "&amp;" in vtt and "&lt;hi&gt;" in vtt
    assert "00:00:00.000 --> " in vtt and "00:00:00,000 --> " in srt
    assert all("-->" not in c.text for c in srt_cues)
    assert_monotonic(srt_cues)


def test_overlapping_measured_segments_still_give_monotonic_cues():
    segments = [Segment(0, "One.", 0.0, 1.2, False), Segment(1, "Two.", 1.0, 2.0, False),
                Segment(2, "Three.", 2.0, 2.0004, False)]
    cues = parse_srt(build_srt(segments))
    assert_monotonic(cues)
    assert [c.text for c in cues] == ["One.", "Two.", "Three."]


def _espeak_segments(tmp_path, sentences):
    """Measured segments and their audio: each sentence spoken by espeak-ng, back to back."""
    waves, rate = [], None
    for i, sentence in enumerate(sentences):
        path = speech_wav(str(tmp_path / f"s{i}.wav"), sentence)
        if path is None:
            pytest.skip("espeak-ng is not installed")
        data, rate = sf.read(path, dtype="float32")
        waves.append(data)
    durations = [len(w) / rate for w in waves]
    return durations, np.concatenate(waves), rate


def test_estimated_timings_stretched_to_the_audio_cover_it(tmp_path):
    _stage, _narrative, script, _info = SpinBotDirectScript().make(STORY, "English", 2.5, 10.0)
    path = speech_wav(str(tmp_path / "all.wav"), script.narrative)
    if path is None:
        pytest.skip("espeak-ng is not installed")
    data, rate = sf.read(path, dtype="float32")
    audio = make_audio(torch.from_numpy(data)[None], rate)
    seconds = len(data) / rate
    srt, vtt = SpinBotSubtitles().build(42, 2, 0.0, script=script, audio=audio)
    for cues in (parse_srt(srt), parse_vtt(vtt)):
        assert_monotonic(cues, total=seconds)
        assert cues[0].start == 0.0 and cues[-1].end == pytest.approx(seconds, abs=2e-3)


def test_measured_segments_give_cues_that_cover_the_audio(tmp_path):
    script = SpinBotDirectScript().make(STORY, "English", 2.5, 10.0)[2]
    durations, wave, rate = _espeak_segments(tmp_path, [s.text for s in script.segments])
    measured = retime(script.segments, durations)
    srt, vtt = SpinBotSubtitles().build(42, 2, 0.0, script=script, segments=measured)
    seconds = len(wave) / rate
    for cues in (parse_srt(srt), parse_vtt(vtt)):
        assert_monotonic(cues, total=seconds)
        assert cues[0].start == 0.0 and cues[-1].end == pytest.approx(seconds, abs=2e-3)
        # each segment's words are on screen while it is spoken
        starts = [s.start for s in measured]
        assert all(any(abs(c.start - t) < 2e-3 for c in cues) for t in starts)


def test_subtitles_node_offset_and_errors():
    script = SpinBotDirectScript().make("One. Two. Three.", "English", 1.0, 10.0)[2]
    shifted = parse_srt(SpinBotSubtitles().build(42, 2, 0.5, script=script)[0])
    plain = parse_srt(SpinBotSubtitles().build(42, 2, 0.0, script=script)[0])
    assert [round(c.start - p.start, 3) for c, p in zip(shifted, plain)] == [0.5] * 3
    early = parse_srt(SpinBotSubtitles().build(42, 2, -1.2, script=script)[0])
    assert [c.text for c in early] == ["Two.", "Three."] and early[0].start >= 0
    with pytest.raises(ScriptError, match="connect a script or segments"):
        SpinBotSubtitles().build(42, 2, 0.0)
    with pytest.raises(ScriptError, match="before the video starts"):
        SpinBotSubtitles().build(42, 2, -100.0, script=script)


def test_subtitles_mux_into_video_combine(spinbot_dirs):
    script = SpinBotDirectScript().make("Hello there. Welcome to the show!", "English",
                                        2.5, 10.0)[2]
    srt, _vtt = SpinBotSubtitles().build(42, 2, 0.0, script=script)
    frames = torch.full((int(script.estimated_seconds * 10) + 2, 32, 48, 3), 0.5)
    path, report = SpinBotVideoCombine().combine(
        fps=10.0, filename_prefix="SpinBot/subs", crf=30, preset="ultrafast",
        audio_bitrate="96k", length_policy="pad video with last frame", normalize_loudness=False,
        loudness_lufs=-14.0, images=frames, subtitles=srt)["result"]
    p = probe(path)
    assert [(round(a, 2), round(b, 2), t) for a, b, t in p.subtitles] == \
        [(round(c.start, 2), round(c.end, 2), c.text) for c in parse_srt(srt)]
