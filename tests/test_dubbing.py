"""The dubbing workflow end to end on the tiny models (standalone runner, like
tests/test_workflow_runs.py): a generated talking video (astronaut frames + espeak-ng speech, an
MP4 in the input folder) -> Transcribe -> Translate -> Dub Voice -> Dub Mix -> Wav2Lip on the
original frames -> Face Restore -> Subtitles -> Video Combine.

What random tiny weights allow: the tiny Whisper's tokens are noise (no usable timestamps), so
the decoder of Transcribe is scripted with the spans where the generated video speaks (the
stand-in for a trained model; parsing, windows, caching and everything after run for real). The
tiny NLLB's translation is random text, F5's speech is noise-like and Wav2Lip's mouths are
random: the tests assert structure and timing (frame count, fps, audio length, segment starts,
subtitle cues = the translated segments' text, the over-bound report, errors, resumed work), not
words, voice likeness or lip shapes.
"""
from __future__ import annotations

import re

import av
import numpy as np
import pytest
import soundfile as sf

import spinbot
from spinbot.nodes import runtime
from spinbot.nodes.dubbing import transcribe, voice_fit
from spinbot.nodes.client import apply_overrides, load_workflow
from tests import factory
from tests.core_nodes import CORE_NODE_CLASSES
from tests.media import astronaut, speech_wav
from tests.mp4probe import probe
from tests.workflow_tools import definitions, run_api, validate_api

CLASSES = {**spinbot.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}
FPS = 25
RATE = 24000
SIZE = 96
SENTENCES = ("Hello there, my friend.", "How are you today?", "Fine.")
# Tiny models and fast settings; Transcribe's language is forced (random weights detect noise).
SETS = ['Transcribe.language="English"', "Transcribe.word_timestamps=false",
        'Translate.target_language="German"', "Dub Voice.nfe_steps=4",
        "Dub Voice.cfg_strength=0.0", 'Face Restore Model.model_name="RestoreFormer.pth"',
        "Wav2Lip.batch_size=32", 'Video Combine.preset="ultrafast"',
        'Video Combine.subtitle_language="German"']


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dubbing-models")
    factory.build(root, only=["whisper", "translation", "tts", "lipsync", "insightface",
                              "facerestore_models"])
    return root


@pytest.fixture
def models(built, spinbot_dirs, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(built))
    return spinbot_dirs


def _speech(text: str) -> np.ndarray:
    """espeak-ng speech at RATE, float32 [T]."""
    path = runtime.temp_dir() + "/espeak.wav"
    if speech_wav(path, text) is None:
        pytest.skip("espeak-ng is not installed")
    x, r = sf.read(path, dtype="float32")
    x = x if x.ndim == 1 else x.mean(axis=1)
    return np.interp(np.arange(int(len(x) * RATE / r)) * r / RATE, np.arange(len(x)),
                     x).astype(np.float32)


def write_talk(path, sentences=SENTENCES, gap: float = 0.5, silent: bool = False):
    """An H.264/AAC MP4 of the astronaut at FPS with the sentences spoken ``gap`` apart;
    returns (frames, spans [(start, end)] in seconds). ``silent``: the same length, no sound."""
    parts, spans, t = [np.zeros(int(gap * RATE), np.float32)], [], gap
    for text in sentences:
        x = _speech(text)
        spans.append((t, t + len(x) / RATE))
        parts += [x, np.zeros(int(gap * RATE), np.float32)]
        t += len(x) / RATE + gap
    wave = np.concatenate(parts)
    frames = int(np.ceil(len(wave) / RATE * FPS))
    wave = np.pad(wave, (0, int(round(frames / FPS * RATE)) - len(wave)))
    if silent:
        wave[:] = 0.0
    img = astronaut(SIZE)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width = v.height = SIZE
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=RATE)
        a.layout = "mono"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        af = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        af.sample_rate, af.pts = RATE, 0
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    return frames, spans


def script_whisper(monkeypatch, spans, texts=SENTENCES, decode_too: bool = False) -> list:
    """Transcribe's decoder answers with the spoken spans (times relative to the window, which
    starts where the skipped silence ends); returns the list of decoded windows. ``decode_too``
    runs the real decoder first and drops its answer (the benchmark: the model's cost)."""
    decoded = []
    real = transcribe._decode

    def scripted(whisper, _features, mask, *args):
        if decode_too:
            real(whisper, _features, mask, *args)
        tok = whisper.processor.tokenizer
        begin = whisper.generation_config.no_timestamps_token_id + 1
        hop = whisper.processor.feature_extractor.hop_length / transcribe.SAMPLE_RATE
        chunk = int(mask.sum()) * hop  # mel frames of real audio (10 ms each)
        offset = total[0] - chunk
        ts = lambda sec: begin + int(round(max(sec - offset, 0.0) / transcribe.TIME_PRECISION))  # noqa: E731
        seq = []
        for (a, b), text in zip(spans, texts):
            seq += [ts(a), *tok.encode(" " + text, add_special_tokens=False), ts(b)]
        decoded.append(offset)
        return seq, []

    total = [0.0]
    real_16k = transcribe.audio_16k_mono

    def measured(audio, what):
        wave, notes = real_16k(audio, what)
        total[0] = len(wave) / transcribe.SAMPLE_RATE
        return wave, notes

    monkeypatch.setattr(transcribe, "_decode", scripted)
    monkeypatch.setattr(transcribe, "audio_16k_mono", measured)
    return decoded


def run(sets=()) -> tuple[dict, str]:
    workflow = apply_overrides(load_workflow("dubbing"), [*SETS, *sets])
    validate_api(workflow, definitions(spinbot.NODE_CLASS_MAPPINGS))
    results = run_api(workflow, CLASSES)
    return results, out(results, "10")[0]


def out(results: dict, node_id: str) -> tuple:
    value = results[node_id]
    return value["result"] if isinstance(value, dict) else value


def test_talking_video_dubs_end_to_end(models, monkeypatch):
    frames, spans = write_talk(models["input"] / "talk.mp4")
    script_whisper(monkeypatch, spans)
    # bounds of 1x: a segment whose speech is longer than its slot cannot be fitted: reported
    results, path = run(["Dub Voice.max_speed_change=1.0", "Dub Voice.max_tempo_change=1.0"])
    frame = 1 / FPS
    original, translated, spoken = out(results, "2")[0], out(results, "3")[0], out(results, "4")[1]
    times = [t for s in original for t in (s.start, s.end)]
    assert times == pytest.approx([t for span in spans for t in span], abs=0.021)
    assert len(translated) == len(spoken) == len(original) == len(SENTENCES)
    for o, t, s in zip(original, translated, spoken):
        assert (t.start, t.end) == (o.start, o.end)
        assert abs(s.start - o.start) <= frame  # every translated segment starts on time
    p = probe(path)
    assert p.video_frames == frames and p.fps == pytest.approx(FPS)
    assert abs(p.audio_seconds - frames / FPS) <= frame
    mixed = out(results, "5")[0]
    assert mixed["waveform"].shape[-1] == round(frames / FPS * RATE)  # sample exact before AAC
    # the soft subtitles carry the translated text (random words from the tiny NLLB)
    cues = " ".join(text for _a, _b, text in p.subtitles)
    assert p.subtitles and _words(cues) == _words(" ".join(s.text for s in spoken))
    starts = [a for a, _b, _t in p.subtitles]
    assert all(min(abs(a - s.start) for a in starts) <= frame for s in spoken), starts
    # two tracks: the translation (German) first, the original (English) as the second
    assert [lang for lang, _cues in p.subtitle_tracks] == ["deu", "eng"]
    assert p.subtitle_tracks[0][1] == p.subtitles
    second = p.subtitle_tracks[1][1]
    assert [text for _a, _b, text in second] == list(SENTENCES)
    assert [t for a, b, _t in second for t in (a, b)] == pytest.approx(
        [t for s in original for t in (s.start, s.end)], abs=0.001)
    # the report names exactly the segments whose speech overruns its slot by more than a frame
    report = out(results, "4")[2]
    lines = [ln for ln in report.splitlines() if re.match(r"\s+#\d+ ", ln)]
    assert len(lines) == len(SENTENCES)
    over = []
    for ln in lines:
        slot = float(re.search(r"slot ([\d.]+) s", ln).group(1))
        spoken_s = float(re.search(r"-> ([\d.]+) s(?: \(|$)", ln).group(1))
        assert ("over the bound" in ln) == (spoken_s > slot + frame + 0.01), ln
        over.append("over the bound" in ln)
    assert any(over), report  # "Fine." became a 0.5 s slot: F5's natural length exceeds it
    print(report)


def _words(text: str) -> list[str]:
    return text.split()


def test_video_without_speech_is_a_clear_error(models):
    write_talk(models["input"] / "talk.mp4", silent=True)
    with pytest.raises(Exception, match="no speech in the video's audio: it is silent"):
        run()
    assert not list(models["output"].rglob("*.mp4"))


def test_resume_after_cancel_redoes_only_unfinished_segments(models, monkeypatch):
    frames, spans = write_talk(models["input"] / "talk.mp4")
    windows = script_whisper(monkeypatch, spans)
    real = voice_fit.engine.synthesize_pieces
    spoken, stop_after = [], [2]

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        spoken.append(args[4][0].text)
        if len(spoken) == stop_after[0]:
            runtime.request_interrupt()  # Cancel, after the 2nd segment is spoken
        return result

    monkeypatch.setattr(voice_fit.engine, "synthesize_pieces", counting)
    with pytest.raises(runtime.Interrupted):
        run()
    assert len(spoken) == 2 and len(windows) == 1
    assert not list(models["output"].rglob("*.mp4"))  # nothing half-written
    stop_after[0] = -1
    spoken.clear()
    results, path = run()
    # the re-run: Whisper's window and the first two segments come from the cache
    assert len(windows) == 1 and len(spoken) == len(SENTENCES) - 2
    assert "reused from cache: 2 of 3 segments" in out(results, "4")[2]
    assert probe(path).video_frames == frames


def answer_whisper_in_advance(video_path, spans, models_dir, temp_dir) -> None:
    """For a real ComfyUI (another process, where the decoder cannot be scripted): runs SpinBot
    Transcribe here on ``video_path`` with the scripted decoder, the tiny Whisper folder of
    ``models_dir`` and the window cache of ``temp_dir`` (the server's temp folder). The server's
    Transcribe then finds the same window (same audio, model stamp, language) in its cache and
    reuses it, as after a Cancel; everything else runs in the server on the tiny models."""
    from spinbot.nodes.dubbing.nodes_dubbing import SpinBotTranscribe
    from spinbot.nodes.video.nodes_video import SpinBotLoadVideo

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPINBOT_MODELS_DIR", str(models_dir))
        mp.setenv("SPINBOT_TEMP_DIR", str(temp_dir))
        mp.setenv("SPINBOT_INPUT_DIR", str(video_path.parent))
        windows = script_whisper(mp, spans)
        video = SpinBotLoadVideo().load(video_path.name, 0.0, 0.0, 0.0, 0)[0]
        segments = SpinBotTranscribe().run("whisper-large-v3-turbo", "English", False,
                                           video=video)[0]
    assert len(windows) <= 1 and len(segments) == len(spans)  # 0: cached by an earlier run
