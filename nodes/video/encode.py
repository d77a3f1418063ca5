"""MP4 writing with PyAV: H.264 video, AAC audio, mov_text subtitles, workflow metadata.

Frames are encoded batch by batch as they are read, so a video is never held twice in memory.
The file is written under a hidden ``.partial`` name and renamed only when complete; any error
deletes it, so a file with the final name is always a finished video.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np
import torch

from .. import runtime
from ..media import MediaError, fit_length, mix_channels, normalize_loudness, pad_to_even, resample
from ..outputs import partial_path
from .subtitles import ASS_HEADER, Cue, screen_cues

# The AAC sampling frequencies: ISO/IEC 14496-3 Table 1.18, sampling frequency indices 0-12
# (libavcodec's ff_mpeg4audio_sample_rates, which its AAC encoder accepts).
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
             7350)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
LENGTH_POLICIES = ("pad video with last frame", "trim audio to video")
_AUDIO_BLOCK = 1 << 15


@dataclass
class EncodeResult:
    path: str
    frames: int
    width: int
    height: int
    fps: float
    video_seconds: float
    audio_seconds: float | None
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{os.path.basename(self.path)}: {self.frames} frames {self.width}x{self.height} "
                 f"@ {self.fps:g} fps = {self.video_seconds:.3f}s"]
        if self.audio_seconds is not None:
            lines.append(f"audio: {self.audio_seconds:.3f}s")
        lines.extend(self.notes)
        return "\n".join(lines)


def check_fps(fps: float, name: str = "fps") -> float:
    """``fps`` as a float; MediaError naming ``name`` unless it is a positive finite number."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise MediaError(f"{name} must be a positive finite number of frames per second, "
                         f"got {fps!r}")
    return value


def fps_fraction(fps: float) -> Fraction:
    """An exact rate for the muxer: 23.976 (or 23.98) -> 24000/1001, 29.97 -> 30000/1001,
    25.0 -> 25.

    The NTSC rates (24, 30, 60, 120) x 1000/1001 are matched within 0.005 fps, so the values
    people type for them, to two or three decimals, all land on the exact rate; no common rate
    lies that close to one of them.

    Raises MediaError for an fps that is not a positive finite number (NaN and infinity have no
    fraction; NaN also slips through ComfyUI's min/max validation).
    """
    check_fps(fps)
    for base in (24, 30, 60, 120):
        if abs(fps - base * 1000 / 1001) < 5e-3:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def prepare_audio(wave: torch.Tensor, rate: int, loudness_lufs: float | None,
                  notes: list[str], samples: int | None = None) -> tuple[np.ndarray, int]:
    """Master audio ``[C,T]`` at ``rate`` -> float32 ``[C,T']`` (mono or stereo) at an AAC rate.

    ``samples`` (at ``rate``; None keeps the length) is the length to write: longer audio is cut
    to it first, then the loudness is measured and set on what is left, and only then is it
    padded with silence to that length, so trailing silence never lowers the measurement and a
    short clip under a long video is not raised by it. More than two channels are downmixed by
    layout (`media.mix_channels`, BS.775 coefficients). Notes say what was done, including
    any samples still over full scale that had to be clipped.
    """
    if wave.shape[0] > 2:
        wave, note = mix_channels(wave, 2)
        notes.append(note)
    if samples is not None:
        wave = wave[..., :samples]
    if rate not in AAC_RATES:
        notes.append(f"audio: resampled {rate} Hz -> 48000 Hz (AAC has no {rate} Hz)")
        if samples is not None:  # resample_poly's output length, ceil(n * 48000 / rate)
            samples = -(-samples * 48000 // rate)
        wave, rate = resample(wave, rate, 48000), 48000
    if loudness_lufs is not None:
        wave, note = normalize_loudness(wave, rate, loudness_lufs)
        notes.append(note)
    if samples is not None:
        wave = fit_length(wave, samples)
    over = int((wave.abs() > 1.0).sum())
    if over:
        notes.append(f"audio: {over} samples above full scale (peak "
                     f"{20 * math.log10(float(wave.abs().max())):+.1f} dBFS) clipped")
    return np.ascontiguousarray(wave.clamp(-1.0, 1.0).numpy(), dtype=np.float32), rate


def mux_mp4(path: str, frames: Iterable[np.ndarray], fps: float, width: int, height: int,
            audio: tuple[np.ndarray, int] | None = None, cues: list[Cue] | None = None,
            crf: int = 19, preset: str = "medium", audio_bitrate: str = "192k",
            metadata: dict[str, str] | None = None,
            on_frames: Callable[[int], None] | None = None,
            subtitle_tracks: Sequence[tuple[list[Cue], str]] | None = None) -> int:
    """Encode uint8 ``[n,H,W,3]`` batches (+ audio ``([C,T], rate)`` + cues) into ``path``.

    ``frames`` is iterated on a helper thread and each batch converted to yuv420p on a second one,
    each at most ``_QUEUE_DEPTH`` batches ahead of the encoder, so memory stays a few batches and
    the three overlap; ``check_interrupted`` and ``on_frames`` run on the calling thread after
    each batch. Writes to a partial file and renames on success; on any error (MediaError for an
    unknown preset or no frames, whatever ``frames`` raises, Cancel) nothing is left behind and
    the helper threads are joined. Returns the number of frames written.

    ``subtitle_tracks``: ``[(cues, ISO 639-2 language code), ...]``, one mov_text track each in
    that order (the first is the default a player shows); when None, ``cues`` is one track with
    language 'und'. Empty cue lists make no track.
    """
    if preset not in X264_PRESETS:
        raise MediaError(f"unknown x264 preset {preset!r}; choose one of {', '.join(X264_PRESETS)}")
    tmp = partial_path(path)
    written = 0
    try:
        with av.open(tmp, "w", format="mp4",
                     options={"movflags": "use_metadata_tags+faststart"}) as container:
            for key, value in (metadata or {}).items():
                container.metadata[key] = value
            vstream = container.add_stream("libx264", rate=fps_fraction(fps))
            vstream.width, vstream.height = width + width % 2, height + height % 2
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(int(crf)), "preset": preset}
            # PyAV defaults to slice threads, which libx264 turns into sliced threading (one frame
            # split across threads: less parallel and worse compression). Frame threads with an
            # automatic count are what the ffmpeg CLI uses.
            vstream.codec_context.thread_type = _X264_THREADS
            vstream.codec_context.thread_count = 0
            astream = None
            if audio is not None:
                samples, rate = audio
                astream = container.add_stream("aac", rate=rate)
                astream.layout = "stereo" if samples.shape[0] == 2 else "mono"
                astream.bit_rate = _bitrate(audio_bitrate)
            if subtitle_tracks is None:
                subtitle_tracks = [(cues, "und")] if cues else []
            sstreams = []
            for track_cues, language in subtitle_tracks:
                if not track_cues:
                    continue
                sstream = container.add_stream("mov_text")
                sstream.codec_context.subtitle_header = ASS_HEADER.encode()
                # the mp4 muxer writes a stream's 'language' tag into its mdhd box
                sstream.metadata["language"] = language
                sstreams.append((sstream, track_cues))

            # Three stages overlap: producing the uint8 batches (IMAGE conversion, burn-in,
            # reading a SPINBOT_VIDEO), rgb24 -> yuv420p, and encoding on this thread (x264 runs
            # its own frame threads). Interrupts and progress stay on the calling thread.
            chunks = _prefetch(_prefetch(frames, "spinbot-encode-frames"), "spinbot-encode-yuv",
                               convert=_YuvConverter(vstream.width, vstream.height))
            try:
                for chunk in chunks:
                    runtime.check_interrupted()
                    for vf in chunk:
                        container.mux(vstream.encode(vf))
                    written += len(chunk)
                    if on_frames:
                        on_frames(len(chunk))
            finally:
                chunks.close()
            if not written:
                raise MediaError("no frames to encode")
            container.mux(vstream.encode(None))

            if astream is not None:
                _encode_audio(container, astream, *audio)
            for sstream, track_cues in sstreams:
                _mux_cues(container, sstream, track_cues)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return written


_QUEUE_DEPTH = 1  # finished chunks waiting between two stages: memory stays a few chunks
_X264_THREADS = "FRAME"  # AVCodecContext.thread_type for libx264 (see mux_mp4)


def _prefetch(source: Iterable, name: str, convert: Callable | None = None,
              depth: int = _QUEUE_DEPTH) -> Iterator:
    """Iterate ``source`` (mapped through ``convert``) on a thread of its own, ``depth`` items ahead.

    An exception raised by the source or ``convert`` is re-raised, the same object, where the
    consumer would have received the next item. Closing this generator (the consumer finished,
    failed or was interrupted) stops the thread after the item it is working on, joins it and
    closes ``source``, so no thread or open input outlives the caller.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put((True, convert(item) if convert else item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item
    finally:
        stop.set()
        while thread.is_alive():
            try:  # free queued chunks now rather than when the generator is collected
                items.get_nowait()
            except queue.Empty:
                pass
            thread.join(0.05)
        close = getattr(source, "close", None)
        if close is not None:
            close()


class _YuvConverter:
    """uint8 ``[n,h,w,3]`` batch -> list of yuv420p ``av.VideoFrame`` at the stream's even size.

    The swscale conversion PyAV's encoder applies to an rgb24 frame (same defaults, same bytes),
    done ahead of the encoder so it does not wait for it. One swscale thread: this stage has its
    own thread already, and slice threads cost ~35% more CPU per frame (2.5 -> 3.4 ms at 720p),
    CPU the encoder needs where cores are few.
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.reformatter = av.video.reformatter.VideoReformatter()

    def __call__(self, batch: np.ndarray) -> list:
        return [self.reformatter.reformat(av.VideoFrame.from_ndarray(frame, format="rgb24"),
                                          width=self.width, height=self.height,
                                          format="yuv420p", threads=1)
                for frame in pad_to_even(np.asarray(batch))]


def _bitrate(text: str) -> int:
    text = text.strip().lower()
    scale = 1000 if text.endswith("k") else 1
    return int(float(text.rstrip("k")) * scale)


def _encode_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    for start in range(0, samples.shape[1], _AUDIO_BLOCK):
        block = np.ascontiguousarray(samples[:, start:start + _AUDIO_BLOCK])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _mux_cues(container, stream, cues: list[Cue]) -> None:
    """Write 3GPP timed-text samples (16-bit length + UTF-8 text) directly.

    Going through the ASS-based encoder would drop anything in braces and keep escapes literally;
    plain tx3g samples carry the text exactly. A timed-text track shows one sample at a time, so
    overlapping cues are written as `screen_cues` (every active text, one per line); times are
    floored to the stream's time base so a cue clipped to the video's end stays inside it. The
    muxer inserts the empty samples for gaps.
    """
    tb = stream.time_base
    for cue in screen_cues(cues):
        text = cue.text.replace("\r\n", "\n").encode("utf-8")[:65535]
        # 1e-6 ticks absorbs float error in times that are exact in milliseconds
        pts = math.floor(cue.start / tb + 1e-6)
        end = math.floor(cue.end / tb + 1e-6)
        if end <= pts:  # shorter than one tick: nothing a player could show
            continue
        packet = av.Packet(len(text).to_bytes(2, "big") + text)
        packet.stream = stream
        packet.pts = packet.dts = pts
        packet.duration = end - pts
        container.mux(packet)


def padded_frames(batches: Iterable[np.ndarray], extra: int) -> Iterator[np.ndarray]:
    """Yield ``batches`` then ``extra`` copies of the last frame (in batches of up to 32)."""
    last = None
    for batch in batches:
        if len(batch):
            last = batch[-1]
        yield batch
    while extra > 0 and last is not None:
        n = min(extra, 32)
        yield np.broadcast_to(last, (n, *last.shape))
        extra -= n


def plan_lengths(frames: int, fps: float, audio_samples: int | None, rate: int | None,
                 policy: str) -> tuple[int, int | None, list[str]]:
    """Apply the audio/video length policy.

    Returns ``(extra_video_frames, audio_samples_to_write, notes)``. A mismatch of more than one
    frame is always reported; audio shorter than the video is padded with silence.
    """
    if policy not in LENGTH_POLICIES:
        raise MediaError(f"unknown length policy {policy!r}; choose one of {LENGTH_POLICIES}")
    check_fps(fps)
    if audio_samples is None:
        return 0, None, []
    notes: list[str] = []
    video_s, audio_s = frames / fps, audio_samples / rate
    gap = audio_s - video_s
    one_frame = 1.0 / fps
    extra = 0
    target = audio_samples
    if gap > one_frame * 0.5 and policy == LENGTH_POLICIES[0]:
        extra = math.ceil(audio_s * fps - 1e-9) - frames
        if gap > one_frame:
            notes.append(f"length: audio is {gap:.3f}s longer than the video; "
                         f"video padded with {extra} copies of its last frame")
    elif gap > 0:
        target = int(round(video_s * rate))
        if gap > one_frame:
            notes.append(f"length: audio is {gap:.3f}s longer than the video; audio trimmed to "
                         f"{video_s:.3f}s")
    if gap < 0:
        target = int(round(video_s * rate))
        if -gap > one_frame:
            notes.append(f"length: audio is {-gap:.3f}s shorter than the video; "
                         f"padded with silence")
    return extra, target, notes
