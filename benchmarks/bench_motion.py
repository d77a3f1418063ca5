"""Motion stage benchmark: SpinBot SVD (clip engine) beside diffusers' pipeline called directly.

    python -m benchmarks.bench_motion [--cpu-only | --gpu-only] [--steps 25] [--frames 25]

CPU: the tiny SVD-XT single file from the factory (release key names), one clip and a chained
duration; the node's overhead over a bare pipeline call is what is measured (the output is
noise). GPU (only when CUDA is available): full-size SVD-XT built from the shipped configs with
random fp16 weights, 1024x576, 25 frames, 25 steps; seconds and peak VRAM for
- SpinBot with everything on the GPU (policy `full`) and with the 16 GB policy (model CPU
  offload + UNet forward chunking + VAE decode chunk 2), and
- diffusers' pipeline called directly: plain `.to("cuda")` with decode_chunk_size=8, and with its
  documented low-memory settings (enable_model_cpu_offload, unet.enable_forward_chunking,
  decode_chunk_size=2).
Random weights can overflow fp16 into NaN frames; the benchmark converts those to black (the
node itself reports NaN frames as an error). Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPINBOT_PROGRESS", "0")

from tests._pack import load_pack  # noqa: E402

load_pack()
from spinbot.nodes import runtime  # noqa: E402
from spinbot.nodes.motion import checkpoint as ckpt  # noqa: E402
from spinbot.nodes.motion import generate as gen  # noqa: E402
from tests import sd_layout_svd as layout  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _measure(fn, device: str) -> tuple[float, int]:
    """Seconds and peak allocated VRAM (0 on CPU) of one call."""
    if device == "cuda":
        runtime.release_memory()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - t0
    return seconds, (torch.cuda.max_memory_allocated() if device == "cuda" else 0)


def _direct(pipe, image: np.ndarray, s: gen.MotionSettings, frames: int, chunk: int):
    from PIL import Image

    with torch.inference_mode():
        return pipe(Image.fromarray(image), height=s.height, width=s.width, num_frames=frames,
                    num_inference_steps=s.steps, min_guidance_scale=s.min_guidance,
                    max_guidance_scale=s.max_guidance, fps=s.fps_conditioning,
                    motion_bucket_id=s.motion_bucket_id, noise_aug_strength=s.noise_aug_strength,
                    decode_chunk_size=chunk, generator=torch.Generator("cpu").manual_seed(s.seed),
                    output_type="np").frames


def _first_frame(s: gen.MotionSettings) -> tuple[torch.Tensor, np.ndarray]:
    image = torch.rand(1, s.height, s.width, 3, generator=torch.Generator().manual_seed(0))
    return image, gen.images_to_uint8(gen.fit_image(image, s.width, s.height), "image")[0]


def _line(label: str, seconds: float, peak: int, device: str) -> str:
    vram = f"  peak VRAM {peak / 2**30:6.2f} GiB" if device == "cuda" else ""
    return f"  {label:<44} {seconds:8.2f} s{vram}"


# ----------------------------------------------------------------------------- CPU

def cpu_section(args) -> None:
    os.environ["SPINBOT_DEVICE"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPINBOT_TEMP_DIR"] = tmp
        path = Path(tmp) / "svd_xt.safetensors"
        t0 = time.perf_counter()
        layout.write_tiny_checkpoint(path, "svd_xt", seed=25)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = ckpt.load_motion_model(str(path))
        load_s = time.perf_counter() - t0
        s = gen.MotionSettings(width=128, height=128, frames=8, steps=4, decode_chunk_size=4,
                               output_fps=8.0)
        image, first = _first_frame(s)
        print(f"CPU tiny SVD-XT ({sum(p.numel() for p in model.pipe.unet.parameters()) / 1e6:.1f} M "
              f"UNet params): write {write_s:.2f} s, offline load {load_s:.2f} s")
        direct_s = node_s = float("inf")
        for seed in range(args.repeats):  # interleaved, best of N: the machine is shared
            direct_s = min(direct_s, _measure(lambda: _direct(model.pipe, first, s, 8, 4), "cpu")[0])
            node_s = min(node_s, _measure(lambda: gen.animate(model, image, replace(s, seed=seed)),
                                          "cpu")[0])
        print(_line("diffusers pipeline, 1 clip 128x128x8, 4 steps", direct_s, 0, "cpu"))
        print(_line(f"SpinBot SVD, same clip ({(node_s - direct_s) / node_s * 100:+.1f} %)",
                    node_s, 0, "cpu"))
        seconds, _ = _measure(lambda: gen.animate(model, image, s, duration=3.0), "cpu")
        print(_line("SpinBot SVD, 3.0 s at 8 fps (24 frames, 4 clips)", seconds, 0, "cpu"))
        ckpt.clear_cache()


# ----------------------------------------------------------------------------- GPU

def random_svd_xt(device: str, dtype: torch.dtype):
    """Full-size SVD-XT from the shipped configs with random weights (built on the GPU: fast)."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler,
                           StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    cfg = os.path.join(ckpt.CONFIGS_DIR, "svd_xt")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel.from_config(ckpt._config(cfg, "unet"))
        vae = AutoencoderKLTemporalDecoder.from_config(ckpt._config(cfg, "vae"))
        encoder = CLIPVisionModelWithProjection(ckpt._vision_config(cfg))
    with open(os.path.join(cfg, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
        scheduler = EulerDiscreteScheduler.from_config(json.load(f))
    extractor = CLIPImageProcessor.from_pretrained(os.path.join(cfg, "feature_extractor"))
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet,
                                        scheduler=scheduler, feature_extractor=extractor)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _nan_tolerant(images_to_uint8):
    def convert(image, what="image", first_index=0):
        return images_to_uint8(torch.nan_to_num(image, 0.0, 0.0, 0.0), what, first_index)
    return convert


def _forward_chunking_off(unet) -> None:
    """The SVD UNet has enable_forward_chunking but no disable: reset every block's chunk."""
    for module in unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(None, dim=0)


def gpu_section(args) -> None:
    if not torch.cuda.is_available():
        print("GPU: no GPU (CUDA not available): full-size SVD-XT figures skipped")
        return
    os.environ["SPINBOT_DEVICE"] = "cuda"
    device, dtype = torch.device("cuda"), torch.float16
    gen.images_to_uint8 = _nan_tolerant(gen.images_to_uint8)
    s = gen.MotionSettings(width=1024, height=576, frames=args.frames, steps=args.steps,
                           decode_chunk_size=0, output_fps=8.0)
    image, first = _first_frame(s)
    print(f"GPU {torch.cuda.get_device_name()}: full-size SVD-XT, random fp16 weights, "
          f"{s.width}x{s.height}, {args.frames} frames, {args.steps} steps")
    t0 = time.perf_counter()
    pipe = random_svd_xt("cuda", dtype)
    print(f"  (built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e9:.2f} B UNet params)")
    low = ckpt.memory_policy(device, "low_vram")
    full = ckpt.memory_policy(device, "full")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPINBOT_TEMP_DIR"] = tmp
        # 16 GB policy: offload hooks and forward chunking, set up exactly as the loader does
        pipe.to("cpu")
        runtime.release_memory()
        ckpt.apply_policy(pipe, device, low)
        model = ckpt.MotionModel(pipe=pipe, arch="svd_xt", name="random svd_xt", dtype=dtype,
                                 device=device, extra={"policy": low})
        gen.animate(model, image, replace(s, steps=2, seed=99))  # warm-up (kernels, hooks)
        rows = [("SpinBot SVD, 16 GB policy (offload+chunking)",
                 _measure(lambda: gen.animate(model, image, replace(s, seed=1)), "cuda")),
                ("diffusers direct, documented low-memory",
                 _measure(lambda: _direct(pipe, first, s, args.frames, 2), "cuda"))]
        # everything on the GPU
        pipe.remove_all_hooks()
        _forward_chunking_off(pipe.unet)
        ckpt.apply_policy(pipe, device, full)
        model = replace(model, extra={"policy": full})
        rows += [("SpinBot SVD, full (policy off)",
                  _measure(lambda: gen.animate(model, image, replace(s, seed=2)), "cuda")),
                 ("diffusers direct, .to(cuda), decode chunk 8",
                  _measure(lambda: _direct(pipe, first, s, args.frames, 8), "cuda"))]
    for label, (seconds, peak) in rows:
        print(_line(label, seconds, peak, "cuda"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cpu-only", action="store_true")
    group.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()
    if not args.gpu_only:
        cpu_section(args)
    if not args.cpu_only:
        gpu_section(args)


if __name__ == "__main__":
    main()
