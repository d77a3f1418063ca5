"""SPINBOT_VIDEO: frames on disk in chunks, complete-or-absent, reusable by key, joinable."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError
from spinbot.nodes.video import store
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo, SpinBotVideoToImages
from tests.media import tone_audio


def numbered(n, h=8, w=10, offset=0):
    """uint8 frames whose pixels hold their index, so order and identity are checkable."""
    return (np.arange(offset, offset + n, dtype=np.uint8)[:, None, None, None]
            * np.ones((1, h, w, 3), np.uint8))


def test_writer_chunks_and_reads_back(spinbot_dirs):
    with store.VideoWriter("k1", 25, chunk_frames=4) as w:
        w.write(numbered(3))
        w.write(numbered(7, offset=3))
        video = w.finish(segments=[{"start": 0.0, "end": 0.4, "text": "hi"}])
    assert video.frame_count == 10 and [c.count for c in video.chunks] == [4, 4, 2]
    assert (video.width, video.height, video.fps) == (10, 8, 25.0)
    assert video.duration == pytest.approx(0.4)
    assert all(c.path.startswith(str(spinbot_dirs["temp"])) for c in video.chunks)
    assert video.read()[:, 0, 0, 0].tolist() == list(range(10))
    assert video.read(3, 9)[:, 0, 0, 0].tolist() == list(range(3, 9))
    batches = [b[:, 0, 0, 0].tolist() for b in video.iter_frames(3)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert video.segments == ({"start": 0.0, "end": 0.4, "text": "hi"},)
    images = next(video.iter_images(2))
    assert images.shape == (2, 8, 10, 3) and images.dtype == torch.float32


def test_default_chunk_size_bounds_chunk_bytes(spinbot_dirs):
    with store.VideoWriter("big", 25) as w:
        w.write(np.zeros((30, 720, 1280, 3), np.uint8))
        video = w.finish()
    sizes = [os.path.getsize(c.path) for c in video.chunks]
    assert max(sizes) <= store.CHUNK_BYTES + 4096 and len(sizes) == 2


def test_failed_writer_leaves_nothing_that_looks_complete(spinbot_dirs):
    with pytest.raises(RuntimeError):
        with store.VideoWriter("dies", 25, chunk_frames=2) as w:
            w.write(numbered(5))
            raise RuntimeError("stage crashed")
    assert store.load_video("dies") is None
    assert os.listdir(store.video_root()) == []


def test_a_failed_background_save_surfaces_and_leaves_nothing(spinbot_dirs, monkeypatch):
    """Chunks are saved on a background thread; a disk error still stops the stage."""
    real_save = np.save
    saved = []

    def save(f, data):
        if saved:
            raise OSError(28, "No space left on device")
        saved.append(len(data))
        real_save(f, data)

    monkeypatch.setattr(store.np, "save", save)
    with pytest.raises(OSError, match="No space left"):
        with store.VideoWriter("full-disk", 25, chunk_frames=2) as w:
            w.write(numbered(6))  # chunk 2 fails while chunk 3 is queued behind it
            w.finish()
    assert saved == [2]
    assert store.load_video("full-disk") is None and os.listdir(store.video_root()) == []


def test_size_change_is_an_error(spinbot_dirs):
    with store.VideoWriter("sz", 25) as w:
        w.write(numbered(2))
        with pytest.raises(MediaError, match="frame size changed"):
            w.write(numbered(2, h=4))
        w.abort()


def test_write_video_reuses_complete_video_by_key(spinbot_dirs):
    calls = []

    def frames():
        calls.append(1)
        yield numbered(4)

    a = store.write_video("same", 10, frames(), audio=tone_audio(0.4, rate=16000))
    b = store.write_video("same", 10, frames())
    assert a == b and len(calls) == 1  # the generator of the second call never ran
    assert b.audio["sample_rate"] == 16000 and b.audio["waveform"].shape == (1, 1, 6400)


def test_resume_after_crash_reuses_finished_segments(spinbot_dirs):
    """A stage that dies in segment 3 keeps segments 1-2; the re-run only renders segment 3."""
    rendered = []

    def render_segment(i):
        key = store.content_key("segment", i)
        def frames():
            rendered.append(i)
            if i == 2 and rendered.count(2) == 1:
                raise RuntimeError("out of memory")
            yield numbered(5, offset=10 * i)
        return store.write_video(key, 25, frames())

    with pytest.raises(RuntimeError):
        [render_segment(i) for i in range(3)]
    videos = [render_segment(i) for i in range(3)]
    assert rendered == [0, 1, 2, 2]
    joined = store.concat_videos(videos)
    assert joined.read()[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24]
    assert len({c.path for c in joined.chunks}) == 3  # referenced, not copied


def test_concat_refuses_mismatched_videos(spinbot_dirs):
    a = store.write_video("a", 25, iter([numbered(2)]))
    b = store.write_video("b", 30, iter([numbered(2)]))
    with pytest.raises(MediaError, match="video 1 is 10x8 @ 30 fps"):
        store.concat_videos([a, b])


def test_content_key_is_stable_and_sensitive():
    t = torch.rand(2, 4, 4, 3)
    assert store.content_key(t, 25.0, {"a": 1}) == store.content_key(t.clone(), 25.0, {"a": 1})
    t2 = t.clone()
    t2[1, 2, 2, 0] += 1e-3
    assert store.content_key(t, 25.0) != store.content_key(t2, 25.0)
    assert store.content_key(t, 25.0) != store.content_key(t, 24.0)


def test_missing_chunks_give_a_clear_error(spinbot_dirs):
    video = store.write_video("gone", 25, iter([numbered(3)]))
    os.remove(video.chunks[0].path)
    with pytest.raises(MediaError, match="temp folder"):
        video.read()
    assert store.load_video("gone") is None


def test_images_to_video_nodes_round_trip(spinbot_dirs):
    images = torch.rand(12, 16, 20, 3)
    audio = tone_audio(0.5, rate=24000)
    (video,) = SpinBotImagesToVideo().convert(images, 24.0, audio=audio)
    (again,) = SpinBotImagesToVideo().convert(images.clone(), 24.0, audio=audio)
    assert again.chunks == video.chunks
    out, out_audio, fps, count = SpinBotVideoToImages().convert(video, 0, 0)
    assert count == 12 and fps == 24.0
    assert torch.allclose(out, images, atol=0.5 / 255 + 1e-6)
    assert out_audio["sample_rate"] == 24000 and out_audio["waveform"].shape[-1] == 12000
    part, part_audio, _, n = SpinBotVideoToImages().convert(video, 6, 3)
    assert n == 3 and torch.equal(part, out[6:9])
    assert part_audio["waveform"].shape[-1] == 3000  # 3 frames at 24 fps = 0.125 s
    with pytest.raises(MediaError, match="past the end"):
        SpinBotVideoToImages().convert(video, 50, 0)


def test_writer_honours_cancel(spinbot_dirs):
    def frames():
        for i in range(10):
            if i == 3:
                runtime.request_interrupt()
            yield numbered(1, offset=i)

    with pytest.raises(runtime.Interrupted):
        store.write_video("cancelled", 25, frames())
    assert store.load_video("cancelled") is None and os.listdir(store.video_root()) == []
