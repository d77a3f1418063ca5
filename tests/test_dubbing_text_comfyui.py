"""SpinBot Transcribe and SpinBot Translate inside a real ComfyUI on the tiny Whisper and NLLB
folders: the dropdowns in /object_info, and core LoadVideo -> Transcribe -> Translate queued over
POST /prompt, the translated segments keeping the transcribed times.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README).
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.comfyui_fixture import comfyui_marks, serve
from tests.factory_dubbing import NLLB_DIR, WHISPER_DIR
from tests.media import write_wav

pytestmark = comfyui_marks()


def _write_talk(base) -> None:
    """A 3 s 32x32 grey clip whose audio is 2.4 s of speech-like noise (silent ends)."""
    (base / "input").mkdir()
    rng = np.random.default_rng(3)
    t = np.arange(3 * 16000) / 16000
    wave = (rng.standard_normal(t.size) * 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)))
    wave[(t < 0.3) | (t > 2.7)] = 0
    wav = write_wav(str(base / "speech.wav"), wave[None].astype(np.float32), 16000)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=gray:s=32x32:r=10:d=3", "-i", wav, "-shortest", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(base / "input" / "talk.mp4")],
                   check=True)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    yield from serve(tmp_path_factory, "comfy", models=["whisper", "translation"],
                     prepare=_write_talk)


def test_object_info_lists_models_and_languages(comfy):
    info = comfy.get("/object_info/SpinBotTranscribe")["SpinBotTranscribe"]
    model = info["input"]["required"]["model"]
    assert WHISPER_DIR in model[0] and model[1]["default"] == WHISPER_DIR
    assert "SPINBOT_VIDEO,VIDEO" == info["input"]["optional"]["video"][0]
    info = comfy.get("/object_info/SpinBotTranslate")["SpinBotTranslate"]
    assert info["input"]["required"]["model"][0] == [NLLB_DIR]
    assert len(info["input"]["required"]["target_language"][0]) == 202


def test_core_loadvideo_to_translated_segments_over_http(comfy):
    workflow = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "talk.mp4"}},
        "2": {"class_type": "SpinBotTranscribe", "inputs": {
            "model": WHISPER_DIR, "language": "German", "word_timestamps": True,
            "video": ["1", 0]}},
        "3": {"class_type": "SpinBotTranslate", "inputs": {
            "segments": ["2", 0], "model": NLLB_DIR, "target_language": "French",
            "source_language": "from transcription", "glossary": "SpinBot", "max_tokens": 200,
            "language": ["2", 2]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 4]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["2", 3]}},
    }
    entry = comfy.wait(comfy.queue(workflow), timeout=600)
    transcribed = entry["outputs"]["4"]["text"][0]
    translated = entry["outputs"]["5"]["text"][0]
    words = json.loads(entry["outputs"]["6"]["text"][0])
    assert "language German (de, given)" in transcribed and "segment(s)" in transcribed
    assert "German (deu_Latn) -> French (fra_Latn)" in translated
    assert words and all(0 <= w["start"] <= w["end"] <= 3.1 for w in words)
