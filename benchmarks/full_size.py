"""Shared by the benchmarks' full-size sections: which device runs them, and peak memory on it
(allocated VRAM on CUDA, the process's peak RSS elsewhere)."""
from __future__ import annotations

import os

import torch


def full_device(name: str) -> str | None:
    """The device of the full-size section: `auto` is CUDA when available, else none (skipped)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else None
    if name == "none":
        return None
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--full-device cuda: CUDA is not available on this machine")
    return name


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM (peak RSS) restarts from the current RSS


def peak(device: str) -> int:
    """Peak allocated VRAM on CUDA; peak RSS of the process elsewhere (0 when unknown)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def run_sections(args, cpu_section, gpu_section) -> None:
    """A benchmark's main after parsing: ``--threads`` (> 0) CPU threads for torch, the CPU
    section unless ``--gpu-only``, then the full-size section."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.gpu_only:
        cpu_section(args)
    gpu_section(args)
