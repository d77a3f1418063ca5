"""SpinBot Dub Mix: the original's speech band ducked by the asked dB where speech is (measured on
the output), the background (a tone outside the speech band) kept whole outside speech and
lowered only by 'background_ducking_db' under it, never a silent bed; bad inputs named."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from spinbot.nodes import NODE_CLASS_MAPPINGS
from spinbot.nodes.dubbing import nodes_dubbing
from spinbot.nodes.media import MediaError, resample
from spinbot.nodes.script.segments import Segment

RATE = 48000
SECONDS = 6.0
SEGMENTS = [Segment(0, "Eins.", 1.0, 2.5, False), Segment(1, "Zwei.", 3.5, 5.0, False)]
SPEECH_HZ, BACKGROUND_HZ, NEW_HZ = 1000.0, 12000.0, 300.0


def _t() -> np.ndarray:
    return np.arange(int(SECONDS * RATE)) / RATE


def _in_segments(t: np.ndarray) -> np.ndarray:
    return np.any([(t >= s.start) & (t < s.end) for s in SEGMENTS], axis=0)


def original(channels: int = 1) -> tuple[dict, np.ndarray]:
    """Original speech (1 kHz, in the segments) over a background tone (12 kHz, throughout)."""
    t = _t()
    x = 0.3 * np.sin(2 * np.pi * SPEECH_HZ * t) * _in_segments(t)
    x = x + 0.1 * np.sin(2 * np.pi * BACKGROUND_HZ * t)
    wave = np.repeat(x[None].astype(np.float32), channels, axis=0)
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": RATE}, wave


def new_speech(rate: int = 24000) -> tuple[dict, np.ndarray]:
    t = np.arange(int(SECONDS * rate)) / rate
    inside = np.any([(t >= s.start) & (t < s.end) for s in SEGMENTS], axis=0)
    v = (0.2 * np.sin(2 * np.pi * NEW_HZ * t) * inside).astype(np.float32)
    return {"waveform": torch.from_numpy(v)[None, None], "sample_rate": rate}, v


def amplitude(x: np.ndarray, freq: float, a: float, b: float) -> float:
    """Amplitude of the ``freq`` component of ``x`` [T] between ``a`` and ``b`` seconds."""
    seg = x[int(a * RATE):int(b * RATE)].astype(np.float64)
    t = np.arange(len(seg)) / RATE
    return 2 * abs(np.mean(seg * np.exp(-2j * np.pi * freq * t)))


def db(ratio: float) -> float:
    return 20 * math.log10(ratio)


def test_registered():
    assert NODE_CLASS_MAPPINGS["SpinBotDubMix"] is nodes_dubbing.SpinBotDubMix
    assert nodes_dubbing.SpinBotDubMix.RETURN_TYPES == ("AUDIO", "STRING")


@pytest.mark.parametrize("channels", [1, 2])
def test_original_speech_ducked_by_the_asked_db_background_kept(channels):
    audio, x = original(channels)
    speech, v24 = new_speech()
    out, report = nodes_dubbing.SpinBotDubMix().mix(audio, speech, SEGMENTS, 24.0, 4.0, 0.05, 0.3)
    y = out["waveform"][0].numpy()
    assert out["sample_rate"] == RATE and y.shape == x.shape  # the original's length, channels
    # the bed is the output minus the new speech (resampled the same way, no limiter acted)
    v = resample(torch.from_numpy(v24)[None], 24000, RATE)[0].numpy()
    assert amplitude(y[0], NEW_HZ, 1.2, 2.3) == pytest.approx(0.2, rel=0.02)  # speech added
    for c in range(channels):
        bed = y[c] - v
        for s in SEGMENTS:  # inside the speech, clear of the ramps
            a, b = s.start + 0.1, s.end - 0.1
            drop = db(amplitude(x[c], SPEECH_HZ, a, b) / amplitude(bed, SPEECH_HZ, a, b))
            assert drop == pytest.approx(24.0, abs=1.0)
            kept = db(amplitude(bed, BACKGROUND_HZ, a, b) / 0.1)
            assert kept == pytest.approx(-4.0, abs=1.0)  # background under speech: -4 dB only
            assert 20 * math.log10(np.sqrt(np.mean(bed[int(a * RATE):int(b * RATE)] ** 2))) > -30
        for a, b in ((0.1, 0.8), (3.0, 3.4), (5.6, 5.95)):  # outside speech (past hold + ramps)
            assert db(amplitude(bed, BACKGROUND_HZ, a, b) / 0.1) == pytest.approx(0.0, abs=1.0)
            assert np.abs(bed[int(a * RATE):int(b * RATE)]
                          - x[c, int(a * RATE):int(b * RATE)]).max() < 1e-3
    dropped = float(re.search(r"original speech band dropped ([\d.]+) dB", report).group(1))
    under = float(re.search(r"background outside it under speech ([\d.]+) dB", report).group(1))
    assert dropped == pytest.approx(24.0, abs=1.0) and under == pytest.approx(4.0, abs=1.0)
    assert "original outside speech changed 0.0 dB" in report
    assert ("stereo" if channels == 2 else "mono") in report


def test_never_a_silent_bed_and_zero_reduction_keeps_the_original():
    audio, x = original()
    silent_speech = {"waveform": torch.zeros(1, 1, x.shape[-1]), "sample_rate": RATE}
    node = nodes_dubbing.SpinBotDubMix()
    out, _report = node.mix(audio, silent_speech, SEGMENTS, 0.0, 0.0, 0.05, 0.3)
    assert np.abs(out["waveform"][0].numpy() - x).max() < 1e-4  # band + rest sum back exactly
    # the deepest settings: the speech band nearly gone, the background at most 20 dB down
    out, report = node.mix(audio, silent_speech, SEGMENTS, 60.0, 20.0, 0.05, 0.3)
    y = out["waveform"][0, 0].numpy()
    assert db(amplitude(y, BACKGROUND_HZ, 1.2, 2.3) / 0.1) == pytest.approx(-20.0, abs=1.0)
    assert db(amplitude(y, SPEECH_HZ, 1.2, 2.3) / 0.3) < -50
    under = float(re.search(r"bed level: under speech (-[\d.]+) dBFS", report).group(1))
    assert under == pytest.approx(-43.0, abs=1.0)  # the 12 kHz tone (-23 dBFS RMS) less 20 dB
    with pytest.raises(MediaError, match="background_ducking_db must lie in 0..20"):
        node.mix(audio, silent_speech, SEGMENTS, 24.0, 30.0, 0.05, 0.3)


def test_stereo_centre_only_ducks_the_centred_voice_and_keeps_side_music_in_the_band():
    t = _t()
    voice = 0.3 * np.sin(2 * np.pi * SPEECH_HZ * t) * _in_segments(t)  # centred: L = R
    music = 0.1 * np.sin(2 * np.pi * 2000.0 * t)  # in the speech band, wide: L = -R
    x = np.stack([voice + music, voice - music]).astype(np.float32)
    audio = {"waveform": torch.from_numpy(x)[None], "sample_rate": RATE}
    speech = {"waveform": torch.zeros(1, 1, x.shape[-1]), "sample_rate": RATE}
    node = nodes_dubbing.SpinBotDubMix()
    centre, report = node.mix(audio, speech, SEGMENTS, 24.0, 4.0, 0.05, 0.3, centre_only=True)
    whole, _r = node.mix(audio, speech, SEGMENTS, 24.0, 4.0, 0.05, 0.3, centre_only=False)
    a, b = 1.2, 2.3
    for c in range(2):
        y, w = centre["waveform"][0, c].numpy(), whole["waveform"][0, c].numpy()
        assert db(amplitude(y, SPEECH_HZ, a, b) / 0.3) == pytest.approx(-24.0, abs=1.0)
        assert db(amplitude(y, 2000.0, a, b) / 0.1) == pytest.approx(-4.0, abs=1.0)  # kept
        assert db(amplitude(w, 2000.0, a, b) / 0.1) == pytest.approx(-24.0, abs=1.0)  # ducked
    assert "band's centre (mid)" in report
    dropped = float(re.search(r"original speech band dropped ([\d.]+) dB", report).group(1))
    assert dropped == pytest.approx(24.0, abs=1.0)


def test_bad_inputs_give_clear_errors():
    audio, x = original()
    speech, _v = new_speech()
    node = nodes_dubbing.SpinBotDubMix()
    with pytest.raises(MediaError, match="'segments' is empty"):
        node.mix(audio, speech, [], 24.0, 4.0, 0.05, 0.3)
    with pytest.raises(MediaError, match="none with a start before its end"):
        node.mix(audio, speech, [Segment(0, "x", 2.0, 2.0)], 24.0, 4.0, 0.05, 0.3)
    silent = {"waveform": torch.zeros(1, 1, x.shape[-1]), "sample_rate": RATE}
    with pytest.raises(MediaError, match="original: the audio is silent"):
        node.mix(silent, speech, SEGMENTS, 24.0, 4.0, 0.05, 0.3)
    with pytest.raises(MediaError, match="speech_reduction_db must lie in 0..60"):
        node.mix(audio, speech, SEGMENTS, -3.0, 4.0, 0.05, 0.3)
