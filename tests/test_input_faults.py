"""Bad and awkward input at the node boundaries (issue 14, "Hardening").

- LLM replies with code fences, prose or trailing remarks around the JSON object are used as they
  are; only a reply without a valid object costs a retry.
- Text with nothing speakable (punctuation, spaces, emoji) is refused by name; emoji inside text
  are left out of the speech and kept in the subtitles.
- NaN/inf input frames given to Upscale are reported as bad input frames, NaN made by the model
  as a model/precision problem.
- No node hands None (or an invalid value) to an output: a static check over every node's
  return paths and runs of the nodes that are cheap with the tiny models.
"""
from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from spinbot.nodes import NODE_CLASS_MAPPINGS
from spinbot.nodes.media import MediaError, check_audio, images_to_uint8
from spinbot.nodes.script import ollama_client
from spinbot.nodes.script.nodes_script import (DEFAULT_MODEL, SpinBotDirectScript,
                                               SpinBotScriptOllama, SpinBotSubtitles)
from spinbot.nodes.script.ollama_client import ScriptError
from spinbot.nodes.script.prompts import ReplyError, parse_reply
from spinbot.nodes.script.script import Script
from spinbot.nodes.script.segments import Segment, make_segments
from spinbot.nodes.upscale.engine import UpscaleSettings, upscale_images
from spinbot.nodes.upscale.model import UpscaleModelError, load_upscaler
from spinbot.nodes.upscale.nodes_upscale import SpinBotUpscale
from spinbot.nodes.video import store
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo, SpinBotVideoToImages
from spinbot.nodes.voice import engine as voice_engine
from spinbot.nodes.voice import nodes_voice
from spinbot.nodes.voice.profiles import VoiceError, VoiceProfile
from spinbot.nodes.voice.text import is_speakable, spoken_text
from tests import factory
from tests.fake_ollama import FakeOllama
from tests.media import astronaut, tone_audio
from tests.test_voice_nodes import REF_TEXT, TTS_ARGS  # the F5 node's test settings

STAGE = "ohwx person, head and shoulders, a {curly} neon sign, night street"
NARRATIVE = "Hello {friends}! Tonight we walk through the city."
SCRIPT_JSON = json.dumps({"stage": STAGE, "narrative": NARRATIVE})

# --------------------------------------------------------------------------- LLM replies

WRAPPED_REPLIES = {
    "prose then json fence": f"Here is your script:\n```json\n{SCRIPT_JSON}\n```",
    "trailing remark": f"{SCRIPT_JSON}\nHope this helps!",
    "fence without tag": f"```\n{SCRIPT_JSON}\n```\nLet me know if you want changes.",
    "nested braces, braces in strings": json.dumps(
        {"stage": STAGE, "narrative": NARRATIVE})[:-1] + "}  <- the JSON {as asked}",
    "two objects: first valid wins": SCRIPT_JSON + "\n" + json.dumps(
        {"stage": "another scene", "narrative": "Other words."}),
    "an invalid object before the valid one": 'Schema: {"stage": "string", "narrative": 3}\n'
                                              f"Script: {SCRIPT_JSON}",
    "think block, prose, fence": f"<think>Plan: {{draft}}</think>Sure!\n```json\n{SCRIPT_JSON}"
                                 "\n```\nEnjoy {the} video.",
}


@pytest.mark.parametrize("raw", WRAPPED_REPLIES.values(), ids=WRAPPED_REPLIES.keys())
def test_the_first_valid_object_is_taken_from_a_wrapped_reply(raw):
    assert parse_reply(raw) == (STAGE, NARRATIVE)


def test_nested_objects_and_braces_inside_strings_decode_exactly():
    inner = {"stage": "a room with a {sign}", "narrative": 'She said "{hi}" and left.'}
    raw = "Result: " + json.dumps({"script": inner}) + " ok"  # the valid object is nested
    assert parse_reply(raw) == (inner["stage"], inner["narrative"])


@pytest.mark.parametrize("raw, problem", [
    ("Sure! The stage is a beach and the narrative is about waves.", "not valid JSON"),
    ('```json\n{"stage": "a beach", "narrative": "Once upon a ti\n```', "not valid JSON"),
    ('Here: {"stage": "a beach"} and {"narrative": 5}', '"narrative" is missing'),
    ('{"stage": "a beach", "narrative": "!!! ... 🎉🎉"}', "no speakable words"),
])
def test_replies_without_a_valid_object_say_why(raw, problem):
    with pytest.raises(ReplyError, match=problem):
        parse_reply(raw)


@pytest.fixture
def fake():
    server = FakeOllama(models=[DEFAULT_MODEL]).start()
    ollama_client.forget_cached_models()
    yield server
    server.stop()
    ollama_client.forget_cached_models()


def _write(host: str, **overrides):
    inputs = dict(topic="A night walk", model=DEFAULT_MODEL, host=host, language="English",
                  tone="calm", target_seconds=30.0, words_per_second=2.5, seed=5,
                  temperature=0.2, keep_alive=0, max_retries=2, max_segment_seconds=10.0,
                  trigger_word="")
    inputs.update(overrides)
    return SpinBotScriptOllama().write(**inputs)


@pytest.mark.parametrize("name", ["prose then json fence", "trailing remark", "fence without tag"])
def test_wrapped_replies_succeed_without_a_retry(fake, name):
    fake.replies = [WRAPPED_REPLIES[name], "must not be asked for"]
    stage, narrative, script, info = _write(fake.url)
    assert (stage, narrative) == (STAGE, NARRATIVE)
    assert len(fake.chats) == 1 and "attempt" not in info
    assert [s.text for s in script.segments] == ["Hello {friends}!",
                                                 "Tonight we walk through the city."]


def test_a_reply_without_an_object_is_retried_then_fails_with_what_came_back(fake):
    fake.replies = ["I cannot write JSON today, sorry."]
    with pytest.raises(ScriptError) as err:
        _write(fake.url, max_retries=1)
    assert len(fake.chats) == 2  # the first try and one retry
    assert "not valid JSON" in fake.chats[1]["messages"][-1]["content"]
    message = str(err.value)
    assert "2 attempts" in message and "I cannot write JSON today, sorry." in message


def test_a_retry_after_no_object_then_a_wrapped_reply_succeeds(fake):
    fake.replies = ["Working on it...", WRAPPED_REPLIES["trailing remark"]]
    _stage, narrative, _script, info = _write(fake.url)
    assert narrative == NARRATIVE and len(fake.chats) == 2 and "attempt 1" in info


# --------------------------------------------------------------------------- speakable text

@pytest.mark.parametrize("narration", ["", "   \n ", "😀😀🎉", "... !!! ?", "👍🏽 ❤️ 🇩🇪"])
def test_direct_script_refuses_a_narration_without_words(narration):
    with pytest.raises(ScriptError, match="narration"):
        SpinBotDirectScript().make(narration, "English", 2.5, 10.0)


def test_direct_script_keeps_emoji_in_its_text():
    stage, narrative, script, _info = SpinBotDirectScript().make(
        "Good morning 🌞! Let us begin.", "English", 2.5, 10.0)
    assert narrative == "Good morning 🌞! Let us begin."
    assert script.segments[0].text == "Good morning 🌞!"


def test_spoken_text_drops_emoji_only():
    assert spoken_text("Hello 😀 world.") == "Hello world."
    assert spoken_text("Hi 👋🏽, see you 🇩🇪!") == "Hi, see you!"
    assert spoken_text("Hello😀world ✨") == "Hello world"
    assert spoken_text("20 °C, ©2024, café") == "20 °C, ©2024, café"  # no emoji: unchanged
    assert spoken_text("你好😀世界") == "你好世界"
    assert not is_speakable("... !!! 😀 \u200d\ufe0f") and is_speakable("42") \
        and is_speakable("你好")




@pytest.fixture
def voice(spinbot_dirs):
    factory.build(spinbot_dirs["models"], only=["tts"])
    v, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        REF_TEXT, nodes_voice.NO_PROFILE, "", False, 12.0, tone_audio(3.0, 24000))
    return v


@pytest.mark.parametrize("text, segments, number, shown", [
    ("😀😀 !!!", None, 1, "😀😀 !!!"),
    ("   ...   ", None, 1, "..."),
    ("ignored", (Segment(0, "Hello there.", 0.0, 1.0), Segment(1, "🎉🎉 🎉", 1.0, 2.0)), 2,
     "🎉🎉 🎉"),
])
def test_f5_refuses_a_segment_with_nothing_speakable_naming_it(voice, text, segments, number,
                                                               shown, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("the model ran on text with nothing to say")
    monkeypatch.setattr(voice_engine.cfm, "sample", no_sampling)
    with pytest.raises(VoiceError) as err:
        nodes_voice.SpinBotF5TTS().speak(voice, text, segments=segments, **TTS_ARGS)
    message = str(err.value)
    assert f"segment {number} ({shown!r})" in message and "nothing to speak" in message


def test_f5_leaves_emoji_out_of_the_speech_and_keeps_them_in_the_segments(voice, monkeypatch):
    seen: list[str] = []
    real_encode = voice_engine.encode

    def spy(texts, vocab, *args, **kwargs):
        seen.extend(texts)
        return real_encode(texts, vocab, *args, **kwargs)
    monkeypatch.setattr(voice_engine, "encode", spy)
    tts = nodes_voice.SpinBotF5TTS()
    with_emoji, segs = tts.speak(voice, "Hello 😀 world. See you 👋🏽!", **TTS_ARGS)
    plain, plain_segs = tts.speak(voice, "Hello world. See you!", **TTS_ARGS)
    # the model read exactly the same tokens: the same audio, sample for sample
    assert torch.equal(with_emoji["waveform"], plain["waveform"])
    assert [s.text for s in segs] == ["Hello 😀 world.", "See you 👋🏽!"]  # subtitles keep them
    assert [(s.start, s.end) for s in segs] == [(s.start, s.end) for s in plain_segs]
    assert seen and not any(c in t for t in seen for c in "😀👋🏽")


def test_an_emoji_or_mark_after_a_sentence_stays_with_it(voice):
    script = SpinBotDirectScript().make("Hi.\n\n🎉🎉\n\nBye for now! 😊 !!!", "English", 2.5,
                                        10.0)[2]
    assert [s.text for s in script.segments] == ["Hi. 🎉🎉", "Bye for now! 😊 !!!"]
    assert [s.text for s in make_segments("👋 Hello. World.")] == ["👋 Hello.", "World."]
    audio, segments = nodes_voice.SpinBotF5TTS().speak(voice, "Have a great day! 😊", **TTS_ARGS)
    assert [s.text for s in segments] == ["Have a great day! 😊"]
    assert segments[0].end == pytest.approx(audio["waveform"].shape[-1] / 24000, abs=0.01)


def test_voice_profile_refuses_a_reference_text_without_words(voice):
    with pytest.raises(VoiceError, match="reference text"):
        nodes_voice.SpinBotVoiceProfile().build("🙂🙂 ...", nodes_voice.NO_PROFILE, "Me", True,
                                                12.0, tone_audio(3.0, 24000))
    assert nodes_voice.SpinBotVoiceProfile.INPUT_TYPES()["required"]["load_profile"][0] == \
        [nodes_voice.NO_PROFILE]  # nothing was saved
    unspeakable = VoiceProfile(wave=voice.wave, text="!!! 😀", name="x")
    with pytest.raises(VoiceError, match="reference text"):
        nodes_voice.SpinBotF5TTS().speak(unspeakable, "Hello there.", **TTS_ARGS)


# --------------------------------------------------------------------------- upscale NaN

SRVGG = "realesr-general-x4v3.pth"


@pytest.fixture
def upscalers(spinbot_dirs):
    folder = spinbot_dirs["models"] / "upscale_models"
    factory.tiny_realesr_general_x4v3(folder)
    return folder


def _photo(count: int, height: int = 16, width: int = 20) -> torch.Tensor:
    photo = torch.from_numpy(np.array(astronaut(96))).float().div(255.0)
    return torch.stack([photo[3 * i:3 * i + height, 2 * i:2 * i + width] for i in range(count)])


@pytest.mark.parametrize("tile", [0, 8], ids=["whole frames", "tiled"])
def test_nan_and_inf_input_frames_are_named_as_bad_input(upscalers, tile):
    frames = _photo(6)
    frames[3, 2, 5, 1] = float("nan")
    frames[5, 0, 0, 0] = float("inf")
    with pytest.raises(MediaError, match=r"frame\(s\) 3, 5 contain NaN or infinite values") as err:
        SpinBotUpscale().upscale(SRVGG, 0.0, tile, 4, "fp32", 2, images=frames)
    assert "model file" not in str(err.value)
    with pytest.raises(MediaError, match=r"frame\(s\) 0 contain"):  # the first frame too
        upscale_images(load_upscaler(SRVGG), frames[5:], UpscaleSettings(tile=tile))


def _hot_model(folder, gain: float) -> str:
    """An upscaler whose convolutions are ``gain`` times the tiny one's: fine in fp32, past
    fp16's range (65504) after a few layers."""
    sd = factory.srvgg_state_dict(seed=43)
    for key, value in sd.items():
        if key.endswith(".weight") and value.ndim == 4:
            sd[key] = value * gain
    torch.save({"params": sd}, folder / "hot-x4.pth")
    return "hot-x4.pth"


def test_nan_made_by_the_model_is_reported_as_the_models(upscalers):
    name = _hot_model(upscalers, 300.0)
    frames = _photo(3)
    out, _video = SpinBotUpscale().upscale(name, 0.0, 0, 4, "fp32", 2, images=frames)
    assert bool(torch.isfinite(out).all())  # the same model is fine in fp32
    with pytest.raises(UpscaleModelError) as err:
        SpinBotUpscale().upscale(name, 0.0, 8, 4, "fp16", 2, images=frames)
    message = str(err.value)
    assert "produced NaN/inf values in float16" in message and "set precision to fp32" in message
    assert "input frames 0-1 are finite" in message
    torch.save({"params": {k: v * float("nan") if k == "body.0.weight" else v
                           for k, v in factory.srvgg_state_dict(seed=43).items()}},
               upscalers / "damaged-x4.pth")
    with pytest.raises(UpscaleModelError, match="in float32; the model file may be damaged"):
        SpinBotUpscale().upscale("damaged-x4.pth", 0.0, 0, 4, "fp32", 2, images=frames)


# --------------------------------------------------------------------------- no None outputs

def _node_classes() -> list[tuple[str, type]]:
    return sorted(NODE_CLASS_MAPPINGS.items())


def _none_capable(expr: ast.AST) -> bool:
    """Whether an expression can evaluate to None by its form: ``None``, ``x if c else None``,
    ``a or None``."""
    if isinstance(expr, ast.Constant):
        return expr.value is None
    if isinstance(expr, ast.IfExp):
        return _none_capable(expr.body) or _none_capable(expr.orelse)
    if isinstance(expr, ast.BoolOp):
        return any(_none_capable(v) for v in expr.values)
    return False


def _is_none_guard(node: ast.AST, name: str) -> bool:
    """``if name is None: name = <not None>``."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == name and len(test.ops) == 1 and isinstance(test.ops[0], ast.Is)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None):
        return False
    return any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                 for t in s.targets)
               and not _none_capable(s.value) for s in node.body)


def _function_ast(fn) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _own_nodes(fn_ast: ast.FunctionDef):
    """Nodes of a function body, not of functions or lambdas defined inside it."""
    stack = list(fn_ast.body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                      ast.ClassDef)):
                stack.append(child)


def none_outputs(fn, width: int, depth: int = 0) -> list[str]:
    """Return paths of a node function that can put None into an output, found statically.

    Follows returned tuples (and ``{"result": (...)}``), names assigned in the function (an
    assignment that can be None counts unless an ``if name is None: name = ...`` guard comes
    after it), parameters defaulting to None, and calls of module-level helpers that build the
    output tuple."""
    tree = _function_ast(fn)
    module = sys.modules[fn.__module__]
    args = tree.args
    defaults = dict(zip([a.arg for a in args.args][::-1], args.defaults[::-1]))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d})
    nodes = list(_own_nodes(tree))
    assigns: dict[str, list[ast.Assign]] = {}
    guards: dict[str, list[int]] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigns.setdefault(target.id, []).append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) \
                and _is_none_guard(node, node.test.left.id):
            guards.setdefault(node.test.left.id, []).append(node.lineno)

    def can_be_none(expr: ast.AST, seen: frozenset = frozenset()) -> bool:
        if _none_capable(expr):
            return True
        if isinstance(expr, ast.IfExp):
            return can_be_none(expr.body, seen) or can_be_none(expr.orelse, seen)
        if not isinstance(expr, ast.Name) or expr.id in seen:
            return False
        seen = seen | {expr.id}
        if expr.id in defaults and _none_capable(defaults[expr.id]) and expr.id not in assigns:
            return True
        risky = [a.lineno for a in assigns.get(expr.id, []) if can_be_none(a.value, seen)]
        return bool(risky) and not any(g > max(risky) for g in guards.get(expr.id, []))

    problems = []
    for node in nodes:
        if not isinstance(node, ast.Return):
            continue
        value = node.value
        where = f"{fn.__qualname__} line {node.lineno}"
        if isinstance(value, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in value.keys]
            value = value.values[keys.index("result")] if "result" in keys else None
        if value is None or _none_capable(value):
            problems.append(f"{where}: returns None")
            continue
        if isinstance(value, ast.Tuple):
            if len(value.elts) != width:
                problems.append(f"{where}: {len(value.elts)} values for {width} outputs")
            for slot, elt in enumerate(value.elts):
                if can_be_none(elt):
                    problems.append(f"{where}: output {slot} ({ast.unparse(elt)}) can be None")
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and depth < 2:
            helper = getattr(module, value.func.id, None)
            if inspect.isfunction(helper) and helper.__module__ == fn.__module__:
                problems += none_outputs(helper, width, depth + 1)
    return problems


@pytest.mark.parametrize("name, cls", _node_classes(), ids=[n for n, _ in _node_classes()])
def test_no_return_path_puts_none_into_an_output(name, cls):
    fn = getattr(cls, cls.FUNCTION)
    assert none_outputs(fn, len(cls.RETURN_TYPES)) == []


def test_the_static_check_finds_none_outputs():
    """The checker itself: the shapes of the Upscale fault (and friends) are found."""
    class Node:
        RETURN_TYPES = ("IMAGE", "SPINBOT_VIDEO")

        def bad(self, images=None, video=None):
            out_images = images * 2 if images is not None else None
            out_video = video
            return (out_images, out_video)

        def guarded(self, images=None, video=None):
            out_images = images * 2 if images is not None else None
            out_video = video if video is not None else None
            if out_video is None:
                out_video = "made from the images"
            if out_images is None:
                out_images = "first frame"
            return {"ui": {}, "result": (out_images, out_video)}

        def short(self):
            return (1,)

    assert [p.split(": ", 1)[1] for p in none_outputs(Node.bad, 2)] == [
        "output 0 (out_images) can be None", "output 1 (out_video) can be None"]
    assert none_outputs(Node.guarded, 2) == []
    assert none_outputs(Node.short, 2)[0].endswith("1 values for 2 outputs")


# Run-based: every node that is cheap with the tiny models, over its optional-input combinations.

def _valid(kind: str, value) -> bool:
    if value is None:
        return False
    if kind == "IMAGE":
        return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] > 0 \
            and value.shape[-1] == 3 and value.dtype == torch.float32
    if kind == "AUDIO":
        check_audio(value)  # raises on an invalid AUDIO
        return True
    if kind == "SPINBOT_VIDEO":
        return isinstance(value, store.SpinBotVideo) and value.frame_count > 0
    if kind == "SPINBOT_SEGMENTS":
        return isinstance(value, tuple) and all(isinstance(s, Segment) for s in value)
    if kind == "SPINBOT_SCRIPT":
        return isinstance(value, Script)
    if kind == "SPINBOT_VOICE":
        return isinstance(value, VoiceProfile)
    return isinstance(value, {"STRING": str, "INT": int, "FLOAT": float}[kind])


def assert_outputs_valid(cls, result) -> None:
    values = result["result"] if isinstance(result, dict) else result
    assert len(values) == len(cls.RETURN_TYPES)
    for kind, name, value in zip(cls.RETURN_TYPES, cls.RETURN_NAMES, values):
        assert _valid(kind, value), f"{cls.__name__} output '{name}' ({kind}) is {value!r:.80}"


def _video(frames: int = 4, audio_seconds: float | None = None) -> store.SpinBotVideo:
    audio = tone_audio(audio_seconds, 16000) if audio_seconds else None
    with store.VideoWriter(f"faults-{frames}-{audio_seconds}", 10.0, chunk_frames=3) as writer:
        writer.write(_photo(frames, 12, 14))
        return writer.finish(audio=audio)


@pytest.mark.parametrize("inputs", ["images", "video", "both"])
def test_upscale_gives_both_outputs_for_either_input(upscalers, inputs):
    kwargs = {}
    if inputs in ("images", "both"):
        kwargs["images"] = _photo(3, 12, 14)
    if inputs in ("video", "both"):
        kwargs["video"] = _video(4)
    images, video = result = SpinBotUpscale().upscale(SRVGG, 0.0, 8, 4, "fp32", 2, **kwargs)
    assert_outputs_valid(SpinBotUpscale, result)
    if inputs == "images":  # the video holds exactly the upscaled frames
        assert np.array_equal(video.read(), images_to_uint8(images))
    if inputs == "video":  # the IMAGE is the video's first upscaled frame
        assert images.shape == (1, 48, 56, 3)
        assert np.array_equal(images_to_uint8(images), video.read(0, 1))


@pytest.mark.parametrize("with_audio", [False, True])
def test_video_nodes_outputs_are_never_none(with_audio):
    audio = tone_audio(0.3, 16000) if with_audio else None
    result = SpinBotImagesToVideo().convert(_photo(4, 12, 14), 10.0, audio=audio)
    assert_outputs_valid(SpinBotImagesToVideo, result)
    for start, count in [(0, 0), (1, 2), (3, 0)]:
        assert_outputs_valid(SpinBotVideoToImages,
                             SpinBotVideoToImages().convert(result[0], start, count))


def test_video_to_images_audio_past_the_end_of_a_short_track_is_silence():
    video = _video(6, audio_seconds=0.25)  # 0.6 s of frames, 0.25 s of audio
    _images, audio, _fps, count = SpinBotVideoToImages().convert(video, 4, 2)
    check_audio(audio)
    assert count == 2 and audio["waveform"].shape[-1] == round(0.2 * 16000)
    assert float(audio["waveform"].abs().max()) == 0.0
    _i, head, _f, _c = SpinBotVideoToImages().convert(video, 0, 3)  # inside the track: the tone
    assert head["waveform"].shape[-1] == round(0.3 * 16000)
    assert torch.equal(head["waveform"][..., :4000], video.audio["waveform"][..., :4000])


def test_script_and_subtitle_nodes_outputs_are_never_none(fake):
    direct = SpinBotDirectScript().make("Hello there. Nice to meet you.", "English", 2.5, 10.0)
    assert_outputs_valid(SpinBotDirectScript, direct)
    assert_outputs_valid(SpinBotDirectScript, SpinBotDirectScript().make(
        "Hallo!", "German", 2.0, 5.0, scene_prompt="a garden", trigger_word="sks"))
    fake.replies = [SCRIPT_JSON]
    assert_outputs_valid(SpinBotScriptOllama, _write(fake.url))
    script = direct[2]
    segments = make_segments("One. Two three.")
    for kwargs in [dict(script=script), dict(segments=segments),
                   dict(script=script, audio=tone_audio(2.0, 16000)),
                   dict(segments=segments, script=script, audio=tone_audio(1.0, 16000))]:
        assert_outputs_valid(SpinBotSubtitles, SpinBotSubtitles().build(42, 2, 0.0, **kwargs))


def test_voice_nodes_outputs_are_never_none(voice):
    profile_node = nodes_voice.SpinBotVoiceProfile()
    built = profile_node.build(REF_TEXT, nodes_voice.NO_PROFILE, "Saved", True, 12.0,
                               tone_audio(3.0, 44100, channels=2))
    assert_outputs_valid(nodes_voice.SpinBotVoiceProfile, built)
    assert_outputs_valid(nodes_voice.SpinBotVoiceProfile,
                         profile_node.build("", "Saved", "", False, 12.0, None))
    script = SpinBotDirectScript().make("Hi there. Bye now.", "English", 2.5, 10.0)[2]
    tts = nodes_voice.SpinBotF5TTS()
    for kwargs in [dict(), dict(script=script), dict(segments=script.segments),
                   dict(script=script, segments=script.segments)]:
        assert_outputs_valid(nodes_voice.SpinBotF5TTS, tts.speak(voice, "Hello.", **kwargs,
                                                                **TTS_ARGS))


COMBINE = dict(fps=10.0, filename_prefix="SpinBot/faults", crf=30, preset="ultrafast",
               audio_bitrate="96k", length_policy="pad video with last frame",
               normalize_loudness=False, loudness_lufs=-14.0)


def test_video_combine_outputs_are_never_none():
    from spinbot.nodes.video.nodes_video import SpinBotVideoCombine

    srt = "1\n00:00:00,000 --> 00:00:00,300\nHello 😀\n"
    for kwargs in [dict(images=_photo(3, 12, 14)), dict(video=_video(4, audio_seconds=0.4)),
                   dict(images=_photo(3, 12, 14), audio=tone_audio(0.3, 16000), subtitles=srt)]:
        out = SpinBotVideoCombine().combine(**COMBINE, **kwargs)
        assert_outputs_valid(SpinBotVideoCombine, out)
        assert out["ui"]["spinbot_video"][0]["filename"].endswith(".mp4")


@pytest.fixture(scope="module")
def lipsync_models(tmp_path_factory):
    from tests.factory_lipsync import tiny_wav2lip_gan
    from tests.factory_lipsync_faces import tiny_buffalo_l

    root = tmp_path_factory.mktemp("faults_lipsync")
    tiny_wav2lip_gan(root / "lipsync")
    tiny_buffalo_l(root / "insightface")
    return root


def test_wav2lip_outputs_are_never_none(lipsync_models, spinbot_dirs):
    from spinbot.nodes.lipsync.nodes_lipsync import SpinBotWav2Lip

    for folder in ("lipsync", "insightface"):
        (spinbot_dirs["models"] / folder).symlink_to(lipsync_models / folder)
    widgets = dict(model_name="wav2lip_gan.pth", face_detector="buffalo_l", fps=10.0,
                   batch_size=8, face_index=-1, pad_top=0, pad_bottom=10, pad_left=0,
                   pad_right=0, smoothing_window=1, no_face="pass through", loop_mode="loop",
                   mouth_feather=0.35, color_match=False, crop_upscale="bicubic")
    face = torch.from_numpy(np.array(astronaut(96))).float().div(255.0)[None]
    for kwargs in [dict(image=face), dict(video=_video(3))]:
        result = SpinBotWav2Lip().lipsync(audio=tone_audio(0.3, 16000), **widgets, **kwargs)
        assert_outputs_valid(SpinBotWav2Lip, result)
