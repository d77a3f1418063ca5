"""Image stage benchmark: the SpinBot Stage Image node against diffusers' pipeline called directly.

    python -m benchmarks.bench_image [--steps 20] [--size 512] [--repeats 3] [--threads N] [--gpu-only]

CPU: the tiny SD 1.5 checkpoint from the factory at 512x512 (the node's overhead is what is
measured; the tiny model's output is noise). GPU (only when CUDA is available): full-size SD 1.5
and SDXL built from the pack's shipped configs with random weights in fp16, timings and peak VRAM
for both paths. Prints numbers; asserts nothing. On a shared machine pass --threads 1: with more
torch threads than free cores one busy neighbour can make a single run ten times slower.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPINBOT_PROGRESS", "0")

from tests._pack import load_pack  # noqa: E402

load_pack()
from spinbot.nodes.image import checkpoint as ckpt  # noqa: E402
from spinbot.nodes.image.generate import ImageSettings, generate_images  # noqa: E402
from tests import sd_layout  # noqa: E402


def _direct(pipe, settings: ImageSettings, device: str):
    gens = [torch.Generator("cpu").manual_seed(settings.seed)]
    return pipe(prompt=settings.prompt, negative_prompt=settings.negative or None,
                width=settings.width, height=settings.height,
                num_inference_steps=settings.steps, guidance_scale=settings.cfg,
                generator=gens, output_type="pt").images


def _time(fn, repeats: int, device: str) -> tuple[float, int]:
    best = float("inf")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    return best, peak


def compare(model: ckpt.ImageModel, settings: ImageSettings, device: str, label: str,
            repeats: int) -> None:
    generate_images(model, ImageSettings(**{**settings.__dict__, "steps": 2}))  # warm-up
    # Interleaved, best of N: the machine is shared, so one slow run must not decide the figure.
    node_s = direct_s = float("inf")
    node_peak = direct_peak = 0
    for _ in range(repeats):
        t, peak = _time(lambda: generate_images(model, settings), 1, device)
        node_s, node_peak = min(node_s, t), max(node_peak, peak)
        with torch.inference_mode():
            t, peak = _time(lambda: _direct(model.pipe, settings, device), 1, device)
        direct_s, direct_peak = min(direct_s, t), max(direct_peak, peak)
    overhead = (node_s - direct_s) / node_s * 100
    line = (f"{label}: {settings.width}x{settings.height} {settings.steps} steps  node {node_s:.3f} s"
            f"  diffusers {direct_s:.3f} s  overhead {overhead:+.1f} %")
    if device == "cuda":
        line += f"  peak VRAM node {node_peak / 2**30:.2f} GiB / diffusers {direct_peak / 2**30:.2f} GiB"
    print(line, flush=True)


def cpu_section(args) -> None:
    os.environ["SPINBOT_DEVICE"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v1-5-pruned-emaonly.safetensors"
        sd_layout.write_tiny_checkpoint(path, "sd15", seed=15)
        model = ckpt.load_image_model(str(path))
        settings = ImageSettings(prompt="a person on a stage", negative="blurry", width=args.size,
                                 height=args.size, steps=args.steps, cfg=7.0, scheduler="default")
        compare(model, settings, "cpu", f"CPU ({torch.get_num_threads()} threads) tiny SD 1.5",
                repeats=args.repeats)
        ckpt.clear_cache()


def random_pipeline(arch: str, device: str, dtype: torch.dtype):
    """A full-size pipeline from the shipped configs with random weights (no file written)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg_dir = Path(ckpt.CONFIGS_DIR) / arch
    load = lambda part: {k: v for k, v in __import__("json").loads(  # noqa: E731
        (cfg_dir / part / "config.json").read_text()).items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory() as tmp:
        tok = ckpt.load_tokenizer(str(sd_layout.write_tiny_tokenizer(Path(tmp) / "tokenizer").parent))
    parts = {"unet": diffusers.UNet2DConditionModel.from_config(load("unet")),
             "vae": diffusers.AutoencoderKL.from_config(load("vae")),
             "text_encoder": CLIPTextModel(CLIPTextConfig(**load("text_encoder"))), "tokenizer": tok}
    sched_cfg = __import__("json").loads((cfg_dir / "scheduler" / "scheduler_config.json").read_text())
    sched_cls = getattr(diffusers, sched_cfg.pop("_class_name"))
    parts["scheduler"] = sched_cls.from_config(sched_cfg)
    if arch == "sd15":
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    else:
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**load("text_encoder_2")))
        parts["tokenizer_2"] = tok
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def gpu_section(args) -> None:
    if not torch.cuda.is_available():
        print("GPU: no GPU (CUDA not available) - full-size SD 1.5 / SDXL random-weight timings "
              "and peak VRAM not measured on this machine", flush=True)
        return
    os.environ["SPINBOT_DEVICE"] = "cuda"
    print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    for arch, size in (("sd15", 512), ("sdxl_base", 1024)):
        pipe = random_pipeline(arch, "cuda", torch.float16)
        model = ckpt.ImageModel(pipe=pipe, arch=arch, name=f"random {arch}", device="cuda")
        settings = ImageSettings(prompt="a person on a stage", negative="blurry", width=size,
                                 height=size, steps=args.steps, cfg=7.0, scheduler="default")
        label = f"GPU random-weight {ckpt.ARCH_LABELS[arch]} fp16"
        compare(model, settings, "cuda", label, repeats=2)
        if arch == "sdxl_base":  # what a 16 GB card falls back to when VRAM is short
            pipe.enable_model_cpu_offload(device="cuda")
            model = model.with_pipe(pipe, offloaded=True)
            compare(model, settings, "cuda", label + " + model CPU offload", repeats=2)
        del pipe, model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.gpu_only:
        cpu_section(args)
    gpu_section(args)


if __name__ == "__main__":
    main()
