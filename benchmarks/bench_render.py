"""Batch renderer benchmark (figures, not assertions): jobs per minute over one ComfyUI server and
over two, and the dispatcher's own overhead per job.

    COMFYUI_PATH=~/ComfyUI python -m benchmarks.bench_render [--jobs 8] [--seconds 8] [--fps 25]

Jobs are photo_with_audio (no models) with a distinct narration each, so ComfyUI's cache never
serves one. Servers are CPU ComfyUI started from ``$COMFYUI_PATH`` (nodes/render/servers.py).

Overhead per job = (batch wall time over one server with one job in flight - the sum of ComfyUI's
own execution times from each prompt's /history messages) / jobs: upload, queue, websocket and
/history follow-up, download, the MP4 decode check, Ray's calls and the report. The pure
bookkeeping (Scheduler assign + finish, no I/O) is timed on its own over 10000 jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jobs(folder: str, n: int, seconds: float, fps: float, tag: int) -> list[dict]:
    from PIL import Image

    from tests.media import astronaut, tone, write_wav

    os.makedirs(folder, exist_ok=True)
    Image.fromarray(astronaut(512)).save(os.path.join(folder, "portrait.png"))
    jobs = []
    for i in range(n):
        wav = os.path.join(folder, f"n{i}.wav")
        write_wav(wav, tone(seconds, 24000, freq=200 + 13 * i + 3 * tag), 24000)
        jobs.append({"id": f"j{i}", "workflow": "photo_with_audio",
                     "set": {"Portrait.image": os.path.join(folder, "portrait.png"),
                             "Narration.audio": wav, "Video Combine.fps": fps}})
    return jobs


def _execution_seconds(url: str) -> dict[str, float]:
    """prompt id -> ComfyUI's execution_start..execution_success span, seconds."""
    with urllib.request.urlopen(url + "/history", timeout=60) as r:
        history = json.loads(r.read())
    out = {}
    for pid, entry in history.items():
        stamps = {kind: data.get("timestamp") for kind, data in entry.get("status", {}).get("messages", [])}
        if stamps.get("execution_start") and stamps.get("execution_success"):
            out[pid] = (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0, help="narration length per job")
    ap.add_argument("--fps", type=float, default=25.0)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from tests._pack import load_pack

    load_pack()
    import ray

    from spinbot.nodes.render import engine as E
    from spinbot.nodes.render import servers as S

    t = time.perf_counter()
    s = E.Scheduler([{"id": str(i)} for i in range(10000)], ["a", "b", "c", "d"], per_server=2)
    while s.busy:
        for server, task in s.assign():
            s.finish(server, task.job["id"], E.OK)
    book = (time.perf_counter() - t) / 10000
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    t = time.perf_counter()
    servers = S.start_servers(2)
    print(f"2 ComfyUI servers started in {time.perf_counter() - t:.1f} s; Ray in {ray_start:.1f} s",
          file=sys.stderr)
    scratch = tempfile.mkdtemp(prefix="spinbot-bench-render-")
    try:
        # one job per server first: a fresh ComfyUI's first prompt pays its imports and caches
        warm = _jobs(os.path.join(scratch, "warm"), 2, 0.5, args.fps, 99)
        E.run_batch(warm, [u.url for u in servers], os.path.join(scratch, "warm-out"), per_server=1, quiet=True)
        rows = []
        for tag, (name, urls, k) in enumerate([("1 server, 1 in flight", servers[:1], 1),
                                               ("1 server, 2 in flight", servers[:1], 2),
                                               ("2 servers, 2 in flight each", servers, 2)]):
            jobs = _jobs(os.path.join(scratch, f"in{tag}"), args.jobs, args.seconds, args.fps, tag)
            before = [set(_execution_seconds(u.url)) for u in urls]
            t = time.perf_counter()
            records = E.run_batch(jobs, [u.url for u in urls], os.path.join(scratch, f"out{tag}"),
                                  per_server=k, quiet=True)
            wall = time.perf_counter() - t
            assert all(r["status"] == "ok" for r in records), records
            executed = sum(sec for u, seen in zip(urls, before)
                           for pid, sec in _execution_seconds(u.url).items() if pid not in seen)
            rows.append((name, wall, 60 * args.jobs / wall, executed))
        print(f"photo_with_audio, {args.jobs} jobs of {args.seconds:g} s at {args.fps:g} fps, CPU "
              f"servers, {os.cpu_count()} cores")
        for name, wall, per_min, executed in rows:
            print(f"  {name:28s} {wall:7.1f} s  {per_min:6.1f} jobs/min  (ComfyUI executing {executed:.1f} s)")
        name, wall, _, executed = rows[0]
        print(f"dispatcher overhead per job (1 server, 1 in flight): "
              f"{(wall - executed) / args.jobs * 1000:.0f} ms; Scheduler bookkeeping {book * 1e6:.1f} us/job; "
              f"Ray start {ray_start:.1f} s once per batch")
    finally:
        for s in servers:
            s.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
