"""Script nodes: guided (Ollama) and direct scripts, and subtitles from segment timings."""
from __future__ import annotations

import math

from .. import runtime
from ..media import check_audio
from .ollama_client import ScriptError, cached_model_names, default_host, normalize_host
from .prompts import ONE_SCENE, SCENE_MODES, ScriptRequest
from .script import SCRIPT_TYPE, Script, direct_script, write_script
from .segments import (DEFAULT_MAX_SEGMENT_SECONDS, DEFAULT_WORDS_PER_SECOND, SEGMENTS_TYPE,
                       coerce_segments, fit_to_duration, total_seconds)
from .subtitles import cues_from_segments, format_srt, format_vtt

CATEGORY = "SpinBot/script"
# Apache-2.0 (the 3B Qwen2.5 is not), follows JSON schemas well, writes German, Chinese and ~25
# other languages; ~4.7 GB at Ollama's default 4-bit, unloaded after the call (keep_alive 0).
DEFAULT_MODEL = "qwen2.5:7b"
MODEL_LIST_TIMEOUT = 1.0  # seconds; node definitions must come back fast even with no server

_OUTPUTS = ("STRING", "STRING", SCRIPT_TYPE, "STRING")
_OUTPUT_NAMES = ("stage", "narrative", "script", "info")
_OUTPUT_TOOLTIPS = (
    "The scene as an image prompt (English), with the trigger word and character when given; "
    "with a scene per segment, the first segment's scene.",
    "The words the avatar speaks.",
    "Stage, narrative and sentence segments with estimated timings (and each segment's scene "
    "prompt when there is one per segment), for the voice, image, animation and subtitle "
    "stages.",
    "What was made: segments with estimated timings, retries, trimming.",
)
_LANGUAGE = ("STRING", {"default": "English", "tooltip":
             "Language of the narrative, as a name or code (English, German, de, 中文...). "
             "It also picks the sentence rules used to split the narrative."})
_WPS = ("FLOAT", {"default": DEFAULT_WORDS_PER_SECOND, "min": 0.5, "max": 6.0, "step": 0.1,
                  "tooltip": "Speaking rate used to estimate durations (2.5 is about 150 words a "
                             "minute; a CJK character counts half a word)."})
_MAX_SEGMENT = ("FLOAT", {"default": DEFAULT_MAX_SEGMENT_SECONDS, "min": 2.0, "max": 60.0,
                          "step": 0.5, "tooltip": "Sentences estimated longer than this are split "
                                                  "at commas into several segments."})
_TRIGGER = ("STRING", {"default": "", "tooltip": "Trigger word of your identity LoRA (e.g. "
                       "'ohwx person'); the stage prompt is made to contain it."})
_CHARACTER = ("STRING", {"multiline": True, "default": "", "tooltip":
              "Optional fixed description of the character, e.g. 'a woman in her 30s with short "
              "red hair and a green coat'. The stage and every scene prompt are made to contain "
              "these exact words, so the same person appears in every picture."})


def _model_choices() -> tuple[list[str], str]:
    """Dropdown entries and default: the server's pulled models plus the recommended one, so saved
    and shipped workflows always hold a valid choice (an unpulled model fails with the
    `ollama pull` command to run)."""
    names = cached_model_names(default_host(), timeout=MODEL_LIST_TIMEOUT)
    default = DEFAULT_MODEL if DEFAULT_MODEL in names or not names else names[0]
    return names + ([DEFAULT_MODEL] if DEFAULT_MODEL not in names else []), default


def _outputs(script: Script) -> tuple:
    return (script.stage, script.narrative, script, script.summary())


class SpinBotScriptOllama:
    DESCRIPTION = ("Guided mode: a local LLM served by Ollama turns a topic into a two-part "
                   "script, the stage (an image prompt for the scene) and the narrative (the "
                   "words to speak), bounded by a target duration. With scenes 'scene per "
                   "segment' it writes one image prompt per narration segment instead, each "
                   "holding the character description and trigger word, for SpinBot Stage Image "
                   "to paint one picture per segment. The reply is constrained by a JSON schema, "
                   "validated, and retried with the problem fed back when malformed. "
                   "keep_alive 0 unloads the LLM afterwards so the GPU is free for the next "
                   "stages.")
    CATEGORY = CATEGORY
    FUNCTION = "write"
    RETURN_TYPES = _OUTPUTS
    RETURN_NAMES = _OUTPUT_NAMES
    OUTPUT_TOOLTIPS = _OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        choices, default = _model_choices()
        return {
            "required": {
                "topic": ("STRING", {"multiline": True, "default": "", "tooltip":
                          "What the video is about, in a sentence or a paragraph: subject, "
                          "audience, the point to make."}),
                "model": (choices, {"default": default, "tooltip":
                          "Ollama model, listed from the server at OLLAMA_HOST (refresh the page "
                          f"after `ollama pull`). {DEFAULT_MODEL} is always offered; type any "
                          "other name in custom_model."}),
                "host": ("STRING", {"default": "", "tooltip":
                         "Ollama server address, e.g. http://127.0.0.1:11434. Empty uses the "
                         "OLLAMA_HOST variable or the local default. Nothing else is contacted."}),
                "language": _LANGUAGE,
                "tone": ("STRING", {"default": "warm, clear and conversational", "tooltip":
                         "Tone and style of the narrative (e.g. 'energetic and motivational', "
                         "'calm storyteller')."}),
                "target_seconds": ("FLOAT", {"default": 30.0, "min": 3.0, "max": 600.0,
                                             "step": 1.0, "tooltip":
                                             "Length of the narration when spoken; it bounds the "
                                             "words asked for, and a longer reply is trimmed at a "
                                             "sentence boundary."}),
                "words_per_second": _WPS,
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                                 "control_after_generate": False, "tooltip":
                                 "Sampling seed: the same seed, model and inputs give the same "
                                 "script. Change it for a different script."}),
                "temperature": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 2.0, "step": 0.05,
                                          "tooltip": "Creativity of the wording; 0 is the most "
                                                     "predictable."}),
                "keep_alive": ("INT", {"default": 0, "min": -1, "max": 86400, "tooltip":
                               "Seconds Ollama keeps the model loaded after the call. 0 unloads "
                               "it at once to free VRAM for image and video models; -1 keeps "
                               "it loaded."}),
                "max_retries": ("INT", {"default": 2, "min": 0, "max": 5, "tooltip":
                                "How many times a malformed reply is retried (with the problem "
                                "explained to the model) before the node fails."}),
                "max_segment_seconds": _MAX_SEGMENT,
            },
            "optional": {
                "trigger_word": _TRIGGER,
                "system_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                  "Replaces the shipped system prompt when not empty (see "
                                  "nodes/script/data/system_prompt.txt). The JSON format is "
                                  "enforced either way."}),
                "custom_model": ("STRING", {"default": "", "tooltip":
                                 "A model name to use instead of the dropdown, e.g. one on "
                                 "another host or not pulled yet (llama3.1:8b, mistral...)."}),
                "scenes": (list(SCENE_MODES), {"default": ONE_SCENE, "tooltip":
                           "'one scene': one stage prompt for the whole video. 'scene per "
                           "segment': one image prompt per narration segment, carried by the "
                           "script's segments (and the voice stage's), so SpinBot Stage Image "
                           "paints each segment from its own scene; a wrong scene count is asked "
                           "again, and on the last try spread evenly over the segments."}),
                "character": _CHARACTER,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        # Accept names missing from the current list (a saved workflow, a server that is down
        # while queueing): the call itself says what is wrong and how to fix it.
        return True if isinstance(model, str) and model.strip() else "choose an Ollama model"

    def write(self, topic, model, host, language, tone, target_seconds, words_per_second, seed,
              temperature, keep_alive, max_retries, max_segment_seconds, trigger_word="",
              system_prompt="", custom_model="", scenes=ONE_SCENE, character=""):
        host = normalize_host(host) if host.strip() else default_host()
        req = ScriptRequest(topic=topic, language=language, tone=tone,
                            target_seconds=float(target_seconds),
                            words_per_second=float(words_per_second),
                            trigger_word=trigger_word or "", scenes=scenes or ONE_SCENE,
                            character=character or "")
        # streamed pieces expected: ~2 per narrative word, plus the scene prompts when asked
        extra = req.max_words * 4 if req.scenes != ONE_SCENE else 0
        with runtime.Progress(req.max_words * 2 + 120 + extra, desc="Ollama script") as bar:
            def on_chunk(_n: int) -> None:
                runtime.check_interrupted()
                bar.update(1)

            script = write_script(req, host, (custom_model or "").strip() or model, seed=seed,
                                  temperature=temperature, keep_alive=keep_alive,
                                  max_retries=max_retries,
                                  system_prompt_override=system_prompt or "",
                                  max_segment_seconds=max_segment_seconds, on_chunk=on_chunk)
        return _outputs(script)


class SpinBotDirectScript:
    DESCRIPTION = ("Direct mode: your own narration (and optionally a scene prompt, or one scene "
                   "prompt per segment) become the same script outputs as the Ollama node, with "
                   "no LLM. The narration is split into sentence segments with estimated "
                   "timings; nothing is rewritten.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = _OUTPUTS
    RETURN_NAMES = _OUTPUT_NAMES
    OUTPUT_TOOLTIPS = _OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "narration": ("STRING", {"multiline": True, "default": "", "tooltip":
                              "The exact words the avatar says. Blank lines always end a "
                              "segment."}),
                "language": _LANGUAGE,
                "words_per_second": _WPS,
                "max_segment_seconds": _MAX_SEGMENT,
            },
            "optional": {
                "scene_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                 "Image prompt for the scene. Empty gives a neutral head-and-"
                                 "shoulders portrait prompt (unused when you bring your own "
                                 "image)."}),
                "trigger_word": _TRIGGER,
                "scene_prompts": ("STRING", {"multiline": True, "default": "", "tooltip":
                                  "Optional: one image prompt per line, line k for segment k, so "
                                  "SpinBot Stage Image paints each segment from its own scene. "
                                  "Fewer lines than segments: the last line also paints the rest; "
                                  "more lines than segments is an error listing the segments."}),
                "character": _CHARACTER,
            },
        }

    def make(self, narration, language, words_per_second, max_segment_seconds,
             scene_prompt="", trigger_word="", scene_prompts="", character=""):
        return _outputs(direct_script(narration, scene_prompt or "", language, words_per_second,
                                      max_segment_seconds, trigger_word or "",
                                      scene_prompts or "", character or ""))


class SpinBotSubtitles:
    DESCRIPTION = ("Builds SRT and WebVTT subtitles from segment timings: measured ones from the "
                   "voice stage when 'segments' is connected, otherwise the script's estimates "
                   "(stretched to the audio's length when audio is connected). Lines are wrapped "
                   "to a maximum width; a segment that needs more lines is split into timed cues.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("srt", "vtt")
    OUTPUT_TOOLTIPS = ("SubRip text, e.g. for Video Combine's subtitles input.",
                       "The same cues as WebVTT text.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "max_chars_per_line": ("INT", {"default": 42, "min": 10, "max": 200, "tooltip":
                                       "Line width in characters; CJK characters count as two. "
                                       "42 is the usual limit for Latin scripts."}),
                "max_lines": ("INT", {"default": 2, "min": 1, "max": 4, "tooltip":
                              "Lines per cue; longer segments are shown as several cues."}),
                "offset_seconds": ("FLOAT", {"default": 0.0, "min": -3600.0, "max": 3600.0,
                                             "step": 0.01, "tooltip":
                                             "Shift every cue by this much (e.g. when the video "
                                             "starts with an intro)."}),
            },
            "optional": {
                "script": (SCRIPT_TYPE, {"tooltip": "A script; its segments carry estimated "
                                                    "timings."}),
                "segments": (SEGMENTS_TYPE, {"tooltip": "Segments with measured timings from "
                                                        "the voice stage; preferred over the "
                                                        "script's."}),
                "audio": ("AUDIO", {"tooltip": "The narration audio: estimated timings are "
                                               "stretched to its duration."}),
            },
        }

    def build(self, max_chars_per_line, max_lines, offset_seconds, script=None, segments=None,
              audio=None):
        source = segments if segments is not None else script
        if source is None:
            raise ScriptError("connect a script or segments to make subtitles from")
        segs = coerce_segments(source)
        if not segs:
            raise ScriptError("there are no segments to make subtitles from")
        if audio is not None:
            wave, rate = check_audio(audio, "audio")
            segs = fit_to_duration(segs, wave.shape[-1] / rate)
        if not math.isfinite(offset_seconds):  # NaN passes ComfyUI's min/max validation
            raise ScriptError(f"offset_seconds must be a finite number, got {offset_seconds}")
        if total_seconds(segs) + offset_seconds <= 0:
            raise ScriptError("all subtitles would end before the video starts (check the offset)")
        cues = cues_from_segments(segs, max_chars_per_line, max_lines, offset_seconds)
        return (format_srt(cues), format_vtt(cues))


NODE_CLASS_MAPPINGS = {
    "SpinBotScriptOllama": SpinBotScriptOllama,
    "SpinBotDirectScript": SpinBotDirectScript,
    "SpinBotSubtitles": SpinBotSubtitles,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SpinBotScriptOllama": "SpinBot Script (Ollama)",
    "SpinBotDirectScript": "SpinBot Direct Script",
    "SpinBotSubtitles": "SpinBot Subtitles",
}
