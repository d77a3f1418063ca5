"""Burn-in benchmark (figures, not assertions): frames/s of `burn_subtitles` on uint8 batches,
as Video Combine would call it chunk by chunk, beside a plain copy of the same frames.

    python -m benchmarks.bench_burn_in [--size 1280x720] [--frames 250] [--fps 25] [--chunk 16]

Cues cover about two thirds of the timeline (a narration with pauses), two lines each.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--chunk", type=int, default=16)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    sys.path.insert(0, ROOT)
    from benchmarks.timing import time_chunks
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.script.burn_in import burn_subtitles
    from spinbot.nodes.script.segments import make_segments
    from spinbot.nodes.script.subtitles import cues_from_segments

    text = ("The lighthouse keeper climbed the stairs every evening, one hundred and twelve steps, "
            "carrying oil and a small brass key. Nobody in the village knew why. ") * 4
    cues = cues_from_segments(make_segments(text, 2.5, pause=1.0), 42, 2)
    seconds = args.frames / args.fps
    cues = [c for c in cues if c.start < seconds]
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, height, width, 3), np.uint8)

    def run(fn) -> float:
        return time_chunks(frames, args.chunk, fn)

    copy_s = run(lambda batch, _a: batch.copy())
    burn_s = run(lambda batch, a: burn_subtitles(batch, a, args.fps, cues))
    covered = sum(1 for i in range(args.frames)
                  if any(c.start <= i / args.fps < c.end for c in cues))
    print(f"{args.frames} frames {width}x{height}, {len(cues)} cues on {covered} frames, "
          f"chunks of {args.chunk}")
    print(f"  plain copy      {args.frames / copy_s:8.1f} frames/s")
    print(f"  burn_subtitles  {args.frames / burn_s:8.1f} frames/s "
          f"({(burn_s - copy_s) / args.frames * 1000:.2f} ms/frame over the copy)")


if __name__ == "__main__":
    main()
