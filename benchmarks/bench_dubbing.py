"""Dubbing benchmark (figures, not assertions): seconds per minute of source video and peak
memory of every stage of the shipped dubbing workflow, on a generated talking video.

    python -m benchmarks.bench_dubbing [--seconds 20] [--size 256] [--fps 25] [--nfe 8] [--json]

The source is tests/test_dubbing.py's talking video (the astronaut at ``--size`` px, espeak-ng
sentences 0.5 s apart, repeated to about ``--seconds``), run through workflows/api/dubbing.json by
the standalone runner on the factory's tiny models (Whisper large-v3-turbo layout, NLLB-200,
F5-TTS + Vocos, Wav2Lip, the buffalo_l pack, RestoreFormer) on the CPU. Random Whisper finds no
timing, so its decoder answers with the spoken spans (as in the tests) after the real decoder
has run on the window (its cost is measured, its random tokens dropped); every other stage runs
its real model. The workflow runs twice: cold (imports, model loading) and warm (models kept,
result caches empty). Per stage: wall seconds, seconds per minute of source, and the resident-memory
growth over the stage (VmHWM reset at its start) plus CUDA's peak allocation when on a GPU.

Full-size random weights on a GPU are not built here (no full-size Whisper/NLLB writer in the
factory yet); bench_voice, bench_lipsync and bench_restore --model gfpgan give those stages'
full-size figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = ("Hello there, my friend.", "How are you today?", "The weather is fine this morning.",
             "Let us take a walk by the river.")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--nfe", type=int, default=8, help="F5-TTS steps per segment")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="bench_dubbing_")
    for name in ("output", "temp", "input", "models"):
        os.makedirs(os.path.join(work, name))
        os.environ[f"SPINBOT_{name.upper()}_DIR"] = os.path.join(work, name)
    os.environ.setdefault("SPINBOT_PROGRESS", "0")

    from pathlib import Path

    import pytest
    import torch

    from benchmarks.full_size import peak, reset_peak
    from tests._pack import load_pack

    load_pack()
    import spinbot
    from spinbot.nodes.client import apply_overrides, load_workflow
    from tests import factory, test_dubbing
    from tests.core_nodes import CORE_NODE_CLASSES
    from tests.workflow_tools import run_api

    factory.build(Path(work) / "models", only=["whisper", "translation", "tts", "lipsync",
                                               "insightface", "facerestore_models"])
    test_dubbing.SIZE, test_dubbing.FPS = args.size, args.fps
    sentences = []
    while len(sentences) * 2.2 < args.seconds:  # espeak speaks a sentence in ~1.2-2 s
        sentences.append(SENTENCES[len(sentences) % len(SENTENCES)])
    frames, spans = test_dubbing.write_talk(Path(work) / "input" / "talk.mp4", tuple(sentences))
    source_seconds = frames / args.fps
    mp = pytest.MonkeyPatch()
    test_dubbing.script_whisper(mp, spans, tuple(sentences), decode_too=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    stages: list[dict] = []

    def timed(cls):
        function = getattr(cls, cls.FUNCTION)

        def run(self, *a, **kw):
            start_rss = _rss()
            reset_peak(device)
            started = time.perf_counter()
            result = function(self, *a, **kw)
            seconds = time.perf_counter() - started
            grown = (peak(device) - (0 if device == "cuda" else start_rss)) / 2**20
            stages.append({"stage": cls.__name__, "seconds": round(seconds, 2),
                           "s_per_min_of_video": round(seconds / source_seconds * 60.0, 1),
                           ("peak_cuda_mb" if device == "cuda" else "peak_rss_growth_mb"):
                           round(grown, 1)})
            return result

        return type(cls.__name__, (cls,), {cls.FUNCTION: run})

    classes = {name: timed(cls) for name, cls in
               {**spinbot.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}.items()}
    workflow = apply_overrides(load_workflow("dubbing"), [
        *test_dubbing.SETS, f"Dub Voice.nfe_steps={args.nfe}", "Dub Voice.cfg_strength=2.0"])
    # pass 1 (cold): imports, model loading, first-call set-up; pass 2 (warm): the loaded models
    # kept, every result cache empty (a fresh temp folder), so each stage does its full work
    cold = []
    for label in ("cold", "warm"):
        stages.clear()
        temp = os.path.join(work, f"temp-{label}")
        os.makedirs(temp)
        os.environ["SPINBOT_TEMP_DIR"] = temp
        started = time.perf_counter()
        run_api(workflow, classes)
        total = time.perf_counter() - started
        if label == "cold":
            cold = [dict(row) for row in stages]
            cold_total = total
    mp.undo()
    result = {"device": device, "source": f"{source_seconds:.2f} s, {frames} frames "
              f"{args.size}x{args.size} @ {args.fps} fps, {len(sentences)} sentences",
              "models": "tiny (random weights)", "nfe": args.nfe, "stages": stages,
              "cold_stages": cold, "cold_total_seconds": round(cold_total, 1),
              "total_seconds": round(total, 1),
              "total_s_per_min_of_video": round(total / source_seconds * 60.0, 1),
              "process_peak_rss_mb": round(_hwm() / 2**20, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['source']}; {result['models']}; device {device}; F5 NFE {args.nfe}")
        print(f"{'stage':>28}  warm: seconds, s/min of source, peak memory growth | cold seconds")
        for row, first in zip(stages, cold):
            mem = row.get("peak_rss_growth_mb", row.get("peak_cuda_mb"))
            print(f"{row['stage']:>28}: {row['seconds']:7.2f} s  {row['s_per_min_of_video']:8.1f} "
                  f"s/min  peak +{mem:.0f} MiB | {first['seconds']:7.2f} s")
        print(f"{'cold total':>28}: {cold_total:7.2f} s")
        print(f"{'total':>28}: {total:7.2f} s  {result['total_s_per_min_of_video']:8.1f} s/min; "
              f"process peak RSS {result['process_peak_rss_mb']:.0f} MiB")
    return result


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _rss() -> int:
    return _status("VmRSS:")


def _hwm() -> int:
    return _status("VmHWM:")


if __name__ == "__main__":
    main()
