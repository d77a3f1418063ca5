"""ComfyUI's media conventions, in one place.

IMAGE: float32 tensor ``[B, H, W, C]`` in 0..1 (C = 3; 4 is accepted and the alpha dropped).
AUDIO: ``{"waveform": float32 [B, C, T], "sample_rate": int}``.
Frames on disk and in encoders are uint8 ``[N, H, W, 3]`` numpy arrays.
"""
from __future__ import annotations

import logging
import math
from math import gcd

import numpy as np
import torch

log = logging.getLogger("spinbot.media")


class MediaError(ValueError):
    """Input media that cannot be used, with a message for the user."""


# --------------------------------------------------------------------------- images

def check_image(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Validate an IMAGE batch and return it as contiguous float32 RGB."""
    if not isinstance(image, torch.Tensor):
        raise MediaError(f"{what}: expected an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise MediaError(f"{what}: expected IMAGE shaped [B,H,W,C] with C in 1/3/4, got {tuple(image.shape)}")
    if image.shape[0] == 0:
        raise MediaError(f"{what}: the batch has no frames")
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    return image.float().contiguous()


def images_to_uint8(image: torch.Tensor, what: str = "image", first_index: int = 0) -> np.ndarray:
    """IMAGE ``[B,H,W,C]`` (0..1) -> uint8 ``[B,H,W,3]`` numpy, rounding half up; values outside
    0..1 are clamped.

    Raises MediaError naming the frame(s) (counted from ``first_index``) that hold NaN or inf.
    """
    image = check_image(image, what)
    # A per-frame sum is NaN/inf exactly when the frame holds one: one cheap reduction instead of
    # a full boolean mask.
    finite = torch.isfinite(image.flatten(1).sum(dim=1))
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        shown = ", ".join(str(first_index + i) for i in bad[:10])
        raise MediaError(f"{what}: frame(s) {shown} contain NaN or infinite values")
    if image.device.type != "cpu":
        # On an accelerator the arithmetic is cheap; only uint8 crosses to the host.
        return image.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()
    # On the CPU one frame at a time through a reused float scratch: the chunk-wide version
    # allocates (and page-faults) a fresh float copy of the whole chunk and was 3-5x slower at
    # 1280x720 (benchmarks/bench_video_combine.py). The same float32 operations in the same order
    # give the same bytes; +0.5 then truncation rounds half up like round() on 0..255.
    src = image.numpy()
    out = np.empty(src.shape, dtype=np.uint8)
    scratch = np.empty(src.shape[1:], dtype=np.float32)
    for i in range(src.shape[0]):
        np.multiply(src[i], np.float32(255.0), out=scratch)
        scratch += np.float32(0.5)
        np.clip(scratch, 0.0, 255.0, out=scratch)
        np.copyto(out[i], scratch, casting="unsafe")
    return out


def uint8_to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> IMAGE float32 in 0..1."""
    return torch.from_numpy(np.array(frames, dtype=np.uint8)).float().div_(255.0)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column where one is odd."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return frames
    return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


# --------------------------------------------------------------------------- audio

# Integer PCM held in a tensor or array: (zero level, full scale). Signed formats are scaled by
# 1/2^(bits-1) and unsigned 8-bit is centred at 128, the conventions of WAV/AIFF PCM and of
# soundfile/libsndfile's float conversion; every value maps into -1..1 exactly, so nothing clips.
_PCM = {torch.int8: (0, 2.0 ** 7), torch.int16: (0, 2.0 ** 15), torch.int32: (0, 2.0 ** 31),
        torch.uint8: (128, 2.0 ** 7)}
_MAX_CHANNELS = 64  # more than any speaker layout (22.2 has 24): a bigger "C" is a [T,C] array


def audio_samples(waveform, what: str = "audio") -> torch.Tensor:
    """Any waveform a node may receive -> a float32 CPU tensor of the same shape, without grad.

    Accepts torch tensors (any device, ``requires_grad``, float16/bfloat16/float64, integer PCM)
    and numpy arrays or nested lists. Integer PCM is scaled to -1..1: int16 by 1/32768, int32 by
    1/2^31, int8 by 1/128, uint8 as ``(x - 128) / 128``. Float samples are never clipped.
    Raises MediaError for complex, boolean or other integer types and for tensors with no data
    (the ``meta`` device).
    """
    if not isinstance(waveform, torch.Tensor):
        try:
            array = np.asarray(waveform)
        except (TypeError, ValueError) as exc:
            raise MediaError(f"{what}: the waveform is not an array of samples ({exc})") from None
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "u" and array.dtype.itemsize > 1):
            raise MediaError(f"{what}: waveform samples of type {array.dtype} are not audio; use "
                             "float in -1..1 or int16/int32/int8/uint8 PCM")
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        waveform = torch.from_numpy(array if array.flags.writeable else array.copy())
    if waveform.device.type == "meta":
        raise MediaError(f"{what}: the waveform is on the 'meta' device and holds no samples")
    wave = waveform.detach()
    if wave.is_floating_point():
        return wave.to(device="cpu", dtype=torch.float32)
    if wave.dtype not in _PCM:
        raise MediaError(f"{what}: waveform samples of type {str(wave.dtype).replace('torch.', '')} "
                         "are not audio; use float in -1..1 or int16/int32/int8/uint8 PCM")
    zero, full_scale = _PCM[wave.dtype]
    # float64 keeps int32 exact before the one rounding to float32.
    return wave.cpu().double().sub_(zero).mul_(1.0 / full_scale).float()


def _sample_rate(value, what: str) -> int:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise MediaError(f"{what}: sample_rate must be a number of samples per second, "
                         f"got {value!r}") from None
    if not math.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise MediaError(f"{what}: sample_rate must be a positive whole number, got {value!r}")
    return int(rate)


def make_audio(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> dict:
    """Build an AUDIO dict from ``[T]``, ``[C,T]`` or ``[B,C,T]`` samples (see `audio_samples`)."""
    wave = audio_samples(waveform)
    while wave.ndim < 3:
        wave = wave.unsqueeze(0)
    return {"waveform": wave.contiguous(), "sample_rate": int(sample_rate)}


def _check_layout(channels: int, samples: int, shape: tuple, what: str) -> None:
    """MediaError when ``[C,T]`` is surely a ``[T,C]`` array: more than 64 channels, or more
    channels than samples (beyond stereo) as in a 40x2 array of two channels."""
    if channels > _MAX_CHANNELS or channels > max(samples, 2):
        raise MediaError(f"{what}: waveform {shape} would have {channels} channels of {samples} "
                         "samples, which looks transposed; AUDIO is [B,C,T] with channels before "
                         "samples (a [T,C] array must be transposed)")


def check_audio(audio: dict, what: str = "audio",
                notes: list[str] | None = None) -> tuple[torch.Tensor, int]:
    """Validate an AUDIO dict; returns ``(waveform [C,T] of the first batch item, rate)``.

    The one door through which every node reads AUDIO: ``waveform`` may be ``[B,C,T]`` (ComfyUI's
    layout), ``[C,T]`` or ``[T]``, a tensor on any device or a numpy array, in any float or PCM
    integer type (`audio_samples`); the result is always float32 on the CPU without grad.
    Raises MediaError for a missing key, no samples, a bad rate, NaN/inf samples, or a shape
    that is not audio (more than 64 "channels", or more channels than samples, means a ``[T,C]``
    array). A batch of more than one item is not an error, but the items after the first are
    ignored: that is said in ``notes`` when given, otherwise logged as a warning.
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise MediaError(f"{what}: expected an AUDIO dict with 'waveform' and 'sample_rate'")
    raw = audio["waveform"]
    if not isinstance(raw, (torch.Tensor, np.ndarray)):
        try:
            raw = np.asarray(raw)
        except (TypeError, ValueError):
            raw = None
    shape = tuple(getattr(raw, "shape", ()))
    if raw is None or len(shape) not in (1, 2, 3):
        raise MediaError(f"{what}: expected waveform [B,C,T], [C,T] or [T], got "
                         f"{shape if raw is not None else type(audio['waveform']).__name__}")
    if len(shape) == 3:
        if shape[0] == 0:
            raise MediaError(f"{what}: the waveform batch is empty, shape {shape}")
        if shape[0] > 1:
            note = (f"{what}: the waveform is a batch of {shape[0]} clips; only the first is "
                    f"used, the other {shape[0] - 1} are ignored")
            if notes is not None:
                notes.append(note)
            else:
                log.warning("%s", note)
        raw = raw[0]  # before any conversion: only the first item is used
    wave = audio_samples(raw, what)
    if wave.ndim == 1:
        wave = wave.unsqueeze(0)
    if wave.shape[0] == 0 or wave.shape[-1] == 0:
        raise MediaError(f"{what}: expected waveform [B,C,T] with samples, got {shape}")
    _check_layout(wave.shape[0], wave.shape[-1], shape, what)
    rate = _sample_rate(audio["sample_rate"], what)
    if not bool(torch.isfinite(wave).all()):
        raise MediaError(f"{what}: the waveform contains NaN or infinite samples")
    return wave, rate


def audio_duration(audio: dict) -> float:
    """Seconds of the first batch item of an AUDIO dict."""
    wave, rate = check_audio(audio)
    return wave.shape[-1] / rate


# Channel order by count: WAV's WAVEFORMATEXTENSIBLE mask order and ffmpeg's layouts of those
# names (3.0, quad, 5.0, 5.1, 6.1, 7.1), which is how LoadAudio and libsndfile deliver them.
CHANNEL_LAYOUTS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("mono", ("FC",)),
    2: ("stereo", ("FL", "FR")),
    3: ("3.0", ("FL", "FR", "FC")),
    4: ("quad", ("FL", "FR", "BL", "BR")),
    5: ("5.0", ("FL", "FR", "FC", "BL", "BR")),
    6: ("5.1", ("FL", "FR", "FC", "LFE", "BL", "BR")),
    7: ("6.1", ("FL", "FR", "FC", "LFE", "BC", "SL", "SR")),
    8: ("7.1", ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR")),
}
_MINUS_3DB = math.sqrt(0.5)
# Gain of each input channel into (left, right): ITU-R BS.775-3 Table 2 (Lo = L + 0.7071 C +
# 0.7071 Ls), which is also libswresample's default matrix (swr_build_matrix: center_mix_level
# and surround_mix_level 1/sqrt(2), lfe_mix_level 0, a back centre split at 1/sqrt(2) twice),
# un-normalised as ffmpeg applies it to float samples; the LFE is dropped.
_TO_STEREO = {"FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (_MINUS_3DB, _MINUS_3DB), "LFE": (0.0, 0.0),
              "BL": (_MINUS_3DB, 0.0), "BR": (0.0, _MINUS_3DB), "SL": (_MINUS_3DB, 0.0),
              "SR": (0.0, _MINUS_3DB), "BC": (0.5, 0.5)}
# Gain into mono: libswresample's default mono matrix (fronts 1/sqrt(2), centre 1, surrounds and
# back centre 1/2, LFE 0) times 1/sqrt(2), so that stereo -> mono is (L + R) / 2.
_TO_MONO = {"FL": 0.5, "FR": 0.5, "FC": _MINUS_3DB, "LFE": 0.0, "BL": 0.5 * _MINUS_3DB,
            "BR": 0.5 * _MINUS_3DB, "SL": 0.5 * _MINUS_3DB, "SR": 0.5 * _MINUS_3DB,
            "BC": 0.5 * _MINUS_3DB}


def downmix_matrix(have: int, channels: int) -> torch.Tensor:
    """The ``[channels, have]`` gains `mix_channels` applies (``channels`` 1 or 2, ``have`` > it).

    To stereo: the BS.775 / ffmpeg matrix of the layout named in CHANNEL_LAYOUTS. To mono:
    ffmpeg's mono matrix x 1/sqrt(2), so stereo -> mono is (L + R) / 2 exactly as ``ffmpeg -ac 1``
    to 16-bit, librosa.to_mono and the F5-TTS and Wav2Lip reference scripts do, and a centred
    (identical L/R) voice keeps its level. A count with no standard layout (9 or more) is mixed
    with equal weights. Raises ValueError for anything but a reduction to 1 or 2 channels.
    """
    if channels not in (1, 2) or have <= channels:
        raise ValueError(f"downmix_matrix: cannot mix {have} channels down to {channels}")
    if have not in CHANNEL_LAYOUTS:
        return torch.full((channels, have), 1.0 / have, dtype=torch.float64)
    labels = CHANNEL_LAYOUTS[have][1]
    if channels == 1:
        return torch.tensor([[_TO_MONO[c] for c in labels]], dtype=torch.float64)
    return torch.tensor([_TO_STEREO[c] for c in labels], dtype=torch.float64).T


def mix_channels(wave: torch.Tensor, channels: int) -> tuple[torch.Tensor, str]:
    """``[C,T]`` -> (``[channels,T]``, note); the one channel conversion of the pack.

    Downmixes by layout with `downmix_matrix` (BS.775 / ffmpeg coefficients: centre and
    surrounds at -3 dB into the fronts, LFE dropped), upmixes mono by copying it to every channel.
    When a downmix would push peaks over full scale where the input was not, the mix is lowered
    just enough to stay under it (and the note says by how much) instead of clipping later.
    The note is empty when nothing changed. Raises MediaError for other channel conversions and
    for a ``[T,C]`` array passed as ``[C,T]`` (more channels than samples, see `check_audio`).
    """
    have = wave.shape[0]
    if wave.ndim != 2:
        raise MediaError(f"audio: expected a waveform [C,T], got {tuple(wave.shape)}")
    _check_layout(have, wave.shape[-1], tuple(wave.shape), "audio")
    if have == channels:
        return wave, ""
    if have == 1:
        return wave.expand(channels, -1).contiguous(), f"audio: mono copied to {channels} channels"
    if channels not in (1, 2):
        raise MediaError(f"cannot convert {have}-channel audio to {channels} channels")
    matrix = downmix_matrix(have, channels).to(torch.float32)
    out = matrix @ wave.float()
    target = "mono" if channels == 1 else "stereo"
    if have in CHANNEL_LAYOUTS:
        name, labels = CHANNEL_LAYOUTS[have]
        how = (f"{have} channels as {name} ({' '.join(labels)})"
               + (" averaged to mono" if have == 2 else
                  f" downmixed to {target} (ITU-R BS.775: centre and surrounds at -3 dB"
                  + (", LFE dropped" if "LFE" in labels else "") + ")"))
    else:
        how = f"{have} channels (no standard layout) mixed to {target} with equal weights"
    peak_in, peak_out = float(wave.abs().max()), float(out.abs().max())
    ceiling = max(1.0, peak_in)
    if peak_out > ceiling:
        gain = ceiling / peak_out
        out = out * gain
        how += f"; lowered by {-20 * math.log10(gain):.1f} dB so its peaks stay under full scale"
    return out, "audio: " + how


def to_channels(wave: torch.Tensor, channels: int) -> torch.Tensor:
    """``[C,T]`` -> ``[channels,T]`` by `mix_channels`, without its note."""
    return mix_channels(wave, channels)[0]


def resample(wave: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    """Band-limited polyphase resampling of ``[..., T]`` (scipy, no torchaudio)."""
    if rate_in == rate_out:
        return wave
    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    out = resample_poly(wave.detach().cpu().double().numpy(), rate_out // g, rate_in // g, axis=-1)
    return torch.from_numpy(out.astype(np.float32))


def fit_length(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """Trim or zero-pad ``[C,T]`` to exactly ``samples``."""
    have = wave.shape[-1]
    if have >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - have))


def normalize_loudness(wave: torch.Tensor, rate: int, target_lufs: float,
                       peak_ceiling_db: float = -1.0) -> tuple[torch.Tensor, str]:
    """Scale ``[C,T]`` to an integrated loudness (ITU-R BS.1770 via pyloudnorm).

    When the gain would push peaks over ``peak_ceiling_db``, ffmpeg's look-ahead limiter
    (``alimiter``, latency-compensated so sync is kept) holds them under it instead of lowering
    the whole track. Returns the new waveform and a one-line report of what was done.
    """
    import pyloudnorm

    data = wave.detach().cpu().double().numpy()
    if data.shape[-1] < int(0.4 * rate):  # one BS.1770 gating block
        return wave, "loudness: clip shorter than 0.4 s, left as is"
    meter = pyloudnorm.Meter(rate)
    measured = meter.integrated_loudness(data.T)
    if not np.isfinite(measured):
        return wave, "loudness: silent audio, left as is"
    ceiling = 10 ** (peak_ceiling_db / 20)
    out, final, gain_db, note = data, measured, 0.0, ""
    # Limiting removes peak energy, so the loudness lands under the target; a second or third
    # round of gain + limiting converges on it.
    for _ in range(3):
        step_db = target_lufs - final
        if abs(step_db) < 0.1:
            break
        gain_db += step_db
        out = out * 10 ** (step_db / 20)
        if np.abs(out).max() > ceiling:
            out = limit_peaks(out, rate, ceiling)
            note = f", peaks limited to {peak_ceiling_db:.0f} dBFS"
        final = meter.integrated_loudness(out.T)
    return (torch.from_numpy(out.astype(np.float32)),
            f"loudness: {measured:.1f} LUFS -> {final:.1f} LUFS (target {target_lufs:.1f}, "
            f"gain {gain_db:+.1f} dB{note})")


def filter_audio(samples: np.ndarray, rate: int, name: str, args: str) -> np.ndarray:
    """``[C,T]`` float samples (C 1 or 2) at ``rate`` Hz through one ffmpeg audio filter
    ``name`` with options ``args`` (PyAV's filter graph, pushed in 16384-sample blocks and
    drained as it goes) -> float32 ``[C,T']``; ``T'`` is whatever the filter made (trim or pad
    it yourself). An ``aformat`` after the filter converts its output to planar float."""
    import av
    from fractions import Fraction

    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=f"1/{rate}")
    effect = graph.add(name, args)
    planar = graph.add("aformat", "sample_fmts=fltp")  # e.g. alimiter emits packed doubles
    source.link_to(effect)
    effect.link_to(planar)
    planar.link_to(graph.add("abuffersink"))
    graph.configure()
    pieces: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                pieces.append(graph.pull().to_ndarray())
            except (av.BlockingIOError, av.EOFError):
                return

    block = 1 << 14
    for start in range(0, samples.shape[1], block):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, start:start + block], dtype=np.float32),
            format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    if not pieces:
        return np.zeros((channels, 0), np.float32)
    return np.ascontiguousarray(np.concatenate(pieces, axis=1), dtype=np.float32)


def limit_peaks(samples: np.ndarray, rate: int, ceiling: float) -> np.ndarray:
    """ffmpeg's alimiter over ``[C,T]`` float samples, output aligned with the input."""
    out = filter_audio(samples, rate, "alimiter",
                       f"limit={ceiling:.6f}:attack=5:release=50:level=disabled:latency=1")
    return np.clip(out[:, :samples.shape[1]], -ceiling, ceiling)
