"""What the script stage asks the LLM, and how its reply is checked.

The reply is data: JSON objects are decoded from it with `json.JSONDecoder.raw_decode`, checked
against `SCRIPT_SCHEMA` by a small validator written for that fixed schema, and cleaned; nothing
in it is ever executed. Models (and servers that ignore ``format``) often wrap the object in a
code fence, put prose before it or add a remark after it: the first object in the reply that is
a valid script is used, so only a reply without one costs a retry.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from ..text_filters import remove_emoji
from .segments import is_cjk_language, speech_units

log = logging.getLogger("spinbot.script")

SYSTEM_PROMPT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                  "system_prompt.txt")
SCENES_SYSTEM_PROMPT_FILE = os.path.join(os.path.dirname(SYSTEM_PROMPT_FILE),
                                         "system_prompt_scenes.txt")

ONE_SCENE = "one scene"
SCENE_PER_SEGMENT = "scene per segment"
SCENE_MODES = (ONE_SCENE, SCENE_PER_SEGMENT)

# Sent to Ollama as `format`, which constrains decoding to it; checked again here because older
# servers, some models and proxies ignore it.
SCRIPT_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "stage": {"type": "string", "minLength": 1,
                  "description": "Image prompt for the scene, comma-separated phrases, English."},
        "narrative": {"type": "string", "minLength": 1,
                      "description": "The exact words the speaker says."},
    },
    "required": ["stage", "narrative"],
    "additionalProperties": False,
}

# "scene per segment": the narrative first, so the model has written the sentences it must
# give one scene each before it writes the scenes.
SCENES_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "narrative": {"type": "string", "minLength": 1,
                      "description": "The exact words the narrator says."},
        "scenes": {"type": "array", "minItems": 1,
                   "items": {"type": "string", "minLength": 1},
                   "description": "One image prompt per sentence of the narrative, in order, "
                                  "comma-separated phrases, English."},
    },
    "required": ["narrative", "scenes"],
    "additionalProperties": False,
}

_MAX_STAGE_CHARS = 2000
_MAX_SCENES = 200  # far more than any narration has segments; bounds a runaway reply


class ReplyError(ValueError):
    """The LLM's reply is not a usable script; the message is fed back to it on a retry."""


@dataclass(frozen=True)
class ScriptRequest:
    topic: str
    language: str = "English"
    tone: str = "warm, clear and conversational"
    target_seconds: float = 30.0
    words_per_second: float = 2.5
    trigger_word: str = ""
    scenes: str = ONE_SCENE  # one of SCENE_MODES
    character: str = ""  # fixed description of the character, put in every scene prompt

    @property
    def max_words(self) -> int:
        return max(3, int(self.target_seconds * self.words_per_second))

    @property
    def per_segment(self) -> bool:
        """Whether the LLM writes one scene prompt per narration segment."""
        if self.scenes not in SCENE_MODES:
            raise ValueError(f"scenes must be one of {', '.join(SCENE_MODES)}, got {self.scenes!r}")
        return self.scenes == SCENE_PER_SEGMENT


@lru_cache(maxsize=2)
def shipped_system_prompt(scenes: bool = False) -> str:
    """The shipped system prompt: data/system_prompt.txt, or data/system_prompt_scenes.txt for
    "scene per segment" scripts."""
    with open(SCENES_SYSTEM_PROMPT_FILE if scenes else SYSTEM_PROMPT_FILE, encoding="utf-8") as f:
        return f.read().strip()


def system_prompt(override: str = "", scenes: bool = False) -> str:
    return override.strip() or shipped_system_prompt(scenes)


def user_message(req: ScriptRequest) -> str:
    if is_cjk_language(req.language):
        # Characters, not words: CJK text has no spaces and one character is about half a word.
        length = (f"about {req.max_words * 2 * 9 // 10} characters, never more than "
                  f"{req.max_words * 2} characters")
    else:
        length = f"about {req.max_words * 9 // 10} words, never more than {req.max_words} words"
    lines = [
        f"Topic: {req.topic.strip()}",
        f"Narrative language: {req.language.strip() or 'English'}",
        f"Tone and style: {req.tone.strip() or 'natural'}",
        f"Length of the narrative: {length} (it is read aloud in at most "
        f"{req.target_seconds:g} seconds).",
    ]
    character = _one_line(req.character)
    if req.per_segment:
        lines.append('Scenes: "scenes" has exactly one image prompt per sentence of the narrative, '
                     "in the same order.")
        if character:
            lines.append(f'The main character is "{character}": every scene must contain these '
                         "exact words.")
        if req.trigger_word.strip():
            lines.append(f'The main character is "{req.trigger_word.strip()}": every scene must '
                         "contain these exact words, describing the character.")
        return "\n".join(lines)
    if character:
        lines.append(f'The speaker looks like this: "{character}": the stage must contain these '
                     "exact words.")
    if req.trigger_word.strip():
        lines.append(f'The speaker is "{req.trigger_word.strip()}": the stage must contain these '
                     "exact words, describing the speaker.")
    return "\n".join(lines)


def retry_message(error: str, cut_off: bool = False, scenes: bool = False) -> str:
    why = "It was cut off before the end; write a shorter one. " if cut_off else ""
    fields = ('the string field "narrative" and the array of strings "scenes" (one per sentence)'
              if scenes else 'the string fields "stage" and "narrative"')
    return (f"That reply could not be used: {error}. {why}Reply again with only a JSON object "
            f"with {fields}, and nothing else.")


def scene_count_message(segment_texts: list[str], n_scenes: int) -> str:
    """The retry for a reply whose scene count differs from its narrative's segment count: it
    lists the segments (as this pack splits them, which may differ from the model's idea of a
    sentence) so the model can write one scene for each."""
    listed = "\n".join(f"{k + 1}. {t}" for k, t in enumerate(segment_texts))
    n = len(segment_texts)
    return (f'That reply could not be used: the narrative has {n} segment{"s" if n != 1 else ""} '
            f'but "scenes" has {n_scenes} entr{"ies" if n_scenes != 1 else "y"}. The segments '
            f"are:\n{listed}\nReply again with only a JSON object with the same \"narrative\" "
            f'and the array "scenes" holding exactly {n} image prompts, one per segment, in '
            "this order, and nothing else.")


# Reasoning models (DeepSeek-R1, Qwen3, QwQ, ...) think aloud in such a block before they answer,
# and often draft the JSON there; what is inside is never the answer.
_REASONING_TAGS = r"think|thinking|reasoning"
_REASONING_BLOCK = re.compile(rf"<({_REASONING_TAGS})\b[^>]*>.*?</\1\s*>", re.S | re.I)
_REASONING_OPEN = re.compile(rf"<(?:{_REASONING_TAGS})\b[^>]*>", re.I)
_REASONING_CLOSE = re.compile(rf"</(?:{_REASONING_TAGS})\s*>", re.I)


def _strip_wrapping(raw: str) -> str:
    """The reply without its reasoning and surrounding space.

    Every ``<think>``, ``<thinking>`` or ``<reasoning>`` block (any case) is removed wherever it
    is; an opening tag that is never closed (a reply cut off at num_predict while reasoning)
    removes everything after it, and a closing tag without its opening one (templates that put
    ``<think>`` in the prompt) everything before it. Raises `ReplyError` when the reply ended
    inside its reasoning with no JSON object before it.
    """
    text = _REASONING_BLOCK.sub("", raw)
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _REASONING_OPEN.search(text)
    if opened:
        text = text[:opened.start()]
        if "{" not in text:  # nothing before the reasoning could be the answer
            raise ReplyError("the reply ended inside its reasoning (an unclosed <think> "
                             "block) before any JSON object")
    return text.strip()


# A reply is bounded by num_predict tokens; the cap only stops a pathological reply full of
# '{' from costing quadratic time.
_MAX_CANDIDATES = 200


def json_objects(text: str) -> Iterator[dict]:
    """Every JSON object that starts at a ``{`` of ``text``, in order of their first character.

    Decoding is tried from each ``{`` with `json.JSONDecoder.raw_decode`, which stops at the end
    of one complete value, so code fences, prose before and remarks after an object are ignored.
    Objects nested in an earlier one and ``{`` inside its strings are tried too (they rarely
    decode, and an invalid outer object may wrap a valid one). Nothing is evaluated.
    """
    decoder = json.JSONDecoder()
    pos = text.find("{")
    tried = 0
    while pos != -1 and tried < _MAX_CANDIDATES:
        tried += 1
        try:
            value, _end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                yield value
        pos = text.find("{", pos + 1)


def validate_reply(data: object, schema: dict = SCRIPT_SCHEMA) -> list[str]:
    """Problems of a parsed reply against `SCRIPT_SCHEMA` or `SCENES_SCHEMA` (empty when it can
    be used): a required field missing, of the wrong type or empty; for "scenes" also an entry
    that is not a non-empty string. Fields the schema does not define are not problems (models
    add "title" or "duration_seconds"); the parsers ignore and log them."""
    if not isinstance(data, dict):
        return [f"the reply must be a JSON object, not {type(data).__name__}"]
    problems = []
    for key in schema["required"]:
        spec = schema["properties"][key]
        if key not in data:
            problems.append(f'the field "{key}" is missing')
        elif spec["type"] == "array":
            value = data[key]
            if not isinstance(value, list):
                problems.append(f'"{key}" must be an array of strings, not '
                                f"{type(value).__name__}")
            elif len(value) < spec["minItems"]:
                problems.append(f'"{key}" is empty')
            else:
                bad = [k + 1 for k, v in enumerate(value)
                       if not isinstance(v, str) or not v.strip()]
                if bad:
                    problems.append(f'"{key}" entries {bad[:10]} are not non-empty strings')
        elif not isinstance(data[key], str):
            problems.append(f'"{key}" must be a string, not {type(data[key]).__name__}')
        elif len(data[key].strip()) < spec["minLength"]:
            problems.append(f'"{key}" is empty')
    return problems


def extra_fields(data: dict, schema: dict = SCRIPT_SCHEMA) -> list[str]:
    """Fields of a reply that the schema does not define (ignored, only logged)."""
    return sorted(str(k) for k in set(data) - set(schema["properties"]))


def clean_spoken_text(text: str) -> str:
    """Remove what a voice must not read: [stage directions], *emphasis*, markdown, emoji (every
    part of each sequence, by `text_filters.remove_emoji`, the filter F5-TTS reads through)."""
    text = re.sub(r"\[[^\]]*\]", " ", text)
    # *emphasis*, __bold__ (not the * in 6*7 or the _ in snake_case)
    text = re.sub(r"(?<!\w)(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)", r"\2", text)
    text = re.sub(r"(?m)^\s*#{1,6}\s+", "", text).replace("`", "")  # headings, code marks
    text = remove_emoji(text)  # the voice stage's own filter: both agree on what an emoji is
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    text = "\n\n".join(p for p in paragraphs if p)
    if len(text) >= 2 and text[0] == text[-1] == '"' and text.count('"') == 2:
        text = text[1:-1].strip()
    return text


def _one_line(text: str) -> str:
    return " ".join((text or "").split())


def _contains(prompt: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``prompt``, ignoring case, runs of whitespace and the
    phrase's own trailing punctuation ("a green coat." is in "..., a green coat, ...")."""
    needle = _one_line(phrase).rstrip(".,;: ").lower()
    return not needle or needle in _one_line(prompt).lower()


def clean_stage(stage: str, trigger_word: str = "", character: str = "") -> str:
    """An image prompt made fit for the image stage: one line, at most 2000 characters of the
    model's text, and guaranteed to contain ``character`` (the user's fixed description) and
    ``trigger_word``; each is put in front when missing ("trigger, character, prompt")."""
    stage = _one_line(stage)[:_MAX_STAGE_CHARS].strip()
    # The same character in every picture needs the same words in every prompt, and the
    # identity LoRA only takes effect with its trigger in the prompt: both are added here rather
    # than trusted to the LLM or paid for with another call.
    character = _one_line(character)
    if character and not _contains(stage, character):
        stage = f"{character}, {stage}" if stage else character
    word = trigger_word.strip()
    if word and word.lower() not in stage.lower():
        stage = f"{word}, {stage}" if stage else word
    return stage


def spread_scenes(scenes: list[str], count: int) -> list[str]:
    """``count`` scene prompts from ``len(scenes)`` others, in order: segment k gets scene
    ``floor(k * len(scenes) / count)``. Fewer scenes than segments: each covers a run of
    consecutive segments; more: every scene's slot is kept evenly and the ones between are
    dropped, so the first scene opens the story either way. Raises ValueError when there is no
    scene to spread."""
    if not scenes:
        raise ValueError("no scenes to spread over the segments")
    return [scenes[k * len(scenes) // count] for k in range(count)]


def _narrative_from(data: object, schema: dict) -> str:
    problems = validate_reply(data, schema)
    if problems:
        raise ReplyError("; ".join(problems))
    narrative = clean_spoken_text(data["narrative"])
    if speech_units(narrative) <= 0:  # nothing but punctuation, emoji or markup
        raise ReplyError('"narrative" has no speakable words')
    extra = extra_fields(data, schema)
    if extra:
        log.info("script reply: ignored extra fields %s", extra)
    return narrative


def _script_from(data: object, trigger_word: str, character: str = "") -> tuple[str, str]:
    narrative = _narrative_from(data, SCRIPT_SCHEMA)
    return clean_stage(data["stage"], trigger_word, character), narrative


def _scenes_from(data: object) -> tuple[str, list[str]]:
    narrative = _narrative_from(data, SCENES_SCHEMA)
    scenes = data["scenes"]
    if len(scenes) > _MAX_SCENES:
        raise ReplyError(f'"scenes" has {len(scenes)} entries, more than the {_MAX_SCENES} any '
                         "narration this long can have")
    return narrative, [_one_line(s)[:_MAX_STAGE_CHARS] for s in scenes]


def _first_valid(raw: str, extract):
    """``extract(obj)`` of the first JSON object in the reply that it accepts (see
    `parse_reply`), or the `ReplyError` of the first object, or one saying there is none."""
    text = _strip_wrapping(raw or "")
    if not text:
        raise ReplyError("the reply was empty")
    first_error: ReplyError | None = None
    for data in json_objects(text):
        try:
            return extract(data)
        except ReplyError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    try:  # no object: let the decoder say where the text stops being JSON
        json.loads(text[text.find("{"):] if "{" in text else text)
    except json.JSONDecodeError as exc:
        raise ReplyError(f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}); it holds no complete JSON object") from None
    raise ReplyError("the reply is not valid JSON: it holds no JSON object")


def parse_scene_reply(raw: str) -> tuple[str, list[str]]:
    """``(narrative, scenes)`` from a "scene per segment" reply (`SCENES_SCHEMA`), or
    `ReplyError`. Same decoding as `parse_reply`; the scenes are only made one line and capped
    at 2000 characters here: their count is checked against the narrative's segments, and the
    character and trigger word are added, by `script.write_script`."""
    return _first_valid(raw, _scenes_from)


def parse_reply(raw: str, trigger_word: str = "", character: str = "") -> tuple[str, str]:
    """``(stage, narrative)`` from the LLM's raw reply, or `ReplyError` saying what is wrong.

    Reasoning is removed first (`_strip_wrapping`), so a draft inside ``<think>`` is never
    taken. The first JSON object in the reply that is a valid script wins (see `json_objects`);
    fields beyond ``stage`` and ``narrative`` are ignored (logged). When none is, the error names
    the problems of the first object found, or says that the reply holds no JSON object at all.
    ``trigger_word`` and ``character`` are put into the stage when missing (`clean_stage`).
    """
    return _first_valid(raw, lambda data: _script_from(data, trigger_word, character))
