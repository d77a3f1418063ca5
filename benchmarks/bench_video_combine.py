"""Video Combine benchmarks (figures, not assertions).

1. 300 frames of 1280x720 from an IMAGE batch: frames/s of SpinBot Video Combine beside ffmpeg's CLI
   (libx264, same crf/preset) fed the same frames as raw rgb24 through a pipe, and peak RSS above
   the frames themselves.
2. 300 and 3,000 frames of 1280x720 written into a SPINBOT_VIDEO chunk by chunk (as a stage does)
   and encoded from it: peak RSS of the whole process.
3. ``--comfyui``: one real ComfyUI with this pack and VideoHelperSuite (a snapshot beside ComfyUI,
   or ``--vhs``; it needs opencv-python and imageio-ffmpeg, benchmark-only) in its custom_nodes.
   The same 300 decoded 1280x720 frames (core LoadVideo + GetVideoComponents, cached) and audio
   (core LoadAudio) go to SpinBot Video Combine, VHS Video Combine (h264-mp4, crf 19, ffmpeg's
   default preset medium) and core CreateVideo + SaveVideo (PyAV defaults: crf 23, medium; SpinBot
   also runs at crf 23 beside it), each in its own prompt with the source cached; time from ComfyUI's execution_start/success
   messages, peak RSS growth of the ComfyUI process (VmHWM after clearing it) and of its process
   tree (sampled, so VHS's ffmpeg counts). Prints the SpinBot/VHS ratio per round.

    python -m benchmarks.bench_video_combine [--frames 300] [--long 3000] [--preset medium]
    python -m benchmarks.bench_video_combine --comfyui /path/to/ComfyUI [--rounds 2]

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


# --------------------------------------------------------------------------- real ComfyUI

def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s threads plus its waited-for children (VHS's ffmpeg runs)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime..cstime


def _tree_rss_kb(pid: int) -> int:
    """RSS of ``pid`` and its descendants (VHS encodes in an ffmpeg child). A child that has not
    exec'd yet (same name as its parent) shares the parent's pages and is skipped, or a fork of
    a 4 GB ComfyUI would count twice."""
    def comm(p: int) -> str:
        with open(f"/proc/{p}/comm") as f:
            return f.read().strip()

    total, todo = 0, [(pid, None)]
    while todo:
        p, parent = todo.pop()
        try:
            name = comm(p)
            if parent is None or name != parent:
                total += _rss_kb(p)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend((int(c), name) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class _TreePeak:
    """Samples the process tree's RSS every 20 ms on a thread while a prompt runs."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _tree_rss_kb(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _make_inputs(input_dir: str, frames: int, fps: int) -> tuple[str, str]:
    """A 1280x720 MP4 with moving detail and grain, and a stereo 48 kHz WAV of the same length."""
    seconds = frames / fps
    video, audio = "bench_src.mp4", "bench_audio.wav"
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={W}x{H}:rate={fps}", "-frames:v", str(frames),
                    "-vf", "noise=alls=6:allf=t", "-c:v", "libx264", "-crf", "12",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    os.path.join(input_dir, video)], check=True)
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=220:sample_rate=48000:duration={seconds}", "-f", "lavfi",
                    "-i", f"anoisesrc=color=pink:amplitude=0.1:sample_rate=48000:duration={seconds}",
                    "-filter_complex", "amix=inputs=2,volume=2", "-ac", "2",
                    os.path.join(input_dir, audio)], check=True)
    return video, audio


def _with_defaults(info: dict, node: str, given: dict) -> dict:
    """A node's inputs: its widgets' defaults from /object_info, overridden by ``given``."""
    inputs = {}
    for name, spec in info[node]["input"].get("required", {}).items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if "default" in options:
            inputs[name] = options["default"]
        elif isinstance(kind, list) and kind:
            inputs[name] = kind[0]
        elif kind == "COMBO" and options.get("options"):
            inputs[name] = options["options"][0]
    inputs.update(given)
    return inputs


def _packets(path: str) -> tuple[int, bool]:
    import av

    with av.open(path) as c:
        has_audio = bool(c.streams.audio)
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size), has_audio


def comfyui_section(args) -> None:
    from tests.comfyui_server import ComfyUI

    comfy_path = os.path.abspath(args.comfyui)
    vhs = args.vhs or os.path.join(os.path.dirname(comfy_path), "ComfyUI-VideoHelperSuite")
    workdir = tempfile.mkdtemp(prefix="spinbot-bench-comfy-")
    base = os.path.join(workdir, "base")
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.makedirs(os.path.join(base, "input"))
    os.symlink(os.path.abspath(vhs), os.path.join(base, "custom_nodes", "ComfyUI-VideoHelperSuite"))
    video, audio = _make_inputs(os.path.join(base, "input"), args.frames, 25)
    server = ComfyUI(comfy_path, base)
    try:
        info = server.get("/object_info")
        missing = [n for n in ("SpinBotVideoCombine", "VHS_VideoCombine", "CreateVideo",
                               "SaveVideo", "GetVideoComponents") if n not in info]
        if missing:
            raise SystemExit(f"ComfyUI lacks {missing}:\n{server.log()}")
        source = {"1": {"class_type": "LoadVideo", "inputs": {"file": video}},
                  "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
                  "3": {"class_type": "LoadAudio", "inputs": {"audio": audio}}}
        images, sound = ["2", 0], ["3", 0]
        t0 = time.perf_counter()
        server.wait(server.queue({**source,
                                  "8": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
                                  "9": {"class_type": "PreviewAny", "inputs": {"source": sound}}}),
                    timeout=900)
        print(f"# ComfyUI {comfy_path}: decoded {args.frames} frames {W}x{H} + audio in "
              f"{time.perf_counter() - t0:.1f} s (cached for every saver); libx264 crf "
              f"{args.crf} preset {args.preset}; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f}. CPU = the ComfyUI process and its children.")

        def spinbot(crf: int, prefix: str) -> dict:
            return {"10": {"class_type": "SpinBotVideoCombine", "inputs": _with_defaults(
                info, "SpinBotVideoCombine", {
                    "images": images, "audio": sound, "fps": 25.0, "crf": crf,
                    "preset": args.preset, "filename_prefix": prefix})}}

        # Each saver's file names start with its key; core's SaveVideo has no crf widget (PyAV's
        # libx264 default, 23), so SpinBot also runs at crf 23 for a like-for-like comparison.
        keys = {"SpinBot Video Combine": "spinbot", "VHS Video Combine": "vhs",
                "core CreateVideo+SaveVideo": "core", "SpinBot at crf 23 (as core)": "spinbot23"}

        def savers(tag: str) -> dict[str, dict]:
            return {
                "SpinBot Video Combine": spinbot(args.crf, f"bench/spinbot_{tag}"),
                "VHS Video Combine": {"10": {"class_type": "VHS_VideoCombine", "inputs": {
                    "images": images, "audio": sound, "frame_rate": 25, "loop_count": 0,
                    "filename_prefix": f"bench/vhs_{tag}", "format": "video/h264-mp4",
                    "pingpong": False, "save_output": True, "pix_fmt": "yuv420p",
                    "crf": args.crf, "save_metadata": True, "trim_to_audio": False}}},
                "core CreateVideo+SaveVideo": {
                    "10": {"class_type": "CreateVideo", "inputs": {"images": images, "fps": 25.0,
                                                                   "audio": sound}},
                    "11": {"class_type": "SaveVideo", "inputs": {
                        "video": ["10", 0], "filename_prefix": f"bench/core_{tag}",
                        "format": "mp4", "codec": "h264"}}},
                "SpinBot at crf 23 (as core)": spinbot(23, f"bench/spinbot23_{tag}"),
            }

        pid = server.proc.pid
        for rnd in range(args.rounds):
            order = list(savers("x"))
            if rnd % 2:
                order.reverse()  # alternate the order so warm-up effects do not favour one
            fps_of = {}
            for name in order:
                prompt = {**source, **savers(f"r{rnd}")[name]}
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                before, tree_before, cpu_before = _rss_kb(pid), _tree_rss_kb(pid), _cpu_s(pid)
                with _TreePeak(pid) as tree:
                    entry = server.wait(server.queue(prompt), timeout=1800)
                cpu_ms = (_cpu_s(pid) - cpu_before) * 1000 / args.frames
                msgs = {event: data for event, data in entry["status"]["messages"]}
                cached = set(msgs["execution_cached"]["nodes"])
                assert {"1", "2", "3"} <= cached, f"source re-ran for {name}: {cached}"
                seconds = (msgs["execution_success"]["timestamp"]
                           - msgs["execution_start"]["timestamp"]) / 1000
                grow = (_rss_kb(pid, "VmHWM") - before) / 1024
                tree_grow = (tree.peak - tree_before) / 1024
                outputs = [os.path.join(dp, f) for dp, _, fs in
                           os.walk(os.path.join(base, "output", "bench")) for f in fs
                           if f.endswith(".mp4") and f.startswith(f"{keys[name]}_r{rnd}_")]
                final = max(outputs, key=os.path.getmtime)
                frames, has_audio = _packets(final)
                fps_of[name] = args.frames / seconds
                print(f"round {rnd + 1} {name:28s}: {fps_of[name]:6.1f} frames/s ({seconds:5.1f} s), "
                      f"CPU {cpu_ms:5.1f} ms/frame, ComfyUI peak RSS +{grow:5.0f} MB, process "
                      f"tree +{tree_grow:5.0f} MB; {os.path.basename(final)}: {frames} frames, "
                      f"audio {has_audio}")
            print(f"round {rnd + 1} ratio SpinBot/VHS = "
                  f"{fps_of['SpinBot Video Combine'] / fps_of['VHS Video Combine']:.2f}, "
                  f"SpinBot/core at crf 23 = "
                  f"{fps_of['SpinBot at crf 23 (as core)'] / fps_of['core CreateVideo+SaveVideo']:.2f}")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--long", type=int, default=3000)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--crf", type=int, default=19)
    parser.add_argument("--child")
    parser.add_argument("--comfyui", help="ComfyUI checkout: run section 3 only")
    parser.add_argument("--vhs", help="VideoHelperSuite checkout (default: beside ComfyUI)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.comfyui:
        comfyui_section(args)
        return 0
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
