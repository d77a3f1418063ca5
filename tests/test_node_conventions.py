"""Pack-wide conventions: node categories, the Voice Profile as an output node, F5-TTS progress
that reaches its total, and registry metadata that describes only what exists."""
from __future__ import annotations

import os
import re
import tomllib

import pytest

import spinbot
from spinbot.nodes import runtime
from spinbot.nodes.voice import nodes_voice, profiles
from tests import factory
from tests._pack import ROOT
from tests.media import tone_audio

STAGES = sorted(d for d in os.listdir(os.path.join(ROOT, "nodes"))
                if os.path.isfile(os.path.join(ROOT, "nodes", d, "__init__.py")))


@pytest.mark.parametrize("name", sorted(spinbot.NODE_CLASS_MAPPINGS))
def test_category_is_spinbot_slash_its_stage_in_lowercase(name):
    """``SpinBot/<stage>``, the stage being the subpackage the node lives in, all lowercase, so
    the Add Node menu has one entry per stage (not 'Lipsync' beside 'lipsync')."""
    cls = spinbot.NODE_CLASS_MAPPINGS[name]
    stage = cls.__module__.split(".")[-2]
    assert stage in STAGES, cls.__module__
    assert cls.CATEGORY == f"SpinBot/{stage}", (name, cls.CATEGORY)
    assert re.fullmatch(r"SpinBot/[a-z]+", cls.CATEGORY)


REF_TEXT = "This is my reference voice."


@pytest.fixture
def tts_models(spinbot_dirs):
    factory.build(spinbot_dirs["models"], only=["tts"])


def test_voice_profile_is_an_output_node_that_says_where_it_saved(spinbot_dirs):
    assert nodes_voice.SpinBotVoiceProfile.OUTPUT_NODE is True
    node = nodes_voice.SpinBotVoiceProfile()
    out = node.build(REF_TEXT, nodes_voice.NO_PROFILE, "Narrator", True, 12.0,
                     tone_audio(3.0, 24000))
    folder = profiles.profile_dir("Narrator")
    assert os.path.isfile(os.path.join(folder, "reference.wav"))
    voice, audio, text = out["result"]
    assert text == REF_TEXT and audio["sample_rate"] == 24000
    message = " ".join(out["ui"]["text"])
    assert folder in message and "Narrator" in message


def test_voice_profile_with_save_off_saves_nothing_and_returns_plain_outputs(spinbot_dirs):
    node = nodes_voice.SpinBotVoiceProfile()
    out = node.build(REF_TEXT, nodes_voice.NO_PROFILE, "Narrator", False, 12.0,
                     tone_audio(3.0, 24000))
    voice, audio, text = out if isinstance(out, tuple) else out["result"]
    assert not isinstance(out, dict) or not out.get("ui", {}).get("text")
    assert text == REF_TEXT and voice.text == REF_TEXT
    assert profiles.list_profiles() == []
    assert not any(files for _d, _s, files in os.walk(spinbot_dirs["models"]))


class RecordingProgress(runtime.Progress):
    bars: list["RecordingProgress"] = []

    def __init__(self, total: int, desc: str = "SpinBot"):
        super().__init__(total, desc)
        self.updates: list[int] = []
        RecordingProgress.bars.append(self)

    def update(self, n: int = 1, preview=None) -> None:
        super().update(n, preview)
        self.updates.append(self.current)


@pytest.mark.parametrize("text", [
    "Hello there.",
    "Hello there. Hello there.",              # equal pieces: sampled as one batch
    "One. Two two two. One. Three three.",    # batches and single pieces mixed
])
def test_f5_progress_reaches_its_total(tts_models, monkeypatch, text):
    monkeypatch.setattr(runtime, "Progress", RecordingProgress)
    RecordingProgress.bars = []
    voice = nodes_voice.SpinBotVoiceProfile().build(REF_TEXT, nodes_voice.NO_PROFILE, "", False,
                                                    12.0, tone_audio(3.0, 24000))[0]
    nodes_voice.SpinBotF5TTS().speak(
        voice, text, model=nodes_voice.DEFAULT_F5, vocoder=nodes_voice.DEFAULT_VOCODER,
        nfe_steps=4, cfg_strength=2.0, sway_sampling=-1.0, speed=1.0, seed=3, cross_fade=0.1,
        silence=0.25)
    assert len(RecordingProgress.bars) == 1
    bar = RecordingProgress.bars[0]
    assert bar.updates and bar.updates[-1] == bar.total, (bar.updates, bar.total)
    assert bar.updates == sorted(bar.updates)
    assert len(bar.updates) >= 4  # it moves once per sampling step, not once at the end


def test_registry_metadata_describes_only_what_exists():
    data = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    description = data["project"]["description"]
    # Every stage the description names has a node.
    names = " ".join(spinbot.NODE_DISPLAY_NAME_MAPPINGS.values()).lower()
    for word in re.findall(r"InfiniteTalk|SVD|Wav2Lip|ESRGAN|F5-TTS|Ollama|LoRA|subtitles",
                           description, re.I):
        key = {"esrgan": "upscale", "svd": "svd", "lora": "lora", "subtitles": "subtitles"}.get(
            word.lower(), word.lower())
        assert key in names, f"the description names {word!r}, which no node provides"
    comfy = data["tool"]["comfy"]
    icon = comfy["Icon"]
    prefix = "https://raw.githubusercontent.com/spinbot-dev/ComfyUI-SpinBot/main/"
    assert icon.startswith(prefix) and os.path.isfile(os.path.join(ROOT, icon[len(prefix):])), icon
    for key in ("Banner",):
        if comfy.get(key):
            assert os.path.isfile(os.path.join(ROOT, comfy[key][len(prefix):])), comfy[key]
    for path in comfy.get("includes", []):
        assert os.path.exists(os.path.join(ROOT, path)), f"includes names a missing path: {path}"


def test_script_progress_reaches_its_total_when_the_reply_is_shorter_than_estimated(monkeypatch):
    """The same fault elsewhere: the Ollama node's bar is sized from an estimate of the reply
    (max words x 2 + 120 chunks); a short reply must still end at 100 %."""
    import json

    from spinbot.nodes.script.nodes_script import SpinBotScriptOllama
    from tests.fake_ollama import FakeOllama

    monkeypatch.setattr(runtime, "Progress", RecordingProgress)
    RecordingProgress.bars = []
    reply = json.dumps({"stage": "a studio portrait", "narrative": "Hello there. Short and sweet."})
    spec = SpinBotScriptOllama.INPUT_TYPES()
    kwargs = {name: opts[1]["default"] for section in ("required", "optional")
              for name, opts in (spec.get(section) or {}).items()
              if len(opts) > 1 and "default" in opts[1]}
    with FakeOllama(replies=[reply]) as fake:
        kwargs.update(topic="mornings", model="qwen2.5:7b", host=fake.url, target_seconds=20.0)
        SpinBotScriptOllama().write(**kwargs)
    assert len(RecordingProgress.bars) == 1
    bar = RecordingProgress.bars[0]
    assert bar.updates and bar.updates[-1] == bar.total, (bar.updates[-3:], bar.total)
