"""Voice nodes: SpinBot Voice Profile (audio + text, save, load by name) and SpinBot F5-TTS (text or
segments -> AUDIO + measured segments that the Subtitles node consumes), on the tiny models."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from spinbot.nodes import NODE_CLASS_MAPPINGS
from spinbot.nodes.script.nodes_script import SpinBotSubtitles
from spinbot.nodes.script.segments import make_segments
from spinbot.nodes.voice import nodes_voice
from spinbot.nodes.voice.profiles import VoiceError
from tests import factory
from tests._pack import ROOT
from tests.media import tone_audio

REF_TEXT = "This is my reference voice."
TTS_ARGS = dict(model=nodes_voice.DEFAULT_F5, vocoder=nodes_voice.DEFAULT_VOCODER, nfe_steps=4,
                cfg_strength=2.0, sway_sampling=-1.0, speed=1.0, seed=3, cross_fade=0.1,
                silence=0.25)


@pytest.fixture
def tts_models(spinbot_dirs):
    factory.build(spinbot_dirs["models"], only=["tts"])
    return spinbot_dirs["models"] / "tts"


def test_registered():
    assert NODE_CLASS_MAPPINGS["SpinBotVoiceProfile"] is nodes_voice.SpinBotVoiceProfile
    assert NODE_CLASS_MAPPINGS["SpinBotF5TTS"] is nodes_voice.SpinBotF5TTS
    assert nodes_voice.SpinBotF5TTS.RETURN_TYPES == ("AUDIO", "SPINBOT_SEGMENTS")
    assert nodes_voice.SpinBotVoiceProfile.RETURN_TYPES == ("SPINBOT_VOICE", "AUDIO", "STRING")


def test_dropdowns_list_factory_models_not_profiles(tts_models):
    profile = nodes_voice.SpinBotVoiceProfile()
    profile.build(REF_TEXT, nodes_voice.NO_PROFILE, "Me", True, 12.0, tone_audio(3.0, 48000))
    spec = nodes_voice.SpinBotF5TTS.INPUT_TYPES()["required"]
    assert spec["model"][0] == [nodes_voice.DEFAULT_F5]
    assert spec["vocoder"][0] == [nodes_voice.DEFAULT_VOCODER]
    load = nodes_voice.SpinBotVoiceProfile.INPUT_TYPES()["required"]["load_profile"][0]
    assert load == [nodes_voice.NO_PROFILE, "Me"]


def test_profile_save_then_load_by_name_then_speak(tts_models):
    node = nodes_voice.SpinBotVoiceProfile()
    voice, ref_audio, text = node.build(REF_TEXT, nodes_voice.NO_PROFILE, "Narrator", True, 12.0,
                                        tone_audio(3.0, 44100, channels=2))["result"]
    assert text == REF_TEXT and ref_audio["sample_rate"] == 24000
    assert ref_audio["waveform"].shape[:2] == (1, 1)
    loaded, _a, loaded_text = node.build("", "Narrator", "", False, 12.0, None)
    assert loaded_text == REF_TEXT and torch.equal(loaded.wave, voice.wave)
    tts = nodes_voice.SpinBotF5TTS()
    a1, s1 = tts.speak(voice, "Hello there. Nice to meet you.", **TTS_ARGS)
    a2, s2 = tts.speak(loaded, "Hello there. Nice to meet you.", **TTS_ARGS)
    assert torch.equal(a1["waveform"], a2["waveform"]) and s1 == s2
    assert a1["sample_rate"] == 24000 and a1["waveform"].shape[:2] == (1, 1)
    assert [s.text for s in s1] == ["Hello there.", "Nice to meet you."]
    assert abs(s1[-1].end - a1["waveform"].shape[-1] / 24000) <= 0.010


def test_segments_input_and_subtitles_consume_measured_timings(tts_models):
    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, tone_audio(3.0, 24000))
    segs = make_segments("First part of the script. Second part, which is longer than the first.")
    audio, timed = nodes_voice.SpinBotF5TTS().speak(voice, "ignored", segments=segs, **TTS_ARGS)
    assert [s.text for s in timed] == [s.text for s in segs]
    assert all(not s.estimated for s in timed)
    assert timed[1].start == pytest.approx(timed[0].end + 0.25, abs=0.002)
    srt, _vtt = SpinBotSubtitles().build(42, 2, 0.0, segments=timed, audio=audio)
    assert "First part of the script." in srt
    end = timed[-1].end
    stamp = f"{int(end // 3600):02d}:{int(end % 3600 // 60):02d}:{int(end % 60):02d},{round(end % 1 * 1000):03d}"
    assert stamp in srt


def test_script_input_speaks_the_scripts_segments(tts_models):
    from spinbot.nodes.script.script import direct_script

    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, tone_audio(3.0, 24000))
    script = direct_script("One short line. And a second, a little longer.", max_segment_seconds=10.0)
    _audio, timed = nodes_voice.SpinBotF5TTS().speak(voice, "ignored", script=script, **TTS_ARGS)
    assert [s.text for s in timed] == [s.text for s in script.segments]
    other = make_segments("Segments win over the script.")
    _audio, timed = nodes_voice.SpinBotF5TTS().speak(voice, "", script=script, segments=other, **TTS_ARGS)
    assert [s.text for s in timed] == ["Segments win over the script."]


def test_node_errors(tts_models):
    node = nodes_voice.SpinBotVoiceProfile()
    with pytest.raises(VoiceError, match="connect reference 'audio'"):
        node.build(REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, None)
    silent = {"waveform": torch.zeros(1, 1, 48000 * 3), "sample_rate": 48000}
    with pytest.raises(VoiceError, match="silent"):
        node.build(REF_TEXT, nodes_voice.NO_PROFILE, "x", True, 12.0, silent)
    assert nodes_voice.SpinBotVoiceProfile.INPUT_TYPES()["required"]["load_profile"][0] == \
        [nodes_voice.NO_PROFILE]  # nothing saved by the failed run
    voice, _a, _t = node.build(REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, tone_audio(3.0))
    with pytest.raises(ValueError, match="nothing to say"):
        nodes_voice.SpinBotF5TTS().speak(voice, "   ", **TTS_ARGS)
    with pytest.raises(VoiceError, match="voice"):
        nodes_voice.SpinBotF5TTS().speak("not a voice", "Hello.", **TTS_ARGS)


def test_factory_cli_writes_tts_folder(tmp_path):
    subprocess.run([sys.executable, "-m", "tests.factory", "--out", str(tmp_path), "--only", "tts"],
                   cwd=ROOT, check=True, capture_output=True)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["tts/F5TTS_v1_Base/model_1250000.safetensors", "tts/F5TTS_v1_Base/vocab.txt",
                     "tts/vocos-mel-24khz/config.yaml", "tts/vocos-mel-24khz/pytorch_model.bin"]


def test_fine_tune_with_its_own_vocab_is_selectable(tts_models):
    from spinbot.nodes.manifest import MissingModelError
    from tests import factory_voice

    vocab = factory_voice.tiny_vocab() + ["ẞ", "ñ", "ç"]
    factory_voice.write_f5(tts_models / "my_finetune", seed=60, filename="model_last.safetensors",
                           vocab=vocab)
    choices = nodes_voice.SpinBotF5TTS.INPUT_TYPES()["required"]["model"][0]
    assert choices == [nodes_voice.DEFAULT_F5, "my_finetune/model_last.safetensors"]
    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, tone_audio(3.0, 24000))
    args = dict(TTS_ARGS, model="my_finetune/model_last.safetensors")
    tuned, _ = nodes_voice.SpinBotF5TTS().speak(voice, "Hello there.", **args)
    base, _ = nodes_voice.SpinBotF5TTS().speak(voice, "Hello there.", **TTS_ARGS)
    assert tuned["waveform"].shape == base["waveform"].shape
    assert not torch.equal(tuned["waveform"], base["waveform"])  # other weights were used
    (tts_models / "my_finetune" / "vocab.txt").unlink()
    with pytest.raises(MissingModelError, match="vocab.txt"):
        nodes_voice.SpinBotF5TTS().speak(voice, "Hello there.", **args)


def test_pack_never_imports_the_reference_packages(tmp_path):
    """torchaudio, f5_tts and vocos are test-only references: importing the voice stage, loading
    the models and speaking must not import them (they may be installed here, so this checks
    sys.modules in a fresh process that loads only the voice stage, not the other stages)."""
    code = (
        "import sys, types\n"
        f"root = {ROOT!r}\n"
        "for name, path in (('spinbot', root), ('spinbot.nodes', root + '/nodes')):\n"
        "    module = types.ModuleType(name); module.__path__ = [path]; sys.modules[name] = module\n"
        "from pathlib import Path\n"
        "from spinbot.nodes.script.segments import make_segments\n"
        "from spinbot.nodes.voice import engine, nodes_voice, profiles\n"
        "from tests import factory_voice\n"
        "from tests.media import tone_audio\n"
        f"out = Path({str(tmp_path)!r})\n"
        "factory_voice.write_f5(out / 'f5'); factory_voice.write_vocos(out / 'vocos')\n"
        "f5, voc = engine.get_models(str(out / 'f5' / factory_voice.F5_FILE), str(out / 'vocos'))\n"
        "wave, _ = profiles.prepare_reference(tone_audio(3.0, 24000))\n"
        "voice = profiles.VoiceProfile(wave=wave, text='Reference words here.')\n"
        "engine.synthesize(f5, voc, voice, make_segments('Hello.'), engine.Settings(nfe_steps=2))\n"
        "bad = [m for m in ('torchaudio', 'f5_tts', 'vocos', 'x_transformers', 'torchdiffeq')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "SPINBOT_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
