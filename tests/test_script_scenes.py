"""Scene-by-scene scripts: one image prompt per narration segment, from the LLM (fake Ollama on
127.0.0.1) or typed, carried by the segments through retiming, and painted by Stage Image.

The image test uses the tiny SD 1.5 from tests/factory.py at 64x64 with 2 steps.
"""
from __future__ import annotations

import json

import pytest
import torch

from spinbot.nodes.image import nodes_image as N
from spinbot.nodes.script import ollama_client
from spinbot.nodes.script.nodes_script import (DEFAULT_MODEL, SpinBotDirectScript,
                                               SpinBotScriptOllama)
from spinbot.nodes.script.ollama_client import ScriptError
from spinbot.nodes.script.prompts import (SCENES_SCHEMA, SCRIPT_SCHEMA, parse_scene_reply,
                                          ReplyError, shipped_system_prompt, spread_scenes)
from spinbot.nodes.script.segments import (Segment, SegmentError, coerce_segments,
                                           fit_to_duration, retime)
from tests import factory
from tests.fake_ollama import FakeOllama, script_reply

MODEL = DEFAULT_MODEL
TRIGGER = "ohwx person"
CHARACTER = "a woman in her 30s with short red hair and a green coat"
SENTENCES = ["The harbour wakes before the sun.", "Fishing boats slip out into the fog.",
             "By noon the market is loud and bright."]
NARRATIVE = " ".join(SENTENCES)
SCENES = ["walking along a foggy harbour at dawn, blue hour, 35mm photo",
          "standing on a pier watching fishing boats in fog, soft light",
          "in a busy fish market at noon, colourful stalls, bright daylight"]
PER_SEGMENT = "scene per segment"


def scene_json(scenes, narrative=NARRATIVE) -> str:
    return json.dumps({"narrative": narrative, "scenes": scenes})


@pytest.fixture
def fake():
    server = FakeOllama(models=[MODEL], replies=[scene_json(SCENES)]).start()
    ollama_client.forget_cached_models()
    yield server
    server.stop()
    ollama_client.forget_cached_models()


def run(host, **overrides):
    inputs = dict(topic="A day in a fishing town", model=MODEL, host=host, language="English",
                  tone="calm storyteller", target_seconds=30.0, words_per_second=2.5, seed=7,
                  temperature=0.3, keep_alive=0, max_retries=2, max_segment_seconds=10.0,
                  trigger_word=TRIGGER, scenes=PER_SEGMENT, character=CHARACTER)
    inputs.update(overrides)
    return SpinBotScriptOllama().write(**inputs)


def _once(text: str, phrase: str) -> int:
    return text.lower().count(phrase.lower())


# ----------------------------------------------------------------------------- LLM scenes

def test_scene_per_segment_request_and_one_scene_per_segment(fake):
    stage, narrative, script, info = run(fake.url)
    (body,) = fake.chats
    assert body["format"] == SCENES_SCHEMA
    system, user = body["messages"]
    assert system["content"] == shipped_system_prompt(scenes=True) != shipped_system_prompt()
    for expected in ("one image prompt per sentence", CHARACTER, f'"{TRIGGER}"'):
        assert expected in user["content"]
    assert body["options"]["num_predict"] > 75 * 3 + 320  # room for the scenes as well
    assert narrative == NARRATIVE
    assert [s.text for s in script.segments] == SENTENCES
    for seg, written in zip(script.segments, SCENES):
        # the LLM left out character and trigger word: the code put them in, once each
        assert seg.scene == f"{TRIGGER}, {CHARACTER}, {written}"
    assert stage == script.segments[0].scene
    assert "scene: " + script.segments[2].scene in info
    assert script.to_dict()["segments"][1]["scene"] == script.segments[1].scene


def test_character_and_trigger_are_not_repeated_when_the_llm_wrote_them(fake):
    fake.replies = [scene_json([
        f"{TRIGGER.upper()} as {CHARACTER.replace(' ', '  ')}, on a pier",  # case, spacing
        f"close-up of {TRIGGER}, {CHARACTER}., boats",  # trailing full stop of the description
        "a market at noon"])]
    _, _, script, _ = run(fake.url)
    for seg in script.segments:
        assert _once(seg.scene, TRIGGER) == 1
        assert _once(" ".join(seg.scene.split()).replace(".,", ","), CHARACTER) == 1
    assert script.segments[2].scene == f"{TRIGGER}, {CHARACTER}, a market at noon"


def test_no_character_no_trigger_leaves_scenes_as_written(fake):
    _, _, script, _ = run(fake.url, trigger_word="", character="")
    assert [s.scene for s in script.segments] == SCENES
    assert "main character" not in fake.chats[0]["messages"][1]["content"]


def test_wrong_scene_count_is_asked_again_with_the_segments_listed(fake):
    fake.replies = [scene_json(SCENES[:2]), scene_json(SCENES)]
    _, _, script, info = run(fake.url)
    first, second = fake.chats
    assert len(fake.chats) == 2 and second["format"] == SCENES_SCHEMA
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": scene_json(SCENES[:2])}
    feedback = second["messages"][3]
    assert feedback["role"] == "user"
    assert "3 segments" in feedback["content"] and "has 2 entries" in feedback["content"]
    assert "exactly 3 image prompts" in feedback["content"]
    for k, sentence in enumerate(SENTENCES):
        assert f"{k + 1}. {sentence}" in feedback["content"]
    assert [s.scene for s in script.segments] == [f"{TRIGGER}, {CHARACTER}, {s}" for s in SCENES]
    assert "attempt 1: 2 scenes for the 3 segments" in info


@pytest.mark.parametrize("written, retries, expected", [
    (SCENES[:2], 1, [0, 0, 1]),  # fewer: each scene covers a run of segments
    (SCENES[:1], 0, [0, 0, 0]),
    (SCENES + ["a quiet evening harbour", "night over the sea"], 2, [0, 1, 3]),  # more: evenly
])
def test_scene_count_still_wrong_on_the_last_attempt_is_spread_evenly(fake, written, retries,
                                                                      expected):
    fake.replies = [scene_json(written)]
    _, _, script, info = run(fake.url, max_retries=retries)
    assert len(fake.chats) == retries + 1  # every retry was used, then no more calls
    assert [s.scene for s in script.segments] == [
        f"{TRIGGER}, {CHARACTER}, {written[k]}" for k in expected]
    assert f"{len(written)} scenes for the 3 segments of the narrative; spread evenly" in info


def test_spread_scenes_rule():
    assert spread_scenes(["a", "b"], 5) == ["a", "a", "a", "b", "b"]
    assert spread_scenes(list("abcdef"), 3) == ["a", "c", "e"]
    assert spread_scenes(["a", "b", "c"], 3) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        spread_scenes([], 2)


def test_invalid_replies_are_retried_like_one_scene_scripts(fake):
    fake.replies = ["Here are your scenes: harbour, boats, market",
                    json.dumps({"narrative": NARRATIVE, "stage": "a harbour"}),
                    scene_json(SCENES)]
    _, _, script, info = run(fake.url)
    assert len(fake.chats) == 3 and [s.scene != "" for s in script.segments] == [True] * 3
    retry1 = fake.chats[1]["messages"][-1]["content"]
    retry2 = fake.chats[2]["messages"][-1]["content"]
    assert "not valid JSON" in retry1 and '"scenes"' in retry1
    assert 'the field "scenes" is missing' in retry2
    assert "attempt 1:" in info and "attempt 2:" in info


@pytest.mark.parametrize("reply, problem", [
    (scene_json([]), '"scenes" is empty'),
    (scene_json("one long scene"), '"scenes" must be an array of strings, not str'),
    (scene_json(["ok", 3, "  "]), '"scenes" entries [2, 3] are not non-empty strings'),
    (json.dumps({"scenes": SCENES}), 'the field "narrative" is missing'),
])
def test_malformed_scene_replies_fail_after_the_retries(fake, reply, problem):
    fake.replies = [reply]
    with pytest.raises(ScriptError, match="gave no usable script in 2 attempts") as err:
        run(fake.url, max_retries=1)
    assert problem in str(err.value) and len(fake.chats) == 2
    with pytest.raises(ReplyError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_scene_reply(reply)


def test_llm_output_is_never_executed(fake):
    fake.replies = [scene_json(["__import__('math').pi"] * 3)]
    _, _, script, _ = run(fake.url, character="", trigger_word="")
    assert [s.scene for s in script.segments] == ["__import__('math').pi"] * 3


def test_trimmed_narrative_keeps_the_scenes_of_the_kept_segments(fake):
    long_sentences = SENTENCES + ["Then the boats come home with the evening tide, heavy and "
                                  "slow, and the whole town walks down to meet them."]
    fake.replies = [scene_json(SCENES + ["boats at sunset"], " ".join(long_sentences))]
    _, narrative, script, info = run(fake.url, target_seconds=10.0)
    assert script.trimmed and narrative == NARRATIVE and "trimmed" in info
    assert [s.scene for s in script.segments] == [f"{TRIGGER}, {CHARACTER}, {s}" for s in SCENES]


def test_unknown_scenes_mode_is_refused(fake):
    with pytest.raises(ScriptError, match="scenes must be one of one scene, scene per segment"):
        run(fake.url, scenes="two scenes")
    assert fake.chats == []


def test_one_scene_mode_is_unchanged(fake):
    fake.replies = [script_reply(SENTENCES, stage="on a pier at dawn")]
    stage, narrative, script, _ = run(fake.url, scenes="one scene", character="")
    (body,) = fake.chats
    assert body["format"] == SCRIPT_SCHEMA
    assert body["messages"][0]["content"] == shipped_system_prompt()
    assert stage == f"{TRIGGER}, on a pier at dawn" and narrative == NARRATIVE
    assert all(s.scene == "" for s in script.segments)
    # the defaults of the new inputs are this mode, so older workflows run as before
    defaults = SpinBotScriptOllama.INPUT_TYPES()["optional"]
    assert defaults["scenes"][1]["default"] == "one scene"
    assert defaults["character"][1]["default"] == ""


def test_one_scene_mode_with_a_character_puts_it_in_the_stage(fake):
    fake.replies = [script_reply(SENTENCES, stage="on a pier at dawn")]
    stage, _, script, _ = run(fake.url, scenes="one scene")
    assert stage == f"{TRIGGER}, {CHARACTER}, on a pier at dawn"
    assert CHARACTER in fake.chats[0]["messages"][1]["content"]


def test_fake_ollama_script_reply_answers_both_schemas(fake):
    fake.replies = [script_reply(SENTENCES)]
    _, _, script, _ = run(fake.url, character="", trigger_word="")
    assert [s.scene for s in script.segments] == [
        "scene 1, The harbour wakes before the sun", "scene 2, Fishing boats slip out into the fog",
        "scene 3, By noon the market is loud and bright"]
    stage, _, _, _ = run(fake.url, scenes="one scene", character="", trigger_word="")
    assert stage.startswith("head and shoulders")


# ----------------------------------------------------------------------------- direct scenes

def direct(**overrides):
    inputs = dict(narration=NARRATIVE, language="English", words_per_second=2.5,
                  max_segment_seconds=10.0, scene_prompt="", trigger_word=TRIGGER,
                  scene_prompts="\n".join(SCENES), character=CHARACTER)
    inputs.update(overrides)
    return SpinBotDirectScript().make(**inputs)


def test_direct_script_one_scene_line_per_segment():
    stage, _, script, _ = direct(scene_prompts="\n\n".join(SCENES) + "\n")  # blank lines skipped
    assert [s.scene for s in script.segments] == [f"{TRIGGER}, {CHARACTER}, {s}" for s in SCENES]
    assert stage == script.segments[0].scene
    stage, _, _, _ = direct(scene_prompt="a harbour town, overview")
    assert stage == f"{TRIGGER}, {CHARACTER}, a harbour town, overview"


def test_direct_script_fewer_lines_repeat_the_last():
    _, _, script, info = direct(scene_prompts=SCENES[0], trigger_word="", character="")
    assert [s.scene for s in script.segments] == [SCENES[0]] * 3
    assert "segments 2-3 repeat the last scene line" in info


def test_direct_script_more_lines_than_segments_is_an_error():
    with pytest.raises(ScriptError, match=r"4 scene prompt lines for 3 segments.*"
                                          r"1\. The harbour wakes"):
        direct(scene_prompts="\n".join(SCENES + ["one too many"]))


def test_direct_script_without_scene_lines_is_unchanged():
    stage, _, script, _ = direct(scene_prompts="", character="", scene_prompt="a harbour")
    assert stage == f"{TRIGGER}, a harbour" and all(s.scene == "" for s in script.segments)


# ----------------------------------------------------------------------------- segments

def test_segment_round_trip_with_and_without_scene():
    with_scene = Segment(0, "Hi.", 0.0, 1.0, True, "a pier at dawn")
    without = Segment(1, "Bye.", 1.2, 2.0, False)
    assert with_scene.to_dict()["scene"] == "a pier at dawn" and without.to_dict()["scene"] == ""
    assert [Segment.from_dict(s.to_dict()) for s in (with_scene, without)] == [with_scene, without]
    old = {"index": 2, "text": "Old.", "start": 0.0, "end": 1.0, "estimated": False}  # no scene
    assert Segment.from_dict(old) == Segment(2, "Old.", 0.0, 1.0, False, "")
    assert coerce_segments([old, with_scene.to_dict()])[1].scene == "a pier at dawn"
    with pytest.raises(SegmentError, match="scene must be a string"):
        coerce_segments([{**old, "scene": ["a", "list"]}])


def test_retime_and_fit_keep_scenes():
    segs = (Segment(0, "One.", 0.0, 1.0, True, "scene one"), Segment(1, "Two.", 1.3, 2.0, True, ""),
            Segment(2, "Three.", 2.3, 3.0, True, "scene three"))
    timed = retime(segs, [0.8, 1.1, 0.5], gap=0.2)
    assert [s.scene for s in timed] == ["scene one", "", "scene three"]
    assert not any(s.estimated for s in timed) and timed[2].start == pytest.approx(2.3)
    assert [s.scene for s in fit_to_duration(segs, 6.0)] == ["scene one", "", "scene three"]


# ----------------------------------------------------------------------------- stage image

@pytest.fixture(scope="module")
def sd15_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene_models")
    factory.tiny_sd15(root / "checkpoints")
    return root


def test_stage_image_paints_each_segment_from_its_own_scene(sd15_root, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(sd15_root))
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    model = N.SpinBotImageModel().load("v1-5-pruned-emaonly.safetensors", "none", "auto",
                                       "auto")[0]
    seen = []
    real = N.generate_images

    def spy(image_model, settings, refiner=None):
        seen.append((settings.prompt, settings.seed))
        return real(image_model, settings, refiner)

    monkeypatch.setattr(N, "generate_images", spy)
    segments = (Segment(0, "A ship leaves.", 0.0, 2.0, False, "ohwx person, a ship at dawn"),
                Segment(1, "The storm comes.", 2.0, 4.0, False, ""),
                Segment(2, "Home again.", 4.0, 5.0, False, "ohwx person, a warm kitchen"))

    def paint(prompt, seed, segs=None):
        kw = {"segments": segs} if segs is not None else {}
        return N.SpinBotStageImage().paint(model, prompt, "blurry", "custom", 64, 64, 2, 5.0,
                                           "euler", seed, 1, **kw)[0]

    images = paint("a harbour town", 5, segments)
    assert images.shape == (3, 64, 64, 3)
    assert seen == [("ohwx person, a ship at dawn", 5),
                    ("a harbour town, The storm comes.", 6),  # no scene: today's behaviour
                    ("ohwx person, a warm kitchen", 7)]
    # the pixels are those of the scene prompt alone at that seed
    alone = paint("ohwx person, a warm kitchen", 7)
    assert torch.allclose(images[2:], alone, atol=1e-5)
    assert not torch.allclose(images[0], images[2], atol=1e-3)
    # the segments of a SpinBotVideo (dicts) are accepted too
    seen.clear()
    paint("a harbour town", 5, [s.to_dict() for s in segments[:1]])
    assert seen == [("ohwx person, a ship at dawn", 5)]


@pytest.mark.parametrize("silence", [0.25, 0.0])  # gaps, or cross-faded segments
def test_voice_stage_measured_segments_keep_their_scenes(spinbot_dirs, silence):
    from spinbot.nodes.voice import nodes_voice
    from tests.media import tone_audio

    factory.build(spinbot_dirs["models"], only=["tts"])
    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        "This is my reference voice.", nodes_voice.NO_PROFILE, "", False, 12.0,
        tone_audio(3.0, 24000))
    _, _, script, _ = direct(narration="One short line. And a second one.",
                             scene_prompts="a pier\na market", trigger_word="", character="")
    _audio, timed = nodes_voice.SpinBotF5TTS().speak(
        voice, "", script=script, model=nodes_voice.DEFAULT_F5,
        vocoder=nodes_voice.DEFAULT_VOCODER, nfe_steps=2, cfg_strength=2.0, sway_sampling=-1.0,
        speed=1.0, seed=3, cross_fade=0.1, silence=silence)
    assert [s.scene for s in timed] == ["a pier", "a market"]
    assert not any(s.estimated for s in timed)
