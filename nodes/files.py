"""Small file helpers for the pack's on-disk caches: whole-or-nothing writes and LRU trimming."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temp path in ``path``'s folder to write to; on success it is renamed onto ``path``
    (``os.replace``, atomic on one file system), on any exception (Cancel, a crash of the
    writer) it is removed and the exception goes on. So a reader, or a folder listing of caches
    and LoRAs, never sees half a file under the final name.

    The temp name starts with ``.tmp-`` and ends with ``.part``, so listings that filter by the
    final suffix (``.json``, ``.npy``, ``.safetensors``) skip it. The folder must exist.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def trim_oldest(folder: str, suffix: str, max_files: int | None = None,
                max_bytes: int | None = None) -> list[str]:
    """Remove the least recently modified ``*suffix`` files of ``folder`` (readers renew a file's
    mtime with ``os.utime`` on a hit) until at most ``max_files`` are left and they hold at most
    ``max_bytes``. Temp files of `atomic_path` are never counted or removed; files that vanish
    or cannot be removed meanwhile (another process) are skipped. Returns the removed names.
    """
    entries = []
    for name in os.listdir(folder):
        if name.endswith(suffix) and not name.startswith(".tmp-"):
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, name))
    entries.sort()
    count, size = len(entries), sum(e[1] for e in entries)
    removed = []
    for _mtime, nbytes, name in entries:
        if (max_files is None or count <= max_files) and (max_bytes is None or size <= max_bytes):
            break
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            continue
        count, size = count - 1, size - nbytes
        removed.append(name)
    return removed
