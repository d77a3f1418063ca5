"""Lip-sync benchmark (figures, not assertions): per-frame cost of SpinBot Wav2Lip split into face
detection, the model, paste-back and frame I/O, at 720p.

    python -m benchmarks.bench_lipsync [--frames 32] [--batch 16] [--size 1280x720]
        [--full-cpu-frames 16] [--detect-every 1]

Rows:

- tiny / cpu: the tiny random Wav2Lip (tests/factory_lipsync.py) and the tiny SCRFD pack
  (tests/factory_lipsync_faces.py) run through insightface. The model figure says nothing about
  real weights; detection, paste-back and I/O are the real code paths at the real frame size.
  The tiny detector is much cheaper than det_10g, so its figure is a lower bound (the resize,
  ONNX Runtime call and box decoding are real).
- full / cpu: the release-size Wav2Lip (base width 16, random weights) on CPU for a few frames,
  to see the non-model share against a real-size model; "still" is the same with one still
  image as the source (direct mode), where detection runs once for the whole clip.
- full / cuda: the same on the GPU in fp16, with the detector on CUDA when onnxruntime has it;
  otherwise a "no GPU" line.

The input is a video on disk (skimage's astronaut scaled into a 1280x720 frame); the known face
box is used for the crops, so random-weight detections do not move the work around, while the
real detector still runs on every frame for its timing. Target: non-model work (detection +
paste + I/O) under 20 % of frame time at 720p on a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TimedKnownFace:
    """Runs the real detector (timed by the engine) but hands back a known face box."""

    def __init__(self, detector, box):
        self.detector, self.box = detector, box

    def detect(self, frame):
        self.detector.detect(frame)
        return [(*self.box, 0.99)]


def make_clip(frames: int, width: int, height: int):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from skimage import data

    face = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float()
    side = height
    face = F.interpolate(face, size=(side, side), mode="bilinear", antialias=True)
    canvas = np.full((height, width, 3), 90, np.uint8)
    left = (width - side) // 2
    canvas[:, left:left + side] = face[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    scale = side / 512
    box = (left + 178 * scale, 50 * scale, left + 268 * scale, 160 * scale)
    rng = np.random.default_rng(0)
    clip = np.stack([np.clip(canvas.astype(np.int16) + rng.integers(-2, 3, canvas.shape), 0, 255)
                     .astype(np.uint8) for _ in range(frames)])
    return clip, box


def run_row(label, model, detector, source, audio, settings):
    from spinbot.nodes.lipsync import engine

    timings = engine.Timings()
    start = time.perf_counter()
    engine.lip_sync(model, detector, source, audio, settings, timings=timings)
    total = time.perf_counter() - start
    per = {k: v * 1000 for k, v in timings.per_frame().items()}
    frame_ms = total * 1000 / max(timings.frames, 1)
    non_model = per["detection"] + per["paste"] + per["io"]
    print(f"{label:<14} {timings.frames:>4} frames  {frame_ms:8.1f} ms/frame  "
          f"detect {per['detection']:6.1f}  model {per['model']:7.1f}  paste {per['paste']:5.1f}  "
          f"io {per['io']:5.1f}  non-model {100 * non_model / frame_ms:5.1f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--detect-every", type=int, default=1,
                        help="run the detector on every n-th frame (the node's detect_every)")
    parser.add_argument("--full-cpu-frames", type=int, default=16,
                        help="frames for the release-size model on CPU (0 skips it)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="spinbot-bench-lipsync-")
    os.environ.setdefault("SPINBOT_PROGRESS", "0")
    os.environ["SPINBOT_TEMP_DIR"] = os.path.join(work, "temp")
    os.environ["SPINBOT_MODELS_DIR"] = os.path.join(work, "models")
    from tests._pack import load_pack

    load_pack()
    import torch

    from spinbot.nodes.lipsync import engine, faces
    from spinbot.nodes.lipsync.wav2lip import Wav2Lip, load_wav2lip
    from spinbot.nodes.media import make_audio
    from spinbot.nodes.video.store import write_video
    from tests.factory_lipsync import tiny_wav2lip_gan
    from tests.factory_lipsync_faces import tiny_buffalo_l

    models = Path(os.environ["SPINBOT_MODELS_DIR"])
    tiny_path = tiny_wav2lip_gan(models / "lipsync")[0]
    tiny_buffalo_l(models / "insightface")

    clip, box = make_clip(args.frames, width, height)
    video = write_video("bench-lipsync-source", 25.0, iter([clip]))
    source = engine.FrameSource(video=video)
    seconds = args.frames / 25.0
    t = torch.arange(int(seconds * 16000)) / 16000
    audio = make_audio(0.2 * torch.sin(2 * torch.pi * 180 * t) * (0.6 + 0.4 * torch.sin(8 * t)),
                       16000)
    settings = engine.LipSyncSettings(batch_size=args.batch, detect_every=args.detect_every)
    print(f"SpinBot Wav2Lip at {width}x{height}, {args.frames} frames, batch {args.batch}, "
          f"face box {int(box[2] - box[0])}x{int(box[3] - box[1])} px; ms per output frame")

    cpu_detector = TimedKnownFace(faces.load_detector("buffalo_l", device="cpu"), box)
    run_row("tiny / cpu", load_wav2lip(str(tiny_path)), cpu_detector, source, audio, settings)

    full = Wav2Lip().eval().requires_grad_(False)  # release size, random weights
    if args.full_cpu_frames > 0:
        n = min(args.full_cpu_frames, args.frames)
        short = make_audio(audio["waveform"][..., :int(n / 25.0 * 16000)], 16000)
        run_row("full / cpu", full, cpu_detector, source, short, settings)
        # A still portrait (direct mode): one detection for the whole clip.
        still = engine.FrameSource(torch.from_numpy(clip[:1]).float() / 255, fps=25.0)
        run_row("full/cpu still", full, cpu_detector, still, short, settings)

    if torch.cuda.is_available():
        gpu_detector = TimedKnownFace(faces.load_detector("buffalo_l", device="cuda"), box)
        model = full.to("cuda", torch.float16)
        run_row("warm-up", model, gpu_detector, source, audio, settings)
        run_row("full / cuda", model, gpu_detector, source, audio, settings)
        print(f"GPU: {torch.cuda.get_device_name()}; detector providers: "
              f"{faces.onnx_providers('cuda')}")
    else:
        print("full / cuda    no GPU on this machine: the GPU row (target: non-model work under "
              "20 % of frame time at 720p) was not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
