"""SpinBot Text Overlay: text only inside its box and its frames, fades as asked, wrapping to the
width, glyphs the font lacks reported and never drawn, chunks without text referenced."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from spinbot.nodes import runtime
from spinbot.nodes.overlay import text as ov
from spinbot.nodes.overlay import nodes_overlay
from spinbot.nodes.overlay.nodes_overlay import SpinBotTextOverlay
from spinbot.nodes.overlay.text import OverlayError, TextStyle, render_text
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.video import store
from spinbot.nodes.video.store import VideoWriter

FPS = 10.0
H, W = 90, 160
SEGMENTS = [{"index": 0, "text": "a", "start": 0.0, "end": 1.5, "estimated": False},
            {"index": 1, "text": "b", "start": 2.0, "end": 3.5, "estimated": False}]


def noise(n=40, h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def stored(frames, key="src", chunk=8, segments=SEGMENTS, audio=None):
    with VideoWriter(key, FPS, chunk_frames=chunk) as w:
        w.write(frames)
        return w.finish(audio=audio, segments=segments)


def options(**over):
    """The node's inputs with the defaults a test starts from (no fades, whole video)."""
    base = dict(text="Hello world", font="default", font_size=0.15, wrap_width=0.8,
                position="center", color="#ffffff", outline=0.0, shadow=0.0,
                fade_in_seconds=0.0, fade_out_seconds=0.0, start_seconds=0.0, end_seconds=0.0,
                timing="whole video")
    base.update(over)
    return base


def run(video, **over):
    return SpinBotTextOverlay().overlay(video, **options(**over))


def box_of(report, k=1):
    m = re.search(rf"text {k}: .*?box x (\d+)-(\d+), y (\d+)-(\d+)", report)
    assert m, report
    x0, x1, y0, y1 = map(int, m.groups())
    return x0, y0, x1 + 1, y1 + 1


def changed(a, b):
    return (a != b).any(axis=-1)


@pytest.fixture
def video(spinbot_dirs):
    return stored(noise())


def test_text_pixels_lie_inside_the_reported_box_and_frames(video):
    out, report = run(video, text="Stay curious,\nkeep going", start_seconds=1.0,
                      end_seconds=2.0, outline=0.08, shadow=0.08, fade_in_seconds=0.3)
    src, got = video.read(), out.read()
    assert got.shape == src.shape and out.fps == FPS
    x0, y0, x1, y1 = box_of(report)
    touched = changed(got, src)
    inside = np.zeros((H, W), bool)
    inside[y0:y1, x0:x1] = True
    assert touched.any()
    assert not (touched & ~inside).any()  # outside the box: bit-identical
    frames = touched.any(axis=(1, 2))
    assert np.flatnonzero(frames).tolist() == list(range(10, 20))
    # the box is tight: text reaches each of its edges on a fully faded-in frame
    full = touched[15]
    assert full[y0].any() and full[y1 - 1].any() and full[:, x0].any() and full[:, x1 - 1].any()
    assert "2 line(s) drawn \"Stay curious, | keep going\"" in report
    assert "DejaVuSans-Bold.ttf (bundled default)" in report and "14 px" in report
    assert "frames 10-19 (1.00-2.00 s)" in report and "glyphs left out: none" in report


def test_start_and_end_hold_on_exact_frames(video):
    for start, end, first, last in ((0.0, 0.0, 0, 40), (1.04, 2.26, 10, 23), (3.3, 0.0, 33, 40)):
        out, _ = run(video, start_seconds=start, end_seconds=end)
        frames = changed(out.read(), video.read()).any(axis=(1, 2))
        assert np.flatnonzero(frames).tolist() == list(range(first, last)), (start, end)


def test_fade_in_and_out_follow_the_asked_linear_ramp(spinbot_dirs):
    black = stored(np.zeros((40, H, W, 3), np.uint8), key="black")
    out, _ = run(black, text="HI", font_size=0.3, start_seconds=1.0, end_seconds=3.0,
                 fade_in_seconds=0.5, fade_out_seconds=0.5)
    got = out.read()
    # White text with no outline on black: the brightest pixel is the text's opacity x 255.
    # Frame k is measured at its centre: 5 frames of fade in, 5 of fade out, mirror images.
    ramp = [0.1, 0.3, 0.5, 0.7, 0.9]
    expected = [0.0] * 10 + ramp + [1.0] * 10 + ramp[::-1] + [0.0] * 10
    measured = got.reshape(40, -1).max(axis=1) / 255.0
    assert np.allclose(measured, expected, atol=2 / 255), measured.round(3).tolist()


def test_per_segment_blocks_appear_only_in_their_segment(video):
    text = "First block\n\n  \nSecond\nblock"
    out, report = run(video, text=text, timing="per segment")
    got, src = out.read(), video.read()
    one, _ = run(video, text="First block")
    two, _ = run(video, text="Second\nblock")
    # segment 1: frames 0-14, segment 2: frames 20-34; the gap and the tail untouched
    assert np.array_equal(got[:15], one.read()[:15])
    assert np.array_equal(got[20:35], two.read()[20:35])
    assert np.array_equal(got[15:20], src[15:20]) and np.array_equal(got[35:], src[35:])
    assert not np.array_equal(got[0], got[20])
    assert "frames 0-14 (0.00-1.50 s)" in report and "frames 20-34 (2.00-3.50 s)" in report
    # segments given on the input take precedence over the video's own
    segs = (Segment(0, "x", 1.0, 2.0), Segment(1, "y", 3.0, 4.0))
    out, report = run(video, text=text, timing="per segment", segments=segs)
    frames = changed(out.read(), src).any(axis=(1, 2))
    assert np.flatnonzero(frames).tolist() == list(range(10, 20)) + list(range(30, 40))
    # one block for two segments: said in the report
    _, report = run(video, text="Only one", timing="per segment")
    assert "1 text block(s) for 2 segment(s)" in report


@pytest.mark.parametrize("outline,shadow", [(0.0, 0.0), (0.12, 0.0), (0.0, 0.15), (0.1, 0.1)])
def test_wrapping_keeps_every_line_inside_the_wrap_width(outline, shadow):
    width, wrap = 320, 0.5
    style = TextStyle(font_size=0.12, wrap_width=wrap, outline=outline, shadow=shadow)
    r = render_text("The quick brown fox jumps over the lazy dog, twice and again", width, 180,
                    style, ov.BUNDLED_FONT)
    assert len(r.lines) >= 3
    x0, _y0, x1, _y1 = r.box
    lo, hi = (width - width * wrap) / 2, (width + width * wrap) / 2
    assert lo <= x0 and x1 <= hi, (r.box, lo, hi)
    assert max(r.line_widths) <= width * wrap
    # greedy: the first word of the next line would not have fitted (the layout leaves room
    # for the outline and the shadow on both sides)
    font = ov.load_font(ov.BUNDLED_FONT, r.size_px)

    def ink(s):
        left, _t, right, _b = font.getbbox(s)
        return right - left

    stroke = round(r.size_px * outline)
    offset, _blur, reach = ov._shadow_geometry(r.size_px, style)
    avail = round(width * wrap) - 2 * (stroke + (max(0, reach - stroke) if offset else 0))
    for k, line in enumerate(r.lines):
        assert ink(line) <= avail  # measured by Pillow, not taken from the layout
        if k + 1 < len(r.lines):
            assert ink(line + " " + r.lines[k + 1].split()[0]) > avail


def test_cjk_text_without_spaces_wraps_between_characters():
    text = "天下大事必作于细，天下难事必作于易。"
    lines = ov.wrap_lines(text + "\nnext line", 6, measure=len)
    assert lines[:4] == ["天下大事必作", "于细，天下难", "事必作于易。", "next"]
    assert all(len(line) <= 6 for line in lines)


def test_a_glyph_missing_from_the_font_is_reported_and_never_drawn_as_a_box(video):
    with_cjk, report = run(video, text="AB字C")
    plain, _ = run(video, text="ABC")
    assert np.array_equal(with_cjk.read(), plain.read())  # no box where 字 would be
    assert "has no glyph for '字' (U+5B57)" in report
    assert "DejaVuSans-Bold.ttf (bundled default)" in report and "CJK font" in report
    # only characters the font cannot draw are left out: umlauts and Cyrillic stay
    r = render_text("Grüße Привет 字", W, H, TextStyle(font_size=0.1, wrap_width=1.0),
                    ov.BUNDLED_FONT)
    assert r.lines == ("Grüße Привет",) and r.missing == ("字",)
    # emoji are removed as elsewhere in the pack and reported
    # ("word😀word" keeps the words apart, as text_filters.remove_emoji does for the voice)
    emoji, report = run(video, text="AB😀C")
    spaced, _ = run(video, text="AB C")
    assert np.array_equal(emoji.read(), spaced.read()) and "emoji are left out" in report


def test_text_made_only_of_missing_glyphs_draws_nothing_and_says_so(video):
    out, report = run(video, text="字字")
    assert out is video
    assert "U+5B57" in report and "nothing drawable" in report


def test_outline_and_shadow_change_pixels_only_around_the_text(spinbot_dirs):
    # a coloured background: no blend of the grey text, outline and shadow can equal it
    black = stored(np.broadcast_to(np.array([40, 90, 200], np.uint8), (4, H, W, 3)), key="blue")
    plain, _ = run(black, text="Hi there")
    base = changed(plain.read()[0], black.read()[0])
    size = 14  # round(0.15 x 90)
    for outline, shadow in ((0.1, 0.0), (0.0, 0.15), (0.1, 0.1)):
        out, _ = run(black, text="Hi there", outline=outline, shadow=shadow)
        mask = changed(out.read()[0], black.read()[0])
        assert (mask & base).sum() == base.sum()  # the letters are still there
        extra = np.argwhere(mask & ~base)
        assert len(extra), (outline, shadow)
        ink = np.argwhere(base)
        dist = np.abs(extra[:, None, :] - ink[None, :, :]).max(axis=-1).min(axis=1)
        # outline: its width; shadow: its offset plus a blur of a third of it (3 sigma);
        # one more pixel of anti-aliasing
        limit = round(size * outline) + 2 * round(size * shadow) + 1
        assert dist.max() <= limit, (outline, shadow, dist.max(), limit)


def test_a_font_from_the_fonts_folder_is_offered_used_and_reported(video, spinbot_dirs):
    folder = spinbot_dirs["models"] / "fonts" / "brand"
    folder.mkdir(parents=True)
    shutil.copy(ov.BUNDLED_FONT, folder / "Brand.ttf")
    (folder / "notes.txt").write_text("not a font")
    choices = SpinBotTextOverlay.INPUT_TYPES()["required"]["font"][0]
    assert choices == ["default", "brand/Brand.ttf"]
    out, report = run(video, font="brand/Brand.ttf")
    default, _ = run(video)
    assert np.array_equal(out.read(), default.read())  # the same font file draws the same
    assert "font Brand.ttf, 14 px" in report
    assert SpinBotTextOverlay.IS_CHANGED(font="brand/Brand.ttf").startswith(str(folder))


def test_bad_inputs_give_clear_errors(video, spinbot_dirs):
    fonts = spinbot_dirs["models"] / "fonts"
    fonts.mkdir()
    (fonts / "broken.ttf").write_bytes(b"this is not a font" * 10)
    with pytest.raises(OverlayError, match=r"font file 'broken.ttf' .*cannot be loaded as a font"):
        run(video, font="broken.ttf")
    with pytest.raises(OverlayError, match=r"font 'gone.ttf' is not in the fonts folder"):
        run(video, font="gone.ttf")
    with pytest.raises(OverlayError, match=r"font_size must be in \(0, 1\]"):
        run(video, font_size=0.0)
    with pytest.raises(OverlayError, match=r"wrap_width must be in"):
        run(video, wrap_width=-0.1)
    with pytest.raises(OverlayError, match=r"color: 'not-a-colour' is not a colour"):
        run(video, color="not-a-colour")
    with pytest.raises(OverlayError, match=r"end_seconds \(1\) must be after start_seconds \(2\)"):
        run(video, start_seconds=2.0, end_seconds=1.0)
    with pytest.raises(OverlayError, match=r"fade_in_seconds must be a finite number"):
        run(video, fade_in_seconds=float("nan"))
    with pytest.raises(OverlayError, match=r"position must be one of"):
        run(video, position="left")
    bare = stored(noise(8), key="bare", segments=None)
    with pytest.raises(OverlayError, match=r"'per segment' needs segments"):
        run(bare, timing="per segment")


def test_empty_text_passes_the_video_through_with_a_note(video):
    out, report = run(video, text="  \n ")
    assert out is video and "the text is empty" in report
    out, report = run(video, start_seconds=9.0)  # after the end of the 4 s video
    assert out is video and "is not shown" in report


def test_untouched_chunks_are_referenced_and_audio_and_segments_kept(spinbot_dirs):
    audio = {"waveform": __import__("torch").zeros(1, 1, 16000), "sample_rate": 16000}
    video = stored(noise(), key="withaudio", audio=audio)
    out, report = run(video, start_seconds=1.0, end_seconds=1.5)  # frames 10-14: chunk 1
    src_paths = [c.path for c in video.chunks]
    out_paths = [c.path for c in out.chunks]
    assert out.frame_count == 40 and len(out_paths) == 5
    assert out_paths[0] == src_paths[0] and out_paths[2:] == src_paths[2:]
    assert out_paths[1] != src_paths[1]
    assert out.segments == video.segments and out.audio["sample_rate"] == 16000
    assert "8 drawn into new chunks, 32 referenced unchanged" in report
    assert np.array_equal(out.read()[16:], video.read()[16:])


def test_a_rerun_reuses_the_stored_result_and_is_deterministic(video, monkeypatch):
    first, _ = run(video, text="Same words", fade_in_seconds=0.4, start_seconds=0.5)
    pixels = first.read()
    style = TextStyle(font_size=0.15, outline=0.1, shadow=0.1)
    a = render_text("Same words", W, H, style, ov.BUNDLED_FONT)
    render_text.cache_clear()
    b = render_text("Same words", W, H, style, ov.BUNDLED_FONT)
    assert a is not b and a.box == b.box
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.alpha, b.alpha)

    def no_work(*_a, **_k):
        raise AssertionError("a re-run with the same inputs drew frames again")

    monkeypatch.setattr(nodes_overlay, "overlay_frames", no_work)
    second, _ = run(video, text="Same words", fade_in_seconds=0.4, start_seconds=0.5)
    assert [c.path for c in second.chunks] == [c.path for c in first.chunks]
    assert np.array_equal(second.read(), pixels)
    # another text is new work
    with pytest.raises(AssertionError, match="drew frames again"):
        run(video, text="Other words")


def test_cancel_leaves_nothing_half_written(video):
    runtime.request_interrupt()
    try:
        with pytest.raises(runtime.Interrupted):
            run(video, text="Cancelled")
    finally:
        runtime.request_interrupt(False)
    root = store.video_root()
    assert not [d for d in os.listdir(root) if ".partial" in d]
    out, _ = run(video, text="Cancelled")  # and the next run completes
    assert out.frame_count == 40
