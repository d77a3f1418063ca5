"""SpinBot Transitions: crossfade / fade through black / cut at segment boundaries, keeping the
frame count, fps, audio and segments, rewriting only the stored chunks near a boundary."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError
from spinbot.nodes.scene import transitions
from spinbot.nodes.scene.nodes_scene import SpinBotCameraMotion, SpinBotTransitions
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.video import store
from tests.media import tone_audio

FPS = 25.0
LEVELS = (40, 200, 90, 160)  # scene k's frames are this grey (plus noise in `scenes`)


def seg_dicts(*bounds: float) -> list[dict]:
    return [Segment(index=k, text=f"s{k}", start=a, end=b).to_dict()
            for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def scenes(bounds, fps=FPS, noise=0, chunk=8, audio=None, seed=0) -> store.SpinBotVideo:
    """A stored video of flat grey scenes (``LEVELS``) cut where the segments start, in chunks
    of ``chunk`` frames, with per-pixel noise of +-``noise`` so every frame's bytes differ."""
    total = round(bounds[-1] * fps)
    cuts = [0] + [round(b * fps) for b in bounds[1:-1]] + [total]
    rng = np.random.default_rng(seed)
    level = np.concatenate([np.full(b - a, LEVELS[k]) for k, (a, b) in
                            enumerate(zip(cuts, cuts[1:]))])
    frames = level[:, None, None, None] + rng.integers(-noise, noise + 1, (total, 18, 32, 3))
    with store.VideoWriter(f"scenes-{seed}-{noise}-{fps}", fps, chunk_frames=chunk) as w:
        w.write(frames.astype(np.uint8))
        return w.finish(audio=audio, segments=seg_dicts(*bounds))


def run(video, transition="crossfade", duration=0.5, segments=None):
    return SpinBotTransitions().transition(video, transition, duration, segments=segments)


def mean_levels(video) -> np.ndarray:
    return video.read().reshape(video.frame_count, -1).mean(axis=1)


def test_crossfade_keeps_length_clock_and_audio_and_blends_around_the_boundary():
    audio = tone_audio(4.0, rate=16000)
    src = scenes((0, 2.0, 4.0), noise=3, audio=audio)
    out, report = run(src, "crossfade", 0.48)  # 12 frames: 6 each side of frame 50
    assert (out.frame_count, out.fps, out.width, out.height) == (100, FPS, 32, 18)
    assert out.audio is src.audio and out.segments == src.segments
    a, b = src.read(), out.read()
    changed = [i for i in range(100) if not np.array_equal(a[i], b[i])]
    assert changed == list(range(44, 56)), report
    # Outside the window the bytes are the input's.
    assert np.array_equal(a[:44], b[:44]) and np.array_equal(a[56:], b[56:])
    # The blend weight climbs steadily from scene A's level to B's across the window.
    weight = (mean_levels(out)[43:57] - LEVELS[0]) / (LEVELS[1] - LEVELS[0])
    # (frame centres: weights 1/24, 3/24 .. 23/24 inside the window, 0 and 1 outside)
    assert (np.diff(weight) > 0.03).all() and weight[0] == pytest.approx(0, abs=0.02) \
        and weight[-1] == pytest.approx(1, abs=0.02)
    # At the boundary the two frames average exactly to the two sides' average.
    mid = (b[49].astype(float) + b[50]) / 2
    assert np.abs(mid - (a[49].astype(float) + a[50]) / 2).max() <= 1.0
    assert weight[49 - 43] == pytest.approx(0.5, abs=0.05)
    assert "boundaries at frames [50]" in report


def test_frames_far_from_boundaries_are_referenced_not_copied():
    src = scenes((0, 2.0, 4.0, 6.0), noise=2, chunk=8)
    out, report = run(src, "crossfade", 0.4)  # frames 45-54 and 95-104
    touched = {k for k, c in enumerate(src.chunks)
               if any(45 <= f < 55 or 95 <= f < 105 for f in range(8 * k, 8 * k + c.count))}
    assert touched == {5, 6, 11, 12, 13}
    for k, (before, after) in enumerate(zip(src.chunks, out.chunks)):
        assert (before == after) == (k not in touched), k
    assert [c.count for c in out.chunks] == [c.count for c in src.chunks]
    assert "5 of 19 stored chunks rewritten" in report
    assert np.array_equal(out.read(0, 45), src.read(0, 45))
    assert np.array_equal(out.read(105), src.read(105))


def test_fade_through_black_reaches_black_at_the_boundary():
    src = scenes((0, 2.0, 4.0), noise=0)
    out, _ = run(src, "fade through black", 1.0)  # 12.5 frames each side of frame 50
    level = mean_levels(out)
    assert level[49] == 0 and level[50] == 0
    assert (np.diff(level[37:50]) < 0).all() and (np.diff(level[50:63]) > 0).all()
    assert level[37] == pytest.approx(LEVELS[0], abs=1) and level[63] == pytest.approx(
        LEVELS[1], abs=1)
    assert np.array_equal(out.read(0, 37), src.read(0, 37))
    assert np.array_equal(out.read(63), src.read(63))


def test_cut_and_zero_duration_are_the_identity():
    src = scenes((0, 1.0, 2.0), noise=2)
    for transition, duration in (("cut", 0.5), ("crossfade", 0.0)):
        out, report = run(src, transition, duration)
        assert out is src and "video unchanged" in report


def test_a_video_without_boundaries_is_unchanged():
    src = scenes((0, 2.0), noise=1)
    out, report = run(src)
    assert out is src and "no segment boundaries" in report


def test_close_boundaries_shrink_their_windows_and_say_so():
    # The middle segment is 0.2 s (5 frames): two 1 s crossfades would overlap inside it.
    src = scenes((0, 2.0, 2.2, 4.0), noise=0)
    out, report = run(src, "crossfade", 1.0)
    assert out.frame_count == 100 and "shrunk to 5 frames" in report
    level = mean_levels(out)
    # Each window stays on its side of the middle segment: the level rises monotonically from
    # scene 0 to scene 1's 200 at frame 52 (never past it), then falls towards scene 2's 90.
    assert (np.diff(level[:53]) >= 0).all() and level[47:53].max() <= LEVELS[1]
    assert (np.diff(level[52:]) <= 0).all()
    changed = [i for i in range(100) if not np.array_equal(out.read(i, i + 1),
                                                           src.read(i, i + 1))]
    # Windows of 5 frames' width: 4 frame centres lie strictly inside each; frame 52, in the
    # middle of the short segment, is where one window ends and the next begins.
    assert changed == [48, 49, 50, 51, 53, 54, 55, 56], report


def test_segments_input_overrides_the_videos_boundaries():
    src = scenes((0, 2.0, 4.0), noise=0)
    out, report = run(src, "fade through black", 0.4, segments=tuple(
        Segment(index=k, text="", start=a, end=b) for k, (a, b) in
        enumerate(((0, 1.0), (1.0, 4.0)))))
    assert "boundaries at frames [25]" in report and mean_levels(out)[24] == 0
    assert out.segments == src.segments  # the video's own segments are carried unchanged


def test_a_rerun_does_no_work(monkeypatch):
    src = scenes((0, 2.0, 4.0), noise=2)
    first, _ = run(src, "crossfade", 0.5)

    class NoWriting:
        def __init__(self, *_a, **_k):
            raise AssertionError("a re-run wrote frames")

    monkeypatch.setattr(transitions, "VideoWriter", NoWriting)
    again, report = run(src, "crossfade", 0.5)
    assert again.chunks == first.chunks and "reused the stored rewritten chunks" in report


def test_cancel_leaves_no_half_written_chunk(monkeypatch):
    src = scenes((0, 1.0, 2.0, 3.0), noise=2)
    before = set(os.listdir(store.video_root()))
    real_blend, calls = transitions.blend, []

    def blend(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            runtime.request_interrupt()
        return real_blend(*args, **kwargs)

    monkeypatch.setattr(transitions, "blend", blend)
    with pytest.raises(runtime.Interrupted):
        run(src, "crossfade", 0.5)
    assert len(calls) == 2
    left = set(os.listdir(store.video_root())) - before
    # Only complete rewritten chunks (reusable) remain, never a partial folder.
    assert not any(".partial" in name for name in left)
    assert all(store.load_video(name) is not None for name in left)


def test_camera_motion_into_transitions_at_fractional_fps():
    colors = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    images = colors[:, None, None, :].expand(3, 36, 64, 3).contiguous()
    segments = tuple(Segment(index=k, text="", start=a, end=b) for k, (a, b) in
                     enumerate(((0, 1.3), (1.3, 2.6), (2.6, 4.0))))
    audio = tone_audio(4.0, rate=8000)
    video, _ = SpinBotCameraMotion().animate(images, 23.976, 0, 0, "static", 0.0, "linear", 0.0,
                                             segments=segments, audio=audio)
    out, report = run(video, "crossfade", 0.5)
    assert out.frame_count == video.frame_count == round(4.0 * 23.976)
    assert out.audio is audio and out.segments == video.segments
    cuts = [round(1.3 * 23.976), round(2.6 * 23.976)]
    assert f"boundaries at frames {cuts}" in report
    frames = out.read().astype(float)
    for b in cuts:  # red/green/blue channel levels meet halfway across each cut
        mid = (frames[b - 1] + frames[b]) / 2
        want = (video.read(b - 1, b)[0].astype(float) + video.read(b, b + 1)[0]) / 2
        assert np.abs(mid - want).max() <= 1.0


def test_segment_dicts_need_only_a_start_time():
    src = scenes((0, 2.0, 4.0), noise=0)
    out, report = run(src, "fade through black", 0.4, segments=[{"start": 0.0}, {"start": 1.0}])
    assert "boundaries at frames [25]" in report and mean_levels(out)[25] == 0
    with pytest.raises(MediaError, match="segment 1 has no usable start"):
        run(src, "crossfade", 0.4, segments=[{"start": 0.0}, {"end": 1.0}])


@pytest.mark.parametrize("transition,duration,message", [
    ("wipe", 0.5, "unknown transition"),
    ("crossfade", -1.0, "0 or more"),
    ("crossfade", float("nan"), "0 or more"),
])
def test_bad_settings_are_clear_errors(transition, duration, message):
    with pytest.raises(MediaError, match=message):
        run(scenes((0, 1.0, 2.0)), transition, duration)
