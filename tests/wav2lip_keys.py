"""The released Wav2Lip generator's state-dict keys and shapes (``wav2lip.pth``/``wav2lip_gan.pth``,
``state_dict`` entry, ``module.`` prefix removed).

Transcribed by hand from the upstream layer list (Rudrabha/Wav2Lip models/wav2lip.py and
models/conv.py) independently of the pack's model code, so a test comparing the two catches a
mistranscribed layer. Each row is one upstream block: (``prefix``, kind, in, out, kernel).
``conv`` is conv.Conv2d (``conv_block.0`` Conv2d + ``conv_block.1`` BatchNorm2d), ``convT`` is
conv.Conv2dTranspose (same keys, weight shaped [in, out, k, k]), ``plain`` a bare nn.Conv2d.
"""
from __future__ import annotations

F, A, D = "face_encoder_blocks", "audio_encoder", "face_decoder_blocks"

RELEASE_LAYERS: list[tuple[str, str, int, int, int]] = [
    # face encoder, 96x96x6 -> 1x1x512
    (f"{F}.0.0", "conv", 6, 16, 7),
    (f"{F}.1.0", "conv", 16, 32, 3), (f"{F}.1.1", "conv", 32, 32, 3), (f"{F}.1.2", "conv", 32, 32, 3),
    (f"{F}.2.0", "conv", 32, 64, 3), (f"{F}.2.1", "conv", 64, 64, 3), (f"{F}.2.2", "conv", 64, 64, 3),
    (f"{F}.2.3", "conv", 64, 64, 3),
    (f"{F}.3.0", "conv", 64, 128, 3), (f"{F}.3.1", "conv", 128, 128, 3), (f"{F}.3.2", "conv", 128, 128, 3),
    (f"{F}.4.0", "conv", 128, 256, 3), (f"{F}.4.1", "conv", 256, 256, 3), (f"{F}.4.2", "conv", 256, 256, 3),
    (f"{F}.5.0", "conv", 256, 512, 3), (f"{F}.5.1", "conv", 512, 512, 3),
    (f"{F}.6.0", "conv", 512, 512, 3), (f"{F}.6.1", "conv", 512, 512, 1),
    # audio encoder, 80x16x1 -> 1x1x512 (13 blocks in one Sequential)
    (f"{A}.0", "conv", 1, 32, 3), (f"{A}.1", "conv", 32, 32, 3), (f"{A}.2", "conv", 32, 32, 3),
    (f"{A}.3", "conv", 32, 64, 3), (f"{A}.4", "conv", 64, 64, 3), (f"{A}.5", "conv", 64, 64, 3),
    (f"{A}.6", "conv", 64, 128, 3), (f"{A}.7", "conv", 128, 128, 3), (f"{A}.8", "conv", 128, 128, 3),
    (f"{A}.9", "conv", 128, 256, 3), (f"{A}.10", "conv", 256, 256, 3),
    (f"{A}.11", "conv", 256, 512, 3), (f"{A}.12", "conv", 512, 512, 1),
    # face decoder with skip concatenations
    (f"{D}.0.0", "conv", 512, 512, 1),
    (f"{D}.1.0", "convT", 1024, 512, 3), (f"{D}.1.1", "conv", 512, 512, 3),
    (f"{D}.2.0", "convT", 1024, 512, 3), (f"{D}.2.1", "conv", 512, 512, 3), (f"{D}.2.2", "conv", 512, 512, 3),
    (f"{D}.3.0", "convT", 768, 384, 3), (f"{D}.3.1", "conv", 384, 384, 3), (f"{D}.3.2", "conv", 384, 384, 3),
    (f"{D}.4.0", "convT", 512, 256, 3), (f"{D}.4.1", "conv", 256, 256, 3), (f"{D}.4.2", "conv", 256, 256, 3),
    (f"{D}.5.0", "convT", 320, 128, 3), (f"{D}.5.1", "conv", 128, 128, 3), (f"{D}.5.2", "conv", 128, 128, 3),
    (f"{D}.6.0", "convT", 160, 64, 3), (f"{D}.6.1", "conv", 64, 64, 3), (f"{D}.6.2", "conv", 64, 64, 3),
    # output
    ("output_block.0", "conv", 80, 32, 3),
    ("output_block.1", "plain", 32, 3, 1),
]

# Generator size in millions of parameters as published for the original model (Kim et al. 2023,
# "A Unified Compression Framework for Efficient Speech-Driven Talking-Face Generation", arXiv
# 2304.00471, which compresses it 28x): an outside check on the table's widths.
REPORTED_PARAMETERS_M = 36.3


def release_keys() -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the released generator's state dict."""
    keys: dict[str, tuple[int, ...]] = {}
    for prefix, kind, cin, cout, k in RELEASE_LAYERS:
        if kind == "plain":
            keys[f"{prefix}.weight"] = (cout, cin, k, k)
            keys[f"{prefix}.bias"] = (cout,)
            continue
        weight = (cin, cout, k, k) if kind == "convT" else (cout, cin, k, k)
        keys[f"{prefix}.conv_block.0.weight"] = weight
        keys[f"{prefix}.conv_block.0.bias"] = (cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.conv_block.1.{name}"] = (cout,)
        keys[f"{prefix}.conv_block.1.num_batches_tracked"] = ()
    return keys


def release_parameter_count() -> int:
    """Parameters implied by the table (running statistics and batch counters excluded)."""
    total = 0
    for key, shape in release_keys().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total
