"""Tiny dubbing models in the release layouts (folders ``whisper`` and ``translation``).

- ``whisper/whisper-large-v3-turbo``: a transformers Whisper folder as published at
  huggingface.co/openai/whisper-large-v3-turbo (config.json, generation_config.json,
  model.safetensors, tokenizer files, preprocessor_config.json) with the large-v3 front end (128 mel
  bins, 30 s windows, 1500 encoder positions), the full special-token layout (<|endoftext|>,
  <|startoftranscript|>, the 100 language tokens of large-v3 in transformers' LANGUAGES order,
  <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>,
  then the 1501 timestamp tokens <|0.00|>..<|30.00|>) and ``alignment_heads`` for word
  timestamps, but d_model 16, one layer each way and a byte-level vocabulary.
- ``translation/nllb-200-distilled-600M``: an M2M100ForConditionalGeneration folder as published at
  huggingface.co/facebook/nllb-200-distilled-600M (config keys of that release: scale_embedding,
  max_position_embeddings 1024, decoder_start_token_id 2 ..., weights in pytorch_model.bin) with
  an NLLB tokenizer holding the 202 FLORES-200 language-code tokens, tiny widths and a
  character-level vocabulary.

Random weights: the text they produce is noise; tests assert structure, times and errors.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .factory import builder, seeded

WHISPER_DIR = "whisper-large-v3-turbo"
NLLB_DIR = "nllb-200-distilled-600M"


def _whisper_specials() -> tuple[list[str], list[str]]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in LANGUAGES]  # large-v3 order (ends with yue)
    specials = (["<|endoftext|>", "<|startoftranscript|>"] + languages
                + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                   "<|nospeech|>", "<|notimestamps|>"])
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    return specials, timestamps


def write_whisper_v3(folder: Path, seed: int = 71) -> list[Path]:
    """A tiny Whisper large-v3(-turbo) folder; returns the files written."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    specials, timestamps = _whisper_specials()
    end = specials[0]
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                 unk_token=end, bos_token=end, eos_token=end, pad_token=end)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.add_tokens(timestamps)  # plain added tokens, as in the release tokenizer.json
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in specials + timestamps[:1]}
    assert ids[timestamps[0]] == ids["<|notimestamps|>"] + 1
    # openai/whisper-large-v3-turbo config.json keys; only the widths and depths shrink.
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=128, d_model=16,
                           encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=ids["<|startoftranscript|>"],
                           eos_token_id=ids[end], pad_token_id=ids[end], bos_token_id=ids[end],
                           begin_suppress_tokens=[220, ids[end]], scale_embedding=False,
                           use_cache=True)
    seeded(seed)
    model = WhisperForConditionalGeneration(config)
    languages = [t for t in specials if len(t) <= 9 and t not in ("<|endoftext|>",)
                 and t[2:-2].isalpha() and t[2:-2].islower() and len(t[2:-2]) <= 3]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=ids[end],
        # max_length shrinks like the widths (448 upstream): random weights rarely stop early,
        # and 440 tokens per window would dominate the tests' time
        pad_token_id=ids[end], bos_token_id=ids[end], max_length=40, is_multilingual=True,
        lang_to_id={t: ids[t] for t in languages},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        begin_suppress_tokens=[220, ids[end]], suppress_tokens=[],
        alignment_heads=[[0, 0], [0, 1]], return_timestamps=False)
    model.save_pretrained(str(folder))
    # The release keeps the feature extractor in preprocessor_config.json beside the tokenizer.
    WhisperFeatureExtractor(feature_size=128).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())


# Characters of the tiny NLLB vocabulary: enough for Latin-script test sentences, digits and
# the placeholders the glossary uses; anything else becomes <unk>.
_NLLB_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
               ".,;:!?'\"-()[]äöüßéèàçñÄÖÜ")


def write_nllb(folder: Path, seed: int = 83) -> list[Path]:
    """A tiny NLLB-200 (M2M100) folder; returns the files written."""
    from transformers import (GenerationConfig, M2M100Config, M2M100ForConditionalGeneration,
                              NllbTokenizer)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    for ch in _NLLB_CHARS:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("▁" + ch, len(vocab))
    merges = [("▁", ch) for ch in _NLLB_CHARS]
    tokenizer = NllbTokenizer(vocab=vocab, merges=merges)  # the 202 FLORES-200 codes by default
    tokenizer.save_pretrained(str(folder))
    # facebook/nllb-200-distilled-600M config.json keys; widths shrink, the rest as released.
    config = M2M100Config(vocab_size=len(tokenizer), d_model=16, encoder_layers=1,
                          decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=1024,
                          scale_embedding=True, activation_function="relu", dropout=0.1,
                          attention_dropout=0.1, activation_dropout=0.0, init_std=0.02,
                          encoder_layerdrop=0, decoder_layerdrop=0,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2,
                          decoder_start_token_id=2, tokenizer_class="NllbTokenizer",
                          architectures=["M2M100ForConditionalGeneration"])
    seeded(seed)
    model = M2M100ForConditionalGeneration(config)
    # max_length 200 upstream, shrunk like the widths (random weights rarely stop early)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                               decoder_start_token_id=2, max_length=40)
    model.save_pretrained(str(folder))
    # The release ships its weights as pytorch_model.bin (a torch.save'd state dict; no
    # safetensors on the main branch), which transformers reads with weights_only=True.
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return sorted(p for p in folder.iterdir() if p.is_file())


@builder("whisper")
def tiny_whisper_large_v3_turbo(folder: Path) -> list[Path]:
    return write_whisper_v3(folder / WHISPER_DIR)


@builder("translation")
def tiny_nllb_200_distilled_600m(folder: Path) -> list[Path]:
    return write_nllb(folder / NLLB_DIR)
