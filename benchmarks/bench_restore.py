"""Face restore benchmark (figures, not assertions): seconds per minute of source video and peak
memory of SpinBot Face Restore's video path.

    python -m benchmarks.bench_restore [--model tiny|gfpgan|FILE] [--frames 25] [--size 512x512]
        [--fps 25] [--faces-per-batch 4] [--detector known|scrfd] [--json]

``--model tiny`` (default) is the factory's tiny RestoreFormer, ``gfpgan`` a full-size random
GFPGANv1.4 (the real network's cost: spandrel fixes its sizes), or a path to a real file. The
frames are skimage's astronaut shifted by a pixel per frame and resized to ``--size``. The
``known`` detector gives the astronaut's face (scaled to the size) on every frame, so every frame
pays for one restored face; ``scrfd`` runs the tiny SCRFD pack (random faces: detector cost).
"peak RSS" is the resident-memory growth during the timed run (VmHWM reset after set-up), "peak
CUDA" torch's max_memory_allocated during it. Each run uses a fresh store, so nothing is reused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The astronaut's face keypoints at 512x512 (as in tests/test_face_restore.py).
ASTRONAUT_KPS = [[205, 100], [242, 96], [226, 122], [210, 142], [240, 139]]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--faces-per-batch", type=int, default=4)
    parser.add_argument("--detector", choices=("known", "scrfd"), default="known")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="bench_restore_")
    for name in ("output", "temp", "input", "models"):
        os.makedirs(os.path.join(work, name))
        os.environ[f"SPINBOT_{name.upper()}_DIR"] = os.path.join(work, name)
    os.environ.setdefault("SPINBOT_PROGRESS", "0")

    from pathlib import Path

    import numpy as np
    from PIL import Image
    from skimage import data

    from benchmarks.bench_upscale import peak_since, reset_peak
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes import runtime
    from spinbot.nodes.restore.model import load_restorer_file
    from spinbot.nodes.restore.restore import RestoreSettings, RestoreStats, restore_video
    from spinbot.nodes.video.store import write_video
    from tests import factory_restore

    models = Path(work) / "models" / "facerestore_models"
    if args.model == "tiny":
        path = factory_restore.tiny_restoreformer(models)[0]
    elif args.model == "gfpgan":
        path = factory_restore.write_gfpgan(models)
    else:
        path = Path(args.model)
    restorer = load_restorer_file(str(path))

    photo = np.asarray(Image.fromarray(data.astronaut()).resize(
        (width + args.frames, height + args.frames), Image.BICUBIC))
    frames = np.stack([photo[i:i + height, i:i + width] for i in range(args.frames)])
    video = write_video(f"bench_restore_src_{args.frames}_{width}x{height}", args.fps,
                        (frames[i:i + 16] for i in range(0, len(frames), 16)))

    if args.detector == "known":
        kps = np.asarray(ASTRONAUT_KPS, np.float32) * np.float32([width / 512, height / 512])
        box = (*kps.min(0) - 20, *kps.max(0) + 20, 0.99)

        class Known:
            def detect_landmarks(self, frame):
                return [(box, kps)]

        detector = Known()
    else:
        from spinbot.nodes.lipsync.faces import InsightFaceDetector
        from tests.factory_lipsync_faces import write_tiny_pack

        pack = Path(work) / "models" / "insightface" / "models" / "buffalo_l"
        write_tiny_pack(pack, seed=10)
        detector = InsightFaceDetector(str(pack), device=runtime.torch_device().type)

    settings = RestoreSettings(strength=1.0, faces_per_batch=args.faces_per_batch)
    stats = RestoreStats()
    base = reset_peak()
    started = time.perf_counter()
    out, _reused = restore_video(restorer, detector, video, settings, stats, args.detector)
    seconds = time.perf_counter() - started
    result = {
        "model": f"{restorer.architecture} ({args.model})", "device": str(runtime.torch_device()),
        "frames": args.frames, "size": f"{width}x{height}", "faces": sum(stats.faces_per_frame),
        "seconds": round(seconds, 2), "frames_per_s": round(args.frames / seconds, 2),
        "s_per_min_of_video": round(seconds / (args.frames / args.fps) * 60.0, 1),
        **{k: round(v, 1) for k, v in peak_since(base).items()},
    }
    assert out.frame_count == args.frames
    print(json.dumps(result) if args.json else
          "\n".join(f"{k:>20}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
