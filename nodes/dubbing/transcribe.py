"""Speech -> timed segments with Whisper (a transformers folder in ``models/whisper/<folder>``).

The audio is mixed to mono and resampled to 16 kHz (Whisper's rate). Long audio is read in
windows of Whisper's fixed 30 s input the way openai/whisper's own ``transcribe`` does: each
window is decoded with timestamps, the segments it completed are kept, and the next window starts
where the last complete segment ended (a segment cut by the window edge is decoded again from its
start), so times are continuous and monotonic across windows. Stretches with no signal are
skipped before decoding (Whisper invents text in silence). Word times come from the cross-
attention alignment heads (DTW) when the folder's generation_config names them.

Every window's decoded tokens (and the detected language) are cached on disk
(``<temp>/spinbot-dub-text/<key>.json``, written atomically) by a content key of the window's
samples, the model files, dtype and settings, so a re-run after Cancel decodes only the windows
that had not finished.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import model_cache, runtime
from ..files import atomic_path, trim_oldest
from ..manifest import require_model
from ..media import check_audio, mix_channels, resample
from ..script.segments import Segment
from ..video.store import content_key
from .languages import LanguageError, whisper_code, whisper_name

log = logging.getLogger("spinbot")

FOLDER = "whisper"
DEFAULT_MODEL = "whisper-large-v3-turbo"
SAMPLE_RATE = 16000  # Whisper's feature extractor rate (WhisperFeatureExtractor.sampling_rate)
WINDOW_SECONDS = 30.0  # Whisper's fixed input (chunk_length 30 s = 3000 mel frames)
TIME_PRECISION = 0.02  # seconds per timestamp token (<|0.00|>, <|0.02|> ...), openai/whisper
MAX_NEW_TOKENS = 440  # max_target_positions 448 minus the 4-token prompt and one spare
# Silence detection: 20 ms frames; a frame is "signal" above -50 dBFS RMS and within 45 dB of the
# loudest frame. Quieter than that no speech can be transcribed; openai/whisper's no_speech
# threshold works on the model's own guess, which random or small models make unreliable.
FRAME_SECONDS = 0.02
ABS_FLOOR_DB = -50.0
REL_FLOOR_DB = 45.0
MIN_SEGMENT_SECONDS = 0.1
CACHE_SUBDIR = "spinbot-dub-text"  # Whisper windows and NLLB segments
CACHE_MAX_FILES = 4000  # oldest windows go first over this (a few KB each: ~33 h of audio)


class TranscribeError(ValueError):
    """A bad input or a failed transcription; the message names the input."""


@dataclass(frozen=True)
class Word:
    """One word and its times in seconds from the start of the audio (alignment heads, DTW)."""

    text: str
    start: float
    end: float


@dataclass
class Transcript:
    """What `transcribe` found: measured segments, the language (Whisper code), word times
    (empty without alignment heads), windows decoded and notes for the report."""

    segments: tuple[Segment, ...]
    language: str  # Whisper code ('de')
    words: list[Word] = field(default_factory=list)
    word_level: bool = False
    windows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def words_json(self) -> str:
        return json.dumps([{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
                           for w in self.words], ensure_ascii=False)


# --------------------------------------------------------------------------- model

def list_whisper() -> list[str]:
    """Whisper folders (with config.json) in the whisper model folder(s), for the dropdown."""
    names = [d for d in runtime.list_models(FOLDER, dirs=True)
             if runtime.find_model(FOLDER, f"{d}/config.json")]
    return names or [DEFAULT_MODEL]


def whisper_path(name: str) -> str:
    """Folder of a Whisper model; MissingModelError (folder, name, source) when absent,
    TranscribeError when the folder is not a transformers Whisper folder."""
    path = require_model(FOLDER, name)
    have = set(os.listdir(path)) if os.path.isdir(path) else set()
    missing = [] if "config.json" in have else ["config.json"]
    # transformers 5's processor.save_pretrained writes processor_config.json instead
    if not have & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("preprocessor_config.json")
    weights = have & {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}
    if missing or not weights:
        what = ", ".join(missing + ([] if weights else ["model.safetensors"]))
        raise TranscribeError(f"Whisper model '{name}' ({path}) is not a transformers Whisper "
                              f"folder: {what} missing (download every file of the model's "
                              "Hugging Face repository into it)")
    return path


@dataclass
class Whisper:
    """A loaded Whisper folder: WhisperForConditionalGeneration (eager attention, on the CPU
    between runs) and its WhisperProcessor (feature extractor + tokenizer)."""

    model: torch.nn.Module
    processor: object
    name: str
    dtype: torch.dtype
    stamp: str = ""  # file_stamp of the folder: part of the window cache key

    @property
    def generation_config(self):
        return self.model.generation_config

    def languages(self) -> list[str]:
        """Codes of the languages this model has tokens for ([] for English-only models)."""
        lang_to_id = getattr(self.generation_config, "lang_to_id", None) or {}
        return [tok[2:-2] for tok in lang_to_id]

    def has_alignment_heads(self) -> bool:
        return bool(getattr(self.generation_config, "alignment_heads", None))


def load_whisper(name: str) -> Whisper:
    """Model and processor from the pack's model cache (loaded on the CPU in the run dtype:
    float16 on CUDA, float32 elsewhere; moved to the device for a run). Eager attention, since
    word timestamps need the cross-attention weights."""
    path = whisper_path(name)
    device = runtime.torch_device()
    dtype = runtime.torch_dtype(device, allow_bf16=False)
    key = ("whisper", runtime.file_stamp(path), str(dtype))

    def load() -> Whisper:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
            model = WhisperForConditionalGeneration.from_pretrained(
                path, local_files_only=True, dtype=dtype, attn_implementation="eager")
        except (OSError, ValueError, KeyError) as exc:
            raise TranscribeError(f"Whisper model '{name}' ({path}) cannot be loaded: {exc}") \
                from None
        return Whisper(model.eval(), processor, name, dtype, runtime.file_stamp(path))

    return model_cache.cached_model("whisper", key, load, name=name,
                                    modules=lambda w: [w.model], limit=1)


@contextmanager
def _on_device(whisper: Whisper, device: torch.device):
    if device.type == "cpu":
        yield
        return
    size = sum(p.numel() * p.element_size() for p in whisper.model.parameters())
    runtime.make_room(int(size * 1.5) + (256 << 20), device)
    whisper.model.to(device)
    try:
        yield
    finally:
        whisper.model.to("cpu")
        runtime.release_memory()


# --------------------------------------------------------------------------- audio

def audio_16k_mono(audio: dict, what: str = "audio") -> tuple[np.ndarray, list[str]]:
    """AUDIO (any rate, channels, sample type; see media.check_audio) -> float32 ``[T]`` at
    16 kHz mono plus notes on what was converted. Raises MediaError for a bad AUDIO."""
    notes: list[str] = []
    wave, rate = check_audio(audio, what, notes)
    mono, note = mix_channels(wave, 1)
    if note:
        notes.append(note)
    if rate != SAMPLE_RATE:
        notes.append(f"{what}: resampled {rate} Hz -> {SAMPLE_RATE} Hz")
    return resample(mono, rate, SAMPLE_RATE)[0].numpy().astype(np.float32), notes


def signal_frames(wave: np.ndarray) -> np.ndarray:
    """Boolean per 20 ms frame: True where there is signal (see ABS_FLOOR_DB, REL_FLOOR_DB)."""
    hop = int(FRAME_SECONDS * SAMPLE_RATE)
    n = max(1, -(-len(wave) // hop))
    padded = np.zeros(n * hop, dtype=np.float64)
    padded[:len(wave)] = wave
    rms = np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    return (db > ABS_FLOOR_DB) & (db > db.max() - REL_FLOOR_DB)


# --------------------------------------------------------------------------- window cache

def cache_dir() -> str:
    """``<temp>/spinbot-dub-text``, created when missing."""
    path = os.path.join(runtime.temp_dir(), CACHE_SUBDIR)
    os.makedirs(path, exist_ok=True)
    return path


def cache_load(key: str) -> dict | None:
    """The JSON object cached under ``key`` (see CACHE_SUBDIR), or None."""
    path = os.path.join(cache_dir(), key + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    os.utime(path)
    return data


def cache_save(key: str, data: dict) -> None:
    """Atomic: a temp file renamed into place, so Cancel or a crash never leaves half a file.
    Over CACHE_MAX_FILES the least recently used go."""
    folder = cache_dir()
    with atomic_path(os.path.join(folder, key + ".json")) as tmp, \
            open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    trim_oldest(folder, ".json", max_files=CACHE_MAX_FILES)


# --------------------------------------------------------------------------- decoding

def _parse(tokens: list[int], timestamp_begin: int, special: set[int]) -> tuple[list, bool]:
    """Token ids of one window -> ``([(start, end, [text ids], [positions])...], complete)``.

    Whisper writes ``<|t0|> text <|t1|>`` per segment; consecutive timestamps close one segment
    and open the next. ``complete`` is False when text follows the last timestamp (the window
    edge cut a segment): that segment is returned with end None.
    """
    segments: list = []
    start: float | None = None
    last_end = 0.0
    text: list[int] = []
    positions: list[int] = []
    for pos, tok in enumerate(tokens):
        if tok >= timestamp_begin:
            t = (tok - timestamp_begin) * TIME_PRECISION
            if text:
                segments.append((start if start is not None else last_end, t, text, positions))
                text, positions, start, last_end = [], [], None, t
            else:
                start = t
        elif tok not in special:
            if start is None:
                start = last_end
            text.append(tok)
            positions.append(pos)
    if text:
        segments.append((start if start is not None else last_end, None, text, positions))
        return segments, False
    return segments, True


def _words(tokenizer, ids: list[int], times: list[float], start: float, end: float) -> list[Word]:
    """Group token times into words: a token whose text starts with a space begins a word."""
    words: list[Word] = []
    pieces = [tokenizer.decode([i]) for i in ids]
    current, t0 = "", None
    for k, piece in enumerate(pieces):
        t = min(max(times[k], start), end)
        if current and piece[:1].isspace():
            words.append(Word(current.strip(), t0, t))
            current, t0 = "", None
        if t0 is None:
            t0 = t
        current += piece
    if current.strip():
        words.append(Word(current.strip(), t0 if t0 is not None else start, end))
    return [w for w in words if w.text]


def _decode(whisper: Whisper, features: torch.Tensor, mask: torch.Tensor, language: str | None,
            word_level: bool, max_new: int) -> tuple[list[int], list[float]]:
    """One window -> (generated token ids without the prompt, per-token times in seconds from
    the window's start, or [] without word timestamps)."""
    # English-only folders (*.en) refuse a task or language: they only transcribe English
    kwargs = {"language": language, "task": "transcribe"} if language else {}
    with torch.no_grad():
        out = whisper.model.generate(
            features, attention_mask=mask, return_timestamps=True,
            return_token_timestamps=word_level, max_new_tokens=max_new, **kwargs)
    if isinstance(out, dict):
        sequence = out["sequences"][0].tolist()
        token_times = out["token_timestamps"][0].tolist() if word_level else []
    else:
        sequence, token_times = out[0].tolist(), []
    # Without times, prompt tokens (if a version returns them) are specials _parse skips; with
    # times, a longer sequence starts with the prompt the times do not cover.
    prompt = len(sequence) - len(token_times) if token_times else 0
    if prompt > 0:
        sequence = sequence[prompt:]
    return [int(t) for t in sequence], [float(t) for t in token_times]


def transcribe(wave: np.ndarray, whisper: Whisper, language: str = "auto",
               word_timestamps: bool = True, what: str = "audio") -> Transcript:
    """Transcribe 16 kHz mono ``wave`` (float32 ``[T]``) into measured segments.

    ``language``: 'auto' (detected on the first window with signal) or a name/code Whisper knows
    (LanguageError listing close names otherwise). Segments: ``Segment(index, text, start, end,
    estimated=False)``, times in seconds from the start of ``wave``, inside it, non-overlapping
    and in order. Raises TranscribeError when ``wave`` has no signal or no speech was found.
    Checks Cancel between windows.
    """
    total = len(wave)
    duration = total / SAMPLE_RATE
    frames = signal_frames(wave)
    if not frames.any() or float(np.abs(wave).max(initial=0.0)) == 0.0:
        raise TranscribeError(f"no speech in the {what}: it is silent (no signal above "
                              f"{ABS_FLOOR_DB:.0f} dBFS in {duration:.1f} s)")
    gen = whisper.generation_config
    tokenizer = whisper.processor.tokenizer
    extractor = whisper.processor.feature_extractor
    timestamp_begin = int(gen.no_timestamps_token_id) + 1
    special = set(tokenizer.all_special_ids) | {i for i in range(len(tokenizer))
                                                if i < timestamp_begin and i >= gen.eos_token_id}
    notes: list[str] = []
    supported = whisper.languages()
    multilingual = bool(supported) and bool(getattr(gen, "is_multilingual", True))
    code = ""
    if language and language.strip().lower() not in ("auto", ""):
        if not multilingual:
            code = whisper_code(language)
            if code != "en":
                raise LanguageError(f"Whisper '{whisper.name}' is an English-only model and "
                                    f"cannot transcribe {whisper_name(code)}: choose 'auto' or "
                                    "English, or a multilingual Whisper folder")
        else:
            code = whisper_code(language, supported)
    elif not multilingual:
        code = "en"
    word_level = bool(word_timestamps) and whisper.has_alignment_heads()
    if word_timestamps and not word_level:
        notes.append(f"word timestamps unavailable: {whisper.name}'s generation_config has no "
                     "alignment_heads; segment timestamps only")
    # the folder's generation_config may allow fewer tokens than the 448 positions (prompt kept)
    max_new = max(8, min(MAX_NEW_TOKENS, int(getattr(gen, "max_length", None) or 448) - 8))
    device = runtime.torch_device()
    hop = int(FRAME_SECONDS * SAMPLE_RATE)
    window = int(WINDOW_SECONDS * SAMPLE_RATE)
    segments: list[Segment] = []
    words: list[Word] = []
    windows = reused = 0
    prev_end = 0.0
    seek = 0
    with _on_device(whisper, device), runtime.Progress(max(1, -(-total // window)),
                                                       "SpinBot Transcribe") as bar:
        while seek < total:
            runtime.check_interrupted()
            ahead = np.flatnonzero(frames[seek // hop:])
            if ahead.size == 0:
                break
            # skip silence, keeping 0.2 s before the signal so onsets are not clipped
            seek = max(seek, (seek // hop + int(ahead[0])) * hop - int(0.2 * SAMPLE_RATE))
            chunk = wave[seek:seek + window]
            chunk_seconds = len(chunk) / SAMPLE_RATE
            last = seek + window >= total
            feats = extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                              return_attention_mask=True)
            features = feats.input_features.to(device, whisper.dtype)
            mask = feats.attention_mask.to(device)
            offset = seek / SAMPLE_RATE
            if not code:
                key = content_key("whisper-detect", whisper.stamp, str(whisper.dtype), chunk)
                cached = cache_load(key)
                if cached is not None and isinstance(cached.get("code"), str):
                    code = cached["code"]
                else:
                    with torch.no_grad():
                        lang_id = int(whisper.model.detect_language(features)[0])
                    token = tokenizer.convert_ids_to_tokens(lang_id)
                    code = token[2:-2] if token else "en"
                    cache_save(key, {"code": code})
                notes.append(f"detected language: {whisper_name(code)} ({code}) at "
                             f"{offset:.1f} s")
            key = content_key("whisper-window", whisper.stamp, str(whisper.dtype), chunk,
                              code if multilingual else "", word_level, max_new)
            cached = cache_load(key)
            if cached is not None and isinstance(cached.get("sequence"), list):
                sequence, token_times = cached["sequence"], cached.get("token_times") or []
                reused += 1
            else:
                sequence, token_times = _decode(whisper, features, mask, code if multilingual
                                                else None, word_level, max_new)
                cache_save(key, {"sequence": sequence, "token_times": token_times})
            parsed, complete = _parse(sequence, timestamp_begin, special)
            windows += 1
            if not complete and not last and len(parsed) > 1:
                parsed = parsed[:-1]  # cut by the window edge: decoded again from its start
                advance = parsed[-1][1]
            else:
                advance = chunk_seconds
            for start, end, ids, positions in parsed:
                end = chunk_seconds if end is None else end
                start = min(max(start, 0.0), chunk_seconds) + offset
                end = min(max(end, 0.0), chunk_seconds) + offset
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                if not text:
                    continue
                start = max(start, prev_end)
                end = max(end, start)
                if end - start < MIN_SEGMENT_SECONDS:
                    # a zero-length segment cannot be spoken or shown: it gets the shortest
                    # slot where the window has room, else its words join the previous one
                    end = max(end, min(start + MIN_SEGMENT_SECONDS, offset + chunk_seconds))
                if end - start < MIN_SEGMENT_SECONDS and segments:
                    prev = segments[-1]
                    segments[-1] = Segment(prev.index, f"{prev.text} {text}", prev.start,
                                           max(prev.end, end), False)
                    prev_end = segments[-1].end
                    continue
                if end - start < MIN_SEGMENT_SECONDS:
                    # at the audio's end with no segment before it to join (a random or
                    # confused model puts its words at the last timestamp): the shortest slot
                    # that ends there, so the words stay and have time to be shown or spoken
                    moved = max(prev_end, offset, end - MIN_SEGMENT_SECONDS)
                    if end - moved <= 0:
                        notes.append(f"dropped a zero-length segment at {start:.3f} s (no "
                                     f"audio left around it): {text[:40]!r}")
                        continue
                    notes.append(f"a segment of {end - start:.3f} s at the audio's end "
                                 f"({start:.3f} s) moved to {moved:.3f}-{end:.3f} s: "
                                 f"{text[:40]!r}")
                    start = moved
                segments.append(Segment(len(segments), text, round(start, 3), round(end, 3),
                                        False))
                prev_end = segments[-1].end
                if word_level and token_times:
                    times = [token_times[p] + offset if p < len(token_times) else end
                             for p in positions]
                    words.extend(_words(tokenizer, ids, times, start, end))
            # at least one second forward, so a degenerate window cannot loop forever
            seek += max(int(round(advance * SAMPLE_RATE)), SAMPLE_RATE)
            bar.update(1)
    if not segments:
        raise TranscribeError(f"no speech found in the {what} ({duration:.1f} s): Whisper "
                              f"'{whisper.name}' returned no words"
                              + "".join(f"; {n}" for n in notes if n.startswith("dropped")))
    # round() may push a start a hair under the previous end; and nothing may pass the end. A
    # segment left with no length (it started at the audio's end) is the tail of the one before
    # it: its words join that one; with none before, it is dropped and reported.
    fixed: list[Segment] = []
    prev = 0.0
    for s in segments:
        start = min(max(s.start, prev), duration)
        end = min(max(s.end, start), duration)
        if end <= start:
            if fixed:
                last_seg = fixed[-1]
                fixed[-1] = Segment(last_seg.index, f"{last_seg.text} {s.text}", last_seg.start,
                                    last_seg.end, False)
                notes.append(f"a zero-length segment at {start:.3f} s joined the one before it: "
                             f"{s.text[:40]!r}")
            else:
                notes.append(f"dropped a zero-length segment at {start:.3f} s: {s.text[:40]!r}")
            continue
        fixed.append(Segment(len(fixed), s.text, start, end, False))
        prev = end
    if not fixed:
        raise TranscribeError(f"no speech found in the {what} ({duration:.1f} s): Whisper "
                              f"'{whisper.name}' returned only zero-length segments at its end")
    if reused:
        notes.append(f"{reused} of {windows} window(s) reused from the cache")
    return Transcript(tuple(fixed), code, words, word_level, windows, notes)


__all__ = ["TranscribeError", "LanguageError", "Transcript", "Word", "audio_16k_mono",
           "list_whisper", "load_whisper", "transcribe", "whisper_path", "DEFAULT_MODEL"]
