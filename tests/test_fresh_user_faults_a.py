"""Faults a fresh user found (issue 14 hardening follow-up, part a): a same-size damaged chunk in
the video store, SRT cues without blank lines between them, zero-length cues, emoji and CJK
burned in as empty boxes, and NaN/infinite fps (and other FLOAT inputs) slipping past `<= 0`
checks. Each quoted input of the report is a test here; neighbours of the same kind too."""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch
from PIL import ImageFont

from spinbot.nodes.media import MediaError
from spinbot.nodes.video import store
from spinbot.nodes.video.nodes_video import (SpinBotImagesToVideo, SpinBotVideoCombine,
                                             SpinBotVideoToImages)
from spinbot.nodes.video.subtitles import (Cue, SubtitleError, parse_srt, parse_subtitles,
                                           parse_vtt)
from tests.media import tone_audio
from tests.mp4probe import probe

NAN, INF = float("nan"), float("inf")
COMBINE = dict(filename_prefix="SpinBot/fault", crf=23, preset="ultrafast",
               audio_bitrate="128k", length_policy="pad video with last frame",
               normalize_loudness=False, loudness_lufs=-14.0)


def combine(**kw):
    return SpinBotVideoCombine().combine(**{**COMBINE, **kw})


def frames(n=20, h=24, w=20, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def overwrite(path, data, at=0):
    """Overwrite bytes in place: the file keeps its size, as after a bad sector or stray write."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)
    assert os.path.getsize(path) == size


def other_header(path, shape, dtype="<u1"):
    """A valid .npy header of the same length describing another array (same file size)."""
    with open(path, "rb") as f:
        raw = f.read(256)
    length = int.from_bytes(raw[8:10], "little")
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    return raw[:10] + text.ljust(length - 1).encode("latin1") + b"\n"


# --- 1. store: a damaged chunk of the same size --------------------------------------------

@pytest.mark.parametrize("damage", ["first 14 bytes", "header of another shape",
                                    "fortran order", "audio header"])
def test_same_size_damage_is_found_when_loaded_and_the_video_is_rebuilt(damage, caplog,
                                                                         monkeypatch):
    images = frames()
    audio = tone_audio(0.8, rate=16000)
    monkeypatch.setattr(store, "CHUNK_BYTES", 8 * 24 * 20 * 3)  # three chunks
    (video,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    folder = os.path.dirname(video.chunks[0].path)
    first = os.path.join(folder, "chunk_000000.npy")
    del video
    if damage == "first 14 bytes":  # what the user did
        overwrite(first, b"\x00" * 14)
    elif damage == "header of another shape":  # numpy would read it, as the wrong frames
        overwrite(first, other_header(first, (8, 20, 24, 3)))
    elif damage == "fortran order":
        header = other_header(first, (8, 24, 20, 3)).replace(b"False", b"True ")
        overwrite(first, header)
    elif damage == "audio header":
        overwrite(os.path.join(folder, "audio.npy"), b"\x00" * 14)
    caplog.set_level("WARNING", "spinbot.video")
    (again,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    assert "is damaged" in caplog.text
    got, got_audio, fps, count = SpinBotVideoToImages().convert(again, 0, 0)
    assert count == 20 and fps == 25.0
    assert torch.allclose(got, images, atol=0.5 / 255 + 1e-6)
    assert torch.equal(got_audio["waveform"][..., :12800], audio["waveform"])
    (third,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    assert third.chunks == again.chunks  # rebuilt once, then reused


def test_damaged_chunk_under_a_live_handle_removes_the_folder_and_says_so(caplog):
    images = frames(6)
    (video,) = SpinBotImagesToVideo().convert(images, 25.0)
    folder = os.path.dirname(video.chunks[0].path)
    overwrite(video.chunks[0].path, b"\x00" * 14)
    caplog.set_level("WARNING", "spinbot.video")
    with pytest.raises(MediaError) as err:
        SpinBotVideoToImages().convert(video, 0, 0)
    message = str(err.value)
    assert message.startswith("the frames of this video are damaged in the temp folder")
    assert "no valid .npy header" in message and "removed" in message
    assert "queue the workflow again" in message
    assert "pickle" not in message and "unsafely" not in message
    assert not os.path.exists(folder) and caplog.text.count("is damaged") == 1
    for read in (video.read, lambda: list(video.iter_chunks())):  # the handle lives on
        with pytest.raises(MediaError, match="gone from the temp folder"):
            read()
    # the next run rebuilds it
    (again,) = SpinBotImagesToVideo().convert(images, 25.0)
    assert os.path.dirname(again.chunks[0].path) == folder
    assert torch.allclose(torch.from_numpy(again.read()).float() / 255, images,
                          atol=0.5 / 255 + 1e-6)


# --- 2. SRT cues without a blank line between them -----------------------------------------

def test_srt_timing_line_starts_a_new_cue_without_a_blank_line():
    text = "1\n00:00:00,500 --> 00:00:01,000\nA\n2\n00:00:01,000 --> 00:00:02,000\nB\n"
    assert parse_srt(text) == [Cue(0.5, 1.0, "A"), Cue(1.0, 2.0, "B")]
    assert parse_subtitles(text) == parse_srt(text)


def test_srt_cues_without_blank_lines_or_ids_and_multi_line_text():
    text = ("00:00:00,000 --> 00:00:01,000\nline one\nline two\n"
            "00:00:01,000 --> 00:00:02,000\n3\n"  # a text line that is a number stays text
            "\n\n4\n00:00:02,000 --> 00:00:03,000\nC\n5\n00:00:03,000 --> 00:00:04,000\nD")
    assert parse_srt(text) == [Cue(0.0, 1.0, "line one\nline two"), Cue(1.0, 2.0, "3"),
                               Cue(2.0, 3.0, "C"), Cue(3.0, 4.0, "D")]


# --- 3. zero-length cues --------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "1\n00:00:01,000 --> 00:00:01,000\ngone\n\n2\n00:00:01,000 --> 00:00:02,000\nkept\n",
    "WEBVTT\n\n00:01.000 --> 00:01.000\ngone\n\n00:01.000 --> 00:02.000\nkept\n",
])
def test_zero_length_cues_are_dropped_with_a_note(text):
    dropped = []
    assert parse_subtitles(text, dropped) == [Cue(1.0, 2.0, "kept")]
    assert len(dropped) == 1
    assert re.fullmatch(r"zero-length cue '(00:)?00:01[,.]000 --> (00:)?00:01[,.]000' dropped",
                        dropped[0])
    parse = parse_vtt if text.startswith("WEBVTT") else parse_srt
    assert parse(text) == [Cue(1.0, 2.0, "kept")]


def test_zero_length_cue_does_not_fail_the_render_and_is_reported():
    srt = ("1\n00:00:01,000 --> 00:00:01,000\ngone\n\n"
           "2\n00:00:00,000 --> 00:00:01,000\nkept\n")
    path, report = combine(images=frames(20, 32, 48), fps=10.0, subtitles=srt)["result"]
    assert "zero-length cue '00:00:01,000 --> 00:00:01,000' dropped" in report
    assert [text for _s, _e, text in probe(path).subtitles] == ["kept"]


@pytest.mark.parametrize("text", ["00:00:02,000 --> 00:00:01,000\nx\n",
                                  "WEBVTT\n\n00:02.000 --> 00:01.000\nx\n"])
def test_an_end_before_the_start_is_still_an_error(text):
    with pytest.raises(SubtitleError, match="subtitle ends before it starts"):
        parse_subtitles(text)


# --- 4. burn-in: emoji and characters the font cannot draw ---------------------------------

USER_TEXT = "Hi 👋 there 👨‍👩‍👧 Grüße 你好 مرحبا"


def _dejavu_bold():
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", 12).path
    except OSError:
        pytest.skip("DejaVu Sans Bold is not installed")


def test_burn_in_leaves_out_emoji_and_glyphs_the_font_lacks():
    from spinbot.nodes.script.burn_in import burn_subtitles

    font = _dejavu_bold()  # has Latin, umlauts and Arabic; no CJK, no emoji
    src = np.random.default_rng(1).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
    out = burn_subtitles(src, 0, 10.0, [Cue(0.0, 1.0, USER_TEXT)], font_path=font)
    expected = burn_subtitles(src, 0, 10.0, [Cue(0.0, 1.0, "Hi there Grüße مرحبا")],
                              font_path=font)
    assert (out != src).any()
    assert np.array_equal(out, expected)  # the same pixels: nothing drawn for the rest

    from spinbot.nodes.script.burn_in import burn_in_notes

    notes = burn_in_notes([Cue(0.0, 1.0, USER_TEXT)], 240, font_path=font)
    assert any("emoji" in n for n in notes)
    assert ("burn-in: the font has no glyph for '你', '好'; left out of the burned-in text "
            "(install a CJK font") in "\n".join(notes)
    assert burn_in_notes([Cue(0.0, 1.0, "Grüße مرحبا")], 240, font_path=font) == []


def test_video_combine_reports_what_burn_in_left_out():
    from spinbot.nodes.script import burn_in

    for name in burn_in._CJK_FONTS:
        try:
            ImageFont.truetype(name, 12)
        except OSError:
            continue
        pytest.skip(f"a CJK font ({name}) is installed: 你好 can be drawn here")
    srt = f"1\n00:00:00,000 --> 00:00:01,000\n{USER_TEXT}\n"
    path, report = combine(images=frames(10, 240, 320), fps=10.0, subtitles=srt,
                           burn_in_subtitles=True)["result"]
    assert "burn-in: emoji are left out" in report
    assert "burn-in: the font has no glyph for '你', '好'" in report
    assert probe(path).subtitles[0][2] == USER_TEXT  # the soft track keeps the full text


# --- 5. NaN and infinite fps and other FLOAT inputs ----------------------------------------

@pytest.mark.parametrize("fps", [NAN, INF, -INF])
def test_video_combine_refuses_non_finite_fps(fps, spinbot_dirs):
    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        combine(images=frames(4), fps=fps)
    assert not any(files for _d, _s, files in os.walk(spinbot_dirs["output"]))


@pytest.mark.parametrize("fps", [NAN, INF])
def test_combine_to_mp4_and_fps_fraction_refuse_non_finite_fps(fps):
    from spinbot.nodes.video.combine import combine_to_mp4
    from spinbot.nodes.video.encode import fps_fraction, plan_lengths

    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        combine_to_mp4(images=frames(4), fps=fps)
    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        fps_fraction(fps)
    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        plan_lengths(4, fps, 16000, 16000, "pad video with last frame")


def test_video_combine_refuses_non_finite_loudness_target():
    with pytest.raises(MediaError, match="loudness_lufs must be a finite number"):
        combine(images=frames(4), fps=10.0, audio=tone_audio(0.4),
                normalize_loudness=True, loudness_lufs=NAN)


@pytest.mark.parametrize("fps", [NAN, INF])
def test_store_and_burn_in_refuse_non_finite_fps(fps):
    from spinbot.nodes.script.burn_in import BurnInError, burn_subtitles

    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        SpinBotImagesToVideo().convert(frames(4), fps)
    assert not os.listdir(store.video_root())  # no partial folder left behind
    with pytest.raises(BurnInError, match="fps must be a positive finite number"):
        burn_subtitles(np.zeros((2, 16, 16, 3), np.uint8), 0, fps, [Cue(0, 1, "x")])


def test_other_stages_refuse_nan_floats():
    from spinbot.nodes.lipsync.engine import FrameSource
    from spinbot.nodes.lipsync.paste import MouthRegion, mouth_mask
    from spinbot.nodes.motion.generate import frames_for
    from spinbot.nodes.script.segments import (SegmentError, estimate_seconds, make_segments,
                                               split_long)

    with pytest.raises(MediaError, match="fps must be a positive finite number"):
        FrameSource(images=frames(2), fps=NAN)
    with pytest.raises(MediaError, match="duration_seconds must be a finite number"):
        frames_for(NAN, 8.0, 14)
    for call in (lambda: estimate_seconds("Hello there.", NAN),
                 lambda: make_segments("Hello there.", words_per_second=INF)):
        with pytest.raises(SegmentError, match="words_per_second must be a positive finite"):
            call()
    with pytest.raises(SegmentError, match="max_segment_seconds must be a number"):
        split_long("One two three four five six, seven eight nine ten.", NAN)
    with pytest.raises(ValueError, match="mouth_feather must be a number"):
        mouth_mask(32, 32, MouthRegion(feather=NAN))
    assert math.isfinite(float(mouth_mask(32, 32, MouthRegion(feather=0.5)).sum()))


def test_upscale_refuses_a_nan_target_scale():
    from types import SimpleNamespace

    from spinbot.nodes.upscale.engine import UpscaleSettings, output_size
    from spinbot.nodes.upscale.model import UpscaleModelError

    x4 = SimpleNamespace(scale=4, name="x4")
    assert output_size(x4, UpscaleSettings(target_scale=2.0), 10, 12) == (20, 24)
    with pytest.raises(UpscaleModelError, match="target scale must be a finite number"):
        output_size(x4, UpscaleSettings(target_scale=NAN), 10, 12)
