"""SPINBOT_VIDEO: frames on disk as uint8 chunks, so a long video never has to fit in RAM.

A video lives in ``<temp>/spinbot_video/<key>/``: numbered ``chunk_*.npy`` files (uint8
``[n,H,W,3]``), an optional ``audio.npy`` (float32 ``[C,T]``, the full-rate master track) and
``video.json``. The key is a hash of whatever produced the frames. A writer fills a private
``<key>.partial-*`` folder and renames it into place only after the last byte is written, so a
folder named by its key is always complete: a run that died half-way leaves nothing that looks
finished, and a re-run with the same inputs finds the finished videos (segments) and reuses them.

Handles are cheap values. Joining videos (`concat_videos`) references the existing chunk files
instead of copying them; chunk files are never modified after they are written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from .. import runtime
from ..media import MediaError, check_audio, images_to_uint8, make_audio, uint8_to_images

CHUNK_BYTES = 64 << 20  # ~64 MB per chunk: 24 frames of 720p, 10 of 1080p
# Chunks are saved on a background thread while the stage computes the next frames; each writer
# has at most one chunk in flight, so memory stays at two chunks.
_SAVERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spinbot-video-save")
_MANIFEST = "video.json"
_FORMAT_VERSION = 1


def video_root() -> str:
    path = os.path.join(runtime.temp_dir(), "spinbot_video")
    os.makedirs(path, exist_ok=True)
    return path


def content_key(*parts: Any) -> str:
    """A stable hash of the inputs that produce a video (tensors and arrays hash by content)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", part: Any) -> None:
    if isinstance(part, torch.Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        h.update(f"A{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    elif isinstance(part, SpinBotVideo):
        h.update(b"V" + part.identity().encode())
    elif isinstance(part, dict):
        h.update(b"{")
        for k in sorted(part, key=str):
            _feed(h, str(k))
            _feed(h, part[k])
        h.update(b"}")
    elif isinstance(part, (list, tuple)):
        h.update(b"[")
        for p in part:
            _feed(h, p)
        h.update(b"]")
    else:
        h.update(repr(part).encode())
    h.update(b";")


@dataclass(frozen=True)
class Chunk:
    path: str
    count: int


@dataclass(frozen=True, eq=False)
class SpinBotVideo:
    """A handle to a video stored on disk. Frames are read chunk by chunk on demand."""

    fps: float
    width: int
    height: int
    chunks: tuple[Chunk, ...]
    audio: dict | None = None
    segments: tuple[dict, ...] | None = None
    key: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return sum(c.count for c in self.chunks)

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def identity(self) -> str:
        """What this video is made of (for hashing by downstream stages)."""
        chunks = ",".join(f"{c.path}:{c.count}" for c in self.chunks)
        audio = "" if self.audio is None else content_key(self.audio)
        return f"{self.key}|{self.fps}|{self.width}x{self.height}|{chunks}|{audio}|{self.segments}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpinBotVideo) and other.identity() == self.identity()

    def __hash__(self) -> int:
        return hash(self.identity())

    def check(self) -> None:
        missing = [c.path for c in self.chunks if not os.path.exists(c.path)]
        if missing:
            raise MediaError(
                f"the frames of this video are gone from the temp folder ({missing[0]}); ComfyUI "
                "clears its temp folder at start-up, so queue the workflow again to rebuild them")

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Yield uint8 ``[n,H,W,3]`` arrays, one stored chunk at a time (memory-mapped)."""
        self.check()
        for chunk in self.chunks:
            yield np.load(chunk.path, mmap_mode="r")

    def iter_frames(self, batch: int) -> Iterator[np.ndarray]:
        """Yield uint8 batches of exactly ``batch`` frames (the last may be shorter)."""
        pending: list[np.ndarray] = []
        have = 0
        for arr in self.iter_chunks():
            pos = 0
            while pos < len(arr):
                take = min(batch - have, len(arr) - pos)
                pending.append(arr[pos:pos + take])
                have += take
                pos += take
                if have == batch:
                    yield np.concatenate(pending) if len(pending) > 1 else np.asarray(pending[0])
                    pending, have = [], 0
        if pending:
            yield np.concatenate(pending)

    def iter_images(self, batch: int) -> Iterator[torch.Tensor]:
        """Yield IMAGE tensors of up to ``batch`` frames."""
        for frames in self.iter_frames(batch):
            yield uint8_to_images(frames)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` as one uint8 array."""
        total = self.frame_count
        stop = total if stop is None else min(stop, total)
        start = max(0, start)
        if stop <= start:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        self.check()
        parts, offset = [], 0
        for chunk in self.chunks:
            lo, hi = max(start - offset, 0), min(stop - offset, chunk.count)
            if lo < hi:
                parts.append(np.load(chunk.path, mmap_mode="r")[lo:hi])
            offset += chunk.count
            if offset >= stop:
                break
        return np.concatenate(parts)

    def with_audio(self, audio: dict | None) -> "SpinBotVideo":
        return replace(self, audio=audio)

    def with_segments(self, segments: list[dict] | None) -> "SpinBotVideo":
        return replace(self, segments=None if segments is None else tuple(segments))

    def describe(self) -> str:
        audio = "no audio"
        if self.audio is not None:
            wave, rate = check_audio(self.audio)
            audio = f"audio {wave.shape[-1] / rate:.2f}s @ {rate} Hz x{wave.shape[0]}"
        return (f"{self.frame_count} frames {self.width}x{self.height} @ {self.fps:g} fps "
                f"({self.duration:.2f}s), {audio}")


class VideoWriter:
    """Writes frames into a new keyed video, chunk by chunk.

    Use as a context manager: leaving the block by an exception deletes the partial folder.
    """

    def __init__(self, key: str, fps: float, chunk_frames: int | None = None):
        if fps <= 0:
            raise MediaError(f"fps must be positive, got {fps}")
        self.key = key
        self.fps = float(fps)
        self.final_dir = os.path.join(video_root(), key)
        self.dir = os.path.join(video_root(), f"{key}.partial-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.dir)
        self._chunk_frames = chunk_frames
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._chunks: list[tuple[str, int]] = []
        self._saving: Future | None = None
        self.width = self.height = 0
        self.frames_written = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, frames: np.ndarray | torch.Tensor) -> None:
        """Append uint8 ``[n,H,W,3]`` frames or an IMAGE batch."""
        if isinstance(frames, torch.Tensor):
            frames = images_to_uint8(frames, "frames", first_index=self.frames_written)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise MediaError(f"frames must be uint8 [n,H,W,3], got {frames.dtype} {frames.shape}")
        if not self.width:
            self.height, self.width = frames.shape[1:3]
            if self._chunk_frames is None:
                self._chunk_frames = max(1, CHUNK_BYTES // (self.width * self.height * 3))
        elif frames.shape[1:3] != (self.height, self.width):
            raise MediaError(f"frame size changed from {self.width}x{self.height} to "
                             f"{frames.shape[2]}x{frames.shape[1]} at frame {self.frames_written}")
        pos = 0
        while pos < len(frames):
            take = min(self._chunk_frames - self._pending_count, len(frames) - pos)
            self._pending.append(np.array(frames[pos:pos + take], copy=True))
            self._pending_count += take
            pos += take
            if self._pending_count == self._chunk_frames:
                self._flush()
        self.frames_written += len(frames)

    def _flush(self) -> None:
        if not self._pending_count:
            return
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        name = f"chunk_{len(self._chunks):06d}.npy"
        self._wait_saved()
        self._saving = _SAVERS.submit(self._save, data, name)
        self._chunks.append((name, len(data)))
        self._pending, self._pending_count = [], 0

    def _save(self, data: np.ndarray, name: str) -> None:
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, data)
        os.replace(tmp, os.path.join(self.dir, name))

    def _wait_saved(self) -> None:
        """Block until the chunk in flight is on disk; a failed save raises here."""
        saving, self._saving = self._saving, None
        if saving is not None:
            saving.result()

    def finish(self, audio: dict | None = None, segments: list[dict] | None = None,
               extra: dict | None = None) -> SpinBotVideo:
        """Write the rest, mark the video complete and return its handle."""
        self._flush()
        self._wait_saved()
        if not self._chunks:
            self.abort()
            raise MediaError("no frames were written")
        meta = {"version": _FORMAT_VERSION, "fps": self.fps, "width": self.width,
                "height": self.height, "chunks": self._chunks, "segments": segments,
                "extra": extra or {}, "audio_rate": None}
        if audio is not None:
            wave, rate = check_audio(audio, "video audio")
            np.save(os.path.join(self.dir, "audio.npy"), wave.numpy().astype(np.float32))
            meta["audio_rate"] = rate
        with open(os.path.join(self.dir, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        try:
            os.rename(self.dir, self.final_dir)
        except OSError:  # an identical video finished first: keep that one
            shutil.rmtree(self.dir, ignore_errors=True)
        loaded = load_video(self.key)
        if loaded is None:
            raise MediaError(f"video {self.key} could not be stored in {video_root()}")
        return loaded

    def abort(self) -> None:
        try:
            self._wait_saved()  # never delete the folder under a running save
        except Exception:  # noqa: BLE001 - the error that made us abort is the one to report
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def load_video(key: str) -> SpinBotVideo | None:
    """The complete video stored under ``key``, or None when there is none."""
    directory = os.path.join(video_root(), key)
    manifest = os.path.join(directory, _MANIFEST)
    if not os.path.exists(manifest):
        return None
    with open(manifest, encoding="utf-8") as f:
        meta = json.load(f)
    chunks = tuple(Chunk(os.path.join(directory, name), int(n)) for name, n in meta["chunks"])
    if meta.get("version") != _FORMAT_VERSION or not all(os.path.exists(c.path) for c in chunks):
        return None
    audio = None
    if meta.get("audio_rate"):
        audio = make_audio(np.load(os.path.join(directory, "audio.npy")), meta["audio_rate"])
    segments = tuple(meta["segments"]) if meta.get("segments") is not None else None
    return SpinBotVideo(fps=meta["fps"], width=meta["width"], height=meta["height"], chunks=chunks,
                        audio=audio, segments=segments, key=key, extra=meta.get("extra") or {})


def write_video(key: str, fps: float, frames: Iterator[np.ndarray | torch.Tensor],
                audio: dict | None = None, segments: list[dict] | None = None) -> SpinBotVideo:
    """Reuse the complete video under ``key`` or write one from an iterator of frame batches."""
    existing = load_video(key)
    if existing is not None:
        return existing
    with VideoWriter(key, fps) as writer:
        for batch in frames:
            runtime.check_interrupted()
            writer.write(batch)
        return writer.finish(audio=audio, segments=segments)


def concat_videos(videos: list[SpinBotVideo], audio: dict | None = None,
                  segments: list[dict] | None = None) -> SpinBotVideo:
    """Join videos of one size and fps by referencing their chunks (no frame is copied)."""
    if not videos:
        raise MediaError("no videos to join")
    first = videos[0]
    for i, v in enumerate(videos[1:], start=1):
        if (v.width, v.height) != (first.width, first.height) or abs(v.fps - first.fps) > 1e-6:
            raise MediaError(f"video {i} is {v.width}x{v.height} @ {v.fps:g} fps, "
                             f"video 0 is {first.width}x{first.height} @ {first.fps:g} fps")
    chunks = tuple(c for v in videos for c in v.chunks)
    key = content_key("concat", [v.identity() for v in videos])
    return SpinBotVideo(fps=first.fps, width=first.width, height=first.height, chunks=chunks,
                        audio=audio, segments=None if segments is None else tuple(segments), key=key)
