"""Parity of the pack's own F5-TTS / Vocos inference path with the reference packages.

The reference (`f5-tts`, `vocos`, which import torchaudio) is test-only and the pack never
imports it; these tests skip when it is absent. The same random weights (the tiny factory
models) are loaded into both implementations:

- mel features: identical to torchaudio's MelSpectrogram + log(clamp 1e-5) (atol 1e-4),
- Vocos: the reference's ``Vocos.from_hparams`` + strict ``load_state_dict`` of the release file
  decodes the same waveform (atol 1e-5),
- DiT: the reference ``CFM`` loaded by upstream ``load_checkpoint`` from the same safetensors
  predicts the same velocity (atol 1e-4), and ``CFM.sample`` gives the same mel for the same
  seed, NFE, CFG and sway (atol 1e-3), batch of one and a padded batch of two.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import pytest
import torch

pytest.importorskip("torchaudio")
pytest.importorskip("x_transformers")
pytest.importorskip("torchdiffeq")
pytest.importorskip("vocos")

from spinbot.nodes.voice import cfm, mel  # noqa: E402
from spinbot.nodes.voice.text import encode, load_vocab  # noqa: E402
from spinbot.nodes.voice.vocos import load_vocos  # noqa: E402
from tests import factory_voice  # noqa: E402


def _f5_reference():
    """Import f5_tts.model's submodules without its __init__ (which pulls the trainer, wandb,
    accelerate and datasets)."""
    try:
        spec = importlib.util.find_spec("f5_tts")
    except ImportError:
        spec = None
    if spec is None:
        pytest.skip("f5-tts not installed")
    pytest.importorskip("pypinyin")
    if "f5_tts.model" not in sys.modules:
        pkg = types.ModuleType("f5_tts.model")
        pkg.__path__ = [os.path.join(list(spec.submodule_search_locations)[0], "model")]
        sys.modules["f5_tts.model"] = pkg
    try:
        dit = importlib.import_module("f5_tts.model.backbones.dit")
        ref_cfm = importlib.import_module("f5_tts.model.cfm")
    except ImportError as exc:
        pytest.skip(f"f5-tts reference not importable: {exc}")
    return dit.DiT, ref_cfm.CFM


@pytest.fixture(scope="module")
def tts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts")
    factory_voice.write_f5(root / factory_voice.F5_DIR)
    factory_voice.write_vocos(root / factory_voice.VOCOS_DIR)
    return root


@pytest.fixture(scope="module")
def reference_f5(tts_dir):
    RefDiT, RefCFM = _f5_reference()
    from safetensors.torch import load_file

    vocab = load_vocab(str(tts_dir / factory_voice.F5_DIR / "vocab.txt"))
    cfg = dict(factory_voice.TINY_F5)
    cfg.pop("mel_dim")
    model = RefCFM(transformer=RefDiT(**cfg, text_num_embeds=len(vocab), mel_dim=100),
                   mel_spec_kwargs=dict(n_fft=1024, hop_length=256, win_length=1024,
                                        n_mel_channels=100, target_sample_rate=24000,
                                        mel_spec_type="vocos"),
                   odeint_kwargs=dict(method="euler"), vocab_char_map=vocab)
    # upstream load_checkpoint(use_ema=True) for a .safetensors file
    raw = load_file(str(tts_dir / factory_voice.F5_DIR / factory_voice.F5_FILE))
    sd = {k.replace("ema_model.", ""): v for k, v in raw.items() if k not in ("initted", "step")}
    model.load_state_dict(sd)
    return model.eval()


@pytest.fixture(scope="module")
def ours(tts_dir):
    return cfm.load_f5(str(tts_dir / factory_voice.F5_DIR / factory_voice.F5_FILE))


def test_mel_matches_torchaudio():
    import torchaudio

    wave = torch.randn(2, 24000 + 123, generator=torch.Generator().manual_seed(0)) * 0.2
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=24000, n_fft=1024, win_length=1024, hop_length=256, n_mels=100, power=1,
        center=True, normalized=False, norm=None)(wave).clamp(min=1e-5).log()
    got = mel.log_mel(wave)
    assert got.shape == ref.shape == (2, 100, (24000 + 123) // 256 + 1)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_mel_matches_f5_melspec():
    _f5_reference()
    from f5_tts.model.modules import MelSpec

    wave = torch.randn(1, 12000, generator=torch.Generator().manual_seed(1)) * 0.3
    torch.testing.assert_close(mel.log_mel(wave), MelSpec()(wave), atol=1e-4, rtol=0)


def test_vocos_same_waveform(tts_dir):
    from vocos import Vocos as RefVocos

    folder = tts_dir / factory_voice.VOCOS_DIR
    ref = RefVocos.from_hparams(str(folder / "config.yaml"))
    ref.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True))
    ref.eval()
    ours = load_vocos(str(folder))
    features = torch.randn(2, 100, 40, generator=torch.Generator().manual_seed(2)) - 4
    with torch.no_grad():
        expected = ref.decode(features)
    got = ours.decode(features)
    assert got.shape == expected.shape == (2, 40 * 256)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # and the feature path: the reference's own mel of a waveform equals ours
    wave = torch.randn(1, 9000, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        expected_mel = ref.feature_extractor(wave).clamp(min=float(torch.tensor(1e-5).log()))
    torch.testing.assert_close(mel.log_mel(wave), expected_mel, atol=1e-4, rtol=0)


def test_dit_same_velocity(reference_f5, ours):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 50, 100, generator=gen)
    cond = torch.randn(1, 50, 100, generator=gen)
    cond[:, 30:] = 0
    text = encode(["Hello there. General Kenobi!"], ours.vocab)
    t = torch.tensor([0.3])
    with torch.no_grad():
        for drop in (False, True):
            ref = reference_f5.transformer(x=x, cond=cond, text=text, time=t,
                                           drop_audio_cond=drop, drop_text=drop)
            emb = ours.dit.embed_text(text, 50, drop_text=drop)
            got = ours.dit(x, cond, emb, t, drop_audio_cond=drop)
            assert got.abs().mean() > 1e-3  # not a trivially zero output
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_sampled_mel_same_for_same_seed(reference_f5, ours, batch):
    gen = torch.Generator().manual_seed(5)
    cond = torch.randn(batch, 30, 100, generator=gen) - 5
    texts = ["Reference words. Some new words.", "Ref. Longer new text to say here!"][:batch]
    ids = encode(texts, ours.vocab)
    durations = [70, 58][:batch]
    kwargs = dict(steps=7, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=123)
    with torch.inference_mode():
        ref, _ = reference_f5.sample(cond=cond, text=ids, duration=torch.tensor(durations),
                                     **kwargs)
    got = cfm.sample(ours, cond, ids, durations, steps=7, cfg_strength=2.0, sway=-1.0, seed=123)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref.float(), atol=1e-3, rtol=1e-3)


def test_tokens_match_upstream_pinyin_conversion():
    _f5_reference()
    from f5_tts.model.utils import convert_char_to_pinyin

    from spinbot.nodes.voice.text import to_tokens

    for text in ["Hello; “world”, it's 5 o'clock.", "你好，世界。Mixed 中文 and English!",
                 "Grüße aus Köln.", "(Well-known) tests: 3.14% & more..."]:
        assert to_tokens(text) == convert_char_to_pinyin([text])[0], text


def test_fallback_segmentation_matches_upstream_for_latin_text(monkeypatch):
    _f5_reference()
    from f5_tts.model.utils import convert_char_to_pinyin

    from spinbot.nodes.voice import text as vtext

    monkeypatch.setattr(vtext, "_segments", vtext._fallback_segments)
    # (approximate: rjieba's split of runs such as "stuff..." differs; install rjieba for exactness)
    for text in ["Hello; “world”, it's 5 o'clock.", "Grüße aus Köln.", "(Well-known) tests!"]:
        assert vtext.to_tokens(text) == convert_char_to_pinyin([text])[0], text


def test_full_size_architectures_have_the_reference_keys_and_shapes():
    """F5TTS_v1_Base (configs/F5TTS_v1_Base.yaml) and vocos-mel-24khz (its config.yaml), built on
    the meta device: every key and shape equals the reference's, so the real files load."""
    RefDiT, _ = _f5_reference()
    from spinbot.nodes.voice.f5_dit import DiT, DiTConfig
    from spinbot.nodes.voice.vocos import Vocos, VocosConfig

    with torch.device("meta"):
        ref = RefDiT(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, text_mask_padding=True,
                     qk_norm=None, conv_layers=4, pe_attn_head=None, text_num_embeds=2545,
                     mel_dim=100).state_dict()
        ours = DiT(DiTConfig()).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert DiTConfig.from_state_dict(ref) == DiTConfig()
    assert sum(v.numel() for v in ours.values()) > 300e6

    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    with torch.device("meta"):
        ref_voc = {**{f"backbone.{k}": v for k, v in VocosBackbone(100, 512, 1536, 8).state_dict().items()},
                   **{f"head.{k}": v for k, v in ISTFTHead(512, 1024, 256).state_dict().items()}}
        ours_voc = Vocos(VocosConfig()).state_dict()
    assert {k: tuple(v.shape) for k, v in ours_voc.items()} == \
        {k: tuple(v.shape) for k, v in ref_voc.items()}


def test_end_to_end_waveform_matches_reference_pipeline(tts_dir, reference_f5, ours):
    """Upstream's ``infer_batch_process`` steps, written out with the reference modules (its own
    module imports the Gradio app's dependencies): RMS boost of a quiet reference, '. ' + ' '
    appended to the reference text, pinyin conversion, duration from UTF-8 byte counts, CFM
    sampling from the raw reference wave, reference frames cut, Vocos, gain undone. The pack's
    engine gives the same waveform for the same seed (atol 1e-4)."""
    from f5_tts.model.utils import convert_char_to_pinyin
    from vocos import Vocos as RefVocos

    from spinbot.nodes.voice import engine
    from spinbot.nodes.voice.profiles import VoiceProfile
    from spinbot.nodes.voice.text import prepare_reference_text

    folder = tts_dir / factory_voice.VOCOS_DIR
    ref_vocos = RefVocos.from_hparams(str(folder / "config.yaml"))
    ref_vocos.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True))
    ref_vocos.eval()

    t = torch.arange(int(2.5 * 24000)) / 24000
    wave = 0.03 * torch.sin(2 * torch.pi * 220 * t) + 0.01 * torch.randn(
        t.shape, generator=torch.Generator().manual_seed(6))  # RMS < 0.1: boosted, then undone
    ref_text, gen_text, seed, steps = "This is my voice", "Hello there, how are you?", 11, 7

    # upstream
    rms = wave.square().mean().sqrt()
    audio = (wave * 0.1 / rms)[None]
    text = prepare_reference_text(ref_text)
    assert text == "This is my voice.  "  # preprocess_ref_audio_text + infer_batch_process
    ref_frames = audio.shape[-1] // 256
    duration = ref_frames + int(ref_frames / len(text.encode()) * len(gen_text.encode()) / 1.0)
    ids = encode([text + gen_text], ours.vocab)
    assert ids[0].tolist() == [ours.vocab.get(c, 0)
                               for c in convert_char_to_pinyin([text + gen_text])[0]]
    with torch.inference_mode():
        mel, _ = reference_f5.sample(cond=audio, text=ids, duration=duration, steps=steps,
                                     cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed)
        expected = ref_vocos.decode(mel[:, ref_frames:, :].permute(0, 2, 1))[0] * rms / 0.1

    # the pack
    voice = VoiceProfile(wave=wave, text=ref_text)
    result = engine.synthesize(ours, load_vocos(str(folder)), voice,
                               engine.text_segments(gen_text, max_segment_seconds=0),
                               engine.Settings(nfe_steps=steps, cfg_strength=2.0, sway=-1.0,
                                               seed=seed, silence=0.0, cross_fade=0.0))
    assert result.wave.shape == expected.shape
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(result.wave, expected.float(), atol=1e-4, rtol=1e-3)


def test_without_pypinyin_latin_text_tokens_match_upstream(monkeypatch):
    """pypinyin is optional at run time: non-Chinese text gets upstream's tokens without it."""
    _f5_reference()
    from f5_tts.model.utils import convert_char_to_pinyin

    from spinbot.nodes.voice import text as vtext

    expected = {t: convert_char_to_pinyin([t])[0]
                for t in ["Hello; “world”, it's 5 o'clock.", "(Well-known) tests!", "Grüße aus Köln."]}
    monkeypatch.setitem(sys.modules, "pypinyin", None)  # import fails
    assert not vtext.has_pinyin()
    for text, tokens in expected.items():
        assert vtext.to_tokens(text) == tokens, text
    assert vtext.to_tokens("你好") == ["你", "好"]


def test_first_release_flags_same_velocity(tmp_path, ours):
    """A checkpoint of the first F5TTS_Base (text_mask_padding False, rotary on one head), known
    by its release folder name, predicts what the reference DiT built with those flags does."""
    RefDiT, _ = _f5_reference()
    factory_voice.write_f5(tmp_path / "F5TTS_Base", filename="model_1200000.safetensors")
    v0 = cfm.load_f5(str(tmp_path / "F5TTS_Base" / "model_1200000.safetensors"))
    assert (v0.dit.config.text_mask_padding, v0.dit.config.pe_attn_head) == (False, 1)
    cfg = dict(factory_voice.TINY_F5)
    cfg.pop("mel_dim")
    ref = RefDiT(**cfg, text_num_embeds=len(v0.vocab), mel_dim=100, text_mask_padding=False,
                 pe_attn_head=1).eval()
    ref.load_state_dict(v0.dit.state_dict())
    gen = torch.Generator().manual_seed(8)
    x, cond = torch.randn(2, 40, 100, generator=gen), torch.randn(2, 40, 100, generator=gen)
    text = encode(["Short one.", "A longer text for the second item."], v0.vocab)
    mask = torch.arange(40)[None] < torch.tensor([[31], [40]])[:, 0, None]
    t = torch.tensor([0.6, 0.6])
    with torch.no_grad():
        expected = ref(x=x, cond=cond, text=text, time=t, mask=mask, drop_audio_cond=False,
                       drop_text=False)
        got = v0.dit(x, cond, v0.dit.embed_text(text, mask.sum(1)), t, mask)
        v1 = ours.dit(x, cond, ours.dit.embed_text(text, mask.sum(1)), t, mask)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (v1 - expected).abs().max() > 1e-3  # the flags matter
