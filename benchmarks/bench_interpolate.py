"""Frame interpolation benchmark (figures, not assertions): new frames per second made by SpinBot
Frame Interpolation through the video store (read, pad, RIFE, crop, write).

    python -m benchmarks.bench_interpolate [--frames 4] [--multiplier 2] [--size 1920x1080]
        [--full-size 960x540] [--full-device auto|cpu|cuda|none] [--threads N]

Rows:
- tiny RIFE 4.7 (tests/factory_rife.py widths) at --size on the CPU: the pipeline's own cost.
- full-size RIFE 4.7 (released widths, random weights: the speed of real weights) at
  --full-size on the CPU, the honest CPU figure.
- full-size RIFE 4.7 at --size on CUDA in fp16 when a GPU is there (--full-device auto).
Frames are a photo panning a few pixels per frame; scene-cut detection stays on (its cost is in).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames(count: int, width: int, height: int):
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize(
        (width + 8 * count, height + 8 * count), Image.BICUBIC))
    return np.stack([photo[4 * i:4 * i + height, 8 * i:8 * i + width] for i in range(count)])


def run(version_config, size: tuple[int, int], count: int, multiplier: int, device: str,
        label: str) -> None:
    import torch

    from spinbot.nodes.interpolate.engine import InterpolationSettings, interpolate_video
    from spinbot.nodes.interpolate.ifnet import IFNet
    from spinbot.nodes.interpolate.model import RIFEModel
    from spinbot.nodes.video.store import VideoWriter
    from tests.factory_rife import seeded_state_dict

    net = IFNet(version_config)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    net.load_state_dict(seeded_state_dict(shapes, 0))
    net.eval().requires_grad_(False)
    with tempfile.NamedTemporaryFile(suffix=".pth", delete=False) as f:
        path = f.name  # the cache key reads the file's stamp
    rife = RIFEModel(net=net, name=label, path=path)
    width, height = size
    with VideoWriter(f"bench-{label}-{width}x{height}", 8.0) as writer:
        writer.write(frames(count, width, height))
        video = writer.finish()
    settings = InterpolationSettings(multiplier=multiplier, batch_size=1)
    dev = torch.device(device)
    if dev.type == "cuda":  # kernel selection and allocator warm-up, not timed
        m = net.size_multiple(1.0)
        pad = (-height % m, -width % m)
        x = torch.rand(1, 3, height + pad[0], width + pad[1], device=dev, dtype=torch.float16)
        with torch.inference_mode():
            net.to(dev, torch.float16)(x, x, 0.5)
        net.to("cpu", torch.float32)
        torch.cuda.synchronize()
    start = time.perf_counter()
    out, report = interpolate_video(rife, video, settings, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    made = report.interpolated_frames
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"{label:<28} {width}x{height} {device:<4} {params:5.2f}M params  {count} -> "
          f"{out.frame_count} frames  {made} interpolated in {seconds:6.2f}s  = {made / seconds:7.3f} "
          f"frames/s  ({report.interpolated_pairs} pairs)", flush=True)
    os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--multiplier", type=int, default=2)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--full-size", default="960x540")
    parser.add_argument("--full-device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from tests._pack import load_pack

    load_pack()  # registers the pack as `spinbot`
    os.environ.setdefault("SPINBOT_TEMP_DIR", tempfile.mkdtemp(prefix="bench-rife-"))
    os.environ.setdefault("SPINBOT_PROGRESS", "0")
    import torch

    from benchmarks.full_size import full_device, parse_size
    from spinbot.nodes.interpolate.ifnet import released_config
    from tests.factory_rife import tiny_config

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    size, full = parse_size(args.size), parse_size(args.full_size)
    run(tiny_config("4.7"), size, args.frames, args.multiplier, "cpu", "tiny RIFE 4.7")
    run(released_config("4.7"), full, args.frames, args.multiplier, "cpu", "full RIFE 4.7")
    gpu = full_device(args.full_device)
    if gpu == "cuda":
        run(released_config("4.7"), size, args.frames * 4, args.multiplier, "cuda",
            "full RIFE 4.7 fp16")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
