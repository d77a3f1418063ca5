"""F5-TTS synthesis: voice profile + texts -> waveforms, joined with cross-fades and pauses,
with measured segment timings.

Per text piece (upstream ``infer_batch_process``): the reference is brought to RMS 0.1 if
quieter, the prompt is ``reference text + new text``, the length in mel frames is
``ref_frames + ref_frames / ref_bytes * new_bytes / speed`` (UTF-8 bytes, speed 0.3 for very
short pieces), the CFM sampler fills it, the reference frames are cut off, Vocos decodes and the
reference gain is undone. Pieces longer than the model's ~22 s window are chunked at punctuation
and cross-faded; pieces of equal length are sampled as one batch.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .. import model_cache, runtime
from ..script.segments import Segment, make_segments, retime
from . import cfm
from .mel import F5_MEL, log_mel
from .profiles import VoiceError, VoiceProfile
from .text import (byte_length, chunk_text, encode, is_speakable, prepare_reference_text,
                   spoken_text, text_problem)
from .vocos import Vocos, load_vocos

TARGET_RMS = 0.1
WINDOW_SECONDS = 22.0  # upstream's budget for reference + generated audio per pass


@dataclass(frozen=True)
class Settings:
    nfe_steps: int = 32
    cfg_strength: float = 2.0
    sway: float = -1.0
    speed: float = 1.0
    seed: int = 0
    cross_fade: float = 0.15  # seconds
    silence: float = 0.2  # seconds between segments
    max_batch: int = 4


@dataclass
class Synthesis:
    wave: torch.Tensor  # float32 [T] at 24 kHz
    sample_rate: int
    segments: tuple[Segment, ...]
    piece_waves: list[torch.Tensor]


# --------------------------------------------------------------------------- model cache

def model_files(f5_path: str, vocos_dir: str) -> list[str]:
    """Every file or folder `get_models` reads: the F5 checkpoint, the vocab.txt beside it and
    the Vocos folder (config.yaml and its weights)."""
    return [f5_path, os.path.join(os.path.dirname(f5_path), "vocab.txt"), vocos_dir]


def get_models(f5_path: str, vocos_dir: str,
               dtype: torch.dtype | None = None) -> tuple[cfm.F5Model, Vocos]:
    """Load (or reuse) the F5 model and the vocoder, kept in CPU memory between runs in the
    pack's model cache (one pair; ComfyUI can unload it). The DiT takes float16 on CUDA (the
    precision upstream's inference uses; bf16 has 3 fewer mantissa bits for the ODE state),
    float32 elsewhere; Vocos is small and stays float32."""
    device = runtime.torch_device()
    dtype = dtype or runtime.torch_dtype(device, allow_bf16=False)
    key = ("voice", tuple(runtime.file_stamp(f) for f in model_files(f5_path, vocos_dir)),
           str(dtype))
    def load() -> tuple[cfm.F5Model, Vocos]:
        model_cache.evict_models("voice")  # one pair: the old one goes before the new one loads
        return (cfm.load_f5(f5_path, device="cpu", dtype=dtype),
                load_vocos(vocos_dir, device="cpu", dtype=torch.float32))

    return model_cache.cached_model(
        "voice", key, load,
        name=f"{os.path.basename(f5_path)} + {os.path.basename(vocos_dir.rstrip('/'))}",
        modules=lambda models: (models[0].dit, models[1]), limit=1)


def _model_bytes(*modules: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@contextmanager
def models_on_device(models: tuple[cfm.F5Model, Vocos], device: torch.device | None = None):
    """Move the models to the compute device for one run and back to the CPU afterwards, so the
    stages that follow (animation, lip-sync) get the VRAM back."""
    f5, vocoder = models
    device = torch.device(device or runtime.torch_device())
    if device.type == "cpu":
        yield models
        return
    runtime.make_room(int(_model_bytes(f5.dit, vocoder) * 1.5) + (512 << 20), device)
    try:
        f5.dit.to(device)
        vocoder.to(device)
        yield models
    finally:
        f5.dit.to("cpu")
        vocoder.to("cpu")
        runtime.release_memory()


def release_models() -> None:
    """Evict the cached F5-TTS and Vocos models."""
    model_cache.evict_models("voice")


# --------------------------------------------------------------------------- planning

@dataclass
class Piece:
    segment: int
    text: str
    frames: int  # total frames (reference + new)
    seed: int


def _refuse_unspeakable(label: str, text: str) -> None:
    if not is_speakable(text):
        shown = text if len(text) <= 60 else text[:60] + "..."
        raise VoiceError(f"F5-TTS cannot say the {label} ({shown!r}): it has nothing to speak, "
                         "only punctuation, spaces, symbols or emoji (the model would make noise "
                         "of it); give it words or remove it")


def plan(profile: VoiceProfile, texts: Sequence[str], settings: Settings) -> tuple[str, list[Piece]]:
    """The reference text as prompted and the pieces to sample for ``texts`` (one per segment).

    Emoji are left out of what the model reads (`spoken_text`), so they cost no frames either;
    a text (or the reference text) with nothing speakable raises `VoiceError` naming it, as
    ``segment <n>`` counted from 1. Chunks of a long text that are only punctuation are dropped.
    """
    _refuse_unspeakable("reference text", profile.text)
    for index, text in enumerate(texts):
        _refuse_unspeakable(f"segment {index + 1}", text)
    ref_text = prepare_reference_text(spoken_text(profile.text))
    ref_seconds = profile.seconds
    ref_frames = profile.wave.shape[-1] // F5_MEL.hop_length
    ref_bytes = max(byte_length(ref_text), 1)
    speed = float(settings.speed)
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive finite number, got {speed}")
    max_bytes = int(ref_bytes / ref_seconds * max(WINDOW_SECONDS - ref_seconds, 2.0) * speed)
    pieces = []
    for index, text in enumerate(texts):
        spoken = spoken_text(text)
        chunks = [c for c in chunk_text(spoken, max_bytes) if is_speakable(c)] or [spoken]
        for k, chunk in enumerate(chunks):
            local = 0.3 if byte_length(chunk) < 10 else speed
            frames = ref_frames + int(ref_frames / ref_bytes * byte_length(chunk) / local)
            pieces.append(Piece(index, chunk, frames, int(settings.seed) + index * 1000 + k))
    return ref_text, pieces


def estimate_seconds(profile: VoiceProfile, text: str, speed: float = 1.0) -> float:
    _ref, pieces = plan(profile, [text], Settings(speed=speed))
    ref_frames = profile.wave.shape[-1] // F5_MEL.hop_length
    return sum((p.frames - ref_frames) * F5_MEL.hop_length for p in pieces) / F5_MEL.sample_rate


# --------------------------------------------------------------------------- synthesis

def _crossfade_join(waves: list[np.ndarray], samples: int) -> np.ndarray:
    out = waves[0]
    for nxt in waves[1:]:
        n = min(samples, len(out), len(nxt))
        if n <= 0:
            out = np.concatenate([out, nxt])
            continue
        fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
        mixed = out[-n:] * (1 - fade) + nxt[:n] * fade
        out = np.concatenate([out[:-n], mixed, nxt[n:]])
    return out


def synthesize_pieces(model: cfm.F5Model, vocoder: Vocos, profile: VoiceProfile,
                      ref_text: str, pieces: list[Piece], settings: Settings,
                      on_step: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Waveform of each piece (float32, 24 kHz), batching pieces of equal length.

    ``on_step(n)`` is called after every sampling step with the number of pieces that step
    advanced (the batch size), so a progress bar of ``len(pieces) * nfe_steps`` ends full."""
    ref = profile.wave.float()
    rms = float(ref.square().mean().sqrt())
    gain = TARGET_RMS / rms if 0 < rms < TARGET_RMS else 1.0
    cond = log_mel(ref * gain).transpose(1, 2)  # [1, frames, 100]
    ref_frames = ref.shape[-1] // F5_MEL.hop_length
    results: dict[int, np.ndarray] = {}
    order = sorted(range(len(pieces)), key=lambda i: (pieces[i].frames, i))
    groups: list[list[int]] = []
    for i in order:
        if groups and pieces[groups[-1][0]].frames == pieces[i].frames \
                and len(groups[-1]) < max(int(settings.max_batch), 1):
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        runtime.check_interrupted()
        items = [pieces[i] for i in group]
        ids = encode([ref_text + p.text for p in items], model.vocab)
        def step(_i, _n):
            runtime.check_interrupted()
            if on_step is not None:
                on_step(len(items))

        mel = cfm.sample(model, cond.expand(len(items), -1, -1), ids, [p.frames for p in items],
                         steps=int(settings.nfe_steps), cfg_strength=float(settings.cfg_strength),
                         sway=float(settings.sway), seed=[p.seed for p in items],
                         on_step=step)
        new = mel[:, ref_frames:, :].transpose(1, 2).to(vocoder.head.out.weight.device)
        waves = vocoder.decode(new).cpu()
        for j, i in enumerate(group):
            w = waves[j].numpy().astype(np.float32)
            results[i] = w / gain if gain != 1.0 else w
    return [results[i] for i in range(len(pieces))]


def synthesize(model: cfm.F5Model, vocoder: Vocos, profile: VoiceProfile,
               segments: Sequence[Segment], settings: Settings,
               progress: runtime.Progress | None = None) -> Synthesis:
    """Speech for each segment, joined: cross-faded when ``silence`` is 0, otherwise separated by
    that much silence (with short fades at the edges). Timings are measured from the samples."""
    if not segments:
        raise ValueError("nothing to say: the text is empty")
    for label, words in [("reference text", profile.text)] + [
            (f"segment {k + 1}", s.text) for k, s in enumerate(segments)]:
        _refuse_unspeakable(label, words)
        problem = text_problem(spoken_text(words), model.vocab)
        if problem:
            raise VoiceError(f"F5-TTS cannot say the {label} ({words[:40]!r}...): {problem}")
    ref_text, pieces = plan(profile, [s.text for s in segments], settings)
    own_bar = progress is None
    bar = progress or runtime.Progress(len(pieces) * int(settings.nfe_steps), "F5-TTS")
    try:
        waves = synthesize_pieces(model, vocoder, profile, ref_text, pieces, settings,
                                  on_step=bar.update)
    finally:
        if own_bar:
            bar.close()
    rate = F5_MEL.sample_rate
    fade = max(int(settings.cross_fade * rate), 0)
    per_segment: list[np.ndarray] = []
    for index in range(len(segments)):
        parts = [w for p, w in zip(pieces, waves) if p.segment == index]
        per_segment.append(_crossfade_join(parts, fade) if parts else np.zeros(0, np.float32))
    gap = max(float(settings.silence), 0.0)
    if gap > 0 or fade == 0:
        gap_samples = int(round(gap * rate))
        edge = min(fade, int(0.01 * rate)) if gap > 0 else 0
        chunks, durations = [], []
        for k, w in enumerate(per_segment):
            w = w.copy()
            n = min(edge, len(w) // 2)
            if n:
                ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
                w[:n] *= ramp
                w[-n:] *= ramp[::-1]
            chunks.append(w)
            durations.append(len(w) / rate)
            if k < len(per_segment) - 1 and gap_samples:
                chunks.append(np.zeros(gap_samples, np.float32))
        joined = np.concatenate(chunks)
        timed = retime(segments, durations, gap=gap_samples / rate)
    else:
        joined = _crossfade_join(per_segment, fade)
        lengths = [len(w) for w in per_segment]
        durations = []
        for k, n in enumerate(lengths):  # each overlap is shared half and half
            left = min(fade, lengths[k - 1], n) / 2 if k > 0 else 0
            right = min(fade, n, lengths[k + 1]) / 2 if k + 1 < len(lengths) else 0
            durations.append((n - left - right) / rate)
        timed = retime(segments, durations)
    return Synthesis(torch.from_numpy(np.ascontiguousarray(joined)), rate, timed,
                     [torch.from_numpy(w) for w in per_segment])


def text_segments(text: str, language: str = "", max_segment_seconds: float = 10.0) -> tuple[Segment, ...]:
    return make_segments(text, language=language, max_segment_seconds=max_segment_seconds)
