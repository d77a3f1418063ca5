"""SPINBOT_VIDEO: frames on disk as uint8 chunks, so a long video never has to fit in RAM.

A video lives in ``<temp>/spinbot_video/<key>/``: numbered ``chunk_*.npy`` files (uint8
``[n,H,W,3]``), an optional ``audio.npy`` (float32 ``[C,T]``, the full-rate master track) and
``video.json`` (sizes in bytes of every file, so a damaged folder is found by a few ``stat`` calls
and one small read of each file's .npy header, which catches a same-size overwrite).
The key is a hash of whatever produced the frames. A writer fills a private
``<key>.partial-<host>-<pid>-<id>`` folder and renames it into place only after the last byte is
written, so a folder named by its key is complete unless something damaged it later (a crash before
the data reached the disk, a temp cleaner deleting old files); `load_video` detects that, discards
the folder and returns None, so the next run rebuilds it. A re-run with the same inputs finds the
finished videos (segments) and reuses them.

Handles are cheap values. Joining videos (`concat_videos`) references the existing chunk files
instead of copying them; chunk files are never modified after they are written.

The store is kept bounded by `store_limits` (a size cap, least recently used videos first,
never a folder in use): a handle holds its folders while it lives (`store_limits.hold`), reads
renew their lease (`store_limits.touch`) and a finished video triggers a trim
(`store_limits.after_finish`). Its public names are re-exported here for existing callers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from .. import runtime
from ..media import MediaError, check_audio, images_to_uint8, make_audio, uint8_to_images
from . import store_limits
# Re-exported: callers and tests import the store's limits and location from here.
from .store_limits import (  # noqa: F401
    CACHE_ENV, DEFAULT_CAP_BYTES, LEASE_S, STALE_FOREIGN_S, TrimReport, held_folders,
    refresh_leases, store_cap, trim_store, video_root)

log = logging.getLogger("spinbot.video")

CHUNK_BYTES = 64 << 20  # ~64 MB per chunk: 24 frames of 720p, 10 of 1080p
# Chunks are saved on a background thread while the stage computes the next frames; each writer
# has at most one chunk in flight, so memory stays at two chunks.
_SAVERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spinbot-video-save")
_MANIFEST = "video.json"
# 2: video.json records the byte size of every chunk and of audio.npy. Folders of version 1 (or
# of a newer pack) are treated like damaged ones: discarded and rebuilt.
_FORMAT_VERSION = 2


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

    def __post_init__(self) -> None:
        store_limits.hold(self)

    def __setstate__(self, state: dict) -> None:  # unpickled (or copied) handles hold too
        self.__dict__.update(state)
        store_limits.hold(self)

    def folders(self) -> set[str]:
        """The store folders this video's chunks live in (one, or several for a joined video)."""
        return {os.path.dirname(c.path) for c in self.chunks}

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
        """Raise MediaError when a chunk file is missing or shorter than its frames (by stat)."""
        frame_bytes = self.width * self.height * 3
        for chunk in self.chunks:
            try:
                short = os.path.getsize(chunk.path) < chunk.count * frame_bytes
            except OSError:
                short = None
            if short is not False:
                what = "gone from" if short is None else "damaged in"
                raise MediaError(
                    f"the frames of this video are {what} the temp folder ({chunk.path}); ComfyUI "
                    "clears its temp folder at start-up and files there can be cleaned up or "
                    "damaged, so queue the workflow again to rebuild them")
        self._touch()

    def _touch(self) -> None:
        for folder in self.folders():
            store_limits.touch(folder)

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Yield uint8 ``[n,H,W,3]`` arrays, one stored chunk at a time (memory-mapped).

        Raises MediaError when a chunk is gone or damaged (`_open_chunk`)."""
        self.check()
        for chunk in self.chunks:
            yield self._open_chunk(chunk)

    def _open_chunk(self, chunk: Chunk) -> np.ndarray:
        """``chunk`` memory-mapped, after checking its .npy header against this video.

        A damaged file (header not a uint8 C-order ``[n,H,W,3]`` array of this video's size, or
        unreadable) makes its keyed folder useless: the folder is removed, so the next run that
        asks for this video rebuilds it, and MediaError says so. numpy's own message is not
        passed on: for a destroyed header it suggests loading the file with pickle.
        """
        try:
            _check_npy(chunk.path, np.uint8, (chunk.count, self.height, self.width, 3))
            try:
                return np.load(chunk.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise _Damaged(f"numpy cannot map it ({type(e).__name__})") from None
        except FileNotFoundError:
            self.check()  # says "gone from the temp folder"
            raise
        except _Damaged as e:
            folder = os.path.dirname(chunk.path)
            log.warning("stored video %s is damaged (%s); it is removed", folder, e)
            store_limits.discard(folder)
            raise MediaError(
                f"the frames of this video are damaged in the temp folder ({folder}: {e}); "
                "the damaged copy was removed, so queue the workflow again to rebuild it (if "
                "ComfyUI still reuses its cached result, clear its node cache first)") from None

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
                parts.append(self._open_chunk(chunk)[lo:hi])
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
        if not (math.isfinite(fps) and fps > 0):
            raise MediaError(f"fps must be a positive finite number, got {fps}")
        self.key = key
        self.fps = float(fps)
        root = video_root()
        self.final_dir = os.path.join(root, key)
        store_limits.clear_leftovers(root, key)  # a crashed earlier writer of this video
        self.dir = store_limits.partial_dir(root, key)
        # Held before it exists: a trim never takes it for a dead writer's.
        store_limits.hold_writer(self.dir, self)
        os.makedirs(self.dir)
        self._chunk_frames = chunk_frames
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._chunks: list[tuple[str, int]] = []
        self._sizes: dict[str, int] = {}
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
            # order='C': np.save marks an F-ordered copy (e.g. [n,1,1,3] from a transpose) as
            # Fortran order, which the store's header check rejects as damage.
            self._pending.append(np.array(frames[pos:pos + take], copy=True, order="C"))
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
            self._sizes[name] = f.tell()
        os.replace(tmp, os.path.join(self.dir, name))

    def _wait_saved(self) -> None:
        """Block until the chunk in flight is on disk; a failed save raises here."""
        saving, self._saving = self._saving, None
        if saving is not None:
            saving.result()

    def finish(self, audio: dict | None = None, segments: list[dict] | None = None,
               extra: dict | None = None) -> SpinBotVideo:
        """Write the rest, mark the video complete and return its handle.

        An intact video already stored under the key (another writer finished first) is kept and
        returned; a damaged one is replaced. Afterwards the store is trimmed to its cap.
        Raises MediaError when no frames were written or the folder cannot be put in place.
        """
        self._flush()
        self._wait_saved()
        if not self._chunks:
            self.abort()
            raise MediaError("no frames were written")
        meta = {"version": _FORMAT_VERSION, "fps": self.fps, "width": self.width,
                "height": self.height,
                "chunks": [[name, n, self._sizes[name]] for name, n in self._chunks],
                "segments": segments, "extra": extra or {}, "audio_rate": None, "audio_bytes": 0}
        if audio is not None:
            wave, rate = check_audio(audio, "video audio")
            with open(os.path.join(self.dir, "audio.npy"), "wb") as f:
                np.save(f, wave.numpy().astype(np.float32))
                meta["audio_bytes"] = f.tell()
            meta["audio_rate"] = rate
        with open(os.path.join(self.dir, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump(meta, f)
            written = sum(self._sizes.values()) + meta["audio_bytes"] + f.tell()
        for _attempt in range(3):
            try:
                os.rename(self.dir, self.final_dir)
                break
            except OSError as e:
                # Something is in the way: an intact video from a writer that finished first is
                # kept (ours is a duplicate); a damaged one is discarded by load_video, then retry.
                failure = e
                existing = load_video(self.key)
                if existing is not None:
                    self.abort()
                    return existing
        else:
            self.abort()
            raise MediaError(f"video {self.key} could not be stored in {video_root()}: renaming "
                             f"the finished folder into place failed ({failure})")
        store_limits.release_writer(self.dir)
        loaded = load_video(self.key)
        if loaded is None:
            raise MediaError(f"video {self.key} could not be stored in {video_root()}: it was "
                             "damaged or removed right after it was written")
        store_limits.after_finish(self.final_dir, written)
        return loaded

    def abort(self) -> None:
        try:
            self._wait_saved()  # never delete the folder under a running save
        except Exception:  # noqa: BLE001 - the error that made us abort is the one to report
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        store_limits.release_writer(self.dir)


class _Damaged(Exception):
    """A keyed folder that is not a complete video (the message says why)."""


def _read_folder(directory: str) -> dict | None:
    """The validated manifest of a keyed folder; None when there is no such folder.

    Cheap: one small JSON read plus a stat and a header read per file; sizes must match the
    manifest exactly and each .npy header must describe the array the manifest records.
    Raises _Damaged for a folder that exists but is not a complete video of this format.
    """
    try:
        with open(os.path.join(directory, _MANIFEST), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if os.path.isdir(directory):
            raise _Damaged(f"no {_MANIFEST}") from None
        return None
    except OSError as e:
        raise _Damaged(f"{_MANIFEST} cannot be read ({e})") from None
    try:
        meta = json.loads(raw)
    except ValueError:
        raise _Damaged(f"{_MANIFEST} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("version") != _FORMAT_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise _Damaged(f"format version {version!r}, this pack writes {_FORMAT_VERSION}")
    try:
        fps, width, height = float(meta["fps"]), int(meta["width"]), int(meta["height"])
        chunks = [(str(name), int(n), int(size)) for name, n, size in meta["chunks"]]
        rate, audio_bytes = meta.get("audio_rate"), int(meta.get("audio_bytes") or 0)
        segments, extra = meta.get("segments"), meta.get("extra") or {}
        if not (fps > 0 and width > 0 and height > 0 and chunks and isinstance(extra, dict)
                and (segments is None or isinstance(segments, list))
                and (rate is None or (isinstance(rate, int) and rate > 0))):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise _Damaged(f"{_MANIFEST} does not describe a video") from None
    files = []
    for name, n, size in chunks:
        payload = n * width * height * 3
        # np.save adds a header of at most 64 KiB (format 1.0) in front of the frames.
        if os.path.basename(name) != name or n < 1 or not payload < size <= payload + 65536:
            raise _Damaged(f"{_MANIFEST} lists an impossible chunk {name!r}")
        files.append((name, size))
    if rate is not None:
        files.append(("audio.npy", audio_bytes))
    for name, size in files:
        try:
            actual = os.stat(os.path.join(directory, name)).st_size
        except FileNotFoundError:
            if not os.path.isdir(directory):  # removed while we looked: absent, not damaged
                return None
            raise _Damaged(f"{name} is missing") from None
        if actual != size:
            raise _Damaged(f"{name} has {actual} bytes, {size} were written")
    # A same-size overwrite (a bad sector, a stray write) escapes the sizes; the headers are one
    # small read per file and catch what would otherwise fail every later read of the video.
    headers = [(name, np.uint8, (n, height, width, 3), size) for name, n, size in chunks]
    if rate is not None:
        headers.append(("audio.npy", np.float32, None, audio_bytes))
    for name, dtype, shape, size in headers:
        try:
            _check_npy(os.path.join(directory, name), dtype, shape, size)
        except FileNotFoundError:
            if not os.path.isdir(directory):
                return None
            raise _Damaged(f"{name} is missing") from None
    meta["chunks"] = chunks
    return meta


# A header (magic, version, length, dict) of np.save's formats 1.0-3.0 fits in this many bytes.
_NPY_HEADER_MAX = 65536


def _check_npy(path: str, dtype: type, shape: tuple[int, ...] | None,
               size: int | None = None) -> None:
    """Raise _Damaged unless ``path`` starts with a valid .npy header (numpy's "NPY format":
    magic ``\\x93NUMPY``, version, header dict) for a C-order array of ``dtype`` and ``shape``
    (None: any 2-D shape, as audio ``[C,T]``) whose data fills exactly ``size`` bytes when given.
    Reads only the header. FileNotFoundError passes through (a gone file is not a damaged one).
    """
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = fmt.read_array_header_1_0(
                    f, max_header_size=_NPY_HEADER_MAX)
            elif version in ((2, 0), (3, 0)):
                got_shape, fortran, got_dtype = fmt.read_array_header_2_0(
                    f, max_header_size=_NPY_HEADER_MAX)
            else:
                raise ValueError
        except (ValueError, SyntaxError, EOFError, OSError):
            raise _Damaged(f"{os.path.basename(path)} has no valid .npy header") from None
        offset = f.tell()
    want = np.dtype(dtype)
    ok = (got_dtype == want and not fortran
          and (got_shape == shape if shape is not None else len(got_shape) == 2))
    if not ok:
        raise _Damaged(f"{os.path.basename(path)} holds {got_dtype} {got_shape}"
                       f"{' (Fortran order)' if fortran else ''}, expected {want} "
                       f"{list(shape) if shape is not None else '[C,T]'}")
    if size is not None and offset + math.prod(got_shape) * want.itemsize != size:
        raise _Damaged(f"{os.path.basename(path)}'s header does not match its {size} bytes")


def load_video(key: str) -> SpinBotVideo | None:
    """The complete video stored under ``key``, or None when there is none.

    A folder that is damaged (missing or short files, a broken .npy header, an unreadable or
    foreign ``video.json``) is
    logged, removed and reported as None, so the caller rebuilds it. Loading renews the lease.
    """
    directory = os.path.join(video_root(), key)
    # A trim on another thread must not remove the folder between the checks and use.
    with store_limits.LOCK:
        if not store_limits.touch(directory, force=True):
            return None
        try:
            meta = _read_folder(directory)
            if meta is None:
                return None
            audio = None
            if meta.get("audio_rate"):
                try:
                    wave = np.load(os.path.join(directory, "audio.npy"))
                except (OSError, ValueError) as e:
                    raise _Damaged(f"audio.npy cannot be read ({e})") from None
                audio = make_audio(wave, meta["audio_rate"])
        except _Damaged as e:
            log.warning("stored video %s is damaged (%s); it is removed and will be rebuilt",
                        directory, e)
            store_limits.discard(directory)
            return None
        chunks = tuple(Chunk(os.path.join(directory, name), n) for name, n, _size in meta["chunks"])
        segments = tuple(meta["segments"]) if meta.get("segments") is not None else None
        return SpinBotVideo(fps=float(meta["fps"]), width=int(meta["width"]),
                            height=int(meta["height"]), chunks=chunks, audio=audio,
                            segments=segments, key=key, extra=meta.get("extra") or {})


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
    """Join videos of one size and fps by referencing their chunks (no frame is copied).

    While the joined handle lives it holds every source folder it references, so a trim keeps
    them even after the source handles are gone. Raises MediaError for no videos or a mismatch.
    """
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
                        audio=audio, segments=None if segments is None else tuple(segments),
                        key=key)
