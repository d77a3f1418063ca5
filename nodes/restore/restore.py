"""The face restore engine: detect, align, restore, paste back, frame batch by frame batch.

Frames stream through in batches (a SPINBOT_VIDEO chunk by chunk, never whole in RAM): each
frame's faces are found with keypoints, warped onto the FFHQ template (`align`), the aligned
crops of the batch go through the model a few at a time on the device, and each restored crop is
blended back inside its warped mask by ``strength``. Frames without a face are handed on as they
came. Out of device memory, the faces per model call halve and the call is retried.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from .. import runtime
from ..lipsync.faces import Box
from ..media import MediaError, check_image
from ..video.store import SpinBotVideo, content_key, load_video, write_video
from .align import FACE_SIZE, alignment, paste_face, warp_face
from .model import FaceRestorer, pick_dtype

Face = tuple[Box, np.ndarray]  # box (x1, y1, x2, y2, score) and keypoints [5,2], frame pixels


class LandmarkDetector(Protocol):
    """Finds faces with five keypoints (left eye, right eye, nose, left and right mouth corner)
    in one frame: uint8 ``[H,W,3]`` RGB -> ``[(box, kps[5,2]), ...]``."""

    def detect_landmarks(self, frame: np.ndarray) -> list[Face]: ...


def find_faces(detector, frame: np.ndarray) -> list[Face]:
    """Faces with keypoints from a `LandmarkDetector`, or from the lip-sync stage's
    `InsightFaceDetector` (whose SCRFD gives the five keypoints with each box; its ``detect``
    returns boxes only, so its FaceAnalysis is asked directly). Raises `MediaError` for a
    detector that gives no keypoints."""
    if hasattr(detector, "detect_landmarks"):
        return list(detector.detect_landmarks(frame))
    analysis = getattr(detector, "analysis", None)
    if analysis is None:
        raise MediaError(f"the face detector {type(detector).__name__} gives no keypoints; face "
                         "restore aligns faces on the five SCRFD keypoints (an insightface pack)")
    bgr = np.ascontiguousarray(frame[..., ::-1])  # insightface follows OpenCV: BGR
    return [((*map(float, f.bbox[:4]), float(f.det_score)), np.asarray(f.kps, np.float32))
            for f in analysis.get(bgr) if getattr(f, "kps", None) is not None]


@dataclass(frozen=True)
class RestoreSettings:
    strength: float = 1.0          # 0: the original frame, 1: the restored face inside the mask
    only_largest_face: bool = True  # else every detected face
    fidelity: float = 0.5          # CodeFormer's w (ignored by GFPGAN and RestoreFormer)
    precision: str = "auto"        # auto / fp32 / fp16 / bf16
    faces_per_batch: int = 4       # aligned faces through the model at once


@dataclass
class RestoreStats:
    """What a run did, for the node's report."""

    frames: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    unusable: int = 0  # detected faces whose keypoints gave no alignment
    seconds: float = 0.0

    @property
    def faceless(self) -> list[int]:
        return [i for i, n in enumerate(self.faces_per_frame) if n == 0]

    def summary(self) -> str:
        counts: dict[int, int] = {}
        for n in self.faces_per_frame:
            counts[n] = counts.get(n, 0) + 1
        hist = ", ".join(f"{n} face{'s' if n != 1 else ''}: {c} frame{'s' if c != 1 else ''}"
                         for n, c in sorted(counts.items()))
        lines = [f"{self.frames} frames, {sum(self.faces_per_frame)} faces restored ({hist})"]
        faceless = self.faceless
        if faceless:
            shown = ", ".join(str(i) for i in faceless[:20])
            more = f" and {len(faceless) - 20} more" if len(faceless) > 20 else ""
            lines.append(f"frames without a face, passed through unchanged: {len(faceless)} "
                         f"({shown}{more})")
        if self.unusable:
            lines.append(f"{self.unusable} detected face(s) skipped: their keypoints do not "
                         "give an alignment (degenerate or tiny)")
        return "\n".join(lines)


class _Runner:
    """The model on the device, run on aligned crops a few at a time."""

    def __init__(self, restorer: FaceRestorer, settings: RestoreSettings, device: torch.device):
        self.restorer, self.settings, self.device = restorer, settings, device
        self.dtype = pick_dtype(restorer, settings.precision, device)
        self.batch = max(1, int(settings.faces_per_batch))
        self.moved = False

    def start(self) -> None:
        if self.moved:
            return
        if self.device.type != "cpu":  # ask ComfyUI to unload its models from VRAM first
            # weights + ~200 float activations per input value of a 512 face (a rough guess: it
            # only decides how much ComfyUI unloads; out-of-memory is handled by halving)
            activations = self.batch * 3 * FACE_SIZE * FACE_SIZE * 4 * 200
            runtime.make_room(self.restorer.size_bytes() + activations, self.device)
        self.restorer.to(self.device, self.dtype)
        self.moved = True

    def stop(self) -> None:
        if self.moved:
            self.restorer.to(runtime.offload_device(), torch.float32)
            self.moved = False
        if self.device.type != "cpu":
            runtime.release_memory()

    @torch.inference_mode()
    def _call(self, crops: list[np.ndarray]) -> np.ndarray:
        # NCHW in standard layout: a permuted (channels-last) batch makes convolutions return
        # channels-last features, and GFPGAN's ``feat.view`` fails on those for batches over 1.
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2)
        x = x.to(self.dtype).contiguous()
        y = self.restorer.forward(x, self.settings.fidelity)
        if not bool(torch.isfinite(y.float().sum())):
            hint = ("the model file may be damaged" if self.dtype == torch.float32 else
                    "set precision to fp32")
            raise MediaError(f"{self.restorer.name} produced NaN/inf values "
                             f"({str(self.dtype).replace('torch.', '')}); {hint}")
        return y.permute(0, 2, 3, 1).float().cpu().numpy()

    def restore(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 ``[512,512,3]`` 0..1 crops -> restored crops, same shape and range."""
        self.start()
        out: list[np.ndarray] = []
        pos = 0
        while pos < len(crops):
            runtime.check_interrupted()
            part = crops[pos:pos + self.batch]
            result, oom = runtime.run_or_oom(lambda: self._call(part))
            if oom:
                runtime.release_memory()
                if self.batch == 1:
                    raise MediaError(f"out of memory on {self.device} restoring one "
                                     f"{FACE_SIZE}x{FACE_SIZE} face with {self.restorer.name}; "
                                     "free memory (unload other models) or use bf16 precision")
                self.batch = max(1, self.batch // 2)
                continue
            out.extend(result)
            pos += len(part)
        return out


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    return np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _choose(faces: list[Face], only_largest: bool) -> list[Face]:
    if not faces or not only_largest:
        return faces
    return [max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))]


def restore_batch(frames: np.ndarray, runner: _Runner, detector,
                  stats: RestoreStats) -> np.ndarray:
    """Restore the faces of ``frames`` (uint8 or float32 0..1 ``[B,H,W,3]``, a writable copy,
    modified in place and returned)."""
    settings = runner.settings
    jobs: list[tuple[int, np.ndarray]] = []
    crops: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        runtime.check_interrupted()
        faces = _choose(find_faces(detector, _to_uint8(frame)), settings.only_largest_face)
        used = 0
        for _box, kps in faces:
            affine = alignment(kps)
            if affine is None:
                stats.unusable += 1
                continue
            crop = warp_face(frame, affine)
            crops.append(crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8
                         else crop.astype(np.float32))
            jobs.append((i, affine))
            used += 1
        stats.faces_per_frame.append(used)
    stats.frames += len(frames)
    if crops:
        restored = runner.restore(crops)
        for (i, affine), face in zip(jobs, restored):
            paste_face(frames[i], face, affine, settings.strength)
    return frames


def restore_stream(restorer: FaceRestorer, detector, batches: Iterable[np.ndarray],
                   settings: RestoreSettings, stats: RestoreStats,
                   device: torch.device | None = None,
                   on_step: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
    """Restore batches of frames (uint8 or float32 ``[B,H,W,3]`` numpy), yielding new arrays of
    the same dtype and shape. The model moves to the device on the first face and back at the
    end. With strength 0 the frames are yielded unchanged (as copies) and nothing is run."""
    device = device or runtime.torch_device()
    runner = _Runner(restorer, settings, device)
    started = time.perf_counter()
    try:
        for batch in batches:
            frames = np.array(batch, copy=True)  # chunks are read-only memory maps
            if settings.strength > 0:
                frames = restore_batch(frames, runner, detector, stats)
            else:
                stats.frames += len(frames)
                stats.faces_per_frame.extend([0] * len(frames))
            yield frames
            if on_step is not None:
                on_step(len(frames))
    finally:
        runner.stop()
        stats.seconds += time.perf_counter() - started


def _check_settings(settings: RestoreSettings) -> None:
    if not np.isfinite(settings.strength) or not 0.0 <= settings.strength <= 1.0:
        raise MediaError(f"strength must be a number from 0 to 1, got {settings.strength!r}")
    if not np.isfinite(settings.fidelity) or not 0.0 <= settings.fidelity <= 1.0:
        raise MediaError(f"fidelity must be a number from 0 to 1, got {settings.fidelity!r}")


def restore_images(restorer: FaceRestorer, detector, images: torch.Tensor,
                   settings: RestoreSettings, stats: RestoreStats,
                   device: torch.device | None = None) -> torch.Tensor:
    """IMAGE ``[B,H,W,3]`` float 0..1 in, IMAGE of the same shape out (float32); pixels outside
    every pasted mask keep their exact input values. `MediaError` for NaN/inf frames."""
    _check_settings(settings)
    images = check_image(images, "images")
    from ..upscale.engine import check_finite_frames

    check_finite_frames(images, "images", stage="face restoration")
    source = images.detach().to("cpu", torch.float32).numpy()
    step = max(1, settings.faces_per_batch)
    out = torch.empty(images.shape, dtype=torch.float32)
    done = 0
    with runtime.Progress(len(source), "SpinBot Face Restore") as progress:
        batches = (source[i:i + step] for i in range(0, len(source), step))
        for result in restore_stream(restorer, detector, batches, settings, stats, device,
                                     on_step=progress.update):
            out[done:done + len(result)] = torch.from_numpy(result)
            done += len(result)
    return out


def video_key(restorer: FaceRestorer, detector_identity, settings: RestoreSettings,
              video: SpinBotVideo, device: torch.device | None = None) -> str:
    """Cache key of a restored video: model file, detector, settings, run dtype, input video."""
    device = device or runtime.torch_device()
    dtype = pick_dtype(restorer, settings.precision, device)
    return content_key("face_restore", runtime.file_stamp(restorer.path), detector_identity,
                       float(settings.strength), bool(settings.only_largest_face),
                       float(settings.fidelity), str(dtype), video.identity())


def restore_video(restorer: FaceRestorer, detector, video: SpinBotVideo,
                  settings: RestoreSettings, stats: RestoreStats, detector_identity,
                  device: torch.device | None = None) -> tuple[SpinBotVideo, bool]:
    """SPINBOT_VIDEO in, SPINBOT_VIDEO out, written chunk by chunk (audio and segments kept);
    returns the video and whether a finished result with the same key was reused. Strength 0
    returns the input video itself. Cancel leaves no partial video under the key."""
    _check_settings(settings)
    if settings.strength <= 0:
        return video, True
    key = video_key(restorer, detector_identity, settings, video, device)
    existing = load_video(key)
    if existing is not None:
        return existing, True
    video.check()
    step = max(1, settings.faces_per_batch)
    with runtime.Progress(video.frame_count, "SpinBot Face Restore") as progress:
        stream = restore_stream(restorer, detector, video.iter_frames(step), settings, stats,
                                device, on_step=progress.update)
        segments = None if video.segments is None else list(video.segments)
        return write_video(key, video.fps, stream, audio=video.audio, segments=segments), False
