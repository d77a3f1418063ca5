"""Video in: a video file (or a core ComfyUI VIDEO) streamed into a SPINBOT_VIDEO.

Frames are decoded with PyAV one at a time and written to the store's `VideoWriter` chunk by
chunk, so a long video never sits in RAM (the writer holds at most two chunks). Frames are placed
on a constant frame clock: output frame ``n`` shows the last source frame whose presentation time
rounds to slot ``n`` or earlier (``round((t - start) * fps)``, the rule of ffmpeg's ``fps``
filter), so a variable-frame-rate source, or a forced fps, gets duplicated frames in its gaps and
loses frames that share a slot; the report counts both. The original audio is decoded at its own
rate with all its channels, placed on the same timeline and cut (or padded with silence) to the
video's length, so frames and samples stay in sync.

A loaded video is stored under a key made of the file's stamp (path, size, mtime) and the
settings, so loading an unchanged file again reuses it.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
import torch

from .. import runtime
from ..media import MediaError, audio_samples, check_audio, check_image, make_audio
from .store import SpinBotVideo, VideoWriter, content_key, load_video, write_video

# Extensions offered in the loader's file list: what ffmpeg reads as video containers (the list
# ComfyUI's own LoadVideo gets from the "video/*" mime types, plus ffmpeg-only ones).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                    ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".gif")
_VERSION = 1  # part of every key: bump when the decoded result of the same settings changes
_SILENCE_RATE = 48000  # the rate of the silent AUDIO returned for a video without audio
_BATCH = 16  # frames handed to the writer at a time
_HALF = Fraction(1, 2)
# The input type of every SpinBot input that takes a video: ComfyUI's validation
# (comfy_execution.validation.validate_node_input) and its frontend (LiteGraph.isValidConnection)
# both accept a link whose type is any one of comma-separated types, so a SPINBOT_VIDEO or a core
# VIDEO connects; the node turns either into a SpinBotVideo with `as_spinbot_video`.
VIDEO_INPUT = "SPINBOT_VIDEO,VIDEO"


@dataclass(frozen=True)
class LoadSettings:
    """What part of the source becomes the SPINBOT_VIDEO.

    ``start_seconds``: where the video starts (>= 0). ``max_seconds``: how much is loaded, 0 for
    all. ``force_fps``: the output frame rate, 0 for the source's (its average rate).
    ``max_side``: the longer side is scaled down to at most this many pixels (even sizes), 0 keeps
    the size.
    """

    start_seconds: float = 0.0
    max_seconds: float = 0.0
    force_fps: float = 0.0
    max_side: int = 0

    def check(self) -> None:
        for name in ("start_seconds", "max_seconds", "force_fps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise MediaError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_side < 0 or (0 < self.max_side < 16):
            raise MediaError(f"max_side must be 0 (keep the size) or at least 16, got "
                             f"{self.max_side}")


@dataclass
class LoadReport:
    """What was loaded, for the node's report output."""

    source: str
    video: SpinBotVideo
    reused: bool
    lines: list[str]

    def text(self) -> str:
        head = f"{self.source}: {self.video.describe()}"
        if self.reused:
            head += " (reused the stored copy)"
        return "\n".join([head, *self.lines])


# --------------------------------------------------------------------------- input folder

def _strip_annotation(name: str) -> str:
    # ComfyUI's upload widget may name a file "clip.mp4 [input]" (folder_paths annotations).
    return name[:-len(" [input]")] if name.endswith(" [input]") else name


def resolve_input_file(name: str) -> str:
    """The absolute path of ``name`` inside ComfyUI's input folder.

    ``name`` is relative ('/'-separated sub-folders allowed, an ``" [input]"`` annotation
    ignored). Raises MediaError for an empty name, an absolute path or one with ``..`` (it would
    leave the input folder), and for a file that is not there.
    """
    name = _strip_annotation(str(name or "").strip())
    if not name:
        raise MediaError("no video file chosen: upload one or put it in ComfyUI's input folder")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise MediaError(f"video file {name!r} is refused: the name must be a path inside "
                         "ComfyUI's input folder (no absolute paths, no '..')")
    root = runtime.input_dir()
    path = os.path.join(root, *[p for p in parts if p not in ("", ".")])
    if not os.path.isfile(path):
        raise MediaError(f"video file {name!r} is not in ComfyUI's input folder ({root})")
    return path


def list_input_videos() -> list[str]:
    """Video files at the top of ComfyUI's input folder (as core LoadVideo lists them), sorted;
    an empty list when the folder is missing."""
    root = runtime.input_dir()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS
                  and os.path.isfile(os.path.join(root, n)))


# --------------------------------------------------------------------------- decoding

def _open(source: str | io.BytesIO, what: str):
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        container = av.open(source, "r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{what} cannot be read as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{what} has no video stream")
    return container


def _source_fps(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return Fraction(rate)
    return None


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return _even(width * scale), _even(height * scale)


class _Clock:
    """Places decoded frames on the constant ``fps`` clock starting at ``start`` seconds.

    `push` takes each source frame (time in seconds, a function that makes its uint8 array) and
    returns the output frames it completes; `finish` returns the last ones. Conversion is lazy:
    a frame that is never shown (before ``start``, or superseded within its slot) is not converted.
    """

    def __init__(self, start: Fraction, fps: Fraction, limit: int | None):
        # Exact arithmetic: a frame at 2.26 s on a 25 fps clock is slot 56.5 + 0.5 = 57, which
        # floats make 56.99999 (ffmpeg rescales timestamps exactly too).
        self.start, self.fps, self.limit = start, fps, limit
        self.next = 0            # output slots done
        self.held = None         # (make, cache) of the frame showing now
        self.held_shown = False
        self.held_in_range = False
        self.duplicated = self.dropped = 0
        self.end_time = None     # seconds, end of the last frame pushed

    def done(self) -> bool:
        return self.limit is not None and self.next >= self.limit

    def _emit(self, upto: int) -> list[np.ndarray]:
        if self.limit is not None:
            upto = min(upto, self.limit)
        out = []
        while self.next < upto:
            if self.held_shown:
                self.duplicated += 1
            frame = self.held[1]
            if frame is None:
                frame = self.held[0]()
                self.held = (self.held[0], frame)
            out.append(frame)
            self.held_shown = True
            self.next += 1
        return out

    def push(self, t: float, duration: float, make) -> list[np.ndarray]:
        slot = math.floor((t - self.start) * self.fps + _HALF)
        self.end_time = t + duration
        out: list[np.ndarray] = []
        if slot < self.next and self.held is not None and self.held_shown:
            if slot >= 0:
                self.dropped += 1  # its slot is shown already (out-of-order or duplicate times)
            return out
        if slot > self.next:
            if self.held is None:  # the video starts late: its first frame fills the gap
                self.held, self.held_shown, self.held_in_range = (make, None), False, True
            out = self._emit(slot)
        if self.held is not None and not self.held_shown and self.held_in_range:
            self.dropped += 1  # superseded within its slot before it was shown
        self.held, self.held_shown, self.held_in_range = (make, None), False, slot >= 0
        return out

    def finish(self) -> list[np.ndarray]:
        if self.held is None or self.end_time <= self.start:
            return []  # nothing decoded, or every frame ended before the start
        # The video ends where its last frame ends, rounded to the clock (as ffmpeg's fps
        # filter ends it): a last frame that starts in the final half slot is not shown.
        end = math.floor((self.end_time - self.start) * self.fps + _HALF)
        if self.next == 0:
            end = max(end, 1)  # a one-frame video shorter than half a slot still has its frame
        elif not self.held_shown and end <= self.next and self.held_in_range:
            self.dropped += 1
        return self._emit(end)


def _frame_time(frame, stream, origin: Fraction, last: Fraction | None,
                step: Fraction) -> Fraction:
    if frame.pts is not None:
        return frame.pts * Fraction(stream.time_base) - origin
    return Fraction(0) if last is None else last + step


def _frame_maker(frame, size: tuple[int, int], rotation: int):
    width, height = size

    def make() -> np.ndarray:
        if (width, height) != (frame.width, frame.height):
            arr = frame.to_ndarray(format="rgb24", width=width, height=height,
                                   interpolation="AREA")
        else:
            arr = frame.to_ndarray(format="rgb24")
        if rotation:
            arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
        return arr

    return make


def _rotation(frame) -> int:
    """The display rotation of ``frame`` in degrees counter-clockwise (0, 90, 180, 270), from its
    display matrix (phones record portrait video as rotated landscape)."""
    try:
        angle = int(round(getattr(frame, "rotation", 0) or 0))
    except (TypeError, ValueError):
        return 0
    return (round(angle / 90) * 90) % 360


def _exact(seconds: float) -> Fraction:
    # The decimal the user typed (1.2 -> 6/5), not the binary float's 1.19999...
    return Fraction(repr(float(seconds)))


def _decode_frames(container, settings: LoadSettings, fps: Fraction, source_fps: Fraction | None,
                   what: str, notes: list[str]) -> Iterator[list[np.ndarray]]:
    """Yield lists of uint8 ``[H,W,3]`` frames on the output clock (see `_Clock`)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb_origin = stream.start_time if stream.start_time is not None else 0
    origin = tb_origin * Fraction(stream.time_base)
    start = _exact(settings.start_seconds)
    limit = None
    if settings.max_seconds:
        limit = max(1, math.floor(_exact(settings.max_seconds) * fps + _HALF))
    if start > 0:
        # To the key frame at or before the start; frames before it are decoded, not shown.
        target = int((start + origin) / Fraction(stream.time_base))
        container.seek(target, stream=stream, backward=True, any_frame=False)
    clock = _Clock(start, fps, limit)
    step = 1 / (source_fps or fps)
    last_t = None
    size = rotation = None
    batch: list[np.ndarray] = []
    try:
        for frame in container.decode(stream):
            runtime.check_interrupted()
            if size is None:
                size = _target_size(frame.width, frame.height, settings.max_side)
                rotation = _rotation(frame)
                if size != (frame.width, frame.height):
                    notes.append(f"size: {frame.width}x{frame.height} scaled to "
                                 f"{size[0]}x{size[1]} (max_side {settings.max_side})")
                if rotation:
                    notes.append(f"rotation: the file says display rotated {rotation} degrees; "
                                 "frames rotated upright")
            t = _frame_time(frame, stream, origin, last_t, step)
            duration = step
            if frame.duration:
                duration = frame.duration * Fraction(stream.time_base)
            last_t = t
            batch.extend(clock.push(t, duration, _frame_maker(frame, size, rotation)))
            if len(batch) >= _BATCH:
                yield batch
                batch = []
            if clock.done():
                break
    except av.FFmpegError as e:
        raise MediaError(f"{what}: decoding failed after {clock.next} frames ({e})") from None
    batch.extend(clock.finish())
    if batch:
        yield batch
    if clock.duplicated or clock.dropped:
        notes.append(f"frame clock: source frames placed on a constant {float(fps):g} fps clock by "
                     f"their timestamps: {clock.duplicated} duplicated, {clock.dropped} dropped")


def _pcm_to_float(frame) -> np.ndarray:
    """An av.AudioFrame -> float32 ``[C, n]`` in -1..1 (planar or packed, float or integer PCM)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind == "f":
        return np.asarray(arr, dtype=np.float32)
    return audio_samples(np.ascontiguousarray(arr)).numpy()


def decode_audio(source: str | io.BytesIO, start: float, seconds: float, what: str,
                 notes: list[str]) -> dict | None:
    """The first audio stream of ``source`` from ``start`` for ``seconds``, as AUDIO
    ``[1, C, round(seconds * rate)]`` at its own rate with all its channels; None when the file
    has no audio. Times are measured from the video stream's start (the A/V offset of the file is
    kept). Audio that ends early is padded with silence (said in ``notes``)."""
    container = _open(source, what)
    try:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        vstream = container.streams.video[0]
        origin = 0.0
        if vstream.start_time is not None:
            origin = float(vstream.start_time * vstream.time_base)
        rate = int(astream.rate or astream.codec_context.sample_rate or 0)
        channels = int(astream.channels or len(astream.layout.channels))
        if rate <= 0 or channels <= 0:
            notes.append("audio: the audio stream has no sample rate or channels; left out")
            return None
        total = int(round(seconds * rate))
        out = np.zeros((channels, total), np.float32)
        if start > 0:
            container.seek(int((start + origin) / astream.time_base), stream=astream,
                           backward=True, any_frame=False)
        pos = None
        filled = 0
        try:
            for frame in container.decode(astream):
                data = _pcm_to_float(frame)
                if data.shape[0] != channels:
                    continue  # a mid-stream layout change: such frames are left silent
                if pos is None or frame.pts is None:
                    t = (float(frame.pts * frame.time_base) - origin if frame.pts is not None
                         else 0.0)
                    first = int(round((t - start) * rate))
                    pos = first if pos is None else pos
                lo, hi = max(pos, 0), min(pos + data.shape[1], total)
                if hi > lo:
                    out[:, lo:hi] = data[:, lo - pos:hi - pos]
                    filled = max(filled, hi)
                pos += data.shape[1]
                if pos >= total:
                    break
        except av.FFmpegError as e:
            raise MediaError(f"{what}: decoding the audio failed ({e})") from None
        if filled < total:
            notes.append(f"audio: the source audio ends {(total - filled) / rate:.3f}s before the "
                         "video; silence after it")
        layout = getattr(astream.layout, "name", f"{channels} channels")
        notes.append(f"audio: {rate} Hz, {channels} channels ({layout}), kept as decoded")
        return make_audio(torch.from_numpy(out), rate)
    finally:
        container.close()


def _settings_key(stamp: str, settings: LoadSettings) -> str:
    return content_key("load_video", _VERSION, stamp, settings.start_seconds,
                       settings.max_seconds, settings.force_fps, settings.max_side)


def stream_to_video(source: str | io.BytesIO, stamp: str, settings: LoadSettings,
                    what: str) -> tuple[SpinBotVideo, bool, list[str]]:
    """Decode ``source`` (a path or BytesIO) into the store under a key of ``stamp`` (what the
    source is: a file stamp or a content hash) and ``settings``; reuse the stored video when the
    key is there. Returns ``(video, reused, notes)``.

    Raises MediaError naming ``what`` for an unreadable file, no video stream, a start past the
    end, or no frames.
    """
    settings.check()
    key = _settings_key(stamp, settings)
    existing = load_video(key)
    if existing is not None:
        return existing, True, list(existing.extra.get("notes", []))
    notes: list[str] = []
    container = _open(source, what)
    try:
        stream = container.streams.video[0]
        src = _source_fps(stream)
        if settings.force_fps:
            exact_fps = _exact(settings.force_fps)
        elif src is not None:
            exact_fps = src
        else:
            raise MediaError(f"{what}: the video stream has no frame rate; set force_fps")
        if src is not None and stream.guessed_rate and stream.average_rate and abs(
                float(stream.guessed_rate) - float(stream.average_rate)) > 0.01 * float(src):
            notes.append(f"variable frame rate: average {float(stream.average_rate):.3f} fps, "
                         f"timing base {float(stream.guessed_rate):.3f} fps")
        fps = float(exact_fps)
        if settings.force_fps and src is not None:
            notes.append(f"fps: {float(src):.3f} fps source resampled to {fps:g} fps by timestamp")
        with VideoWriter(key, fps) as writer:
            for batch in _decode_frames(container, settings, exact_fps, src, what, notes):
                writer.write(np.stack(batch))
            if writer.frames_written == 0:
                raise MediaError(f"{what}: no frames at or after start_seconds "
                                 f"{settings.start_seconds:g}")
            seconds = writer.frames_written / fps
            audio = decode_audio(source, settings.start_seconds, seconds, what, notes)
            if audio is None:
                notes.append("audio: the file has no audio stream")
            video = writer.finish(audio=audio, extra={"source": what, "notes": notes})
    finally:
        container.close()
    return video, False, notes


def load_video_file(name: str, settings: LoadSettings) -> LoadReport:
    """Load the file ``name`` from ComfyUI's input folder (see `resolve_input_file`,
    `stream_to_video`)."""
    path = resolve_input_file(name)
    video, reused, notes = stream_to_video(path, runtime.file_stamp(path), settings,
                                           f"video file {name!r}")
    return LoadReport(name, video, reused, notes)


def silence_like(video: SpinBotVideo) -> dict:
    """A silent mono AUDIO as long as ``video`` (for a video without audio)."""
    return make_audio(torch.zeros(1, int(round(video.duration * _SILENCE_RATE))), _SILENCE_RATE)


# --------------------------------------------------------------------------- core VIDEO

def as_spinbot_video(value, what: str = "video") -> SpinBotVideo | None:
    """Any video a SpinBot input accepts -> a SPINBOT_VIDEO (None stays None).

    A SpinBotVideo is returned as it is. A core ComfyUI VIDEO (LoadVideo, CreateVideo, other
    packs' VideoInput) is streamed into the store: one over a file or BytesIO is decoded frame by
    frame like `SpinBotLoadVideo` at its own fps with its audio (a file keyed by its stamp, a
    BytesIO by its bytes), one made of components (frames already in memory) is stored from
    them. Raises MediaError naming ``what`` for anything else or an unreadable video.
    """
    if value is None or isinstance(value, SpinBotVideo):
        return value
    if not runtime.is_core_video(value):
        raise MediaError(f"{what}: expected a SPINBOT_VIDEO or a core VIDEO, got "
                         f"{type(value).__name__}")
    source = runtime.core_video_stream(value)
    if isinstance(source, str):
        video, _reused, _notes = stream_to_video(source, runtime.file_stamp(source),
                                                 LoadSettings(), f"{what} (file {source})")
        return video
    if isinstance(source, io.BytesIO):
        digest = hashlib.blake2b(source.getbuffer(), digest_size=16).hexdigest()
        video, _reused, _notes = stream_to_video(source, "bytes:" + digest, LoadSettings(),
                                                 f"{what} (in-memory file)")
        return video
    return _from_components(value, what)


def _from_components(value, what: str) -> SpinBotVideo:
    try:
        comps = value.get_components()
    except Exception as e:  # noqa: BLE001 - any pack's VideoInput: say which input failed
        raise MediaError(f"{what}: the core VIDEO's frames cannot be read ({e})") from None
    images = check_image(comps.images, f"{what} frames")
    fps = float(comps.frame_rate)
    audio = comps.audio
    if audio is not None:
        wave, rate = check_audio(audio, f"{what} audio")
        audio = make_audio(wave, rate)
    key = content_key("core_video_components", images, fps, audio)
    batches = (images[i:i + _BATCH] for i in range(0, images.shape[0], _BATCH))
    return write_video(key, fps, batches, audio=audio)


def to_core_video(video: SpinBotVideo, crf: int = 17, preset: str = "medium",
                  notes: list[str] | None = None) -> tuple[object, str]:
    """A core VIDEO over an H.264/AAC MP4 of ``video`` in the temp folder (frames streamed from
    the store, never all in memory; audio kept at its rate, more than two channels downmixed).
    The MP4 is named by the video's identity and the settings, so converting the same video
    again reuses it. The audio is cut or padded to the frames' length; ``notes`` (when given)
    gets a line saying so, and what else was done to it. Returns ``(core VIDEO, mp4 path)``."""
    from .encode import mux_mp4, prepare_audio

    notes = [] if notes is None else notes
    if video.audio is not None:
        wave, rate = check_audio(video.audio, "video audio")
        samples = int(round(video.duration * rate))
        have = wave.shape[-1]
        if have > samples:
            notes.append(f"audio: {have / rate:.3f} s cut to the video's {video.duration:.3f} s "
                         f"({(have - samples) / rate:.3f} s dropped)")
        elif have < samples:
            notes.append(f"audio: {have / rate:.3f} s padded with silence to the video's "
                         f"{video.duration:.3f} s")

    folder = os.path.join(runtime.temp_dir(), "spinbot_core_video")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, content_key("to_core", video, crf, preset) + ".mp4")
    if not os.path.isfile(path):
        audio = None
        if video.audio is not None:
            audio = prepare_audio(wave, rate, None, notes, samples=samples)
        with runtime.Progress(video.frame_count, "Video to core VIDEO") as bar:
            mux_mp4(path, video.iter_frames(_BATCH), video.fps, video.width, video.height,
                    audio=audio, crf=crf, preset=preset, on_frames=bar.update)
    return runtime.core_video_from_file(path), path
