"""Tiny voice models in the official release layouts (folders ``tts`` and ``whisper``).

- ``F5TTS_v1_Base/model_1250000.safetensors`` + ``vocab.txt``: the F5-TTS v1 DiT
  (SWivid/F5-TTS on Hugging Face) as a flat EMA state dict with ``ema_model.transformer.*`` keys,
  shrunk to dim 64, depth 2, 2 heads of 32 channels, text dim 32, one ConvNeXt-V2 text
  block; the vocabulary is a space first, then printable ASCII and a few pinyin syllables.
- ``vocos-mel-24khz/config.yaml`` + ``pytorch_model.bin``: charactr/vocos-mel-24khz's
  jsonargparse config and plain state dict (feature-extractor buffers included, as released),
  with a 32-wide, 2-layer backbone. Mel settings (24 kHz, n_fft 1024, hop 256, 100 mels) are the
  real ones, so the tiny models read and write real-length audio.

- ``whisper/whisper-small``: a transformers Whisper folder (tiny, byte-level tokenizer) for
  transcribing references whose text is left empty.

``write_f5_pt`` writes the training-checkpoint variant (``model_1250000.pt``: ``ema_model_state_dict``
with ``initted``/``step`` and the mel extractor's buffers) for tests of that loading path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tests._pack import load_pack
from tests.factory import builder, seeded

F5_DIR = "F5TTS_v1_Base"
F5_FILE = "model_1250000.safetensors"
VOCOS_DIR = "vocos-mel-24khz"

TINY_F5 = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, mel_dim=100, text_dim=32,
               conv_layers=1)
TINY_VOCOS = dict(dim=32, intermediate_dim=64, num_layers=2)

VOCOS_CONFIG = """feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 1024
    hop_length: 256
    n_mels: 100
    padding: center

backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 100
    dim: {dim}
    intermediate_dim: {intermediate_dim}
    num_layers: {num_layers}

head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: {dim}
    n_fft: 1024
    hop_length: 256
    padding: same
"""


def tiny_vocab() -> list[str]:
    chars = [" "] + [chr(c) for c in range(33, 127)]
    return chars + ["ni3", "hao3", "shi4", "jie4", "zhong1", "wen2", "ä", "ö", "ü", "ß", "é"]


def _pack():
    from tests._pack import load_pack

    load_pack()
    import spinbot.nodes.voice.f5_dit as f5_dit
    import spinbot.nodes.voice.vocos as vocos

    return f5_dit, vocos


def f5_state_dict(seed: int = 50, vocab_size: int | None = None, **overrides) -> dict[str, torch.Tensor]:
    """``transformer.*``-less DiT weights, random everywhere (also where F5 zero-inits)."""
    f5_dit, _ = _pack()
    gen = seeded(seed)
    cfg = f5_dit.DiTConfig(**{**TINY_F5, **overrides},
                           text_num_embeds=vocab_size or len(tiny_vocab()))
    model = f5_dit.DiT(cfg)
    sd = {}
    for key, value in model.state_dict().items():
        if key == "rotary_embed.inv_freq":
            sd[key] = value.clone()
        elif key.endswith("norm.weight") and value.ndim == 1 and "q_norm" not in key:
            sd[key] = 1 + 0.1 * torch.randn(value.shape, generator=gen)
        elif value.ndim <= 1 or key.endswith(("gamma", "beta")):
            sd[key] = 0.05 * torch.randn(value.shape, generator=gen)
        else:
            fan_in = value[0].numel()
            sd[key] = torch.randn(value.shape, generator=gen) / fan_in ** 0.5
    return sd


def write_f5(folder: Path, seed: int = 50, filename: str = F5_FILE,
             vocab: list[str] | None = None, **overrides) -> list[Path]:
    from safetensors.torch import save_file

    vocab = vocab or tiny_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    sd = f5_state_dict(seed, vocab_size=len(vocab), **overrides)
    path = folder / filename
    save_file({f"ema_model.transformer.{k}": v.contiguous() for k, v in sd.items()}, str(path))
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return [path, vocab_path]


def write_f5_pt(folder: Path, seed: int = 50, filename: str = "model_1250000.pt") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sd = f5_state_dict(seed)
    ema = {"initted": torch.tensor(True), "step": torch.tensor(1250000)}
    ema.update({f"ema_model.transformer.{k}": v for k, v in sd.items()})
    # older training checkpoints also carry the mel extractor's torchaudio buffers
    from spinbot.nodes.voice.mel import mel_filterbank

    ema["ema_model.mel_spec.mel_stft.mel_scale.fb"] = mel_filterbank(24000, 1024, 100)
    ema["ema_model.mel_spec.mel_stft.spectrogram.window"] = torch.hann_window(1024)
    path = folder / filename
    torch.save({"ema_model_state_dict": ema, "update": 1250000}, path)
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    return [path, vocab_path]


def vocos_state_dict(seed: int = 51) -> dict[str, torch.Tensor]:
    _, vocos = _pack()
    gen = seeded(seed)
    cfg = vocos.VocosConfig(**TINY_VOCOS)
    model = vocos.Vocos(cfg)
    sd = {}
    for key, value in model.state_dict().items():
        if key == "head.istft.window":
            sd[key] = value.clone()
        elif key.endswith("norm.weight"):
            sd[key] = 1 + 0.1 * torch.randn(value.shape, generator=gen)
        elif value.ndim <= 1:
            sd[key] = 0.05 * torch.randn(value.shape, generator=gen)
        else:
            sd[key] = torch.randn(value.shape, generator=gen) / value[0].numel() ** 0.5
    sd["head.out.bias"][: 513] -= 3.0  # modest magnitudes: exp(mag) around 0.05
    from spinbot.nodes.voice.mel import mel_filterbank

    sd["feature_extractor.mel_spec.spectrogram.window"] = torch.hann_window(1024)
    sd["feature_extractor.mel_spec.mel_scale.fb"] = mel_filterbank(24000, 1024, 100)
    return sd


def write_vocos(folder: Path, seed: int = 51) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(VOCOS_CONFIG.format(**TINY_VOCOS), encoding="utf-8")
    weights = folder / "pytorch_model.bin"
    torch.save(vocos_state_dict(seed), weights)
    return [config, weights]


def load_tiny_models(root: Path) -> tuple:
    """Write the tiny F5 and Vocos release folders under ``root`` and load them on the CPU with
    the pack's own loaders: ``(F5 model, Vocos)``."""
    load_pack()
    from spinbot.nodes.voice import cfm
    from spinbot.nodes.voice.vocos import load_vocos

    write_f5(root / F5_DIR)
    write_vocos(root / VOCOS_DIR)
    return (cfm.load_f5(str(root / F5_DIR / F5_FILE), device="cpu"),
            load_vocos(str(root / VOCOS_DIR)))


@builder("tts")
def tiny_f5tts_v1_base(folder: Path) -> list[Path]:
    return write_f5(folder / F5_DIR)


@builder("tts")
def tiny_vocos_mel_24khz(folder: Path) -> list[Path]:
    return write_vocos(folder / VOCOS_DIR)


# --------------------------------------------------------------------------- whisper
# openai/whisper-small as a transformers folder (config.json, generation_config.json,
# model.safetensors, tokenizer and processor files), shrunk to d_model 16 and one layer each way,
# with a byte-level vocabulary (256 byte tokens, a few merges) plus Whisper's special tokens, so
# the pack's transcription path (WhisperProcessor + generate(task="transcribe")) runs offline.

WHISPER_DIR = "whisper-small"
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>",
                    "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
                    "<|notimestamps|>"]


def write_whisper(folder: Path, seed: int = 52) -> list[Path]:
    import json

    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for merged in ("Ġt", "he", "Ġthe"):
        vocab[merged] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\nĠ t\nh e\nĠt he\n", encoding="utf-8")
    end = WHISPER_SPECIALS[0]
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                 unk_token=end, bos_token=end, eos_token=end, pad_token=end)
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in WHISPER_SPECIALS}
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=16,
                           encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=ids["<|startoftranscript|>"],
                           eos_token_id=ids[end], pad_token_id=ids[end], bos_token_id=ids[end])
    seeded(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=ids[end],
        pad_token_id=ids[end], max_length=448, is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], begin_suppress_tokens=[ids[end]])
    model.save_pretrained(str(folder))
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                     tokenizer=tokenizer).save_pretrained(str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())


@builder("whisper")
def tiny_whisper_small(folder: Path) -> list[Path]:
    return write_whisper(folder / WHISPER_DIR)
