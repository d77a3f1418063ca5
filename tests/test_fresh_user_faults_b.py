"""Faults a fresh user found (issue 14 hardening follow-up, part b): LLM reasoning blocks, extra
reply fields, one emoji filter for narrative and voice, F5-TTS text normalisation and the
vocabulary check, and small audio-input faults (transposed arrays, batches, 7350 Hz AAC, a
one-sample voice reference). Each quoted input of the report is a case here."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import torch

from spinbot.nodes import media
from spinbot.nodes.media import MediaError, check_audio
from spinbot.nodes.script import ollama_client
from spinbot.nodes.script.nodes_script import DEFAULT_MODEL, SpinBotScriptOllama
from spinbot.nodes.script.prompts import ReplyError, clean_spoken_text, parse_reply
from spinbot.nodes.script.segments import make_segments
from spinbot.nodes.video.encode import AAC_RATES, mux_mp4, prepare_audio
from spinbot.nodes.voice import engine, profiles, text as vtext
from spinbot.nodes.voice.profiles import VoiceError, VoiceProfile
from tests import factory_voice
from tests.fake_ollama import FakeOllama
from tests.media import tone, tone_audio
from tests.mp4probe import probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 24000

GOOD = json.dumps({"stage": "a calm beach at dawn", "narrative": "The sea is calm today."})
DRAFT = json.dumps({"stage": "draft stage", "narrative": "DRAFT TEXT"})


# --------------------------------------------------------------------------- 1. reasoning blocks

@pytest.mark.parametrize("raw", [
    "Okay.\n<think>" + DRAFT + "</think>\n" + GOOD,          # not at the start
    "<thinking>" + DRAFT + "</thinking>\n" + GOOD,
    "<reasoning>" + DRAFT + "</reasoning>" + GOOD,
    "<THINK>" + DRAFT + "</Think>" + GOOD,                    # any case
    "<think>a</think> Sure. <think>" + DRAFT + "</think>" + GOOD,  # several blocks
    "drafting " + DRAFT + "\n</think>\n\n" + GOOD,            # opening tag in the prompt
])
def test_a_draft_inside_reasoning_is_never_the_answer(raw):
    assert parse_reply(raw) == ("a calm beach at dawn", "The sea is calm today.")


@pytest.mark.parametrize("raw", ["<think>planning " + DRAFT, "<thinking>planning " + DRAFT,
                                 "Hmm. <Reasoning>" + DRAFT])
def test_an_unclosed_reasoning_block_is_a_cut_off_reply(raw):
    with pytest.raises(ReplyError, match="ended inside its reasoning"):
        parse_reply(raw)


def test_reply_cut_off_inside_reasoning_is_retried_as_cut_off():
    fake = FakeOllama(models=[DEFAULT_MODEL], replies=[("<think>planning " + DRAFT, "length"),
                                                       GOOD]).start()
    ollama_client.forget_cached_models()
    try:
        stage, narrative, _script, info = SpinBotScriptOllama().write(
            topic="the sea", model=DEFAULT_MODEL, host=fake.url, language="English",
            tone="warm", target_seconds=30.0, words_per_second=2.5, seed=1, temperature=0.3,
            keep_alive=0, max_retries=2, max_segment_seconds=10.0, trigger_word="")
        chats = fake.chats
    finally:
        fake.stop()
        ollama_client.forget_cached_models()
    assert narrative == "The sea is calm today." and "DRAFT" not in narrative
    assert len(chats) == 2
    assert "cut off" in chats[1]["messages"][-1]["content"]
    assert "reasoning" in info


# --------------------------------------------------------------------------- 2. extra fields

def test_extra_fields_are_ignored_and_logged(caplog):
    raw = json.dumps({"stage": "a beach", "narrative": "Hello there.", "duration_seconds": 30,
                      "title": "Sea"})
    with caplog.at_level(logging.INFO, logger="spinbot.script"):
        assert parse_reply(raw) == ("a beach", "Hello there.")
    assert "duration_seconds" in caplog.text and "title" in caplog.text
    # required fields are still required and typed
    with pytest.raises(ReplyError, match='"narrative" is missing'):
        parse_reply('{"stage": "a beach", "duration_seconds": 30}')
    with pytest.raises(ReplyError, match='"stage" must be a string'):
        parse_reply('{"stage": 3, "narrative": "Hi.", "duration_seconds": 30}')


# --------------------------------------------------------------------------- 3. one emoji filter

@pytest.mark.parametrize("text, spoken", [
    ("Hello 👩🏽‍💻 world", "Hello world"),
    ("Press 1️⃣ now", "Press 1 now"),
    ("Hi 👋🏽, see you 🇩🇪!", "Hi, see you!"),
    ("Flag 🏴󠁧󠁢󠁳󠁣󠁴󠁿 here", "Flag here"),
    ("20 °C, ©2024, café", "20 °C, ©2024, café"),  # Latin-1 symbols are text
])
def test_narrative_cleaning_and_voice_agree_on_emoji(text, spoken):
    assert clean_spoken_text(text) == spoken
    assert vtext.spoken_text(text) == spoken


def test_narrative_paragraphs_survive_emoji_removal():
    assert clean_spoken_text("First part. 😀\n\nSecond part.") == "First part.\n\nSecond part."


def test_the_emoji_filter_imports_without_torch():
    """The script stage cleans narratives with the shared filter and must not pull torch."""
    code = (
        "import sys, types\n"
        f"root = {os.path.join(ROOT, 'nodes')!r}\n"
        "for name, path in (('pk', root), ('pk.script', root + '/script')):\n"
        "    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m\n"
        "import importlib\n"
        "prompts = importlib.import_module('pk.script.prompts')\n"
        "assert prompts.clean_spoken_text('a 👩🏽\u200d💻 b') == 'a b'\n"
        "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- 4. F5-TTS text

@pytest.fixture(scope="module")
def vocab():
    return {t: i for i, t in enumerate(factory_voice.tiny_vocab())}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return factory_voice.load_tiny_models(tmp_path_factory.mktemp("tts"))


@pytest.fixture(scope="module")
def voice():
    wave, _notes = profiles.prepare_reference(tone_audio(3.0, RATE, amplitude=0.2))
    return VoiceProfile(wave=wave, text="This is my voice, speaking clearly.")


@pytest.mark.parametrize("text, nfkc", [
    (unicodedata.normalize("NFD", "Café"), "Café"),
    ("Ｈｅｌｌｏ", "Hello"),
    ("𝐇𝐞𝐥𝐥𝐨", "Hello"),
    ("①②③", "123"),
    ("½", "1/2"),   # NFKC gives 1 U+2044 2; the fraction slash is written "/"
    ("²", "2"),
    ("Ⅻ", "XII"),
])
def test_compatibility_forms_become_what_the_vocabulary_has(vocab, text, nfkc):
    assert unicodedata.normalize("NFKC", text).replace("\u2044", "/") == nfkc
    assert vtext.to_tokens(text, vocab=vocab) == vtext.to_tokens(nfkc, vocab=vocab)
    assert vtext.text_problem(text, vocab) is None
    assert torch.equal(vtext.encode([text], vocab), vtext.encode([nfkc], vocab))
    assert vtext.is_speakable(text)


def test_characters_the_vocabulary_has_are_kept(vocab):
    # F5TTS_v1_Base's vocab.txt has "½" and "²": they stay the tokens it was trained on
    real_like = dict(vocab, **{"½": len(vocab), "²": len(vocab) + 1})
    assert vtext.to_tokens("x² ½", vocab=real_like) == ["x", "²", " ", "½"]


@pytest.mark.parametrize("text", ["Hello; “world”, it's 5 o'clock.", "你好，世界。Mixed 中文!",
                                  "Grüße aus Köln…", "(Well-known) tests: 3.14% & more...",
                                  "Wait — really?", "tab\tand\nnewline"])
def test_ordinary_text_is_not_changed_by_normalisation(vocab, text):
    assert vtext.normalize_text(text) == text
    assert vtext.normalize_text(text, vocab) == text
    assert vtext.spoken_text(text) == text


@pytest.mark.parametrize("text, missing", [("١٢٣", "١٢٣"), ("It costs 5€", "€"),
                                           ("Καλημέρα", "Κ")])
def test_characters_missing_from_the_vocabulary_are_named(vocab, text, missing):
    problem = vtext.text_problem(text, vocab)
    assert problem is not None and missing in problem


def test_unspeakable_segment_is_refused_naming_segment_and_characters(models, voice):
    f5, voc = models
    with pytest.raises(VoiceError, match="segment 2.*١٢٣"):
        engine.synthesize(f5, voc, voice, make_segments("Hello there. ١٢٣ apples."),
                          engine.Settings(nfe_steps=2))
    bad_ref = VoiceProfile(wave=voice.wave, text="١٢٣ is my voice.")
    with pytest.raises(VoiceError, match="reference text.*١٢٣"):
        engine.synthesize(f5, voc, bad_ref, make_segments("Hello there."),
                          engine.Settings(nfe_steps=2))


def test_circled_digits_are_spoken_as_digits(models, voice):
    """The report's direct workflow: narration "①②③" rendered 1.6 s from nothing but spaces."""
    f5, voc = models
    settings = engine.Settings(nfe_steps=2, seed=7)
    circled = engine.synthesize(f5, voc, voice, make_segments("①②③"), settings)
    plain = engine.synthesize(f5, voc, voice, make_segments("123"), settings)
    assert circled.wave.shape == plain.wave.shape
    assert torch.equal(circled.wave, plain.wave)


def test_reference_text_and_durations_use_the_normalised_text(voice):
    fancy = VoiceProfile(wave=voice.wave, text="Ｔｈｉｓ is my voice, speaking clearly.")
    ref_text, pieces = engine.plan(fancy, ["𝐇𝐞𝐥𝐥𝐨 there, friend."], engine.Settings())
    plain_ref, plain_pieces = engine.plan(voice, ["Hello there, friend."], engine.Settings())
    assert ref_text == plain_ref
    assert [p.text for p in pieces] == ["Hello there, friend."]
    assert [p.frames for p in pieces] == [p.frames for p in plain_pieces]


def test_emoji_stay_out_of_speech_and_in_the_subtitles(vocab):
    segments = make_segments("Hello 👩🏽‍💻 world.")
    assert "👩🏽‍💻" in segments[0].text  # subtitles keep them
    assert vtext.spoken_text(segments[0].text) == "Hello world."
    assert vtext.text_problem(segments[0].text, vocab) is None


# --------------------------------------------------------------------------- 5. audio inputs

@pytest.mark.parametrize("waveform", [np.zeros((40, 2), np.float32),
                                      torch.zeros(1, 40, 2), torch.zeros(1, 64, 3)])
def test_more_channels_than_samples_looks_transposed(waveform):
    with pytest.raises(MediaError, match="looks transposed"):
        check_audio({"waveform": waveform, "sample_rate": 16000})


def test_mix_channels_refuses_a_transposed_array():
    with pytest.raises(MediaError, match="looks transposed"):
        media.mix_channels(torch.zeros(40, 2), 2)
    # a real short multichannel clip is still mixed
    mixed, _note = media.mix_channels(torch.ones(6, 100) * 0.1, 2)
    assert mixed.shape == (2, 100)


def test_a_batch_says_the_other_items_are_ignored(caplog):
    batch = {"waveform": torch.from_numpy(np.stack([tone(0.5, RATE)] * 3)), "sample_rate": RATE}
    with caplog.at_level(logging.WARNING, logger="spinbot.media"):
        wave, _rate = check_audio(batch)
    assert wave.shape == (1, RATE // 2)
    assert "batch of 3" in caplog.text and "other 2 are ignored" in caplog.text
    notes: list[str] = []
    check_audio(batch, notes=notes)
    assert any("other 2 are ignored" in n for n in notes)
    _ref, ref_notes = profiles.prepare_reference(
        {"waveform": torch.from_numpy(np.stack([tone(3.0, RATE)] * 2)), "sample_rate": RATE})
    assert any("other 1 are ignored" in n for n in ref_notes)


def test_7350_hz_is_an_aac_rate(tmp_path):
    assert 7350 in AAC_RATES  # ISO/IEC 14496-3 sampling frequency index 12
    notes: list[str] = []
    samples, rate = prepare_audio(torch.from_numpy(tone(1.0, 7350)), 7350, None, notes)
    assert rate == 7350 and samples.shape == (1, 7350)
    assert not any("7350" in n for n in notes)
    path = str(tmp_path / "a.mp4")
    frames = np.full((10, 16, 16, 3), 128, np.uint8)
    mux_mp4(path, [frames], 10.0, 16, 16, audio=(samples, rate), preset="ultrafast")
    p = probe(path)
    assert p.audio_rate == 7350
    assert p.audio_seconds == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("samples", [1, 240])  # one sample, 10 ms
def test_a_very_short_reference_is_too_short_not_silent(samples):
    clip = {"waveform": torch.full((1, 1, samples), 0.5), "sample_rate": RATE}
    with pytest.raises(VoiceError, match="at least 2 s") as err:
        profiles.prepare_reference(clip)
    assert "silent" not in str(err.value)
    # a long silent clip is still called silent
    with pytest.raises(VoiceError, match="silent"):
        profiles.prepare_reference({"waveform": torch.zeros(1, 1, RATE * 3), "sample_rate": RATE})
