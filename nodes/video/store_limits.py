"""Keeping the SPINBOT_VIDEO store (`store`) bounded without ever breaking a video in use.

The store is trimmed (`trim_store`, run by `after_finish` once a video is finished): the least
recently used folders go first until the store fits its cap (``SPINBOT_VIDEO_CACHE_GB``, default
`store_cap`). A folder is never removed while it is *held*: a live `SpinBotVideo` of this process
references one of its chunks (`hold`; a joined video holds every source it references), a writer
of this process fills it (`hold_writer`), or another process used it within `LEASE_S` (loading and
reading refresh the folder's modification time, the lease, via `touch`; a daemon thread refreshes
the leases of held folders). Leftovers of writers whose process is gone are removed. Removal
renames a folder aside before deleting it and puts it back when its lease changed meanwhile, so a
concurrent loader never gets half a folder. The same rules hold inside ComfyUI (whose temp folder
is emptied at start-up) and standalone (``SPINBOT_TEMP_DIR`` or the system temp folder, never
emptied by anyone else).

This module knows the store's folder layout (`video_root`, the names of writers' partial folders
and of trash) but nothing of the video format; handles are duck-typed (anything with
``folders()``), so it never imports `store`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

from .. import runtime

log = logging.getLogger("spinbot.video")

CACHE_ENV = "SPINBOT_VIDEO_CACHE_GB"
# Default cap: at most 32 GB (a minute of 1080p frames is ~9.3 GB, so a few chained stages of a
# long video fit) and at most half of what the store could grow to (free disk plus the store).
DEFAULT_CAP_BYTES = 32 * 10**9
DEFAULT_FREE_FRACTION = 0.5
# How long a folder that another process loaded or read stays untouchable; held folders are
# re-leased every LEASE_S / 5 seconds, so a live holder never lets its lease run out.
LEASE_S = 15 * 60.0
# A trim runs after a video is finished when the store may be over its cap, else at most this often.
TRIM_INTERVAL_S = 60.0
# Leftovers of a writer on another host (its process cannot be asked) are stale after a day.
STALE_FOREIGN_S = 24 * 3600.0
_TOUCH_EVERY_S = 10.0  # reads refresh a folder's lease at most this often
_PARTIAL, _TRASH = ".partial-", ".trash-"
_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
_OWNER = re.compile(r"\.(partial|trash)-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}$")

# Process-wide bookkeeping; LOCK orders loads against trims (both may run on several threads).
LOCK = threading.RLock()
_LIVE: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()  # SpinBotVideo
_WRITERS: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()  # VideoWriter
_MINE: dict[str, int] = {}         # folder -> mtime_ns this process gave it (our own lease)
_TOUCHED: dict[str, float] = {}    # folder -> monotonic time of our last touch
_SIZES: dict[str, tuple[int, int]] = {}    # finished folder -> (inode, bytes); folders never change
_ESTIMATE: dict[str, tuple[int, float]] = {}  # root -> (bytes at the last trim + writes, its time)
_heartbeat: threading.Thread | None = None
_warned_cap = False


def video_root() -> str:
    """The store's folder, ``<temp>/spinbot_video`` (created when missing)."""
    path = os.path.join(runtime.temp_dir(), "spinbot_video")
    os.makedirs(path, exist_ok=True)
    return path


def partial_dir(root: str, key: str) -> str:
    """A fresh private folder for a writer of ``key`` under ``root``, named so that a trim can
    tell its owner (host hash, pid) and remove it once that process is gone (`_OWNER`)."""
    owner = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(root, f"{key}{_PARTIAL}{owner}")


def hold_writer(directory: str, writer: Any) -> None:
    """Keep ``directory`` while ``writer`` lives (weakly referenced) or until `release_writer`."""
    with LOCK:
        _WRITERS[directory] = writer


def release_writer(directory: str) -> None:
    """``directory`` is no longer filled by a writer of this process (finished or aborted)."""
    with LOCK:
        _WRITERS.pop(directory, None)


# --------------------------------------------------------------------------- size cap and clean-up

@dataclass(frozen=True)
class TrimReport:
    """What one `trim_store` pass did. Sizes in bytes (apparent file sizes)."""

    cap: int
    before: int
    after: int
    removed: tuple[str, ...]  # folder names: evicted videos and stale leftovers
    held: int                 # videos the pass had to skip: held here or leased by another process
    seconds: float


def store_cap(store_bytes: int, root: str | None = None) -> int:
    """The size in bytes the store is trimmed to.

    ``SPINBOT_VIDEO_CACHE_GB`` (decimal gigabytes, 0 or more) when set, ``inf`` / ``none`` /
    ``unlimited`` (any case) for no cap (2**63 - 1 bytes: nothing is ever over it); otherwise the
    smaller of `DEFAULT_CAP_BYTES` and `DEFAULT_FREE_FRACTION` of what the store could grow to (the
    free space on its disk plus ``store_bytes``, the store's current size). An invalid setting is
    logged once and the default is used: trimming is housekeeping and never fails a finished stage.
    """
    global _warned_cap
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("inf", "+inf", "infinity", "+infinity", "none", "unlimited"):
        return 2**63 - 1
    if value:
        try:
            gb = float(value)
            if math.isfinite(gb) and gb >= 0:
                return int(gb * 1e9)
        except ValueError:
            pass
        if not _warned_cap:
            _warned_cap = True
            log.warning("%s=%r is not a number of gigabytes (0 or more); using the default cap",
                        CACHE_ENV, value)
    free = shutil.disk_usage(root or video_root()).free
    return int(min(DEFAULT_CAP_BYTES, DEFAULT_FREE_FRACTION * (free + store_bytes)))


def held_folders() -> set[str]:
    """Store folders this process must keep: those of live videos and of running writers."""
    with LOCK:
        videos = list(_LIVE.values())
        held = set(_WRITERS.keys())
    for video in videos:
        held.update(video.folders())
    return held


def refresh_leases() -> int:
    """Renew the lease of every held finished folder (the heartbeat calls this); the count."""
    count = 0
    for folder in held_folders():
        if _PARTIAL not in os.path.basename(folder) and touch(folder, force=True):
            count += 1
    return count


def trim_store(cap: int | None = None, keep: Iterable[str] = ()) -> TrimReport:
    """Remove stale leftovers, then least recently used videos until the store fits ``cap``.

    ``cap`` in bytes defaults to `store_cap`; ``keep`` names keys that stay regardless. Held
    folders (`held_folders`) and folders another process used within `LEASE_S` are never removed,
    so the store can stay above the cap while they are in use.
    """
    tick = time.perf_counter()
    root = video_root()
    removed: list[str] = []
    with LOCK:
        held = held_folders() | {os.path.join(root, k) for k in keep}
        before = 0
        videos: list[tuple[int, str, int]] = []
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if _PARTIAL in entry.name or _TRASH in entry.name:
                size = _tree_size(entry.path)
                before += size
                if entry.path not in held and _leftover_is_stale(entry.path, entry.name, st):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.name)
                    size = 0
                videos.append((-1, entry.path, size))  # counted, never evicted
                continue
            size = _folder_size(entry.path, st)
            before += size
            videos.append((st.st_mtime_ns, entry.path, size))
        total = sum(size for _m, _p, size in videos)
        cap = store_cap(total, root) if cap is None else int(cap)
        now_ns = time.time_ns()
        lease_ns = int(LEASE_S * 1e9)
        blocked = 0
        for mtime_ns, path, size in sorted(videos):
            if total <= cap:
                break
            if mtime_ns < 0:
                continue
            if path in held:
                blocked += 1
                continue
            if _MINE.get(path) != mtime_ns and now_ns - mtime_ns < lease_ns:
                blocked += 1  # another process loaded or read it lately
                continue
            if _evict(path, mtime_ns):
                total -= size
                removed.append(os.path.basename(path))
        _ESTIMATE[root] = (total, time.monotonic())
        present = {entry.path for entry in entries}.difference(
            os.path.join(root, name) for name in removed)
        for table in (_MINE, _TOUCHED, _SIZES):  # forget folders of this root that are gone
            for path in [p for p in table if os.path.dirname(p) == root and p not in present]:
                del table[path]
    report = TrimReport(cap=cap, before=before, after=total, removed=tuple(removed), held=blocked,
                        seconds=time.perf_counter() - tick)
    if removed:
        log.info("video store %s: %.1f MB -> %.1f MB (cap %.1f MB), removed %d folders in %.3fs",
                 root, before / 1e6, total / 1e6, cap / 1e6, len(removed), report.seconds)
    return report


def after_finish(folder: str, added: int) -> None:
    """Trim after the video in ``folder`` (``added`` bytes) is finished: whenever the store may be
    over its cap, else at most every `TRIM_INTERVAL_S` (other processes' writes are seen then).
    Never raises: a failed trim is logged, the finished video is kept."""
    root, key = os.path.dirname(folder), os.path.basename(folder)
    try:
        with LOCK:
            estimate, last = _ESTIMATE.get(root, (None, -math.inf))
            if estimate is not None:
                estimate += added
                _ESTIMATE[root] = (estimate, last)
            due = (estimate is None or time.monotonic() - last >= TRIM_INTERVAL_S
                   or estimate > store_cap(estimate, root))
            if due:
                trim_store(keep=(key,))
    except Exception:  # noqa: BLE001 - housekeeping must never lose the video just written
        log.warning("trimming the video store %s failed", root, exc_info=True)


def hold(video: Any) -> None:
    """Keep ``video``'s folders (``video.folders()``) while it lives; starts the lease thread."""
    global _heartbeat
    with LOCK:  # trims list the live videos on other threads
        _LIVE[id(video)] = video
    if _heartbeat is None:
        with LOCK:
            if _heartbeat is None:
                _heartbeat = threading.Thread(target=_renew_forever, name="spinbot-video-lease",
                                              daemon=True)
                _heartbeat.start()


def _renew_forever() -> None:
    while True:
        time.sleep(max(LEASE_S / 5, 1.0))
        try:
            refresh_leases()
        except Exception:  # noqa: BLE001 - a failed renewal is retried on the next beat
            log.debug("renewing video leases failed", exc_info=True)


def touch(folder: str, force: bool = False) -> bool:
    """Renew ``folder``'s lease (its mtime), at most every `_TOUCH_EVERY_S` unless ``force``;
    False when the folder is gone."""
    now = time.monotonic()
    if not force and now - _TOUCHED.get(folder, -math.inf) < _TOUCH_EVERY_S:
        return True
    try:
        os.utime(folder)
        mtime = os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        return False
    except OSError:  # e.g. another user's folder on a shared temp: usable, not ours to lease
        return os.path.exists(folder)
    with LOCK:  # a trim iterates these tables
        _MINE[folder] = mtime
        _TOUCHED[folder] = now
    return True


def _evict(path: str, seen_mtime_ns: int) -> bool:
    """Remove a finished folder unless someone renewed its lease since ``seen_mtime_ns``."""
    trash = f"{path}{_TRASH}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)  # atomic: a loader sees the whole folder or none
        renewed = os.stat(trash).st_mtime_ns != seen_mtime_ns
    except OSError:
        return False
    if renewed:  # loaded by another process while we decided: give it back
        try:
            os.rename(trash, path)
            return False
        except OSError:  # a fresh copy took its place meanwhile: ours is spare
            pass
    shutil.rmtree(trash, ignore_errors=True)
    return True


def discard(path: str) -> None:
    """Discard a damaged keyed folder (or a stray file under a key's name)."""
    with LOCK:  # a trim iterates the tables
        _discard(path)


def _discard(path: str) -> None:
    trash = f"{path}{_TRASH}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except OSError:
        return
    if os.path.isdir(trash):
        shutil.rmtree(trash, ignore_errors=True)
    else:
        try:
            os.remove(trash)
        except OSError:
            pass
    for table in (_MINE, _TOUCHED, _SIZES):
        table.pop(path, None)


def clear_leftovers(root: str, key: str) -> None:
    """Remove stale partial/trash folders of ``key`` (left by a crashed writer of that video)."""
    prefixes = (key + _PARTIAL, key + _TRASH)
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(prefixes)]
    except OSError:
        return
    with LOCK:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.path not in _WRITERS and _leftover_is_stale(entry.path, entry.name, st):
                shutil.rmtree(entry.path, ignore_errors=True)


def _leftover_is_stale(path: str, name: str, st: os.stat_result) -> bool:
    """Whether a partial or trash folder's owner is gone: its process on this host has ended (or
    is this process, which no longer writes it), or it comes from another host (or an older pack)
    and has not changed for `STALE_FOREIGN_S` (a writer adds a chunk file now and then; a folder
    becomes trash by a rename, which sets its ctime, not its mtime)."""
    owner = _OWNER.search(name)
    if owner and owner.group(2) == _HOST:
        pid = int(owner.group(3))
        if pid == os.getpid():
            return path not in _WRITERS
        return not _pid_alive(pid)
    changed = max(st.st_mtime, st.st_ctime) if owner and owner.group(1) == "trash" else st.st_mtime
    return time.time() - changed > STALE_FOREIGN_S


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid)
    except Exception:  # noqa: BLE001 - when unsure, keep the folder
        return True


def _folder_size(path: str, st: os.stat_result) -> int:
    cached = _SIZES.get(path)
    if cached is not None and cached[0] == st.st_ino:
        return cached[1]
    size = _tree_size(path)
    _SIZES[path] = (st.st_ino, size)
    return size


def _tree_size(path: str) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
