"""SPINBOT_VIDEO store limits: a size cap with LRU eviction that never touches a held video (live
handle, joined video, running writer, another process's lease), damaged keyed folders rebuilt on
the next run through real nodes, stale leftovers of crashed writers removed, safe with concurrent
writers (threads and processes)."""
from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest
import torch

from spinbot.nodes.media import MediaError
from spinbot.nodes.video import store, store_limits
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo
from tests._pack import ROOT
from tests.media import tone_audio

H = W = 32
PER_VIDEO = 8 * H * W * 3 + 128  # 8 frames of 32x32 plus the 128-byte .npy header


def numbered(n, offset=0, h=H, w=W):
    """uint8 frames whose pixels hold their index, so order and identity are checkable."""
    return (np.arange(offset, offset + n, dtype=np.uint8)[:, None, None, None]
            * np.ones((1, h, w, 3), np.uint8))


def put(key, offset=0, n=8):
    return store.write_video(key, 25, iter([numbered(n, offset)]))


def store_bytes():
    """Bytes under the store root, counted independently of the store's own bookkeeping."""
    total = 0
    for folder, _dirs, files in os.walk(store.video_root()):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def entries():
    return sorted(os.listdir(store.video_root()))


def first_pixels(video):
    return video.read()[:, 0, 0, 0].tolist()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def cap(monkeypatch):
    """Set the cap (bytes) through the documented environment setting."""
    def set_cap(nbytes):
        monkeypatch.setenv(store_limits.CACHE_ENV, repr(nbytes / 1e9))
        return nbytes
    return set_cap


def test_store_stays_under_the_cap_while_writing_more_than_the_cap(cap):
    limit = cap(4 * PER_VIDEO + 1000)
    sizes = []
    for i in range(20):
        put(f"v{i:02d}", offset=i)  # the handle is dropped at once: nothing holds the video
        sizes.append(store_bytes())
        assert sizes[-1] <= limit, (i, sizes)
    assert 20 * PER_VIDEO > 4 * limit  # far more than the cap was written
    assert entries() == ["v16", "v17", "v18", "v19"]  # the four most recent
    for i in range(16, 20):
        assert first_pixels(store.load_video(f"v{i}")) == list(range(i, i + 8))


def test_lru_order_keeps_a_recently_loaded_or_read_video(cap, monkeypatch):
    cap(4 * PER_VIDEO + 1000)
    for i in range(4):
        put(f"v{i}", offset=i)
        time.sleep(0.02)  # distinct modification times even on coarse clocks
    assert store.load_video("v0") is not None  # loading renews the lease
    time.sleep(0.02)
    monkeypatch.setattr(store_limits, "_TOUCH_EVERY_S", 0.0)
    handle = store.load_video("v1")
    os.utime(os.path.dirname(handle.chunks[0].path), ns=(1, 1))  # as if loaded long ago ...
    time.sleep(0.02)
    assert first_pixels(handle) == list(range(1, 9))  # ... then read now: the read renews it
    del handle
    time.sleep(0.02)
    put("v4", offset=4)
    assert entries() == ["v0", "v1", "v3", "v4"]  # v2 was the least recently used
    time.sleep(0.02)
    put("v5", offset=5)
    assert entries() == ["v0", "v1", "v4", "v5"]


def test_held_and_joined_videos_and_running_writers_are_never_evicted(cap):
    limit = cap(0)  # everything that is not held goes
    held = put("held", offset=100)
    a, b = put("a", offset=0, n=3), put("b", offset=10, n=2)
    joined = store.concat_videos([a, b])
    del a, b  # only the joined video references them now
    copy = pickle.loads(pickle.dumps(put("pickled", offset=50)))  # an unpickled handle holds too
    with store.VideoWriter("in-flight", 25, chunk_frames=2) as writer:
        writer.write(numbered(5, offset=30))
        for i in range(6):
            put(f"x{i}", offset=i)
        report = store_limits.trim_store()
        assert report.cap == limit and report.after > limit  # over the cap: all of it is held
        assert {"held", "a", "b", "pickled"} <= set(entries())
        assert not any(e.startswith("x") for e in entries())
        assert [e for e in entries() if ".partial-" in e] != []
        in_flight = writer.finish()
    assert first_pixels(in_flight) == list(range(30, 35))
    assert first_pixels(held) == list(range(100, 108))
    assert first_pixels(joined) == [0, 1, 2, 10, 11]
    assert first_pixels(copy) == list(range(50, 58))
    del joined, copy, in_flight
    report = store_limits.trim_store()
    assert entries() == ["held"] and report.removed and report.after == store_bytes()
    del held
    assert store_limits.trim_store().after == 0 and entries() == [] and store_bytes() == 0


def test_sources_of_a_live_joined_video_stay_reusable_by_key(cap):
    """A re-run asks for the sources by key while a joined video of them is still alive (ComfyUI's
    cache): they come back from the store unchanged, not re-rendered."""
    cap(2 * PER_VIDEO)
    joined = store.concat_videos([put("s0", 0), put("s1", 10)])
    for i in range(5):
        put(f"x{i}", offset=i)
    again = store.concat_videos([put("s0", 99), put("s1", 99)])  # reused by key: not re-rendered
    assert again == joined and first_pixels(again) == list(range(8)) + list(range(10, 18))


def test_another_process_lease_is_respected_within_the_grace_period(cap):
    cap(0)
    folder = os.path.dirname(put("theirs").chunks[0].path)
    time.sleep(0.02)  # file times tick coarsely: make this lease differ from the one we gave
    os.utime(folder)  # another process loaded it just now (not a lease this process gave)
    report = store_limits.trim_store()
    assert entries() == ["theirs"] and report.held == 1
    past = time.time_ns() - int((store_limits.LEASE_S + 60) * 1e9)
    os.utime(folder, ns=(past, past))
    assert store_limits.trim_store().removed == ("theirs",) and entries() == []


def test_refresh_leases_renews_held_folders_only():
    held, loose = put("held"), put("loose")
    old = time.time_ns() - int(3600 * 1e9)
    held_dir, loose_dir = (os.path.dirname(v.chunks[0].path) for v in (held, loose))
    for folder in (held_dir, loose_dir):
        os.utime(folder, ns=(old, old))
    del loose
    assert store_limits.refresh_leases() >= 1
    assert os.stat(held_dir).st_mtime_ns > old
    assert os.stat(loose_dir).st_mtime_ns == old


def _leftover(name, age_s=0.0):
    path = os.path.join(store.video_root(), name)
    os.makedirs(path)
    with open(os.path.join(path, "chunk_000000.npy.tmp"), "wb") as f:
        f.write(b"\0" * 1000)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return name


def test_leftovers_of_crashed_writers_are_removed_and_live_ones_kept(cap):
    cap(10**9)  # far above the store: only stale leftovers go
    host, me, stale = store_limits._HOST, os.getpid(), 2 * store_limits.STALE_FOREIGN_S
    gone = [
        _leftover(f"k1.partial-{host}-{dead_pid()}-{uuid.uuid4().hex[:8]}"),  # its process ended
        _leftover(f"k2.trash-{host}-{dead_pid()}-{uuid.uuid4().hex[:8]}"),
        _leftover(f"k3.partial-{host}-{me}-{uuid.uuid4().hex[:8]}"),  # ours, but no writer fills it
        _leftover(f"k4.partial-0badc0de-1-{uuid.uuid4().hex[:8]}", age_s=stale),  # other host, old
        _leftover("k5.partial-1a2b3c4d", age_s=stale),  # an older pack's name, old
    ]
    kept = [
        _leftover(f"k6.partial-{host}-{os.getppid()}-{uuid.uuid4().hex[:8]}"),  # its process runs
        _leftover(f"k7.partial-0badc0de-123-{uuid.uuid4().hex[:8]}"),  # other host, fresh
        _leftover("k8.partial-1a2b3c4d"),
    ]
    before = store_bytes()
    report = store_limits.trim_store()
    assert sorted(report.removed) == sorted(gone) and entries() == sorted(kept)
    assert report.before == before and report.after == store_bytes() == before - 5000


@pytest.mark.parametrize("damage", [
    "truncated chunk", "deleted chunk", "garbage metadata", "deleted metadata",
    "metadata of another format", "truncated audio", "stale partial folder", "a file in the way",
])
def test_damaged_keyed_folder_is_rebuilt_on_the_next_run(damage, caplog, monkeypatch):
    images = torch.rand(20, 24, 20, 3)
    audio = tone_audio(0.8, rate=16000)
    monkeypatch.setattr(store, "CHUNK_BYTES", 8 * 24 * 20 * 3)  # three chunks per video
    (video,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    folder = os.path.dirname(video.chunks[0].path)
    assert len(video.chunks) == 3
    second = video.chunks[1].path
    del video
    if damage == "truncated chunk":
        with open(second, "r+b") as f:
            f.truncate(os.path.getsize(second) - 100)
    elif damage == "deleted chunk":
        os.remove(second)
    elif damage == "garbage metadata":
        with open(os.path.join(folder, "video.json"), "wb") as f:
            f.write(b"\x00{not json")
    elif damage == "deleted metadata":
        os.remove(os.path.join(folder, "video.json"))
    elif damage == "metadata of another format":  # what the previous pack version wrote
        meta = json.load(open(os.path.join(folder, "video.json")))
        meta["version"] = 1
        meta["chunks"] = [c[:2] for c in meta["chunks"]]
        json.dump(meta, open(os.path.join(folder, "video.json"), "w"))
    elif damage == "truncated audio":
        with open(os.path.join(folder, "audio.npy"), "r+b") as f:
            f.truncate(200)
    elif damage == "stale partial folder":  # a writer that died after renaming half of its work
        for name in sorted(os.listdir(folder))[1:]:
            os.remove(os.path.join(folder, name))
        crashed = f"{folder}.partial-{store_limits._HOST}-{dead_pid()}-{uuid.uuid4().hex[:8]}"
        os.rename(folder, crashed)
        os.makedirs(folder)  # and an empty keyed folder
    elif damage == "a file in the way":
        shutil.rmtree(folder)
        open(folder, "wb").write(b"junk")
    caplog.set_level("WARNING", "spinbot.video")
    (again,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    frames = torch.from_numpy(again.read()).float() / 255
    assert torch.allclose(frames, images, atol=0.5 / 255 + 1e-6)
    assert again.audio["waveform"].shape == (1, 1, 12800)
    assert torch.equal(again.audio["waveform"], audio["waveform"])
    assert os.path.dirname(again.chunks[0].path) == folder
    assert store.load_video(again.key) is not None
    assert [e for e in entries() if "." in e] == []  # no partial or trash leftovers
    assert "is damaged" in caplog.text
    (third,) = SpinBotImagesToVideo().convert(images, 25.0, audio=audio)
    assert third.chunks == again.chunks  # rebuilt once, then reused


def test_a_damaged_chunk_under_a_live_handle_is_a_clear_error():
    video = put("live")
    with open(video.chunks[0].path, "r+b") as f:
        f.truncate(500)
    with pytest.raises(MediaError, match="damaged in the temp folder"):
        video.read()
    os.remove(video.chunks[0].path)
    with pytest.raises(MediaError, match="gone from the temp folder"):
        list(video.iter_chunks())


def test_damaged_upscale_output_is_rebuilt_identically(spinbot_dirs):
    from spinbot.nodes.upscale.nodes_upscale import SpinBotUpscale
    from tests import factory

    factory.tiny_realesr_general_x4v3(spinbot_dirs["models"] / "upscale_models")
    widgets = dict(target_scale=0.0, tile=16, overlap=8, precision="auto", frames_per_batch=3)
    source = store.write_video("upscale-src", 12.5, iter([torch.rand(5, 14, 18, 3)]))
    _, out = SpinBotUpscale().upscale("realesr-general-x4v3.pth", video=source, **widgets)
    expected, key = out.read().copy(), out.key
    path = out.chunks[0].path
    del out
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    _, again = SpinBotUpscale().upscale("realesr-general-x4v3.pth", video=source, **widgets)
    assert again.key == key and np.array_equal(again.read(), expected)


def test_two_threads_writing_one_key_get_one_intact_video():
    barrier = threading.Barrier(2)
    results = []

    def frames():
        barrier.wait()
        yield numbered(6, offset=7)

    def write():
        results.append(store.write_video("same", 25, frames()))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert first_pixels(results[0]) == list(range(7, 13)) and entries() == ["same"]


_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from tests._pack import load_pack
    load_pack()
    import numpy as np
    from spinbot.nodes.video import store, store_limits
    store_limits.LEASE_S = 3.0  # leases renew every second (the heartbeat's floor)
    tag, count = sys.argv[1], int(sys.argv[2])
    held = []
    for i in range(count):
        frames = (np.full((8, 32, 32, 3), i, np.uint8),)
        held = (held + [store.write_video(f"{{tag}}{{i:02d}}", 25, iter(frames))])[-2:]
        for video in held:  # the videos this process holds stay intact
            assert video.read()[:, 0, 0, 0].tolist() == [int(video.key[-2:])] * 8, video.key
    print("ok", tag)
""")


def test_two_processes_sharing_the_store_never_break_each_others_videos(cap, monkeypatch):
    limit = cap(3 * PER_VIDEO + 1000)
    script = _CHILD.format(root=ROOT)
    children = [subprocess.Popen([sys.executable, "-c", script, tag, "25"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "SPINBOT_PROGRESS": "0"})
                for tag in ("p", "q")]
    outputs = [c.communicate(timeout=300) for c in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0 and out.startswith("ok"), err[-3000:]
    names = entries()
    assert not [n for n in names if "." in n]  # no partial or trash folder left behind
    assert {"p23", "p24", "q23", "q24"} <= set(names) and len(names) < 50
    for name in names:
        assert first_pixels(store.load_video(name)) == [int(name[-2:])] * 8
    monkeypatch.setattr(store_limits, "LEASE_S", 0.0)  # both processes have ended: their leases too
    assert store_limits.trim_store().after == store_bytes() <= limit


def test_cap_setting_and_default_tied_to_free_disk(monkeypatch, caplog):
    caplog.set_level("WARNING", "spinbot.video")
    monkeypatch.setenv(store_limits.CACHE_ENV, "2.5")
    assert store_limits.store_cap(0) == 2_500_000_000
    monkeypatch.setenv(store_limits.CACHE_ENV, "0")
    assert store_limits.store_cap(123) == 0
    Usage = type("Usage", (), {})
    usage = Usage()
    monkeypatch.setattr(store_limits.shutil, "disk_usage", lambda path: usage)
    monkeypatch.delenv(store_limits.CACHE_ENV)
    usage.free = 10 * 10**9
    assert store_limits.store_cap(4 * 10**9) == 7 * 10**9  # half of free disk plus the store
    usage.free = 10**12
    assert store_limits.store_cap(0) == store_limits.DEFAULT_CAP_BYTES == 32 * 10**9
    monkeypatch.setattr(store_limits, "_warned_cap", False)
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(store_limits.CACHE_ENV, bad)
        assert store_limits.store_cap(0) == store_limits.DEFAULT_CAP_BYTES
    assert caplog.text.count(store_limits.CACHE_ENV) == 1  # said once, not on every trim


def test_standalone_system_temp_folder_follows_the_same_rules(monkeypatch, tmp_path, cap):
    monkeypatch.delenv("SPINBOT_TEMP_DIR")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "systmp"))
    (tmp_path / "systmp").mkdir()
    assert store.video_root() == str(tmp_path / "systmp" / "spinbot" / "spinbot_video")
    crashed = _leftover(f"k.partial-{store_limits._HOST}-{dead_pid()}-{uuid.uuid4().hex[:8]}")
    limit = cap(2 * PER_VIDEO + 1000)
    for i in range(6):
        put(f"v{i}", offset=i)
        assert store_bytes() <= limit
    assert crashed not in entries() and entries() == ["v4", "v5"]


def test_a_trim_pass_over_200_folders_is_cheap(cap):
    cap(10**9)
    for i in range(200):
        store.write_video(f"f{i:03d}", 25, iter([numbered(2, i % 200, h=8, w=8)]))
    gc.collect()
    per = store_bytes() // 200
    cold = store_limits.trim_store()  # first pass: every folder's size is read
    steady = store_limits.trim_store()  # sizes known: the cost paid after later writes
    assert steady.removed == cold.removed == () and steady.after == store_bytes() == steady.before
    evicting = store_limits.trim_store(cap=50 * per)
    assert len(evicting.removed) == 150 and evicting.after == store_bytes() <= 50 * per
    assert entries() == [f"f{i:03d}" for i in range(150, 200)]
    print(f"\ntrim over 200 folders: {cold.seconds * 1e3:.1f} ms cold, "
          f"{steady.seconds * 1e3:.1f} ms with nothing to remove, "
          f"{evicting.seconds * 1e3:.1f} ms removing 150 ({evicting.before} -> {evicting.after} "
          f"bytes, cap {evicting.cap})")
    assert steady.seconds < 2.0 and evicting.seconds < 5.0
