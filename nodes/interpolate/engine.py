"""Frame interpolation of a SPINBOT_VIDEO, streamed chunk by chunk through the video store.

n input frames at f fps become exactly n*m frames at f*m fps (m = multiplier), so the duration
and the audio clock do not move: output frame i*m is input frame i unchanged (bytes copied, no
float round trip), frames i*m+1 .. i*m+m-1 lie between inputs i and i+1 at timesteps k/m, and the
last input frame is held m times. Only a few frames are in RAM at once: each read batch plus the
last frame of the previous one (so pairs across chunk boundaries are interpolated like any other).

Scene cuts are never blended across: where input i+1 starts a new segment (a boundary of the
video's ``.segments`` or of the ``segments`` input, at frame round(start * fps), the clock the
scene stages use) or where a hard cut is detected (mean absolute difference of frames i and i+1
over every pixel and channel, in 0..255 levels, above ``scene_cut_threshold``), the in-betweens
are copies of frame i: the old scene stays on screen until the new one's first frame time.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .. import model_cache, runtime
from ..media import MediaError
from ..script.segments import coerce_segments
from ..video.store import SpinBotVideo, VideoWriter, content_key, load_video
from .ifnet import IFNet
from .model import RIFEModel, RIFEModelError

log = logging.getLogger("spinbot.interpolate")

MAX_MULTIPLIER = 8
# Powers of two only: each block resamples by 8/scale .. 1/scale, and other factors give
# fractional feature-map sizes that no longer line up between blocks.
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class InterpolationSettings:
    multiplier: int = 2             # output frames per input frame (2..8)
    scale: float = 1.0              # RIFE's flow scale: 1.0 up to 1080p, 0.5 for 4K
    scene_cut_threshold: float = 40.0  # mean abs frame difference (0..255) marking a cut; 0: off
    read_frames: int = 4            # input frames read from the store per step
    batch_size: int = 2             # frames made per model call (pairs x timesteps)


@dataclass
class InterpolationReport:
    frames_in: int = 0
    frames_out: int = 0
    fps_in: float = 0.0
    fps_out: float = 0.0
    boundary_cuts: list[int] = field(default_factory=list)   # input index of the new scene
    detected_cuts: list[int] = field(default_factory=list)
    interpolated_pairs: int = 0
    seconds: float = 0.0
    reused: bool = False
    device: str = ""

    @property
    def interpolated_frames(self) -> int:
        """Frames made by the model (not originals, held or cut copies)."""
        per_pair = self.frames_out // self.frames_in - 1 if self.frames_in else 0
        return self.interpolated_pairs * per_pair

    def as_extra(self) -> dict:
        return {"boundary_cuts": self.boundary_cuts, "detected_cuts": self.detected_cuts,
                "interpolated_pairs": self.interpolated_pairs}

    def text(self) -> str:
        def times(indices: list[int]) -> str:
            if not indices:
                return "none"
            shown = ", ".join(f"{i / self.fps_in:.2f}s" for i in indices[:20])
            return shown + (f" (+{len(indices) - 20} more)" if len(indices) > 20 else "")

        lines = [f"frames: {self.frames_in} in -> {self.frames_out} out",
                 f"fps: {self.fps_in:g} -> {self.fps_out:g} (duration "
                 f"{self.frames_in / self.fps_in:.3f}s unchanged)",
                 f"segment boundaries kept as cuts: {times(self.boundary_cuts)}",
                 f"detected cuts: {times(self.detected_cuts)}",
                 f"interpolated pairs: {self.interpolated_pairs}"]
        if self.reused:
            lines.append("reused the result of an earlier identical run")
        elif self.seconds > 0:
            made = self.interpolated_frames
            lines.append(f"{made} interpolated frames in {self.seconds:.1f}s on {self.device} "
                         f"({made / self.seconds:.2f} frames/s)")
        return "\n".join(lines)


def check_settings(settings: InterpolationSettings) -> None:
    """Raise `MediaError` for a multiplier outside 2..8, a scale not in `SCALES` or a negative
    or non-finite threshold."""
    m = settings.multiplier
    if not isinstance(m, int) or not 2 <= m <= MAX_MULTIPLIER:
        raise MediaError(f"multiplier must be a whole number from 2 to {MAX_MULTIPLIER}, got {m}")
    if not any(abs(settings.scale - s) < 1e-9 for s in SCALES):
        raise MediaError(f"scale must be one of {', '.join(f'{s:g}' for s in SCALES)} (RIFE "
                         f"works on power-of-two pyramids), got {settings.scale:g}")
    t = settings.scene_cut_threshold
    if not (math.isfinite(t) and t >= 0):
        raise MediaError(f"scene_cut_threshold must be 0 or more, got {t}")


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 ``[H,W,3]`` frames over all pixels and channels,
    in 0..255 levels (0 = identical). Consecutive frames of one shot rarely pass ~30; a hard cut
    between unrelated pictures typically gives 50-100."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def boundary_frames(segments: Iterable, fps: float, frame_count: int) -> list[int]:
    """Input frames that start a new segment: round(start * fps) for every segment after the
    first, kept where 1 <= index < frame_count (a cut sits between index-1 and index)."""
    out = set()
    for seg in coerce_segments(segments or ()):
        index = int(round(seg.start * fps))
        if 1 <= index < frame_count:
            out.add(index)
    return sorted(out)


def _dtype(device: torch.device) -> torch.dtype:
    # fp16 on CUDA (RIFE's releases are run in half precision there); fp32 elsewhere.
    return torch.float16 if device.type == "cuda" else torch.float32


class _Interpolator:
    """Runs pairs of uint8 frames through the network: ``[P,H,W,3]`` x2 -> ``[P,m-1,H,W,3]``,
    ``batch_size`` made frames (pair x timestep) per call, halved when memory runs out."""

    def __init__(self, net: IFNet, settings: InterpolationSettings, device: torch.device):
        self.net, self.settings, self.device = net, settings, device
        self.dtype = _dtype(device)
        self.batch = max(1, settings.batch_size)
        self.multiple = net.size_multiple(settings.scale)

    def _prepare(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:  # zero padding, as the reference inference code pads
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    @torch.inference_mode()
    def _run(self, first: np.ndarray, second: np.ndarray, steps: list[float]) -> np.ndarray:
        """``[B,H,W,3]`` x2 and B timesteps -> the B made frames, uint8 ``[B,H,W,3]``."""
        count, h, w = first.shape[:3]
        timestep = torch.tensor(steps, device=self.device, dtype=self.dtype)
        out = self.net(self._prepare(first), self._prepare(second), timestep,
                       self.settings.scale)
        out = out[:, :, :h, :w].float()
        if not bool(torch.isfinite(out.sum())):  # one reduction: NaN/inf survive the sum
            hint = ("the model file may be damaged" if self.dtype == torch.float32 else
                    "fp16 overflowed; the model file may be damaged")
            raise RIFEModelError(f"the RIFE model produced NaN/inf values "
                                 f"({str(self.dtype).replace('torch.', '')}); {hint}")
        out = out.mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).cpu().numpy()

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        m = self.settings.multiplier
        count, h, w = first.shape[:3]
        made = np.empty((count, m - 1, h, w, 3), np.uint8)
        tasks = [(p, k) for p in range(count) for k in range(1, m)]
        pos = 0
        while pos < len(tasks):
            runtime.check_interrupted()
            chunk = tasks[pos:pos + self.batch]
            pick = [p for p, _ in chunk]
            result, oom = runtime.run_or_oom(
                lambda: self._run(first[pick], second[pick], [k / m for _, k in chunk]))
            if oom:
                runtime.release_memory()
                if self.batch == 1:
                    raise MemoryError(
                        f"out of memory on {self.device} making one {w}x{h} frame with RIFE; "
                        "free memory (unload other models) or set scale to 0.5") from None
                self.batch = max(1, self.batch // 2)
                log.warning("out of memory: retrying with %d frame(s) per call", self.batch)
                continue
            for j, (p, k) in enumerate(chunk):
                made[p, k - 1] = result[j]
            pos += len(chunk)
        return made


def video_key(rife: RIFEModel, video: SpinBotVideo, settings: InterpolationSettings,
              boundaries: list[int], device: torch.device) -> str:
    """Cache key: model file, settings that change pixels, run dtype, cuts and the input."""
    return content_key("rife", runtime.file_stamp(rife.path), settings.multiplier,
                       float(settings.scale), float(settings.scene_cut_threshold),
                       str(_dtype(device)), boundaries, video.identity())


def interpolate_video(rife, video: SpinBotVideo, settings: InterpolationSettings,
                      segments=None, device: torch.device | None = None,
                      ) -> tuple[SpinBotVideo, InterpolationReport]:
    """SPINBOT_VIDEO -> SPINBOT_VIDEO at ``fps * multiplier`` with ``n * multiplier`` frames
    (see the module docstring), audio kept, segments kept (the video's own, else ``segments``).

    ``rife``: a `RIFEModel` or a `model_cache.ModelRef` to one. ``segments``: SPINBOT_SEGMENTS
    whose boundaries are cuts (default: the video's own ``.segments``). A finished result with
    the same key is reused. Raises `MediaError` for bad settings or a damaged video,
    `RIFEModelError` for NaN from the model, `MemoryError` when one pair does not fit.
    """
    check_settings(settings)
    device = device or runtime.torch_device()
    rife = model_cache.resolve(rife)
    n, fps, m = video.frame_count, float(video.fps), settings.multiplier
    cut_source = segments if segments is not None else video.segments
    boundaries = boundary_frames(cut_source, fps, n)
    out_segments = (list(video.segments) if video.segments is not None else
                    [s.to_dict() for s in coerce_segments(segments)] if segments is not None
                    else None)
    report = InterpolationReport(frames_in=n, frames_out=n * m, fps_in=fps, fps_out=fps * m,
                                 boundary_cuts=boundaries, device=str(device))
    key = video_key(rife, video, settings, boundaries, device)
    existing = load_video(key)
    if existing is not None and existing.frame_count == n * m:
        report.detected_cuts = list(existing.extra.get("detected_cuts", []))
        report.interpolated_pairs = int(existing.extra.get("interpolated_pairs", 0))
        report.reused = True
        return existing, report
    video.check()
    cut_set = set(boundaries)
    net = rife.net
    runner = _Interpolator(net, settings, device)
    started = time.perf_counter()
    if device.type != "cpu":
        # A rough guess that only decides how much ComfyUI unloads first (the out-of-memory
        # fallback handles a wrong one): per made frame ~50 full-resolution channels live at
        # once (both frames, features, warps, flow, mask, the finest block's input), i.e. ~32
        # three-channel frames with the allocator's slack.
        frame_bytes = video.width * video.height * 3 * torch.finfo(runner.dtype).bits // 8
        runtime.make_room(rife.size_bytes() + runner.batch * frame_bytes * 32, device)
    net.to(device, runner.dtype)
    try:
        with VideoWriter(key, fps * m) as writer, \
                runtime.Progress(n, "SpinBot Frame Interpolation") as progress:
            prev: np.ndarray | None = None
            first_index = 0  # input index of frames[0]
            for batch in video.iter_frames(max(1, settings.read_frames)):
                runtime.check_interrupted()
                frames = batch if prev is None else np.concatenate([prev[None], batch])
                pairs = len(frames) - 1
                if pairs > 0:
                    writer.write(_pairs_output(frames, first_index, cut_set, settings, runner,
                                               report))
                    progress.update(pairs)
                prev = np.array(frames[-1], copy=True)
                first_index += pairs
            if prev is None:
                raise MediaError("the video has no frames")
            writer.write(np.repeat(prev[None], m, axis=0))  # the last frame held: same duration
            progress.update(1)
            report.seconds = time.perf_counter() - started
            out = writer.finish(audio=video.audio, segments=out_segments,
                                extra=report.as_extra())
    finally:
        net.to(runtime.offload_device(), torch.float32)
        if device.type != "cpu":
            runtime.release_memory()
    return out, report


def _pairs_output(frames: np.ndarray, first_index: int, cut_set: set[int],
                  settings: InterpolationSettings, runner: _Interpolator,
                  report: InterpolationReport) -> np.ndarray:
    """Output frames for the pairs (frames[i], frames[i+1]): ``[(len-1)*m,H,W,3]`` uint8."""
    m = settings.multiplier
    pairs = len(frames) - 1
    blend = []
    for i in range(pairs):
        index = first_index + i + 1  # input index of the pair's second frame
        if index in cut_set:
            continue
        if settings.scene_cut_threshold > 0 and \
                frame_difference(frames[i], frames[i + 1]) > settings.scene_cut_threshold:
            report.detected_cuts.append(index)
            continue
        blend.append(i)
    out = np.repeat(frames[:-1], m, axis=0)  # originals, and the copies for cuts
    if blend:
        picked = np.asarray(blend)
        made = runner(frames[picked], frames[picked + 1])
        out = out.reshape(pairs, m, *frames.shape[1:])
        out[picked, 1:] = made
        out = out.reshape(pairs * m, *frames.shape[1:])
        report.interpolated_pairs += len(blend)
    return out
