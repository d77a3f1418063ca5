"""Burned-in subtitles: drawn only where and when a cue is active, the same however chunked."""
from __future__ import annotations

import numpy as np
import pytest

from spinbot.nodes.script.burn_in import BurnInError, active_text, burn_subtitles
from spinbot.nodes.video.subtitles import Cue
from tests.media import astronaut

FPS = 10.0
CUES = [Cue(0.5, 1.0, "Hello world!"), Cue(1.5, 2.2, "Grüße aus Köln, zweite Zeile")]


def frames(n=30, h=180, w=320):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def changed(a, b):
    return (a != b).any(axis=-1)  # [n,H,W] mask of touched pixels


def test_pixels_change_only_while_a_cue_is_active():
    src = frames()
    out = burn_subtitles(src, 0, FPS, CUES)
    touched = changed(out, src).any(axis=(1, 2))
    active = np.array([bool(active_text(CUES, i / FPS)) for i in range(len(src))])
    assert np.array_equal(touched, active)
    assert active.sum() == 5 + 7
    assert np.array_equal(src, frames())  # the input is not modified


def test_text_is_bottom_centred_and_inside_the_frame():
    src = frames(h=180, w=320)
    mask = changed(burn_subtitles(src, 0, FPS, CUES), src)[6]
    rows, cols = np.nonzero(mask)
    assert rows.min() > 180 * 0.6 and rows.max() < 180 - 180 * 0.06 + 2
    assert abs((cols.min() + cols.max()) / 2 - 160) <= 3
    assert cols.min() > 0 and cols.max() < 319


def test_long_text_wraps_to_the_frame_width():
    src = np.zeros((1, 240, 200, 3), np.uint8)
    short = changed(burn_subtitles(src, 0, 1.0, [Cue(0, 1, "Short")]), src)[0]
    text = "A much longer subtitle that cannot fit on one line at all"
    long = changed(burn_subtitles(src, 0, 1.0, [Cue(0, 1, text)]), src)[0]
    height = lambda m: np.ptp(np.nonzero(m.any(axis=1))[0])  # noqa: E731
    width = lambda m: np.ptp(np.nonzero(m.any(axis=0))[0])  # noqa: E731
    assert width(long) < 200 and height(long) > 2 * height(short)


def test_chunked_calls_match_one_call():
    src = frames(30)
    whole = burn_subtitles(src, 0, FPS, CUES)
    parts = [burn_subtitles(src[a:b], a, FPS, CUES) for a, b in ((0, 7), (7, 16), (16, 30))]
    assert np.array_equal(np.concatenate(parts), whole)
    misplaced = burn_subtitles(src[15:25], 0, FPS, CUES)  # first_frame_index sets the time
    assert not np.array_equal(misplaced, whole[15:25])


def test_each_frame_of_a_cue_gets_the_same_overlay_and_text_is_legible():
    face = np.repeat(astronaut(256)[None], 4, axis=0)
    out = burn_subtitles(face, 0, 2.0, [Cue(0.0, 2.0, "Hi there")], outline=0.12)
    assert np.array_equal(out[0], out[3])
    mask = changed(out, face)[0]
    drawn = out[0][mask]
    assert (drawn.min(axis=1) > 230).sum() > 20  # white letters
    assert (drawn.max(axis=1) < 25).sum() > 20  # black outline


def test_a_cue_overlapping_the_next_stacks_its_text():
    assert active_text([Cue(0, 2, "a"), Cue(1, 3, "b")], 1.5) == "a\nb"
    assert active_text([Cue(0, 2, "a")], 2.0) == ""  # end is exclusive


def test_bad_input_is_refused():
    with pytest.raises(BurnInError, match="uint8"):
        burn_subtitles(np.zeros((2, 8, 8, 3), np.float32), 0, 25.0, CUES)
    with pytest.raises(BurnInError, match="fps"):
        burn_subtitles(frames(2), 0, 0.0, CUES)
    with pytest.raises(BurnInError, match="font"):
        burn_subtitles(frames(2), 0, 1.0, [Cue(0, 5, "x")], font_path="/nonexistent/font.ttf")


def test_no_cues_or_no_frames_is_a_plain_copy():
    src = frames(3)
    out = burn_subtitles(src, 0, FPS, [])
    assert np.array_equal(out, src) and out is not src
    assert burn_subtitles(src[:0], 0, FPS, CUES).shape == (0, 180, 320, 3)
