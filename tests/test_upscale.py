"""Upscale engine: spandrel loading of the tiny Real-ESRGAN models, tiling parity, padding, target
scale, precision, out-of-memory fallback, memory bounds and clear errors."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.upscale import engine, tiling
from spinbot.nodes.upscale.engine import UpscaleMemoryError, UpscaleSettings, upscale_images
from spinbot.nodes.upscale.model import UpscaleModelError, load_upscaler, pick_dtype
from tests import factory
from tests._pack import ROOT
from tests.media import astronaut

X4, X2, ANIME, SRVGG = ("RealESRGAN_x4plus.pth", "RealESRGAN_x2plus.pth",
                        "RealESRGAN_x4plus_anime_6B.pth", "realesr-general-x4v3.pth")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_upscalers")
    factory.build(out, only=["upscale_models"])
    return out / "upscale_models"


@pytest.fixture
def models(built, spinbot_dirs):
    folder = spinbot_dirs["models"] / "upscale_models"
    shutil.copytree(built, folder)
    return folder


def frames(count: int, height: int, width: int) -> torch.Tensor:
    """Different crops of a real photo: structure at every scale, and no two frames alike."""
    photo = torch.from_numpy(np.array(astronaut(192))).float().div(255.0)
    return torch.stack([photo[7 * i:7 * i + height, 5 * i:5 * i + width] for i in range(count)])


def test_factory_writes_release_layouts_that_spandrel_detects(models):
    expected = {X4: ("params_ema", "ESRGAN", 4, 3), X2: ("params_ema", "ESRGAN", 2, 12),
                ANIME: ("params_ema", "ESRGAN", 4, 3), SRVGG: ("params", "Compact", 4, 3)}
    assert sorted(p.name for p in models.iterdir()) == sorted(expected)
    for name, (wrapper, arch, scale, in_ch) in expected.items():
        raw = torch.load(models / name, weights_only=True)
        assert list(raw) == [wrapper], name
        sd = raw[wrapper]
        if arch == "ESRGAN":
            for key in ("conv_first.weight", "body.0.rdb1.conv1.weight", "body.0.rdb3.conv5.bias",
                        "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
                        "conv_hr.weight", "conv_last.weight"):
                assert key in sd, (name, key)
            assert sd["conv_first.weight"].shape[1] == in_ch
            assert sd["body.0.rdb1.conv2.weight"].shape[1] == 8 + 32  # num_feat + growth
        else:
            assert sd["body.0.weight"].shape == (8, 3, 3, 3) and sd["body.1.weight"].shape == (8,)
        up = load_upscaler(name)
        assert up.descriptor.architecture.id == arch and up.scale == scale, up.describe()
    assert "unshuffle" in load_upscaler(X2).descriptor.tags
    assert "2nb" in load_upscaler(ANIME).descriptor.tags
    assert load_upscaler(X2).multiple_of == 4


@pytest.mark.parametrize("name,tile,overlap", [(X4, 24, 16), (X2, 24, 16), (SRVGG, 16, 12)])
def test_tiled_equals_untiled(models, name, tile, overlap):
    up = load_upscaler(name)
    src = frames(3, 45, 61)  # odd sizes, not multiples of the x2 model's 4
    whole = upscale_images(up, src, UpscaleSettings(tile=0, frames_per_batch=3))
    assert whole.shape == (3, 45 * up.scale, 61 * up.scale, 3)
    inside = ((whole > 0.01) & (whole < 0.99)).float().mean()
    assert inside > 0.5 and whole.std() > 0.05, "tiny model output is saturated: parity is moot"
    tiled = upscale_images(up, src, UpscaleSettings(tile=tile, overlap=overlap, frames_per_batch=2))
    assert len(tiling.plan_axis(45, tile, overlap)) > 1 and len(tiling.plan_axis(61, tile, overlap)) > 1
    assert (tiled - whole).abs().max() < 1e-3
    # Without context the seams show: the comparison above can fail.
    hard = upscale_images(up, src, UpscaleSettings(tile=tile, overlap=0, frames_per_batch=2))
    assert (hard - whole).abs().max() > 1e-2


def test_tile_weights_sum_to_one_and_skip_context():
    for length, tile, overlap, scale in [(45, 24, 16, 4), (61, 16, 12, 2), (100, 10, 40, 1)]:
        spans = tiling.plan_axis(length, tile, overlap)
        blend = tiling.blend_width(spans, overlap)
        total = torch.zeros(length * scale)
        for s in spans:
            weight = tiling.axis_weights(s, length, scale, blend)
            total[s.start * scale:s.stop * scale] += weight
            # the outer half of the overlap is context only
            pos = (torch.arange(s.start * scale, s.stop * scale) + 0.5) / scale
            outside = (pos < s.core_start - blend / 2) | (pos > s.core_stop + blend / 2)
            assert not weight[outside].any()
        assert torch.allclose(total, torch.ones_like(total)), (length, tile, overlap)


def test_unshuffle_windows_start_on_multiples_and_pad_only_at_the_end():
    spans = tiling.plan_axis(77, 24, 8, multiple=4, minimum=4)
    assert all(s.start % 4 == 0 and (s.stop - s.start + s.pad) % 4 == 0 for s in spans)
    assert [s.pad for s in spans[:-1]] == [0] * (len(spans) - 1) and spans[-1].stop == 77
    assert spans[0].core_start == 0 and spans[-1].core_stop == 77


@pytest.mark.parametrize("name", [X2, X4, SRVGG])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (7, 2), (13, 9)])
def test_tiny_and_odd_frames_are_padded_and_cropped_back(models, name, size):
    up = load_upscaler(name)
    src = frames(2, *size)
    out = upscale_images(up, src, UpscaleSettings(tile=4, overlap=2))
    assert out.shape == (2, size[0] * up.scale, size[1] * up.scale, 3)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_target_scale_below_native_resamples_after_the_model(models):
    up = load_upscaler(X4)
    src = frames(2, 21, 30)
    native = upscale_images(up, src, UpscaleSettings(tile=0))
    half = upscale_images(up, src, UpscaleSettings(tile=0, target_scale=2.0))
    assert half.shape == (2, 42, 60, 3)
    expected = F.interpolate(native.permute(0, 3, 1, 2), size=(42, 60), mode="bicubic",
                             antialias=True).clamp(0, 1).permute(0, 2, 3, 1)
    assert (half - expected).abs().max() < 1e-5
    odd = upscale_images(up, src, UpscaleSettings(tile=0, target_scale=2.5))
    assert odd.shape == (2, round(21 * 2.5), round(30 * 2.5), 3)
    with pytest.raises(UpscaleModelError, match="above .*native x4"):
        upscale_images(up, src, UpscaleSettings(target_scale=8.0))


def test_precision_choice_follows_the_descriptor(models, caplog):
    up = load_upscaler(X4)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype(up, "auto", cpu) == torch.float32
    assert pick_dtype(up, "auto", cuda) == torch.float16
    assert pick_dtype(up, "bf16", cpu) == torch.bfloat16
    up.descriptor.supports_half = False
    with caplog.at_level(logging.WARNING, logger="spinbot.upscale"):
        assert pick_dtype(up, "fp16", cuda) == torch.float32
    assert "does not support fp16" in caplog.text
    with pytest.raises(UpscaleModelError, match="precision must be one of"):
        pick_dtype(up, "int8", cpu)
    # bf16 actually runs (CPU supports it) and stays close to fp32
    src = frames(1, 20, 24)
    ref = upscale_images(up, src, UpscaleSettings(tile=0))
    low = upscale_images(up, src, UpscaleSettings(tile=0, precision="bf16"))
    assert low.dtype == torch.float32 and (low - ref).abs().mean() < 0.02
    assert next(up.descriptor.model.parameters()).dtype == torch.float32  # restored after the run


def _oom_above(up, limit, calls, exc_type=torch.OutOfMemoryError, max_batch=None):
    real = up.forward

    def forward(x):
        calls.append(tuple(x.shape))
        if max(x.shape[-2:]) > limit or (max_batch and x.shape[0] > max_batch):
            raise exc_type("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x)
    return forward


@pytest.mark.parametrize("exc_type", [torch.OutOfMemoryError, torch.cuda.OutOfMemoryError,
                                      RuntimeError])
def test_out_of_memory_halves_the_tile_and_retries(models, monkeypatch, caplog, exc_type):
    monkeypatch.setattr(engine, "MIN_TILE", 8)
    up = load_upscaler(SRVGG)
    src = frames(3, 45, 61)
    reference = upscale_images(up, src, UpscaleSettings(tile=0))
    calls = []
    monkeypatch.setattr(up, "forward", _oom_above(up, 48, calls, exc_type))
    with caplog.at_level(logging.WARNING, logger="spinbot.upscale"):
        out = upscale_images(up, src, UpscaleSettings(tile=0, overlap=12, frames_per_batch=3))
    assert out.shape == reference.shape and (out - reference).abs().max() < 1e-3
    assert max(calls[0][-2:]) == 61 and all(max(c[-2:]) <= 48 for c in calls[1:])
    assert "out of memory: retrying with 30px tiles" in caplog.text


def test_out_of_memory_then_fewer_frames_then_a_clear_error(models, monkeypatch):
    monkeypatch.setattr(engine, "MIN_TILE", 16)
    up = load_upscaler(SRVGG)
    src = frames(4, 20, 24)
    reference = upscale_images(up, src, UpscaleSettings(tile=0))
    calls = []
    monkeypatch.setattr(up, "forward", _oom_above(up, 1000, calls, max_batch=1))
    out = upscale_images(up, src, UpscaleSettings(tile=0, overlap=10, frames_per_batch=4))
    assert (out - reference).abs().max() < 1e-3
    assert calls[-1][0] == 1
    monkeypatch.setattr(up, "forward", _oom_above(up, 0, calls))
    with pytest.raises(UpscaleMemoryError, match=r"out of memory .*16px tiles and one frame"):
        upscale_images(up, src, UpscaleSettings(tile=64, frames_per_batch=2))


def test_other_errors_are_not_mistaken_for_out_of_memory(models, monkeypatch):
    up = load_upscaler(SRVGG)

    def broken(x):
        raise RuntimeError("Expected all tensors to be on the same device")
    monkeypatch.setattr(up, "forward", broken)
    with pytest.raises(RuntimeError, match="same device"):
        upscale_images(up, frames(1, 8, 8), UpscaleSettings())


def test_nan_output_names_the_precision(models, monkeypatch):
    up = load_upscaler(SRVGG)
    monkeypatch.setattr(up, "forward", lambda x: torch.full((x.shape[0], 3, x.shape[2] * 4,
                                                             x.shape[3] * 4), float("nan")))
    with pytest.raises(UpscaleModelError, match="NaN/inf values in float32; the model file may"):
        upscale_images(up, frames(1, 8, 8), UpscaleSettings())
    with pytest.raises(UpscaleModelError, match="in bfloat16; fp16 overflows .* set precision to fp32"):
        upscale_images(up, frames(1, 8, 8), UpscaleSettings(precision="bf16"))


def test_face_enhancer_hook_sees_upscaled_and_source_frames(models):
    up = load_upscaler(SRVGG)
    seen = []

    def enhancer(upscaled, source):
        seen.append((tuple(upscaled.shape), tuple(source.shape), upscaled.dtype))
        upscaled[:, :, :8, :8] = 1.0  # "paste a face" into the corner
        return upscaled
    out = upscale_images(up, frames(3, 10, 12), UpscaleSettings(tile=0, frames_per_batch=2,
                                                                target_scale=2.0),
                         face_enhancer=enhancer)
    assert seen == [((2, 3, 40, 48), (2, 3, 10, 12), torch.float32),
                    ((1, 3, 40, 48), (1, 3, 10, 12), torch.float32)]
    assert out.shape == (3, 20, 24, 3) and torch.allclose(out[:, :2, :2], torch.ones(3, 2, 2, 3))


# --------------------------------------------------------------------------- errors

class PickledObject:
    """Stands for code smuggled into a checkpoint; weights_only loading must refuse it."""


def test_missing_model_names_the_folder_and_the_source(spinbot_dirs):
    with pytest.raises(MissingModelError) as err:
        load_upscaler("RealESRGAN_x4plus.pth")
    text = str(err.value)
    assert "'upscale_models'" in text and str(spinbot_dirs["models"] / "upscale_models") in text
    assert "github.com/xinntao/Real-ESRGAN" in text


def test_non_upscaler_files_give_clear_errors(models):
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight":
                               torch.zeros(4, 4, 3, 3)}}, models / "sd_checkpoint.pth")
    with pytest.raises(UpscaleModelError, match="'sd_checkpoint.pth' is not an image upscaler"):
        load_upscaler("sd_checkpoint.pth")

    from safetensors.torch import save_file
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(models / "text_encoder.safetensors"))
    with pytest.raises(UpscaleModelError, match="not an image upscaler.*'upscale_models' folder"):
        load_upscaler("text_encoder.safetensors")

    (models / "truncated.pth").write_bytes((models / X4).read_bytes()[:5000])
    with pytest.raises(UpscaleModelError, match="'truncated.pth' could not be read.*re-download"):
        load_upscaler("truncated.pth")

    torch.save({"params_ema": {"conv": torch.zeros(1)}, "code": PickledObject()},
               models / "pickled.pth")  # would need arbitrary classes unpickled: refused
    with pytest.raises(UpscaleModelError, match="could not be read"):
        load_upscaler("pickled.pth")

    sd = factory.rrdbnet_state_dict()
    sd["conv_body.weight"] = torch.zeros(5, 5, 3, 3)  # right keys, wrong shapes
    torch.save({"params_ema": sd}, models / "broken.pth")
    with pytest.raises(UpscaleModelError, match="'broken.pth' looks like an upscaler but does not load"):
        load_upscaler("broken.pth")


# --------------------------------------------------------------------------- memory

_MEMORY_CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(2)
from tests._pack import load_pack
load_pack()
from spinbot.nodes.upscale.engine import UpscaleSettings, upscale_images, upscale_video
from spinbot.nodes.upscale.model import load_upscaler
from spinbot.nodes.video.store import write_video, content_key

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak_since(base):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 - base

def reset_peak():
    import gc
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # restart VmHWM from the current RSS
    return rss()

up = load_upscaler(sys.argv[1])
count, h, w, step = 50, 24, 32, 2
src = torch.rand(count, h, w, 3, generator=torch.Generator().manual_seed(0))
settings = UpscaleSettings(tile=0, frames_per_batch=step)
upscale_images(up, src[:step], settings)  # warm-up: allocator pools, kernels
video = write_video(content_key("mem", src), 25, iter([src]))
base = reset_peak()
out = upscale_images(up, src, settings)
image_peak = peak_since(base)
out_bytes = out.numel() * out.element_size()
del out
base = reset_peak()
result = upscale_video(up, video, settings)
video_peak = peak_since(base)
print(json.dumps({"image_peak": image_peak, "video_peak": video_peak, "out_bytes": out_bytes,
                  "frames": result.frame_count, "frame_bytes": out_bytes // count}))
"""


def test_fifty_frames_peak_memory_is_the_output_plus_one_step(models, spinbot_dirs):
    """Peak RSS of a 50-frame run, in a fresh process (VmHWM reset just before the run).

    Running all 50 frames through the tiny x4 RRDBNet at once peaks around 7x the output (its
    activations at full resolution); streaming costs the output plus one 2-frame step.
    """
    env = {**os.environ, "SPINBOT_MODELS_DIR": str(spinbot_dirs["models"]),
           "SPINBOT_TEMP_DIR": str(spinbot_dirs["temp"]), "SPINBOT_DEVICE": "cpu",
           "SPINBOT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, X4], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["frames"] == 50
    # A step's buffers are a few output frames (accumulator, resampled, converted copy); the
    # rest is slack for the allocator. A second copy of the output would not fit.
    step = 8 * r["frame_bytes"] + 6 * 2**20
    assert r["image_peak"] < r["out_bytes"] + step, r
    # Streamed to disk, the output is never held: the peak does not grow with the frame count.
    assert r["video_peak"] < step, r
