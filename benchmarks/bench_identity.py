"""Identity LoRA training benchmark: seconds per training step and peak memory.

    python -m benchmarks.bench_identity [--steps 10] [--threads N] [--cpu-size 64]
        [--full-device auto|cuda|cpu|none] [--full-steps 20] [--rank 16] [--only sd15|sdxl_base]

CPU: the tiny SD 1.5 and SDXL checkpoints of the factory at --cpu-size (the code path and its
overhead; the figures say nothing about real models). Full size (CUDA when available, else
skipped): SD 1.5 at 512 and SDXL at 1024 built from the pack's shipped configs with random
weights (bf16 on GPUs that have it, else fp16), the 'standard' preset's rank, gradient
checkpointing and autocast as the node runs them; prints s/step, peak allocated VRAM (the
issue's target: under 16 GB) and the time a 'standard' run (1000 steps + 4 checkpoints of 2
samples) would take. Prints numbers; asserts nothing. `--gpu-only --full-device cpu --only sd15
--full-size 64 --full-steps 1 --sample-steps 1` smoke-runs the full-size path without a GPU.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPINBOT_PROGRESS", "0")

from benchmarks import full_size  # noqa: E402
from tests._pack import load_pack  # noqa: E402

load_pack()
from spinbot.nodes.identity import train as T  # noqa: E402
from spinbot.nodes.image import checkpoint as ckpt  # noqa: E402
from tests import sd_layout  # noqa: E402


def _items(size: int, count: int = 3):
    rng = np.random.default_rng(0)
    return [(f"p{i}", rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "photo of ohwx person")
            for i in range(count)]


def measure(pipe, arch: str, size: int, steps: int, device: str, rank: int,
            sample_steps: int = 0) -> dict:
    """Build a trainer on ``pipe``, run one warm-up step and ``steps`` timed steps."""
    settings = T.resolve_settings("standard", arch, rank=rank, resolution=size, steps=steps,
                                  samples=0)
    full_size.reset_peak(device)
    t0 = time.perf_counter()
    trainer = T.LoRATrainer(pipe, arch, T.as_samples(_items(size)), settings,
                            device=torch.device(device))
    setup = time.perf_counter() - t0
    trainer.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses = [trainer.train_step() for _ in range(steps)]
    if device == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    sample_s = None
    if sample_steps:
        t0 = time.perf_counter()
        trainer.render("photo of ohwx person", [1], size, sample_steps, 7.0)
        sample_s = time.perf_counter() - t0
    out = {"setup_s": setup, "s_per_step": per_step, "peak": full_size.peak(device),
           "loss": float(np.mean(losses)), "optimizer": trainer.optimizer_name,
           "lora_params": sum(p.numel() for p in trainer.params), "sample_s": sample_s}
    del trainer
    gc.collect()
    return out


def cpu_section(args) -> None:
    os.environ["SPINBOT_DEVICE"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        for arch, fname in (("sd15", "v1-5-pruned-emaonly.safetensors"),
                            ("sdxl_base", "sd_xl_base_1.0.safetensors")):
            path = Path(tmp) / fname
            sd_layout.write_tiny_checkpoint(path, arch, seed=1)
            model = ckpt.load_image_model(str(path))
            r = measure(model.pipe, arch, args.cpu_size, args.steps, "cpu", rank=4)
            print(f"CPU ({torch.get_num_threads()} threads) tiny {ckpt.ARCH_LABELS[arch]} "
                  f"@{args.cpu_size}: {r['s_per_step']:.3f} s/step (setup incl. latents "
                  f"{r['setup_s']:.2f} s), peak RSS {r['peak'] / 2**30:.2f} GiB, "
                  f"{r['lora_params']} LoRA parameters, {r['optimizer']}", flush=True)
            ckpt.clear_cache()


def gpu_section(args) -> None:
    device = full_size.full_device(args.full_device)
    if device is None:
        print("GPU: no GPU (CUDA not available) - full-size SD 1.5 @512 / SDXL @1024 training "
              "s/step and peak VRAM not measured on this machine", flush=True)
        return
    from benchmarks.bench_image import random_pipeline

    os.environ["SPINBOT_DEVICE"] = device
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        where = torch.cuda.get_device_name(0)
    else:
        dtype, where = torch.float32, f"cpu ({torch.get_num_threads()} threads)"
    for arch, size in (("sd15", 512), ("sdxl_base", 1024)):
        if args.only and arch != args.only:
            continue
        if args.full_size:
            size = args.full_size
        pipe = random_pipeline(arch, device, dtype)
        if device == "cuda":
            torch.cuda.empty_cache()
        weights = ckpt.model_bytes(pipe)
        r = measure(pipe, arch, size, args.full_steps, device, rank=args.rank,
                    sample_steps=args.sample_steps)
        standard = T.PRESETS["standard"]["steps"] * r["s_per_step"] + 8 * (r["sample_s"] or 0)
        print(f"{where} random-weight {ckpt.ARCH_LABELS[arch]} @{size} {str(dtype)[6:]} rank "
              f"{args.rank}: {r['s_per_step']:.3f} s/step, peak {'VRAM' if device == 'cuda' else 'RSS'} "
              f"{r['peak'] / 2**30:.2f} GiB (weights {weights / 2**30:.2f} GiB), {r['optimizer']}, "
              f"sample ({args.sample_steps} steps) {r['sample_s'] or 0:.1f} s; a 'standard' run "
              f"(1000 steps + 8 samples) ~{standard / 60:.1f} min", flush=True)
        del pipe
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed CPU steps")
    parser.add_argument("--cpu-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--full-device", default="auto")
    parser.add_argument("--full-steps", type=int, default=20)
    parser.add_argument("--full-size", type=int, default=0, help="override 512/1024 (smoke runs)")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--rank", type=int, default=int(T.PRESETS["standard"]["rank"]))
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--only", choices=["sd15", "sdxl_base"], help="one full-size model")
    args = parser.parse_args()
    full_size.run_sections(args, cpu_section, gpu_section)


if __name__ == "__main__":
    main()
