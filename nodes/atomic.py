"""Files that appear whole or not at all: written under a temp name beside the target, renamed."""
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
