"""Decode what we encode: stream facts of an MP4, read back with PyAV."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import av
import numpy as np


@dataclass
class Probe:
    video_frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_seconds: float = 0.0
    audio_seconds: float | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio: np.ndarray | None = None
    subtitles: list[tuple[float, float, str]] = field(default_factory=list)  # the first track
    # every subtitle track in stream order: (language tag, [(start, end, text), ...])
    subtitle_tracks: list[tuple[str, list[tuple[float, float, str]]]] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    codecs: list[str] = field(default_factory=list)
    first_frame: np.ndarray | None = None
    last_frame: np.ndarray | None = None


def probe(path: str) -> Probe:
    p = Probe()
    with av.open(path) as c:
        p.metadata = dict(c.metadata)
        p.codecs = [s.codec_context.name for s in c.streams]
        v = c.streams.video[0]
        p.width, p.height = v.codec_context.width, v.codec_context.height
        p.fps = float(v.average_rate)
        for frame in c.decode(v):
            arr = frame.to_ndarray(format="rgb24")
            if p.first_frame is None:
                p.first_frame = arr
            p.last_frame = arr
            p.video_frames += 1
        p.video_seconds = p.video_frames / p.fps
    with av.open(path) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            p.audio_rate = a.codec_context.sample_rate
            planar = av.AudioResampler(format="fltp")
            parts = [o.to_ndarray() for f in c.decode(a) for o in planar.resample(f)]
            p.audio = np.concatenate(parts, axis=1)
            p.audio_channels = p.audio.shape[0]
            p.audio_seconds = float(a.duration * a.time_base)
    with av.open(path) as c:
        tracks = len(c.streams.subtitles)
    for k in range(tracks):  # a container per track: demux reads a file once
        with av.open(path) as c:
            s = c.streams.subtitles[k]
            cues = []
            for packet in c.demux(s):
                raw = bytes(packet)
                if packet.pts is None or len(raw) < 2:
                    continue
                size = int.from_bytes(raw[:2], "big")
                if size == 0:  # an empty sample the muxer puts in gaps
                    continue
                cues.append((float(packet.pts * s.time_base),
                             float((packet.pts + packet.duration) * s.time_base),
                             raw[2:2 + size].decode("utf-8")))
            p.subtitle_tracks.append((s.metadata.get("language", "und"), cues))
    if p.subtitle_tracks:
        p.subtitles = p.subtitle_tracks[0][1]
    return p


def workflow_from(p: Probe) -> dict | None:
    raw = p.metadata.get("workflow")
    return None if raw is None else json.loads(raw)
