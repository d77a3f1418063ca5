"""Upscale benchmark (figures, not assertions): frames/s and peak memory of SpinBot Upscale beside a
plain spandrel loop, and beside ComfyUI's own ImageUpscaleWithModel when a ComfyUI checkout is
available (``COMFYUI_PATH``, or /work/comfyui when it holds nodes.py).

    python -m benchmarks.bench_upscale [--model RealESRGAN_x4plus.pth] [--frames 50]
        [--size 128x72] [--tile 512] [--overlap 32] [--batch 4] [--models-dir DIR]

Without ``--models-dir`` (or SPINBOT_MODELS_DIR) holding the model, the tiny random models of
tests/factory.py are built and used: their speed says little about real weights, their memory
behaviour (output + one batch) does. Each row runs in its own process; "peak RSS" is the growth of
resident memory during the timed run alone (VmHWM reset after set-up and a warm-up), "peak CUDA"
is torch's max_memory_allocated during it. Rows:

- spinbot IMAGE: the node, IMAGE in and out (preallocated output, frames in batches, tiled).
- spinbot VIDEO: the node, SPINBOT_VIDEO in and out (frames stream through disk).
- spandrel loop: a plain loop, one whole frame at a time, outputs gathered and concatenated.
- comfyui: ImageUpscaleWithModel (tile 512, overlap 32, per-frame tiled_scale) on the same model.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comfyui_path() -> str | None:
    path = os.environ.get("COMFYUI_PATH") or "/work/comfyui"
    return path if os.path.exists(os.path.join(path, "nodes.py")) else None


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> int:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM restarts from the current RSS
    return rss()


def peak_since(base: int) -> dict:
    import torch

    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    out = {"peak_rss_mb": (hwm - base) / 2**20}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def make_frames(count: int, width: int, height: int):
    """A real photo, shifted a little every frame (IMAGE float32)."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((width + count, height + count),
                                                                Image.BICUBIC))
    return torch.stack([torch.from_numpy(photo[i:i + height, i:i + width].copy())
                        for i in range(count)]).float().div_(255.0)


def model_path(args) -> str:
    return os.path.join(os.environ["SPINBOT_MODELS_DIR"], "upscale_models", args.model)


def timed(run, frames_count: int, repeat: int) -> dict:
    """Best time of ``repeat`` runs (shared machines are noisy); peaks of the first run (later
    runs reuse memory the allocator kept, which would flatter every row)."""
    import torch

    best, peaks = float("inf"), []
    for _ in range(repeat):
        base = reset_peak()
        t0 = time.perf_counter()
        result = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        peaks.append(peak_since(base))
        del result
    return {"fps": frames_count / best, "seconds": best, **peaks[0]}


def child_spinbot(args, mode: str) -> dict:
    sys.path.insert(0, ROOT)
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes.upscale.nodes_upscale import SpinBotUpscale
    from spinbot.nodes.video.store import content_key, write_video

    frames = make_frames(args.frames, *args.size)
    widgets = dict(target_scale=0.0, tile=args.tile, overlap=args.overlap,
                   precision=args.precision, frames_per_batch=args.batch)
    node = SpinBotUpscale()
    node.upscale(args.model, images=frames[:2], **widgets)  # warm-up
    if mode == "video":
        video = write_video(content_key("bench", time.time()), 25, iter([frames]))
        del frames

        def run():
            out = node.upscale(args.model, video=video, **widgets)[1]
            # drop the stored result, or the next repeat would just reuse it
            shutil.rmtree(os.path.dirname(out.chunks[0].path))
            return out
        return timed(run, video.frame_count, args.repeat)

    return timed(lambda: node.upscale(args.model, images=frames, **widgets)[0], len(frames),
                 args.repeat)


def child_spandrel(args) -> dict:
    import torch
    from spandrel import ModelLoader

    frames = make_frames(args.frames, *args.size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ModelLoader().load_from_file(model_path(args)).eval().to(device)

    def run():
        outs = []
        with torch.inference_mode():
            for frame in frames:
                x = frame.permute(2, 0, 1)[None].to(device)
                outs.append(model(x).permute(0, 2, 3, 1).cpu())
        return torch.cat(outs)
    with torch.inference_mode():
        model(frames[:1].permute(0, 3, 1, 2).to(device))  # warm-up
    return timed(run, len(frames), args.repeat)


def child_comfyui(args) -> dict:
    path = comfyui_path()
    sys.path.insert(0, path)
    import torch
    if not torch.cuda.is_available():
        # comfy.model_management reads its device from ComfyUI's command-line options on import.
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
    import comfy.utils  # noqa: E402  (from the checkout)
    from comfy_extras import nodes_upscale_model as upscale_nodes
    from spandrel import ModelLoader

    frames = make_frames(args.frames, *args.size)
    # What UpscaleModelLoader does, without configuring folder_paths for the bench's folder.
    state_dict = comfy.utils.load_torch_file(model_path(args), safe_load=True)
    model = ModelLoader().load_from_state_dict(state_dict).eval()
    node = upscale_nodes.ImageUpscaleWithModel

    def call(images):
        if hasattr(node, "execute"):  # ComfyUI's v3 node API
            out = node.execute(model, images)
            return out.args[0] if hasattr(out, "args") else out[0]
        return node().upscale(model, images)[0]
    call(frames[:2])  # warm-up
    return timed(lambda: call(frames), len(frames), args.repeat)


def run_child(kind: str, args, workdir: str) -> dict | str:
    env = {**os.environ, "SPINBOT_OUTPUT_DIR": os.path.join(workdir, "out"),
           "SPINBOT_TEMP_DIR": os.path.join(workdir, f"tmp-{kind}"), "SPINBOT_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "benchmarks.bench_upscale", "--child", kind, "--model", args.model,
           "--frames", str(args.frames), "--size", f"{args.size[0]}x{args.size[1]}",
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch),
           "--precision", args.precision, "--repeat", str(args.repeat)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="RealESRGAN_x4plus.pth")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--size", type=parse_size, default=(128, 72), help="input WxH")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4, help="SpinBot frames per batch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (best counts)")
    parser.add_argument("--models-dir", default=os.environ.get("SPINBOT_MODELS_DIR"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        fn = {"spinbot-image": lambda: child_spinbot(args, "image"),
              "spinbot-video": lambda: child_spinbot(args, "video"),
              "spandrel": lambda: child_spandrel(args),
              "comfyui": lambda: child_comfyui(args)}[args.child]
        print(json.dumps(fn()))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_upscale_") as workdir:
        tiny = not (args.models_dir and os.path.exists(
            os.path.join(args.models_dir, "upscale_models", args.model)))
        if tiny:
            sys.path.insert(0, ROOT)
            from tests.factory import build

            args.models_dir = os.path.join(workdir, "models")
            build(args.models_dir, only=["upscale_models"])
        os.environ["SPINBOT_MODELS_DIR"] = os.path.abspath(args.models_dir)
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        from spandrel import ModelLoader

        scale = ModelLoader().load_from_file(
            os.path.join(args.models_dir, "upscale_models", args.model)).scale
        w, h = args.size
        out_mb = args.frames * w * h * 3 * 4 * scale**2 / 2**20
        print(f"{args.model}{' (tiny random model from tests/factory.py)' if tiny else ''} x{scale}, "
              f"{args.frames} frames {w}x{h}, device {device}, {torch.get_num_threads()} threads, "
              f"SpinBot precision {args.precision}, batch {args.batch}, tile {args.tile}; "
              f"the IMAGE output is {out_mb:.0f} MB")
        kinds = ["spinbot-image", "spinbot-video", "spandrel"]
        if comfyui_path():
            kinds.append("comfyui")
        else:
            print("(no ComfyUI checkout: set COMFYUI_PATH to compare with ImageUpscaleWithModel)")
        print(f"{'':16}{'frames/s':>10}{'peak RSS MB':>13}{'peak CUDA MB':>14}")
        for kind in kinds:
            r = run_child(kind, args, workdir)
            if isinstance(r, str):
                print(f"{kind:16}{r}")
                continue
            cuda = f"{r['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in r else "-"
            print(f"{kind:16}{r['fps']:>10.2f}{r['peak_rss_mb']:>13.0f}{cuda:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
