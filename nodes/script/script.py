"""The SPINBOT_SCRIPT value and the two ways to make one: an LLM (guided) or the user (direct)."""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Callable

from .ollama_client import ScriptError, chat_json
from .prompts import (SCENES_SCHEMA, SCRIPT_SCHEMA, ReplyError, ScriptRequest, clean_stage,
                      parse_reply, parse_scene_reply, retry_message, scene_count_message,
                      spread_scenes, system_prompt, user_message)
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
        for s in self.segments:
            lines.append(f"  {s.index + 1:>3}. [{s.start:6.2f}-{s.end:6.2f}] {s.text}")
            if s.scene:
                lines.append(f"       scene: {s.scene}")
        return "\n".join(lines)


def with_scenes(segments: tuple[Segment, ...], scenes: list[str], trigger_word: str = "",
                character: str = "") -> tuple[Segment, ...]:
    """``segments`` with ``scenes[k]`` as segment k's scene (one scene per segment, same order),
    each made to contain ``character`` and ``trigger_word`` (`prompts.clean_stage`)."""
    if len(scenes) != len(segments):
        raise ValueError(f"{len(scenes)} scenes for {len(segments)} segments")
    return tuple(replace(seg, scene=clean_stage(scene, trigger_word, character))
                 for seg, scene in zip(segments, scenes))


def direct_script(narration: str, scene_prompt: str = "", language: str = "English",
                  words_per_second: float = DEFAULT_WORDS_PER_SECOND,
                  max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
                  trigger_word: str = "", scene_prompts: str = "", character: str = "") -> Script:
    """A script from the user's own words (direct mode): nothing is rewritten or trimmed.

    ``scene_prompts``: one image prompt per line (blank lines skipped), line k for segment k.
    With fewer lines than segments the last line also paints the remaining segments (said in
    the notes); more lines than segments is a `ScriptError` listing the segments, since a scene
    would otherwise be silently dropped. Every scene and the stage are made to contain
    ``character`` and ``trigger_word``. Without scene lines the segments have no scene and the
    image stage paints them from the stage prompt, as before.
    """
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
    lines = [" ".join(line.split()) for line in (scene_prompts or "").splitlines()]
    # A line of only invisible format characters (a pasted zero-width space) is blank too.
    lines = [line for line in lines if any(unicodedata.category(c) != "Cf" for c in line)]
    notes: list[str] = []
    if lines:
        if len(lines) > len(segments):
            listed = "; ".join(f"{s.index + 1}. {s.text}" for s in segments)
            raise ScriptError(f"{len(lines)} scene prompt lines for {len(segments)} segments: "
                              f"give one line per segment (the narration splits into: "
                              f"{listed})")
        if len(lines) < len(segments):
            first = len(lines) + 1
            notes.append(f"{len(lines)} scene lines for {len(segments)} segments: segments "
                         f"{first}-{len(segments)} repeat the last scene line")
            lines += [lines[-1]] * (len(segments) - len(lines))
        segments = with_scenes(segments, lines, trigger_word, character)
    stage = clean_stage(scene_prompt or (segments[0].scene if lines else DEFAULT_SCENE),
                        trigger_word, character)
    return Script(stage, narrative, segments, language, words_per_second, "direct",
                  notes=tuple(notes))


def _num_predict(req: ScriptRequest) -> int:
    # Narrative tokens (CJK and non-English text take ~2-3 tokens a word) plus the stage and the
    # JSON around them. A cap, not a target: the length itself is asked for in the prompt.
    tokens = max(256, req.max_words * 3 + 320)
    if req.per_segment:
        # One scene of <= 60 words (~100 tokens) per sentence; a spoken sentence is ~8 words or
        # more, so max_words / 6 + 2 sentences is a generous bound.
        tokens += (req.max_words // 6 + 2) * 100
    return tokens


def write_script(req: ScriptRequest, host: str, model: str, *, seed: int = 0,
                 temperature: float = 0.7, keep_alive: float | str = 0, max_retries: int = 2,
                 system_prompt_override: str = "",
                 max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
                 timeout: float = 300.0,
                 on_chunk: Callable[[int], None] | None = None) -> Script:
    """Ask the model for a stage + narrative; retry malformed replies with the problem fed back.

    After ``max_retries`` retries it fails with the last problem and the start of the last reply.
    A narrative longer than the target duration is trimmed at a sentence boundary.

    ``req.scenes == "scene per segment"``: the model writes the narrative and a list of scene
    prompts (`SCENES_SCHEMA`). Malformed replies are retried as above. The scene count is checked
    against the segments the narrative splits into (`make_segments`, before trimming): on a
    mismatch the model is asked again with the segments listed while retries remain; on the
    last attempt the scenes are spread over the segments instead (`spread_scenes`), said in the
    notes, so a count mismatch alone never fails the node. When trimming cuts the narrative,
    the scenes of the cut segments are dropped. Each segment's ``scene`` is made to contain
    ``req.character`` and ``req.trigger_word``; the script's stage is the first segment's scene.
    """
    if not req.topic.strip():
        raise ScriptError("the topic is empty: describe what the video should be about")
    if not model.strip():
        raise ScriptError("no Ollama model chosen: pick one or type its name")
    if not all(math.isfinite(v) and v > 0 for v in (req.words_per_second, req.target_seconds)):
        raise ScriptError("target_seconds and words_per_second must be positive finite numbers, "
                          f"got {req.target_seconds} and {req.words_per_second}")
    try:
        per_segment = req.per_segment
    except ValueError as exc:
        raise ScriptError(str(exc)) from None
    model = model.strip()
    schema = SCENES_SCHEMA if per_segment else SCRIPT_SCHEMA
    messages = [{"role": "system", "content": system_prompt(system_prompt_override, per_segment)},
                {"role": "user", "content": user_message(req)}]
    attempts = max_retries + 1
    problem, content = "", ""
    notes: list[str] = []
    for attempt in range(1, attempts + 1):
        content, done_reason = chat_json(
            host, model, messages, schema, seed=seed, temperature=temperature,
            keep_alive=keep_alive, num_predict=_num_predict(req), timeout=timeout,
            on_chunk=on_chunk)
        scenes: list[str] = []
        try:
            if per_segment:
                narrative, scenes = parse_scene_reply(content)
            else:
                stage, narrative = parse_reply(content, req.trigger_word, req.character)
        except ReplyError as exc:
            problem = str(exc)
            notes.append(f"attempt {attempt}: {problem}")
            feedback = retry_message(problem, cut_off=done_reason == "length",
                                     scenes=per_segment)
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": feedback}]
            continue
        if per_segment:
            written = make_segments(narrative, req.words_per_second, req.language,
                                    max_segment_seconds)
            if len(scenes) != len(written):
                problem = (f"{len(scenes)} scenes for the {len(written)} segments of the "
                           "narrative")
                if attempt < attempts:
                    notes.append(f"attempt {attempt}: {problem}")
                    messages += [{"role": "assistant", "content": content},
                                 {"role": "user", "content": scene_count_message(
                                     [s.text for s in written], len(scenes))}]
                    continue
                notes.append(f"attempt {attempt}: {problem}; spread evenly over the segments "
                             "(no retries left)")
                scenes = spread_scenes(scenes, len(written))
        narrative, trimmed = trim_to_seconds(narrative, req.target_seconds, req.words_per_second,
                                             req.language)
        if trimmed:
            notes.append("narrative trimmed at a sentence boundary to fit "
                         f"{req.target_seconds:g} s")
        segments = make_segments(narrative, req.words_per_second, req.language,
                                 max_segment_seconds)
        if per_segment:
            # Trimming keeps whole leading sentences, so the kept segments are the first ones
            # (its rare clause cut of a single overlong sentence is spread like a mismatch).
            kept = (scenes[:len(segments)] if len(segments) <= len(scenes)
                    else spread_scenes(scenes, len(segments)))
            segments = with_scenes(segments, kept, req.trigger_word, req.character)
            stage = segments[0].scene
        return Script(stage, narrative, segments, req.language, req.words_per_second, "ollama",
                      req.topic.strip(), model, trimmed, tuple(notes))
    shown = content if len(content) <= 600 else content[:600] + f"... ({len(content)} characters)"
    raise ScriptError(
        f"Model '{model}' at {host} gave no usable script in {attempts} attempt"
        f"{'s' if attempts > 1 else ''}. Last problem: {problem}. Last reply: {shown!r}. "
        "Try another seed, a lower temperature or a larger model.")
