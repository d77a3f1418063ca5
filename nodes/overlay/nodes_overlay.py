"""Overlay nodes: SpinBot Text Overlay (text over a SPINBOT_VIDEO) and SpinBot Title Card (a card
video of its own). Both draw with `text.render_text` and report what they drew."""
from __future__ import annotations

import math
import re
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .. import metrics, runtime
from ..media import images_to_uint8
from ..script.segments import SEGMENTS_TYPE, Segment, coerce_segments
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo, content_key, load_video, write_video
from .text import (DEFAULT_FONT, POSITIONS, OverlayError, TextEvent, TextStyle, font_label,
                   font_path, frame_range, list_fonts, missing_note, overlay_frames,
                   parse_color, render_text, touches)

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/overlay"
TIMINGS = ("whole video", "per segment")
# Bumped when the drawing changes, so stored results of an older pack are not reused.
_RENDER_VERSION = 2  # 2: ZWNJ kept; fades shortened to fit the text
_BATCH = 16  # frames per batch of a title card (a card's frames are generated, not read)


# --------------------------------------------------------------------------- inputs

def _text_inputs(whole: str) -> dict[str, tuple]:
    """The text options shared by both nodes, in the order the UI shows them."""
    fonts = list_fonts()
    return {
        "text": ("STRING", {"multiline": True, "default": "", "tooltip":
                 "The quote or title. Line breaks are kept; long lines wrap to 'wrap_width'. With "
                 "timing 'per segment', blocks separated by a blank line are shown one per "
                 "segment, in order."}),
        "font": (fonts, {"default": DEFAULT_FONT, "tooltip":
                 "'default' is DejaVu Sans Bold, bundled with the pack (Latin, Greek, Cyrillic; "
                 "no CJK). Other choices are the .ttf/.otf/.ttc files in ComfyUI's models/fonts "
                 "folder. Characters the font cannot draw are left out and listed in the report."}),
        "font_size": ("FLOAT", {"default": 0.07, "min": 0.005, "max": 1.0, "step": 0.005,
                                "tooltip": "Font size as a fraction of the frame height (0.07 of "
                                           "1080 px is 76 px)."}),
        "wrap_width": ("FLOAT", {"default": 0.8, "min": 0.05, "max": 1.0, "step": 0.01,
                                 "tooltip": "Widest line as a fraction of the frame width, outline "
                                            "and shadow included; longer lines wrap (CJK text "
                                            "between characters)."}),
        "position": (list(POSITIONS), {"default": "center", "tooltip":
                     "Where the text block sits: centred, near the top or bottom edge (6 % "
                     "margin), or starting two thirds down ('lower third')."}),
        "color": ("STRING", {"default": "#ffffff", "tooltip":
                  "Text colour: '#rrggbb', a name such as 'white' or 'r,g,b'."}),
        "outline": ("FLOAT", {"default": 0.06, "min": 0.0, "max": 0.5, "step": 0.01, "tooltip":
                    "Outline width as a fraction of the font size (0 = no outline); colour "
                    "'outline_color'."}),
        "shadow": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 0.5, "step": 0.01, "tooltip":
                   "Soft drop shadow offset (down and right) as a fraction of the font size "
                   "(0 = no shadow)."}),
        "fade_in_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 600.0, "step": 0.05,
                                      "tooltip": "The text fades in over this long from its "
                                                 "start (per segment: from each segment's "
                                                 "start)."}),
        "fade_out_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 600.0, "step": 0.05,
                                       "tooltip": "The text fades out over this long before its "
                                                  "end."}),
        "start_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.05,
                                    "tooltip": f"When the text appears on the {whole}'s clock "
                                               "(timing 'whole video' only)."}),
        "end_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.05,
                                  "tooltip": f"When the text disappears; 0 = at the end of the "
                                             f"{whole} (timing 'whole video' only)."}),
        "timing": (list(TIMINGS), {"default": TIMINGS[0], "tooltip":
                   "'whole video': the text from start_seconds to end_seconds. 'per segment': "
                   "text blocks (separated by a blank line) shown one per segment, during that "
                   "segment, each with its own fades; needs 'segments' or a video that carries "
                   "them."}),
    }


def _optional_inputs() -> dict[str, tuple]:
    return {
        "segments": (SEGMENTS_TYPE, {"tooltip": "Segment timings for timing 'per segment' "
                                                "(default: the video's own segments)."}),
        "outline_color": ("STRING", {"default": "#000000", "tooltip":
                          "Outline colour: '#rrggbb', a name or 'r,g,b'."}),
    }


def _style(font_size: float, wrap_width: float, position: str, color: str, outline: float,
           shadow: float, outline_color: str) -> TextStyle:
    style = TextStyle(font_size=float(font_size), wrap_width=float(wrap_width), position=position,
                      color=parse_color(color, "color"), outline=float(outline),
                      shadow=float(shadow), outline_color=parse_color(outline_color,
                                                                      "outline_color"))
    style.check()
    return style


def _font_stamp(font: str) -> str:
    try:
        return runtime.file_stamp(font_path(font))
    except OverlayError:
        return font


def _check_seconds(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise OverlayError(f"{name} must be a finite number of seconds >= 0, got {value}")


# --------------------------------------------------------------------------- planning

def split_blocks(text: str) -> list[str]:
    """Text blocks separated by one or more blank lines (whitespace-only lines count as blank),
    each stripped; empty blocks are dropped."""
    # [^\S\n]: any whitespace but a line break, so a line of no-break spaces (pasted from the web)
    # or ideographic spaces is blank too.
    blocks = re.split(r"\n[^\S\n]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return [b.strip() for b in blocks if b.strip()]


def plan_events(text: str, timing: str, start_seconds: float, end_seconds: float,
                fade_in: float, fade_out: float, fps: float, frame_count: int, width: int,
                height: int, style: TextStyle, font_file: str,
                segments: Sequence[Segment] | None) -> tuple[list[TextEvent], list[str]]:
    """The text events of one overlay and report notes about what will not be shown.

    'whole video': one event on frames ``round(start x fps)`` .. ``round(end x fps)`` (end 0: to
    the last frame). 'per segment': block k of `split_blocks` on segment k's frames
    ``round(start_k x fps)`` .. ``round(end_k x fps)``.

    Raises:
        OverlayError: a negative or non-finite time, end before start, an unknown timing, or
            'per segment' without segments.
    """
    _check_seconds(start_seconds=start_seconds, end_seconds=end_seconds,
                   fade_in_seconds=fade_in, fade_out_seconds=fade_out)
    if timing not in TIMINGS:
        raise OverlayError(f"timing must be one of {', '.join(TIMINGS)}; got {timing!r}")
    notes: list[str] = []
    if timing == "whole video":
        if end_seconds and end_seconds <= start_seconds:
            raise OverlayError(f"end_seconds ({end_seconds:g}) must be after start_seconds "
                               f"({start_seconds:g}), or 0 for the end of the video")
        first, last = frame_range(start_seconds, end_seconds or frame_count / fps, fps,
                                  frame_count)
        if end_seconds == 0:
            last = frame_count
        if first >= last:
            notes.append(f"the text is not shown: start_seconds {start_seconds:g} is at or after "
                         f"the end ({frame_count / fps:.2f} s)")
            return [], notes
        rendered = render_text(text.strip(), width, height, style, font_file)
        return [TextEvent(rendered, first, last, fade_in, fade_out, fps)], notes
    segs = tuple(segments or ())
    if not segs:
        raise OverlayError("timing 'per segment' needs segments: connect 'segments' or use a "
                           "video that carries them (from the voice or script stage)")
    blocks = split_blocks(text)
    if len(blocks) != len(segs):
        notes.append(f"per segment: {len(blocks)} text block(s) for {len(segs)} segment(s); "
                     + ("the extra blocks are not shown" if len(blocks) > len(segs) else
                        "the segments without a block show no text"))
    events = []
    for k, (block, seg) in enumerate(zip(blocks, segs)):
        first, last = frame_range(seg.start, seg.end, fps, frame_count)
        if first >= last:
            notes.append(f"block {k + 1} is not shown: segment {k + 1} ({seg.start:.2f}-"
                         f"{seg.end:.2f} s) has no frames in this {frame_count / fps:.2f} s video")
            continue
        events.append(TextEvent(render_text(block, width, height, style, font_file), first, last,
                                fade_in, fade_out, fps))
        if len(events) > 1 and events[-2].last > first >= events[-2].first:
            notes.append(f"blocks {k} and {k + 1} are drawn over each other on frames {first}-"
                         f"{min(last, events[-2].last) - 1}: their segments overlap")
    return events, notes


def describe(events: Sequence[TextEvent], notes: Sequence[str], font_file: str,
             fps: float) -> list[str]:
    """Report lines: font and size, each text's lines, box and timing, glyphs and emoji left
    out, lines that did not fit, and ``notes``."""
    lines = []
    if events:
        lines.append(f"font {font_label(font_file)}, {events[0].text.size_px} px")
    missing: dict[str, None] = {}
    emoji = False
    for k, e in enumerate(events, start=1):
        r = e.text
        missing.update(dict.fromkeys(r.missing))
        emoji |= r.had_emoji
        fade_in, fade_out = e.fade_frames()
        when = (f"frames {e.first}-{e.last - 1} ({e.first / fps:.2f}-{e.last / fps:.2f} s), "
                f"fade in {fade_in / fps:g} s, fade out {fade_out / fps:g} s")
        if fade_in + fade_out < (e.fade_in + e.fade_out) * fps - 1e-6:
            when += (f" (fades of {e.fade_in:g} + {e.fade_out:g} s shortened to fit the "
                     f"{(e.last - e.first) / fps:.2f} s the text is shown)")
        if r.empty:
            lines.append(f"text {k}: nothing drawable ({when})")
            continue
        x0, y0, x1, y1 = r.box
        drawn = " | ".join(r.lines)
        lines.append(f"text {k}: {len(r.lines)} line(s) drawn \"{drawn}\"; box x {x0}-{x1 - 1}, "
                     f"y {y0}-{y1 - 1}; {when}")
        if r.dropped:
            lines.append(f"text {k}: {len(r.dropped)} line(s) did not fit the frame height and "
                         "are left out (lower font_size)")
    if missing:
        lines.append(missing_note(tuple(missing), font_file))
    else:
        lines.append("glyphs left out: none")
    if emoji:
        lines.append("emoji are left out (no outline font draws colour emoji)")
    return lines + list(notes)


# --------------------------------------------------------------------------- video

def overlay_video(video: SpinBotVideo, events: Sequence[TextEvent], key: str,
                  desc: str = "SpinBot Text Overlay") -> tuple[SpinBotVideo, int, int]:
    """``video`` with the events drawn, streamed chunk by chunk into the store.

    Runs of stored chunks that some event touches are rendered into a stored video keyed by
    ``key`` and the run (so a re-run reuses them); untouched chunks are referenced, not copied.
    The result keeps ``video``'s fps, audio and segments. Returns (video, frames rendered,
    frames referenced). Nothing to draw returns ``video`` itself.
    """
    total = video.frame_count
    if not touches(events, 0, total):
        return video, 0, total
    video.check()
    spans, offset = [], 0
    for chunk in video.chunks:
        spans.append((offset, offset + chunk.count))
        offset += chunk.count
    runs: list[list[int]] = []
    for ci, (lo, hi) in enumerate(spans):
        if touches(events, lo, hi):
            if runs and runs[-1][-1] == ci - 1:
                runs[-1].append(ci)
            else:
                runs.append([ci])
    touched = {ci for run in runs for ci in run}
    out_chunks = []
    rendered = 0
    with runtime.Progress(total, desc) as progress:
        def frames_of(run: list[int]) -> Iterator[np.ndarray]:
            for ci in run:
                lo, hi = spans[ci]
                batch = overlay_frames(video.read(lo, hi), lo, events)
                progress.update(hi - lo)
                yield batch

        for ci, chunk in enumerate(video.chunks):
            if ci not in touched:
                out_chunks.append(chunk)
                progress.update(chunk.count)
                continue
            run = next(r for r in runs if r[0] <= ci <= r[-1])
            if ci != run[0]:
                continue  # written with its run
            lo, hi = spans[run[0]][0], spans[run[-1]][1]
            piece = write_video(content_key(key, "frames", lo, hi), video.fps, frames_of(run))
            out_chunks.extend(piece.chunks)
            rendered += hi - lo
    metrics.add_frames(rendered)
    result = SpinBotVideo(fps=video.fps, width=video.width, height=video.height,
                          chunks=tuple(out_chunks), audio=video.audio, segments=video.segments,
                          key=key)
    return result, rendered, total - rendered


def _segments_for(segments: Any, video: SpinBotVideo | None) -> tuple[Segment, ...]:
    if segments is not None:
        return coerce_segments(segments)
    if video is not None and video.segments:
        return coerce_segments(video.segments)
    return ()


def _cover(image: torch.Tensor, width: int, height: int) -> np.ndarray:
    """The first IMAGE of ``image`` scaled to cover ``width`` x ``height`` (aspect kept, Lanczos)
    and centre-cropped: uint8 ``[H,W,3]``."""
    frame = images_to_uint8(image[:1], "background")[0]
    h, w = frame.shape[:2]
    scale = max(width / w, height / h)
    size = (max(width, int(math.ceil(w * scale))), max(height, int(math.ceil(h * scale))))
    pil = Image.fromarray(frame)
    if size != (w, h):
        pil = pil.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(pil.crop((left, top, left + width, top + height)), np.uint8)


# --------------------------------------------------------------------------- nodes

_VIDEO_OUT_TIP = ("The video with the text drawn in (same frame count, fps, audio and segments). "
                  "Frames without text are the input's frames, unchanged.")
_REPORT_TIP = ("What was drawn: font and size in px, the lines, their box and frames, glyphs the "
               "font cannot draw (left out, never drawn as boxes).")


class SpinBotTextOverlay:
    DESCRIPTION = ("Draws a quote or title over a SPINBOT_VIDEO: a font file or the bundled one, size "
                   "and wrap width relative to the frame, position, colour, outline, soft shadow, "
                   "fade in/out, start/end times or one text block per segment. The text is "
                   "rendered once and blended into each frame, chunk by chunk; chunks without "
                   "text are referenced, not copied. Characters the font cannot draw are left out "
                   "and listed in the report.")
    CATEGORY = CATEGORY
    FUNCTION = "overlay"
    RETURN_TYPES = (VIDEO, "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = (_VIDEO_OUT_TIP, _REPORT_TIP)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"video": (VIDEO_INPUT, {"tooltip": "The video to draw the text on (a "
                                                           "SpinBot video or a core VIDEO)."}),
                         **_text_inputs("video")},
            "optional": _optional_inputs(),
        }

    @classmethod
    def IS_CHANGED(cls, font: str = DEFAULT_FONT, **_inputs):
        # A font file replaced under the same name must not serve the cached result.
        return _font_stamp(font)

    def overlay(self, video: SpinBotVideo, text: str, font: str, font_size: float,
                wrap_width: float, position: str, color: str, outline: float, shadow: float,
                fade_in_seconds: float, fade_out_seconds: float, start_seconds: float,
                end_seconds: float, timing: str, segments: Any = None,
                outline_color: str = "#000000"):
        video = as_spinbot_video(video)
        style = _style(font_size, wrap_width, position, color, outline, shadow, outline_color)
        font_file = font_path(font)
        head = f"SpinBot Text Overlay: {video.describe()}"
        if not text.strip():
            return video, f"{head}\nthe text is empty: the video is passed through unchanged"
        segs = _segments_for(segments, video) if timing == "per segment" else ()
        events, notes = plan_events(text, timing, float(start_seconds), float(end_seconds),
                                    float(fade_in_seconds), float(fade_out_seconds), video.fps,
                                    video.frame_count, video.width, video.height, style,
                                    font_file, segs)
        key = content_key("text_overlay", _RENDER_VERSION, video, text, timing, float(start_seconds),
                          float(end_seconds), float(fade_in_seconds), float(fade_out_seconds),
                          repr(style), runtime.file_stamp(font_file),
                          [s.to_dict() for s in segs])
        out, rendered, kept = overlay_video(video, events, key)
        lines = [head] + describe(events, notes, font_file, video.fps)
        lines.append(f"frames: {rendered} drawn into new chunks, {kept} referenced unchanged"
                     if out is not video else "nothing drawn: the video is passed through")
        return out, "\n".join(lines)


class SpinBotTitleCard:
    DESCRIPTION = ("Makes a title or quote card as a SPINBOT_VIDEO: a solid colour or an IMAGE "
                   "(scaled to cover the frame and centre-cropped) with text on it, with the same "
                   "text options as SpinBot Text Overlay (font, size, wrap, position, outline, "
                   "shadow, fades, start/end or one block per segment). Characters the font cannot "
                   "draw are left out and listed in the report.")
    CATEGORY = CATEGORY
    FUNCTION = "card"
    RETURN_TYPES = (VIDEO, "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = ("The card video (carrying 'segments' when they are connected; no audio).",
                       _REPORT_TIP)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": _text_inputs("card")["text"],
                "width": ("INT", {"default": 1280, "min": 0, "max": 8192, "step": 2, "tooltip":
                                  "Card width in pixels; 0 = the background image's width."}),
                "height": ("INT", {"default": 720, "min": 0, "max": 8192, "step": 2, "tooltip":
                                   "Card height in pixels; 0 = the background image's height."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 1.0,
                                  "tooltip": "Frame rate of the card video."}),
                "duration_seconds": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 3600.0,
                                               "step": 0.1, "tooltip":
                                               "Length of the card; 0 = until the end of the "
                                               "last segment (needs 'segments')."}),
                "background_color": ("STRING", {"default": "#101018", "tooltip":
                                     "Card colour when no background image is connected: "
                                     "'#rrggbb', a name or 'r,g,b'."}),
                **{k: v for k, v in _text_inputs("card").items() if k != "text"},
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "Background picture (the first image of the "
                                                    "batch), scaled to cover the card and "
                                                    "centre-cropped."}),
                **_optional_inputs(),
            },
        }

    @classmethod
    def IS_CHANGED(cls, font: str = DEFAULT_FONT, **_inputs):
        return _font_stamp(font)

    def card(self, text: str, width: int, height: int, fps: float, duration_seconds: float,
             background_color: str, font: str, font_size: float, wrap_width: float,
             position: str, color: str, outline: float, shadow: float, fade_in_seconds: float,
             fade_out_seconds: float, start_seconds: float, end_seconds: float, timing: str,
             background: torch.Tensor | None = None, segments: Any = None,
             outline_color: str = "#000000"):
        style = _style(font_size, wrap_width, position, color, outline, shadow, outline_color)
        font_file = font_path(font)
        fps = float(fps)
        if not (math.isfinite(fps) and fps > 0):
            raise OverlayError(f"fps must be a positive number, got {fps}")
        _check_seconds(duration_seconds=float(duration_seconds))
        segs = coerce_segments(segments) if segments is not None else ()
        notes = []
        if background is not None:
            if background.ndim != 4 or background.shape[0] < 1:
                raise OverlayError(f"background must be an IMAGE [B,H,W,C], got shape "
                                   f"{tuple(background.shape)}")
            width = int(width) or int(background.shape[2])
            height = int(height) or int(background.shape[1])
            if background.shape[0] > 1:
                notes.append(f"background: the first of {background.shape[0]} images is used")
        elif not width or not height:
            raise OverlayError("width and height 0 take the background image's size: connect "
                               "'background' or give a size")
        if width < 2 or height < 2:
            raise OverlayError(f"card size must be at least 2x2 pixels, got {width}x{height}")
        duration = float(duration_seconds)
        if duration == 0:
            if not segs:
                raise OverlayError("duration_seconds 0 means 'until the last segment ends': "
                                   "connect 'segments' or give a duration")
            duration = max(s.end for s in segs)
        frame_count = int(round(duration * fps))
        if frame_count < 1:
            raise OverlayError(f"the card has no frames: {duration:g} s at {fps:g} fps")
        base = (_cover(background, width, height) if background is not None else
                np.broadcast_to(np.array(parse_color(background_color, "background_color"),
                                         np.uint8), (height, width, 3)))
        events, plan_notes = ([], ["the text is empty: a card without text"]) if not text.strip() \
            else plan_events(text, timing, float(start_seconds), float(end_seconds),
                             float(fade_in_seconds), float(fade_out_seconds), fps, frame_count,
                             width, height, style, font_file, segs)
        key = content_key("title_card", _RENDER_VERSION, np.ascontiguousarray(base), fps,
                          frame_count, text, timing, float(start_seconds), float(end_seconds),
                          float(fade_in_seconds), float(fade_out_seconds), repr(style),
                          runtime.file_stamp(font_file), [s.to_dict() for s in segs])
        reused = load_video(key)
        with runtime.Progress(frame_count, "SpinBot Title Card") as progress:
            def batches() -> Iterator[np.ndarray]:
                for lo in range(0, frame_count, _BATCH):
                    n = min(_BATCH, frame_count - lo)
                    yield overlay_frames(np.broadcast_to(base, (n, height, width, 3)), lo, events)
                    progress.update(n)

            out = reused or write_video(key, fps, batches(),
                                        segments=[s.to_dict() for s in segs] or None)
        if reused is None:
            metrics.add_frames(frame_count)
        lines = [f"SpinBot Title Card: {out.describe()}"]
        lines += describe(events, notes + plan_notes, font_file, fps)
        return out, "\n".join(lines)


NODE_CLASS_MAPPINGS = {"SpinBotTextOverlay": SpinBotTextOverlay,
                       "SpinBotTitleCard": SpinBotTitleCard}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotTextOverlay": "SpinBot Text Overlay",
                              "SpinBotTitleCard": "SpinBot Title Card"}
