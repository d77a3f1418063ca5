"""Video Combine benchmarks (figures, not assertions).

1. 300 frames of 1280x720 from an IMAGE batch: frames/s of SpinBot Video Combine beside ffmpeg's CLI
   (libx264, same crf/preset) fed the same frames as raw rgb24 through a pipe, and peak RSS above
   the frames themselves.
2. 300 and 3,000 frames of 1280x720 written into a SPINBOT_VIDEO chunk by chunk (as a stage does)
   and encoded from it: peak RSS of the whole process.

    python -m benchmarks.bench_video_combine [--frames 300] [--long 3000] [--preset medium]

Each measurement runs in its own process so peak RSS (ru_maxrss) belongs to it alone.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

W, H = 1280, 720


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def frame_batch(start: int, n: int):
    """Moving gradients with a little noise: compressible like real video, never static."""
    import torch

    y = torch.linspace(0, 1, H)[:, None]
    x = torch.linspace(0, 1, W)[None, :]
    g = torch.Generator().manual_seed(start)
    out = torch.empty(n, H, W, 3)
    for i in range(n):
        t = (start + i) / 25
        out[i, ..., 0] = (x + t * 0.1) % 1
        out[i, ..., 1] = (y + t * 0.05) % 1
        out[i, ..., 2] = ((x + y) * 0.5 + 0.02 * torch.rand(H, W, generator=g)).clamp(0, 1)
    return out


def child_node(frames: int, preset: str, crf: int) -> dict:
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.video.combine import combine_to_mp4

    images = frame_batch(0, frames)
    base = current_rss_mb()
    t0 = time.perf_counter()
    result = combine_to_mp4(images=images, fps=25, filename_prefix="bench/node", crf=crf, preset=preset)
    elapsed = time.perf_counter() - t0
    return {"fps": frames / elapsed, "seconds": elapsed, "peak_rss_mb": rss_mb(),
            "rss_before_mb": base, "frames_mb": images.numel() * 4 / 2**20, "path": result.path}


def child_ffmpeg(frames: int, preset: str, crf: int) -> dict:
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.media import images_to_uint8

    images = frame_batch(0, frames)
    out = os.path.join(os.environ["SPINBOT_OUTPUT_DIR"], "ffmpeg.mp4")
    # /usr/bin/time measures ffmpeg itself: ru_maxrss of a child forked straight from this
    # process would include the pages it shared with us before exec.
    rss_file = out + ".rss"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file, "ffmpeg", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
           "-r", "25", "-i", "-", "-c:v", "libx264", "-crf", str(crf), "-preset", preset,
           "-pix_fmt", "yuv420p", out]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for start in range(0, frames, 16):  # the same float->uint8 conversion the node does
        proc.stdin.write(images_to_uint8(images[start:start + 16]).tobytes())
    proc.stdin.close()
    proc.wait()
    elapsed = time.perf_counter() - t0
    child = int(open(rss_file).read().split()[-1]) / 1024
    return {"fps": frames / elapsed, "seconds": elapsed, "peak_rss_mb": rss_mb(),
            "ffmpeg_peak_rss_mb": child}


def child_video(frames: int, preset: str, crf: int) -> dict:
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.video.combine import combine_to_mp4
    from spinbot.nodes.video.store import VideoWriter, content_key

    t0 = time.perf_counter()
    with VideoWriter(content_key("bench", frames, time.time()), 25) as writer:
        for start in range(0, frames, 25):  # a stage producing one second at a time
            writer.write(frame_batch(start, min(25, frames - start)))
        video = writer.finish()
    write_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    combine_to_mp4(video=video, fps=25, filename_prefix="bench/video", crf=crf, preset=preset)
    encode_s = time.perf_counter() - t1
    return {"frames": frames, "write_s": write_s, "encode_s": encode_s,
            "encode_fps": frames / encode_s, "peak_rss_mb": rss_mb()}


def run_child(kind: str, frames: int, args, workdir: str) -> dict:
    env = {**os.environ, "SPINBOT_OUTPUT_DIR": os.path.join(workdir, "out"),
           "SPINBOT_TEMP_DIR": os.path.join(workdir, "tmp"), "SPINBOT_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_video_combine", "--child", kind,
                          "--frames", str(frames), "--preset", args.preset, "--crf", str(args.crf)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--long", type=int, default=3000)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--crf", type=int, default=19)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        fn = {"node": child_node, "ffmpeg": child_ffmpeg, "video": child_video}[args.child]
        print(json.dumps(fn(args.frames, args.preset, args.crf)))
        return 0
    workdir = tempfile.mkdtemp(prefix="spinbot-bench-")
    try:
        print(f"# {args.frames} frames {W}x{H}, libx264 crf {args.crf} preset {args.preset}, "
              f"{os.cpu_count()} cores")
        node = run_child("node", args.frames, args, workdir)
        cli = run_child("ffmpeg", args.frames, args, workdir)
        print(f"SpinBot Video Combine : {node['fps']:6.1f} frames/s ({node['seconds']:.1f} s), "
              f"peak RSS {node['peak_rss_mb']:.0f} MB = frames {node['frames_mb']:.0f} MB + "
              f"{node['peak_rss_mb'] - node['rss_before_mb']:.0f} MB while encoding")
        print(f"ffmpeg CLI via pipe   : {cli['fps']:6.1f} frames/s ({cli['seconds']:.1f} s), "
              f"python peak RSS {cli['peak_rss_mb']:.0f} MB, ffmpeg peak RSS "
              f"{cli['ffmpeg_peak_rss_mb']:.0f} MB")
        for frames in (args.frames, args.long):
            r = run_child("video", frames, args, workdir)
            print(f"SPINBOT_VIDEO {frames:5d} frames: write {r['write_s']:.1f} s, encode "
                  f"{r['encode_s']:.1f} s ({r['encode_fps']:.1f} frames/s), peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB")
            shutil.rmtree(os.path.join(workdir, "tmp"), ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
