"""F5-TTS text handling: the checkpoint's ``vocab.txt`` (one token a line, line number = id,
space first) and the character tokenizer.

F5TTS_v1_Base was trained with upstream's ``convert_char_to_pinyin``: the text is segmented into
words (rjieba), Chinese characters become tone-numbered pinyin syllables (``ni3``), everything
else stays a character, and a space is put before multi-letter ASCII words that follow another
character. The same is done here with word segmentation by ``rjieba`` (or ``jieba``) when
installed, otherwise a jieba-like split into Han runs, ASCII letter/digit runs and single
characters (the same tokens for ordinary non-Chinese text). Pinyin needs ``pypinyin``; without
it Chinese stays characters and `text_problem` asks for the package. Unknown tokens map to id 0
(space), as upstream.
"""
from __future__ import annotations

import os
import re
import unicodedata

import torch

from ..text_filters import is_emoji, is_spaced, remove_emoji

_TRANSLATE = str.maketrans({";": ",", "“": '"', "”": '"', "‘": "'", "’": "'"})


def _is_chinese(c: str) -> bool:
    return "\u3100" <= c <= "\u9fff"


def load_vocab(path: str) -> dict[str, int]:
    """``{token: id}`` from a vocab.txt; raises ValueError when it is not one."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab[token] = i  # a repeated line takes the later id, as upstream's get_tokenizer
    if not vocab or lines[0] != " ":
        raise ValueError(f"{path}: not an F5-TTS vocab.txt (the first line must be a single space)")
    return vocab


def _segments(text: str) -> list[str]:
    for name in ("rjieba", "jieba"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        return list(module.cut(text))
    return _fallback_segments(text)


def _fallback_segments(text: str) -> list[str]:
    """jieba-like split: Han runs, runs of jieba's word characters, any other character alone."""
    return re.findall(r"[\u3100-\u9fff]+|[A-Za-z0-9+#&._%\-]+|.", text, flags=re.S)


def to_tokens(text: str, use_pinyin: bool = True,
              vocab: dict[str, int] | None = None) -> list[str]:
    """Character tokens of a text, Chinese as pinyin syllables (F5's convert_char_to_pinyin).

    Without pypinyin the same segmentation and spacing apply and Chinese stays characters
    (`text_problem` tells the user to install pypinyin when the vocabulary wants pinyin).
    ``use_pinyin=False`` gives the plain characters (upstream's "char" tokenizer). The text is
    normalised first (`normalize_text`, with ``vocab`` when given), which leaves ordinary text
    as it is."""
    text = normalize_text(text, vocab).translate(_TRANSLATE)
    if not use_pinyin:
        return list(text)
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        lazy_pinyin = None
    tokens: list[str] = []
    for seg in _segments(text):
        nbytes = len(seg.encode("utf-8"))
        if nbytes == len(seg):  # plain ASCII
            if tokens and nbytes > 1 and tokens[-1] not in " :'\"":
                tokens.append(" ")
            tokens.extend(seg)
        elif lazy_pinyin is not None and nbytes == 3 * len(seg):  # all east asian
            syllables = lazy_pinyin(seg, style=Style.TONE3, tone_sandhi=True)
            for c, py in zip(seg, syllables):
                if _is_chinese(c):
                    tokens.append(" ")
                tokens.append(py)
        else:
            for c in seg:
                if ord(c) < 256 or lazy_pinyin is None:
                    tokens.append(c)
                elif _is_chinese(c):
                    tokens.append(" ")
                    tokens.extend(lazy_pinyin(c, style=Style.TONE3, tone_sandhi=True))
                else:
                    tokens.append(c)
    return tokens


def encode(texts: list[str], vocab: dict[str, int], use_pinyin: bool = True) -> torch.Tensor:
    """``[B, Nt]`` long ids of the normalised texts (`to_tokens`), padded with -1; unknown
    tokens are id 0 (space), as upstream."""
    ids = [[vocab.get(tok, 0) for tok in to_tokens(t, use_pinyin, vocab)] for t in texts]
    width = max((len(r) for r in ids), default=0)
    out = torch.full((len(ids), max(width, 1)), -1, dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            out[i, :len(row)] = torch.tensor(row)
    return out


def unknown_characters(text: str, vocab: dict[str, int], use_pinyin: bool = True) -> list[str]:
    """Tokens of the normalised ``text`` that ``vocab`` lacks, sorted (id 0 when encoded)."""
    return sorted({t for t in to_tokens(text, use_pinyin, vocab) if t not in vocab})


def has_pinyin() -> bool:
    import importlib.util

    return importlib.util.find_spec("pypinyin") is not None


def text_problem(text: str, vocab: dict[str, int]) -> str | None:
    """Why the model cannot speak ``text``, or None.

    The text is checked as it is read (`spoken_text`: emoji left out, normalised). Any character
    the vocabulary lacks, other than whitespace, punctuation and controls (read as a pause, as
    upstream does), is an error naming those characters: letters mean a script or language the
    checkpoint was not trained on, digits and symbols would silently be read as a pause (the
    words they stand for lost). Chinese needs pypinyin when the vocabulary is a pinyin one."""
    text = spoken_text(text)
    if any(_is_chinese(c) for c in text) and not has_pinyin() \
            and any(re.fullmatch(r"[a-z]+[1-5]", t) for t in vocab):
        return ("Chinese text needs the 'pypinyin' package (pip install pypinyin rjieba): this "
                "model reads Chinese as pinyin syllables")
    missing = [t for t in unknown_characters(text, vocab)
               if len(t) == 1 and unicodedata.category(t)[0] not in "ZP"
               and unicodedata.category(t) != "Cc"]
    if not missing:
        return None
    shown = "".join(missing[:20])
    if any(unicodedata.category(t)[0] in "LM" for t in missing):
        return (f"the model's vocabulary has no {shown!r}: this text is in a script or language "
                "the checkpoint was not trained on; use a fine-tune for it (its model file with "
                "its own vocab.txt in models/tts)")
    return (f"the model's vocabulary has no {shown!r}: it would read them as a pause and the "
            "words they stand for would be lost; write them out in words")


def normalize_text(text: str, vocab: dict[str, int] | None = None) -> str:
    """``text`` in the form the model's vocabulary spells it.

    Canonical composition (NFC: a decomposed "Cafe\u0301" becomes "Café"), invisible format
    characters (Unicode category Cf: soft hyphen, zero-width space, direction marks) removed,
    and letters, numbers and spaces in compatibility forms replaced by their NFKC form:
    fullwidth "Ｈｅｌｌｏ" and math-bold letters -> "Hello", "①" -> "1", "²" -> "2", "Ⅻ" -> "XII",
    "½" -> "1/2" (NFKC's fraction slash U+2044 written as "/"), a no-break space -> " ". With
    ``vocab`` only characters the vocabulary lacks are replaced (F5TTS_v1_Base's has "½" and "²");
    without it Latin-1 characters and modifier letters (IPA "ʰ") are kept, since vocabularies
    that have them hold them as they are.
    Punctuation and symbols keep their form (CJK "，" is a token of its own), so ordinary text,
    ASCII above all, is returned unchanged.
    """
    text = unicodedata.normalize("NFC", text)
    if text.isascii():
        return text
    out = []
    for c in text:
        category = unicodedata.category(c)
        if category == "Cf" and (vocab is None or c not in vocab):
            continue
        if category[0] in "LNZ" and (c not in vocab if vocab is not None
                                     else ord(c) > 0xFF and category != "Lm"):
            c = unicodedata.normalize("NFKC", c).replace("\u2044", "/")
        out.append(c)
    return unicodedata.normalize("NFC", "".join(out))


# Re-exported under their old names: the emoji rule lives in ..text_filters, shared with the
# script stage's narrative cleaning.
_is_emoji = is_emoji
_is_spaced = is_spaced


def spoken_text(text: str) -> str:
    """``text`` as it is read aloud: emoji and pictographic symbols removed (`remove_emoji`: the
    whitespace around where they were made one space) and `normalize_text` applied. Ordinary
    text without emoji is returned unchanged. Subtitles keep the original; only what goes to the
    model is changed."""
    return normalize_text(remove_emoji(text))


def is_speakable(text: str) -> bool:
    """Whether ``text`` holds anything to say: a letter or a digit of any script (Unicode
    categories L* and N*). Punctuation, spaces, symbols and emoji alone are not; F5-TTS would
    turn them into noise of the length of their bytes. Checked on `spoken_text` (normalised)."""
    return any(unicodedata.category(c)[0] in "LN" for c in spoken_text(text))


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


def prepare_reference_text(text: str) -> str:
    """Upstream's reference-text fix: end with '. ' (or '。') so the generated text starts cleanly."""
    text = text.strip()
    if not text.endswith(". ") and not text.endswith("。"):
        text = text + " " if text.endswith(".") else text + ". "
    if len(text[-1].encode("utf-8")) == 1:  # as upstream: "Hi." -> "Hi.  "
        text += " "
    return text


def chunk_text(text: str, max_bytes: int) -> list[str]:
    """Pieces of at most ``max_bytes`` UTF-8 bytes, split after punctuation (F5's chunk_text)."""
    max_bytes = max(int(max_bytes), 1)
    sentences = re.split(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])", text)
    chunks, current = [], ""
    for sentence in sentences:
        if not sentence:
            continue
        piece = sentence + " " if byte_length(sentence[-1]) == 1 else sentence
        if byte_length(current) + byte_length(sentence) <= max_bytes:
            current += piece
        else:
            if current:
                chunks.append(current.strip())
            current = piece
    if current.strip():
        chunks.append(current.strip())
    return chunks


def vocab_path_for(checkpoint_path: str) -> str:
    return os.path.join(os.path.dirname(checkpoint_path), "vocab.txt")
