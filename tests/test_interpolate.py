"""SpinBot Frame Interpolation: exact frame counts and fps, originals kept byte for byte, scene
cuts (segment boundaries and detected hard cuts) never blended, chunking invariance, reuse,
audio and segments carried, Cancel. Tiny RIFE 4.7 on 80x48 frames."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import spinbot
from spinbot.nodes import runtime
from spinbot.nodes.interpolate import engine
from spinbot.nodes.interpolate.engine import InterpolationSettings, interpolate_video
from spinbot.nodes.interpolate.model import DEFAULT_MODEL, RIFEModelError, load_rife
from spinbot.nodes.interpolate.nodes_interpolate import (SpinBotFrameInterpolation,
                                                         SpinBotFrameInterpolationModel)
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError, check_audio
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.video import store
from tests import factory
from tests.media import astronaut, tone_audio

H, W = 48, 80  # not multiples of 32: the padding and the crop back are exercised
NO_DETECT = 255.0  # above any mean difference: only segment boundaries count as cuts


@pytest.fixture
def rife(spinbot_dirs):
    factory.build(spinbot_dirs["models"], only=["frame_interpolation"])
    return load_rife(DEFAULT_MODEL)


def scene(count: int, shift: int = 0, invert: bool = False) -> np.ndarray:
    """``count`` frames of a photo panning 2 px right per frame (one shot)."""
    photo = astronaut(160)
    frames = np.stack([photo[20 + shift:20 + shift + H, 2 * i + shift:2 * i + shift + W]
                       for i in range(count)])
    return 255 - frames if invert else frames


def make_video(frames: np.ndarray, fps: float = 8.0, chunk: int = 3, audio=None,
               segments=None, key: str = "src") -> store.SpinBotVideo:
    with store.VideoWriter(key, fps, chunk_frames=chunk) as writer:
        writer.write(frames)
        return writer.finish(audio=audio, segments=segments)


def drop(video: store.SpinBotVideo) -> None:
    """Remove a stored result so the next run computes it again."""
    for folder in video.folders():
        shutil.rmtree(folder)


@pytest.mark.parametrize("multiplier", [2, 3])
def test_exact_count_fps_originals_and_held_last_frame(rife, multiplier):
    frames = scene(5)
    video = make_video(frames, fps=8.0)
    out, report = interpolate_video(rife, video, InterpolationSettings(
        multiplier=multiplier, scene_cut_threshold=NO_DETECT))
    assert out.frame_count == 5 * multiplier
    assert out.fps == 8.0 * multiplier
    assert out.duration == pytest.approx(video.duration, abs=1e-12)
    assert (out.width, out.height) == (W, H)
    got = out.read()
    assert np.array_equal(got[::multiplier], frames)           # originals byte for byte
    assert all(np.array_equal(f, frames[-1]) for f in got[-multiplier:])  # last frame held
    for i in range(4):  # every in-between came from the model, not a copy
        for k in range(1, multiplier):
            assert not np.array_equal(got[i * multiplier + k], frames[i])
    assert report.interpolated_pairs == 4 and report.detected_cuts == []
    assert report.interpolated_frames == 4 * (multiplier - 1)
    assert "5 in -> " + str(5 * multiplier) + " out" in report.text()


def test_single_frame_video_is_held(rife):
    out, _ = interpolate_video(rife, make_video(scene(1)), InterpolationSettings(multiplier=4))
    assert out.frame_count == 4 and out.fps == 32.0
    assert all(np.array_equal(f, scene(1)[0]) for f in out.read())


def test_segment_boundary_gives_copies_not_blends(rife):
    frames = np.concatenate([scene(4), scene(4, shift=30)])
    segs = [Segment(0, "a", 0.0, 0.5).to_dict(), Segment(1, "b", 0.5, 1.0).to_dict()]
    video = make_video(frames, fps=8.0, segments=segs)  # frame 4 = 0.5 s starts segment 1
    out, report = interpolate_video(rife, video, InterpolationSettings(
        multiplier=3, scene_cut_threshold=NO_DETECT))
    got = out.read()
    assert report.boundary_cuts == [4] and report.interpolated_pairs == 6
    assert np.array_equal(got[10], frames[3]) and np.array_equal(got[11], frames[3])
    assert not np.array_equal(got[7], frames[2])  # pairs inside a segment are interpolated
    assert out.segments == tuple(segs)
    assert "0.50s" in report.text().split("segment boundaries kept as cuts:")[1].splitlines()[0]


def test_segments_input_sets_the_boundaries(rife):
    frames = scene(6)
    video = make_video(frames, fps=4.0)  # no segments of its own
    segs = (Segment(0, "a", 0.0, 0.5), Segment(1, "b", 0.5, 1.5))
    out, report = interpolate_video(rife, video, InterpolationSettings(
        multiplier=2, scene_cut_threshold=NO_DETECT), segments=segs)
    assert report.boundary_cuts == [2]
    got = out.read()
    assert np.array_equal(got[3], frames[1]) and not np.array_equal(got[1], frames[0])
    assert out.segments == tuple(s.to_dict() for s in segs)


def test_detected_hard_cut_is_copied_and_reported(rife):
    frames = np.concatenate([scene(4), scene(4, invert=True)])
    diffs = [engine.frame_difference(frames[i], frames[i + 1]) for i in range(7)]
    assert diffs[3] > 60 and max(diffs[:3] + diffs[4:]) < 25  # the measure tells them apart
    video = make_video(frames, fps=8.0)
    out, report = interpolate_video(rife, video, InterpolationSettings(multiplier=2))
    got = out.read()
    assert report.detected_cuts == [4] and report.interpolated_pairs == 6
    assert np.array_equal(got[7], frames[3])
    assert "detected cuts: 0.50s" in report.text()
    off, report_off = interpolate_video(rife, video, InterpolationSettings(
        multiplier=2, scene_cut_threshold=0.0))
    assert report_off.detected_cuts == [] and report_off.interpolated_pairs == 7
    assert not np.array_equal(off.read()[7], frames[3])


def test_chunk_and_read_sizes_do_not_change_the_result(rife):
    frames = scene(7)
    settings = dict(multiplier=2, scene_cut_threshold=NO_DETECT, batch_size=1)
    one, _ = interpolate_video(rife, make_video(frames, chunk=100, key="one"),
                               InterpolationSettings(read_frames=100, **settings))
    whole = one.read()
    drop(one)
    many, _ = interpolate_video(rife, make_video(frames, chunk=2, key="two"),
                                InterpolationSettings(read_frames=3, **settings))
    assert len(many.chunks) >= 1 and many.key != one.key
    assert np.array_equal(many.read(), whole)
    drop(many)  # and again: deterministic run to run
    again, _ = interpolate_video(rife, make_video(frames, chunk=2, key="two"),
                                 InterpolationSettings(read_frames=3, **settings))
    assert np.array_equal(again.read(), whole)


def test_batch_size_changes_at_most_rounding(rife):
    frames = scene(6)
    video = make_video(frames)
    a, _ = interpolate_video(rife, video, InterpolationSettings(batch_size=1))
    first = a.read().astype(int)
    drop(a)
    b, _ = interpolate_video(rife, video, InterpolationSettings(batch_size=4))
    assert np.abs(b.read().astype(int) - first).max() <= 1


def test_rerun_reuses_the_result_and_does_no_work(rife, monkeypatch):
    video = make_video(scene(4), audio=tone_audio(0.5, 16000))
    node = SpinBotFrameInterpolation()
    out, text = node.interpolate(video, rife, 2, 1.0, 40.0)
    monkeypatch.setattr(engine._Interpolator, "__call__",
                        lambda *a: pytest.fail("a re-run must not run the model"))
    again, text2 = node.interpolate(video, rife, 2, 1.0, 40.0)
    assert again.key == out.key and "reused" in text2
    changed = pytest.raises(BaseException, node.interpolate, video, rife, 3, 1.0, 40.0)
    assert "re-run" in str(changed.value)  # other settings are new work


def test_audio_and_segments_are_carried_unchanged(rife):
    audio = tone_audio(0.75, 22050, channels=2)
    segs = [Segment(0, "only", 0.0, 0.75).to_dict()]
    video = make_video(scene(6), audio=audio, segments=segs)
    out, _ = interpolate_video(rife, video, InterpolationSettings(multiplier=3))
    wave, rate = check_audio(out.audio)
    src, src_rate = check_audio(audio)
    assert rate == src_rate and torch.equal(wave, src)
    assert out.segments == tuple(segs) and out.duration == video.duration


def test_cancel_leaves_no_partial_video(rife, monkeypatch):
    video = make_video(scene(8))
    real = engine._Interpolator._run
    calls = []

    def run(self, a, b, steps):
        calls.append(1)
        if len(calls) == 2:
            runtime.request_interrupt()
        return real(self, a, b, steps)
    monkeypatch.setattr(engine._Interpolator, "_run", run)
    before = set(os.listdir(store.video_root()))
    try:
        with pytest.raises(runtime.Interrupted):
            interpolate_video(rife, video, InterpolationSettings(batch_size=1))
    finally:
        runtime.request_interrupt(False)
    assert set(os.listdir(store.video_root())) == before


def test_bad_settings_and_nan_model_are_clear_errors(rife):
    video = make_video(scene(3))
    with pytest.raises(MediaError, match="multiplier must be a whole number from 2 to 8"):
        interpolate_video(rife, video, InterpolationSettings(multiplier=1))
    with pytest.raises(MediaError, match="scale must be one of 0.25, 0.5, 1, 2, 4"):
        interpolate_video(rife, video, InterpolationSettings(scale=0.75))
    with pytest.raises(MediaError, match="scene_cut_threshold"):
        interpolate_video(rife, video, InterpolationSettings(scene_cut_threshold=float("nan")))
    net = rife.net
    saved = net.block3.lastconv[0].bias.clone()
    try:
        with torch.no_grad():
            net.block3.lastconv[0].bias.fill_(float("nan"))
        with pytest.raises(RIFEModelError, match="NaN/inf"):
            interpolate_video(rife, video, InterpolationSettings(scene_cut_threshold=NO_DETECT))
    finally:
        with torch.no_grad():
            net.block3.lastconv[0].bias.copy_(saved)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_scale_option_runs_and_keeps_counts(rife, scale):
    frames = scene(3)
    out, _ = interpolate_video(rife, make_video(frames), InterpolationSettings(scale=scale))
    assert out.frame_count == 6 and np.array_equal(out.read()[::2], frames)


def test_nodes_are_registered_and_the_loader_reports_the_version(rife, spinbot_dirs):
    for name, cls in (("SpinBotFrameInterpolationModel", SpinBotFrameInterpolationModel),
                      ("SpinBotFrameInterpolation", SpinBotFrameInterpolation)):
        assert spinbot.NODE_CLASS_MAPPINGS[name] is cls
    spec = SpinBotFrameInterpolationModel.INPUT_TYPES()["required"]["model_name"]
    assert spec[0] == ["rife47.pth", "rife49.pth"] and spec[1]["default"] == "rife47.pth"
    model, text = SpinBotFrameInterpolationModel().load("rife49.pth")
    assert "RIFE 4.7" in text and "rife49.pth" in text
    out, report = SpinBotFrameInterpolation().interpolate(make_video(scene(3)), model, 3, 1.0,
                                                          40.0)
    assert out.frame_count == 9 and out.fps == 24.0 and "fps: 8 -> 24" in report
    shutil.rmtree(spinbot_dirs["models"] / "frame_interpolation")
    with pytest.raises(MissingModelError, match="'frame_interpolation'"):
        SpinBotFrameInterpolationModel().load("rife47.pth")


def test_out_of_memory_halves_the_batch_then_says_what_to_do(rife, monkeypatch):
    frames = scene(4)
    video = make_video(frames)
    reference, _ = interpolate_video(rife, video, InterpolationSettings(multiplier=3,
                                                                        batch_size=1))
    expected = reference.read()
    drop(reference)
    real = engine._Interpolator._run
    sizes = []

    def run(self, a, b, steps):
        sizes.append(len(steps))
        if len(steps) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, a, b, steps)
    monkeypatch.setattr(engine._Interpolator, "_run", run)
    out, _ = interpolate_video(rife, video, InterpolationSettings(multiplier=3, batch_size=4))
    assert sizes[:3] == [4, 2, 1] and np.array_equal(out.read(), expected)
    drop(out)
    monkeypatch.setattr(engine._Interpolator, "_run", lambda *a: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory (simulated)")))
    with pytest.raises(MemoryError, match="making one 80x48 frame.*scale to 0.5"):
        interpolate_video(rife, video, InterpolationSettings(multiplier=3, batch_size=1))
