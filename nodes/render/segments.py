"""Segment fan-out for long videos: split one narration job into sub-jobs, stitch their MP4s.

A long narration renders faster spread over several ComfyUI servers: `expand_job` splits a job's
narration into groups of whole sentences, one sub-job per group (each renders its own speech, so
the segments' durations are measured, not estimated), and `stitch` joins the sub-jobs' MP4s in
order on ONE audio clock:

- each segment's audio is decoded to PCM and placed by its decoded timestamps, cut to the
  stream's duration as the container reports it (the MP4 edit list: AAC priming is skipped by the
  decoder, the padding of the last AAC frame is cut here), so the concatenation is sample-exact;
- segment ``k`` spans ``[start_k, end_k)`` on that clock (cumulative sample counts) and gets
  exactly ``round(end_k * fps) - round(start_k * fps)`` frames (its own frames, its last ones
  dropped or its last one held), computed in exact rational arithmetic so nothing drifts however
  many segments there are; the final boundary is ``ceil(total * fps)``, the pack's "pad video with
  last frame" policy (Video Combine's default): the picture never ends before the speech, and the
  video outlasts the audio by less than one frame;
- the frames are re-encoded once with the pack's encoder (`video.encode.mux_mp4`), streamed
  segment by segment, with the segments' mov_text cues shifted to their start times.

Importing this module is light (regular expressions and the standard library): the renderer's
batch runner calls `expand_job` before any media library is needed; `stitch` imports PyAV, numpy
and the encoder when it runs.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from fractions import Fraction
from typing import Any, Iterator

from ..client import find_node, load_workflow
from ..script.segments import (DEFAULT_PAUSE, DEFAULT_WORDS_PER_SECOND, estimate_seconds,
                               speech_units, split_sentences)

log = logging.getLogger(__name__)

DEFAULT_SPLIT_SECONDS = 30.0  # estimated speech per sub-job when a job says only "split": true
NARRATION_CLASS = "SpinBotDirectScript"  # the node whose `narration` input can be split
COMBINE_CLASS = "SpinBotVideoCombine"  # the node whose MP4 each sub-job produces
SPLIT_KEYS = ("split", "split_seconds")
SEGMENTS_METADATA_KEY = "spinbot_segments"  # JSON list of the stitched segments, in the MP4
# Tags the MP4 muxer writes itself; everything else in the first segment's metadata is carried.
_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"}
_BATCH = 16  # frames per batch handed to the encoder (as Video Combine does)
_CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


class SplitError(ValueError):
    """A job whose split request cannot be honoured (a bad ``split_seconds``)."""


class StitchError(ValueError):
    """Segment MP4s that cannot be joined (missing, no audio, different sizes or rates)."""


# --------------------------------------------------------------------------- splitting

def split_limit(job: dict) -> float | None:
    """Seconds of estimated speech per sub-job that ``job`` asks for, or None (no split).

    ``"split": true`` uses `DEFAULT_SPLIT_SECONDS`; ``"split": 20`` or ``"split_seconds": 20``
    set the limit. Strings from a CSV batch ("true", "no", "20") are read the same way.

    Raises:
        SplitError: a limit that is not a positive finite number.
    """
    split, seconds = job.get("split"), job.get("split_seconds")
    if isinstance(split, str):
        low = split.strip().lower()
        split = (False if low in ("", "0", "false", "no", "off") else
                 True if low in ("true", "yes", "on") else low)
    if split is False or (split is None and seconds in (None, "")):
        return None
    if seconds in (None, ""):
        seconds = DEFAULT_SPLIT_SECONDS if split is True or split is None else split
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise SplitError(f"job {job.get('id')!r}: split_seconds {seconds!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SplitError(f"job {job.get('id')!r}: split_seconds must be a positive number of "
                         f"seconds, got {seconds!r}")
    return value


def _workflow_of(job: dict) -> dict:
    workflow = job.get("workflow")
    if isinstance(workflow, dict):
        return workflow
    return load_workflow(str(workflow))


def _effective_inputs(workflow: dict, assignments: dict) -> tuple[dict, dict]:
    """``(inputs by node id, {(node id, input): set key})``: the workflow's values with the job's
    ``Title.input`` (or ``id.input``) assignments applied."""
    inputs = {nid: dict(node.get("inputs") or {}) for nid, node in workflow.items()}
    keys: dict[tuple[str, str], str] = {}
    for key, value in (assignments or {}).items():
        ref, dot, name = str(key).rpartition(".")
        if not dot or not ref:
            continue  # the renderer reports malformed keys; splitting just ignores them
        try:
            nid = find_node(workflow, ref)
        except RuntimeError:  # ClientError: unknown or ambiguous title, the renderer reports it
            continue
        inputs[nid][name] = value
        keys[(nid, name)] = key
    return inputs, keys


def _single_node(workflow: dict, class_type: str) -> str | None:
    found = [nid for nid, node in workflow.items() if node.get("class_type") == class_type]
    return found[0] if len(found) == 1 else None


def _join(sentences: list[str]) -> str:
    """Sentences back into one narration: no space between CJK sentences, one elsewhere."""
    text = ""
    for s in sentences:
        if text and not ((_CJK_CHAR.match(text[-1]) or text[-1] in "。！？｡」』）")
                         and _CJK_CHAR.match(s[0])):
            text += " "
        text += s
    return text


def group_sentences(text: str, max_seconds: float, language: str = "",
                    words_per_second: float = DEFAULT_WORDS_PER_SECOND
                    ) -> list[tuple[str, float, list[str]]]:
    """Whole sentences of ``text`` packed in order into groups of at most ``max_seconds``.

    Each sentence is estimated at ``words_per_second`` (`script.segments.estimate_seconds`) with
    `DEFAULT_PAUSE` between sentences, as the script stage estimates. A sentence longer than the
    limit is never cut (a sub-job must speak whole sentences); it forms a group of its own and a
    note says so. A piece without words (an emoji, "!!!") stays with the sentence before it.
    Returns ``[(group text, estimated seconds, notes)]``; no text gives an empty list.
    """
    sentences: list[str] = []
    for s in split_sentences(text, language):
        if sentences and (speech_units(s) <= 0 or speech_units(sentences[-1]) <= 0):
            sentences[-1] = _join([sentences[-1], s])
        else:
            sentences.append(s)
    groups: list[tuple[list[str], float, list[str]]] = []
    current: list[str] = []
    seconds = 0.0
    for s in sentences:
        length = estimate_seconds(s, words_per_second)
        if current and seconds + DEFAULT_PAUSE + length <= max_seconds + 1e-9:
            current.append(s)
            seconds += DEFAULT_PAUSE + length
            continue
        if current:
            groups.append((current, seconds, []))
        current, seconds = [s], length
    if current:
        groups.append((current, seconds, []))
    out = []
    for sents, secs, notes in groups:
        if secs > max_seconds + 1e-9:
            notes.append(f"one sentence of about {secs:.1f}s of speech is longer than the "
                         f"{max_seconds:g}s split limit; it is kept whole in its own segment")
        out.append((_join(sents), round(secs, 3), notes))
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "job"


def expand_job(job: dict) -> list[dict] | None:
    """Sub-jobs of a job that asks to be split, or None when it is rendered whole.

    ``job`` is ``{"id": str, "workflow": shipped name, API JSON path or API dict, "set":
    {"Title.input": value}, ...}``. It is split when it asks to (`split_limit`) and its workflow
    has exactly one Direct Script node (`NARRATION_CLASS`: "Narration" in the direct workflow,
    "Story" in the story workflow) with a narration value, and exactly one Video Combine node.
    The narration is grouped by `group_sentences` with the node's own language and
    words_per_second; one group means no split (None).

    Each sub-job is a copy of the job without the split keys, with id ``<id>.<k>`` (k from 0),
    the group as the narration, ``Video Combine.filename_prefix`` set to
    ``<prefix>_<id>_part<kkk>`` so the sub-jobs' files never collide, and a ``"segment"`` entry
    ``{"parent", "index", "count", "text", "estimated_seconds", "notes"}``. Notes (a sentence over
    the limit) are also logged.

    A workflow that cannot be read also gives None, so the job fails alone, with the renderer's
    own message, as it would unsplit.

    Raises:
        SplitError: a bad split limit (a malformed job: refused before anything renders).
    """
    limit = split_limit(job)
    if limit is None:
        return None
    try:
        workflow = _workflow_of(job)
    except (OSError, ValueError, RuntimeError):
        return None  # rendered whole: the renderer reports the workflow's error as this job's
    script_id, combine_id = _single_node(workflow, NARRATION_CLASS), _single_node(workflow, COMBINE_CLASS)
    if script_id is None or combine_id is None:
        return None
    inputs, keys = _effective_inputs(workflow, job.get("set") or {})
    narration = inputs[script_id].get("narration")
    if not isinstance(narration, str) or not narration.strip():
        return None
    language = inputs[script_id].get("language") or ""
    try:
        wps = float(inputs[script_id].get("words_per_second") or DEFAULT_WORDS_PER_SECOND)
    except (TypeError, ValueError):
        wps = DEFAULT_WORDS_PER_SECOND
    if wps <= 0:
        wps = DEFAULT_WORDS_PER_SECOND  # the Direct Script node itself reports this value
    groups = group_sentences(narration, limit, str(language), wps)
    if len(groups) < 2:
        return None

    def title_key(nid: str, name: str) -> str:
        return keys.get((nid, name)) or \
            f"{(workflow[nid].get('_meta') or {}).get('title') or nid}.{name}"

    narration_key, prefix_key = title_key(script_id, "narration"), title_key(combine_id, "filename_prefix")
    prefix = str(inputs[combine_id].get("filename_prefix") or "SpinBot/video")
    job_id = str(job.get("id", "job"))
    base = {k: v for k, v in job.items() if k not in SPLIT_KEYS}
    others = {k: v for k, v in (job.get("set") or {}).items() if k not in (narration_key, prefix_key)}
    subs = []
    for k, (text, seconds, notes) in enumerate(groups):
        for note in notes:
            log.warning("job %s segment %d: %s", job_id, k, note)
        sub = copy.deepcopy(base)
        sub["id"] = f"{job_id}.{k}"
        sub["set"] = {**copy.deepcopy(others), narration_key: text,
                      prefix_key: f"{prefix}_{_safe(job_id)}_part{k:03d}"}
        sub["segment"] = {"parent": job_id, "index": k, "count": len(groups), "text": text,
                          "estimated_seconds": seconds, "notes": notes}
        subs.append(sub)
    return subs


# --------------------------------------------------------------------------- stitching

def read_audio(path: str) -> tuple[Any, int]:
    """The audio track of an MP4 as float32 PCM ``[C,T]`` and its rate, sample-exact.

    Decoded frames are placed at their timestamps (relative to the stream's start) and the
    result is cut to the stream's duration as the demuxer reports it from the MP4 edit list: the
    decoder already drops the AAC encoder's priming samples (the edit list's media time), and the
    padding that fills the last 1024-sample AAC frame lies past that duration. Without a duration
    the decoded length is used.

    Raises:
        StitchError: no audio track.
    """
    import av
    import numpy as np

    with av.open(path) as container:
        if not container.streams.audio:
            raise StitchError(f"{os.path.basename(path)} has no audio track; segments are joined "
                              "on their audio clock")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        channels = stream.codec_context.channels
        origin = stream.start_time or 0
        total = None
        if stream.duration is not None and stream.time_base is not None:
            total = int(round(Fraction(stream.duration) * stream.time_base * rate))
        pieces: list[tuple[int, Any]] = []
        position, end = 0, 0
        resampler = None
        for frame in container.decode(stream):
            if frame.pts is not None:
                position = int(round(Fraction(frame.pts - origin) * frame.time_base * rate))
            if frame.format.name != "fltp":
                resampler = resampler or av.AudioResampler(format="fltp")
                arrays = [f.to_ndarray() for f in resampler.resample(frame)]
                data = np.concatenate(arrays, axis=1) if arrays else np.zeros((channels, 0))
            else:
                data = frame.to_ndarray()
            pieces.append((position, data.astype(np.float32, copy=False)))
            position += data.shape[1]
            end = max(end, position)
    total = end if total is None else total
    pcm = np.zeros((channels, max(total, 0)), dtype=np.float32)
    for at, data in pieces:
        a, b = max(at, 0), min(at + data.shape[1], total)
        if b > a:
            pcm[:, a:b] = data[:, a - at:b - at]
    return pcm, rate


def read_cues(path: str) -> list:
    """The mov_text cues of an MP4 as `video.subtitles.Cue` (seconds), empty gap samples skipped."""
    import av

    from ..video.subtitles import Cue

    cues = []
    with av.open(path) as container:
        if not container.streams.subtitles:
            return cues
        stream = container.streams.subtitles[0]
        for packet in container.demux(stream):
            raw = bytes(packet)
            if packet.pts is None or len(raw) < 2:
                continue
            size = int.from_bytes(raw[:2], "big")
            if size == 0:
                continue
            start = float(packet.pts * stream.time_base)
            end = float((packet.pts + (packet.duration or 0)) * stream.time_base)
            cues.append(Cue(start, end, raw[2:2 + size].decode("utf-8", "replace")))
    return cues


def _video_facts(path: str) -> tuple[Fraction, int, int, dict]:
    import av

    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise StitchError(f"{os.path.basename(path)} is not a readable MP4 ({e})") from None
    with container:
        if not container.streams.video:
            raise StitchError(f"{os.path.basename(path)} has no video track")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise StitchError(f"{os.path.basename(path)}: the video has no frame rate")
        return (Fraction(rate), stream.codec_context.width, stream.codec_context.height,
                dict(container.metadata))


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def frame_boundaries(sample_counts: list[int], rate: int, fps: Fraction) -> list[int]:
    """Frame index at which each segment starts, plus the total: ``len(sample_counts) + 1`` ints.

    Segment ``k`` starts at sample ``S_k`` (the sum of the counts before it) on the global audio
    clock, so at frame ``round(S_k * fps / rate)`` (half up), exactly, in rationals: no error
    accumulates over segments. The last boundary is ``ceil(S_N * fps / rate)``: the pack's "pad
    video with last frame" policy, so the picture lasts until the speech ends.
    """
    bounds, total = [], 0
    for count in sample_counts:
        bounds.append(_round_half_up(Fraction(total) * fps / rate))
        total += count
    bounds.append(math.ceil(Fraction(total) * fps / rate))
    return bounds


def _segment_frames(paths: list[str], counts: list[int], width: int, height: int,
                    used: list[int]) -> Iterator[Any]:
    """uint8 ``[n,H,W,3]`` batches: ``counts[k]`` frames of segment ``k`` (its own frames in
    order, its last frame held if it has too few); ``used[k]`` gets how many it really had (up to
    the count + 1, enough to tell dropped from held)."""
    import av
    import numpy as np

    for path, count in zip(paths, counts):
        batch: list = []
        last = None
        had = 0
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                had += 1
                if had > count:
                    break  # frames past the segment's share of the clock are dropped
                last = frame.to_ndarray(format="rgb24")
                if last.shape[:2] != (height, width):
                    raise StitchError(f"{os.path.basename(path)}: a frame of {last.shape[1]}x"
                                      f"{last.shape[0]} in a {width}x{height} video")
                batch.append(last)
                if len(batch) == _BATCH:
                    yield np.stack(batch)
                    batch = []
        if batch:
            yield np.stack(batch)
        done = min(had, count)
        used.append(had)
        if done < count:
            if last is None:
                raise StitchError(f"{os.path.basename(path)} has no video frames")
            missing = count - done
            while missing > 0:  # hold the last frame for the rest of the segment's audio
                n = min(missing, _BATCH)
                yield np.broadcast_to(last, (n, *last.shape))
                missing -= n


def _encode_settings(job: dict) -> tuple[int, str, str]:
    """crf, preset and audio bitrate of the job's Video Combine (its workflow and ``set``),
    overridden by the job's ``stitch_crf`` / ``stitch_preset``; Video Combine's defaults else."""
    crf, preset, bitrate = 19, "medium", "192k"
    try:
        workflow = _workflow_of(job)
        combine_id = _single_node(workflow, COMBINE_CLASS)
        if combine_id is not None:
            inputs, _ = _effective_inputs(workflow, job.get("set") or {})
            values = inputs[combine_id]
            crf = int(values.get("crf", crf))
            preset = str(values.get("preset", preset))
            bitrate = str(values.get("audio_bitrate", bitrate))
    except (OSError, ValueError, RuntimeError, TypeError):
        pass  # no readable workflow: the encoder's defaults
    crf = int(job.get("stitch_crf", crf))
    preset = str(job.get("stitch_preset", preset))
    return crf, preset, bitrate


def stitch(job: dict, sub_outputs: list[str], out_path: str) -> str:
    """Join the sub-jobs' MP4s (in order) into ``out_path`` on one audio clock; returns the path.

    Audio: each segment's track decoded sample-exactly (`read_audio`) and concatenated, so
    segment ``k`` starts at ``start_k`` = the samples before it / rate. Video: segment ``k`` gets
    exactly ``frame_boundaries()[k+1] - frame_boundaries()[k]`` of its own frames (last ones
    dropped, or the last held), so every join lies within half a frame of its audio boundary and
    the video ends within one frame after the audio (never before). Encoded once by
    `video.encode.mux_mp4` with the job's Video Combine crf/preset/bitrate, batch by batch (only a
    few frames in memory); the audio is not renormalised (Video Combine normalised each segment).
    Subtitles: each segment's mov_text cues, clipped to its audio span, shifted by ``start_k``.
    Metadata: the first segment's (ComfyUI's ``prompt``/``workflow`` and the pack's own keys) plus
    `SEGMENTS_METADATA_KEY`, a JSON list of ``{index, source, start, end, samples, first_frame,
    frames, text}`` (seconds on the audio clock; text when the job re-splits to as many groups). Written to a partial file and renamed: on any error nothing
    is left at ``out_path``.

    Raises:
        StitchError: no segments, a missing or unreadable file, a segment without audio or
            video, or segments whose frame size, frame rate or sample rate differ.
    """
    import numpy as np

    from ..video.encode import fps_fraction, mux_mp4
    from ..video.subtitles import Cue, clip_cues

    paths = [os.fspath(p) for p in sub_outputs]
    if not paths:
        raise StitchError(f"job {job.get('id')!r}: no segment files to stitch")
    for p in paths:
        if not os.path.isfile(p):
            raise StitchError(f"job {job.get('id')!r}: segment file {p} does not exist")

    facts = [_video_facts(p) for p in paths]
    fps, width, height, metadata = facts[0]
    for p, (f, w, h, _m) in zip(paths[1:], facts[1:]):
        if (w, h) != (width, height):
            raise StitchError(f"{os.path.basename(p)} is {w}x{h}, the first segment "
                              f"{width}x{height}: segments must share one frame size")
        if f != fps:
            raise StitchError(f"{os.path.basename(p)} runs at {float(f):g} fps, the first segment "
                              f"at {float(fps):g} fps: segments must share one frame rate")
    fps = fps_fraction(float(fps))  # the rate mux_mp4 will write

    audios = [read_audio(p) for p in paths]
    rate = audios[0][1]
    for p, (_pcm, r) in zip(paths[1:], audios[1:]):
        if r != rate:
            raise StitchError(f"{os.path.basename(p)} has {r} Hz audio, the first segment {rate} Hz")
    channels = max(pcm.shape[0] for pcm, _ in audios)
    counts = [pcm.shape[1] for pcm, _ in audios]
    bounds = frame_boundaries(counts, rate, fps)
    frames = [b - a for a, b in zip(bounds, bounds[1:])]
    starts = [sum(counts[:k]) for k in range(len(counts))]

    wave = np.zeros((channels, sum(counts)), dtype=np.float32)
    for (pcm, _r), at in zip(audios, starts):
        # a mono segment among stereo ones plays on both channels
        wave[:, at:at + pcm.shape[1]] = pcm if pcm.shape[0] == channels else pcm[:1]
    del audios

    cues: list = []
    for p, at, count in zip(paths, starts, counts):
        shift = at / rate
        for cue in clip_cues(read_cues(p), count / rate):
            cues.append(Cue(cue.start + shift, cue.end + shift, cue.text))

    texts = [None] * len(paths)
    try:
        subs = expand_job(job)
        if subs and len(subs) == len(paths):
            texts = [s["segment"]["text"] for s in subs]
    except (OSError, ValueError, RuntimeError):
        pass  # the texts are informative only

    used: list[int] = []
    crf, preset, bitrate = _encode_settings(job)
    meta = {k: v for k, v in metadata.items() if k not in _MUXER_TAGS}
    listing = [{"index": k, "source": os.path.basename(p), "start": round(at / rate, 6),
                "end": round((at + n) / rate, 6), "samples": n, "first_frame": bounds[k],
                "frames": frames[k], "text": texts[k]}
               for k, (p, at, n) in enumerate(zip(paths, starts, counts))]
    meta[SEGMENTS_METADATA_KEY] = json.dumps(listing)
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    written = mux_mp4(out_path, _segment_frames(paths, frames, width, height, used),
                      float(fps), width, height, audio=(wave, rate), cues=cues or None,
                      crf=crf, preset=preset, audio_bitrate=bitrate, metadata=meta)
    for k, had in enumerate(used):
        if abs(had - frames[k]) > 1 and had <= frames[k]:
            log.warning("job %s: segment %d had %d frames for %d on the audio clock; its last "
                        "frame was held", job.get("id"), k, had, frames[k])
    log.info("job %s: stitched %d segments, %d frames, %.3fs of audio -> %s", job.get("id"),
             len(paths), written, wave.shape[1] / rate, out_path)
    return out_path
