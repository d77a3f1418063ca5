"""Subtitle cues: SRT parsing and formatting, and ASS dialogue text for the mov_text encoder."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


class SubtitleError(ValueError):
    pass


_TIME = r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})"
_ARROW = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")


def _seconds(h: str, m: str, s: str, frac: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def parse_srt(text: str) -> list[Cue]:
    """Cues of an SRT (or WebVTT) document, in order. Malformed timing lines are an error."""
    cues: list[Cue] = []
    blocks = re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", "").strip())
    for block in blocks:
        lines = [ln for ln in block.splitlines()]
        idx = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if idx is None:
            if block.strip() and not block.strip().startswith(("WEBVTT", "NOTE", "STYLE")) \
                    and not block.strip().isdigit():
                raise SubtitleError(f"subtitle block without a timing line: {block[:60]!r}")
            continue
        m = _ARROW.match(lines[idx])
        if not m:
            raise SubtitleError(f"bad subtitle timing line: {lines[idx]!r}")
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
        if end <= start:
            raise SubtitleError(f"subtitle ends before it starts: {lines[idx]!r}")
        body = "\n".join(lines[idx + 1:]).strip()
        if body:
            cues.append(Cue(start, end, body))
    return cues


def format_timestamp(seconds: float, sep: str = ",") -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_srt(cues: list[Cue]) -> str:
    return "".join(f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n\n"
                   for i, c in enumerate(cues, start=1))


# The mov_text encoder will not open without an ASS header, although the samples are written
# directly (see encode._mux_cues).
ASS_HEADER = (
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n"
    "[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, "
    "Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
