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
from typing import Callable, Iterable, TypeVar

import torch

from . import metrics

T = TypeVar("T")

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
PACK_MODEL_FOLDERS = ("tts", "lipsync", "insightface", "whisper", "fonts", "frame_interpolation",
                      "facerestore_models", "translation")
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


def file_stamp(path: str | None) -> str:
    """What a model file or folder is, for cache keys and IS_CHANGED: a file replaced under the
    same name must not serve cached models or results.

    - ``None`` / ``""``: ``""``
    - a missing path: ``"<abs path>|missing"``
    - a file: ``"<abs path>|<size>|<mtime ns>"`` (size and mtime stand in for the content;
      hashing gigabytes on every queue would cost seconds)
    - a folder (diffusers pipeline, Vocos, insightface pack, voice profile): ``"<abs path>|dir|
      <files>|<digest>"`` where the digest covers the relative path, size and mtime of every file
      below it, so a replaced weight file deep inside changes it. Hidden files and folders
      (``.cache/`` of hub downloads, ``.DS_Store``) are left out.
    """
    if not path:
        return ""
    path = os.path.abspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path}|missing"
    if not os.path.isdir(path):
        return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    import hashlib

    digest = hashlib.sha1()
    count = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(f for f in filenames if not f.startswith(".")):
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: its absence is part of the state
                st = None
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            digest.update(f"{rel}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n"
                          .encode("utf-8", "surrogateescape"))
            count += 1
    return f"{path}|dir|{count}|{digest.hexdigest()[:16]}"


def model_stamp(folder: str, name: str) -> str:
    """``name|<file_stamp>`` of a model file or folder found in a model folder (just ``name`` when
    it is not there), for IS_CHANGED."""
    path = find_model(folder, name)
    if path is None:
        return name
    return f"{name}|{file_stamp(path)}"


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


def input_dir() -> str:
    """ComfyUI's input folder (where LoadImage/LoadAudio read uploads), an absolute path.

    Standalone ``SPINBOT_INPUT_DIR`` or ``./input``. Not created: readers report a missing one.
    """
    if IN_COMFYUI:
        return os.path.abspath(_folder_paths.get_input_directory())
    return os.path.abspath(os.environ.get("SPINBOT_INPUT_DIR", "input"))


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


# --------------------------------------------------------------------------- core VIDEO
#
# ComfyUI's own VIDEO type (core LoadVideo's output, SaveVideo's input) is a
# `comfy_api.latest.Input.Video` (VideoInput): VideoFromFile over a file or BytesIO, or
# VideoFromComponents over an IMAGE batch. Imported lazily: comfy_api exists only inside ComfyUI.
# Standalone, `StandaloneFileVideo` stands in for VideoFromFile with the same methods.

def _core_video_api():
    """``(VideoInput, VideoFromFile)`` from comfy_api, or ``(None, None)`` without ComfyUI."""
    try:
        from comfy_api.latest import Input, InputImpl  # type: ignore[import-not-found]

        return Input.Video, InputImpl.VideoFromFile
    except Exception:  # noqa: BLE001 - standalone, or a ComfyUI older than comfy_api
        return None, None


class StandaloneFileVideo:
    """A video file, with the methods of comfy_api's VideoFromFile the pack and tests use;
    what `core_video_from_file` returns outside ComfyUI."""

    def __init__(self, path: str):
        self._path = path

    def get_stream_source(self) -> str:
        return self._path

    def get_dimensions(self) -> tuple[int, int]:
        import av

        with av.open(self._path) as container:
            stream = container.streams.video[0]
            return stream.width, stream.height

    def get_duration(self) -> float:
        import av

        with av.open(self._path) as container:
            return float(container.duration / av.time_base)

    def save_to(self, path: str, format=None, codec=None, metadata=None) -> None:  # noqa: A002
        import shutil

        shutil.copyfile(self._path, path)


def is_core_video(value) -> bool:
    """True for a core ComfyUI VIDEO (a comfy_api VideoInput) or a `StandaloneFileVideo`."""
    if isinstance(value, StandaloneFileVideo):
        return True
    base, _file_cls = _core_video_api()
    return base is not None and isinstance(value, base)


def core_video_stream(value):
    """The file path or BytesIO a core VIDEO is read from, or None when it has none of its own
    (VideoFromComponents: frames in memory, which `get_stream_source` would re-encode)."""
    if isinstance(value, StandaloneFileVideo):
        return value.get_stream_source()
    base, _file_cls = _core_video_api()
    getter = getattr(type(value), "get_stream_source", None)
    if getter is None or (base is not None and getter is base.get_stream_source):
        return None
    return value.get_stream_source()


def core_video_from_file(path: str):
    """A core VIDEO over the file at ``path`` (comfy_api's VideoFromFile inside ComfyUI, a
    `StandaloneFileVideo` standalone)."""
    _base, file_cls = _core_video_api()
    return file_cls(path) if file_cls is not None else StandaloneFileVideo(path)


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

    def text(self, text: str) -> None:
        """A status line beside the bar (loss, ETA): ComfyUI's progress text under the running
        node (`PromptServer.send_progress_text`, in ComfyUIs that have it), tqdm's postfix
        standalone."""
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=False)
            return
        try:
            import server  # type: ignore[import-not-found]

            instance = server.PromptServer.instance
            node = getattr(instance, "last_node_id", None)
            if node is not None and hasattr(instance, "send_progress_text"):
                instance.send_progress_text(text, node)
        except Exception:  # noqa: BLE001 - no server (ComfyUI used as a library)
            pass

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
        # The pack's models the running node fetched stay: evicting them would only make the
        # node reload what it is about to use.
        _mm.free_memory(int(bytes_needed), device, keep_loaded=_models_in_use())
    release_memory()


def release_memory() -> None:
    """Give freed VRAM back after a stage so the next stage (or ComfyUI) can use it."""
    gc.collect()
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (``torch.OutOfMemoryError``, or the
    RuntimeError text other backends raise)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_or_oom(call: Callable[[], T]) -> tuple[T | None, bool]:
    """``(call(), False)``, or ``(None, True)`` when ``call`` ran out of device memory; any
    other error propagates. The failed call's exception (and with it the frames holding its
    tensors) is gone when this returns, so the caller can `release_memory` and retry smaller."""
    try:
        return call(), False
    except Exception as exc:
        if not is_oom(exc):
            raise
    return None, True


# --------------------------------------------------------------------------- model cache hooks
#
# The model cache itself (`model_cache`) is ComfyUI-free; these are the few things it needs from
# ComfyUI, each a no-op standalone. Inside ComfyUI every cache entry is also a ModelPatcher in
# `comfy.model_management`'s list of loaded models: "Unload models", POST /free and other nodes'
# loads evict it like any core model (the patcher calls back into `model_cache.comfy_evicted`),
# and the pack reloads it from disk when it is used next. `model_cache` is imported lazily here:
# it imports this module.

# The public model cache names, still reachable as ``runtime.<name>`` (PEP 562 module getattr).
_MODEL_CACHE_NAMES = frozenset({
    "CachedModel", "ModelRef", "cached_model", "put_model", "peek_model", "evict_models",
    "unload_all", "resident_models", "model_cache_stats", "resolve",
})


def __getattr__(name: str):
    if name in _MODEL_CACHE_NAMES:
        from . import model_cache

        return getattr(model_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def current_owner():
    """Which node is running inside ComfyUI, ``(prompt_id, node_id)``, so `make_room` spares the
    models it uses; None standalone or with no server."""
    if not IN_COMFYUI:
        return None
    try:
        import server  # type: ignore[import-not-found]

        instance = server.PromptServer.instance
        node = getattr(instance, "last_node_id", None)
        return None if node is None else (getattr(instance, "last_prompt_id", None), node)
    except Exception:  # noqa: BLE001 - no server (ComfyUI used as a library)
        return None



def comfy_register(entry) -> None:
    """List a new `model_cache.CachedModel` among ComfyUI's loaded models, through a patcher
    (`_patcher_class`) kept on ``entry.patcher``; no-op standalone.

    The entry is listed directly rather than through `load_models_gpu`: the pack has placed the
    model already (stages make room before they load), and `load_models_gpu` could evict other
    models the same node holds, which would then be loaded a second time."""
    if not IN_COMFYUI or entry.patcher is not None:
        return
    entry.patcher = _patcher_class()(entry)
    loaded = _mm.LoadedModel(entry.patcher)
    loaded.model_load()
    _mm.current_loaded_models.insert(0, loaded)


def comfy_unregister(entry) -> None:
    """Take ``entry``'s record out of ComfyUI's loaded models (the pack evicted it); no-op
    standalone or when it was never listed. Not for evictions ComfyUI itself runs: its unload
    loop walks that list by index (`model_cache._evict`)."""
    if not IN_COMFYUI or entry.patcher is None:
        return
    for i in range(len(_mm.current_loaded_models) - 1, -1, -1):
        loaded = _mm.current_loaded_models[i]
        if loaded.model is entry.patcher:
            _mm.current_loaded_models.pop(i)
            if loaded.model_finalizer is not None:
                loaded.model_finalizer.detach()
                loaded.model_finalizer = None


def _models_in_use() -> list:
    """ComfyUI's LoadedModel records of the pack models the running node fetched."""
    owner = current_owner()
    if owner is None:
        return []
    from . import model_cache

    patchers = model_cache.patchers_of(owner)
    return [lm for lm in _mm.current_loaded_models if any(lm.model is p for p in patchers)]


_patcher_cls = None


def _patcher_class():
    """A ModelPatcher over a registry entry (defined lazily: it needs ComfyUI).

    The pack places its own models (diffusers offload hooks, per-run device moves), so loading
    moves nothing: the patcher reports the entry's size and how much of it is on the device.
    Unloading (`detach` with ``unpatch_all``, as `free_memory` / `unload_all_models` do) evicts
    the entry; a partial unload frees nothing, so ComfyUI goes on to a full one."""
    global _patcher_cls
    if _patcher_cls is not None:
        return _patcher_cls
    import comfy.model_patcher as _mp  # type: ignore[import-not-found]

    from . import model_cache

    class SpinBotModel:
        """What ComfyUI sees as the patched model; it holds no weights."""

        def __init__(self, kind: str, name: str):
            self.kind, self.name = kind, name

        def __repr__(self) -> str:
            return f"SpinBotModel({self.kind}: {self.name})"

    class SpinBotPatcher(_mp.ModelPatcher):
        def __init__(self, entry):
            self.spinbot_key = entry.key
            super().__init__(SpinBotModel(entry.kind, entry.name), load_device=entry.load_device,
                             offload_device=offload_device(), size=max(entry.size(), 1))

        def _entry(self):
            return model_cache.get_entry(self.spinbot_key)

        def model_size(self):
            entry = self._entry()
            return max(entry.size(), 1) if entry is not None else self.size

        def loaded_size(self):
            entry = self._entry()
            return entry.loaded_bytes() if entry is not None else 0

        def current_loaded_device(self):
            return self.load_device

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            return 0

        def partially_unload(self, device_to, memory_to_free=0):
            return 0

        def detach(self, unpatch_all=True):
            if unpatch_all:
                model_cache.comfy_evicted(self)
            return self.model

    _patcher_cls = SpinBotPatcher
    return _patcher_cls


def execution_context() -> tuple[str | None, str | None]:
    """``(prompt_id, node_id)`` of the node running now inside ComfyUI, ``(None, None)``
    standalone or between prompts. ComfyUI sets this context around every node call
    (`comfy_execution.utils.CurrentNodeContext`); older ComfyUIs without it fall back to the
    server's last prompt and node ids (the node id only when a client is connected)."""
    if not IN_COMFYUI:
        return None, None
    try:
        from comfy_execution.utils import get_executing_context  # type: ignore[import-not-found]

        ctx = get_executing_context()
        if ctx is not None:
            return ctx.prompt_id, ctx.node_id
    except ImportError:  # pragma: no cover - older ComfyUI
        pass
    try:
        import server  # type: ignore[import-not-found]

        instance = server.PromptServer.instance
        return getattr(instance, "last_prompt_id", None), getattr(instance, "last_node_id", None)
    except Exception:  # noqa: BLE001 - no server (ComfyUI used as a library)
        return None, None


# ComfyUI's queue items carry no creation time, so POST /prompt is stamped by an on_prompt
# handler (`_stamp_queue_time`) under this extra_data key, which travels with the queue item.
QUEUED_AT_KEY = "spinbot_queued_at"


def _stamp_queue_time(json_data: dict) -> dict:
    """ComfyUI on_prompt handler: record when the prompt was queued (unix time) in its
    extra_data, for the queue-wait metric."""
    import time

    if isinstance(json_data, dict):
        extra = json_data.get("extra_data")
        if not isinstance(extra, dict):
            extra = json_data["extra_data"] = {}
        # overwritten: extra_data re-posted from an old history entry carries that queue time
        extra[QUEUED_AT_KEY] = time.time()
    return json_data


def prompt_queued_at(prompt_id: str) -> float | None:
    """Unix time prompt ``prompt_id`` was queued (POST /prompt), from the running queue item's
    extra_data; None standalone, for prompts queued another way, or once it left the queue."""
    if not IN_COMFYUI:
        return None
    try:
        import server  # type: ignore[import-not-found]

        queue = server.PromptServer.instance.prompt_queue
        with queue.mutex:
            items = list(queue.currently_running.values())
    except Exception:  # noqa: BLE001 - no server
        return None
    for item in items:  # (number, prompt_id, prompt, extra_data, outputs_to_execute)
        if len(item) > 3 and item[1] == prompt_id and isinstance(item[3], dict):
            value = item[3].get(QUEUED_AT_KEY)
            return float(value) if isinstance(value, (int, float)) else None
    return None


metrics.configure(context=execution_context, queued_at=prompt_queued_at)


def _register_routes() -> None:
    """Inside ComfyUI only: GET /spinbot/models, the pack's resident models (read-only);
    GET /spinbot/metrics, the pack's Prometheus series (`metrics`); and the on_prompt handler
    that stamps each queued prompt's time for the queue-wait metric."""
    if not IN_COMFYUI:
        return
    try:
        from aiohttp import web
        import server  # type: ignore[import-not-found]

        routes = server.PromptServer.instance.routes
    except Exception:  # noqa: BLE001 - ComfyUI used as a library, without a server
        return

    @routes.get("/spinbot/models")
    async def spinbot_models(_request):
        from . import model_cache

        return web.json_response({"models": model_cache.resident_models(),
                                  "stats": model_cache.model_cache_stats()})

    @routes.get("/spinbot/metrics")
    async def spinbot_metrics(_request):
        try:
            body, content_type = metrics.prometheus_text()
        except RuntimeError as exc:  # prometheus_client missing
            return web.Response(status=503, text=str(exc))
        # aiohttp wants the charset apart from the media type
        return web.Response(body=body, headers={"Content-Type": content_type})

    if _stamp_queue_time not in server.PromptServer.instance.on_prompt_handlers:
        server.PromptServer.instance.add_on_prompt_handler(_stamp_queue_time)


_register_routes()
