"""The Wav2Lip generator (Prajwal et al. 2020, github.com/Rudrabha/Wav2Lip), written from the
published architecture so the official ``wav2lip.pth`` / ``wav2lip_gan.pth`` load unchanged.

The network sees a 96x96 face crop twice, stacked into 6 channels: the crop with its lower half
blanked (the pose to keep) and a reference crop (the identity), plus 16 mel frames (0.2 s) of
audio. A U-Net face encoder, an audio encoder that collapses the mel window to one 512-d vector,
and a decoder with skip connections to every encoder stage produce the new 96x96 face.
The release was trained on OpenCV frames, so crops in and out are **BGR** in 0..1.

Attribute names follow the release keys exactly (``face_encoder_blocks.N.M.conv_block.0.weight``,
``audio_encoder.N...``, ``face_decoder_blocks``, ``output_block``), so loading is a plain
``load_state_dict`` after dropping the ``module.`` prefix that ``nn.DataParallel`` left in the
official files. Every width is a multiple of one base width (16 in the release), which the loader
reads back from the weights; the test factory uses that to write tiny models in the same layout.
"""
from __future__ import annotations

import os

import torch
from torch import nn

RELEASE_BASE_CHANNELS = 16
FACE_SIZE = 96
MEL_BINS = 80
MEL_WINDOW = 16  # mel frames per video frame window (0.2 s at 80 mel frames per second)

# The face encoder's first convolution: it names the architecture and carries the base width.
_PROBE_KEY = "face_encoder_blocks.0.0.conv_block.0.weight"


class Wav2LipLoadError(ValueError):
    """A file that is not a usable Wav2Lip checkpoint; the message names the file."""


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm + ReLU, optionally adding the input back before the ReLU
    (upstream's ``Conv2d`` in models/conv.py)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int | tuple[int, int],
                 padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBlock(nn.Module):
    """ConvTranspose2d + BatchNorm + ReLU (upstream's ``Conv2dTranspose``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int,
                 output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(ch: int, n: int) -> list[nn.Module]:
    """``n`` same-width residual 3x3 blocks."""
    return [ConvBlock(ch, ch, 3, 1, 1, residual=True) for _ in range(n)]


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """Decoder stage: x2 transposed convolution then residual blocks."""
    return nn.Sequential(ConvTransposeBlock(cin, cout, 3, 2, 1, output_padding=1), *_res(cout, n_res))


class Wav2Lip(nn.Module):
    """Wav2Lip generator; ``base_channels`` is 16 for the released models."""

    def __init__(self, base_channels: int = RELEASE_BASE_CHANNELS):
        super().__init__()
        w = int(base_channels)
        self.base_channels = w
        # Face encoder widths per stage, 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 pixels.
        f = [w, 2 * w, 4 * w, 8 * w, 16 * w, 32 * w, 32 * w]
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, f[0], 7, 1, 3)),
            nn.Sequential(ConvBlock(f[0], f[1], 3, 2, 1), *_res(f[1], 2)),
            nn.Sequential(ConvBlock(f[1], f[2], 3, 2, 1), *_res(f[2], 3)),
            nn.Sequential(ConvBlock(f[2], f[3], 3, 2, 1), *_res(f[3], 2)),
            nn.Sequential(ConvBlock(f[3], f[4], 3, 2, 1), *_res(f[4], 2)),
            nn.Sequential(ConvBlock(f[4], f[5], 3, 2, 1), *_res(f[5], 1)),
            nn.Sequential(ConvBlock(f[5], f[6], 3, 1, 0), ConvBlock(f[6], f[6], 1, 1, 0)),
        ])
        # Audio encoder: [1, 80, 16] mel window -> [32w, 1, 1], the same size as the face bottleneck.
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 2 * w, 3, 1, 1), *_res(2 * w, 2),
            ConvBlock(2 * w, 4 * w, 3, (3, 1), 1), *_res(4 * w, 2),
            ConvBlock(4 * w, 8 * w, 3, 3, 1), *_res(8 * w, 2),
            ConvBlock(8 * w, 16 * w, 3, (3, 2), 1), *_res(16 * w, 1),
            ConvBlock(16 * w, 32 * w, 3, 1, 0),
            ConvBlock(32 * w, 32 * w, 1, 1, 0),
        )
        # Decoder: each stage's output is concatenated with the encoder feature of the same size,
        # so every input width is (previous decoder width + skip width).
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(32 * w, 32 * w, 1, 1, 0)),
            nn.Sequential(ConvTransposeBlock(64 * w, 32 * w, 3, 1, 0), *_res(32 * w, 1)),  # 3x3
            _up(64 * w, 32 * w, 2),  # 6x6
            _up(48 * w, 24 * w, 2),  # 12x12
            _up(32 * w, 16 * w, 2),  # 24x24
            _up(20 * w, 8 * w, 2),   # 48x48
            _up(10 * w, 4 * w, 2),   # 96x96
        ])
        self.output_block = nn.Sequential(ConvBlock(5 * w, 2 * w, 3, 1, 1),
                                          nn.Conv2d(2 * w, 3, kernel_size=1, stride=1, padding=0),
                                          nn.Sigmoid())

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """``audio [B,1,80,16]`` + ``faces [B,6,96,96]`` -> ``[B,3,96,96]`` in 0..1 (BGR).

        The training form ``audio [B,T,1,80,16]`` + ``faces [B,6,T,96,96]`` -> ``[B,3,T,96,96]``
        is accepted too.
        """
        time_batched = face_sequences.ndim == 5
        if time_batched:
            batch, steps = face_sequences.shape[0], face_sequences.shape[2]
            audio_sequences = audio_sequences.transpose(0, 1).reshape(-1, *audio_sequences.shape[2:])
            face_sequences = face_sequences.permute(2, 0, 1, 3, 4).reshape(
                -1, face_sequences.shape[1], *face_sequences.shape[3:])

        x = self.audio_encoder(audio_sequences)
        skips = []
        feat = face_sequences
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        out = self.output_block(x)

        if time_batched:
            out = out.reshape(steps, batch, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return out


# --------------------------------------------------------------------------- loading

def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise Wav2LipLoadError(f"Wav2Lip checkpoint not found: {path}")
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            raw = load_file(path, device="cpu")
        else:
            # The releases are torch.save'd dicts of tensors, ints and the Adam state: all plain
            # types the restricted unpickler accepts.
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise Wav2LipLoadError(f"{name}: cannot be read as a Wav2Lip checkpoint "
                               f"({type(exc).__name__}: {detail})") from exc
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]  # the official training-checkpoint layout
    if not isinstance(raw, dict) or not raw or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise Wav2LipLoadError(f"{name}: not a Wav2Lip checkpoint (expected a state dict, "
                               f"or a dict with 'state_dict', of tensors)")
    # nn.DataParallel prefixed every key with "module." in the released files.
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}


def _list(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_wav2lip(path: str, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> Wav2Lip:
    """Load an official ``.pth`` or a ``.safetensors`` conversion into an eval-mode `Wav2Lip`.

    The width is read from the weights, so full-size releases and the tiny test models share
    this path. Anything that is not exactly the Wav2Lip generator raises `Wav2LipLoadError`.
    """
    name = os.path.basename(path)
    state = _read_state_dict(path)
    probe = state.get(_PROBE_KEY)
    if probe is None or probe.ndim != 4 or probe.shape[1] != 6 or probe.shape[2:] != (7, 7):
        raise Wav2LipLoadError(f"{name}: not a Wav2Lip generator checkpoint (no {_PROBE_KEY} "
                               f"shaped [width, 6, 7, 7]; a SyncNet or discriminator file?)")
    with torch.device("meta"):
        model = Wav2Lip(base_channels=int(probe.shape[0]))
    expected = model.state_dict()
    # BatchNorm's batch counter is unused in eval; tolerate files saved without it.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=value.dtype)
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
             for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_list(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}")
        if wrong:
            problems.append(f"{len(wrong)} wrong shapes: {_list(wrong, 3)}")
        raise Wav2LipLoadError(f"{name}: does not match the Wav2Lip architecture "
                               f"(base width {model.base_channels}): " + "; ".join(problems))
    dtype = dtype or torch.float32
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device=device or "cpu")
    return model.eval().requires_grad_(False)
