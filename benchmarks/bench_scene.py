"""Scene benchmark (figures, not assertions): frames/s of SpinBot Camera Motion and SpinBot
Transitions (crossfade) on the CPU, through the video store as the nodes run.

    python -m benchmarks.bench_scene [--size 1920x1080] [--frames 100] [--still 2400x1600]
        [--fps 25] [--threads 0]

Rows:

- camera render: `camera.render` alone (bilinear grid_sample of the crop windows + uint8),
  batches as the node makes them; no disk.
- camera node: SpinBot Camera Motion end to end (cover-fit, render, chunks written to the store),
  two segments (push in, pan right) over two random stills of ``--still`` size.
- crossfade node: SpinBot Transitions (crossfade 1 s) on the camera video's boundary: frames/s
  over the blended frames, and over the video's length (untouched chunks are only referenced).

The store lives in a scratch temp folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--still", default="2400x1600")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    still_w, still_h = (int(v) for v in args.still.split("x"))
    scratch = tempfile.mkdtemp(prefix="spinbot-bench-scene-")
    os.environ["SPINBOT_TEMP_DIR"] = scratch
    os.environ.setdefault("SPINBOT_PROGRESS", "0")
    sys.path.insert(0, ROOT)
    try:
        import numpy as np
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from tests._pack import load_pack

        load_pack()
        from spinbot.nodes.scene import camera
        from spinbot.nodes.scene.nodes_scene import SpinBotCameraMotion, SpinBotTransitions
        from spinbot.nodes.script.segments import Segment

        stills = torch.rand(2, still_h, still_w, 3, generator=torch.Generator().manual_seed(0))
        seconds = args.frames / args.fps
        segments = (Segment(0, "a", 0.0, seconds / 2), Segment(1, "b", seconds / 2, seconds))
        print(f"{args.frames} frames {width}x{height} @ {args.fps:g} fps from {still_w}x{still_h} "
              f"stills, {torch.get_num_threads()} torch threads")

        still = camera.prepare_still(stills[0], width, height, 0.15)
        s, cx, cy = camera.segment_windows("pan right", "ease in-out", 0.15, args.frames)
        step = camera.batch_frames(width, height)
        t0 = time.perf_counter()
        for i in range(0, args.frames, step):
            camera.render(still, s[i:i + step], cx[i:i + step], cy[i:i + step], width, height)
        took = time.perf_counter() - t0
        print(f"  camera render   {args.frames / took:8.1f} frames/s ({step} frames per call)")

        t0 = time.perf_counter()
        video, _ = SpinBotCameraMotion().animate(stills, args.fps, width, height, "auto", 0.15,
                                                 "ease in-out", 0.0, segments=segments)
        took = time.perf_counter() - t0
        print(f"  camera node     {video.frame_count / took:8.1f} frames/s (to the store)")

        t0 = time.perf_counter()
        out, report = SpinBotTransitions().transition(video, "crossfade", 1.0)
        took = time.perf_counter() - t0
        blended = int(next(line for line in report.splitlines() if "blended" in line).split()[1])
        rewritten = next(line for line in report.splitlines() if "rewritten" in line).strip()
        print(f"  crossfade node  {blended / took:8.1f} blended frames/s, "
              f"{out.frame_count / took:8.1f} video frames/s ({rewritten})")
        assert np.array_equal(out.read(0, 1), video.read(0, 1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
