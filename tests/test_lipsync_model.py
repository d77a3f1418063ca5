"""Wav2Lip model and audio features: release key layout, loading of the official .pth structure and
safetensors conversions, clear errors for wrong files, output shape/range, the official mel
(parity with a straight librosa/scipy transcription of Wav2Lip's audio.py), per-frame mel windows
as in inference.py, and audio preparation."""
from __future__ import annotations

import math
import pickle
import zipfile

import numpy as np
import pytest
import torch

from spinbot.nodes.lipsync import audio as lipaudio
from spinbot.nodes.lipsync.audio import frame_count, mel_chunks, prepare_audio, wav2lip_mel
from spinbot.nodes.lipsync.wav2lip import Wav2Lip, Wav2LipLoadError, load_wav2lip
from spinbot.nodes.media import MediaError, make_audio
from tests import factory
from tests.factory_lipsync import TINY_BASE_CHANNELS, train_tiny_wav2lip, write_safetensors
from tests.wav2lip_keys import REPORTED_PARAMETERS_M, release_keys, release_parameter_count


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_wav2lip")
    factory.build(out, only=["lipsync"])
    return out / "lipsync"


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 80, 16, generator=gen) * 2, torch.rand(batch, 6, 96, 96, generator=gen)


def official_dict(state: dict, optimizer=None) -> dict:
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": optimizer,
            "global_step": 1, "global_epoch": 1}


# --------------------------------------------------------------------------- architecture / keys

def test_full_size_model_has_the_release_keys_and_shapes():
    with torch.device("meta"):
        model = Wav2Lip()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    published = release_keys()
    assert sorted(ours) == sorted(published)
    assert {k: s for k, s in ours.items() if published[k] != s} == {}
    params = sum(p.numel() for p in model.parameters())
    assert params == release_parameter_count()
    assert round(params / 1e6, 1) == REPORTED_PARAMETERS_M


def test_release_key_names_load_at_full_size(tmp_path):
    # Full-size tensors as stride-0 views of one element: the file stays tiny (torch.save keeps
    # only the one-element storages) while every key and shape is the release's.
    state = {k: (torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked")
                 else torch.full((1,), 0.01).expand(shape) if shape else torch.zeros(()))
             for k, shape in release_keys().items()}
    path = tmp_path / "wav2lip_gan.pth"
    torch.save(official_dict(state), path, _use_new_zipfile_serialization=False)
    assert path.stat().st_size < 2_000_000
    model = load_wav2lip(str(path))
    assert model.base_channels == 16 and not model.training
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == release_keys()


def test_full_size_forward_shapes_and_time_batched_form():
    torch.manual_seed(0)
    model = Wav2Lip().eval()
    audio, faces = inputs(1)
    with torch.no_grad():
        out = model(audio, faces)
        # Upstream's training form: audio [B,T,1,80,16], faces [B,6,T,96,96] -> [B,3,T,96,96].
        out_t = model(torch.stack([audio, audio.flip(-1)], dim=1), torch.stack([faces, faces], dim=2))
        other = model(audio.flip(-1), faces)
    assert out.shape == (1, 3, 96, 96) and out_t.shape == (1, 3, 2, 96, 96)
    torch.testing.assert_close(out_t[:, :, 0], out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_t[:, :, 1], other, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- loading

def test_factory_writes_the_official_checkpoint_structure(built):
    assert sorted(p.name for p in built.iterdir()) == [
        "wav2lip.pth", "wav2lip_gan.pth", "wav2lip_gan.safetensors"]
    for name in ("wav2lip.pth", "wav2lip_gan.pth"):
        path = built / name
        assert not zipfile.is_zipfile(path)  # legacy torch.save format, like the torch 1.1 releases
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert sorted(raw) == ["global_epoch", "global_step", "optimizer", "state_dict"]
        assert isinstance(raw["global_step"], int) and sorted(raw["optimizer"]) == ["param_groups", "state"]
        assert all(k.startswith("module.") for k in raw["state_dict"])
        stripped = {k[len("module."):]: tuple(v.shape) for k, v in raw["state_dict"].items()}
        with torch.device("meta"):
            tiny = Wav2Lip(TINY_BASE_CHANNELS)
        assert stripped == {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
        assert sorted(stripped) == sorted(release_keys())
        # BatchNorm statistics come from training-mode batches, not the 0/1 defaults.
        assert raw["state_dict"]["module.face_encoder_blocks.0.0.conv_block.1.running_var"].ne(1).all()


def test_pth_and_safetensors_load_to_the_same_model(built, tmp_path):
    audio, faces = inputs(3)
    from_pth = load_wav2lip(str(built / "wav2lip_gan.pth"))
    from_st = load_wav2lip(str(built / "wav2lip_gan.safetensors"))
    prefixed = write_safetensors(tmp_path / "prefixed.safetensors", from_pth, prefix="module.")
    from_prefixed = load_wav2lip(str(prefixed))
    with torch.no_grad():
        expected = from_pth(audio, faces)
        assert torch.equal(from_st(audio, faces), expected)
        assert torch.equal(from_prefixed(audio, faces), expected)
        other = load_wav2lip(str(built / "wav2lip.pth"))(audio, faces)
    assert expected.shape == (3, 3, 96, 96) and expected.dtype == torch.float32
    assert 0.0 <= expected.min() and expected.max() <= 1.0
    assert expected.std() > 0.05  # varied output, not a saturated or flat sigmoid
    assert (other - expected).abs().mean() > 0.01  # the two releases are different weights


def test_loaded_model_is_eval_frozen_and_casts(built):
    model = load_wav2lip(str(built / "wav2lip.pth"), device="cpu", dtype=torch.bfloat16)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.face_encoder_blocks[0][0].conv_block[0].weight.dtype == torch.bfloat16
    assert model.face_encoder_blocks[0][0].conv_block[1].num_batches_tracked.dtype == torch.long
    audio, faces = inputs(2, seed=1)
    reference = load_wav2lip(str(built / "wav2lip.pth"))
    with torch.no_grad():
        half = model(audio.bfloat16(), faces.bfloat16()).float()
        full = reference(audio, faces)
    assert (half - full).abs().mean() < 0.03
    # Eval mode uses the stored BatchNorm statistics: the same input gives the same output
    # whatever else is in the batch.
    with torch.no_grad():
        alone = reference(audio[:1], faces[:1])
    torch.testing.assert_close(alone, full[:1], rtol=1e-5, atol=1e-5)


def test_files_without_batch_counters_still_load(tmp_path):
    model, _ = train_tiny_wav2lip(seed=62)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wav2lip.pth"
    torch.save(official_dict(state), path)
    audio, faces = inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(load_wav2lip(str(path))(audio, faces), model(audio, faces))


def _tiny_state() -> dict[str, torch.Tensor]:
    with torch.device("cpu"):
        return {k: v.clone() for k, v in Wav2Lip(TINY_BASE_CHANNELS).state_dict().items()}


@pytest.mark.parametrize("case", ["garbage", "empty_safetensors", "syncnet", "missing", "unexpected",
                                  "wrong_shape", "not_a_dict", "foreign_pickle", "absent"])
def test_bad_files_raise_clear_errors(tmp_path, case):
    from safetensors.torch import save_file

    path = tmp_path / f"bad_{case}.pth"
    expect = "cannot be read"
    if case == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif case == "empty_safetensors":
        path = tmp_path / "bad_empty.safetensors"
        path.write_bytes(b"\x00" * 16)
    elif case == "syncnet":  # the lip-sync expert's keys (face_encoder / audio_encoder)
        path = tmp_path / "bad_syncnet.safetensors"
        save_file({"face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
                   "audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3)}, str(path))
        expect = "not a Wav2Lip generator"
    elif case == "missing":
        state = _tiny_state()
        del state["output_block.1.bias"]
        torch.save(official_dict(state), path)
        expect = "1 missing keys: output_block.1.bias"
    elif case == "unexpected":
        state = _tiny_state()
        state["output_block.2.weight"] = torch.zeros(3)
        torch.save(official_dict(state), path)
        expect = "1 unexpected keys: output_block.2.weight"
    elif case == "wrong_shape":
        state = _tiny_state()
        state["audio_encoder.12.conv_block.0.weight"] = torch.zeros(32, 32, 3, 3)
        torch.save(official_dict(state), path)
        expect = "wrong shapes: audio_encoder.12.conv_block.0.weight (32, 32, 3, 3) != (32, 32, 1, 1)"
    elif case == "not_a_dict":
        torch.save([torch.zeros(3)], path)
        expect = "expected a state dict"
    elif case == "foreign_pickle":  # arbitrary objects are refused by weights_only loading
        payload = {"state_dict": {"x": complex(1, 2)}, "cls": Wav2LipLoadError}
        path.write_bytes(pickle.dumps(payload, protocol=2))
    elif case == "absent":
        expect = "not found"
    with pytest.raises(Wav2LipLoadError) as info:
        load_wav2lip(str(path))
    assert isinstance(info.value, ValueError)
    assert path.name in str(info.value) and expect in str(info.value)


# --------------------------------------------------------------------------- mel

def _test_wave(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like signal: an amplitude-modulated harmonic series with a glide, noise,
    and a silent gap (exercises the -100 dB floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    wave = 0.2 * wave + 0.01 * rng.standard_normal(t.size)
    wave[int(0.5 * 16000):int(0.8 * 16000)] = 0.0
    return wave.astype(np.float32)


def _reference_mel(wave: np.ndarray) -> np.ndarray:
    """Wav2Lip audio.melspectrogram with hparams.py, through librosa and scipy as upstream calls
    them (librosa 0.7's stft padded with 'reflect'; newer librosa needs it spelled out)."""
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    emphasised = signal.lfilter([1, -0.97], [1], wave)
    spec = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800,
                               pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(np.exp(-100 / 20 * np.log(10)), basis @ spec)) - 20
    return np.clip((2 * 4.0) * ((db + 100) / 100) - 4.0, -4.0, 4.0)


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    ours = lipaudio.mel_filterbank()
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, basis, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seconds", [2.0, 0.7123])
def test_mel_matches_the_published_formula(seconds):
    wave = _test_wave(seconds)
    mel = wav2lip_mel(wave)
    reference = _reference_mel(wave)
    assert mel.dtype == np.float32 and mel.shape == (80, 1 + len(wave) // 200) == reference.shape
    # Tolerance: 1e-4 on the -4..4 scale (0.00125 dB); the two differ only in float rounding.
    np.testing.assert_allclose(mel, reference, rtol=0, atol=1e-4)
    assert mel.min() == -4.0  # the silent gap sits on the floor
    assert -4.0 <= mel.min() and mel.max() <= 4.0 and mel.std() > 0.5


def test_mel_frame_rate_is_80_per_second():
    for samples in (16000, 16199, 16200, 800):
        assert wav2lip_mel(np.zeros(samples, np.float32)).shape == (80, 1 + samples // 200)
    assert np.all(wav2lip_mel(np.zeros(4000, np.float32)) == -4.0)
    with pytest.raises(ValueError):
        wav2lip_mel(np.zeros(0, np.float32))


# --------------------------------------------------------------------------- mel windows

def _upstream_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """inference.py's loop, transcribed."""
    chunks, step, i = [], 80.0 / fps, 0
    while True:
        start_idx = int(i * step)
        if start_idx + 16 > len(mel[0]):
            chunks.append(mel[:, len(mel[0]) - 16:])
            break
        chunks.append(mel[:, start_idx:start_idx + 16])
        i += 1
    return chunks


@pytest.mark.parametrize("fps", [25.0, 30.0, 29.97, 24.0])
def test_mel_chunks_follow_the_official_indexing(fps):
    seconds = 3.0
    mel = np.arange(80 * (1 + int(seconds * 80)), dtype=np.float32).reshape(80, -1)
    frames = frame_count(seconds, fps)
    chunks = mel_chunks(mel, fps, frames)
    assert chunks.shape == (frames, 80, 16) and chunks.dtype == np.float32
    upstream = _upstream_chunks(mel, fps)
    assert len(upstream) <= frames
    for i, expected in enumerate(upstream):
        np.testing.assert_array_equal(chunks[i], expected)
    for i in range(len(upstream), frames):  # past upstream's end: the last window, repeated
        np.testing.assert_array_equal(chunks[i], mel[:, -16:])
    starts = chunks[:, 0, 0].astype(int)
    if fps == 25.0:
        assert starts[:6].tolist() == [0, 3, 6, 9, 12, 16] and starts[10] == 32
    if fps == 30.0:
        assert starts[:7].tolist() == [0, 2, 5, 8, 10, 13, 16]
    assert np.all(np.diff(starts) >= 0)


def test_mel_chunks_pad_short_audio_and_clamp():
    mel = np.zeros((80, 10), np.float32)
    chunks = mel_chunks(mel, 25, 3)
    assert chunks.shape == (3, 80, 16)
    assert np.all(chunks[:, :, :10] == 0) and np.all(chunks[:, :, 10:] == -4.0)
    assert mel_chunks(np.zeros((80, 40), np.float32), 25, 0).shape == (0, 80, 16)
    for bad in [(np.zeros((40, 80)), 25, 1), (np.zeros((80, 40)), 0, 1), (np.zeros((80, 40)), 25, -1)]:
        with pytest.raises(ValueError):
            mel_chunks(*bad)


def test_frame_count_is_ceil_robust_to_float_noise():
    assert frame_count(3.0, 25) == 75
    assert frame_count(3.0 + 1e-12, 25) == 75
    assert frame_count(0.1 + 0.2, 10) == 3  # 3.0000000000000004
    assert frame_count(3.01, 25) == 76
    assert frame_count(2.0, 29.97) == 60  # 59.94
    assert frame_count(1001 / 30000 * 90, 30000 / 1001) == 90
    assert frame_count(0.0, 25) == 0
    with pytest.raises(ValueError):
        frame_count(1.0, 0)


# --------------------------------------------------------------------------- audio preparation

def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_prepare_audio_gives_mono_16k(rate, channels):
    tone = _tone(rate, 1.5)
    wave = np.stack([tone] * channels)
    out = prepare_audio(make_audio(wave, rate))
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 24000) <= 1
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[2000:-2000])
    assert abs(peak_hz - 440) < 2
    assert abs(np.abs(out[2000:-2000]).max() - 0.5) < 0.02
    if rate == 16000:
        np.testing.assert_allclose(out, tone, atol=1e-6)


def test_prepare_audio_downmixes_and_takes_the_first_batch_item():
    left, right = _tone(16000, 0.5, 300), _tone(16000, 0.5, 700)
    batch = np.stack([np.stack([left, right]), np.zeros((2, left.size), np.float32)])
    out = prepare_audio({"waveform": torch.from_numpy(batch), "sample_rate": 16000})
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)
    with pytest.raises(MediaError):
        prepare_audio({"waveform": torch.full((1, 1, 100), math.nan), "sample_rate": 16000})
    with pytest.raises(MediaError):
        prepare_audio({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})
