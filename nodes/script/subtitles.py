"""Subtitles from segment timings: line wrapping, cue splitting, SRT and WebVTT text.

The `Cue` type and the SRT and WebVTT readers live with the video stage (`video.subtitles`),
which muxes and burns them in; this module adds what the script stage needs on top: wrapping to
a maximum line width, splitting a segment that wraps to too many lines into timed cues, and the
WebVTT writer.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Callable, Sequence

from ..video.subtitles import (Cue, SubtitleError, format_srt, format_timestamp, parse_srt,
                               parse_subtitles, parse_vtt)
from .segments import Segment

__all__ = ["Cue", "SubtitleError", "display_width", "wrap_text", "cues_from_segments",
           "format_srt", "format_vtt", "parse_srt", "parse_vtt", "parse_subtitles", "build_srt",
           "build_vtt"]

# Characters that may be broken between (Han, kana, CJK punctuation, full-width forms). Hangul
# is written with spaces, so Korean breaks between words like Latin text.
_CJK_RANGE = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_ATOM = re.compile(f"[{_CJK_RANGE}]")
# Whitespace that may break a line: every space but the no-break ones (U+00A0, U+2007, U+202F,
# e.g. a decoded WebVTT "&nbsp;"), which stay inside their word.
_SPACE = "[^\\S\u00a0\u2007\u202f]"
_SPACES = re.compile(f"{_SPACE}+")
_TOKEN = re.compile(f"{_SPACE}+|[{_CJK_RANGE}]|(?:(?!{_SPACE})[^{_CJK_RANGE}])+")
# East Asian line-breaking rules, simplified: what may not begin or end a line.
_NO_LINE_START = set("。，、！？；：」』）》〉】”’…・ー々ゝゞ〜．")
_NO_LINE_END = set("「『（《〈【“‘")


def display_width(text: str) -> int:
    """Columns the text takes: wide and full-width (CJK) characters count double."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _atoms(text: str) -> list[tuple[str, str]]:
    """Unbreakable pieces with the separator that precedes each: ('word', ' ') or ('字', '')."""
    atoms: list[tuple[str, str]] = []
    sep = ""
    for tok in _TOKEN.findall(text):
        if _SPACES.fullmatch(tok):
            sep = " " if atoms else ""
            continue
        if atoms and not sep and (tok[0] in _NO_LINE_START or atoms[-1][0][-1] in _NO_LINE_END):
            # closing punctuation stays with what it closes, opening with what it opens
            atoms[-1] = (atoms[-1][0] + tok, atoms[-1][1])
        else:
            atoms.append((tok, sep))
        sep = ""
    return atoms


def _hard_split(word: str, fits: Callable[[str], bool]) -> list[str]:
    parts, current = [], ""
    for ch in word:
        if current and not fits(current + ch):
            parts.append(current)
            current = ""
        current += ch
    return parts + ([current] if current else [])


def wrap_text(text: str, max_width: int = 42,
              measure: Callable[[str], float] = display_width) -> list[str]:
    """Greedy wrap into lines of at most ``max_width`` (as ``measure`` counts it).

    Breaks at spaces, and between CJK characters (never before closing punctuation). A word
    wider than a whole line is cut. Existing line breaks are kept.
    """
    if max_width <= 0:
        raise SubtitleError(f"max width must be positive, got {max_width}")

    def fits(s: str) -> bool:
        return measure(s) <= max_width

    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for atom, sep in _atoms(paragraph):
            candidate = f"{line}{sep}{atom}" if line else atom
            if fits(candidate):
                line = candidate
                continue
            if line:
                lines.append(line)
            pieces = _hard_split(atom, fits) if not fits(atom) else [atom]
            lines.extend(pieces[:-1])
            line = pieces[-1]
        if line:
            lines.append(line)
    return lines


def _clean(text: str) -> str:
    # Cue text may not contain a timing arrow or a blank line (both end a cue in SRT and VTT).
    text = text.replace("-->", "→")
    return " ".join(text.split())


def cues_from_segments(segments: Sequence[Segment], max_chars_per_line: int = 42,
                       max_lines: int = 2, offset: float = 0.0) -> list[Cue]:
    """One cue per segment, or several when its text wraps to more than ``max_lines`` lines;
    a split segment's time is shared in proportion to the text length of each part.

    Timings are rounded to milliseconds and made monotonic (no cue starts before the previous
    one ends), so what is written is what is read back.
    """
    if max_lines < 1:
        raise SubtitleError(f"max_lines must be at least 1, got {max_lines}")
    cues: list[Cue] = []
    last_end = 0.0
    for seg in sorted(segments, key=lambda s: (s.start, s.index)):
        lines = wrap_text(_clean(seg.text), max_chars_per_line)
        if not lines:
            continue
        groups = [lines[i:i + max_lines] for i in range(0, len(lines), max_lines)]
        weights = [sum(display_width(ln) for ln in g) for g in groups]
        start, end = seg.start + offset, seg.end + offset
        t = start
        for group, weight in zip(groups, weights):
            t_end = t + (end - start) * weight / sum(weights)
            if t_end <= 0:  # shifted before the start of the video by a negative offset
                t = t_end
                continue
            a = round(max(t, last_end, 0.0), 3)
            b = round(max(t_end, a + 0.001), 3)
            cues.append(Cue(a, b, "\n".join(group)))
            last_end = b
            t = t_end
    return cues


def format_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text of ``cues`` (hours always written); ``&``, ``<`` and ``>`` are escaped, so
    `parse_vtt` reads back the same cues."""
    blocks = ["WEBVTT\n"]
    for i, c in enumerate(cues, start=1):
        text = html.escape(c.text, quote=False)  # &, <, > are markup in WebVTT
        blocks.append(f"{i}\n{format_timestamp(c.start, '.')} --> "
                      f"{format_timestamp(c.end, '.')}\n{text}\n")
    return "\n".join(blocks) + "\n"


def build_srt(segments: Sequence[Segment], max_chars_per_line: int = 42, max_lines: int = 2,
              offset: float = 0.0) -> str:
    return format_srt(cues_from_segments(segments, max_chars_per_line, max_lines, offset))


def build_vtt(segments: Sequence[Segment], max_chars_per_line: int = 42, max_lines: int = 2,
              offset: float = 0.0) -> str:
    return format_vtt(cues_from_segments(segments, max_chars_per_line, max_lines, offset))
