"""Subtitle cues: SRT and WebVTT reading, SRT writing, the cues on screen over time, and the ASS
header the mov_text encoder needs.

Each format is read by its own rules: SRT (SubRip, as players read it: index line, timing line
``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text with optional ``<b>``/``<i>``/``<u>``/``<font>`` tags) and
WebVTT (W3C "WebVTT: The Web Video Text Tracks Format", https://www.w3.org/TR/webvtt1/: header,
optional hours, cue identifiers and settings, NOTE/STYLE/REGION blocks, cue-text tags and HTML
character references). `parse_subtitles` tells them apart by the WebVTT header.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Cue", "SubtitleError", "parse_srt", "parse_vtt", "parse_subtitles", "format_srt",
           "format_timestamp", "vtt_cue_text", "screen_cues", "clip_cues", "ASS_HEADER"]


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


class SubtitleError(ValueError):
    pass


# --- SRT ---------------------------------------------------------------------------------------

# SubRip writes "00:00:01,000"; a dot and fewer fraction digits are common in the wild and every
# mainstream player accepts them, so they are accepted too.
_SRT_TIME = r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})"
_SRT_ARROW = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}")
# The formatting SubRip players honour (b, i, u, s, font) and ASS override blocks such as
# "{\an8}" that many SRT files carry; anything else in angle or curly brackets is literal text
# (SRT has no escapes).
_SRT_MARKUP = re.compile(r"</?(?:b|i|u|s)>|</?font(?:\s[^>]*)?>|\{\\[^}]*\}", re.IGNORECASE)
_LINES = re.compile(r"\r\n|\r|\n")


def _srt_seconds(h: str, m: str, s: str, frac: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def _looks_like_vtt(text: str) -> bool:
    # WebVTT: optional BOM, then "WEBVTT" followed by end of line, space or tab (spec, 6.1).
    return re.match(r"\ufeff?WEBVTT(?:[ \t\r\n]|$)", text) is not None


def parse_srt(text: str, dropped: list[str] | None = None) -> list[Cue]:
    """Cues of an SRT document, in document order.

    A cue is an optional numeric index line, a timing line and text lines up to a blank line.
    A timing line (with the index line just before it) also starts a new cue without a blank
    line in between, as players read files whose blank lines were lost. Text lines keep their
    line breaks; SubRip formatting tags and ASS override blocks are removed (they style text,
    they are not text). Cues whose text is empty are skipped. Zero-length cues (end equal to
    start) are dropped, as WebVTT's rules drop them (nothing could show them); each one dropped
    adds a line to ``dropped`` when a list is given.

    Raises:
        SubtitleError: a block without a timing line, a malformed timing line, a cue that ends
            before it starts, or a WebVTT document (read those with `parse_vtt`).
    """
    text = text.lstrip("\ufeff")
    if _looks_like_vtt(text):
        raise SubtitleError("this is a WebVTT document (it starts with 'WEBVTT'): read it with "
                            "parse_vtt or parse_subtitles")
    cues: list[Cue] = []
    for block in _srt_blocks(_LINES.split(text.strip())):
        idx = next((i for i, ln in enumerate(block) if "-->" in ln), None)
        if idx is None:
            joined = "\n".join(block).strip()
            if joined and not joined.isdigit():
                raise SubtitleError(f"subtitle block without a timing line: {joined[:60]!r}")
            continue
        m = _SRT_ARROW.match(block[idx])
        if not m:
            raise SubtitleError(f"bad subtitle timing line: {block[idx]!r}")
        start, end = _srt_seconds(*m.groups()[:4]), _srt_seconds(*m.groups()[4:])
        if not _keep_timing(start, end, block[idx], dropped):
            continue
        body = "\n".join(ln for ln in (_SRT_MARKUP.sub("", ln).rstrip() for ln in block[idx + 1:])
                         if ln.strip()).strip()
        if body:
            cues.append(Cue(start, end, body))
    return cues


def _srt_blocks(lines: list[str]) -> list[list[str]]:
    """``lines`` cut into cue blocks: at blank lines, and before every further timing line (and
    the numeric index line just above it) inside a block."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
            continue
        if _SRT_ARROW.match(line) and any(_SRT_ARROW.match(ln) for ln in current):
            index = [current.pop()] if current[-1].strip().isdigit() and len(current) > 1 else []
            blocks.append(current)
            current = index
        current.append(line)
    if current:
        blocks.append(current)
    return blocks


def _keep_timing(start: float, end: float, line: str, dropped: list[str] | None) -> bool:
    """False for a zero-length cue (noted in ``dropped``); SubtitleError for one that ends
    before it starts."""
    if end < start:
        raise SubtitleError(f"subtitle ends before it starts: {line.strip()!r}")
    if end == start:
        if dropped is not None:
            dropped.append(f"zero-length cue {line.strip()!r} dropped")
        return False
    return True


def format_timestamp(seconds: float, sep: str = ",") -> str:
    """``HH:MM:SS,mmm`` (``sep`` "." for WebVTT), rounded to the millisecond, negatives as 0."""
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_srt(cues: Sequence[Cue]) -> str:
    """SubRip text of ``cues``, numbered from 1 in the given order."""
    return "".join(f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n\n"
                   for i, c in enumerate(cues, start=1))


# --- WebVTT ------------------------------------------------------------------------------------

# A WebVTT timestamp (spec, "collect a WebVTT timestamp"): hours are optional and have any
# number of digits, minutes and seconds are two digits below 60, the fraction is exactly three
# digits after a full stop. Cue settings follow the end time.
_VTT_TIME = r"(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})(?!\d)"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME}[ \t]*-->[ \t]*{_VTT_TIME}[ \t]*(.*)$")
# Cue-text tags: class spans <c.x>, voice <v Name>, language <lang en>, <b> <i> <u> <ruby> <rt>
# and inner timestamps <00:01.000>; a tag runs to the next '>' or the end of the text (spec,
# "cue text tokenizer"). Ruby text (<rt>) is an annotation drawn above its base, not inline text.
_VTT_RUBY_TEXT = re.compile(r"<rt(?:[.\s][^>]*)?>.*?(?:</rt>|(?=</ruby>)|$)", re.DOTALL)
_VTT_TAG = re.compile(r"<[^>]*(?:>|$)")
_VTT_BLOCK_KEYWORDS = ("NOTE", "STYLE", "REGION")


def _vtt_seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000.0


def vtt_cue_text(payload: str) -> str:
    """What a WebVTT cue payload displays: tags removed, character references decoded.

    Lines are kept; a line left empty by its tags is dropped. ``&nbsp;`` becomes U+00A0.
    """
    plain = _VTT_TAG.sub("", _VTT_RUBY_TEXT.sub("", payload))
    lines = (html.unescape(ln).rstrip() for ln in plain.split("\n"))
    return "\n".join(ln for ln in lines if ln.strip())


def _is_keyword_block(line: str, keyword: str) -> bool:
    return line == keyword or line.startswith((keyword + " ", keyword + "\t"))


def parse_vtt(text: str, dropped: list[str] | None = None) -> list[Cue]:
    """Cues of a WebVTT document, in document order (W3C WebVTT, section 6 parsing rules).

    The header line and the header's other lines, NOTE, STYLE and REGION blocks and cue
    identifiers are skipped. Cue settings (``align:start position:10%``) are accepted and not
    used: mov_text and burn-in place every cue bottom-centred. Cue text is `vtt_cue_text`;
    cues whose displayed text is empty are skipped.

    Raises:
        SubtitleError: no ``WEBVTT`` header, a malformed timing line, or a cue that ends before
            it starts (the spec drops such cues silently; here they are an error, so no subtitle
            is lost without notice). A zero-length cue (end equal to start) is dropped as the
            spec says, with a line added to ``dropped`` when a list is given.
    """
    text = text.lstrip("\ufeff")
    if not _looks_like_vtt(text):
        raise SubtitleError("not a WebVTT document: it must start with 'WEBVTT'")
    lines = _LINES.split(text)
    i = 1
    # The rest of the header block; a timing line ends it (spec: "collect a WebVTT block").
    while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
        i += 1
    cues: list[Cue] = []
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        first = lines[i]
        if any(_is_keyword_block(first, k) for k in _VTT_BLOCK_KEYWORDS) and "-->" not in first:
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        timing = first if "-->" in first else None
        if timing is None:  # a cue identifier; the timing line must follow it
            i += 1
            if i >= len(lines) or "-->" not in lines[i]:
                raise SubtitleError(f"WebVTT block without a timing line: {first[:60]!r}")
            timing = lines[i]
        m = _VTT_TIMING.match(timing.strip())
        if not m:
            raise SubtitleError(f"bad WebVTT timing line: {timing!r} (expected "
                                "'[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt [settings]')")
        start, end = _vtt_seconds(*m.groups()[:4]), _vtt_seconds(*m.groups()[4:8])
        keep = _keep_timing(start, end, timing, dropped)
        i += 1
        payload: list[str] = []
        # Cue text runs to a blank line, or to a line holding "-->", which starts the next cue.
        while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
            payload.append(lines[i])
            i += 1
        body = vtt_cue_text("\n".join(payload))
        if body and keep:
            cues.append(Cue(start, end, body))
    return cues


def parse_subtitles(text: str, dropped: list[str] | None = None) -> list[Cue]:
    """Cues of an SRT or WebVTT document: WebVTT when it starts with the ``WEBVTT`` header
    (after an optional byte-order mark), SRT otherwise. Errors and ``dropped`` as in
    `parse_srt`/`parse_vtt`."""
    parse = parse_vtt if _looks_like_vtt(text.lstrip("\ufeff")) else parse_srt
    return parse(text, dropped)


# --- What is on screen -------------------------------------------------------------------------

def screen_cues(cues: Sequence[Cue]) -> list[Cue]:
    """The cues as shown: non-overlapping intervals in time order, each showing every cue active
    over it, one per line, in start order (document order among equal starts).

    "first" 1-3 s with "second" 2-2.5 s gives 1-2 "first", 2-2.5 "first\\nsecond", 2.5-3 "first".
    Formats that show one sample at a time (mov_text) and burn-in both display this list, so
    an overlapping cue never hides another. Gaps stay gaps. O(n log n) in the number of cues.
    """
    order = sorted(range(len(cues)), key=lambda k: (cues[k].start, k))
    rank = {k: r for r, k in enumerate(order)}
    # (time, 0 = end before 1 = start at the same instant, cue)
    events = sorted([(c.end, 0, k) for k, c in enumerate(cues)]
                    + [(c.start, 1, k) for k, c in enumerate(cues)])
    active: dict[int, Cue] = {}
    out: list[Cue] = []
    t = None
    for time, kind, k in events:
        if t is not None and time > t and active:
            texts = [active[j].text for j in sorted(active, key=rank.__getitem__)]
            out.append(Cue(t, time, "\n".join(texts)))
        t = time
        if kind:
            active[k] = cues[k]
        else:
            active.pop(k, None)
    return out


def clip_cues(cues: Sequence[Cue], duration: float) -> list[Cue]:
    """``cues`` limited to ``[0, duration)`` seconds: ends past it are cut to it, cues starting
    at or after it are dropped, so a subtitle track never outlasts its video."""
    return [Cue(max(c.start, 0.0), min(c.end, duration), c.text)
            for c in cues if c.start < duration and c.end > 0]


# --- mov_text ----------------------------------------------------------------------------------

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
