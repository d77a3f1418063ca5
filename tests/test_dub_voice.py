"""SpinBot Dub Voice on the tiny F5-TTS/Vocos: translated segments spoken in a voice cut from the
original audio, each starting at its original start, fitted to its slot (F5 duration, then
atempo), on a track exactly as long as the original; over-bound segments reported; a re-run after
Cancel synthesizes only the unfinished segments."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinbot.nodes import NODE_CLASS_MAPPINGS, runtime
from spinbot.nodes.dubbing import nodes_dubbing, voice_fit
from spinbot.nodes.media import MediaError
from spinbot.nodes.script.segments import Segment
from spinbot.nodes.voice import nodes_voice
from spinbot.nodes.voice.profiles import VoiceError
from tests import factory

RATE = 24000
FRAME = 1 / 25  # one video frame at 25 fps
ORIGINAL = [Segment(0, "Hello there, my friend.", 0.5, 2.5, False),
            Segment(1, "How are you today?", 3.0, 5.0, False),
            Segment(2, "Fine, thanks.", 5.5, 7.0, False)]
# Same times, translated text; the second is far too long for its 2 s slot.
TRANSLATED = [Segment(0, "Hallo da, mein Freund.", 0.5, 2.5, False),
              Segment(1, "Wie geht es dir heute? Dieser Satz ist viel zu lang fuer die Luecke.",
                      3.0, 5.0, False),
              Segment(2, "Gut, danke.", 5.5, 7.0, False)]
ARGS = dict(model=nodes_voice.DEFAULT_F5, vocoder=nodes_voice.DEFAULT_VOCODER, nfe_steps=4,
            cfg_strength=2.0, sway_sampling=-1.0, seed=0, max_speed_change=1.3,
            max_tempo_change=1.25)


@pytest.fixture
def tts_models(spinbot_dirs):
    factory.build(spinbot_dirs["models"], only=["tts"])


def speechlike(seconds: float, spans, rate: int = RATE, noise: float = 0.003,
               noisy_spans=(), seed: int = 0) -> np.ndarray:
    """A 180 Hz voice-like tone in 4 Hz syllables inside ``spans`` (start, end), faint noise
    everywhere and loud noise (amplitude 0.2) in ``noisy_spans``; float32 [T]."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    x = noise * rng.standard_normal(t.shape)
    syllables = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    for a, b in spans:
        m = (t >= a) & (t < b)
        x[m] += syllables[m]
    for a, b in noisy_spans:
        m = (t >= a) & (t < b)
        x[m] += 0.2 * rng.standard_normal(int(m.sum()))
    return x.astype(np.float32)


def as_audio(x: np.ndarray, rate: int = RATE) -> dict:
    return {"waveform": torch.from_numpy(x)[None, None], "sample_rate": rate}


def original_audio(seconds: float = 8.0, rate: int = RATE) -> dict:
    return as_audio(speechlike(seconds, [(s.start, s.end) for s in ORIGINAL], rate), rate)


def onset(x: np.ndarray, rate: int, after: float, frame: float = 0.005) -> float:
    """Start of the first 5 ms frame from ``after`` on with sound in it."""
    hop = int(frame * rate)
    a = int(round(after * rate))
    for k in range(a, len(x) - hop, hop):
        if np.sqrt(np.mean(x[k:k + hop] ** 2)) > 1e-4:
            return k / rate
    return float("inf")


def test_registered_with_its_outputs():
    assert NODE_CLASS_MAPPINGS["SpinBotDubVoice"] is nodes_dubbing.SpinBotDubVoice
    assert nodes_dubbing.SpinBotDubVoice.RETURN_TYPES == ("AUDIO", "SPINBOT_SEGMENTS", "STRING")


def test_segments_start_on_time_fit_their_slots_and_over_bound_is_reported(tts_models):
    audio = original_audio(8.0, 48000)  # a video's rate: the output keeps it
    speech, timed, report = nodes_dubbing.SpinBotDubVoice().speak(
        TRANSLATED, audio, original_segments=ORIGINAL, **ARGS)
    wave = speech["waveform"]
    assert speech["sample_rate"] == 48000
    assert wave.shape == (1, 1, audio["waveform"].shape[-1])  # exactly the original's length
    x = wave[0, 0].numpy()
    assert [s.text for s in timed] == [s.text for s in TRANSLATED]
    prev_end = 0.0
    for seg, got in zip(TRANSLATED, timed):
        assert abs(got.start - seg.start) <= 1 / 48000
        assert not got.estimated
        # measured on the samples: silence before, speech from the original start on
        assert np.abs(x[round(prev_end * 48000):round(seg.start * 48000)]).max(initial=0) == 0
        assert abs(onset(x, 48000, prev_end) - seg.start) <= FRAME, seg
        prev_end = got.end
    # 1 and 3 fit their slots (F5 duration + tempo); 2 needs ~3x, over 1.3 x 1.25: reported,
    # overruns the 0.5 s gap and is cut exactly at segment 3's start
    for k in (0, 2):
        assert abs(timed[k].duration - TRANSLATED[k].duration) <= FRAME, (timed[k], report)
    assert timed[1].end == pytest.approx(TRANSLATED[2].start, abs=1 / 48000)
    assert "over the bound: 1 segment(s): #2" in report
    line2 = [ln for ln in report.splitlines() if ln.strip().startswith("#2 ")][0]
    assert "over the bound: needs" in line2 and "cut" in line2
    assert "over the bound" not in [ln for ln in report.splitlines()
                                    if ln.strip().startswith("#1 ")][0]
    assert "cut from the original audio" in report and "Hello there, my friend." in report


def test_atempo_keeps_pitch_and_changes_duration_by_the_factor():
    rate = 24000
    t = np.arange(int(3.5 * rate)) / rate
    # two 440 Hz bursts whose onsets are 2 s apart: onset to onset is immune to the edge smear
    # of the overlap-add windows
    bursts = ((t >= 0.5) & (t < 1.0)) | ((t >= 2.5) & (t < 3.0))
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * bursts).astype(np.float32)
    for factor in (1.25, 0.8):
        y = voice_fit.atempo(x, rate, factor)
        assert len(y) == round(len(x) / factor)
        loud = np.abs(y) > 0.1
        first = int(np.argmax(loud))
        gap_end = first + int(0.9 / factor * rate)  # past the first burst, before the second
        second = gap_end + int(np.argmax(loud[gap_end:]))
        assert (second - first) / rate == pytest.approx(2.0 / factor, rel=0.01)
        mid = y[first + 1200:first + int(0.5 / factor * rate) - 1200]
        spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=1 << 20))
        freq = np.argmax(spectrum) * rate / (1 << 20)
        assert freq == pytest.approx(440, rel=0.01)  # pitch kept
    with pytest.raises(ValueError, match="outside 0.5..2"):
        voice_fit.atempo(x, rate, 2.5)


def test_reference_cut_picks_the_clean_stretch():
    # two runs of segments 2 s apart (never joined): 0-6 s under loud noise, 8-14 s clean
    segs = [Segment(0, "noisy one", 0.2, 2.8), Segment(1, "noisy two", 3.2, 5.8),
            Segment(2, "clean one", 8.2, 10.8), Segment(3, "clean two", 11.2, 13.8)]
    x = speechlike(15.0, [(s.start, s.end) for s in segs], noisy_spans=[(0.0, 6.5)])
    a, b, text, snr = voice_fit.pick_reference(x, RATE, segs)
    assert text == "clean one clean two"
    assert 7.9 <= a <= 8.2 and 13.8 <= b <= 14.1
    noisy_snr, _ = voice_fit.stretch_snr_db(x[int(0.2 * RATE):int(5.8 * RATE)], RATE)
    assert snr > noisy_snr + 20  # measured: the clean stretch is far cleaner
    # the same audio with the noise moved onto the second run: the choice follows it
    y = speechlike(15.0, [(s.start, s.end) for s in segs], noisy_spans=[(7.5, 14.5)])
    assert voice_fit.pick_reference(y, RATE, segs)[2] == "noisy one noisy two"
    # short sentences 1.2 s apart (no 3 s run within 1 s gaps): joined across the pauses
    short = [Segment(k, f"s{k}", 0.5 + 4.0 * k, 3.3 + 4.0 * k) for k in range(4)]
    z = speechlike(16.0, [(s.start, s.end) for s in short])
    a, b, text, _snr = voice_fit.pick_reference(z, RATE, short)
    assert len(text.split()) >= 2 and b - a <= 12.0


def test_resume_after_cancel_redoes_only_unfinished_segments(tts_models, monkeypatch):
    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        "Hello there, my friend.", nodes_voice.NO_PROFILE, "", False, 12.0,
        as_audio(speechlike(2.6, [(0.2, 2.4)])))
    segs = [Segment(k, f"Sentence number {k}.", 0.5 + 1.5 * k, 1.7 + 1.5 * k, False)
            for k in range(4)]
    args = dict(ARGS, cfg_strength=0.0)  # one model pass per step: this test counts, not listens
    audio = as_audio(speechlike(7.0, [(s.start, s.end) for s in segs]))
    real = voice_fit.engine.synthesize_pieces
    calls = []
    stop_after = [2]

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(args[4][0].text)
        if len(calls) == stop_after[0]:
            runtime.request_interrupt()  # the Cancel button, after the 2nd segment finished
        return out

    monkeypatch.setattr(voice_fit.engine, "synthesize_pieces", counting)
    node = nodes_dubbing.SpinBotDubVoice()
    with pytest.raises(runtime.Interrupted):
        node.speak(segs, audio, voice=voice, **args)
    assert calls == ["Sentence number 0.", "Sentence number 1."]
    stop_after[0] = -1
    bars = []

    class Recording(runtime.Progress):
        def __init__(self, total, desc="SpinBot"):
            super().__init__(total, desc)
            self.seen = []
            bars.append(self)

        def update(self, n=1, preview=None):
            super().update(n, preview)
            self.seen.append(self.current)

    monkeypatch.setattr(runtime, "Progress", Recording)
    speech, timed, report = node.speak(segs, audio, voice=voice, **args)
    # one bar: the reused segments count at once, the others per sampling step, ending full
    assert len(bars) == 1 and bars[0].seen[-1] == bars[0].total == 4 * args["nfe_steps"]
    assert bars[0].seen == sorted(bars[0].seen) and len(bars[0].seen) >= 2 * args["nfe_steps"]
    assert calls[2:] == ["Sentence number 2.", "Sentence number 3."]  # only the unfinished two
    assert "reused from cache: 2 of 4 segments" in report
    assert "voice profile" in report
    again, _t2, report2 = node.speak(segs, audio, voice=voice, **args)
    assert len(calls) == 4 and "reused from cache: 4 of 4" in report2
    assert torch.equal(again["waveform"], speech["waveform"])
    # a changed text is a new key: only that segment is spoken again
    changed = [segs[0], segs[1], Segment(2, "Another sentence here.", segs[2].start, segs[2].end,
                                         False), segs[3]]
    node.speak(changed, audio, voice=voice, **args)
    assert calls[4:] == ["Another sentence here."]


def test_bad_inputs_give_clear_errors(tts_models):
    node = nodes_dubbing.SpinBotDubVoice()
    audio = original_audio()
    with pytest.raises(MediaError, match="segments: no segments with text"):
        node.speak([], audio, original_segments=ORIGINAL, **ARGS)
    with pytest.raises(MediaError, match="segments: no segments with text"):
        node.speak([Segment(0, "  ", 0.5, 1.0)], audio, original_segments=ORIGINAL, **ARGS)
    silent = as_audio(np.zeros(8 * RATE, np.float32))
    with pytest.raises(VoiceError, match="original audio is silent"):
        node.speak(TRANSLATED, silent, original_segments=ORIGINAL, **ARGS)
    voice, _a, _t = nodes_voice.SpinBotVoiceProfile().build(
        "Hello there.", nodes_voice.NO_PROFILE, "", False, 12.0,
        as_audio(speechlike(4.0, [(0.2, 3.8)])))
    with pytest.raises(VoiceError, match="original audio is silent"):  # a profile: still nothing
        node.speak(TRANSLATED, silent, voice=voice, **ARGS)
    short = [Segment(0, "Hi.", 0.5, 1.5), Segment(1, "Yes.", 5.0, 6.0)]  # 1 s each, 3.5 s apart
    with pytest.raises(VoiceError, match="no stretch of the original speech lasts"):
        node.speak(short, audio, original_segments=short, **ARGS)
    late = TRANSLATED[:2] + [Segment(2, "Zu spaet.", 9.0, 10.0)]
    with pytest.raises(MediaError, match=r"segment 3 \('Zu spaet.'\) starts at 9.000 s, outside"):
        node.speak(late, audio, original_segments=ORIGINAL, **ARGS)
    foreign = TRANSLATED[:1] + [Segment(1, "Привет, как дела?", 3.0, 5.0)]  # not in the vocab
    with pytest.raises(VoiceError, match=r"F5-TTS cannot say segment 2 \('Привет"):
        node.speak(foreign, audio, original_segments=ORIGINAL, **ARGS)
    # no transcript of the reference and no Whisper installed: says what to connect
    with pytest.raises(VoiceError, match="no Whisper model is installed"):
        node.speak(TRANSLATED, audio, **ARGS)


def test_zero_length_segment_at_the_audios_end_is_skipped_with_a_report_line(tts_models):
    """Transcribe of a random tiny Whisper gave a segment with start == end == the audio's
    duration; Dub Voice stopped with "segment 2 ... has no slot". Nothing can be spoken in it:
    it is skipped and reported, the others are spoken; a reversed one is still an error."""
    node = nodes_dubbing.SpinBotDubVoice()
    audio = original_audio(8.0)
    segs = [TRANSLATED[0], Segment(1, "Ende.", 8.0, 8.0, False)]
    speech, timed, report = node.speak(segs, audio, original_segments=ORIGINAL, **ARGS)
    assert speech["waveform"].shape[-1] == audio["waveform"].shape[-1]
    assert [s.text for s in timed] == [TRANSLATED[0].text]
    assert "segment 2 ('Ende.') skipped: zero length at 8.000 s" in report
    assert np.abs(speech["waveform"][0, 0, int(3.0 * RATE):].numpy()).max() == 0
    with pytest.raises(MediaError, match="none of the 1 segments has a length"):
        node.speak(segs[1:], audio, original_segments=ORIGINAL, **ARGS)
    with pytest.raises(MediaError, match=r"segment 2 \('Ende.'\) has no slot: start 3.0 s, "
                                         r"end 2.0 s"):
        node.speak([TRANSLATED[0], Segment(1, "Ende.", 3.0, 2.0)], audio,
                   original_segments=ORIGINAL, **ARGS)
