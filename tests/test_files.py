"""nodes/files.py: whole-or-nothing writes and LRU trimming of the pack's disk caches."""
from __future__ import annotations

import os

import pytest

from spinbot.nodes.files import atomic_path, trim_oldest


def test_atomic_path_renames_on_success_and_removes_on_failure(tmp_path):
    tmp_path = tmp_path / "cache"  # the test's own folder (conftest puts ComfyUI's beside it)
    tmp_path.mkdir()
    target = tmp_path / "a.json"
    with atomic_path(str(target)) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole" and os.listdir(tmp_path) == ["a.json"]
    with pytest.raises(KeyboardInterrupt):  # Cancel mid-write
        with atomic_path(str(target)) as tmp, open(tmp, "w") as f:
            f.write("ha")
            raise KeyboardInterrupt
    assert target.read_text() == "whole" and os.listdir(tmp_path) == ["a.json"]


def _files(folder, sizes):
    for k, size in enumerate(sizes):
        path = folder / f"{k}.npy"
        path.write_bytes(b"x" * size)
        os.utime(path, (1000 + k, 1000 + k))  # file k is older than file k + 1


def test_trim_oldest_by_count_and_by_bytes_keeps_temp_and_other_files(tmp_path):
    tmp_path = tmp_path / "cache"
    tmp_path.mkdir()
    _files(tmp_path, [10, 10, 10, 10])
    (tmp_path / ".tmp-4.npy.1-x.part").write_bytes(b"x" * 1000)
    (tmp_path / "note.txt").write_bytes(b"x" * 1000)
    assert trim_oldest(str(tmp_path), ".npy", max_files=3) == ["0.npy"]
    os.utime(tmp_path / "1.npy", (2000, 2000))  # read recently: kept before 2 and 3
    assert trim_oldest(str(tmp_path), ".npy", max_bytes=15) == ["2.npy", "3.npy"]
    assert sorted(os.listdir(tmp_path)) == [".tmp-4.npy.1-x.part", "1.npy", "note.txt"]
    assert trim_oldest(str(tmp_path), ".npy", max_files=5, max_bytes=100) == []
