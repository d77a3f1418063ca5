"""SpinBot Transcribe on the tiny Whisper large-v3-turbo folder (random weights: the text is
noise, so the tests check times, windows, languages, conversions and errors)."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from spinbot.nodes import NODE_CLASS_MAPPINGS, runtime
from spinbot.nodes.dubbing import languages, nodes_dubbing, transcribe
from spinbot.nodes.dubbing.languages import LanguageError
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import make_audio
from spinbot.nodes.video import store
from tests import factory
from tests.factory_dubbing import WHISPER_DIR
from tests.media import write_wav

MODEL = WHISPER_DIR


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dub-models")
    factory.build(root, only=["whisper"])
    return root


@pytest.fixture
def models(built, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(built))
    return built


def speechlike(seconds: float, rate: int, spans, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise ("syllables" at 4 Hz) inside ``spans``, silence elsewhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = np.zeros_like(t)
    for a, b in spans:
        inside = (t >= a) & (t < b)
        wave[inside] = (rng.standard_normal(inside.sum()) * 0.2
                        * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t[inside])))
    return np.stack([wave * (0.9 ** c) for c in range(channels)]).astype(np.float32)


def check_segments(segments, duration: float) -> None:
    assert segments, "no segments"
    prev = 0.0
    for k, s in enumerate(segments):
        assert s.index == k and s.estimated is False and isinstance(s.text, str) and s.text
        assert prev <= s.start <= s.end <= duration + 1e-9, (s, prev, duration)
        prev = s.end


def test_registered_with_its_outputs():
    cls = NODE_CLASS_MAPPINGS["SpinBotTranscribe"]
    assert cls.RETURN_NAMES == ("segments", "text", "language", "words", "report")
    assert cls.CATEGORY == "SpinBot/dubbing"
    inputs = cls.INPUT_TYPES()
    assert "German" in inputs["required"]["language"][0]
    assert {"audio", "video"} <= set(inputs["optional"])
    names = inputs["required"]["language"][0][1:]
    assert len(names) == 100 and sorted({languages.whisper_code(n) for n in names}) == \
        sorted(languages.whisper_languages())  # every choice resolves, to a different code


def test_stereo_44k_audio_gives_measured_segments_inside_it_and_repeats(models):
    audio = make_audio(speechlike(6.0, 44100, [(0.5, 2.5), (3.0, 5.5)], channels=2), 44100)
    node = nodes_dubbing.SpinBotTranscribe()
    segments, text, language, words, report = node.run(MODEL, "auto", True, audio=audio)
    check_segments(segments, 6.0)
    assert language in transcribe.load_whisper(MODEL).languages()
    assert text == " ".join(s.text for s in segments).strip()
    assert "44100 Hz -> 16000 Hz" in report and "averaged to mono" in report
    assert "detected" in report
    # word timestamps from the alignment heads: inside the audio, in order
    parsed = json.loads(words)
    assert parsed and all(0 <= w["start"] <= w["end"] <= 6.0 for w in parsed)
    assert [w["start"] for w in parsed] == sorted(w["start"] for w in parsed)
    again = node.run(MODEL, "auto", True, audio=audio)
    assert again[0] == segments and again[2] == language  # same result (the windows cached)
    assert "reused from the cache" in again[4]


def test_long_audio_is_read_in_30s_windows_with_continuous_times(models):
    wave = speechlike(70.0, 16000, [(0.2, 69.5)])[0]
    whisper = transcribe.load_whisper(MODEL)
    result = transcribe.transcribe(wave, whisper, "German", word_timestamps=False)
    assert result.language == "de" and result.windows >= 3
    check_segments(result.segments, 70.0)
    assert result.segments[-1].end > 40.0  # the later windows were transcribed too
    assert result.words == [] and not result.word_level


def test_window_parsing_keeps_complete_segments_and_reports_a_cut_one():
    begin, special = 1000, {999}
    ts = lambda s: begin + int(round(s / transcribe.TIME_PRECISION))  # noqa: E731
    tokens = [ts(0.0), 5, 6, ts(1.0), ts(1.2), 7, 999, ts(2.5)]
    parsed, complete = transcribe._parse(tokens, begin, special)
    assert complete and [(a, b, ids) for a, b, ids, _ in parsed] == [(0.0, 1.0, [5, 6]),
                                                                     (1.2, 2.5, [7])]
    parsed, complete = transcribe._parse(tokens[:-1] + [8], begin, special)
    assert not complete and parsed[-1][1] is None and parsed[-1][2] == [7, 8]


def test_windows_continue_at_the_last_complete_segment(models, monkeypatch):
    """A scripted decoder stands in for the random model: window 1 ends with a segment cut by
    its edge, so window 2 must start where the last complete one ended (25 s) and decode the cut
    speech again; a zero-length segment gets the shortest slot."""
    whisper = transcribe.load_whisper(MODEL)
    tok = whisper.processor.tokenizer
    begin = whisper.generation_config.no_timestamps_token_id + 1
    ts = lambda sec: begin + int(round(sec / transcribe.TIME_PRECISION))  # noqa: E731
    a, b, c = (tok.encode(w, add_special_tokens=False) for w in (" the", " in", " a"))
    script = [[ts(0.0), *a, ts(10.0), ts(10.0), *b, ts(25.0), ts(25.0), *c],  # c is cut
              [ts(0.0), *c, ts(5.0), ts(7.0), *a, ts(7.0)],  # 7.0-7.0: zero length
              [ts(0.0), *b, ts(2.0)]]
    offsets = []

    def scripted(_whisper, features, mask, *_args):
        offsets.append(int(mask.sum()))  # frames of real audio in this window
        return script[len(offsets) - 1], []

    monkeypatch.setattr(transcribe, "_decode", scripted)
    wave = speechlike(60.0, 16000, [(0.0, 60.0)])[0]
    result = transcribe.transcribe(wave, whisper, "en", False)
    times = [(s.start, s.end, s.text) for s in result.segments]
    assert times == [(0.0, 10.0, "the"), (10.0, 25.0, "in"), (25.0, 30.0, "a"),
                     (32.0, 32.1, "the"), (55.0, 57.0, "in")]
    assert result.windows == 3 and offsets == [3000, 3000, 500]  # 0-30 s, 25-55 s, 55-60 s


def test_silence_before_speech_is_skipped_and_times_stay_absolute(models):
    wave = speechlike(40.0, 16000, [(33.0, 38.0)])[0]
    result = transcribe.transcribe(wave, transcribe.load_whisper(MODEL), "en", False)
    check_segments(result.segments, 40.0)
    assert result.windows == 1 and result.segments[0].start >= 32.8


def test_video_audio_is_transcribed_and_a_silent_video_is_a_clear_error(models):
    node = nodes_dubbing.SpinBotTranscribe()
    frames = np.zeros((4, 16, 16, 3), np.uint8)

    def video(key, wave):
        with store.VideoWriter(key, 2.0) as writer:
            writer.write(frames)
            return writer.finish(audio=make_audio(wave, 16000) if wave is not None else None)

    talking = video("talk", speechlike(2.0, 16000, [(0.2, 1.8)]))
    segments = node.run(MODEL, "English", False, video=talking)[0]
    check_segments(segments, 2.0)
    with pytest.raises(transcribe.TranscribeError, match="no speech in the video's audio"):
        node.run(MODEL, "auto", False, video=video("quiet", np.zeros((1, 32000), np.float32)))
    with pytest.raises(transcribe.TranscribeError, match="no audio track"):
        node.run(MODEL, "auto", False, video=video("mute", None))
    with pytest.raises(ValueError, match="connect 'audio' or 'video'"):
        node.run(MODEL, "auto", False)


def test_core_video_from_loadvideo_is_transcribed(models, spinbot_dirs):
    wav = write_wav(str(spinbot_dirs["temp"] / "speech.wav"),
                    speechlike(3.0, 22050, [(0.3, 2.7)]), 22050)
    mp4 = str(spinbot_dirs["input"] / "talk.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=gray:s=32x32:r=10:d=3", "-i", wav, "-shortest", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", mp4], check=True)
    core = runtime.core_video_from_file(mp4)
    segments, _text, _language, _words, report = nodes_dubbing.SpinBotTranscribe().run(
        MODEL, "German", False, video=core)
    check_segments(segments, 3.1)
    assert "of video's audio" in report and "-> 16000 Hz" in report


def test_cancel_stops_between_windows(models):
    wave = speechlike(2.0, 16000, [(0.2, 1.8)])[0]
    whisper = transcribe.load_whisper(MODEL)
    runtime.request_interrupt()
    try:
        with pytest.raises(runtime.Interrupted):
            transcribe.transcribe(wave, whisper, "en", False)
    finally:
        runtime.request_interrupt(False)


def test_rerun_after_cancel_decodes_only_unfinished_windows(models, monkeypatch):
    wave = speechlike(65.0, 16000, [(0.2, 64.5)], seed=4)[0]
    whisper = transcribe.load_whisper(MODEL)
    real, calls = transcribe._decode, []

    def counting(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # Cancel pressed while the second window decodes
            raise runtime.Interrupted("processing interrupted")
        return real(*args, **kw)

    monkeypatch.setattr(transcribe, "_decode", counting)
    with pytest.raises(runtime.Interrupted):
        transcribe.transcribe(wave, whisper, "German", False)
    calls.clear()
    monkeypatch.setattr(transcribe, "_decode",
                        lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    resumed = transcribe.transcribe(wave, whisper, "German", False)
    assert len(calls) == resumed.windows - 1 >= 2  # the first window came from the cache
    assert f"1 of {resumed.windows} window(s) reused" in " ".join(resumed.notes)
    monkeypatch.setattr(transcribe, "_decode", real)
    shutil.rmtree(transcribe.cache_dir())  # decoded afresh: greedy decoding is deterministic
    assert transcribe.transcribe(wave, whisper, "German", False).segments == resumed.segments


def test_silent_audio_is_a_no_speech_error(models):
    node = nodes_dubbing.SpinBotTranscribe()
    silent = make_audio(np.zeros((2, 48000), np.float32), 48000)
    with pytest.raises(transcribe.TranscribeError, match="no speech in the audio: it is silent"):
        node.run(MODEL, "auto", True, audio=silent)
    hiss = make_audio(np.full((1, 16000), 1e-4, np.float32), 16000)  # -80 dBFS
    with pytest.raises(transcribe.TranscribeError, match="no speech"):
        node.run(MODEL, "auto", True, audio=hiss)


def test_unknown_language_lists_close_names(models):
    wave = speechlike(1.0, 16000, [(0.1, 0.9)])[0]
    with pytest.raises(LanguageError, match=r"unknown language 'Germna'; closest: German"):
        transcribe.transcribe(wave, transcribe.load_whisper(MODEL), "Germna")


def test_missing_model_names_folder_and_source(spinbot_dirs):
    node = nodes_dubbing.SpinBotTranscribe()
    audio = make_audio(speechlike(1.0, 16000, [(0.1, 0.9)]), 16000)
    with pytest.raises(MissingModelError) as err:
        node.run(MODEL, "auto", True, audio=audio)
    text = str(err.value)
    assert f"'{MODEL}'" in text and "'whisper'" in text
    assert "https://huggingface.co/openai/whisper-large-v3-turbo" in text
    # a folder without the model files is named as such, not a stack trace
    (spinbot_dirs["models"] / "whisper" / "broken").mkdir(parents=True)
    with pytest.raises(transcribe.TranscribeError, match="broken.*config.json.*missing"):
        node.run("broken", "auto", True, audio=audio)


def test_without_alignment_heads_word_timestamps_are_reported_unavailable(built, spinbot_dirs):
    target = spinbot_dirs["models"] / "whisper" / "no-heads"
    shutil.copytree(built / "whisper" / MODEL, target)
    config = json.loads((target / "generation_config.json").read_text())
    del config["alignment_heads"]
    (target / "generation_config.json").write_text(json.dumps(config))
    audio = make_audio(speechlike(2.0, 16000, [(0.2, 1.8)]), 16000)
    segments, _text, language, words, report = nodes_dubbing.SpinBotTranscribe().run(
        "no-heads", "German", True, audio=audio)
    check_segments(segments, 2.0)
    assert language == "de" and words == "[]"
    assert "word timestamps: unavailable" in report and "no alignment_heads" in report


def test_english_only_folder_transcribes_english_and_refuses_other_languages(built, spinbot_dirs):
    target = spinbot_dirs["models"] / "whisper" / "tiny.en"
    shutil.copytree(built / "whisper" / MODEL, target)
    config = json.loads((target / "generation_config.json").read_text())
    config["is_multilingual"] = False
    for key in ("lang_to_id", "task_to_id"):
        config.pop(key, None)
    (target / "generation_config.json").write_text(json.dumps(config))
    audio = make_audio(speechlike(2.0, 16000, [(0.2, 1.8)]), 16000)
    node = nodes_dubbing.SpinBotTranscribe()
    segments, _text, language, _words, _report = node.run("tiny.en", "auto", False, audio=audio)
    check_segments(segments, 2.0)
    assert language == "en"
    with pytest.raises(LanguageError,
                       match="'tiny.en' is an English-only model and cannot transcribe German"):
        node.run("tiny.en", "German", False, audio=audio)


def test_folder_saved_by_transformers5_without_timestamp_tokens(models):
    """whisper-small from the voice stage's factory: processor_config.json (what transformers 5's
    processor.save_pretrained writes) instead of preprocessor_config.json, no timestamp tokens and
    no alignment heads: one segment per window, and the report says words are unavailable."""
    audio = make_audio(speechlike(2.0, 16000, [(0.2, 1.8)]), 16000)
    segments, text, language, words, report = nodes_dubbing.SpinBotTranscribe().run(
        "whisper-small", "auto", True, audio=audio)
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0)] and text == segments[0].text
    assert language in ("en", "de") and words == "[]" and "unavailable" in report


def test_zero_length_segment_at_the_audios_end_is_joined_or_dropped(models, monkeypatch):
    """Seen with the random tiny Whisper: a segment with start == end == the audio's duration
    (3 s here). After another segment its words join that one; alone it gets the shortest slot
    ending there, reported (it used to come out as a 3.0-3.0 s segment that Dub Voice could not
    place)."""
    whisper = transcribe.load_whisper(MODEL)
    tok = whisper.processor.tokenizer
    begin = whisper.generation_config.no_timestamps_token_id + 1
    ts = lambda sec: begin + int(round(sec / transcribe.TIME_PRECISION))  # noqa: E731
    a, b = (tok.encode(w, add_special_tokens=False) for w in (" the", " in"))
    script: list = []
    monkeypatch.setattr(transcribe, "_decode", lambda *_args: (script.pop(0), []))
    wave = speechlike(3.0, 16000, [(0.0, 3.0)])[0]
    script.append([ts(0.0), *a, ts(1.0), ts(3.0), *b, ts(3.0)])
    result = transcribe.transcribe(wave, whisper, "en", False)
    assert [(s.index, s.start, s.end, s.text) for s in result.segments] == [(0, 0.0, 3.0, "the in")]
    script.append([ts(3.0), *b, ts(3.0)])
    wave = speechlike(3.0, 16000, [(0.0, 3.0)], seed=1)[0]  # another window: not from the cache
    result = transcribe.transcribe(wave, whisper, "en", False)
    assert [(s.index, s.start, s.end, s.text) for s in result.segments] == [(0, 2.9, 3.0, "in")]
    assert ("a segment of 0.000 s at the audio's end (3.000 s) moved to 2.900-3.000 s: 'in'"
            in result.notes)
