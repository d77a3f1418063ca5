"""The script nodes inside a real ComfyUI, talking to a fake Ollama: the model dropdown in
/object_info, and a guided graph queued over POST /prompt down to an MP4 with subtitles.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README).
"""
from __future__ import annotations

import json
import os

import pytest

from tests.fake_ollama import FakeOllama
from tests.mp4probe import probe

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]

NARRATIVE = "Hello from the fake server. This line is a subtitle!"
REPLY = json.dumps({"stage": "a studio portrait", "narrative": NARRATIVE})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.comfyui_server import ComfyUI

    fake = FakeOllama(models=["qwen2.5:7b", "tiny:1b"], replies=[REPLY]).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OLLAMA_HOST", fake.url)  # ComfyUI inherits it: the dropdown's server
        server = ComfyUI(COMFYUI_PATH, str(tmp_path_factory.mktemp("comfy")))
    yield server, fake
    server.stop()
    fake.stop()


def test_object_info_lists_the_servers_models(setup):
    comfy, _fake = setup
    spec = comfy.get("/object_info/SpinBotScriptOllama")["SpinBotScriptOllama"]
    choices = spec["input"]["required"]["model"][0]
    assert choices == ["qwen2.5:7b", "tiny:1b"]  # the recommended model is among them
    assert spec["output"] == ["STRING", "STRING", "SPINBOT_SCRIPT", "STRING"]


def test_guided_script_to_subtitled_mp4_over_http(setup):
    comfy, fake = setup
    fake.models.append("pulled-later:1b")  # not in the dropdown ComfyUI cached: still accepted
    workflow = {
        "1": {"class_type": "SpinBotScriptOllama", "inputs": {
            "topic": "a greeting", "model": "pulled-later:1b", "host": "", "language": "English",
            "tone": "friendly", "target_seconds": 20.0, "words_per_second": 2.5, "seed": 5,
            "temperature": 0.2, "keep_alive": 0, "max_retries": 1, "max_segment_seconds": 10.0}},
        "2": {"class_type": "SpinBotSubtitles", "inputs": {
            "max_chars_per_line": 42, "max_lines": 2, "offset_seconds": 0.0, "script": ["1", 2]}},
        "3": {"class_type": "EmptyImage", "inputs": {
            "width": 64, "height": 48, "batch_size": 60, "color": 0}},
        "4": {"class_type": "SpinBotVideoCombine", "inputs": {
            "fps": 12.0, "filename_prefix": "SpinBot/guided", "crf": 30, "preset": "ultrafast",
            "audio_bitrate": "96k", "length_policy": "pad video with last frame",
            "normalize_loudness": False, "loudness_lufs": -14.0, "images": ["3", 0],
            "subtitles": ["2", 0]}},
    }
    entry = comfy.wait(comfy.queue(workflow))
    video = entry["outputs"]["4"]["spinbot_video"][0]
    p = probe(os.path.join(comfy.base_dir, "output", video["subfolder"], video["filename"]))
    assert [t for _a, _b, t in p.subtitles] == ["Hello from the fake server.",
                                                "This line is a subtitle!"]
    (chat,) = fake.chats
    assert chat["model"] == "pulled-later:1b" and chat["keep_alive"] == 0
    assert chat["options"]["seed"] == 5
