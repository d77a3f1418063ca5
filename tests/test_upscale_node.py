"""SpinBot Upscale node: IMAGE -> IMAGE, SPINBOT_VIDEO -> SPINBOT_VIDEO (audio and segments kept,
reused by key, nothing partial left on Cancel), the model dropdown and IS_CHANGED."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import spinbot
from spinbot.nodes import runtime
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError, images_to_uint8
from spinbot.nodes.upscale import model as upscale_model
from spinbot.nodes.upscale.engine import UpscaleSettings, upscale_images
from spinbot.nodes.upscale.model import load_upscaler
from spinbot.nodes.upscale.nodes_upscale import SpinBotUpscale
from spinbot.nodes.video import store
from tests import factory
from tests.media import astronaut, tone_audio

SRVGG, X2 = "realesr-general-x4v3.pth", "RealESRGAN_x2plus.pth"
WIDGETS = dict(target_scale=0.0, tile=16, overlap=8, precision="auto", frames_per_batch=3)


@pytest.fixture
def models(spinbot_dirs):
    folder = spinbot_dirs["models"] / "upscale_models"
    factory.tiny_realesr_general_x4v3(folder)
    factory.tiny_realesrgan_x2plus(folder)
    return folder


def photo_frames(count: int, height: int = 18, width: int = 22) -> torch.Tensor:
    photo = torch.from_numpy(np.array(astronaut(128))).float().div(255.0)
    return torch.stack([photo[3 * i:3 * i + height, 4 * i:4 * i + width] for i in range(count)])


def test_node_is_registered_with_a_dropdown_of_installed_models(models):
    assert spinbot.NODE_CLASS_MAPPINGS["SpinBotUpscale"] is SpinBotUpscale
    assert spinbot.NODE_DISPLAY_NAME_MAPPINGS["SpinBotUpscale"] == "SpinBot Upscale"
    spec = SpinBotUpscale.INPUT_TYPES()["required"]["model_name"]
    assert spec[0] == [X2, SRVGG] and spec[1]["default"] == SRVGG
    shutil.rmtree(models)
    empty = SpinBotUpscale.INPUT_TYPES()["required"]["model_name"]
    assert empty[0] == [upscale_model.DEFAULT_MODEL]  # a savable value whose absence is explained


def test_images_in_images_out(models):
    src = photo_frames(5)
    images, video = SpinBotUpscale().upscale(SRVGG, images=src, **WIDGETS)
    assert images.shape == (5, 72, 88, 3) and images.dtype == torch.float32
    # the video output holds the same frames (IMAGE has no fps: the documented default)
    assert isinstance(video, store.SpinBotVideo)
    assert (video.frame_count, video.width, video.height, video.fps) == (5, 88, 72, 25.0)
    assert np.array_equal(video.read(), images_to_uint8(images))
    direct = upscale_images(load_upscaler(SRVGG), src, UpscaleSettings(tile=0))
    assert (images - direct).abs().max() < 1e-3
    half, _ = SpinBotUpscale().upscale(X2, images=src, **{**WIDGETS, "target_scale": 1.5})
    assert half.shape == (5, 27, 33, 3)


def test_video_in_video_out_keeps_fps_audio_and_segments(models, spinbot_dirs):
    src = photo_frames(7, 14, 18)
    audio = tone_audio(7 / 12.5, rate=16000, channels=2)
    segments = [{"start": 0.0, "end": 0.3, "text": "one"}, {"start": 0.3, "end": 0.56, "text": "two"}]
    with store.VideoWriter("upscale-input", 12.5, chunk_frames=3) as writer:
        writer.write(src)
        video = writer.finish(audio=audio, segments=segments)
    images, out = SpinBotUpscale().upscale(SRVGG, video=video, **WIDGETS)
    assert isinstance(out, store.SpinBotVideo)
    # the IMAGE output is the first upscaled frame (a preview), never None
    assert images.shape == (1, 56, 72, 3) and images.dtype == torch.float32
    assert np.array_equal(images_to_uint8(images), out.read(0, 1))
    assert (out.frame_count, out.width, out.height, out.fps) == (7, 72, 56, 12.5)
    assert out.segments == tuple(segments)
    assert out.audio["sample_rate"] == 16000
    assert torch.equal(out.audio["waveform"], video.audio["waveform"])
    assert out.key != video.key and os.path.dirname(out.chunks[0].path).endswith(out.key)
    # the frames are what the IMAGE path gives for the stored (uint8) input frames
    stored = torch.from_numpy(video.read()).float().div(255.0)
    expected = images_to_uint8(upscale_images(load_upscaler(SRVGG), stored,
                                              UpscaleSettings(tile=16, overlap=8)))
    assert np.abs(out.read().astype(int) - expected.astype(int)).max() <= 1


def test_video_result_is_reused_and_keyed_by_model_file_and_settings(models, monkeypatch):
    with store.VideoWriter("upscale-reuse", 10, chunk_frames=4) as writer:
        writer.write(photo_frames(4))
        video = writer.finish()
    node = SpinBotUpscale()
    _, first = node.upscale(SRVGG, video=video, **WIDGETS)

    def no_model_runs(*args, **kwargs):
        raise AssertionError("the model ran although the result was stored")
    with monkeypatch.context() as patch:
        patch.setattr(upscale_model.Upscaler, "forward", no_model_runs)
        _, again = node.upscale(SRVGG, video=video, **WIDGETS)
    assert again.key == first.key
    _, other = node.upscale(SRVGG, video=video, **{**WIDGETS, "target_scale": 2.0})
    assert other.key != first.key and other.width == 44
    stat = os.stat(models / SRVGG)
    os.utime(models / SRVGG, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # file replaced
    _, fresh = node.upscale(SRVGG, video=video, **WIDGETS)
    assert fresh.key != first.key


def test_cancel_leaves_no_partial_video(models, monkeypatch):
    with store.VideoWriter("upscale-cancel", 10, chunk_frames=2) as writer:
        writer.write(photo_frames(6))
        video = writer.finish()
    real = upscale_model.Upscaler.forward
    calls = []

    def forward(self, x):
        calls.append(1)
        if len(calls) == 2:
            runtime.request_interrupt()
        return real(self, x)
    monkeypatch.setattr(upscale_model.Upscaler, "forward", forward)
    before = set(os.listdir(store.video_root()))
    with pytest.raises(runtime.Interrupted):
        SpinBotUpscale().upscale(SRVGG, video=video, **{**WIDGETS, "tile": 0, "frames_per_batch": 2})
    assert set(os.listdir(store.video_root())) == before
    runtime.request_interrupt(False)


def test_node_errors_are_clear(models, spinbot_dirs):
    with pytest.raises(MediaError, match="connect 'images' or 'video'"):
        SpinBotUpscale().upscale(SRVGG, **WIDGETS)
    with pytest.raises(MissingModelError, match="'upscale_models'"):
        SpinBotUpscale().upscale("RealESRGAN_x4plus.pth", images=photo_frames(1), **WIDGETS)


def test_is_changed_follows_the_model_file(models):
    first = SpinBotUpscale.IS_CHANGED(model_name=SRVGG, tile=512)
    assert SpinBotUpscale.IS_CHANGED(model_name=SRVGG) == first
    factory.tiny_realesrgan_x2plus(models)  # another file changing does not matter
    assert SpinBotUpscale.IS_CHANGED(model_name=SRVGG) == first
    torch.save({"params": factory.srvgg_state_dict(seed=99, num_conv=3)}, models / SRVGG)
    assert SpinBotUpscale.IS_CHANGED(model_name=SRVGG) != first
    assert SpinBotUpscale.IS_CHANGED(model_name="missing.pth") == "missing.pth"
