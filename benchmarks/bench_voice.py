"""Voice stage benchmark (figures, not assertions): real-time factor (RTF = compute seconds /
seconds of speech produced) of the pack's F5-TTS + Vocos inference.

    python -m benchmarks.bench_voice [--nfe 32] [--seconds 8] [--ref-seconds 6] [--repeat 3]
        [--full-cpu-nfe 0] [--reference]

Rows:

- tiny / cpu: the factory's tiny F5 and Vocos (tests/factory_voice.py) through the engine, as the
  node runs them (planning, CFM sampling with CFG, vocoder, joining). Their output is noise; the
  figure is the pack's overhead around the models.
- full / cuda (only when CUDA is available): the F5TTS_v1_Base architecture (22 x 1024, 336 M
  parameters) and vocos-mel-24khz with random weights, DiT in float16 as upstream runs it. The
  published anchor for F5-TTS v1 Base is RTF 0.15 at 32 NFE (upstream README, on an L20 GPU).
- full / cpu (``--full-cpu-nfe N``, N > 0): the same full-size models on the CPU for N steps;
  the RTF is scaled to ``--nfe`` steps from the time per step.
- ``--reference``: the same sampling through the reference ``f5_tts`` CFM (test-only package,
  when installed) on the same weights, for comparison.

Each row (the fastest of ``--repeat`` runs) reports: RTF, seconds of speech, sampling time (all NFE steps, CFG batch of 2), vocoder
time and, on CUDA, peak memory.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPINBOT_PROGRESS", "0")

from tests._pack import load_pack  # noqa: E402

load_pack()
from spinbot.nodes.voice import cfm, engine, text as vtext  # noqa: E402
from spinbot.nodes.voice.f5_dit import DiT, DiTConfig  # noqa: E402
from spinbot.nodes.voice.mel import F5_MEL  # noqa: E402
from spinbot.nodes.voice.profiles import VoiceProfile  # noqa: E402
from spinbot.nodes.voice.vocos import Vocos, VocosConfig  # noqa: E402
from tests import factory_voice  # noqa: E402

ANCHOR_RTF = 0.15
REF_TEXT = "Some call me nature, others call me mother nature."
WORDS = ("the quick brown fox jumps over a lazy dog while seven small birds sing softly in "
         "the warm morning light and the river runs on toward the distant sea").split()


def reference_voice(seconds: float) -> VoiceProfile:
    t = torch.arange(int(seconds * F5_MEL.sample_rate)) / F5_MEL.sample_rate
    wave = 0.1 * torch.sin(2 * torch.pi * 180 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return VoiceProfile(wave=wave.float(), text=REF_TEXT)


def text_for(voice: VoiceProfile, seconds: float) -> str:
    """A sentence the planner gives about ``seconds`` of speech."""
    words: list[str] = []
    while True:
        words.append(WORDS[len(words) % len(WORDS)])
        text = " ".join(words).capitalize() + "."
        if engine.estimate_seconds(voice, text) >= seconds:
            return text


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_engine(f5: cfm.F5Model, vocoder: Vocos, voice: VoiceProfile, text: str, nfe: int,
               device: torch.device) -> dict:
    """One synthesis through the engine, with sampling and vocoder timed separately."""
    timings = {"sample": 0.0, "vocoder": 0.0}
    original_sample, original_decode = cfm.sample, vocoder.decode

    def timed_sample(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        out = original_sample(*args, **kwargs)
        sync(device)
        timings["sample"] += time.perf_counter() - start
        return out

    def timed_decode(mel):
        sync(device)
        start = time.perf_counter()
        out = original_decode(mel)
        sync(device)
        timings["vocoder"] += time.perf_counter() - start
        return out

    settings = engine.Settings(nfe_steps=nfe, silence=0.0, cross_fade=0.0)
    cfm.sample, vocoder.decode = timed_sample, timed_decode
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        result = engine.synthesize(f5, vocoder, voice, engine.text_segments(text, max_segment_seconds=0),
                                   settings)
        sync(device)
        total = time.perf_counter() - start
    finally:
        cfm.sample = original_sample
        del vocoder.decode
    seconds = result.wave.shape[-1] / result.sample_rate
    row = dict(total=total, seconds=seconds, rtf=total / seconds, **timings)
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def best_of(repeat: int, fn) -> dict:
    """The fastest of ``repeat`` runs (the machine may be shared; the minimum is the model's)."""
    return min((fn() for _ in range(max(repeat, 1))), key=lambda row: row["total"])


def full_size_models(device: torch.device, dtype: torch.dtype) -> tuple[cfm.F5Model, Vocos]:
    """F5TTS_v1_Base and vocos-mel-24khz architectures with random weights."""
    torch.manual_seed(0)
    vocab_tokens = factory_voice.tiny_vocab()
    vocab_tokens += [f"tok{i}" for i in range(DiTConfig().text_num_embeds - len(vocab_tokens))]
    vocab = {tok: i for i, tok in enumerate(vocab_tokens)}
    dit = DiT(DiTConfig(text_num_embeds=len(vocab)))
    for name, param in dit.named_parameters():  # keep activations in range for fp16
        if param.ndim >= 2:
            torch.nn.init.normal_(param, std=0.3 / param[0].numel() ** 0.5)
    dit = dit.to(device=device, dtype=dtype).eval()
    dit.rotary_embed.inv_freq = dit.rotary_embed.inv_freq.float()
    dit.text_embed.freqs_cis = dit.text_embed.freqs_cis.float()
    vocoder = Vocos(VocosConfig()).to(device).eval()
    with torch.no_grad():
        vocoder.head.out.bias[: VocosConfig().n_fft // 2 + 1] -= 3.0
    return cfm.F5Model(dit=dit, vocab=vocab, path="<random F5TTS_v1_Base>"), vocoder


def reference_sampling(f5: cfm.F5Model, voice: VoiceProfile, text: str, nfe: int,
                       device: torch.device) -> dict | None:
    """The reference f5_tts CFM.sample on the same weights (test-only package), timed."""
    try:
        sys.path.insert(0, str(ROOT))
        from tests.test_voice_parity import _f5_reference  # imports without f5_tts's trainer
        RefDiT, RefCFM = _f5_reference()
    except BaseException as exc:  # pytest.skip raises a BaseException subclass
        print(f"  (reference f5_tts unavailable: {exc})")
        return None
    cfg = f5.dit.config
    ref = RefCFM(transformer=RefDiT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                    dim_head=cfg.dim_head, ff_mult=cfg.ff_mult, mel_dim=cfg.mel_dim,
                                    text_num_embeds=cfg.text_num_embeds, text_dim=cfg.text_dim,
                                    conv_layers=cfg.conv_layers),
                 mel_spec_kwargs=dict(n_fft=1024, hop_length=256, win_length=1024,
                                      n_mel_channels=100, target_sample_rate=24000,
                                      mel_spec_type="vocos"),
                 odeint_kwargs=dict(method="euler"), vocab_char_map=f5.vocab)
    ref.transformer.load_state_dict(f5.dit.state_dict(), strict=False)
    ref = ref.to(device=device, dtype=f5.dtype).eval()
    ref_text, pieces = engine.plan(voice, [text], engine.Settings(nfe_steps=nfe))
    wave = voice.wave[None].to(device)
    with torch.inference_mode():
        sync(device)
        start = time.perf_counter()
        for piece in pieces:
            ref.sample(cond=wave, text=[ref_text + piece.text], duration=piece.frames, steps=nfe,
                       cfg_strength=2.0, sway_sampling_coef=-1.0, seed=piece.seed)
        sync(device)
    return dict(sample=time.perf_counter() - start)


def print_row(label: str, row: dict) -> None:
    peak = f"  peak {row['peak_gib']:.2f} GiB" if "peak_gib" in row else ""
    print(f"{label:<28} RTF {row['rtf']:7.3f}  speech {row['seconds']:5.2f} s  total "
          f"{row['total']:7.2f} s  sampling {row['sample']:7.2f} s  vocoder {row['vocoder']:6.3f} s"
          f"{peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="speech to produce")
    parser.add_argument("--ref-seconds", type=float, default=6.0, help="reference clip length")
    parser.add_argument("--full-cpu-nfe", type=int, default=0,
                        help="steps for the full-size model on the CPU (0: skip; slow)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference f5_tts sampler on the same weights")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    voice = reference_voice(args.ref_seconds)
    text = text_for(voice, args.seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; NFE {args.nfe}, "
          f"reference {args.ref_seconds:g} s, text of {vtext.byte_length(text)} bytes; "
          f"published anchor: RTF {ANCHOR_RTF} at 32 NFE (F5-TTS v1 Base, GPU)")

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        f5_dir = Path(tmp) / factory_voice.F5_DIR
        factory_voice.write_f5(f5_dir)
        factory_voice.write_vocos(Path(tmp) / factory_voice.VOCOS_DIR)
        f5, vocoder = engine.get_models(str(f5_dir / factory_voice.F5_FILE),
                                        str(Path(tmp) / factory_voice.VOCOS_DIR), dtype=torch.float32)
        run_engine(f5, vocoder, voice, "Warm up.", 2, cpu)
        print_row("tiny / cpu", best_of(args.repeat, lambda: run_engine(f5, vocoder, voice, text,
                                                                         args.nfe, cpu)))
        engine.release_models()

    if args.full_cpu_nfe > 0:
        f5, vocoder = full_size_models(cpu, torch.float32)
        row = run_engine(f5, vocoder, voice, text, args.full_cpu_nfe, cpu)
        scale = args.nfe / args.full_cpu_nfe
        row.update(sample=row["sample"] * scale, total=row["sample"] * scale + row["vocoder"])
        row["rtf"] = row["total"] / row["seconds"]
        print_row(f"full / cpu (x{scale:g} of {args.full_cpu_nfe})", row)
        del f5, vocoder

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(gpu)}")
        f5, vocoder = full_size_models(gpu, torch.float16)
        run_engine(f5, vocoder, voice, "Warm up, a short sentence.", 4, gpu)
        print_row("full / cuda fp16", best_of(args.repeat, lambda: run_engine(
            f5, vocoder, voice, text, args.nfe, gpu)))
        print_row("full / cuda fp16, NFE 16", best_of(args.repeat, lambda: run_engine(
            f5, vocoder, voice, text, 16, gpu)))
        if args.reference:
            ref = reference_sampling(f5, voice, text, args.nfe, gpu)
            if ref:
                print(f"{'reference f5_tts / cuda':<28} sampling {ref['sample']:7.2f} s")
    else:
        print("full / cuda: no CUDA device here (run on a GPU machine for the full-size figures)")
    if args.reference and not torch.cuda.is_available():
        f5, vocoder = full_size_models(cpu, torch.float32) if args.full_cpu_nfe > 0 else (None, None)
        if f5 is not None:
            ref = reference_sampling(f5, voice, text, args.full_cpu_nfe, cpu)
            if ref:
                print(f"{'reference f5_tts / cpu':<28} sampling {ref['sample']:7.2f} s "
                      f"({args.full_cpu_nfe} NFE)")


if __name__ == "__main__":
    main()
