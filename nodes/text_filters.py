"""Text filters shared by the script and voice stages (standard library only: importing this
pulls neither torch nor any model library).

`remove_emoji` is the pack's one emoji filter: the LLM narrative is cleaned with it
(`script.prompts.clean_spoken_text`) and F5-TTS reads text through it (`voice.text.spoken_text`),
so both agree on what an emoji is.
"""
from __future__ import annotations

import re
import unicodedata

# Code points that are part of emoji sequences without being symbols themselves: variation
# selectors (U+FE00-FE0F), the zero-width joiner, the combining keycap and the tag characters of
# flag sequences (Unicode TR #51, "Emoji sequences").
_EMOJI_PARTS = set(range(0xFE00, 0xFE10)) | {0x200D, 0x20E3} | set(range(0xE0020, 0xE0080))
_SKIN_TONES = range(0x1F3FB, 0x1F400)  # Fitzpatrick modifiers (category Sk)


def is_emoji(c: str) -> bool:
    """Whether the character ``c`` is an emoji, a pictographic symbol or a part of an emoji
    sequence (skin tone, variation selector, ZWJ, keycap, flag tag). Latin-1 symbols (degree,
    copyright) are not: they are ordinary text."""
    code = ord(c)
    if code in _EMOJI_PARTS or code in _SKIN_TONES:
        return True
    category = unicodedata.category(c)
    # Other symbols from U+2000 on: arrows, dingbats, pictographs, emoji (So); private use (Co)
    # and lone surrogates (Cs).
    return category in ("Cs", "Co") or (category == "So" and code >= 0x2000)


def is_spaced(c: str) -> bool:
    """A character of a script written with spaces between words (not CJK or kana)."""
    return not ("\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff")


def remove_emoji(text: str) -> str:
    """``text`` without emoji (`is_emoji`), every part of each sequence removed.

    The whitespace around where they were becomes one space, or the line break(s) it held (at
    most two, a paragraph break), and nothing at an edge, against punctuation or between CJK
    characters. Text without emoji is returned unchanged.
    """
    if not any(is_emoji(c) for c in text):
        return text
    marked = "".join("\x00" if is_emoji(c) else c for c in text)

    def gap(match: re.Match) -> str:
        before = marked[match.start() - 1] if match.start() else ""
        after = marked[match.end()] if match.end() < len(marked) else ""
        if not before or not after or after in ",.!?;:…)]}\"'" or before in "([{":
            return ""  # at an edge or against punctuation: no pause of its own
        space = match.group().replace("\x00", "")
        if space:  # there was whitespace around the emoji: keep a line break or one space
            return "\n" * min(space.count("\n"), 2) or " "
        # "word😀word" keeps the words apart; CJK text has no spaces to keep
        return " " if is_spaced(before) and is_spaced(after) else ""

    return re.sub(r"\s*\x00[\s\x00]*", gap, marked).strip()
