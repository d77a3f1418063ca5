"""The lip-sync loop: frames + speech -> a SPINBOT_VIDEO whose mouth follows the speech.

Two passes over the source frames, both streaming:

1. detection: one face box per source frame (a still image is detected once), smoothed over
   time, padded; frames without a face are listed (and either left alone or reported);
2. synthesis, ``batch_size`` output frames at a time: the 96x96 face crops with their lower half
   blanked, stacked with the unblanked crop as the reference (upstream's
   ``img_masked[:, 96//2:] = 0``, concatenated on channels, /255, in BGR as the release was
   trained), and 16 mel frames per video frame go through the model; the new mouths are pasted
   back (nodes/lipsync/paste.py) and the frames are written to disk chunk by chunk.

The output has ceil(audio seconds x fps) frames and carries the original, full-rate audio. When
the speech is longer than the video, the video plays forward and backward (ping-pong, default:
no jump at the loop point), restarts (``loop``, upstream's ``i % len(frames)``) or holds its last
frame (``repeat last``). A video longer than the speech is cut to the speech.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .. import model_cache, runtime
from ..media import MediaError, check_audio, check_image, images_to_uint8
from ..video.store import SpinBotVideo, VideoWriter, content_key, load_video
from . import audio as lipsync_audio
from .faces import FaceDetector, Pads, choose_face, crop_box, missing_faces, smooth_boxes
from .paste import CropUpscaler, MouthRegion, paste_mouth, resize_image

log = logging.getLogger("spinbot.lipsync")

FACE_SIZE = 96
LOOP_MODES = ("ping-pong", "loop", "repeat last")


@dataclass(frozen=True)
class LipSyncSettings:
    fps: float = 25.0                 # used for IMAGE input; a SPINBOT_VIDEO keeps its own
    batch_size: int = 16              # output frames through the model at once
    face_index: int = -1              # -1: largest face; n: n-th face from the left
    pads: Pads = field(default_factory=Pads)
    smoothing_window: int = 5         # frames in the centred box average; 1: off
    no_face: str = "pass through"     # or "error"
    loop_mode: str = "ping-pong"
    mouth: MouthRegion = field(default_factory=MouthRegion)
    color_match: bool = True
    resize_mode: str = "bicubic"      # how the 96x96 crop is scaled to the face box
    detect_every: int = 1             # detect on every n-th source frame, interpolate between


@dataclass
class Timings:
    """Seconds spent per part, for the benchmark and the log."""

    detection: float = 0.0
    model: float = 0.0
    paste: float = 0.0
    io: float = 0.0
    frames: int = 0

    def per_frame(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {"detection": self.detection / n, "model": self.model / n,
                "paste": self.paste / n, "io": self.io / n}


# --------------------------------------------------------------------------- frame source

class FrameSource:
    """The frames to lip-sync: an IMAGE batch (one image = a still) or a SPINBOT_VIDEO."""

    def __init__(self, images: torch.Tensor | None = None, video: SpinBotVideo | None = None,
                 fps: float = 25.0):
        if images is None and video is None:
            raise MediaError("connect an IMAGE (frames or one still image) or a SPINBOT_VIDEO")
        if video is not None:  # a video wins: its frames are timed, an IMAGE is not
            video.check()
            self.video, self.images = video, None
            self.count, self.fps = video.frame_count, float(video.fps)
            self.height, self.width = video.height, video.width
        else:
            self.images, self.video = check_image(images, "frames"), None
            self.count, self.fps = int(self.images.shape[0]), float(fps)
            self.height, self.width = int(self.images.shape[1]), int(self.images.shape[2])
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise MediaError(f"fps must be a positive finite number, got {self.fps:g}")
        if self.count == 0:
            raise MediaError("the frames input has no frames")

    @property
    def still(self) -> bool:
        return self.count == 1

    def identity(self):
        return self.video.identity() if self.video is not None else self.images

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 ``[n,H,W,3]``."""
        if self.video is not None:
            return np.asarray(self.video.read(start, stop))
        return images_to_uint8(self.images[start:stop], "frames", first_index=start)

    def iter_frames(self, count: int, batch: int) -> Iterator[np.ndarray]:
        for start in range(0, count, batch):
            yield self.read(start, min(count, start + batch))


def source_indices(frames: int, source_count: int, mode: str) -> np.ndarray:
    """Which source frame each output frame shows."""
    if mode not in LOOP_MODES:
        raise MediaError(f"loop mode must be one of {LOOP_MODES}, got {mode!r}")
    out = np.arange(frames)
    if source_count == 1:
        return np.zeros(frames, dtype=np.int64)
    if mode == "loop":
        return out % source_count
    if mode == "repeat last":
        return np.minimum(out, source_count - 1)
    period = 2 * (source_count - 1)  # 0 1 2 3 2 1 0 1 ...: the turning frames are not doubled
    phase = out % period
    return np.where(phase < source_count, phase, period - phase)


# --------------------------------------------------------------------------- audio

def audio_windows(audio: dict, fps: float) -> tuple[torch.Tensor, int]:
    """The mel window of every output frame ``[frames,1,80,16]`` and the frame count."""
    wave, rate = check_audio(audio, "speech")
    seconds = wave.shape[-1] / rate
    frames = int(lipsync_audio.frame_count(seconds, fps))
    if frames < 1:
        raise MediaError("the speech is too short for one video frame")
    wave16 = lipsync_audio.prepare_audio(audio)
    mel = lipsync_audio.wav2lip_mel(wave16)
    chunks = torch.as_tensor(np.asarray(lipsync_audio.mel_chunks(mel, fps, frames)),
                             dtype=torch.float32)
    return chunks.unsqueeze(1), frames


# --------------------------------------------------------------------------- detection

def face_boxes(source: FrameSource, detector: FaceDetector, settings: LipSyncSettings,
               count: int, progress: runtime.Progress | None = None,
               timings: Timings | None = None) -> list[tuple[int, int, int, int] | None]:
    """Padded, smoothed, clipped face box (or None) for source frames ``0..count-1``."""
    every = max(1, int(settings.detect_every))
    track: list = []
    for frames in source.iter_frames(count, max(1, settings.batch_size)):
        runtime.check_interrupted()
        start = time.perf_counter()
        for f in frames:
            i = len(track)
            wanted = i % every == 0 or i == count - 1
            track.append(choose_face(detector.detect(np.asarray(f)), settings.face_index)
                         if wanted else MISSING)
        if timings is not None:
            timings.detection += time.perf_counter() - start
        if progress is not None:
            progress.update(len(frames))
    track = smooth_boxes(interpolate_boxes(track), settings.smoothing_window)
    return [None if b is None else crop_box(b, settings.pads, source.width, source.height)
            for b in track]


MISSING = "not detected"  # a frame skipped by detect_every, filled in by interpolate_boxes


def interpolate_boxes(track: list) -> list:
    """Fill frames skipped by ``detect_every`` linearly between the detected frames around them.
    Between a face and no face there is no telling where the face went, so those stay None."""
    out = list(track)
    known = [i for i, b in enumerate(track) if b is not MISSING]
    for a, b in zip(known, known[1:]):
        for i in range(a + 1, b):
            if track[a] is None or track[b] is None:
                out[i] = None
            else:
                t = (i - a) / (b - a)
                out[i] = tuple((1 - t) * p + t * q for p, q in zip(track[a], track[b]))
    return out


# --------------------------------------------------------------------------- model input

def face_crops(frames: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """The face boxes of ``frames`` resized to 96x96: float ``[n,3,96,96]`` in 0..255, RGB."""
    crops = [resize_image(frame[y1:y2, x1:x2], FACE_SIZE, FACE_SIZE, "bilinear")
             for frame, (x1, y1, x2, y2) in zip(frames, boxes)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()


def model_input(crops: torch.Tensor) -> torch.Tensor:
    """Upstream's face input: masked crop + reference crop on channels, BGR, /255."""
    bgr = crops[:, [2, 1, 0]]
    masked = bgr.clone()
    masked[:, :, FACE_SIZE // 2:] = 0
    return torch.cat([masked, bgr], dim=1) / 255.0


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


# --------------------------------------------------------------------------- the loop

def _gather(source: FrameSource, wanted: np.ndarray) -> np.ndarray:
    """Source frames ``wanted`` (any order, repeats allowed) as a private writable array,
    reading only the contiguous ranges they cover (a loop's wrap-around is two short reads, not
    the whole video)."""
    unique = np.unique(wanted)
    runs = np.split(unique, np.flatnonzero(np.diff(unique) > 1) + 1)
    parts = [source.read(int(run[0]), int(run[-1]) + 1) for run in runs]
    frames = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.array(frames[np.searchsorted(unique, wanted)])


def _preview(frame: np.ndarray):
    """The last frame of a batch for the node's progress preview (ComfyUI's format)."""
    from PIL import Image

    return ("JPEG", Image.fromarray(frame), 512)


def get_wav2lip(path: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The Wav2Lip generator in ``path`` on ``device`` in ``dtype``, from the pack's model cache
    (one at a time; ComfyUI can unload it)."""
    from .wav2lip import load_wav2lip

    def load() -> torch.nn.Module:
        model_cache.evict_models("lipsync")  # one at a time: the old one goes before the new one loads
        return load_wav2lip(path, device=device, dtype=dtype)

    key = ("lipsync", runtime.file_stamp(path), str(device), str(dtype))
    return model_cache.cached_model("lipsync", key, load, name=os.path.basename(path),
                                modules=lambda m: [m], limit=1)


def video_key(source: FrameSource, audio: dict, settings: LipSyncSettings, model_id,
              detector_id) -> str:
    return content_key("wav2lip", 1, model_id, detector_id, source.identity(), source.fps,
                       audio, repr(settings))


def lip_sync(model: torch.nn.Module, detector: FaceDetector, source: FrameSource, audio: dict,
             settings: LipSyncSettings = LipSyncSettings(), key: str | None = None,
             crop_upscaler: CropUpscaler | None = None,
             timings: Timings | None = None) -> SpinBotVideo:
    """Lip-sync ``source`` to ``audio`` with a loaded Wav2Lip ``model``; returns the video.

    With a ``key`` (see `video_key`) a finished video of the same inputs is reused.
    """
    if key is not None:
        existing = load_video(key)
        if existing is not None:
            return existing
    if settings.batch_size < 1:
        raise MediaError(f"batch size must be at least 1, got {settings.batch_size}")
    timings = timings if timings is not None else Timings()
    mels, frames = audio_windows(audio, source.fps)
    indices = source_indices(frames, source.count, settings.loop_mode)
    used = int(indices.max()) + 1  # source frames the output shows
    device, dtype = _model_device_dtype(model)

    with runtime.Progress(used + frames, "SpinBot Wav2Lip") as progress:
        boxes = face_boxes(source, detector, settings, used, progress, timings)
        skipped = missing_faces(boxes, settings.no_face)
        if skipped:
            log.warning("no face in %d of %d source frames; they are left unchanged",
                        len(skipped), used)
        if len(skipped) == used:
            # Pass-through of every frame is not lip-sync: say so rather than return the input.
            raise MediaError("no face was found in any frame; check the face detector pack and "
                             "that the face is visible and not tiny")

        writer_key = key or content_key("wav2lip-unkeyed", time.time_ns())
        with VideoWriter(writer_key, source.fps) as writer:
            for start in range(0, frames, settings.batch_size):
                runtime.check_interrupted()
                stop = min(frames, start + settings.batch_size)
                tick = time.perf_counter()
                wanted = indices[start:stop]
                out = _gather(source, wanted)
                timings.io += time.perf_counter() - tick
                with_face = [i for i, s in enumerate(wanted) if boxes[s] is not None]
                if with_face:
                    face_boxes_now = [boxes[wanted[i]] for i in with_face]
                    tick = time.perf_counter()
                    crops = face_crops(out[with_face], face_boxes_now)
                    faces = model_input(crops).to(device, dtype)
                    audio_in = mels[start:stop][with_face].to(device, dtype)
                    with torch.inference_mode():
                        generated = model(audio_in, faces)[:, [2, 1, 0]]  # BGR -> RGB
                        if crop_upscaler is not None:
                            generated = crop_upscaler(generated.clamp(0, 1))
                        generated = generated.float().clamp_(0, 1).cpu()
                    timings.model += time.perf_counter() - tick
                    tick = time.perf_counter()
                    for row, i in enumerate(with_face):
                        paste_mouth(out[i], generated[row], face_boxes_now[row], settings.mouth,
                                    settings.color_match, settings.resize_mode)
                    timings.paste += time.perf_counter() - tick
                tick = time.perf_counter()
                writer.write(out)
                timings.io += time.perf_counter() - tick
                timings.frames += len(out)
                progress.update(len(out), _preview(out[-1]) if runtime.IN_COMFYUI else None)
            # A source video's segment timings (from TTS) still hold: the speech is the same.
            segments = None
            if source.video is not None and source.video.segments is not None:
                segments = list(source.video.segments)
            video = writer.finish(audio=audio, segments=segments,
                                  extra={"stage": "wav2lip", "frames_without_face": len(skipped)})
    return video
