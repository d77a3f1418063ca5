"""SpinBot Title Card: a card video of the asked size, length and background, its text inside
the reported box and fading as asked, segments carried, bad inputs named."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from spinbot.nodes.overlay import nodes_overlay
from spinbot.nodes.overlay.nodes_overlay import SpinBotTitleCard
from spinbot.nodes.overlay.text import OverlayError
from spinbot.nodes.script.segments import Segment

W, H, FPS = 160, 90, 10.0
BG = (16, 16, 24)


def card(**over):
    base = dict(text="Be the light", width=W, height=H, fps=FPS, duration_seconds=3.0,
                background_color="#101018", font="default", font_size=0.15, wrap_width=0.8,
                position="center", color="white", outline=0.0, shadow=0.0,
                fade_in_seconds=0.0, fade_out_seconds=0.0, start_seconds=0.0, end_seconds=0.0,
                timing="whole video")
    base.update(over)
    return SpinBotTitleCard().card(**base)


def box_of(report):
    m = re.search(r"box x (\d+)-(\d+), y (\d+)-(\d+)", report)
    assert m, report
    x0, x1, y0, y1 = map(int, m.groups())
    return x0, y0, x1 + 1, y1 + 1


def test_card_has_the_asked_size_length_and_colour_with_text_only_in_its_box(spinbot_dirs):
    video, report = card(text="Be the light\nyou seek", outline=0.08, shadow=0.08,
                         fade_in_seconds=0.5, fade_out_seconds=0.5)
    frames = video.read()
    assert frames.shape == (30, H, W, 3) and video.fps == FPS and video.audio is None
    x0, y0, x1, y1 = box_of(report)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert (frames[:, outside] == BG).all()
    assert (frames[15, y0:y1, x0:x1] != BG).any(axis=-1).any()
    # fade: 5 frames in, 5 out, measured at frame centres; the brightest pixel follows it
    level = frames.reshape(30, -1).max(axis=1).astype(float)
    ramp = [0.1, 0.3, 0.5, 0.7, 0.9]
    expected = np.array(ramp + [1.0] * 20 + ramp[::-1])
    assert np.allclose((level - 24) / (255 - 24), expected, atol=2 / 231), level.tolist()
    assert "2 line(s) drawn \"Be the light | you seek\"" in report and "14 px" in report
    assert "30 frames 160x90 @ 10 fps" in report and "glyphs left out: none" in report


def test_background_image_covers_the_card_centre_cropped(spinbot_dirs):
    # a 2:1 image (red | green | blue thirds) on a 16:9 card: scaled to the card's height,
    # the sides are cropped evenly, so the middle third stays in the middle
    img = torch.zeros(1, 40, 80, 3)
    img[:, :, :27, 0] = 1.0
    img[:, :, 27:53, 1] = 1.0
    img[:, :, 53:, 2] = 1.0
    video, report = card(text="", background=img, duration_seconds=0.5)
    frame = video.read()[0]
    assert frame.shape == (H, W, 3)
    assert (frame[:, W // 2, 1] > 250).all() and (frame[:, W // 2, [0, 2]] < 5).all()
    assert frame[H // 2, 0, 0] > 250 and frame[H // 2, W - 1, 2] > 250
    assert "a card without text" in report
    # width/height 0: the image's own size
    video, _ = card(background=img, width=0, height=0, duration_seconds=0.5)
    assert (video.width, video.height) == (80, 40)


def test_per_segment_card_lasts_until_the_last_segment_and_carries_them(spinbot_dirs):
    segs = (Segment(0, "one", 0.0, 1.0, False), Segment(1, "two", 1.5, 2.5, False))
    video, report = card(text="One\n\nTwo", timing="per segment", segments=segs,
                         duration_seconds=0.0)
    frames = video.read()
    assert len(frames) == 25
    text_on = (frames != BG).any(axis=(1, 2, 3))
    assert np.flatnonzero(text_on).tolist() == list(range(0, 10)) + list(range(15, 25))
    assert not np.array_equal(frames[5], frames[20])
    assert [s["text"] for s in video.segments] == ["one", "two"]
    assert "frames 0-9" in report and "frames 15-24" in report


def test_a_rerun_reuses_the_stored_card(spinbot_dirs, monkeypatch):
    first, _ = card(text="Again")

    def no_work(*_a, **_k):
        raise AssertionError("the card was drawn again")

    monkeypatch.setattr(nodes_overlay, "overlay_frames", no_work)
    second, _ = card(text="Again")
    assert [c.path for c in second.chunks] == [c.path for c in first.chunks]
    with pytest.raises(AssertionError, match="drawn again"):
        card(text="Another")


def test_missing_glyphs_on_a_card_are_reported_not_drawn(spinbot_dirs):
    with_cjk, report = card(text="Hello 世界 world")
    plain, _ = card(text="Hello world")
    assert np.array_equal(with_cjk.read(), plain.read())
    assert "'世' (U+4E16), '界' (U+754C)" in report


def test_bad_card_inputs_give_clear_errors(spinbot_dirs):
    with pytest.raises(OverlayError, match="connect 'background' or give a size"):
        card(width=0)
    with pytest.raises(OverlayError, match="duration_seconds 0 means"):
        card(duration_seconds=0.0)
    with pytest.raises(OverlayError, match="the card has no frames"):
        card(duration_seconds=0.01)
    with pytest.raises(OverlayError, match="background_color: 'nope' is not a colour"):
        card(background_color="nope")
    with pytest.raises(OverlayError, match=r"font_size must be in \(0, 1\]"):
        card(font_size=0.0)
    with pytest.raises(OverlayError, match="fps must be a positive number"):
        card(fps=float("inf"))
