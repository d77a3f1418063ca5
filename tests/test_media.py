from __future__ import annotations

import numpy as np
import pytest
import torch

from spinbot.nodes import media


def test_image_checks_and_conversions():
    assert media.check_image(torch.rand(4, 4, 3)).shape == (1, 4, 4, 3)
    assert media.check_image(torch.rand(2, 4, 4, 4)).shape == (2, 4, 4, 3)
    assert media.check_image(torch.rand(2, 4, 4, 1)).shape == (2, 4, 4, 3)
    with pytest.raises(media.MediaError, match=r"\[B,H,W,C\]"):
        media.check_image(torch.rand(2, 3, 4, 4, 5))
    frames = media.images_to_uint8(torch.tensor([[[[0.0, 0.5, 1.0]]]]))
    assert frames.dtype == np.uint8 and frames.tolist() == [[[[0, 128, 255]]]]
    back = media.uint8_to_images(frames)
    assert back.dtype == torch.float32 and back.max() == 1.0


def test_pad_to_even_replicates_edges():
    f = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(1, 3, 5, 3)
    p = media.pad_to_even(f)
    assert p.shape == (1, 4, 6, 3)
    assert (p[0, 3] == p[0, 2]).all() and (p[0, :, 5] == p[0, :, 4]).all()


def test_audio_dict_channels_and_resample():
    a = media.make_audio(np.zeros(100), 16000)
    assert a["waveform"].shape == (1, 1, 100) and a["sample_rate"] == 16000
    stereo = torch.stack([torch.ones(10), -torch.ones(10)])
    assert media.to_channels(stereo, 1).abs().max() == 0
    assert media.to_channels(torch.ones(1, 10), 2).shape == (2, 10)
    assert media.to_channels(torch.ones(6, 10), 2).shape == (2, 10)
    rate_in, rate_out = 24000, 16000
    t = torch.arange(rate_in) / rate_in
    wave = torch.sin(2 * torch.pi * 440 * t)[None]
    out = media.resample(wave, rate_in, rate_out)
    assert out.shape == (1, rate_out)
    ref = torch.sin(2 * torch.pi * 440 * torch.arange(rate_out) / rate_out)
    assert torch.allclose(out[0, 200:-200], ref[200:-200], atol=1e-3)


def test_audio_errors():
    with pytest.raises(media.MediaError, match="AUDIO dict"):
        media.check_audio({"waveform": torch.zeros(1, 1, 5)})
    with pytest.raises(media.MediaError, match="NaN"):
        media.check_audio({"waveform": torch.full((1, 1, 5), float("nan")), "sample_rate": 8000})
    with pytest.raises(media.MediaError, match="with samples"):
        media.check_audio({"waveform": torch.zeros(1, 1, 0), "sample_rate": 8000})


def test_loudness_edge_cases():
    silent, note = media.normalize_loudness(torch.zeros(1, 48000), 48000, -14.0)
    assert "silent" in note and silent.abs().max() == 0
    short, note = media.normalize_loudness(torch.ones(1, 100) * 0.1, 48000, -14.0)
    assert "shorter than 0.4 s" in note


def test_limit_peaks_keeps_sync_and_ceiling():
    rate = 24000
    t = np.arange(rate * 2) / rate
    x = (0.2 * np.sin(2 * np.pi * 150 * t))[None].repeat(2, axis=0)
    x[:, 30000:30100] = 0.95
    y = media.limit_peaks(x, rate, 0.5)
    assert y.shape == x.shape and np.abs(y).max() <= 0.5
    # far from the spike nothing moves: no delay, no gain change
    assert np.allclose(y[:, :28000], x[:, :28000], atol=1e-5)
    assert np.allclose(y[:, 40000:], x[:, 40000:], atol=1e-3)
