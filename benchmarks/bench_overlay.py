"""Text overlay benchmark (figures, not assertions): frames/s of drawing a faded quote over frames.

    python -m benchmarks.bench_overlay [--size 1920x1080] [--frames 100] [--fps 25] [--chunk 10]

A two-line quote (outline and shadow on) shown over the whole clip with 1 s fades at each end,
so at 25 fps half of 100 frames have their own opacity. Three figures: a plain copy of the
frames (the floor), `overlay_frames` on in-memory uint8 batches, and SpinBot Text Overlay end to
end through the video store (stored chunks read, blended, written as new chunks), beside
rendering the text once.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUOTE = ("The best time to plant a tree was twenty years ago. The second best time is now. "
         "— Chinese proverb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--chunk", type=int, default=10, help="frames per batch (1080p store chunk)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    scratch = None
    if not os.environ.get("SPINBOT_TEMP_DIR"):  # the stored 1080p frames are ~0.6 GB per 100
        scratch = os.environ["SPINBOT_TEMP_DIR"] = tempfile.mkdtemp(prefix="spinbot_bench_ovl_")
    os.environ.setdefault("SPINBOT_PROGRESS", "0")
    try:
        _bench(args, width, height)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _bench(args: argparse.Namespace, width: int, height: int) -> None:

    sys.path.insert(0, ROOT)
    from benchmarks.timing import time_chunks
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.overlay import text as ov
    from spinbot.nodes.overlay.nodes_overlay import SpinBotTextOverlay
    from spinbot.nodes.video.store import VideoWriter

    frames = np.random.default_rng(0).integers(0, 256, (args.frames, height, width, 3), np.uint8)
    style = ov.TextStyle(font_size=0.07, wrap_width=0.8, outline=0.06, shadow=0.05)
    t0 = time.perf_counter()
    rendered = ov.render_text(QUOTE, width, height, style, ov.BUNDLED_FONT)
    render_s = time.perf_counter() - t0
    event = ov.TextEvent(rendered, 0, args.frames, 1.0, 1.0, args.fps)
    fading = sum(1 for i in range(args.frames) if event.opacity(i) < 1.0)

    def run(fn) -> float:
        return time_chunks(frames, args.chunk, fn)

    copy_s = run(lambda batch, _a: batch.copy())
    blend_s = run(lambda batch, a: ov.overlay_frames(batch, a, [event]))

    with VideoWriter("bench_overlay_source", args.fps, chunk_frames=args.chunk) as writer:
        writer.write(frames)
        video = writer.finish()
    inputs = dict(text=QUOTE, font="default", font_size=0.07, wrap_width=0.8, position="center",
                  color="#ffffff", outline=0.06, shadow=0.05, fade_in_seconds=1.0,
                  fade_out_seconds=1.0, start_seconds=0.0, end_seconds=0.0, timing="whole video")
    t0 = time.perf_counter()
    _out, report = SpinBotTextOverlay().overlay(video, **inputs)
    node_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    SpinBotTextOverlay().overlay(video, **inputs)
    rerun_s = time.perf_counter() - t0

    x0, y0, x1, y1 = rendered.box
    print(f"{args.frames} frames {width}x{height} @ {args.fps:g} fps, {len(rendered.lines)} lines "
          f"at {rendered.size_px} px, text box {x1 - x0}x{y1 - y0}, {fading} frames fading")
    print(f"  render the text once       {render_s * 1000:8.1f} ms")
    print(f"  plain copy                 {args.frames / copy_s:8.1f} frames/s")
    print(f"  overlay_frames (in memory) {args.frames / blend_s:8.1f} frames/s "
          f"({(blend_s - copy_s) / args.frames * 1000:.2f} ms/frame over the copy)")
    print(f"  Text Overlay node (store)  {args.frames / node_s:8.1f} frames/s "
          f"(read, blend, write chunks of {args.chunk})")
    print(f"  re-run (stored result)     {rerun_s * 1000:8.1f} ms")
    print("  " + report.splitlines()[2])


if __name__ == "__main__":
    main()
