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


def to_tokens(text: str, use_pinyin: bool = True) -> list[str]:
    """Character tokens of a text, Chinese as pinyin syllables (F5's convert_char_to_pinyin).

    Without pypinyin the same segmentation and spacing apply and Chinese stays characters
    (`text_problem` tells the user to install pypinyin when the vocabulary wants pinyin).
    ``use_pinyin=False`` gives the plain characters (upstream's "char" tokenizer)."""
    text = text.translate(_TRANSLATE)
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
    """``[B, Nt]`` long ids, padded with -1."""
    ids = [[vocab.get(tok, 0) for tok in to_tokens(t, use_pinyin)] for t in texts]
    width = max((len(r) for r in ids), default=0)
    out = torch.full((len(ids), max(width, 1)), -1, dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            out[i, :len(row)] = torch.tensor(row)
    return out


def unknown_characters(text: str, vocab: dict[str, int], use_pinyin: bool = True) -> list[str]:
    return sorted({t for t in to_tokens(text, use_pinyin) if t not in vocab})


def has_pinyin() -> bool:
    import importlib.util

    return importlib.util.find_spec("pypinyin") is not None


def text_problem(text: str, vocab: dict[str, int]) -> str | None:
    """Why the model cannot speak ``text``, or None.

    Letters missing from the vocabulary mean a script or language the checkpoint was not trained
    on (upstream would silently read them as spaces); Chinese needs pypinyin when the vocabulary
    is a pinyin one. Unknown punctuation and symbols are read as pauses, as upstream does."""
    if any(_is_chinese(c) for c in text) and not has_pinyin() \
            and any(re.fullmatch(r"[a-z]+[1-5]", t) for t in vocab):
        return ("Chinese text needs the 'pypinyin' package (pip install pypinyin rjieba): this "
                "model reads Chinese as pinyin syllables")
    letters = [t for t in unknown_characters(text, vocab)
               if len(t) == 1 and unicodedata.category(t)[0] in "LM"]
    if letters:
        return (f"the model's vocabulary has no {''.join(letters[:20])!r}: this text is in a "
                "script or language the checkpoint was not trained on; use a fine-tune for it "
                "(its model file with its own vocab.txt in models/tts)")
    return None


# Code points that are part of emoji sequences without being symbols themselves: variation
# selectors (U+FE00-FE0F), the zero-width joiner, the combining keycap and the tag characters of
# flag sequences (Unicode TR #51, "Emoji sequences").
_EMOJI_PARTS = set(range(0xFE00, 0xFE10)) | {0x200D, 0x20E3} | set(range(0xE0020, 0xE0080))
_SKIN_TONES = range(0x1F3FB, 0x1F400)  # Fitzpatrick modifiers (category Sk)


def _is_emoji(c: str) -> bool:
    code = ord(c)
    if code in _EMOJI_PARTS or code in _SKIN_TONES:
        return True
    category = unicodedata.category(c)
    # Other symbols from U+2000 on: arrows, dingbats, pictographs, emoji (So); private use (Co)
    # and lone surrogates (Cs). Latin-1 symbols (degree, copyright) are left to the vocabulary.
    return category in ("Cs", "Co") or (category == "So" and code >= 0x2000)


def spoken_text(text: str) -> str:
    """``text`` as it is read aloud: emoji and pictographic symbols removed and the whitespace
    around where they were made one space (text without emoji is returned unchanged). Subtitles
    keep the original; only what goes to the model is changed."""
    if not any(_is_emoji(c) for c in text):
        return text
    marked = "".join("\x00" if _is_emoji(c) else c for c in text)

    def gap(match: re.Match) -> str:
        before = marked[match.start() - 1] if match.start() else ""
        after = marked[match.end()] if match.end() < len(marked) else ""
        if not before or not after or after in ",.!?;:…)]}\"'" or before in "([{":
            return ""  # at an edge or against punctuation: no pause of its own
        if match.group().strip("\x00"):  # there was a space around the emoji: keep one
            return " "
        # "word😀word" keeps the words apart; CJK text has no spaces to keep
        return " " if _is_spaced(before) and _is_spaced(after) else ""

    return re.sub(r"\s*\x00[\s\x00]*", gap, marked).strip()


def _is_spaced(c: str) -> bool:
    """A character of a script written with spaces between words (not CJK or kana)."""
    return not ("\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff")


def is_speakable(text: str) -> bool:
    """Whether ``text`` holds anything to say: a letter or a digit of any script (Unicode
    categories L* and N*). Punctuation, spaces, symbols and emoji alone are not; F5-TTS would
    turn them into noise of the length of their bytes."""
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
