"""RIFE checkpoints from the ``frame_interpolation`` model folder.

The layout is read from the keys (see `detect_config`): the ``encode.*`` head tells 4.6 (none),
4.7/4.9 (``encode.0``/``encode.1``) and 4.17 (``encode.cnn0..3``) apart; widths come from the
tensor shapes, so the tiny test models load through the same code. Files are read with
safetensors or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from .. import model_cache, runtime
from ..manifest import require_model
from .ifnet import BLOCK_SCALES, IFNet, IFNetConfig, released_config

FOLDER = "frame_interpolation"
SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
DEFAULT_MODEL = "rife47.pth"
_CACHE_SIZE = 2


class RIFEModelError(ValueError):
    """A file that is not a usable RIFE 4.x checkpoint, with a message for the user."""


@dataclass
class RIFEModel:
    """A loaded IFNet (on the CPU between runs) and where it came from. The SPINBOT_RIFE type."""

    net: IFNet
    name: str
    path: str

    @property
    def version(self) -> str:
        return self.net.config.version

    def describe(self) -> str:
        widths = "/".join(str(c) for c in self.net.config.block_channels)
        return f"{self.name}: RIFE {self.version} IFNet (block widths {widths})"

    def size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.net.parameters())


def list_rife_models() -> list[str]:
    """Checkpoint names in the frame_interpolation folder(s), for the loader's dropdown."""
    return runtime.list_models(FOLDER, SUFFIXES)


def read_state_dict(path: str, name: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a ``state_dict``/``params`` dict and with
    the training wrapper's ``module.`` prefix removed (Practical-RIFE's flownet.pkl keeps only
    the prefixed keys when any key has it, as its own loader does)."""
    name = name or os.path.basename(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUFFIXES:
        raise RIFEModelError(f"'{name}': unsupported file type '{ext}'; RIFE models are "
                             f"{', '.join(SUFFIXES)} files")
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle holding code
        first = str(exc).splitlines()[0] if str(exc) else "no details"
        raise RIFEModelError(f"'{name}' could not be read as a model file "
                             f"({type(exc).__name__}: {first}); re-download it") from exc
    for wrapper in ("state_dict", "params", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict) or not raw:
        raise RIFEModelError(f"'{name}' holds no state dict (got {type(raw).__name__})")
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and torch.is_tensor(v)}
    if any(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
    return tensors


def _key_diff(state_dict: dict, config: IFNetConfig) -> tuple[list[str], list[str]]:
    expected = IFNet(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    return missing, unexpected


def _mismatch_error(name: str, state_dict: dict, config: IFNetConfig, why: str) -> RIFEModelError:
    missing, unexpected = _key_diff(state_dict, config)

    def listing(keys: list[str]) -> str:
        shown = ", ".join(keys[:8])
        return shown + (f" (and {len(keys) - 8} more)" if len(keys) > 8 else "") if keys \
            else "none"

    return RIFEModelError(
        f"'{name}' is not a RIFE 4.x checkpoint this pack can load ({why}). Compared with the "
        f"RIFE {config.version} layout: missing keys: {listing(missing)}; unexpected keys: "
        f"{listing(unexpected)}. Supported: rife46, rife47, rife49 and rife417 .pth files "
        "(e.g. ComfyUI-Frame-Interpolation's rife47.pth or rife49.pth)")


def _shape(state_dict: dict, key: str, dim: int) -> int:
    return int(state_dict[key].shape[dim])


def detect_config(state_dict: dict[str, torch.Tensor], name: str = "model") -> IFNetConfig:
    """The `IFNetConfig` whose keys and shapes match ``state_dict``.

    Raises `RIFEModelError` listing missing/unexpected keys (against the closest released layout)
    for other models and for RIFE layouts not supported here (4.0-4.3: plain convolution blocks
    and a context net; 4.10-4.12: a deeper encoder; 4.2x: a fifth block).
    """
    blocks = sorted({int(m.group(1)) for k in state_dict
                     if (m := re.match(r"block(\d+)\.", k))})
    if "encode.cnn0.weight" in state_dict:
        version, encoder = "4.17", "head"
    elif "encode.0.weight" in state_dict:
        version, encoder = "4.7", "conv"
    else:
        version, encoder = "4.6", "none"
    reference = released_config(version)
    if blocks != list(range(len(BLOCK_SCALES))):
        why = (f"it has {len(blocks)} IFNet blocks, RIFE 4.0-4.17 have {len(BLOCK_SCALES)}"
               if blocks else "it has no IFNet blocks")
        raise _mismatch_error(name, state_dict, reference, why)
    if encoder == "conv" and any(k.startswith("encode.2.") for k in state_dict):
        raise _mismatch_error(name, state_dict, reference,
                              "its encoder has more layers: RIFE 4.10-4.12 is not supported")
    try:
        widths = tuple(_shape(state_dict, f"block{i}.conv0.1.0.weight", 0) for i in blocks)
        res_convs = len({m.group(1) for k in state_dict
                         if (m := re.match(r"block0\.convblock\.(\d+)\.conv\.weight$", k))})
        head = _shape(state_dict, "block0.lastconv.0.weight", 1)
        if encoder == "conv":
            enc_hidden = _shape(state_dict, "encode.0.weight", 0)
            features = _shape(state_dict, "encode.1.weight", 1)
        elif encoder == "head":
            enc_hidden = _shape(state_dict, "encode.cnn0.weight", 0)
            features = _shape(state_dict, "encode.cnn3.weight", 1)
        else:
            enc_hidden, features = 0, 0
        config = IFNetConfig(version=version, block_channels=widths, res_convs=res_convs,
                             encoder=encoder, encoder_channels=enc_hidden,
                             feature_channels=features, head_channels=head,
                             mask_residual=reference.mask_residual)
    except (KeyError, IndexError, ValueError) as exc:
        raise _mismatch_error(name, state_dict, reference, f"{type(exc).__name__}: {exc}") \
            from None
    missing, unexpected = _key_diff(state_dict, config)
    if missing or unexpected:
        raise _mismatch_error(name, state_dict, config, "its keys differ")
    return config


def build_model(state_dict: dict[str, torch.Tensor], name: str = "model") -> IFNet:
    """An `IFNet` in eval mode holding ``state_dict`` (float32, no gradients). Raises
    `RIFEModelError` for other layouts and for tensors of the wrong shape."""
    config = detect_config(state_dict, name)
    net = IFNet(config)
    try:
        net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as exc:  # keys matched: a shape differs (a damaged or edited file)
        raise RIFEModelError(f"'{name}' has RIFE {config.version} keys but tensors of the wrong "
                             f"shape: {str(exc).splitlines()[-1].strip()}") from None
    net.eval().requires_grad_(False)
    return net


def load_rife_file(path: str, name: str | None = None) -> RIFEModel:
    """A checkpoint file as a `RIFEModel` (no cache); `RIFEModelError` when it is not one."""
    name = name or os.path.basename(path)
    return RIFEModel(net=build_model(read_state_dict(path, name), name), name=name, path=path)


def load_rife(name: str) -> "model_cache.ModelRef":
    """``name`` from the frame_interpolation folder(s), through the pack's model cache (on the
    CPU; the interpolator moves it to the device for a run), as a `model_cache.ModelRef` to a
    `RIFEModel` (holding it keeps no weights alive; `model_cache.resolve` gives the model). The
    file is loaded here, so a bad file fails in the loader node. A missing file names the folder
    and the download page."""
    path = require_model(FOLDER, name)
    key = ("rife", runtime.file_stamp(path))
    ref = model_cache.ModelRef("rife", key, lambda: load_rife_file(path, name), name=name,
                               modules=lambda m: [m.net], limit=_CACHE_SIZE)
    ref.resolve()
    return ref
