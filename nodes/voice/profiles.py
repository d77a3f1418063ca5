"""Voice profiles: a cleaned reference clip (24 kHz mono) plus its transcript.

`prepare_reference` turns any AUDIO into what F5-TTS wants: mono, 24 kHz, loudness-normalised,
edge silence trimmed, cut to the model's limit at a pause, with a warning for clipped input and a
clear error for silence or too little speech. Profiles live in ``<tts model folder>/voices/<name>/``
(``reference.wav`` float32, ``reference.txt``, ``meta.json``), so a user records once and reuses.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import runtime
from ..media import MediaError, check_audio, mix_channels, normalize_loudness, resample, to_channels

log = logging.getLogger("spinbot.voice")

VOICE_TYPE = "SPINBOT_VOICE"
SAMPLE_RATE = 24000
MIN_SECONDS = 2.0
MAX_SECONDS = 12.0  # F5-TTS's own preprocessing keeps at most 12 s of reference
TARGET_LUFS = -20.0
SILENCE_DBFS = -50.0
PROFILES_SUBDIR = "voices"
_NAME_OK = re.compile(r"[^\w .\-]+", re.UNICODE)


class VoiceError(MediaError):
    """Bad reference audio, text or profile name; the message says what to do."""


@dataclass
class VoiceProfile:
    wave: torch.Tensor  # float32 [T] at SAMPLE_RATE
    text: str
    name: str = ""
    sample_rate: int = SAMPLE_RATE
    meta: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.wave.shape[-1] / self.sample_rate

    def audio(self) -> dict:
        return {"waveform": self.wave.reshape(1, 1, -1).clone(), "sample_rate": self.sample_rate}


# --------------------------------------------------------------------------- reference audio

def _frame_db(wave: np.ndarray, rate: int, frame_s: float = 0.02) -> np.ndarray:
    hop = max(int(rate * frame_s), 1)
    n = len(wave) // hop
    if n == 0:
        return np.full(1, -120.0)
    frames = wave[: n * hop].reshape(n, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def _clipping(wave: np.ndarray) -> float:
    """Fraction of samples in runs of 3+ at full scale (a clipped recording)."""
    hot = np.abs(wave) >= 0.999
    if hot.sum() < 3:
        return 0.0
    runs = hot[:-2] & hot[1:-1] & hot[2:]
    return float(runs.sum()) / len(wave)


def _cut_at_pause(wave: np.ndarray, rate: int, max_seconds: float) -> tuple[np.ndarray, str]:
    """Cut to at most ``max_seconds`` at the quietest 20 ms frame of its second half."""
    limit = int(max_seconds * rate)
    if len(wave) <= limit:
        return wave, ""
    hop = int(rate * 0.02)
    db = _frame_db(wave[:limit], rate)
    start = len(db) // 2
    window = db[start:]
    quiet = np.nonzero(window <= max(SILENCE_DBFS + 10, window.min() + 1))[0]
    k = start + (int(quiet[-1]) if len(quiet) else int(np.argmin(window)))
    cut = max((k + 1) * hop, int(MIN_SECONDS * rate))
    return wave[:cut], (f"reference was {len(wave) / rate:.1f} s: cut to {cut / rate:.1f} s at a "
                        f"pause (F5-TTS uses at most {max_seconds:g} s); the reference text must "
                        "match only the words kept")


def _trim_silence(wave: np.ndarray, rate: int, threshold_db: float) -> np.ndarray:
    db = _frame_db(wave, rate)
    loud = np.nonzero(db > threshold_db)[0]
    if len(loud) == 0:
        return wave[:0]
    hop = int(rate * 0.02)
    a = max(int(loud[0]) * hop - hop, 0)
    b = min((int(loud[-1]) + 2) * hop, len(wave))
    return wave[a:b]


def prepare_reference(audio: dict, max_seconds: float = MAX_SECONDS,
                      target_lufs: float = TARGET_LUFS) -> tuple[torch.Tensor, list[str]]:
    """AUDIO -> (float32 [T] at 24 kHz, notes). Raises VoiceError for a clip shorter than 2 s,
    silence, or less than 2 s of sound; a batch uses its first clip (said in the notes)."""
    notes: list[str] = []
    wave, rate = check_audio(audio, "reference audio", notes)
    if wave.shape[-1] < MIN_SECONDS * rate:  # too short to measure silence on (20 ms frames)
        raise VoiceError(f"reference audio is only {wave.shape[-1] / rate:.2f} s long; F5-TTS "
                         f"needs at least {MIN_SECONDS:g} s (best 5-12 s) of clear speech with "
                         "its transcript")
    # Clipping is a property of each recorded channel; a mix can hide it (or fake it).
    clipped = max(_clipping(channel) for channel in wave.numpy())
    mono, note = mix_channels(wave, 1)
    if note:
        notes.append(f"reference {note}")
    if clipped > 1e-4:
        notes.append(f"reference audio is clipped ({clipped:.2%} of samples at full scale): "
                     "record again at a lower level for a cleaner voice")
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate, SAMPLE_RATE)
        notes.append(f"resampled {rate} Hz -> {SAMPLE_RATE} Hz")
    data = mono[0].numpy().astype(np.float32)
    peak = float(np.abs(data).max()) if len(data) else 0.0
    if peak < 1e-4 or _frame_db(data, SAMPLE_RATE).max() < SILENCE_DBFS:
        raise VoiceError("reference audio is silent: record or load a clip of the voice speaking "
                         "(about 5-12 s of clear speech)")
    # Edges are trimmed relative to the clip's own level so quiet recordings keep their speech.
    threshold = max(SILENCE_DBFS, float(_frame_db(data, SAMPLE_RATE).max()) - 40.0)
    data = _trim_silence(data, SAMPLE_RATE, threshold)
    seconds = len(data) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise VoiceError(f"reference audio has only {seconds:.1f} s of sound; F5-TTS needs at "
                         f"least {MIN_SECONDS:g} s (best 5-12 s) of clear speech with its transcript")
    data, note = _cut_at_pause(data, SAMPLE_RATE, max_seconds)
    if note:
        notes.append(note)
    out, report = normalize_loudness(torch.from_numpy(np.ascontiguousarray(data))[None],
                                     SAMPLE_RATE, target_lufs)
    notes.append(report)
    out = torch.nn.functional.pad(out[0], (0, int(0.05 * SAMPLE_RATE)))  # as upstream: +50 ms
    for n in notes:  # clipping and cuts change what the user gave: warn, the rest is info
        level = logging.WARNING if ("clipped" in n or "cut to" in n or "ignored" in n) \
            else logging.INFO
        log.log(level, "voice reference: %s", n)
    return out.float().contiguous(), notes


# --------------------------------------------------------------------------- transcription

WHISPER_FOLDER = "whisper"
WHISPER_NAME = "whisper-small"


def transcribe(wave: torch.Tensor, rate: int = SAMPLE_RATE, model_name: str = WHISPER_NAME,
               language: str | None = None) -> str:
    """Transcript of a reference clip with a transformers Whisper folder in models/whisper."""
    from ..manifest import MissingModelError, require_model

    path = runtime.find_model(WHISPER_FOLDER, model_name)
    if path is None:
        names = runtime.list_models(WHISPER_FOLDER, dirs=True)
        if names:
            path = runtime.find_model(WHISPER_FOLDER, names[0])
    if path is None:
        try:
            require_model(WHISPER_FOLDER, model_name)
        except MissingModelError as exc:
            raise VoiceError("the reference text is empty and no Whisper model is installed to "
                             f"transcribe it: type the words spoken in the reference, or {exc}") from None
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
    device = runtime.torch_device()
    model = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True).to(device).eval()
    audio16 = resample(wave.reshape(1, -1), rate, 16000)[0].numpy()
    feats = processor(audio16, sampling_rate=16000, return_tensors="pt").input_features.to(device)
    kwargs = {"task": "transcribe"}
    if language:
        kwargs["language"] = language
    with torch.no_grad():
        ids = model.generate(feats, max_new_tokens=200, **kwargs)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    del model
    runtime.release_memory()
    return text


# --------------------------------------------------------------------------- profile files

def profiles_root() -> str:
    """``<first tts model folder>/voices``."""
    return os.path.join(runtime.model_folder_paths("tts")[0], PROFILES_SUBDIR)


def sanitize_name(name: str) -> str:
    """A profile name safe as one folder name: letters, digits, space, ``_ . -``; never a path."""
    clean = _NAME_OK.sub("_", (name or "").strip()).strip(" .")
    clean = re.sub(r"_+", "_", clean)[:64].strip(" .")
    if not clean or clean in (".", ".."):
        raise VoiceError(f"profile name {name!r} is empty or unusable: use letters and digits")
    return clean


def profile_dir(name: str) -> str:
    root = os.path.realpath(profiles_root())
    path = os.path.realpath(os.path.join(root, sanitize_name(name)))
    if os.path.dirname(path) != root:
        raise VoiceError(f"profile name {name!r} leaves the profiles folder")
    return path


def list_profiles() -> list[str]:
    names = set()
    for base in runtime.model_folder_paths("tts"):
        root = os.path.join(base, PROFILES_SUBDIR)
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root)
                         if os.path.isfile(os.path.join(root, d, "reference.wav")))
    return sorted(names)


def save_profile(profile: VoiceProfile, name: str, overwrite: bool = True) -> str:
    """Write the profile atomically (a temp folder renamed into place); returns its folder."""
    import soundfile as sf

    target = profile_dir(name)
    if os.path.exists(target) and not overwrite:
        raise VoiceError(f"a voice profile named {os.path.basename(target)!r} already exists")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        sf.write(os.path.join(tmp, "reference.wav"), profile.wave.numpy(), profile.sample_rate,
                 subtype="FLOAT")
        with open(os.path.join(tmp, "reference.txt"), "w", encoding="utf-8") as f:
            f.write(profile.text)
        meta = dict(profile.meta, name=os.path.basename(target), sample_rate=profile.sample_rate,
                    seconds=round(profile.seconds, 3), saved=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    format=1)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    profile.name = os.path.basename(target)
    return target


def load_profile(name: str) -> VoiceProfile:
    import soundfile as sf

    clean = sanitize_name(name)
    for base in runtime.model_folder_paths("tts"):
        folder = os.path.join(base, PROFILES_SUBDIR, clean)
        wav = os.path.join(folder, "reference.wav")
        if not os.path.isfile(wav):
            continue
        data, rate = sf.read(wav, dtype="float32", always_2d=True)
        with open(os.path.join(folder, "reference.txt"), encoding="utf-8") as f:
            text = f.read()
        meta = {}
        if os.path.isfile(os.path.join(folder, "meta.json")):
            with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
        wave = torch.from_numpy(data.T.copy())
        if rate != SAMPLE_RATE or wave.shape[0] != 1:
            wave = resample(to_channels(wave, 1), rate, SAMPLE_RATE)
        return VoiceProfile(wave=wave[0].contiguous(), text=text, name=clean,
                            sample_rate=SAMPLE_RATE, meta=meta)
    raise VoiceError(f"no voice profile named {clean!r} in {profiles_root()}; saved profiles: "
                     f"{', '.join(list_profiles()) or 'none'}")


def make_profile(audio: dict, text: str, name: str = "", max_seconds: float = MAX_SECONDS,
                 transcribe_missing: bool = True, whisper_model: str = WHISPER_NAME) -> VoiceProfile:
    wave, notes = prepare_reference(audio, max_seconds=max_seconds)
    text = (text or "").strip()
    source = "user"
    if not text:
        if not transcribe_missing:
            raise VoiceError("the reference text is empty: type the words spoken in the reference")
        text = transcribe(wave, SAMPLE_RATE, whisper_model)
        source = "whisper"
        if not text:
            raise VoiceError("Whisper found no words in the reference audio: type its transcript")
    return VoiceProfile(wave=wave, text=text, name=name,
                        meta={"notes": notes, "text_source": source})
