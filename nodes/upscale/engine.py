"""The upscale engine: frames stream through the model a few at a time.

Peak memory is the output plus one step: a step is ``frames_per_batch`` frames moved to the
device, tiled through the model into a float32 buffer, optionally face-enhanced, resampled to the
target scale and handed on (copied into a preallocated IMAGE or written to a SPINBOT_VIDEO).
When the device runs out of memory the tile size halves (down to ``MIN_TILE``), then the step
shrinks to one frame, and the step is retried; past that a clear error says what to change.

NaN/inf are told apart by where they appear: in the input frames they are a `MediaError` naming
the frames (checked before any of them reaches the model), in the model's output from finite
frames an `UpscaleModelError` naming the precision (fp16 overflow) or a damaged model file.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime
from ..media import MediaError, check_image
from ..video.store import SpinBotVideo, content_key, load_video, write_video
from .model import Upscaler, UpscaleModelError, pick_dtype
from .tiling import upscale_tiled

MIN_TILE = 64  # below this the overlap dominates and tiling stops paying for itself
log = logging.getLogger("spinbot.upscale")


class FaceEnhancer(Protocol):
    """Hook for a face restoration model (GFPGAN, CodeFormer, ...) run on each step.

    Called with the upscaled frames ``[B,3,H*s,W*s]`` (float32, 0..1, on the model's device,
    before resampling to the target scale) and the source frames ``[B,3,H,W]`` (same device,
    float32); returns frames of the upscaled shape, e.g. the upscaled ones with restored faces
    pasted back. Face detection can run on the smaller source frames. It runs inside
    ``torch.inference_mode()``; modifying ``upscaled`` in place is fine.
    """

    def __call__(self, upscaled: torch.Tensor, source: torch.Tensor) -> torch.Tensor: ...


class UpscaleMemoryError(MemoryError):
    """Out of memory even at the smallest tile and one frame at a time."""


@dataclass(frozen=True)
class UpscaleSettings:
    target_scale: float = 0.0   # 0: the model's native scale; smaller values resample after it
    tile: int = 512             # input pixels per tile side; 0: whole frames
    overlap: int = 32           # context read around each tile; the seam fades over it
    precision: str = "auto"     # auto / fp32 / fp16 / bf16
    frames_per_batch: int = 4   # frames through the model at once


def output_size(upscaler: Upscaler, settings: UpscaleSettings, height: int,
                width: int) -> tuple[int, int]:
    scale = settings.target_scale or upscaler.scale
    if not math.isfinite(scale):  # NaN passes every comparison below (and ComfyUI's min/max)
        raise UpscaleModelError(f"target scale must be a finite number, got {scale:g}")
    if scale > upscaler.scale + 1e-6:
        raise UpscaleModelError(
            f"target scale {scale:g} is above {upscaler.name}'s native x{upscaler.scale}; pick "
            "a model with a larger scale or chain two upscales")
    if scale <= 0:
        raise UpscaleModelError(f"target scale must be positive, got {scale:g}")
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resample(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(frames.shape[-2:]) == size:
        return frames
    try:  # antialiased bicubic: a clean downscale without aliasing
        out = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    except (NotImplementedError, RuntimeError):  # backends without antialias (older MPS)
        out = F.interpolate(frames, size=size, mode="area")
    return out.clamp_(0.0, 1.0)


def check_finite_frames(batch: torch.Tensor | np.ndarray, what: str = "images",
                        first_index: int = 0, stage: str = "the upscaler") -> None:
    """Raise `MediaError` naming the frames of ``[B,H,W,C]`` that hold NaN or inf, counted from
    ``first_index`` (the message style of `media.images_to_uint8`), and the ``stage`` that was
    not run on them. Integer frames pass."""
    if isinstance(batch, np.ndarray):
        if batch.dtype.kind != "f":  # uint8 chunks of a SPINBOT_VIDEO cannot hold NaN
            return
        batch = torch.from_numpy(np.asarray(batch))
    if not batch.is_floating_point():
        return
    frames = batch
    # A per-frame sum is NaN/inf exactly when the frame holds one: one reduction, no mask.
    finite = torch.isfinite(frames.reshape(frames.shape[0], -1).sum(dim=1, dtype=torch.float64))
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        shown = ", ".join(str(first_index + i) for i in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise MediaError(f"{what}: frame(s) {shown}{more} contain NaN or infinite values; these "
                         f"input frames are broken (fix the node that made them), {stage} "
                         "was not run on them")


def _as_bchw(batch: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """IMAGE ``[B,H,W,C]`` float or uint8 frames -> float32 ``[B,3,H,W]`` on the device."""
    if isinstance(batch, np.ndarray):  # chunks are read-only memory maps: copy the batch once
        batch = torch.from_numpy(np.array(batch, copy=True))
    if batch.dtype == torch.uint8:  # convert on the device: 4x less to copy
        return batch.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return check_image(batch).to(device).permute(0, 3, 1, 2)


class _Runner:
    """Runs steps on the device and adapts tile and step size to out-of-memory errors."""

    def __init__(self, upscaler: Upscaler, settings: UpscaleSettings, device: torch.device,
                 face_enhancer: FaceEnhancer | None):
        self.upscaler, self.device, self.face_enhancer = upscaler, device, face_enhancer
        self.dtype = pick_dtype(upscaler, settings.precision, device)
        self.settings = settings
        self.tile = max(0, int(settings.tile))
        self.frames = max(1, int(settings.frames_per_batch))
        self.floor = max(MIN_TILE, upscaler.minimum_size, upscaler.multiple_of)

    def memory_estimate(self, height: int, width: int) -> int:
        """Device bytes for the model and one step; a rough guess that only decides how much
        ComfyUI unloads first (the out-of-memory fallback handles a wrong guess)."""
        up, overlap = self.upscaler, self.settings.overlap
        tile_h = min(height, self.tile or height) + 2 * overlap
        tile_w = min(width, self.tile or width) + 2 * overlap
        element = torch.finfo(self.dtype).bits // 8
        # ~384 activations per input value at x1 (ComfyUI's own estimate for these models)
        activations = tile_h * tile_w * 3 * element * max(up.scale, 1) * 384
        buffers = height * width * 3 * 4 * (up.scale ** 2 + 1)  # accumulator + source, float32
        return up.size_bytes() + self.frames * (activations + buffers)

    @torch.inference_mode()  # spandrel's outputs are inference tensors: stay in that mode
    def step(self, source: torch.Tensor, size: tuple[int, int], first: int = 0) -> torch.Tensor:
        """Upscale float32 ``[n,3,H,W]`` (finite, frames ``first``.. of the input) on the device
        to float32 ``[n,3,*size]``; NaN/inf in the model's output raise `UpscaleModelError`."""
        up = self.upscaler
        out = upscale_tiled(up.forward, source.to(self.dtype), up.scale, self.tile,
                            self.settings.overlap, up.multiple_of, up.minimum_size,
                            check=runtime.check_interrupted)
        # One reduction, no mask: NaN survives the sum (spandrel's clamp already turned inf
        # into 1). fp16/bf16 sums are done in float32 since ``out`` is float32.
        if not bool(torch.isfinite(out.sum())):
            hint = ("the model file may be damaged" if self.dtype == torch.float32 else
                    "fp16 overflows in some models: set precision to fp32 (or bf16)")
            last = first + source.shape[0] - 1
            frames = f"frame {first} is" if last == first else f"frames {first}-{last} are"
            raise UpscaleModelError(f"{up.name} produced NaN/inf values in "
                                    f"{str(self.dtype).replace('torch.', '')}; {hint} (input "
                                    f"{frames} finite: the bad values come from the model)")
        if self.face_enhancer is not None:
            out = self.face_enhancer(out, source)
        return _resample(out, size)

    def shrink(self, height: int, width: int) -> None:
        """Halve the tile (down to the floor), then the step; raise when neither can shrink."""
        current = self.tile if 0 < self.tile < max(height, width) else max(height, width)
        if current > self.floor:
            self.tile = max(self.floor, current // 2)
        elif self.frames > 1:
            self.frames = max(1, self.frames // 2)
        else:
            raise UpscaleMemoryError(
                f"out of memory on {self.device} upscaling {width}x{height} frames with "
                f"{self.upscaler.name} even with {self.floor}px tiles and one frame at a time "
                f"({str(self.dtype).replace('torch.', '')}); free memory (unload other models), "
                "use fp16/bf16 precision or a smaller model")
        log.warning("out of memory: retrying with %s tiles, %d frame(s) at a time",
                    f"{self.tile}px", self.frames)


def upscale_stream(upscaler: Upscaler, batches: Iterable[torch.Tensor | np.ndarray],
                   settings: UpscaleSettings, face_enhancer: FaceEnhancer | None = None,
                   device: torch.device | None = None, as_uint8: bool = False,
                   on_step: Callable[[int], None] | None = None,
                   ) -> Iterator[torch.Tensor | np.ndarray]:
    """Upscale batches of frames (IMAGE or uint8 ``[B,H,W,3]``) step by step into float32 IMAGE
    batches on the CPU, or uint8 ``[n,H,W,3]`` arrays with ``as_uint8`` (converted on the device,
    a quarter of the bytes to copy back). The model moves to the device for the run only.
    Yielded tensors are inference tensors: copy them (as `upscale_images` does) to modify."""
    device = device or runtime.torch_device()
    runner = _Runner(upscaler, settings, device, face_enhancer)
    moved = False
    seen = 0  # frames of earlier batches, for frame numbers in errors
    try:
        for batch in batches:
            frames = batch.shape[0]
            check_finite_frames(batch, "images", seen)
            height, width = int(batch.shape[1]), int(batch.shape[2])
            size = output_size(upscaler, settings, height, width)
            if not moved:
                if device.type != "cpu":  # ask ComfyUI to unload its models from VRAM first
                    runtime.make_room(runner.memory_estimate(height, width), device)
                upscaler.to(device, runner.dtype)
                moved = True
            pos = 0
            while pos < frames:
                runtime.check_interrupted()
                count = min(runner.frames, frames - pos)
                result, oom = runtime.run_or_oom(lambda: runner.step(
                    _as_bchw(batch[pos:pos + count], device), size, seen + pos))
                if oom:
                    runtime.release_memory()  # returns cached blocks so the retry can use them
                    runner.shrink(height, width)
                    continue
                result = result.permute(0, 2, 3, 1)
                if as_uint8:  # +0.5 then truncation rounds half up, like media.images_to_uint8
                    yield result.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()
                else:
                    yield result.to("cpu", torch.float32)
                del result
                pos += count
                if on_step is not None:
                    on_step(count)
            seen += frames
    finally:
        if moved:
            upscaler.to(runtime.offload_device(), torch.float32)
        if device.type != "cpu":
            runtime.release_memory()


def upscale_images(upscaler: Upscaler, images: torch.Tensor, settings: UpscaleSettings,
                   face_enhancer: FaceEnhancer | None = None,
                   device: torch.device | None = None) -> torch.Tensor:
    """IMAGE in, IMAGE out, written into one preallocated output tensor."""
    images = check_image(images, "images")
    check_finite_frames(images, "images")  # all bad frames named at once, before any work
    count, height, width = images.shape[:3]
    out_h, out_w = output_size(upscaler, settings, height, width)
    need = count * out_h * out_w * 3 * 4
    free = runtime.free_memory_bytes(torch.device("cpu"))
    if need > free:
        raise MediaError(
            f"{count} upscaled {out_w}x{out_h} frames need {need / 2**30:.1f} GiB of RAM as IMAGE "
            f"but {free / 2**30:.1f} GiB are free; convert the frames to a SPINBOT_VIDEO first "
            "(SpinBot Images to Video) so they stream through disk, or lower the target scale")
    output = torch.empty(count, out_h, out_w, 3, dtype=torch.float32)
    step = max(1, settings.frames_per_batch)
    batches = (images[i:i + step] for i in range(0, count, step))
    done = 0
    with runtime.Progress(count, "SpinBot Upscale") as progress:
        for result in upscale_stream(upscaler, batches, settings, face_enhancer, device,
                                     on_step=progress.update):
            output[done:done + result.shape[0]].copy_(result)
            done += result.shape[0]
    return output


def video_key(upscaler: Upscaler, settings: UpscaleSettings, video: SpinBotVideo,
              device: torch.device | None = None) -> str:
    """Cache key of an upscaled video: model file, settings, run dtype and the input video."""
    device = device or runtime.torch_device()
    dtype = pick_dtype(upscaler, settings.precision, device)
    return content_key("upscale", runtime.file_stamp(upscaler.path), settings.target_scale,
                       settings.tile, settings.overlap, str(dtype), video.identity())


def upscale_video(upscaler: Upscaler, video: SpinBotVideo, settings: UpscaleSettings,
                  face_enhancer: FaceEnhancer | None = None,
                  device: torch.device | None = None) -> SpinBotVideo:
    """SPINBOT_VIDEO in, SPINBOT_VIDEO out, written chunk by chunk; audio and segments kept.

    A finished video with the same key is reused. With a face enhancer the result is not cached
    (the hook's own state is not part of the key).
    """
    key = video_key(upscaler, settings, video, device)
    if face_enhancer is not None:
        key = content_key(key, "face", id(face_enhancer), time.time_ns())
    existing = load_video(key)
    if existing is not None:
        return existing
    video.check()
    step = max(1, settings.frames_per_batch)
    with runtime.Progress(video.frame_count, "SpinBot Upscale") as progress:
        stream = upscale_stream(upscaler, video.iter_frames(step), settings, face_enhancer,
                                device, as_uint8=True, on_step=progress.update)
        segments = None if video.segments is None else list(video.segments)
        return write_video(key, video.fps, stream, audio=video.audio, segments=segments)
