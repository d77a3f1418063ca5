"""Subtitle timing in what Video Combine writes: every cue inside the video under both length
policies, overlapping cues shown together (mov_text and burn-in), burn-in after the padding, and
SRT and WebVTT each read by their own rules."""
from __future__ import annotations

import json
import shutil
import subprocess

import av
import numpy as np
import pytest
import torch

from spinbot.nodes.script.burn_in import active_text, burn_subtitles
from spinbot.nodes.script.subtitles import format_vtt, parse_vtt, wrap_text
from spinbot.nodes.video.nodes_video import SpinBotVideoCombine
from spinbot.nodes.video.subtitles import (Cue, SubtitleError, clip_cues, parse_srt,
                                           parse_subtitles, screen_cues)
from tests.media import astronaut_image, tone_audio
from tests.mp4probe import probe

FPS = 10.0
OVERLAP_SRT = ("1\n00:00:01,000 --> 00:00:03,000\nfirst\n\n"
               "2\n00:00:02,000 --> 00:00:02,500\nsecond\n")
OVERLAP_VTT = ("WEBVTT\n\n00:01.000 --> 00:03.000\nfirst\n\n"
               "00:02.000 --> 00:02.500\nsecond\n")
OVERLAP_SHOWN = [(1.0, 2.0, "first"), (2.0, 2.5, "first\nsecond"), (2.5, 3.0, "first")]


def combine(**kw):
    args = dict(fps=FPS, filename_prefix="SpinBot/subtiming", crf=0, preset="ultrafast",
                audio_bitrate="96k", length_policy="pad video with last frame",
                normalize_loudness=False, loudness_lufs=-14.0)
    args.update(kw)
    return SpinBotVideoCombine().combine(**args)["result"]


def durations(path):
    """(container duration, {stream type: duration}) in seconds, as PyAV reads them."""
    with av.open(path) as c:
        return (c.duration / 1e6,
                {s.type: float(s.duration * s.time_base) for s in c.streams})


def ffprobe_durations(path):
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "format=duration:stream=codec_type,duration", "-of", "json", path],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    return (float(info["format"]["duration"]),
            {s["codec_type"]: float(s["duration"]) for s in info["streams"]})


def decoded_frames(path):
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)


def rounded(subtitles):
    return [(round(a, 3), round(b, 3), t) for a, b, t in subtitles]


# --- every cue lies inside the video ---------------------------------------------------------

LATE_SRT = ("1\n00:00:00,500 --> 00:00:01,500\nearly\n\n"
            "2\n00:00:01,500 --> 00:00:03,500\nacross the trim\n\n"
            "3\n00:00:03,500 --> 00:00:06,000\nacross the end\n\n"
            "4\n00:00:09,000 --> 00:00:10,000\nafter the end\n")


@pytest.mark.parametrize("policy, seconds, expected", [
    ("pad video with last frame", 4.0,
     [(0.5, 1.5, "early"), (1.5, 3.5, "across the trim"), (3.5, 4.0, "across the end")]),
    ("trim audio to video", 2.0, [(0.5, 1.5, "early"), (1.5, 2.0, "across the trim")]),
])
def test_subtitle_track_never_outlasts_the_video(spinbot_dirs, policy, seconds, expected):
    # 2 s of frames with 4 s of audio: padding makes a 4 s video, trimming keeps 2 s
    path, report = combine(images=torch.full((20, 32, 48, 3), 0.5), subtitles=LATE_SRT,
                           audio=tone_audio(4.0, rate=24000), length_policy=policy)
    p = probe(path)
    assert p.video_frames == int(seconds * FPS)
    assert rounded(p.subtitles) == expected
    container, streams = durations(path)
    assert streams["video"] == pytest.approx(seconds, abs=1e-6)
    assert container == pytest.approx(seconds, abs=1e-3)
    assert streams["subtitle"] <= seconds + 1e-6 and streams["audio"] <= seconds + 1e-3
    ff = ffprobe_durations(path)
    if ff is not None:  # what players read: the file's duration is the video's
        assert ff[0] == pytest.approx(seconds, abs=1e-3)
        assert max(ff[1].values()) <= seconds + 1e-3
    dropped = 4 - len(expected)
    assert f"{dropped} cues after the video's end ({seconds:.3f}s) dropped, 1 cut at it" in report


def test_cues_are_clipped_without_audio_and_at_a_fractional_rate(spinbot_dirs):
    # 100 frames at 29.97 fps last 100 * 1001 / 30000 = 3.3366... s, not a whole millisecond
    path, _ = combine(images=torch.full((100, 32, 48, 3), 0.5), fps=29.97,
                      subtitles="1\n00:00:03,000 --> 00:00:09,000\nto the end\n\n"
                                "2\n00:00:04,000 --> 00:00:05,000\ngone\n")
    seconds = 100 * 1001 / 30000
    p = probe(path)
    assert [t for _a, _b, t in p.subtitles] == ["to the end"]
    assert p.subtitles[0][0] == pytest.approx(3.0) and seconds - 1e-3 < p.subtitles[0][1] <= seconds
    container, streams = durations(path)
    assert streams["subtitle"] <= streams["video"] + 1e-9
    assert container == pytest.approx(seconds, abs=1e-3)


def test_clip_cues():
    cues = [Cue(0.0, 1.0, "a"), Cue(1.5, 3.0, "b"), Cue(2.0, 2.5, "c"), Cue(2.5, 4.0, "d")]
    assert clip_cues(cues, 2.0) == [Cue(0.0, 1.0, "a"), Cue(1.5, 2.0, "b")]
    assert clip_cues(cues, 10.0) == cues


# --- overlapping cues show both texts ---------------------------------------------------------

@pytest.mark.parametrize("subtitles", [OVERLAP_SRT, OVERLAP_VTT], ids=["srt", "vtt"])
def test_overlapping_cues_show_both_texts_in_the_mov_text_track(spinbot_dirs, subtitles):
    path, _ = combine(images=torch.full((40, 32, 48, 3), 0.5), subtitles=subtitles)
    assert rounded(probe(path).subtitles) == OVERLAP_SHOWN


def test_overlapping_cues_show_both_texts_burned_in(spinbot_dirs):
    frames = torch.full((40, 96, 160, 3), 0.5)
    plain = decoded_frames(combine(images=frames)[0])
    burned = decoded_frames(combine(images=frames, subtitles=OVERLAP_SRT,
                                    burn_in_subtitles=True)[0])
    touched = np.abs(burned - plain).max(axis=-1) > 40  # [n,H,W] pixels of drawn text
    rows = [np.nonzero(m.any(axis=1))[0] for m in touched]
    # 10 fps: "first" alone on frames 10-19 and 25-29, both on 20-24, nothing else
    assert not touched[:10].any() and not touched[30:].any()
    assert all(touched[i].any() for i in range(10, 30))
    first_only = [burned[i] for i in (*range(10, 20), *range(25, 30))]
    assert all(np.abs(f - first_only[0]).max() <= 3 for f in first_only)
    both = [burned[i] for i in range(20, 25)]
    assert all(np.abs(f - both[0]).max() <= 3 for f in both)
    assert np.abs(both[0] - first_only[0]).max() > 100  # the overlap frames differ
    # two lines: the text block is taller, the second line below where "first" alone sits
    assert np.ptp(rows[22]) > 1.6 * np.ptp(rows[15])
    assert rows[22].max() >= rows[15].max() - 2


def test_screen_cues_split_overlaps_into_intervals():
    assert [(c.start, c.end, c.text) for c in screen_cues(parse_srt(OVERLAP_SRT))] == \
        OVERLAP_SHOWN
    # equal starts keep document order; touching cues do not overlap; gaps stay gaps
    cues = [Cue(0, 2, "b"), Cue(0, 1, "a"), Cue(1, 2, "c"), Cue(5, 6, "z")]
    assert screen_cues(cues) == [Cue(0, 1, "b\na"), Cue(1, 2, "b\nc"), Cue(5, 6, "z")]
    # a cue inside another that started later still comes after it
    nested = [Cue(3, 4, "inner"), Cue(0, 10, "outer")]
    assert [c.text for c in screen_cues(nested)] == ["outer", "outer\ninner", "outer"]
    for t in (0.5, 1.0, 2.2, 3.0, 3.5, 4.0, 9.99, 10.0):
        shown = [c.text for c in screen_cues(nested) if c.start <= t < c.end]
        assert active_text(nested, t) == (shown[0] if shown else "")


def test_burn_in_draws_the_same_overlay_as_the_joined_text():
    src = np.random.default_rng(1).integers(0, 256, (30, 120, 200, 3), dtype=np.uint8)
    overlapping = burn_subtitles(src, 0, FPS, parse_srt(OVERLAP_SRT))
    joined = burn_subtitles(src, 0, FPS, [Cue(1.0, 2.0, "first"), Cue(2.0, 2.5, "first\nsecond"),
                                          Cue(2.5, 3.0, "first")])
    assert np.array_equal(overlapping, joined)
    assert not np.array_equal(overlapping[22], burn_subtitles(src, 0, FPS, [Cue(1, 3, "first")])[22])


# --- burn-in after the length policy ----------------------------------------------------------

def test_padded_frames_show_the_cue_of_their_own_time(spinbot_dirs):
    still = astronaut_image(96)  # one frame; 4 s of audio pads it to 40 frames
    srt = ("1\n00:00:00,000 --> 00:00:02,000\nFIRST CUE\n\n"
           "2\n00:00:02,000 --> 00:00:04,000\nSECOND\n")
    plain = decoded_frames(combine(images=still, audio=tone_audio(4.0, rate=24000))[0])
    path, report = combine(images=still, audio=tone_audio(4.0, rate=24000), subtitles=srt,
                           burn_in_subtitles=True)
    burned = decoded_frames(path)
    assert len(burned) == len(plain) == 40
    assert "padded with 39 copies" in report
    diff = lambda a, b: np.abs(a - b).max()  # noqa: E731
    assert all(diff(burned[i], plain[i]) > 100 for i in range(40))  # a cue on every frame
    assert all(diff(burned[i], burned[0]) <= 3 for i in range(1, 20))  # the first cue
    assert all(diff(burned[i], burned[39]) <= 3 for i in range(20, 39))  # the second cue
    assert diff(burned[39], burned[0]) > 100  # the last frames show the second cue


# --- SRT and WebVTT, each by its own rules ----------------------------------------------------

FULL_VTT = """\ufeffWEBVTT - a file with everything the spec allows
Kind: captions
Language: en

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

NOTE this block is a comment
and it runs to a blank line

intro
00:01.000 --> 00:02.500 align:start position:10% line:0
<v Roger Bingham>Hello &amp; welcome</v>
<c.yellow>to</c> <b>the</b> <00:01.500><i>show</i> &lt;3&nbsp;!

NOTE another comment

1:00:00.000 --> 1:00:01.250
<ruby>漢<rt>kan</rt></ruby>字 &gt; <u>x</u>
<v Bob></v>
00:00:05.000-->00:00:06.000
a cue right after another's text
"""


def test_webvtt_is_read_by_its_own_rules():
    assert parse_vtt(FULL_VTT) == [
        Cue(1.0, 2.5, "Hello & welcome\nto the show <3\u00a0!"),
        Cue(3600.0, 3601.25, "漢字 > x"),
        Cue(5.0, 6.0, "a cue right after another's text"),
    ]
    assert parse_subtitles(FULL_VTT) == parse_vtt(FULL_VTT)
    # the header may be followed by a cue at once, and CRLF line ends are lines too
    assert parse_vtt("WEBVTT\r\n00:00.000 --> 00:00.500\r\nhi\r\n") == [Cue(0.0, 0.5, "hi")]
    assert parse_vtt(format_vtt([Cue(0.25, 1.0, "Tom & <Jerry>")])) == \
        [Cue(0.25, 1.0, "Tom & <Jerry>")]


@pytest.mark.parametrize("text, message", [
    ("WEBVTTX\n\n00:01.000 --> 00:02.000\nx\n", "must start with 'WEBVTT'"),
    ("WEBVTT\n\n00:01,000 --> 00:02,000\nx\n", "bad WebVTT timing line"),  # SRT's comma
    ("WEBVTT\n\n1:02.000 --> 00:03.000\nx\n", "bad WebVTT timing line"),  # one-digit minutes
    ("WEBVTT\n\n00:61.000 --> 01:03.000\nx\n", "bad WebVTT timing line"),
    ("WEBVTT\n\n00:01.0000 --> 00:02.000\nx\n", "bad WebVTT timing line"),
    ("WEBVTT\n\n00:02.000 --> 00:01.000\nx\n", "ends before it starts"),
    ("WEBVTT\n\nan identifier\n\n", "without a timing line"),
])
def test_bad_webvtt_is_a_clear_error(text, message):
    with pytest.raises(SubtitleError, match=message):
        parse_vtt(text)


def test_srt_is_read_by_its_own_rules():
    srt = ("1\r\n00:00:01,000 --> 00:00:02,000 X1:10 X2:100 Y1:10 Y2:50\r\n"
           "<i>Hello</i> {\\an8}<font color=\"#ff0000\">there</font> {braces} &amp; <hi>\r\n\r\n"
           "\r\n2\r\n00:00:03.5 --> 00:00:04,000\r\n<b></b>\r\nlast\r\n")
    assert parse_srt(srt) == parse_subtitles(srt) == [
        Cue(1.0, 2.0, "Hello there {braces} &amp; <hi>"), Cue(3.5, 4.0, "last")]
    with pytest.raises(SubtitleError, match="WebVTT"):
        parse_srt(OVERLAP_VTT)
    with pytest.raises(SubtitleError, match="without a timing line"):
        parse_subtitles("just some text\n")


def test_video_combine_reads_webvtt_by_its_header(spinbot_dirs):
    path, report = combine(images=torch.full((30, 32, 48, 3), 0.5), subtitles=FULL_VTT)
    # the cue at 1 h and the one at 5 s lie after the 3 s video's end
    assert rounded(probe(path).subtitles) == [(1.0, 2.5, "Hello & welcome\nto the show <3\u00a0!")]
    assert "2 cues after the video's end (3.000s) dropped" in report


def test_no_break_space_keeps_words_together_when_wrapping():
    assert wrap_text("aaaa bbbb\u00a0cccc", 10) == ["aaaa", "bbbb\u00a0cccc"]
    assert wrap_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
