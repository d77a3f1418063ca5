"""Transitions at segment boundaries of a stored video, keeping its length and clock.

Design (length-preserving, so audio and segments never move): around each boundary b (the first
frame of the incoming segment, `timing.boundaries`) a window of ``duration_seconds`` is centred.
Frame i's centre lies ``x = i + 0.5 - b`` frames from the boundary; with half-window h frames:

* crossfade: ``out = (1 - a) * A(i) + a * B(i)`` with ``a = (x + h) / 2h`` clamped to 0..1, where
  ``A(i)`` is the outgoing clip's frame (its last frame ``b-1`` held for i >= b: the clip has
  ended) and ``B(i)`` the incoming clip's frame (its first frame ``b`` held for i < b: it has
  not begun). Frames b-1 and b are close to half-and-half; the blend is linear in time.
* fade through black: ``out = g * frame(i)`` with ``g = (|x| - 0.5) / (h - 0.5)`` clamped to 0..1:
  frames b-1 and b are black, the picture fades out before and in after.
* cut: nothing changes (the input video is returned).

Frames with ``a`` in {0, 1} (``g = 1``) are the input's bytes. Boundaries closer than the window
(or to the video's ends) shrink their window so no frame belongs to two windows: each boundary
gets at most half of a segment it shares with another boundary, or all of a first/last segment;
the report lists shrunk windows.

Chunk by chunk: a stored chunk with no frame in a window is referenced by the output (no byte
copied, like `store.concat_videos`). A chunk holding window frames is rewritten whole, as its own
one-chunk stored video keyed by its content and the transition, because a `Chunk` references a
whole file and cannot point into part of one: its untouched frames are stream-copied with it.
A re-run finds those rewritten chunks stored and does no work.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .. import metrics, runtime
from ..media import MediaError
from ..script.segments import Segment
from ..video.store import Chunk, SpinBotVideo, VideoWriter, content_key, load_video
from .timing import boundaries

TRANSITIONS = ("crossfade", "cut", "fade through black")


@dataclass(frozen=True)
class Window:
    """One boundary's transition: ``boundary`` frame, half-width ``half`` in frames (after any
    shrinking) and the frames ``first..stop-1`` it changes."""

    boundary: int
    half: float
    first: int
    stop: int


def plan_windows(cuts: list[int], total: int, half: float) -> tuple[list[Window], list[str]]:
    """Windows for the inner boundaries of ``cuts`` (from `timing.boundaries`) in a video of
    ``total`` frames, each ``half`` frames wide on either side before shrinking.

    Returns ``(windows, notes)``: boundaries at the video's ends or repeated (0-frame segments)
    are skipped; ``notes`` says which windows shrank and why."""
    inner = sorted({b for b in cuts if 0 < b < total})
    windows, notes = [], []
    for k, b in enumerate(inner):
        prev = inner[k - 1] if k else 0
        nxt = inner[k + 1] if k + 1 < len(inner) else total
        # A segment between two boundaries is shared: each gets half of it.
        left = (b - prev) / 2 if k else float(b - prev)
        right = (nxt - b) / 2 if k + 1 < len(inner) else float(nxt - b)
        h = min(half, left, right)
        if h < half - 1e-9:
            notes.append(f"window at frame {b} shrunk to {2 * h:g} frames (a neighbouring "
                         f"segment has only {min(b - prev, nxt - b)} frames)")
        i = np.arange(max(0, math.floor(b - h) - 1), min(total, math.ceil(b + h) + 1))
        x = i + 0.5 - b
        # Both blends leave a frame as it is exactly when |x| >= h.
        changed = i[np.abs(x) < h - 1e-9]
        if len(changed):
            windows.append(Window(b, h, int(changed[0]), int(changed[-1]) + 1))
        else:  # no frame centre lies inside a window of 1 frame or less
            notes.append(f"boundary at frame {b}: a {2 * h:g}-frame window changes no frame, "
                         "so it stays a cut (give it more than 1 frame)")
    return windows, notes


def blend(frames: np.ndarray, first: int, window: Window, transition: str,
          held_a: np.ndarray | None, held_b: np.ndarray | None) -> np.ndarray:
    """Apply ``window`` to ``frames`` (uint8 ``[n,H,W,3]``, frame numbers ``first..``), in place
    where it changes frames; returns ``frames``. ``held_a``/``held_b`` are frames b-1 and b
    (a crossfade needs them; a fade through black takes None).

    Blends in float32, all of the window's frames in this batch at once, and rounds half up
    (``floor(v + 0.5)``)."""
    lo, hi = max(first, window.first), min(first + len(frames), window.stop)
    if hi <= lo:
        return frames
    b, h = window.boundary, window.half
    x = np.arange(lo, hi, dtype=np.float64) + 0.5 - b
    cur = frames[lo - first:hi - first].astype(np.float32)
    if transition == "crossfade":
        a = np.clip((x + h) / (2 * h), 0.0, 1.0).astype(np.float32)[:, None, None, None]
        split = int(np.count_nonzero(x < 0))  # frames before the boundary come first
        # Before b the incoming clip's first frame fades in over the outgoing frames; from b on
        # the outgoing clip's last frame fades out over the incoming ones.
        before, after = cur[:split], cur[split:]
        before += a[:split] * (held_b.astype(np.float32) - before)
        out_after = held_a.astype(np.float32)[None] + a[split:] * (after - held_a[None])
        cur[split:] = out_after
    else:  # fade through black
        g = (np.clip((np.abs(x) - 0.5) / (h - 0.5), 0.0, 1.0) if h > 0.5
             else np.zeros_like(x)).astype(np.float32)
        cur *= g[:, None, None, None]
    cur += np.float32(0.5)
    np.floor(cur, out=cur)
    np.clip(cur, 0, 255, out=cur)
    frames[lo - first:hi - first] = cur.astype(np.uint8)
    return frames


def apply_transitions(video: SpinBotVideo, transition: str, duration_seconds: float,
                      segments=None) -> tuple[SpinBotVideo, str]:
    """``video`` with ``transition`` at its segment boundaries (``segments``, else the video's
    own), same frame count, fps, audio and segments. See the module docstring for the blend.

    Returns ``(video, report)``. Raises MediaError for an unknown transition, a negative or
    non-finite duration, a segment without a start time, a video whose frames are gone from the
    store; `runtime.Interrupted` (or ComfyUI's) on Cancel, leaving no half-written chunk."""
    if transition not in TRANSITIONS:
        raise MediaError(f"unknown transition {transition!r}; choose one of "
                         f"{', '.join(TRANSITIONS)}")
    duration = float(duration_seconds)
    if not (math.isfinite(duration) and duration >= 0):
        raise MediaError(f"duration_seconds must be 0 or more, got {duration_seconds}")
    starts = segment_starts(segments if segments is not None else video.segments)
    total, fps = video.frame_count, video.fps
    head = f"Transitions ({transition}, {duration:g} s) on {video.describe()}"
    if len(starts) < 2:
        return video, f"{head}: no segment boundaries, video unchanged"
    cuts = boundaries(starts, fps, total)
    if transition == "cut" or duration == 0:
        return video, f"{head}: cuts at frames {cuts[1:-1]}, video unchanged"
    windows, notes = plan_windows(cuts, total, duration * fps / 2)
    for k, start in enumerate(starts[1:], start=1):
        # `boundaries` clamps these silently; say which segments lost their boundary and why.
        wanted = round(start * fps)
        if wanted >= total:
            notes.append(f"segment {k} starts at {start:g} s, at or after the video's end "
                         f"({total / fps:.2f} s): no transition there")
        elif wanted < cuts[k - 1]:
            notes.append(f"segment {k} starts at {start:g} s, before segment {k - 1}'s start "
                         "(out of order): no transition there")
    video.check()
    offsets = np.cumsum([0] + [c.count for c in video.chunks])
    base = content_key("scene_transition", 1, video.key, fps, video.width, video.height,
                       [(c.path, c.count) for c in video.chunks], transition,
                       [(w.boundary, w.half) for w in windows])
    chunks: list[Chunk] = []
    patches: list[SpinBotVideo] = []  # kept alive until the output handle holds their folders
    rewritten = blended = 0
    started = time.perf_counter()
    touched_total = sum(int(offsets[k + 1] - offsets[k]) for k, _c in enumerate(video.chunks)
                        if _hits(windows, offsets[k], offsets[k + 1]))
    with runtime.Progress(max(touched_total, 1), "SpinBot Transitions") as progress:
        for k, chunk in enumerate(video.chunks):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            hits = _hits(windows, lo, hi)
            if not hits:
                chunks.append(chunk)
                continue
            runtime.check_interrupted()
            key = content_key(base, k)
            patch = load_video(key)
            if patch is None:
                frames = np.array(video.read(lo, hi), copy=True)
                for w in hits:
                    # Only a crossfade needs frames b-1 and b (held by the side that has ended).
                    held = (video.read(w.boundary - 1, w.boundary + 1)
                            if transition == "crossfade" else (None, None))
                    blend(frames, lo, w, transition, held[0], held[1])
                with VideoWriter(key, fps, chunk_frames=len(frames)) as writer:
                    writer.write(frames)
                    runtime.check_interrupted()
                    patch = writer.finish(extra={"stage": "transition", "source": chunk.path})
                rewritten += 1
                blended += sum(min(hi, w.stop) - max(lo, w.first) for w in hits)
            if len(patch.chunks) != 1 or patch.chunks[0].count != chunk.count:
                raise MediaError(f"stored transition chunk {key} does not match its source")
            patches.append(patch)
            chunks.append(patch.chunks[0])
            progress.update(hi - lo)
    metrics.add_frames(blended)
    out = SpinBotVideo(fps=fps, width=video.width, height=video.height, chunks=tuple(chunks),
                       audio=video.audio, segments=video.segments,
                       key=content_key(base, "out"), extra={"stage": "transition"})
    del patches
    lines = [head, f"  boundaries at frames {sorted({b for b in cuts if 0 < b < total})}, "
             f"{duration * fps:g} frames per window"]
    lines += [f"  {n}" for n in notes]
    replaced = sum(1 for c in chunks if c not in video.chunks)
    lines.append(f"  {replaced} of {len(chunks)} stored chunks rewritten (frames outside the "
                 f"windows in them copied), {len(chunks) - replaced} referenced unchanged")
    if rewritten:
        took = time.perf_counter() - started
        lines.append(f"  blended {blended} frames in {took:.2f} s")
    elif replaced:
        lines.append("  reused the stored rewritten chunks (same video and settings)")
    return out, "\n".join(lines)


def segment_starts(segments) -> list[float]:
    """Start times (seconds) of SPINBOT_SEGMENTS or a video's segment dicts; only ``start`` is
    needed, so dicts written by any stage work. Raises MediaError for an entry without a finite
    start."""
    starts = []
    for k, item in enumerate(segments or ()):
        try:
            start = float(item.start if isinstance(item, Segment) else item["start"])
        except (KeyError, TypeError, ValueError):
            start = math.nan
        if not math.isfinite(start):
            raise MediaError(f"segment {k} has no usable start time: {item!r}")
        starts.append(start)
    return starts


def _hits(windows: list[Window], lo: int, hi: int) -> list[Window]:
    """The windows that change a frame in ``lo..hi-1``."""
    return [w for w in windows if w.first < hi and w.stop > lo]
