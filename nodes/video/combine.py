"""Video Combine as a plain function: frames (+ audio, + subtitles) -> an MP4 in the output folder."""
from __future__ import annotations

import json
import math
from typing import Iterator

import numpy as np
import torch

from .. import runtime
from ..media import MediaError, check_audio, check_image, images_to_uint8
from ..outputs import safe_output_path
from .encode import (EncodeResult, check_fps, fps_fraction, mux_mp4, padded_frames, plan_lengths,
                     prepare_audio)
from .store import SpinBotVideo
from .subtitles import Cue, clip_cues, parse_subtitles

_BATCH = 16


def _image_batches(images: torch.Tensor) -> Iterator[np.ndarray]:
    for start in range(0, images.shape[0], _BATCH):
        yield images_to_uint8(images[start:start + _BATCH], "images", first_index=start)


def _video_batches(video: SpinBotVideo) -> Iterator[np.ndarray]:
    yield from video.iter_frames(_BATCH)


def combine_to_mp4(images: torch.Tensor | None = None, video: SpinBotVideo | None = None,
                   fps: float = 25.0, audio: dict | None = None, subtitles: str = "",
                   filename_prefix: str = "SpinBot/video", crf: int = 19, preset: str = "medium",
                   audio_bitrate: str = "192k", length_policy: str = "pad video with last frame",
                   loudness_lufs: float | None = -14.0, burn_in: bool = False,
                   metadata: dict[str, str] | None = None, subtitles_2: str = "",
                   subtitle_language: str = "und",
                   subtitle_language_2: str = "und") -> EncodeResult:
    """Encode frames from an IMAGE batch or a SPINBOT_VIDEO into an MP4 (see the node for options).

    ``subtitles`` and ``subtitles_2`` (SRT/WebVTT) become mov_text tracks 1 and 2 tagged with
    ``subtitle_language`` / ``subtitle_language_2`` (see `subtitle_language_code`); both are
    clipped to the video the same way. Burn-in draws track 1 only. Raises MediaError for bad
    frames, fps, loudness or an unknown language."""
    if (images is None) == (video is None):
        raise MediaError("connect exactly one of 'images' (IMAGE) or 'video' (SPINBOT_VIDEO)")
    notes: list[str] = []
    if video is not None:
        if abs(video.fps - fps) > 1e-6:
            notes.append(f"fps: the video's own {video.fps:g} fps used (widget said {fps:g})")
        fps = video.fps
        frames, width, height = video.frame_count, video.width, video.height
        batches = _video_batches(video)
        if audio is None and video.audio is not None:
            audio = video.audio
    else:
        images = check_image(images, "images")
        frames, height, width = images.shape[0], images.shape[1], images.shape[2]
        batches = _image_batches(images)
    if frames == 0:
        raise MediaError("there are no frames to encode")
    # ComfyUI's min/max validation lets NaN through (every comparison with it is false).
    fps = check_fps(fps)
    if loudness_lufs is not None and not math.isfinite(loudness_lufs):
        raise MediaError(f"loudness_lufs must be a finite number of LUFS, got {loudness_lufs}")

    languages = (subtitle_language_code(subtitle_language, "subtitle_language"),
                 subtitle_language_code(subtitle_language_2, "subtitle_language_2"))
    tracks: list[list[Cue] | None] = []
    for k, text in enumerate((subtitles, subtitles_2)):
        dropped: list[str] = []
        tracks.append(parse_subtitles(text, dropped) if text and text.strip() else None)
        label = "subtitles" if k == 0 else "subtitles_2"
        notes.extend(f"{label}: {line}" for line in dropped)
    audio_data = None
    extra = 0
    if audio is not None:
        wave, rate = check_audio(audio)
        extra, samples, length_notes = plan_lengths(frames, fps, wave.shape[-1], rate, length_policy)
        notes.extend(length_notes)
        audio_data = prepare_audio(wave, rate, loudness_lufs, notes, samples=samples)
    if width % 2 or height % 2:
        notes.append(f"size: {width}x{height} padded to {width + width % 2}x{height + height % 2} "
                     "for yuv420p")

    seconds = (frames + extra) / float(fps_fraction(fps))
    tracks = [_fit_cues(cues, seconds, notes, label) if cues else None
              for cues, label in zip(tracks, ("subtitles", "subtitles_2"))]
    cues = tracks[0]
    batches = padded_frames(batches, extra)
    if burn_in and cues:
        # after the padding, so a padded frame shows the cue of its own time
        from ..script.burn_in import burn_in_notes

        batches = _burned(batches, fps, cues)
        notes.append(f"subtitles: {len(cues)} cues burned into the frames")
        notes.extend(burn_in_notes(cues, height))
    path, _subfolder, _name = safe_output_path(filename_prefix, "mp4")
    total = frames + extra
    with runtime.Progress(total, "Video Combine") as bar:
        written = mux_mp4(path, batches, fps, width, height, audio=audio_data,
                          crf=crf, preset=preset, audio_bitrate=audio_bitrate,
                          metadata=metadata, on_frames=bar.update,
                          subtitle_tracks=[(t, lang) for t, lang in zip(tracks, languages) if t])
    audio_seconds = None if audio_data is None else audio_data[0].shape[1] / audio_data[1]
    for k, (track, lang) in enumerate(zip(tracks, languages)):
        if track:
            label = "subtitles" if k == 0 else "subtitles_2"
            notes.append(f"{label}: {len(track)} cues as a mov_text track, language '{lang}'")
    return EncodeResult(path, written, width, height, fps, written / fps, audio_seconds, notes)


def subtitle_language_code(value: str, what: str = "subtitle_language") -> str:
    """The ISO 639-2 code an MP4 subtitle track is tagged with: 'und' for '' or 'und', a
    three-letter code as given ('spa', 'ger'), otherwise a language name or ISO 639-1 / Whisper /
    NLLB code ('Spanish', 'es', 'spa_Latn') through the dubbing stage's NLLB table, whose codes
    are ISO 639-3 (the same as ISO 639-2/T for individual languages; a macrolanguage such as
    Arabic gets its main variety's code, 'arb'). Raises LanguageError (a
    ValueError) naming ``what`` and the closest names for anything else."""
    text = (value or "").strip()
    if text.lower() in ("", "und"):
        return "und"
    if len(text) == 3 and text.isascii() and text.isalpha():
        return text.lower()
    from ..dubbing.languages import nllb_code

    return nllb_code(text, what).split("_")[0]


def _fit_cues(cues: list[Cue], seconds: float, notes: list[str],
              label: str = "subtitles") -> list[Cue] | None:
    """``cues`` inside the video's ``seconds`` (after the length policy), so the subtitle track
    never makes the file longer than its video; what was cut or dropped goes in ``notes``."""
    inside = clip_cues(cues, seconds)
    dropped = len(cues) - len(inside)
    cut = sum(1 for c in cues if c.start < seconds < c.end)
    if dropped or cut:
        notes.append(f"{label}: {dropped} cues after the video's end ({seconds:.3f}s) dropped, "
                     f"{cut} cut at it")
    return inside or None


def _burned(batches: Iterator[np.ndarray], fps: float, cues) -> Iterator[np.ndarray]:
    from ..script.burn_in import burn_subtitles

    done = 0
    for batch in batches:
        yield burn_subtitles(np.asarray(batch), done, fps, cues)
        done += len(batch)


def workflow_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """The same keys ComfyUI's own savers embed, so dropping the MP4 on ComfyUI reloads the graph."""
    meta: dict[str, str] = {}
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        meta[key] = json.dumps(value)
    return meta
