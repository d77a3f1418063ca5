"""The pack's model cache: one registry of every model the pack keeps between runs.

Entries are keyed by what a model was loaded from (file stamps, dtype, device, options: never the
free memory of the moment). Node outputs hold keys and loaders (`ModelRef`), not weights, so
dropping an entry really frees its memory. Standalone, `unload_all()` empties it.

This module never imports ComfyUI: what must touch it goes through hooks in `runtime` (the one
module allowed to), each a no-op standalone:

- ``runtime.comfy_register(entry)``: list a new entry among ComfyUI's loaded models (as a
  ModelPatcher), so "Unload models", POST /free and other nodes' loads evict it like a core model;
  the pack reloads it from disk when it is used next. The patcher calls back into `_evict` here.
- ``runtime.comfy_unregister(entry)``: take an entry's record out of that list again.
- ``runtime.current_owner()``: which node is running, so `runtime.make_room` spares its models.
"""
from __future__ import annotations

import threading

from . import metrics, runtime

class CachedModel:
    """One resident model: the loaded object plus what the memory manager needs to know."""

    def __init__(self, kind: str, key: tuple, name: str, value, modules: tuple, size: int | None,
                 unload, parent: tuple | None = None):
        self.kind, self.key, self.name, self.value = kind, key, name, value
        self.parent = parent
        self.modules = tuple(modules)
        self.fixed_size = size
        self.unload = unload
        self.load_device = runtime.torch_device()
        self.owner = None
        self.patcher = None

    def tensors(self):
        """Its parameters and buffers, each once; a copy's tensors shared with its parent (a
        LoRA copy's unpatched layers) are the parent's, not counted here."""
        parent = _models.get(self.parent) if self.parent is not None else None
        seen: set[int] = {id(t) for t in parent.tensors()} if parent is not None else set()
        for module in self.modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                if id(tensor) not in seen and tensor.device.type != "meta":
                    seen.add(id(tensor))
                    yield tensor

    def size(self) -> int:
        """Bytes of the weights (parameters and buffers, shared tensors once), or the size given
        at registration for models that are not torch modules (ONNX sessions)."""
        if self.fixed_size is not None:
            return int(self.fixed_size)
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def loaded_bytes(self) -> int:
        """Bytes now on the compute device (all of it when that is the CPU)."""
        if self.fixed_size is not None or self.load_device.type == "cpu":
            return self.size()
        return sum(t.numel() * t.element_size() for t in self.tensors()
                   if t.device.type == self.load_device.type)

    def devices(self) -> str:
        if self.fixed_size is not None:
            return str(self.load_device)
        found = sorted({str(t.device) for t in self.tensors()})
        return "+".join(found) or "none"

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "device": self.devices(),
                "bytes": self.size()}


_models: "dict[tuple, CachedModel]" = {}
_models_lock = threading.RLock()
# Counts since start-up, for GET /spinbot/models and the log: how often models were loaded, and
# unloaded by ComfyUI's memory manager or by the pack itself (limits, replaced files, clear).
_stats = {"loaded": 0, "unloaded_by_comfyui": 0, "unloaded_by_pack": 0}


def _log():
    import logging

    return logging.getLogger("spinbot")



def cached_model(kind: str, key: tuple, load, *, name: str, modules=None, size: int | None = None,
                 size_of=None, unload=None, limit: int | None = None,
                 parent: tuple | None = None):
    """The model cached under ``key``, or ``load()``'s result, registered (see `put_model`).

    ``key`` must describe the model completely from what it was loaded from: `file_stamp` of
    every file read, dtype, device and options. Raises whatever ``load`` raises.
    """
    with _models_lock:
        _retired.clear()
        entry = _models.get(key)
        if entry is not None:
            _touch(entry)
            return entry.value
        value = load()
        entry = _models.get(key)  # a loader may register its result itself (derived models)
        if entry is not None and entry.value is value:
            return value
        return put_model(kind, key, value, name=name, modules=modules, size=size, size_of=size_of,
                         unload=unload, limit=limit, parent=parent)


def put_model(kind: str, key: tuple, value, *, name: str, modules=None, size: int | None = None,
              size_of=None, unload=None, limit: int | None = None, parent: tuple | None = None):
    """Register ``value`` (replacing what ``key`` held) and return it.

    ``modules(value)`` lists the torch modules holding its weights (their parameters and buffers
    give its size and device); models without torch weights give their size in bytes instead,
    as ``size`` or as ``size_of(value)`` (an ONNX session: its file's size).
    ``unload(value)``, when given, runs when the entry is evicted (before the last reference is
    dropped). ``limit``: at most this many entries of ``kind`` stay, the least recently used go.
    ``parent``: the key of a model this one shares weights with (a LoRA copy of a base); evicting
    the parent evicts it too, since it would keep the parent's weights alive.
    """
    mods = tuple(modules(value)) if modules is not None else ()
    if size is None and size_of is not None:
        size = int(size_of(value))
    if not mods and size is None:
        size = 0
    with _models_lock:
        old = _models.get(key)
        if old is not None:
            if old.value is value:
                _touch(old)
                return value
            _evict(old)
        entry = CachedModel(kind, key, name, value, mods, size, unload, parent)
        _models[key] = entry
        _stats["loaded"] += 1
        metrics.model_loaded(kind)
        _log().info("SpinBot model cache: loaded %s %s (%.1f MiB)", kind, name, entry.size() / 2**20)
        if limit is not None:
            same = [e for e in _models.values() if e.kind == kind and e is not entry]
            for stale in same[:max(0, len(same) + 1 - int(limit))]:
                _evict(stale)
        _touch(entry)
    return value


def peek_model(key: tuple):
    """The value cached under ``key`` or None, without loading or touching anything."""
    entry = _models.get(key)
    return None if entry is None else entry.value


def _touch(entry: CachedModel) -> None:
    """Mark ``entry`` most recently used (by the running node); inside ComfyUI, list a new
    entry among the memory manager's loaded models (`runtime.comfy_register`)."""
    _models.pop(entry.key, None)
    _models[entry.key] = entry
    owner = runtime.current_owner()
    if owner is not None:
        entry.owner = owner
    if entry.patcher is None:
        runtime.comfy_register(entry)


_retired: list = []  # patchers ComfyUI is unloading: kept alive until its unload loop is over


def _evict(entry: CachedModel, by_comfyui: bool = False) -> None:
    """Drop ``entry`` from the registry, run its unload hook and let go of the value.

    When ComfyUI is the one unloading (inside `free_memory`, which walks its loaded list by
    index), its list must not change under it: nothing is removed from it here, the patcher is
    kept alive until the next registry call (its model's finalizer would otherwise prune the
    list mid-loop). Otherwise the entry's record is taken out of ComfyUI's list too. Either way
    the models sharing this one's weights (``parent``) go with it, the same way: they would keep
    the weights ComfyUI counts as freed alive. (Their records in ComfyUI's list, when ComfyUI is
    unloading, go when their patchers are released: ComfyUI prunes records of dead models.)"""
    with _models_lock:
        if _models.get(entry.key) is entry:
            del _models[entry.key]
        if entry.patcher is not None:
            if by_comfyui:
                _retired.append(entry.patcher)
            else:
                runtime.comfy_unregister(entry)
        if entry.value is not None:
            _stats["unloaded_by_comfyui" if by_comfyui else "unloaded_by_pack"] += 1
            _log().info("SpinBot model cache: unloaded %s %s (by %s)", entry.kind, entry.name,
                        "ComfyUI" if by_comfyui else "SpinBot")
        value, entry.value, entry.modules = entry.value, None, ()
        children = [e for e in list(_models.values()) if e.parent == entry.key]
    for child in children:
        _evict(child, by_comfyui)
    if entry.unload is not None and value is not None:
        try:
            entry.unload(value)
        except Exception:  # noqa: BLE001 - an unload hook must not break the memory manager
            _log().exception("unloading %s failed", entry.name)


def evict_models(kind: str | None = None, key: tuple | None = None) -> int:
    """Evict the entries of one ``kind`` (or one ``key``, or all); returns how many went."""
    with _models_lock:
        _retired.clear()
        chosen = [e for e in list(_models.values())
                  if (kind is None or e.kind == kind) and (key is None or e.key == key)]
        for entry in chosen:
            _evict(entry)
    if chosen:
        runtime.release_memory()
    return len(chosen)


def unload_all() -> int:
    """Evict every cached model of the pack (what ComfyUI's "Unload models" does to them)."""
    return evict_models()


def resident_models() -> list[dict]:
    """The pack's cached models, most recently used last: name, kind, device, bytes."""
    return [entry.describe() for entry in list(_models.values())]


def model_cache_stats() -> dict:
    """How many models were loaded, and unloaded by ComfyUI or by the pack, since start-up."""
    return dict(_stats)


def get_entry(key: tuple) -> CachedModel | None:
    """The registry entry under ``key`` or None (for `runtime`'s ModelPatcher)."""
    return _models.get(key)


def comfy_evicted(patcher) -> None:
    """ComfyUI's memory manager unloaded ``patcher`` (`runtime`'s ModelPatcher, from its
    ``detach``): evict its entry, leaving ComfyUI's loaded list to ComfyUI (see `_evict`)."""
    found = _models.get(patcher.spinbot_key)
    if found is not None and found.patcher is patcher:
        _evict(found, by_comfyui=True)


def patchers_of(owner) -> list:
    """The ComfyUI patchers of the entries node ``owner`` (``(prompt_id, node_id)``) fetched,
    for `runtime.make_room`'s keep_loaded."""
    return [e.patcher for e in list(_models.values())
            if e.owner == owner and e.patcher is not None]



class ModelRef:
    """A node output's handle on a cached model: attribute access and calls go to the model in
    the registry, which ``load`` rebuilds from disk after an eviction. Holding a ModelRef (in
    ComfyUI's output cache, say) keeps no weights alive."""

    __slots__ = ("kind", "key", "name", "_load", "_options")

    def __init__(self, kind: str, key: tuple, load, name: str, **options):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_load", load)
        object.__setattr__(self, "_options", options)

    def resolve(self):
        return cached_model(self.kind, self.key, self._load, name=self.name, **self._options)

    def __getattr__(self, attr):
        return getattr(self.resolve(), attr)

    def __setattr__(self, attr, value):
        setattr(self.resolve(), attr, value)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ModelRef({self.kind}, {self.name})"


def resolve(obj):
    """The model behind a `ModelRef` (anything else is returned as it is)."""
    return obj.resolve() if isinstance(obj, ModelRef) else obj

