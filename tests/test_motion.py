"""Motion stage: offline SVD loading from release-layout single files, chained clips, policy.

The tiny SVD-XT comes from tests/sd_layout_svd.py (release key names, tiny widths); every run is
64x64, 4 frames per clip and 2 steps so the file stays fast on two shared CPU cores.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError, images_to_uint8, make_audio
from spinbot.nodes.motion import checkpoint as ckpt
from spinbot.nodes.motion import generate as gen
from spinbot.nodes.motion import nodes_motion as N
from spinbot.nodes.motion.checkpoint import MotionModelError
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.video.store import video_root
from tests.offline import refuse_network
from tests import sd_layout_svd as layout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """models root with checkpoints/svd_xt.safetensors (+ .config) and clip_vision; the diffusers
    modules the file was written from, for weight comparisons."""
    root = tmp_path_factory.mktemp("motion_models")
    _, models = layout.write_tiny_checkpoint(root / "checkpoints" / "svd_xt.safetensors",
                                             "svd_xt", seed=25)
    layout.write_tiny_clip_vision(root / "clip_vision" / "clip_vision_h.safetensors", seed=14)
    return root, models


@pytest.fixture(autouse=True)
def use_models(tiny, monkeypatch, spinbot_dirs):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(tiny[0]))
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    runtime.request_interrupt(False)


@pytest.fixture(scope="module")
def model(tiny):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPINBOT_DEVICE", "cpu")
        return ckpt.load_motion_model(str(tiny[0] / "checkpoints" / "svd_xt.safetensors"))


@pytest.fixture
def no_network(monkeypatch):
    """Any hub call or socket connection fails the test."""
    refuse_network(monkeypatch)
    ckpt.clear_cache()


class Recorder:
    """Stands in for the pipeline: records each call's conditioning frame, kwargs and frames."""

    def __init__(self, pipe, on_call=None):
        self.pipe, self.on_call = pipe, on_call
        self.images, self.kwargs, self.outputs = [], [], []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, image, **kwargs):
        self.images.append(np.asarray(image).copy())
        self.kwargs.append(kwargs)
        if self.on_call:
            self.on_call(len(self.images))
        out = self.pipe(image, **kwargs)
        self.outputs.append(images_to_uint8(out.frames[0].float().permute(0, 2, 3, 1)))
        return out


def _settings(**kw) -> gen.MotionSettings:
    base = dict(width=64, height=64, frames=4, steps=2, seed=3, decode_chunk_size=2,
                output_fps=8.0, crossfade=2)
    base.update(kw)
    return gen.MotionSettings(**base)


def _image(seed=0, h=80, w=100):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _partials() -> list[str]:
    return [d for d in os.listdir(video_root()) if ".partial-" in d]


# ----------------------------------------------------------------------------- key names

def test_converter_reads_exactly_the_release_keys_of_full_size_svd_xt():
    """On the shipped full-size configs (meta tensors, no weights) every diffusers parameter maps
    to a tensor name of the released svd_xt.safetensors and every released UNet / VAE / CLIP
    tensor is used."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    from spinbot.nodes.motion import svd_keys as K

    cfg = str(layout.CONFIGS / "svd_xt")
    ucfg, vcfg = ckpt._config(cfg, "unet"), ckpt._config(cfg, "vae")
    with init_empty_weights():
        unet = UNetSpatioTemporalConditionModel.from_config(ucfg)
        vae = AutoencoderKLTemporalDecoder.from_config(vcfg)
        clip = CLIPVisionModelWithProjection(ckpt._vision_config(cfg))
    read = set()
    for sources in (K.unet_sources(unet.state_dict().keys(), ucfg),
                    K.vae_sources(vae.state_dict().keys(), vcfg, K.ENCODER_PREFIXES[0]),
                    K.image_encoder_sources(clip.state_dict().keys())):
        for srcs, _t in sources.values():
            read.update(srcs)
    release = layout.release_keys()
    assert len(release) == 2194
    assert read == release


def test_tiny_checkpoint_uses_the_release_key_names(tiny):
    from safetensors import safe_open

    with safe_open(str(tiny[0] / "checkpoints" / "svd_xt.safetensors"), "pt") as f:
        keys = set(f.keys())
    release = layout.release_keys()
    # the release also keeps the first-stage VAE encoder (ComfyUI encodes with it)
    assert {k for k in keys - release if not k.startswith("first_stage_model.encoder.")} == set()
    layers = layout.TINY_IMAGE_ENCODER["num_hidden_layers"]
    missing = release - keys
    assert missing and all(".transformer.resblocks." in k and
                           int(k.split(".resblocks.")[1].split(".")[0]) >= layers for k in missing)


# ----------------------------------------------------------------------------- loading

def test_single_file_loads_offline_with_the_checkpoint_weights(no_network, tiny):
    root, models = tiny
    loaded = N.SpinBotSVDModel().load("svd_xt.safetensors", "none", "auto", "auto")[0]
    assert loaded.arch == "svd_xt" and loaded.default_frames == 25
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    for part in ("unet", "vae"):
        want = models[part].state_dict()
        got = getattr(loaded.pipe, part).state_dict()
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    pixels = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.pipe.image_encoder(pixels).image_embeds,
                                   models["image_encoder"](pixels).image_embeds)
    # the published SVD-XT scheduler settings, from the shipped config
    assert loaded.pipe.scheduler.config.prediction_type == "v_prediction"
    assert loaded.pipe.scheduler.config.use_karras_sigmas is True


def test_clip_vision_file_replaces_the_checkpoint_encoder(no_network, tiny):
    from safetensors.torch import load_file

    loaded = N.SpinBotSVDModel().load("svd_xt.safetensors", "clip_vision_h.safetensors")[0]
    want = load_file(str(tiny[0] / "clip_vision" / "clip_vision_h.safetensors"))
    got = loaded.pipe.image_encoder.state_dict()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_diffusers_folder_loads_offline(no_network, tiny, tmp_path, monkeypatch):
    single = ckpt.load_motion_model(str(tiny[0] / "checkpoints" / "svd_xt.safetensors"))
    models = tmp_path / "m"
    single.pipe.save_pretrained(str(models / "diffusers" / "tiny-svd"))
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models))
    assert "diffusers/tiny-svd" in N.SpinBotSVDModel.INPUT_TYPES()["required"]["checkpoint"][0]
    folder = N.SpinBotSVDModel().load("diffusers/tiny-svd")[0]
    assert folder.arch == "svd_xt"
    want = single.pipe.unet.state_dict()
    for k, v in folder.pipe.unet.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)


def test_plain_svd_name_gets_the_14_frame_config(tiny, tmp_path):
    import shutil

    path = tmp_path / "svd.safetensors"
    shutil.copy(tiny[0] / "checkpoints" / "svd_xt.safetensors", path)
    layout.write_tiny_config("svd", tmp_path / "svd.config")
    loaded = ckpt.load_motion_model(str(path))
    assert loaded.arch == "svd" and loaded.default_frames == 14


def test_wrong_checkpoints_give_clear_errors(tmp_path):
    from safetensors.torch import save_file

    def t():
        return torch.zeros(1)

    sd15 = tmp_path / "v1-5-pruned-emaonly.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": t(),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": t(),
               "first_stage_model.decoder.conv_in.weight": t()}, str(sd15))
    with pytest.raises(MotionModelError, match="image model.*not Stable Video Diffusion"):
        ckpt.load_motion_model(str(sd15))
    other = tmp_path / "RealESRGAN_x4plus.safetensors"
    save_file({"conv_first.weight": t()}, str(other))
    with pytest.raises(MotionModelError, match="not a Stable Video Diffusion checkpoint.*svd_xt"):
        ckpt.load_motion_model(str(other))
    broken = tmp_path / "svd_xt.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(MotionModelError, match="not a readable safetensors file"):
        ckpt.load_motion_model(str(broken))
    pickled = tmp_path / "svd_xt.ckpt"
    pickled.write_bytes(b"x")
    with pytest.raises(MotionModelError, match="only .safetensors"):
        ckpt.load_motion_model(str(pickled))
    with pytest.raises(MotionModelError, match="not found in models/checkpoints"):
        N.SpinBotSVDModel().load("svd_missing.safetensors")


# ----------------------------------------------------------------------------- planning

def test_plan_size_and_join_arithmetic():
    assert gen.frames_for(1.2, 8.0, 4) == 10 and gen.frames_for(0, 8.0, 25) == 25
    assert gen.frames_for(2.0, 25.0, 14) == 50  # exact products are not rounded up
    assert gen.clip_plan(10, 4) == [4, 3, 3] and gen.clip_plan(3, 4) == [3]
    assert gen.snap_size(1000, 570) == (960, 512) and gen.snap_size(10, 10) == (64, 64)
    last = np.full((2, 2, 3), 200, np.uint8)
    clip = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 20, 40, 60, 80)])
    joined = gen.join_clip(last, clip, 2)
    assert [int(f[0, 0, 0]) for f in joined] == [round(200 * 2 / 3 + 20 / 3), round(200 / 3 + 80 / 3),
                                                 60, 80]
    img = torch.zeros(1, 100, 200, 3)
    img[:, :, 50:150] = 1.0  # a white square in the middle of a wide black image
    crop = gen.fit_image(img, 64, 64, "crop")
    pad = gen.fit_image(img, 64, 64, "pad")
    assert crop.shape == pad.shape == (1, 64, 64, 3)
    assert crop.mean() > 0.9 and pad[:, :10].max() == 0 and pad[:, 32].mean() > 0.4


# ----------------------------------------------------------------------------- generating

def test_duration_sets_frame_count_and_clips_chain_from_the_last_frame(model, monkeypatch):
    updates = []

    class CountingProgress(runtime.Progress):
        def update(self, n=1, preview=None):
            updates.append((self.total, n))
            super().update(n, preview)

    monkeypatch.setattr(gen.runtime, "Progress", CountingProgress)
    rec = Recorder(model.pipe)
    video = gen.animate(replace(model, pipe=rec), _image(), _settings(), duration=1.2)
    assert (video.frame_count, video.width, video.height, video.fps) == (10, 64, 64, 8.0)
    frames = video.read()
    assert frames.shape == (10, 64, 64, 3) and frames.dtype == np.uint8
    assert len(rec.images) == 3 and all(o.shape == (4, 64, 64, 3) for o in rec.outputs)
    # clip 1 is written as generated; clips 2 and 3 are conditioned on the frame written last
    np.testing.assert_array_equal(frames[:4], rec.outputs[0])
    np.testing.assert_array_equal(rec.images[1], frames[3])
    np.testing.assert_array_equal(rec.images[2], frames[6])
    # ... and continue it: their frame 0 is dropped, the next frames fade in from it
    np.testing.assert_array_equal(frames[4:7], gen.join_clip(frames[3], rec.outputs[1], 2))
    w = 1 / 3
    expected = np.floor((1 - w) * frames[3].astype(np.float32)
                        + w * rec.outputs[1][1].astype(np.float32) + 0.5)
    np.testing.assert_array_equal(frames[4], expected.astype(np.uint8))
    assert np.abs(frames[4].astype(int) - frames[3]).mean() < \
        np.abs(rec.outputs[1][1].astype(int) - frames[3]).mean()
    # clip k uses seed + k; progress counts every step of every clip
    assert [kw["generator"].initial_seed() for kw in rec.kwargs] == [3, 4, 5]
    assert updates == [(6, 1)] * 6
    # the same inputs reuse the stored video without running the model again
    again = gen.animate(replace(model, pipe=rec), _image(), _settings(), duration=1.2)
    assert again.key == video.key and len(rec.images) == 3


def test_node_covers_audio_and_segments_and_carries_them(model, monkeypatch):
    rec = Recorder(model.pipe)
    monkeypatch.setattr(N, "load_motion_model", lambda *a, **k: replace(model, pipe=rec))
    svd = N.SpinBotSVDModel().load("svd_xt.safetensors")[0]
    audio = make_audio(torch.zeros(1, 16000 * 7 // 10), 16000)  # 0.7 s -> ceil(2.8) = 3 frames
    args = (svd, _image(1), 100, 64, "crop", 4, 6, 127, 0.02, 2, 1.0, 2.5, 7, 2, 4.0)
    video, last, count = N.SpinBotSVD().animate(*args, audio=audio)
    assert count == video.frame_count == 3 and video.audio is not None and video.fps == 4.0
    assert (video.width, video.height) == (64, 64)  # 100 rounds down to 64
    np.testing.assert_array_equal((last[0] * 255).round().byte().numpy(), video.read(2)[0])
    segments = (Segment(0, "Hello there.", 0.0, 0.5), Segment(1, "Bye.", 0.6, 0.9))
    video2, _, count2 = N.SpinBotSVD().animate(*args, segments=segments)
    assert count2 == 4 and video2.segments[1]["end"] == 0.9  # ceil(0.9 x 4) = 4
    _, _, count3 = N.SpinBotSVD().animate(*args, duration_seconds=0.25, audio=audio)
    assert count3 == 1  # an explicit duration wins over the audio's length
    assert len(rec.images) == 3


def test_one_image_per_segment_starts_each_segment_at_its_start(model):
    """A story: image k starts the clips of segment k, cut on the frame where the segment starts."""
    rec = Recorder(model.pipe)
    images = torch.cat([_image(4), _image(5)])
    segments = [Segment(0, "One.", 0.0, 0.5).to_dict(), Segment(1, "Two, longer.", 0.5, 1.2).to_dict()]
    video = gen.animate(replace(model, pipe=rec), images, _settings(), duration=1.2, segments=segments)
    frames = video.read()
    assert video.frame_count == 10  # ceil(1.2 x 8); the cut is at round(0.5 x 8) = 4
    firsts = gen.images_to_uint8(gen.fit_image(images, 64, 64))
    # scene 1: one 4-frame clip from image 1; scene 2: 6 frames, two clips, the first from image 2
    assert len(rec.images) == 3
    np.testing.assert_array_equal(rec.images[0], firsts[0])
    np.testing.assert_array_equal(rec.images[1], firsts[1])
    np.testing.assert_array_equal(frames[:4], rec.outputs[0])
    np.testing.assert_array_equal(frames[4:8], rec.outputs[1])  # a cut: no fade from scene 1
    np.testing.assert_array_equal(rec.images[2], frames[7])
    assert gen.scene_frames(10, 8.0, segments, 2) == [4, 6]
    with pytest.raises(MediaError, match="3 images for 2 segments"):
        gen.animate(model, torch.cat([images, _image(6)]), _settings(), duration=1.2, segments=segments)


def test_same_seed_same_clip_other_seed_differs(model):
    first = gen.images_to_uint8(gen.fit_image(_image(2), 64, 64))[0]
    settings = _settings()
    with runtime.Progress(6) as progress:
        a = gen.run_clip(model, first, settings, 4, 11, progress)
        b = gen.run_clip(model, first, settings, 4, 11, progress)
        c = gen.run_clip(model, first, settings, 4, 12, progress)
    assert a.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1.0


def test_cancel_between_steps_leaves_no_video(model):
    rec = Recorder(model.pipe, on_call=lambda n: runtime.request_interrupt(True) if n == 2 else None)
    with pytest.raises(runtime.Interrupted):
        gen.animate(replace(model, pipe=rec), _image(), _settings(), duration=1.0)
    assert len(rec.images) == 2 and _partials() == []
    assert [d for d in os.listdir(video_root()) if not d.startswith(".")] == []


def test_bad_settings_are_clear_errors(model):
    with pytest.raises(MotionModelError, match="min guidance"):
        gen.animate(model, _image(), _settings(min_guidance=4.0, max_guidance=2.0))
    with pytest.raises(MotionModelError, match="fit mode"):
        gen.animate(model, _image(), _settings(fit="zoom"))


# ----------------------------------------------------------------------------- 16 GB policy

class FakeUNet:
    def __init__(self):
        self.chunking = False

    def enable_forward_chunking(self, chunk_size=None, dim=0):
        self.chunking = True


class FakePipe:
    def __init__(self):
        self.unet, self.offload, self.moved = FakeUNet(), None, None

    def enable_model_cpu_offload(self, device=None):
        self.offload = device

    def to(self, device):
        self.moved = device


@pytest.mark.parametrize("total_gb,free_gb,mode,offload", [
    (16, 15, "auto", True), (24, 10, "auto", True), (80, 70, "auto", False),
    (80, 70, "low_vram", True), (16, 15, "full", False)])
def test_memory_policy_turns_on_offload_chunking_and_decode_chunks(monkeypatch, total_gb, free_gb,
                                                                   mode, offload):
    monkeypatch.setattr(ckpt.runtime, "total_memory_bytes", lambda d=None: total_gb << 30)
    monkeypatch.setattr(ckpt.runtime, "free_memory_bytes", lambda d=None: free_gb << 30)
    cuda = torch.device("cuda")
    policy = ckpt.memory_policy(cuda, mode)
    assert policy.offload is offload and policy.forward_chunking is offload
    assert policy.decode_chunk_size == (2 if offload else 8)
    pipe = FakePipe()
    ckpt.apply_policy(pipe, cuda, policy)
    assert (pipe.offload == cuda) is offload and (pipe.moved == cuda) is (not offload)
    assert pipe.unet.chunking is offload
    assert ckpt.memory_policy(torch.device("cpu"), "auto").offload is False


def test_policy_caps_the_decode_chunk(model):
    policy = ckpt.MemoryPolicy(True, True, 2, "test")
    rec = Recorder(model.pipe)
    capped = replace(model, pipe=rec, extra={**model.extra, "policy": policy})
    first = gen.images_to_uint8(gen.fit_image(_image(), 64, 64))[0]
    with runtime.Progress(3) as progress:
        gen.run_clip(capped, first, _settings(decode_chunk_size=0, steps=1), 4, 0, progress)
        gen.run_clip(capped, first, _settings(decode_chunk_size=3, steps=1), 4, 0, progress)
        gen.run_clip(replace(model, pipe=rec), first, _settings(decode_chunk_size=0, steps=1), 4, 0,
                     progress)
    # 0 takes the policy's chunk, a larger widget value is capped; on CPU all frames at once
    assert [kw["decode_chunk_size"] for kw in rec.kwargs] == [2, 2, 4]


def test_without_its_own_config_the_shipped_full_size_config_is_used(tiny, tmp_path):
    import shutil

    path = tmp_path / "svd_xt_1_1.safetensors"  # tiny weights, no svd_xt_1_1.config/ beside it
    shutil.copy(tiny[0] / "checkpoints" / "svd_xt.safetensors", path)
    assert ckpt.config_folder(str(path), "svd_xt") == os.path.join(ckpt.CONFIGS_DIR, "svd_xt")
    with pytest.raises(MotionModelError, match="do not fit its config.*svd_xt_1_1.config"):
        ckpt.load_motion_model(str(path))


def test_factory_registers_the_tiny_svd_and_clip_vision(tmp_path):
    from tests import factory
    from tests.factory_motion import tiny_clip_vision_h, tiny_svd_xt

    assert tiny_svd_xt in factory.BUILDERS["checkpoints"]
    assert tiny_clip_vision_h in factory.BUILDERS["clip_vision"]
    written = factory.build(tmp_path, only=["clip_vision"])
    assert [p.name for p in written] == ["clip_vision_h.safetensors"]
    layout.write_tiny_config("svd_xt", tmp_path / "cfg")
    encoder = ckpt.load_clip_vision(str(written[0]), str(tmp_path / "cfg"), torch.float16)
    assert encoder.dtype == torch.float16
    assert encoder.config.num_hidden_layers == layout.TINY_IMAGE_ENCODER["num_hidden_layers"]
    with pytest.raises(MotionModelError, match="image encoder weight .*layers.2.* is missing"):
        ckpt.load_clip_vision(str(written[0]), str(layout.CONFIGS / "svd_xt"), torch.float32)
