"""Language names and codes of the dubbing stage: Whisper's (ISO 639-1 style, ``de``) and
NLLB-200's (FLORES-200, ``deu_Latn``), with errors that list the closest names.

Whisper's list is the one its tokenizer defines (``transformers.models.whisper.
tokenization_whisper.LANGUAGES``, copied from openai/whisper); NLLB's is stored as data in
``data/nllb_languages.json`` (the FLORES-200 codes with ISO 639-3 English names, see its
``source``).
"""
from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache

NLLB_PATH = os.path.join(os.path.dirname(__file__), "data", "nllb_languages.json")


class LanguageError(ValueError):
    """A language name or code that is not known; the message lists the closest names."""


def close_names(word: str, names: list[str], n: int = 5) -> list[str]:
    """Up to ``n`` entries of ``names`` closest to ``word`` (case-insensitive; prefix matches
    first, then difflib's ratio over 0.5)."""
    low = (word or "").strip().lower()
    by_low = {name.lower(): name for name in names}
    prefix = [by_low[k] for k in sorted(by_low) if low and (k.startswith(low[:3]))]
    fuzzy = [by_low[k] for k in difflib.get_close_matches(low, list(by_low), n=n, cutoff=0.5)]
    out: list[str] = []
    for name in fuzzy + prefix:
        if name not in out:
            out.append(name)
    return out[:n]


def unknown_language(what: str, value: str, names: list[str]) -> LanguageError:
    """The error for an unknown language: names ``what``, the value and the closest names."""
    near = close_names(value, names)
    hint = f"; closest: {', '.join(near)}" if near else ""
    return LanguageError(f"{what}: unknown language {value!r}{hint} ({len(names)} "
                         f"language{'s' if len(names) != 1 else ''} known)")


# --------------------------------------------------------------------------- Whisper

def whisper_languages() -> dict[str, str]:
    """Whisper's languages, code -> English name ('de' -> 'german'), in token order."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


def whisper_code(language: str, supported: list[str] | None = None) -> str:
    """Whisper code of a language name or code ('German', 'german', 'de', 'de-AT', 'deu_Latn').

    ``supported``: the codes a model folder has language tokens for (all of Whisper's when None).
    Raises LanguageError naming the closest known names.
    """
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    languages = whisper_languages()
    codes = supported if supported is not None else list(languages)
    value = (language or "").strip()
    low = value.lower()
    candidates = [low, low.replace("_", "-").split("-")[0]]
    code = ""
    for c in candidates:
        if c in languages:
            code = c
            break
        if c in TO_LANGUAGE_CODE:
            code = TO_LANGUAGE_CODE[c]
            break
    if not code and "_" in value:  # an NLLB code ('deu_Latn')
        entry = nllb_by_code().get(value)
        if entry and entry["iso639_1"] in languages:
            code = entry["iso639_1"]
    if not code or code not in codes:
        names = [languages[c].title() for c in codes if c in languages]
        raise unknown_language("Whisper", value, names)
    return code


def whisper_name(code: str) -> str:
    """'de' -> 'German' (the code itself when unknown)."""
    return whisper_languages().get(code, code).title()


# --------------------------------------------------------------------------- NLLB

@lru_cache(maxsize=1)
def _nllb() -> dict:
    with open(NLLB_PATH, encoding="utf-8") as f:
        return json.load(f)


def nllb_languages() -> list[dict]:
    """The 202 NLLB-200 languages: dicts with ``code`` ('deu_Latn'), ``name`` ('German') and
    ``iso639_1`` ('de', '' when it has none), in FLORES-200 order."""
    return list(_nllb()["languages"])


def nllb_by_code() -> dict[str, dict]:
    """`nllb_languages` keyed by NLLB code."""
    return {entry["code"]: entry for entry in _nllb()["languages"]}


def nllb_names() -> list[str]:
    """English names for dropdowns, sorted."""
    return sorted(entry["name"] for entry in _nllb()["languages"])


def nllb_code(language: str, what: str = "language") -> str:
    """NLLB code of a name ('German', 'chinese (simplified)'), an NLLB code ('deu_Latn') or a
    Whisper / ISO 639-1 code ('de', 'zh'; macrolanguages to NLLB's main variety: 'ar' ->
    'arb_Arab', 'zh' -> 'zho_Hans'). Raises LanguageError listing the closest names."""
    data = _nllb()
    value = (language or "").strip()
    low = value.lower()
    for entry in data["languages"]:
        if low in (entry["code"].lower(), entry["name"].lower()):
            return entry["code"]
    base = low.replace("_", "-").split("-")[0]
    if base in data["iso639_1_macro"]:
        return data["iso639_1_macro"][base]
    for entry in data["languages"]:
        if entry["iso639_1"] and entry["iso639_1"] == base:
            return entry["code"]
    if value and "_" not in value:
        try:  # a Whisper name or alias ('castilian' -> 'es')
            code = whisper_code(value)
        except LanguageError:
            code = base
        if code != base:
            return nllb_code(code, what)
    names = [entry["name"] for entry in data["languages"]]
    whisper = whisper_languages()
    if base in whisper:  # a language Whisper hears but NLLB-200 does not write (Latin, Breton)
        near = close_names(whisper[base], names)
        raise LanguageError(f"{what}: {whisper[base].title()} ({base}) is not one of NLLB-200's "
                            f"202 languages" + (f"; closest names: {', '.join(near)}" if near
                                                else ""))
    raise unknown_language(what, value, names)


def nllb_name(code: str) -> str:
    """'deu_Latn' -> 'German' (the code itself when unknown)."""
    entry = nllb_by_code().get(code)
    return entry["name"] if entry else code
