"""The runtime adapter: the one module that touches ComfyUI internals.

Every function here works in two worlds. Inside ComfyUI it defers to `folder_paths`,
`comfy.utils` and `comfy.model_management`, so the pack shares ComfyUI's model folders, output
folder, progress bar, Cancel button and memory manager. Without ComfyUI (tests, scripts) it falls
back to plain equivalents driven by environment variables:

- ``SPINBOT_MODELS_DIR``: the models root (one sub-folder per model folder name), default ``./models``
- ``SPINBOT_OUTPUT_DIR`` / ``SPINBOT_TEMP_DIR``: output and temp folders
- ``SPINBOT_DEVICE``: force a torch device (``cpu``, ``cuda``, ``mps``)
"""
from __future__ import annotations

import gc
import os
import tempfile
import threading
from typing import Iterable

import torch

try:  # ComfyUI puts these on sys.path; standalone they do not exist.
    import folder_paths as _folder_paths  # type: ignore[import-not-found]
    import comfy.model_management as _mm  # type: ignore[import-not-found]
    import comfy.utils as _comfy_utils  # type: ignore[import-not-found]

    IN_COMFYUI = hasattr(_folder_paths, "get_folder_paths")
except ImportError:  # pragma: no cover - depends on the host
    _folder_paths = _mm = _comfy_utils = None
    IN_COMFYUI = False

# Model folders the pack reads. Core folders exist in every ComfyUI; pack folders are created
# under ComfyUI's models directory and registered so they show up in dropdowns and extra paths.
CORE_MODEL_FOLDERS = (
    "checkpoints", "loras", "upscale_models", "diffusion_models", "text_encoders",
    "clip_vision", "vae", "audio_encoders", "diffusers",
)
PACK_MODEL_FOLDERS = ("tts", "lipsync", "insightface", "whisper")
MODEL_EXTENSIONS = {
    ".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".json", ".txt", ".yaml",
}


class Interrupted(Exception):
    """Raised standalone when `request_interrupt()` was called (ComfyUI raises its own)."""


# --------------------------------------------------------------------------- model folders

def _standalone_models_root() -> str:
    return os.path.abspath(os.environ.get("SPINBOT_MODELS_DIR", "models"))


def register_model_folders() -> None:
    """Make the pack's own model folders known to ComfyUI (idempotent)."""
    if not IN_COMFYUI:
        return
    for name in PACK_MODEL_FOLDERS:
        path = os.path.join(_folder_paths.models_dir, name)
        known = _folder_paths.folder_names_and_paths.get(name)
        if known is None:
            _folder_paths.folder_names_and_paths[name] = ([path], set(MODEL_EXTENSIONS))
        elif path not in known[0]:
            known[0].append(path)


def model_folder_paths(folder: str) -> list[str]:
    """All directories that hold models of one kind, ComfyUI's extra paths included."""
    if IN_COMFYUI:
        try:
            return list(_folder_paths.get_folder_paths(folder))
        except KeyError:
            return [os.path.join(_folder_paths.models_dir, folder)]
    return [os.path.join(_standalone_models_root(), folder)]


def list_models(folder: str, suffixes: Iterable[str] | None = None, dirs: bool = False) -> list[str]:
    """Names (relative, '/'-separated) of the model files in a folder, for dropdowns.

    With ``dirs=True`` it lists the immediate sub-directories instead (diffusers folders,
    insightface packs). Missing folders give an empty list, never an error.
    """
    wanted = {s.lower() for s in suffixes} if suffixes else None
    names: set[str] = set()
    for root in model_folder_paths(folder):
        if not os.path.isdir(root):
            continue
        if dirs:
            names.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            continue
        for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
            for fname in filenames:
                if wanted is not None and os.path.splitext(fname)[1].lower() not in wanted:
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), root)
                names.add(rel.replace(os.sep, "/"))
    return sorted(names)


def find_model(folder: str, name: str) -> str | None:
    """Full path of a model file or directory, or None when it is not there."""
    if not name:
        return None
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts) or os.path.isabs(name):
        return None
    for root in model_folder_paths(folder):
        candidate = os.path.join(root, *parts)
        if os.path.exists(candidate):
            return candidate
    return None


def model_stamp(folder: str, name: str) -> str:
    """``name|size|mtime`` of a model file (just ``name`` when it is not there), for IS_CHANGED:
    a file replaced under the same name must not serve cached results."""
    path = find_model(folder, name)
    if path is None:
        return name
    stat = os.stat(path)
    return f"{name}|{stat.st_size}|{stat.st_mtime_ns}"


def comfyui_root() -> str | None:
    """ComfyUI's installation folder (for data it bundles, such as tokenizers); None standalone."""
    return getattr(_folder_paths, "base_path", None) if IN_COMFYUI else None


# --------------------------------------------------------------------------- output / temp

def output_dir() -> str:
    if IN_COMFYUI:
        return _folder_paths.get_output_directory()
    path = os.path.abspath(os.environ.get("SPINBOT_OUTPUT_DIR", "output"))
    os.makedirs(path, exist_ok=True)
    return path


def temp_dir() -> str:
    """The folder for intermediate files (created if missing), an absolute path.

    Inside ComfyUI its temp folder, which ComfyUI empties at start-up; standalone
    ``SPINBOT_TEMP_DIR`` or ``<system temp>/spinbot``, which nobody empties. Either way the video
    store under it is kept bounded by ``video.store.trim_store`` (cap, LRU, stale leftovers).
    """
    if IN_COMFYUI:
        path = _folder_paths.get_temp_directory()
    else:
        path = os.environ.get("SPINBOT_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "spinbot")
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    return path


# --------------------------------------------------------------------------- progress / cancel

_interrupt = threading.Event()


def request_interrupt(flag: bool = True) -> None:
    """Standalone equivalent of ComfyUI's Cancel button (tests use it)."""
    if flag:
        _interrupt.set()
    else:
        _interrupt.clear()


def check_interrupted() -> None:
    """Raise if the user pressed Cancel. Call it between steps of every long loop."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()
    elif _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("processing interrupted")


class Progress:
    """A progress bar for one node's work: ComfyUI's ProgressBar, or tqdm standalone."""

    def __init__(self, total: int, desc: str = "SpinBot"):
        self.total = max(int(total), 1)
        self.current = 0
        if IN_COMFYUI:
            self._bar = _comfy_utils.ProgressBar(self.total)
            self._tqdm = None
        else:
            from tqdm.auto import tqdm

            self._bar = None
            self._tqdm = tqdm(total=self.total, desc=desc, leave=False,
                              disable=os.environ.get("SPINBOT_PROGRESS", "1") == "0")

    def update(self, n: int = 1, preview=None) -> None:
        self.current = min(self.current + n, self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.current, self.total, preview)
        else:
            self._tqdm.update(n)

    def finish(self) -> None:
        """Fill the bar: work sized from an estimate (an LLM reply, a scheduler's step count)
        can end short of ``total``, and a finished node should not show a partial bar."""
        if self.current < self.total:
            self.update(self.total - self.current)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.finish()
        self.close()


# --------------------------------------------------------------------------- device / memory

def torch_device() -> torch.device:
    forced = os.environ.get("SPINBOT_DEVICE")
    if forced:
        return torch.device(forced)
    if IN_COMFYUI:
        return _mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    if IN_COMFYUI:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def torch_dtype(device: torch.device | None = None, allow_bf16: bool = True) -> torch.dtype:
    """Half precision where the device does it well, float32 on CPU."""
    device = device or torch_device()
    if device.type == "cuda":
        if allow_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def free_memory_bytes(device: torch.device | None = None) -> int:
    device = device or torch_device()
    if IN_COMFYUI:
        return int(_mm.get_free_memory(device))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 8 << 30


def total_memory_bytes(device: torch.device | None = None) -> int:
    device = device or torch_device()
    if IN_COMFYUI:
        return int(_mm.get_total_memory(device))
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return 16 << 30


def make_room(bytes_needed: int, device: torch.device | None = None) -> None:
    """Ask ComfyUI to unload its own models until ``bytes_needed`` fit, before a big load."""
    device = device or torch_device()
    if IN_COMFYUI:
        _mm.free_memory(int(bytes_needed), device)
    release_memory()


def release_memory() -> None:
    """Give freed VRAM back after a stage so the next stage (or ComfyUI) can use it."""
    gc.collect()
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
