"""Narration -> sentence segments with timings.

A `Segment` is the unit later stages synthesize, animate and lip-sync one by one. Segments made
from text alone carry *estimated* timings (speaking rate); the voice stage replaces them with
*measured* ones (`retime`). Subtitles accept either.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

SEGMENTS_TYPE = "SPINBOT_SEGMENTS"  # ComfyUI type name: a tuple of Segment

DEFAULT_WORDS_PER_SECOND = 2.5  # ~150 words a minute, a calm presenter
DEFAULT_PAUSE = 0.3  # seconds of silence assumed after each segment
DEFAULT_MAX_SEGMENT_SECONDS = 10.0


@dataclass(frozen=True)
class Segment:
    index: int
    text: str
    start: float  # seconds from the start of the narration
    end: float
    estimated: bool = True  # False once the voice stage has measured it
    # Image prompt for this segment's picture ("scene per segment" scripts); "" = the script's
    # one stage prompt is used. Kept by `retime`, so measured segments still carry it.
    scene: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Segment":
        """A segment from `to_dict`'s form; dicts saved before segments had a scene still load
        (scene ""). Raises KeyError/TypeError/ValueError on a dict that is not a segment."""
        scene = data.get("scene") or ""
        if not isinstance(scene, str):
            raise TypeError(f"scene must be a string, not {type(scene).__name__}")
        return cls(index=int(data["index"]), text=str(data["text"]), start=float(data["start"]),
                   end=float(data["end"]), estimated=bool(data.get("estimated", True)),
                   scene=scene)


class SegmentError(ValueError):
    pass


# --------------------------------------------------------------------------- text classes

# Scripts written without spaces between words: each character is spoken on its own.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD = re.compile(r"[^\W_]+(?:['’.,-][^\W_]+)*")
_CJK_END = "。！？｡"
_LATIN_END = ".!?…"
# Closing quotes and brackets that stay with the sentence they end; “ ‘ « close German and
# Swiss quotations („…“, »…«) and are only absorbed right after the end mark.
_CLOSERS = "\"'”’“‘»«›‹」』）)]】〉》"
_CLAUSE_LATIN = ",;:—–"
_CLAUSE_CJK = "，、；：﹐﹑"

# Abbreviations after which a period does not end a sentence even before a capital letter.
# Ones that often do end sentences ("etc.", "usw.") are deliberately absent.
_ABBREVIATIONS = {
    "en": {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf",
           "approx", "inc", "ltd", "co", "corp", "dept", "gen", "gov",
           "sen", "rep", "rev", "capt", "col", "lt", "sgt", "u.s", "u.k", "a.m", "p.m", "jan",
           "feb", "mar", "apr", "aug", "sep", "sept", "oct", "nov", "dec"},
    "de": {"hr", "hrn", "fr", "dr", "prof", "z.b", "d.h", "u.a", "bzw", "ca", "vgl",
           "ggf", "evtl", "inkl", "sog", "str", "bspw", "zzgl", "gem", "jh", "jhd",
           "mio", "mrd", "u.ä", "o.ä", "z.t", "i.d.r"},
}
_ALL_ABBREVIATIONS = set().union(*_ABBREVIATIONS.values())
# Abbreviations that stand before a number ("No. 5", "Nr. 3", "Fig. 2"); "No." before a word is
# the word "no" ending a sentence.
_NUMBER_ABBREVIATIONS = {"no", "nos", "nr", "vol", "fig", "abs", "art", "pp", "bd"}

_LANGUAGE_CODES = {
    "en": ("english", "englisch", "anglais"), "de": ("german", "deutsch", "allemand"),
    "zh": ("chinese", "mandarin", "cantonese", "中文", "汉语", "普通话", "chinesisch"),
    "ja": ("japanese", "日本語", "japanisch"), "ko": ("korean", "한국어"),
    "fr": ("french", "français", "francais", "französisch"),
    "es": ("spanish", "español", "espanol"),
    "it": ("italian", "italiano"), "pt": ("portuguese", "português", "portugues"),
    "ru": ("russian", "русский"), "nl": ("dutch", "nederlands"), "pl": ("polish", "polski"),
}


def language_code(language: str) -> str:
    """ISO 639-1 code of a language name or code ('German', 'de-AT', '中文'); '' if unknown."""
    name = (language or "").strip().lower()
    if not name:
        return ""
    base = re.split(r"[-_ (]", name)[0]
    if base in _LANGUAGE_CODES:
        return base
    for code, names in _LANGUAGE_CODES.items():
        if name in names or base in names or any(name.startswith(n) for n in names):
            return code
    return ""


def is_cjk_language(language: str) -> bool:
    return language_code(language) in ("zh", "ja")


def speech_units(text: str) -> float:
    """Words to speak; a CJK character counts half a word (one syllable, spoken quickly)."""
    cjk = len(_CJK_CHAR.findall(text))
    words = len(_WORD.findall(_CJK_CHAR.sub(" ", text)))
    return words + 0.5 * cjk


def estimate_seconds(text: str, words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> float:
    if not (math.isfinite(words_per_second) and words_per_second > 0):
        raise SegmentError(f"words_per_second must be a positive finite number, got "
                           f"{words_per_second}")
    return speech_units(text) / words_per_second


# --------------------------------------------------------------------------- sentences

def _token_before(text: str, i: int) -> str:
    """The word ending at position i (exclusive), dots inside it kept: 'z.B', 'e.g', 'Mr'."""
    j = i
    while j > 0 and (text[j - 1].isalnum() or text[j - 1] == "."):
        j -= 1
    return text[j:i].strip(".")


def _is_abbreviation(token: str, lang: str, following: str) -> bool:
    if not token:
        return False
    low = token.lower()
    if low in _NUMBER_ABBREVIATIONS:
        return following.isdigit()
    if len(token) == 1 and token.isalpha():  # initials: "J. R. R. Tolkien", "z. B."
        return True
    if lang == "de" and token.isdigit() and len(token) <= 3:  # ordinals: "am 3. Oktober"
        return True
    known = _ABBREVIATIONS.get(lang, _ALL_ABBREVIATIONS) | _ABBREVIATIONS["en"]
    if low in known:
        return True
    return bool(re.fullmatch(r"(?:[^\W\d_]\.)+[^\W\d_]", token))  # "U.S", "d.h", "e.g"


def _next_visible(text: str, j: int) -> str:
    while j < len(text) and text[j].isspace():
        j += 1
    return text[j] if j < len(text) else ""


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Offsets of the blocks between blank lines, surrounding whitespace excluded."""
    spans, a = [], 0
    for sep in list(re.finditer(r"\n[ \t\r\f\v]*\n", text)) + [None]:
        b = sep.start() if sep else len(text)
        lead = len(text[a:b]) - len(text[a:b].lstrip())
        tail = len(text[a:b].rstrip())
        if tail > lead:
            spans.append((a + lead, a + tail))
        a = sep.end() if sep else b
    return spans


def sentence_spans(text: str, language: str = "") -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the sentences in ``text``; blank lines always end one."""
    lang = language_code(language)
    spans: list[tuple[int, int]] = []
    for para_start, para_stop in _paragraphs(text):
        start, i, stop = para_start, para_start, para_stop
        while i < stop:
            ch = text[i]
            if ch not in _CJK_END and ch not in _LATIN_END:
                i += 1
                continue
            j = i + 1
            while j < stop and text[j] in _CJK_END + _LATIN_END:
                j += 1
            while j < stop and text[j] in _CLOSERS:
                j += 1
            if ch not in _CJK_END and j < stop:
                nxt = text[j]
                if not nxt.isspace() and not _CJK_CHAR.match(nxt):
                    i = j  # "3.14", "example.com", "e.g.x": not a boundary
                    continue
                following = _next_visible(text, j)
                if following.islower():  # "e.g. this", '"Stop!" she said'
                    i = j
                    continue
                if ch == "." and text[i:j].count(".") == 1 \
                        and _is_abbreviation(_token_before(text, i), lang, following):
                    i = j
                    continue
            if re.fullmatch(r"\(?(?:\d{1,3}|[^\W\d_])[.)]", text[start:j].strip()):
                i = j  # a list marker ("1.", "b)") starts its item, it is not a sentence
                continue
            spans.append((start, j))
            start = j
            while start < stop and text[start].isspace():
                start += 1
            i = max(j, start)
        if start < stop:
            spans.append((start, stop))
    return spans


def _normalize(text: str) -> str:
    return " ".join(text.split())


def split_sentences(text: str, language: str = "") -> list[str]:
    return [s for s in (_normalize(text[a:b]) for a, b in sentence_spans(text, language)) if s]


def _split_points(sentence: str) -> list[int]:
    """Offsets just after clause punctuation (where a long sentence may be broken)."""
    points = []
    for k, ch in enumerate(sentence):
        if ch in _CLAUSE_CJK:
            points.append(k + 1)
        elif ch in _CLAUSE_LATIN and k + 1 < len(sentence) and sentence[k + 1] == " ":
            points.append(k + 1)
    return [p for p in points if 0 < p < len(sentence)]


def split_long(sentence: str, max_seconds: float,
               words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> list[str]:
    """Break a sentence longer than ``max_seconds`` into pieces, at commas where it has them.

    The cut nearest the middle (by spoken length) is taken, recursively, so pieces stay even.
    Without clause punctuation it cuts between words, and CJK text between characters.
    """
    sentence = sentence.strip()
    if math.isnan(max_seconds):  # compares false with everything: the split would never end
        raise SegmentError("max_segment_seconds must be a number (0 for no limit), got nan")
    if max_seconds <= 0 or estimate_seconds(sentence, words_per_second) <= max_seconds:
        return [sentence] if sentence else []
    points = _split_points(sentence)
    if not points:
        points = [k for k, ch in enumerate(sentence) if ch == " "]
    if not points:
        points = [k for k in range(1, len(sentence)) if _CJK_CHAR.match(sentence[k])
                  and sentence[k] not in _CLAUSE_CJK + _CJK_END]
    if not points:  # one enormous word
        return [sentence]
    total = speech_units(sentence)
    best = min(points, key=lambda p: abs(speech_units(sentence[:p]) - total / 2))
    left, right = sentence[:best].strip(), sentence[best:].strip()
    if not left or not right:
        return [sentence]
    return split_long(left, max_seconds, words_per_second) + \
        split_long(right, max_seconds, words_per_second)


# --------------------------------------------------------------------------- segments

def _attach_unspoken(pieces: list[str]) -> list[str]:
    """Pieces with no words (an emoji or '!!!' after a sentence) join the piece before them (the
    first ones the piece after), so they stay in the subtitles without becoming a segment that a
    voice cannot speak. Text with no words at all stays one piece, for the caller to refuse."""
    out: list[str] = []
    for piece in pieces:
        if out and (speech_units(piece) <= 0 or speech_units(out[-1]) <= 0):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def make_segments(text: str, words_per_second: float = DEFAULT_WORDS_PER_SECOND,
                  language: str = "", max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
                  pause: float = DEFAULT_PAUSE) -> tuple[Segment, ...]:
    """Sentence segments of a narration, with estimated back-to-back timings from 0."""
    if not (math.isfinite(words_per_second) and words_per_second > 0):
        raise SegmentError(f"words_per_second must be a positive finite number, got "
                           f"{words_per_second}")
    pieces = _attach_unspoken([p for s in split_sentences(text, language)
                               for p in split_long(s, max_segment_seconds, words_per_second)])
    segments, t = [], 0.0
    for index, piece in enumerate(pieces):
        length = max(estimate_seconds(piece, words_per_second), 0.2)
        segments.append(Segment(index, piece, round(t, 3), round(t + length, 3), True))
        t += length + pause
    return tuple(segments)


def total_seconds(segments: Sequence[Segment]) -> float:
    return max((s.end for s in segments), default=0.0)


def trim_to_seconds(text: str, max_seconds: float,
                    words_per_second: float = DEFAULT_WORDS_PER_SECOND, language: str = "",
                    pause: float = DEFAULT_PAUSE) -> tuple[str, bool]:
    """Cut a narration to whole sentences that fit ``max_seconds`` of estimated speech.

    Returns ``(text, trimmed)``. If even the first sentence is too long, it keeps the clauses of
    that sentence that fit (at least one) and ends them with a full stop.
    """
    spans = sentence_spans(text, language)
    elapsed, keep_end = 0.0, None
    for a, b in spans:
        length = estimate_seconds(text[a:b], words_per_second)
        if elapsed + length > max_seconds + 1e-6:
            break
        elapsed += length + pause
        keep_end = b
    if keep_end is not None:
        kept = text[:keep_end].strip()
        return kept, _normalize(kept) != _normalize(text)
    if not spans:
        return text.strip(), False
    first = _normalize(text[spans[0][0]:spans[0][1]])
    clauses = split_long(first, max_seconds, words_per_second)
    kept = clauses[0].rstrip(_CLAUSE_LATIN + _CLAUSE_CJK + " ")
    if kept and kept[-1] not in _LATIN_END + _CJK_END + _CLOSERS:
        kept += "。" if _CJK_CHAR.match(kept[-1]) else "."
    return kept, True


def retime(segments: Sequence[Segment], durations: Sequence[float], gap: float = 0.0,
           start: float = 0.0) -> tuple[Segment, ...]:
    """Measured timings: the voice stage reports each segment's audio length (and the gap it put
    between them); segments are laid back to back from ``start``."""
    if len(durations) != len(segments):
        raise SegmentError(f"{len(durations)} durations for {len(segments)} segments")
    out, t = [], float(start)
    for seg, dur in zip(segments, durations):
        if dur < 0:
            raise SegmentError(f"segment {seg.index} has a negative duration {dur}")
        out.append(replace(seg, start=round(t, 3), end=round(t + float(dur), 3), estimated=False))
        t += float(dur) + gap
    return tuple(out)


def fit_to_duration(segments: Sequence[Segment], seconds: float) -> tuple[Segment, ...]:
    """Stretch estimated timings so the last segment ends at ``seconds`` (e.g. the real audio
    length); measured segments are returned unchanged."""
    end = total_seconds(segments)
    if not segments or end <= 0 or seconds <= 0 or not all(s.estimated for s in segments):
        return tuple(segments)
    k = seconds / end
    return tuple(replace(s, start=round(s.start * k, 3), end=round(s.end * k, 3))
                 for s in segments)


def coerce_segments(value: Iterable) -> tuple[Segment, ...]:
    """Segments from a SPINBOT_SEGMENTS value, a SpinBotVideo's list of dicts, or a script."""
    if hasattr(value, "segments") and not isinstance(value, (list, tuple)):
        value = value.segments
    out = []
    for item in value or ():
        if isinstance(item, Segment):
            out.append(item)
        elif isinstance(item, dict):
            try:
                out.append(Segment.from_dict(item))
            except (KeyError, TypeError, ValueError) as exc:
                raise SegmentError(f"not a segment: {item!r} ({exc})") from None
        else:
            raise SegmentError(f"not a segment: {type(item).__name__}")
        # NaN/inf times would reach frame arithmetic downstream as int(nan) tracebacks.
        if not (math.isfinite(out[-1].start) and math.isfinite(out[-1].end)):
            raise SegmentError(f"segment {out[-1].index} has a time that is not a finite "
                               f"number: start {out[-1].start}, end {out[-1].end}")
    return tuple(out)
