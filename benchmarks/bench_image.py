"""Image stage benchmark: the SpinBot Stage Image node against diffusers' pipeline called directly.

    python -m benchmarks.bench_image [--steps 20] [--size 512] [--repeats 3] [--threads N] [--gpu-only]
        [--full-device cuda|cpu|none] [--full-size WxH] [--full-steps N]

CPU: the tiny SD 1.5 checkpoint from the factory at 512x512 (the node's overhead is what is
measured; the tiny model's output is noise). Full size (on --full-device: CUDA when available,
else skipped): SD 1.5 at 512x512 and SDXL at 1024x1024 built from the pack's shipped configs with
random weights (fp16 on CUDA, fp32 on CPU), seconds and peak VRAM (peak RSS on CPU) for both
paths, plus SDXL with model CPU offload (on CPU: the same hooks, code path only).
`--full-device cpu --full-size 128x128 --full-steps 1` smoke-runs that same code path without a
GPU (SDXL in fp32 needs ~17 GB RAM at peak).
Prints numbers; asserts nothing. On a shared machine pass --threads 1: with more torch threads
than free cores one busy neighbour can make a single run ten times slower.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPINBOT_PROGRESS", "0")

from benchmarks import full_size  # noqa: E402
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
    full_size.reset_peak(device)
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, full_size.peak(device)


def compare(model: ckpt.ImageModel, settings: ImageSettings, device: str, label: str,
            repeats: int, show_memory: bool = False) -> None:
    warm_steps = min(2, settings.steps)
    generate_images(model, ImageSettings(**{**settings.__dict__, "steps": warm_steps}))  # warm-up
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
    elif show_memory:
        rss = lambda b: f"{b / 2**30:.2f} GiB" if b else "n/a"  # noqa: E731
        line += f"  peak RSS node {rss(node_peak)} / diffusers {rss(direct_peak)} (no VRAM on {device})"
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

    def load(part: str, fname: str = "config.json") -> dict:
        data = json.loads((cfg_dir / part / fname).read_text(encoding="utf-8"))
        return {k: v for k, v in data.items() if not k.startswith("_")}

    def text_config(part: str) -> CLIPTextConfig:
        data = load(part)
        data.pop("architectures", None)
        data.pop("torch_dtype", None)
        return CLIPTextConfig(**data)

    with tempfile.TemporaryDirectory() as tmp:
        tok = ckpt.load_tokenizer(str(sd_layout.write_tiny_tokenizer(Path(tmp) / "tokenizer").parent))
    torch.manual_seed(0)
    # Built on the target device (random init of SDXL's 2.6 B UNet parameters is fast on a GPU),
    # each part cast to the target dtype as soon as it exists, so at most one part is ever held
    # twice; on CPU (fp32) nothing is cast and one SDXL copy (~13 GiB) is all that is held.
    cast = (lambda m: m) if dtype == torch.float32 else (lambda m: m.to(dtype))  # noqa: E731
    with torch.device(device):
        parts = {"unet": cast(diffusers.UNet2DConditionModel.from_config(load("unet"))),
                 "vae": cast(diffusers.AutoencoderKL.from_config(load("vae"))),
                 "text_encoder": cast(CLIPTextModel(text_config("text_encoder"))),
                 "tokenizer": tok}
        if arch != "sd15":
            parts["text_encoder_2"] = cast(CLIPTextModelWithProjection(text_config("text_encoder_2")))
            parts["tokenizer_2"] = tok
    sched_cfg = json.loads((cfg_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    sched_cls = getattr(diffusers, sched_cfg.pop("_class_name"))
    parts["scheduler"] = sched_cls.from_config(sched_cfg)
    if arch == "sd15":
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    else:
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe.to(device)


def gpu_section(args) -> None:
    device = full_size.full_device(args.full_device)
    if device is None:
        print("GPU: no GPU (CUDA not available) - full-size SD 1.5 / SDXL random-weight timings "
              "and peak VRAM not measured on this machine (--full-device cpu smoke-runs them)",
              flush=True)
        return
    os.environ["SPINBOT_DEVICE"] = device
    dtype = torch.float16 if device == "cuda" else torch.float32
    precision = "fp16" if dtype == torch.float16 else "fp32"
    where = torch.cuda.get_device_name(0) if device == "cuda" else \
        f"{device} ({torch.get_num_threads()} threads)"
    print(f"Full size on {where}: random weights, {precision}", flush=True)
    steps = args.full_steps or args.steps
    sizes = {"sd15": (512, 512), "sdxl_base": (1024, 1024)}
    for arch, (width, height) in sizes.items():
        if args.full_size:
            width, height = full_size.parse_size(args.full_size)
        t0 = time.perf_counter()
        pipe = random_pipeline(arch, device, dtype)
        if device == "cuda":
            torch.cuda.empty_cache()  # the fp32 build blocks cast away above
        label = f"{device.upper()} random-weight {ckpt.ARCH_LABELS[arch]} {precision}"
        print(f"  ({label}: built in {time.perf_counter() - t0:.1f} s, "
              f"{ckpt.model_bytes(pipe) / 2**30:.2f} GiB of weights)", flush=True)
        model = ckpt.ImageModel(pipe=pipe, arch=arch, name=f"random {arch}", device=device)
        settings = ImageSettings(prompt="a person on a stage", negative="blurry", width=width,
                                 height=height, steps=steps, cfg=7.0, scheduler="default")
        compare(model, settings, device, label, repeats=2, show_memory=True)
        if arch == "sdxl_base":  # what a 16 GB card falls back to when VRAM is short
            # On CPU the accelerate hooks run with the CPU as execution device: nothing moves, but
            # the hook path (and the node's offload_all) is exercised; the figures mean nothing.
            offload_label = label + (" + model CPU offload" if device == "cuda" else
                                     " + offload hooks (CPU->CPU: code path only, no saving)")
            pipe.enable_model_cpu_offload(device=device)
            model = model.with_pipe(pipe, offloaded=True)
            compare(model, settings, device, offload_label, repeats=2, show_memory=True)
        del pipe, model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--gpu-only", "--full-only", dest="gpu_only", action="store_true",
                        help="skip the tiny CPU section")
    parser.add_argument("--full-device", default="auto",
                        help="device of the full-size section: auto (cuda when available, else "
                             "skipped), cuda, cpu or none")
    parser.add_argument("--full-size", default="",
                        help="WxH for both full-size models (default 512x512 SD 1.5, 1024x1024 SDXL)")
    parser.add_argument("--full-steps", type=int, default=0,
                        help="steps of the full-size section (default: --steps)")
    args = parser.parse_args()
    full_size.run_sections(args, cpu_section, gpu_section)


if __name__ == "__main__":
    main()
