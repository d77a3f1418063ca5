"""Voice stage engine: tiny F5-TTS + Vocos from the factory, reference preparation, profiles,
determinism, durations, timings, chunking, batching, cancel and clear errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.script.segments import make_segments
from spinbot.nodes.voice import cfm, engine, profiles, text as vtext
from spinbot.nodes.voice.mel import log_mel
from spinbot.nodes.voice.profiles import VoiceError, VoiceProfile
from tests import factory_voice
from tests.media import speech_wav, tone, tone_audio

RATE = 24000
FAST = dict(nfe_steps=4, cfg_strength=2.0, sway=-1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts")
    return (*factory_voice.load_tiny_models(root), root)


@pytest.fixture(scope="module")
def voice():
    wave, _notes = profiles.prepare_reference(tone_audio(3.0, RATE, amplitude=0.2))
    return VoiceProfile(wave=wave, text="This is my voice, speaking clearly.")


def _speak(models, voice, segments, **kw):
    f5, voc, _ = models
    return engine.synthesize(f5, voc, voice, segments, engine.Settings(**{**FAST, **kw}))


# --------------------------------------------------------------------------- models

def test_loads_official_layouts_and_infers_config(models):
    f5, voc, root = models
    cfg = f5.dit.config
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.text_dim, cfg.conv_layers) == \
        (64, 2, 2, 32, 32, 1)
    assert cfg.text_num_embeds == len(factory_voice.tiny_vocab())
    assert voc.config.dim == 32 and voc.config.num_layers == 2
    from safetensors.torch import load_file

    keys = load_file(str(root / factory_voice.F5_DIR / factory_voice.F5_FILE)).keys()
    assert all(k.startswith("ema_model.transformer.") for k in keys)
    assert "ema_model.transformer.transformer_blocks.1.attn.to_out.0.weight" in keys
    assert "ema_model.transformer.text_embed.text_blocks.0.grn.gamma" in keys
    assert "ema_model.transformer.input_embed.conv_pos_embed.conv1d.2.weight" in keys
    sd = torch.load(root / factory_voice.VOCOS_DIR / "pytorch_model.bin", weights_only=True)
    assert {"backbone.embed.weight", "backbone.convnext.1.gamma", "head.out.weight",
            "head.istft.window", "feature_extractor.mel_spec.mel_scale.fb"} <= set(sd)


def test_pt_checkpoint_with_ema_wrapper_loads_the_same(models, tmp_path):
    f5, _voc, _root = models
    factory_voice.write_f5_pt(tmp_path)
    other = cfm.load_f5(str(tmp_path / "model_1250000.pt"))
    for k, v in f5.dit.state_dict().items():
        torch.testing.assert_close(other.dit.state_dict()[k], v)


def test_vocab_mismatch_and_bad_checkpoint_errors(tmp_path):
    factory_voice.write_f5(tmp_path)
    (tmp_path / "vocab.txt").write_text(" \na\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.txt"):
        cfm.load_f5(str(tmp_path / factory_voice.F5_FILE))
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="vocab"):
        cfm.load_f5(str(tmp_path / factory_voice.F5_FILE))
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="F5-TTS"):
        cfm.read_checkpoint(str(tmp_path / "bad.safetensors"))


def test_tokenizer_pinyin_and_unknowns():
    tokens = vtext.to_tokens("Hi; “you”")
    assert tokens == list('Hi, "you"')
    pytest.importorskip("pypinyin")
    zh = vtext.to_tokens("你好")
    assert zh == [" ", "ni2", " ", "hao3"]  # tone sandhi, as upstream


# --------------------------------------------------------------------------- synthesis

def test_deterministic_under_seed(models, voice):
    segs = make_segments("Hello there. How are you today?")
    a = _speak(models, voice, segs, seed=7)
    b = _speak(models, voice, segs, seed=7)
    c = _speak(models, voice, segs, seed=8)
    assert torch.equal(a.wave, b.wave)
    assert a.wave.abs().max() > 0
    assert not torch.allclose(a.wave[: len(c.wave)], c.wave[: len(a.wave)])


def test_duration_scales_with_text_length_and_speed(models, voice):
    short = make_segments("One two three four five.")
    long = make_segments("One two three four five six seven eight nine ten eleven twelve.")
    t_short = _speak(models, voice, short).wave.shape[-1]
    t_long = _speak(models, voice, long).wave.shape[-1]
    ratio = t_long / t_short
    expected = vtext.byte_length(long[0].text) / vtext.byte_length(short[0].text)
    assert ratio == pytest.approx(expected, rel=0.05)
    fast = _speak(models, voice, long, speed=2.0).wave.shape[-1]
    assert fast / t_long == pytest.approx(0.5, rel=0.05)
    # the estimate used for planning agrees with what is produced
    assert engine.estimate_seconds(voice, long[0].text) == pytest.approx(t_long / RATE, abs=0.02)


@pytest.mark.parametrize("silence,cross_fade", [(0.3, 0.15), (0.0, 0.15), (0.0, 0.0)])
def test_segment_timings_sum_to_audio_length(models, voice, silence, cross_fade):
    segs = make_segments("First sentence here. A second one, a little longer. Third!")
    out = _speak(models, voice, segs, silence=silence, cross_fade=cross_fade)
    length = out.wave.shape[-1] / out.sample_rate
    assert len(out.segments) == 3 and not any(s.estimated for s in out.segments)
    assert out.segments[0].start == 0.0
    assert abs(out.segments[-1].end - length) <= 0.010
    total = sum(s.duration for s in out.segments) + silence * (len(segs) - 1)
    assert abs(total - length) <= 0.010
    for a, b in zip(out.segments, out.segments[1:]):
        assert b.start == pytest.approx(a.end + silence, abs=0.002)


def test_long_text_is_chunked_and_cross_faded(models, voice):
    sentence = 2 * ("This sentence is deliberately long, it keeps going, with commas, clauses, "
                "and more words, so that the model window overflows, and the engine must "
                "split it into chunks, then cross fade them together again, smoothly.")
    _ref, pieces = engine.plan(voice, [sentence], engine.Settings())
    assert len(pieces) >= 2 and all(p.segment == 0 for p in pieces)
    out = _speak(models, voice, make_segments(sentence, max_segment_seconds=0))
    assert len(out.segments) == 1
    assert abs(out.segments[0].end - out.wave.shape[-1] / RATE) <= 0.010


def test_equal_length_pieces_batch_like_single(models, voice):
    segs = make_segments("Same words here. Same words here.")
    batched = _speak(models, voice, segs, max_batch=4, silence=0.1)
    single = _speak(models, voice, segs, max_batch=1, silence=0.1)
    torch.testing.assert_close(batched.wave, single.wave, atol=1e-4, rtol=1e-3)


def test_cancel_between_steps(models, voice):
    f5, voc, _ = models
    calls = []

    class Bar:
        def update(self, n=1, preview=None):
            calls.append(n)
            if len(calls) == 2:
                runtime.request_interrupt()

        def close(self):
            pass

    with pytest.raises(runtime.Interrupted):
        engine.synthesize(f5, voc, voice, make_segments("One. Two. Three."),
                          engine.Settings(nfe_steps=8), progress=Bar())
    assert len(calls) == 2
    runtime.request_interrupt(False)


# --------------------------------------------------------------------------- references

def test_stereo_44k_reference_becomes_mono_24k():
    wave, notes = profiles.prepare_reference(tone_audio(4.0, 44100, channels=2))
    assert wave.ndim == 1
    assert wave.shape[-1] / RATE == pytest.approx(4.05, abs=0.05)
    assert any("mono" in n for n in notes) and any("44100" in n for n in notes)
    import pyloudnorm

    lufs = pyloudnorm.Meter(RATE).integrated_loudness(wave.numpy()[: -1200].astype(np.float64))
    assert lufs == pytest.approx(profiles.TARGET_LUFS, abs=1.0)


def test_silent_and_short_references_rejected():
    silent = {"waveform": torch.zeros(1, 1, RATE * 5), "sample_rate": RATE}
    with pytest.raises(VoiceError, match="silent"):
        profiles.prepare_reference(silent)
    with pytest.raises(VoiceError, match="2 s"):
        profiles.prepare_reference(tone_audio(0.5, RATE))
    # 1 s of tone inside 6 s of silence is still too little speech
    wave = np.zeros((1, RATE * 6), np.float32)
    wave[:, RATE * 2: RATE * 3] = tone(1.0, RATE)
    with pytest.raises(VoiceError, match="at least 2 s"):
        profiles.prepare_reference({"waveform": torch.from_numpy(wave)[None], "sample_rate": RATE})


def test_five_minute_reference_cut_at_a_pause():
    rate = 16000
    pattern = np.concatenate([tone(2.7, rate)[0], np.zeros(int(0.4 * rate), np.float32)])
    clip = np.tile(pattern, int(300 / 3.1) + 1)[: 300 * rate]
    wave, notes = profiles.prepare_reference({"waveform": torch.from_numpy(clip)[None, None],
                                              "sample_rate": rate})
    seconds = (wave.shape[-1] - int(0.05 * RATE)) / RATE
    assert 6.0 <= seconds <= profiles.MAX_SECONDS
    assert any("cut" in n for n in notes)
    # the cut lands in a pause: the last 20 ms before the padding are quiet
    tail = wave[-int(0.05 * RATE) - int(0.02 * RATE): -int(0.05 * RATE)]
    assert float(tail.abs().max()) < 0.05 * float(wave.abs().max())


def test_clipped_reference_warns(caplog):
    loud = tone_audio(4.0, RATE, amplitude=3.0)
    loud["waveform"] = loud["waveform"].clamp(-1, 1)
    with caplog.at_level("INFO", logger="spinbot.voice"):
        _wave, notes = profiles.prepare_reference(loud)
    assert any("clipped" in n for n in notes)
    assert any(r.levelname == "WARNING" and "clipped" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO", logger="spinbot.voice"):
        _wave, notes = profiles.prepare_reference(tone_audio(4.0, RATE, amplitude=0.3))
    assert not any("clipped" in n for n in notes)
    assert not any(r.levelname == "WARNING" for r in caplog.records)


def test_espeak_reference_profile(tmp_path):
    path = speech_wav(str(tmp_path / "ref.wav"), "Hello, this is a recording of my voice for "
                      "cloning. It lasts a few seconds.")
    if path is None:
        pytest.skip("espeak-ng not installed")
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    voice = profiles.make_profile({"waveform": torch.from_numpy(data.T)[None], "sample_rate": rate},
                                  "Hello, this is a recording of my voice for cloning.")
    assert 2.0 <= voice.seconds <= 12.1
    assert log_mel(voice.wave).shape[1] == 100


# --------------------------------------------------------------------------- profiles

def test_profile_round_trip(spinbot_dirs):
    wave, notes = profiles.prepare_reference(tone_audio(3.0, RATE))
    voice = VoiceProfile(wave=wave, text="Words spoken.", meta={"notes": notes})
    folder = profiles.save_profile(voice, "Anna's voice")
    assert folder.startswith(str(spinbot_dirs["models"]))
    assert sorted(os.listdir(folder)) == ["meta.json", "reference.txt", "reference.wav"]
    assert profiles.list_profiles() == [os.path.basename(folder)]
    back = profiles.load_profile(os.path.basename(folder))
    assert torch.equal(back.wave, voice.wave) and back.text == "Words spoken."
    meta = json.loads(open(os.path.join(folder, "meta.json"), encoding="utf-8").read())
    assert meta["sample_rate"] == RATE and meta["notes"] == notes
    with pytest.raises(VoiceError, match="no voice profile"):
        profiles.load_profile("nobody")


def test_profile_names_never_escape(spinbot_dirs):
    root = os.path.realpath(profiles.profiles_root())
    for name in ("../../evil", "/etc/passwd", "a/b\\c", "..", "  x  "):
        try:
            path = profiles.profile_dir(name)
        except VoiceError:
            continue
        assert os.path.dirname(path) == root
    with pytest.raises(VoiceError):
        profiles.sanitize_name("..")
    with pytest.raises(VoiceError):
        profiles.sanitize_name("   ")


def test_empty_text_without_whisper_says_so(spinbot_dirs):
    with pytest.raises(VoiceError, match="(?i)whisper") as err:
        profiles.make_profile(tone_audio(3.0, RATE), "")
    assert "whisper" in str(err.value) and "reference text" in str(err.value)


def test_empty_text_is_transcribed_with_an_installed_whisper(spinbot_dirs):
    pytest.importorskip("transformers")
    factory_voice.write_whisper(spinbot_dirs["models"] / "whisper" / factory_voice.WHISPER_DIR)
    voice = profiles.make_profile(tone_audio(3.0, RATE), "")
    assert voice.meta["text_source"] == "whisper"
    assert isinstance(voice.text, str) and voice.text.strip()  # the tiny model's words are noise
    typed = profiles.make_profile(tone_audio(3.0, RATE), "Typed words.")
    assert typed.text == "Typed words." and typed.meta["text_source"] == "user"


def test_missing_f5_model_names_folder_and_source(spinbot_dirs):
    from spinbot.nodes.voice import nodes_voice

    wave, _ = profiles.prepare_reference(tone_audio(3.0, RATE))
    with pytest.raises(MissingModelError, match="tts") as err:
        nodes_voice.SpinBotF5TTS().speak(VoiceProfile(wave=wave, text="Hi there."), "Hello.",
                                         nodes_voice.DEFAULT_F5, nodes_voice.DEFAULT_VOCODER,
                                         4, 2.0, -1.0, 1.0, 0, 0.15, 0.2)
    assert "model_1250000.safetensors" in str(err.value)
    assert "huggingface.co/SWivid/F5-TTS" in str(err.value)


# --------------------------------------------------------------------------- text the model cannot say

def test_unsupported_script_is_a_clear_error(models, voice):
    f5, voc, _ = models
    with pytest.raises(VoiceError, match="segment 2.*not trained on"):
        engine.synthesize(f5, voc, voice, make_segments("Hello there. Καλημέρα κόσμε."),
                          engine.Settings(nfe_steps=2))
    # symbols the vocabulary lacks are read as pauses (upstream), not refused
    assert vtext.text_problem("Wait — really? ☺", f5.vocab) is None
    assert vtext.text_problem("Grüße", f5.vocab) is None  # in the tiny vocabulary


def test_chinese_without_pypinyin_says_what_to_install(models, monkeypatch):
    f5, _voc, _ = models
    monkeypatch.setattr(vtext, "has_pinyin", lambda: False)
    assert "pypinyin" in vtext.text_problem("你好", f5.vocab)
    assert vtext.text_problem("Hello", f5.vocab) is None


def test_models_are_cached_and_vocoder_stays_float32(models):
    _f5, _voc, root = models
    f5_path = str(root / factory_voice.F5_DIR / factory_voice.F5_FILE)
    vocos_dir = str(root / factory_voice.VOCOS_DIR)
    engine.release_models()
    a = engine.get_models(f5_path, vocos_dir, dtype=torch.float16)
    assert a[0].dtype == torch.float16 and a[1].backbone.embed.weight.dtype == torch.float32
    assert engine.get_models(f5_path, vocos_dir, dtype=torch.float16) is a
    with engine.models_on_device(a, "cpu") as (f5, voc):
        assert f5.device.type == "cpu" and voc is a[1]
    engine.release_models()


def test_training_config_beside_a_fine_tune_sets_its_flags(tmp_path):
    folder = tmp_path / "my_finetune"
    factory_voice.write_f5(folder, filename="model_last.safetensors")
    assert cfm.architecture_overrides(str(folder / "model_last.safetensors")) == {}
    (folder / "F5TTS_Base.yaml").write_text(
        "model:\n  name: F5TTS_Base\n  backbone: DiT\n  arch:\n    dim: 1024\n"
        "    text_mask_padding: False\n    pe_attn_head: 1\n", encoding="utf-8")
    model = cfm.load_f5(str(folder / "model_last.safetensors"))
    assert (model.dit.config.text_mask_padding, model.dit.config.pe_attn_head) == (False, 1)
    (folder / "F5TTS_Base.yaml").write_text("model:\n  backbone: UNetT\n  arch: {dim: 1}\n")
    with pytest.raises(ValueError, match="only F5-TTS DiT"):
        cfm.load_f5(str(folder / "model_last.safetensors"))
