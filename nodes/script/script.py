"""The SPINBOT_SCRIPT value and the two ways to make one: an LLM (guided) or the user (direct)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .ollama_client import ScriptError, chat_json
from .prompts import (SCRIPT_SCHEMA, ReplyError, ScriptRequest, clean_stage, parse_reply,
                      retry_message, system_prompt, user_message)
from .segments import (DEFAULT_MAX_SEGMENT_SECONDS, DEFAULT_WORDS_PER_SECOND, Segment,
                       make_segments, speech_units, total_seconds, trim_to_seconds)

SCRIPT_TYPE = "SPINBOT_SCRIPT"

# Used when direct mode gets no scene prompt, so the image stage always has one to work with.
DEFAULT_SCENE = ("portrait photo of a person talking to the camera, head and shoulders, looking at "
                 "the viewer, soft studio lighting, plain softly blurred background, sharp focus, "
                 "natural skin, high detail")


@dataclass(frozen=True)
class Script:
    stage: str  # image prompt for the scene
    narrative: str  # the words to speak
    segments: tuple[Segment, ...]  # the narrative in sentence segments, estimated timings
    language: str = "English"
    words_per_second: float = DEFAULT_WORDS_PER_SECOND
    source: str = "direct"  # "direct" or "ollama"
    topic: str = ""
    model: str = ""
    trimmed: bool = False  # the LLM's narrative was cut to fit the target duration
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def estimated_seconds(self) -> float:
        return total_seconds(self.segments)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "narrative": self.narrative, "language": self.language,
                "words_per_second": self.words_per_second, "source": self.source,
                "topic": self.topic, "model": self.model, "trimmed": self.trimmed,
                "segments": [s.to_dict() for s in self.segments]}

    def summary(self) -> str:
        head = f"{self.source} script" + (f" by {self.model}" if self.model else "")
        lines = [f"{head}: {len(self.segments)} segments, about {self.estimated_seconds:.1f} s "
                 f"at {self.words_per_second:g} words/s ({self.language})"]
        lines += list(self.notes)
        lines += [f"  {s.index + 1:>3}. [{s.start:6.2f}-{s.end:6.2f}] {s.text}"
                  for s in self.segments]
        return "\n".join(lines)


def direct_script(narration: str, scene_prompt: str = "", language: str = "English",
                  words_per_second: float = DEFAULT_WORDS_PER_SECOND,
                  max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
                  trigger_word: str = "") -> Script:
    """A script from the user's own words (direct mode): nothing is rewritten or trimmed."""
    narrative = narration.strip()
    if not narrative:
        raise ScriptError("the narration is empty: type the words the avatar should say")
    if speech_units(narrative) <= 0:
        # Only punctuation, emoji or symbols: a voice would read them as noise.
        shown = narrative if len(narrative) <= 60 else narrative[:60] + "..."
        raise ScriptError(f"the narration {shown!r} has no words to speak (only punctuation, "
                          "symbols or emoji): type the words the avatar should say")
    segments = make_segments(narrative, words_per_second, language, max_segment_seconds)
    if not segments:
        raise ScriptError("the narration has no words to speak")
    stage = clean_stage(scene_prompt or DEFAULT_SCENE, trigger_word)
    return Script(stage, narrative, segments, language, words_per_second, "direct")


def _num_predict(req: ScriptRequest) -> int:
    # Narrative tokens (CJK and non-English text take ~2-3 tokens a word) plus the stage and the
    # JSON around them. A cap, not a target: the length itself is asked for in the prompt.
    return max(256, req.max_words * 3 + 320)


def write_script(req: ScriptRequest, host: str, model: str, *, seed: int = 0,
                 temperature: float = 0.7, keep_alive: float | str = 0, max_retries: int = 2,
                 system_prompt_override: str = "",
                 max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
                 timeout: float = 300.0,
                 on_chunk: Callable[[int], None] | None = None) -> Script:
    """Ask the model for a stage + narrative; retry malformed replies with the problem fed back.

    After ``max_retries`` retries it fails with the last problem and the start of the last reply.
    A narrative longer than the target duration is trimmed at a sentence boundary.
    """
    if not req.topic.strip():
        raise ScriptError("the topic is empty: describe what the video should be about")
    if not model.strip():
        raise ScriptError("no Ollama model chosen: pick one or type its name")
    if not all(math.isfinite(v) and v > 0 for v in (req.words_per_second, req.target_seconds)):
        raise ScriptError("target_seconds and words_per_second must be positive finite numbers, "
                          f"got {req.target_seconds} and {req.words_per_second}")
    model = model.strip()
    messages = [{"role": "system", "content": system_prompt(system_prompt_override)},
                {"role": "user", "content": user_message(req)}]
    attempts = max_retries + 1
    problem, content = "", ""
    notes: list[str] = []
    for attempt in range(1, attempts + 1):
        content, done_reason = chat_json(
            host, model, messages, SCRIPT_SCHEMA, seed=seed, temperature=temperature,
            keep_alive=keep_alive, num_predict=_num_predict(req), timeout=timeout,
            on_chunk=on_chunk)
        try:
            stage, narrative = parse_reply(content, req.trigger_word)
        except ReplyError as exc:
            problem = str(exc)
            notes.append(f"attempt {attempt}: {problem}")
            feedback = retry_message(problem, cut_off=done_reason == "length")
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": feedback}]
            continue
        narrative, trimmed = trim_to_seconds(narrative, req.target_seconds, req.words_per_second,
                                             req.language)
        if trimmed:
            notes.append("narrative trimmed at a sentence boundary to fit "
                         f"{req.target_seconds:g} s")
        segments = make_segments(narrative, req.words_per_second, req.language,
                                 max_segment_seconds)
        return Script(stage, narrative, segments, req.language, req.words_per_second, "ollama",
                      req.topic.strip(), model, trimmed, tuple(notes))
    shown = content if len(content) <= 600 else content[:600] + f"... ({len(content)} characters)"
    raise ScriptError(
        f"Model '{model}' at {host} gave no usable script in {attempts} attempt"
        f"{'s' if attempts > 1 else ''}. Last problem: {problem}. Last reply: {shown!r}. "
        "Try another seed, a lower temperature or a larger model.")
