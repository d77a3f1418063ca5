"""SpinBot Camera Motion: smooth eased paths measured on the frames, exact frame counts per
segment on one clock, reuse, Cancel, and bad inputs."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError
from spinbot.nodes.scene import camera
from spinbot.nodes.scene.nodes_scene import SpinBotCameraMotion
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.video import store
from spinbot.nodes.video.combine import combine_to_mp4
from tests.media import tone_audio
from tests.mp4probe import probe

W, H = 160, 90
SIGMA = 4.0  # px: a smooth marker, so bilinear resampling moves its centroid exactly
# Centroid error allowed per frame (px). Integer-rounded crops are off by up to 0.5 px, which
# `test_tracker_catches_integer_rounded_crops` checks this tolerance detects.
TOLERANCE_PX = 0.03  # measured: < 0.01 px


def marker_still(x: float, y: float, width: int = W, height: int = H) -> torch.Tensor:
    """IMAGE [1,H,W,3]: grey background, a Gaussian marker at pixel (x, y) in green only."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA ** 2))
    img = np.full((height, width, 3), 0.2)
    img[..., 1] = 0.2 + 0.75 * blob
    return torch.from_numpy(img).float()[None]


def centroids(frames: np.ndarray) -> np.ndarray:
    """Sub-pixel marker position ``[n,2]`` (x, y) in each uint8 frame: green minus red (the
    background cancels) weighted centroid."""
    signal = frames[..., 1].astype(np.float64) - frames[..., 0].astype(np.float64)
    signal = np.clip(signal - 2.0, 0, None)  # drop quantisation noise of the flat background
    yy, xx = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    mass = signal.sum(axis=(1, 2))
    return np.stack([(signal * xx).sum(axis=(1, 2)) / mass,
                     (signal * yy).sum(axis=(1, 2)) / mass], axis=1)


def run(images, fps=25.0, width=0, height=0, motion="auto", zoom=0.15, easing="ease in-out",
        duration=0.0, segments=None, audio=None):
    return SpinBotCameraMotion().animate(images, fps, width, height, motion, zoom, easing,
                                         duration, segments=segments, audio=audio)


def segs(*bounds: float) -> tuple[Segment, ...]:
    return tuple(Segment(index=k, text=f"s{k}", start=a, end=b)
                 for k, (a, b) in enumerate(zip(bounds, bounds[1:])))


@pytest.mark.parametrize("easing", camera.EASINGS)
@pytest.mark.parametrize("motion,axis,sign", [("pan right", 0, -1), ("pan left", 0, 1),
                                              ("pan down", 1, -1), ("pan up", 1, 1)])
def test_pan_follows_the_easing_curve_without_jitter(easing, motion, axis, sign):
    n = 61
    video, report = run(marker_still(W / 2, H / 2), motion=motion, easing=easing,
                        duration=n / 25.0)
    assert video.frame_count == n and f"segment 0: frames 0-{n - 1} ({n}), image 0, {motion}" \
        in report
    pos = centroids(video.read())[:, axis]
    steps = np.diff(pos)
    size = W if axis == 0 else H
    p = camera.ease(easing, np.arange(n) / (n - 1))
    # The window travels the margin 1 - 1/(1+z) of a still seen magnified (1+z): z x size px.
    expected = sign * np.diff(p) * 0.15 * size
    assert np.abs(steps - expected).max() < TOLERANCE_PX, (steps - expected)
    assert (sign * steps > -0.01).all(), "the marker moved backwards"
    assert sign * (pos[-1] - pos[0]) == pytest.approx(0.15 * size, abs=0.1)
    # Jitter: the change of speed between frames follows the curve's second difference.
    assert np.abs(np.diff(steps) - np.diff(expected)).max() < 2 * TOLERANCE_PX
    other = centroids(video.read())[:, 1 - axis]
    assert np.ptp(other) < 0.05  # no drift across the pan


def test_tracker_catches_integer_rounded_crops():
    """Control: the same measure fails a pan made of whole-pixel crops (what this stage must not
    do), so the smoothness test above can fail."""
    n, grow = 61, 1.15
    big = marker_still(W * grow / 2, H * grow / 2, round(W * grow), round(H * grow))[0].numpy()
    p = camera.ease("linear", np.arange(n) / (n - 1))
    offsets = np.round(p * (big.shape[1] - W)).astype(int)
    frames = np.stack([big[:H, o:o + W] for o in offsets])
    frames = np.clip(frames * 255 + 0.5, 0, 255).astype(np.uint8)
    steps = np.diff(centroids(frames)[:, 0])
    expected = -np.diff(p) * (big.shape[1] - W)
    assert np.abs(steps - expected).max() > TOLERANCE_PX * 4


@pytest.mark.parametrize("motion,direction", [("push in", 1), ("pull out", -1)])
def test_zoom_scales_exponentially_along_the_easing_curve(motion, direction):
    n, zoom = 50, 0.5
    cx, cy = W / 2 - 30, H / 2 - 12  # stays 4.5 sigma inside the frame when magnified
    video, _ = run(marker_still(cx, cy), motion=motion, zoom=zoom, easing="ease in-out",
                   duration=n / 25.0)
    pos = centroids(video.read()) - [(W - 1) / 2, (H - 1) / 2]  # from the centre of the frame
    dist = np.hypot(pos[:, 0], pos[:, 1])
    p = camera.ease("ease in-out", np.arange(n) / (n - 1))
    expected = (p if direction > 0 else 1 - p) * math.log(1 + zoom)
    measured = np.log(dist / (dist[0] if direction > 0 else dist[-1]))
    measured -= measured[0] - expected[0]
    assert np.abs(measured - expected).max() < 0.003  # ~0.1 px at 35 px from the centre
    assert (direction * np.diff(dist) > -0.01).all()
    # The marker moves radially: its direction from the centre stays the same.
    angle = np.arctan2(pos[:, 1], pos[:, 0])
    assert np.ptp(angle) < 0.005


def solid(colors, height=H, width=W) -> torch.Tensor:
    return torch.tensor(colors, dtype=torch.float32)[:, None, None, :].expand(
        len(colors), height, width, 3).contiguous() / 255.0


COLORS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10)]


def colour_runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of frames as (colour index in COLORS, length)."""
    means = frames.reshape(len(frames), -1, 3).mean(axis=1)
    idx = [int(np.argmin(np.abs(np.array(COLORS) - m).sum(axis=1))) for m in means]
    runs: list[list[int]] = []
    for i in idx:
        if runs and runs[-1][0] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return [tuple(r) for r in runs]


@pytest.mark.parametrize("fps", [23.976, 29.97, 25.0])
def test_frame_counts_per_segment_follow_one_clock(fps):
    bounds = (0.0, 1.37, 2.9, 4.413, 5.83)
    video, report = run(solid(COLORS), fps=fps, motion="static", segments=segs(*bounds))
    total = round(bounds[-1] * fps)
    cuts = [0] + [round(b * fps) for b in bounds[1:-1]] + [total]
    counts = [b - a for a, b in zip(cuts, cuts[1:])]
    assert video.frame_count == total and video.fps == fps
    assert colour_runs(video.read()) == list(enumerate(counts))
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        assert f"segment {k}: frames {a}-{b - 1} ({b - a}), image {k}, static" in report
    assert [s["start"] for s in video.segments] == list(bounds[:-1])


def test_audio_sets_the_length_and_is_carried():
    fps, audio = 23.976, tone_audio(3.3, rate=16000)
    video, report = run(solid(COLORS[:2]), fps=fps, motion="static", segments=segs(0, 1.1, 2.5),
                        audio=audio)
    total = round(3.3 * fps)
    assert video.frame_count == total and "from the audio" in report
    # The last segment runs on to the end of the audio.
    assert colour_runs(video.read()) == [(0, round(1.1 * fps)), (1, total - round(1.1 * fps))]
    assert video.audio is audio and len(video.segments) == 2


def test_auto_cycles_paths_over_images_and_never_jumps_on_one_image():
    video, report = run(marker_still(W / 2 - 20, H / 2 - 10), segments=segs(0, 1, 2, 3, 4))
    paths = [line.rsplit(", ", 1)[1] for line in report.splitlines() if "segment " in line]
    assert paths == ["push in", "pull out", "push in", "pull out"]
    assert "image 0" in report and "image 1" not in report
    # One image: each segment starts where the one before ended (no jump at the boundaries).
    pos = centroids(video.read())
    steps = np.hypot(*np.diff(pos, axis=0).T)
    assert steps.max() < 0.4, steps.max()  # measured 0.22 px; the 4-path cycle jumps 15 px
    stills = torch.cat([marker_still(W / 2, H / 2)] * 4)
    _, report = run(stills, segments=segs(0, 1, 2, 3, 4, 5)[:4])
    paths = [line.rsplit(", ", 1)[1] for line in report.splitlines() if "segment " in line]
    assert paths == ["push in", "pan right", "pull out", "pan left"]


def test_several_images_without_segments_share_the_length_and_get_segments():
    video, _ = run(solid(COLORS[:3]), fps=24.0, motion="static", duration=2.0)
    assert colour_runs(video.read()) == [(0, 16), (1, 16), (2, 16)]
    assert [s["start"] for s in video.segments] == pytest.approx([0, 16 / 24, 32 / 24])
    assert [s["end"] for s in video.segments] == pytest.approx([16 / 24, 32 / 24, 2.0])


def test_a_still_of_another_aspect_is_cover_fitted_not_stretched():
    still = np.zeros((180, W, 3), np.float32)  # taller than 16:9: rows 45..134 are kept
    still[:45, :, 0] = 1.0  # red band: cropped away
    still[45:135, :, 1] = 1.0  # green band: exactly the 16:9 centre
    still[135:, :, 2] = 1.0
    video, _ = run(torch.from_numpy(still)[None], width=W, height=H, motion="static",
                   duration=0.2)
    frames = video.read()
    assert frames.shape[1:] == (H, W, 3)
    assert frames[..., 1].min() == 255 and frames[..., [0, 2]].max() == 0


def test_output_size_zero_and_one_side():
    still = marker_still(W / 2, H / 2)
    assert run(still, duration=0.2)[0].width == W
    video = run(still, width=0, height=45, duration=0.2)[0]
    assert (video.width, video.height) == (80, 45)


def test_odd_sizes_are_kept_and_encode():
    """The store keeps 81x45; Video Combine pads it by one edge column and row for yuv420p."""
    video, _ = run(marker_still(W / 2, H / 2), width=81, height=45, fps=23.976,
                   duration=0.5, audio=tone_audio(0.5, rate=16000))
    assert (video.width, video.height) == (81, 45)
    assert video.read().shape == (12, 45, 81, 3)
    result = combine_to_mp4(video=video, fps=23.976, loudness_lufs=None)
    got = probe(result.path)
    assert (got.width, got.height, got.video_frames) == (82, 46, 12)
    assert got.fps == pytest.approx(23.976, abs=1e-3)


def test_same_inputs_give_the_same_bytes_and_a_rerun_does_no_work(spinbot_dirs, monkeypatch):
    still, seg = marker_still(50.3, 33.7), segs(0, 0.7, 1.5)
    first, _ = run(torch.cat([still, still.flip(2)]), fps=23.976, segments=seg)
    frames = first.read()

    class NoWriting:
        def __init__(self, *_a, **_k):
            raise AssertionError("a re-run wrote frames")

    monkeypatch.setattr(camera, "VideoWriter", NoWriting)
    again, report = run(torch.cat([still, still.flip(2)]), fps=23.976, segments=seg,
                        audio=tone_audio(1.5, rate=8000))  # new audio, same length: same frames
    assert "reused the stored frames" in report
    assert again.chunks == first.chunks and again.audio is not None
    monkeypatch.undo()
    # Determinism: the frames rebuilt from nothing (an empty store) are the same bytes.
    fresh = spinbot_dirs["temp"].parent / "temp2"
    fresh.mkdir()
    monkeypatch.setenv("SPINBOT_TEMP_DIR", str(fresh))
    assert store.load_video(first.key) is None
    rebuilt, report = run(torch.cat([still, still.flip(2)]), fps=23.976, segments=seg)
    assert "rendered" in report and np.array_equal(rebuilt.read(), frames)


def test_cancel_leaves_no_video_behind(monkeypatch):
    monkeypatch.setattr(camera, "BATCH_BYTES", W * H * 3 * 4 * 4)  # 4 frames per batch
    real_render, calls = camera.render, []

    def render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            runtime.request_interrupt()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(camera, "render", render)
    with pytest.raises(runtime.Interrupted):
        run(marker_still(W / 2, H / 2), duration=2.0)
    assert len(calls) == 3
    assert os.listdir(store.video_root()) == []
    monkeypatch.setattr(camera, "render", real_render)
    video, report = run(marker_still(W / 2, H / 2), duration=2.0)
    assert video.frame_count == 50 and "rendered 50 frames" in report


@pytest.mark.parametrize("images,kwargs,message", [
    (torch.zeros(0, H, W, 3), {"duration": 1.0}, "no frames"),
    (solid(COLORS[:3]), {"segments": segs(0, 1, 2)}, "3 images for 2 segments"),
    (solid(COLORS[:2]), {"segments": segs(0, 1, 2, 3)}, "2 images for 3 segments"),
    (solid(COLORS[:1]), {"duration": 0.0}, "set duration_seconds above 0"),
    (solid(COLORS[:1]) * float("nan"), {"duration": 1.0}, "NaN"),
    (solid(COLORS[:1]), {"duration": 1.0, "zoom": float("nan")}, "zoom"),
    (solid(COLORS[:1]), {"duration": 1.0, "motion": "spin"}, "unknown motion"),
    (solid(COLORS[:1]), {"duration": 1.0, "width": -2}, "width and height"),
    (solid(COLORS[:1]), {"duration": 1.0, "fps": 0.0}, "fps"),
])
def test_bad_inputs_are_clear_errors(images, kwargs, message):
    with pytest.raises(MediaError, match=message):
        run(images, **kwargs)
    assert os.listdir(store.video_root()) == []
