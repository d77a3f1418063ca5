"""Segments -> translated segments with NLLB-200 (M2M100; a transformers folder in
``models/translation/<folder>``).

Each segment is split into sentences (the script stage's splitter), a sentence longer than the
token limit into pieces at clause marks or between words, the pieces translated in one batch and
joined again; the segment keeps its start and end. Glossary terms are replaced by numbered
placeholders before translation and restored afterwards (models copy ``[T1]``-like tokens far
more reliably than names they may translate); a placeholder the model dropped is reported.
Each segment's translated pieces are cached on disk by a content key (model files, dtype,
languages, pieces), so a re-run after Cancel translates only the segments that had not finished.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from .. import model_cache, runtime
from ..manifest import require_model
from ..script.segments import Segment, split_sentences
from ..video.store import content_key
from .languages import nllb_by_code, nllb_code, nllb_name
from .transcribe import cache_load, cache_save

log = logging.getLogger("spinbot")

FOLDER = "translation"
DEFAULT_MODEL = "nllb-200-distilled-600M"
# The NLLB-200 model card: "trained with input lengths not exceeding 512 tokens"; sentences are
# what it was trained on, so pieces stay far below that by default.
DEFAULT_MAX_TOKENS = 200
MAX_TOKENS_LIMIT = 512
# Scripts written without spaces between words: translated pieces are joined without a space.
_NO_SPACE = {"zho_Hans", "zho_Hant", "yue_Hant", "jpn_Jpan", "tha_Thai", "lao_Laoo", "khm_Khmr",
             "mya_Mymr", "bod_Tibt", "dzo_Tibt"}
_PLACEHOLDER = re.compile(r"\[\s*T\s*(\d+)\s*\]", re.IGNORECASE)
_HAS_WORD = re.compile(r"[^\W\d_]", re.UNICODE)


class TranslateError(ValueError):
    """A bad input or a failed translation; the message names the input."""


# --------------------------------------------------------------------------- glossary

@dataclass(frozen=True)
class Term:
    """A glossary entry."""

    source: str  # as it appears in the source text (matched case-insensitively, whole words)
    target: str  # as it must appear in the translation (the source term itself by default)


def parse_glossary(text: str) -> list[Term]:
    """One term per line: ``Term`` (kept as written) or ``Term = Translation`` (``->`` and ``=>``
    work too). Blank lines and ``#`` comments are skipped; longer terms first, so 'New York
    Times' wins over 'New York'. Raises TranslateError for a line with an empty side."""
    terms: dict[str, Term] = {}
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*(?:=>|->|=)\s*", line, maxsplit=1)
        source = parts[0].strip()
        target = parts[1].strip() if len(parts) > 1 else source
        if not source or not target:
            raise TranslateError(f"glossary line {n} {raw!r}: write 'Term' or 'Term = "
                                 "Translation'")
        terms[source.lower()] = Term(source, target)
    return sorted(terms.values(), key=lambda t: -len(t.source))


def protect(text: str, terms: list[Term]) -> tuple[str, dict[int, Term]]:
    """Replace glossary terms in ``text`` by ``[T1]``, ``[T2]`` ... in reading order (whole
    words, case-insensitive, longest term first, one pass so a placeholder is never matched
    again); returns the text and placeholder number -> term."""
    found: dict[int, Term] = {}
    if not terms:
        return text, found
    by_low = {t.source.lower(): t for t in terms}
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t.source) for t in terms)
                         + r")(?!\w)", re.IGNORECASE)

    def sub(m) -> str:
        number = len(found) + 1
        found[number] = by_low[m.group(0).lower()]
        return f"[T{number}]"

    return pattern.sub(sub, text), found


def restore(text: str, found: dict[int, Term]) -> tuple[str, list[Term]]:
    """Put the glossary terms back for their placeholders; returns the text and the terms whose
    placeholder the model dropped. Placeholders of unknown numbers are removed."""
    seen: set[int] = set()

    def sub(m) -> str:
        number = int(m.group(1))
        if number in found:
            seen.add(number)
            return found[number].target
        return ""

    out = _PLACEHOLDER.sub(sub, text)
    out = re.sub(r"\s{2,}", " ", out).strip()
    return out, [term for number, term in found.items() if number not in seen]


# --------------------------------------------------------------------------- model

def list_translators() -> list[str]:
    """Translation folders (with config.json) in the translation model folder(s), for the
    dropdown; the default name when there are none."""
    names = [d for d in runtime.list_models(FOLDER, dirs=True)
             if runtime.find_model(FOLDER, f"{d}/config.json")]
    return names or [DEFAULT_MODEL]


def translator_path(name: str) -> str:
    """Folder of a translation model; MissingModelError (folder, name, source) when absent,
    TranslateError when it lacks config.json, weights or tokenizer files."""
    path = require_model(FOLDER, name)
    have = set(os.listdir(path)) if os.path.isdir(path) else set()
    missing = [f for f in ("config.json",) if f not in have]
    if not have & {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}:
        missing.append("model.safetensors")
    if not have & {"tokenizer.json", "sentencepiece.bpe.model"}:
        missing.append("tokenizer.json")
    if missing:
        raise TranslateError(f"translation model '{name}' ({path}) is not a transformers NLLB "
                             f"folder: {', '.join(missing)} missing (download every file of the "
                             "model's Hugging Face repository into it)")
    return path


@dataclass
class Translator:
    """A loaded NLLB folder: M2M100ForConditionalGeneration (on the CPU between runs) and its
    NLLB tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    dtype: torch.dtype
    stamp: str = ""  # file_stamp of the folder: part of the segment cache key

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)


def load_translator(name: str) -> Translator:
    """Model and tokenizer from the pack's model cache (on the CPU in the run dtype: float16 on
    CUDA, float32 elsewhere; moved to the device for a run)."""
    path = translator_path(name)
    dtype = runtime.torch_dtype(runtime.torch_device(), allow_bf16=False)
    key = ("translation", runtime.file_stamp(path), str(dtype))

    def load() -> Translator:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True,
                                                          dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise TranslateError(f"translation model '{name}' ({path}) cannot be loaded: "
                                 f"{exc}") from None
        return Translator(model.eval(), tokenizer, name, dtype, runtime.file_stamp(path))

    return model_cache.cached_model("translation", key, load, name=name,
                                    modules=lambda t: [t.model], limit=1)


@contextmanager
def _on_device(translator: Translator, device: torch.device):
    if device.type == "cpu":
        yield
        return
    size = sum(p.numel() * p.element_size() for p in translator.model.parameters())
    runtime.make_room(int(size * 1.5) + (256 << 20), device)
    translator.model.to(device)
    try:
        yield
    finally:
        translator.model.to("cpu")
        runtime.release_memory()


# --------------------------------------------------------------------------- splitting

def split_to_tokens(sentence: str, count, max_tokens: int) -> list[str]:
    """Pieces of ``sentence`` of at most ``max_tokens`` tokens by ``count(text)``: cut at the
    clause mark (, ; : —) nearest the middle, else between words, recursively. A single word over
    the limit stays whole (the model truncates it, which the report says)."""
    sentence = sentence.strip()
    if not sentence or count(sentence) <= max_tokens:
        return [sentence] if sentence else []
    points = [m.end() for m in re.finditer(r"[,;:—–]\s", sentence)]
    if not points:
        points = [m.start() for m in re.finditer(r"\s", sentence)]
    if not points:
        return [sentence]
    middle = len(sentence) / 2
    best = min(points, key=lambda p: abs(p - middle))
    left, right = sentence[:best].strip(), sentence[best:].strip()
    if not left or not right:
        return [sentence]
    return split_to_tokens(left, count, max_tokens) + split_to_tokens(right, count, max_tokens)


# --------------------------------------------------------------------------- translation

@dataclass
class Translation:
    """What `translate_segments` made: the translated segments and figures for the report."""

    segments: tuple[Segment, ...]
    source: str  # NLLB code
    target: str
    pieces: int
    split_sentences: int  # sentences over the token limit that were split
    dropped: list[tuple[int, str]]  # (segment index, glossary term the model dropped)
    notes: list[str]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()


def _generate(translator: Translator, pieces: list[str], forced: int, limit: int,
              device: torch.device) -> list[str]:
    """One batch of source pieces -> their translations (the tokenizer's src_lang set)."""
    tok = translator.tokenizer
    batch = tok(pieces, return_tensors="pt", padding=True, truncation=True,
                max_length=MAX_TOKENS_LIMIT).to(device)
    longest = int(batch["attention_mask"].sum(1).max())
    with torch.no_grad():
        ids = translator.model.generate(**batch, forced_bos_token_id=forced,
                                        max_new_tokens=max(16, min(limit, 2 * longest + 10)))
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def translate_segments(segments: tuple[Segment, ...] | list[Segment], translator: Translator,
                       source: str, target: str, glossary: list[Term] | None = None,
                       max_tokens: int = DEFAULT_MAX_TOKENS) -> Translation:
    """Translate every segment's text from ``source`` to ``target`` (names or codes, see
    languages.nllb_code; LanguageError lists close names). The result has one segment per input
    segment with the same index, start, end, estimated flag and scene, and the translated text.
    Checks Cancel between segments. Raises TranslateError for no segments or a bad max_tokens."""
    if not segments:
        raise TranslateError("no segments to translate (the transcription found no speech?)")
    if not 8 <= int(max_tokens) <= MAX_TOKENS_LIMIT:
        raise TranslateError(f"max_tokens must be 8..{MAX_TOKENS_LIMIT}, got {max_tokens}")
    src, tgt = nllb_code(source, "source language"), nllb_code(target, "target language")
    glossary = glossary or []
    tok = translator.tokenizer
    vocab_codes = set(nllb_by_code())
    for code, what in ((src, "source"), (tgt, "target")):
        if tok.convert_tokens_to_ids(code) in (None, tok.unk_token_id) and code in vocab_codes:
            raise TranslateError(f"translation model '{translator.name}' has no {what} language "
                                 f"token {code} ({nllb_name(code)})")
    iso = nllb_by_code()[src]["iso639_1"]
    joiner = "" if tgt in _NO_SPACE else " "
    gen = translator.model.generation_config
    limit = int(getattr(gen, "max_length", None) or 200)
    device = runtime.torch_device()
    out: list[Segment] = []
    notes: list[str] = []
    dropped: list[tuple[int, str]] = []
    pieces_total = split_count = reused = 0
    if src == tgt:
        # 'Term = Translation' entries still apply: the glossary promises them in the output.
        copied = []
        for seg in segments:
            protected, found = protect(seg.text, glossary)
            copied.append(replace(seg, text=restore(protected, found)[0]) if found else seg)
        changed = sum(a is not b for a, b in zip(copied, segments))
        notes.append(f"source and target are both {nllb_name(src)}: text copied unchanged"
                     + (f" except glossary terms ({changed} segment(s))" if changed else ""))
        return Translation(tuple(copied), src, tgt, 0, 0, [], notes)
    tok.src_lang = src
    forced = tok.convert_tokens_to_ids(tgt)
    count = translator.token_count
    with _on_device(translator, device), runtime.Progress(len(segments),
                                                          "SpinBot Translate") as bar:
        for seg in segments:
            runtime.check_interrupted()
            if not seg.text.strip():  # nothing to translate (a pause kept as a segment)
                out.append(seg)
                bar.update(1)
                continue
            protected, found = protect(seg.text, glossary)
            pieces: list[str] = []
            for sentence in split_sentences(protected, iso) or [protected.strip()]:
                parts = split_to_tokens(sentence, count, int(max_tokens))
                split_count += len(parts) > 1
                pieces.extend(p for p in parts if p)
            todo = [k for k, p in enumerate(pieces) if _HAS_WORD.search(_PLACEHOLDER.sub("", p))]
            results = list(pieces)  # pieces of only placeholders / numbers are kept as they are
            if todo:
                inputs = [pieces[k] for k in todo]
                key = content_key("nllb-segment", translator.stamp, str(translator.dtype), src,
                                  tgt, limit, inputs)
                cached = cache_load(key)
                texts = cached.get("texts") if cached else None
                if isinstance(texts, list) and len(texts) == len(todo):
                    reused += 1
                else:
                    texts = _generate(translator, inputs, forced, limit, device)
                    cache_save(key, {"texts": texts})
                for k, text in zip(todo, texts):
                    results[k] = str(text).strip()
            pieces_total += len(todo)
            text, lost = restore(joiner.join(r for r in results if r), found)
            for term in lost:
                dropped.append((seg.index, term.source))
            if not text.strip():
                notes.append(f"segment {seg.index}: the model returned no text; the original "
                             "text is kept")
                text = seg.text
            out.append(replace(seg, text=text))
            bar.update(1)
    if reused:
        notes.append(f"{reused} of {len(out)} segment(s) reused from the cache")
    return Translation(tuple(out), src, tgt, pieces_total, split_count, dropped, notes)
