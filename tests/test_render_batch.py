"""The batch renderer against two real ComfyUI servers (photo_with_audio: no models needed).

Both servers start once for the module (product code: nodes/render/servers.py); the test that kills
one runs last. Ray runs embedded, started once here so each batch does not pay its start-up.
Skipped unless COMFYUI_PATH points at a ComfyUI checkout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests._pack import ROOT
from tests.media import astronaut, tone, write_wav
from tests.mp4probe import probe

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]

FPS = 10


@pytest.fixture(scope="module")
def servers():
    from spinbot.nodes.render import servers as S

    started = S.start_servers(2, comfy_path=COMFYUI_PATH)
    yield started
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    yield ray
    ray.shutdown()


def _history(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url + "/history", timeout=30) as r:
        return len(json.loads(r.read()))


def _batch(folder, n: int, extra: list[dict] = (), base: float = 0.6, step: float = 0.2,
           fps: int = FPS, size: int = 64) -> str:
    """n jobs whose narrations last base + step*i s (so each output proves which job it is)."""
    folder.mkdir(exist_ok=True)
    Image.fromarray(astronaut(size)).save(folder / "portrait.png")
    lines = []
    for i in range(n):
        write_wav(str(folder / f"n{i}.wav"), tone(base + step * i, 24000, freq=220 + 40 * i), 24000)
        lines.append({"id": f"clip{i}", "workflow": "photo_with_audio",
                      "set": {"Portrait.image": "portrait.png", "Narration.audio": f"n{i}.wav",
                              "Video Combine.fps": fps, "Video Combine.preset": "ultrafast"}})
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in [*lines, *extra]))
    return str(path)


def _check_clips(results: str, n: int, base: float = 0.6, step: float = 0.2, fps: int = FPS) -> None:
    for i in range(n):
        p = probe(os.path.join(results, f"clip{i}.mp4"))
        want = base + step * i
        assert abs(p.audio_seconds - want) < 0.05, (i, p.audio_seconds)
        assert abs(p.video_frames - round(want * fps)) <= 1, (i, p.video_frames)


def _records(results: str) -> list[dict]:
    with open(os.path.join(results, "report.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_six_jobs_over_two_servers_then_a_rerun_does_no_work(servers, ray_local, tmp_path):
    from spinbot.nodes.render import engine as E
    from spinbot.nodes.render import jobs as J

    batch = _batch(tmp_path / "b", 6)
    results = J.results_dir(batch)
    urls = [s.url for s in servers]
    records = E.run_batch(J.read_jobs(batch), urls, results, quiet=True)
    assert sorted(r["id"] for r in records) == [f"clip{i}" for i in range(6)]
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in records), records
    assert {r["server"] for r in records} == set(urls)  # both servers used
    assert all(r["seconds"] > 0 for r in records)
    _check_clips(results, 6)
    assert _records(results) == records
    with open(os.path.join(results, "report.csv")) as f:
        assert f.readline().strip() == "id,status,server,seconds,output,error,attempts,time"
        assert len(f.readlines()) == 6

    # Again, through the command line (embedded Ray of its own): nothing is queued anywhere.
    queued = [_history(u) for u in urls]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "nodes.render", "batch", batch, "--quiet",
                           *sum((["--server", u] for u in urls), [])],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "0 rendered, 6 skipped" in done.stderr, done.stderr
    assert [_history(u) for u in urls] == queued
    assert [r["status"] for r in _records(results)[6:]] == ["skipped"] * 6


def test_a_validation_error_is_reported_once_and_the_others_finish(servers, ray_local, tmp_path):
    from spinbot.nodes.render import engine as E
    from spinbot.nodes.render import jobs as J

    bad = {"id": "bad", "workflow": "photo_with_audio",
           "set": {"Portrait.image": "portrait.png", "Narration.audio": "n0.wav",
                   "Video Combine.preset": "warp-speed"}}
    batch = _batch(tmp_path / "v", 2, [bad])
    results = J.results_dir(batch)
    records = {r["id"]: r for r in E.run_batch(J.read_jobs(batch), [s.url for s in servers], results,
                                               quiet=True, retries=3)}
    assert records["bad"]["status"] == "failed" and records["bad"]["attempts"] == 1
    assert "HTTP 400" in records["bad"]["error"] and "preset" in records["bad"]["error"]
    assert not os.path.exists(os.path.join(results, "bad.mp4"))
    assert records["clip0"]["status"] == records["clip1"]["status"] == "ok"
    _check_clips(results, 2)


def test_one_renders_through_the_client(servers, tmp_path):
    folder = tmp_path / "one"
    _batch(folder, 1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "nodes.render", "one", "photo_with_audio", "--quiet",
                           "--set", f"Portrait.image={folder / 'portrait.png'}",
                           "--set", f"Narration.audio={folder / 'n0.wav'}",
                           "--set", f"Video Combine.fps={FPS}",
                           "--server", servers[0].url, "--out", str(folder / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip().splitlines()[0]
    assert path.endswith(".mp4") and abs(probe(path).audio_seconds - 0.6) < 0.05


def test_a_prompt_the_server_no_longer_has_is_lost_not_waited_on(servers, tmp_path):
    """A restarted server forgets its queue; here the pending prompt is deleted from it instead."""
    import time
    import urllib.request

    from spinbot.nodes import client as C
    from spinbot.nodes.render import jobs as J

    batch = _batch(tmp_path / "lost", 2, base=40.0, step=-38.0, fps=25, size=512)
    long_job, short_job = J.read_jobs(batch)
    c = C.Client(servers[0].url)
    running = c.queue(C.apply_overrides(C.load_workflow("photo_with_audio"), J.assignments(long_job), c.upload))
    pending = c.queue(C.apply_overrides(C.load_workflow("photo_with_audio"), J.assignments(short_job), c.upload))
    assert c.queued(pending)

    def post(path, payload):
        req = urllib.request.Request(c.server + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()

    post("/queue", {"delete": [pending]})
    t = time.time()
    with pytest.raises(C.PromptLost, match="neither queued nor finished"):
        c.wait(pending, timeout=120)
    assert time.time() - t < 10
    post("/interrupt", {})
    with pytest.raises(C.ClientError, match="failed|cancelled"):
        c.wait(running, timeout=120)  # leaves the server idle for the next test


def test_a_server_killed_mid_batch_loses_no_job(servers, ray_local, tmp_path):
    """Runs last: it terminates one of the module's servers."""
    from spinbot.nodes.render import engine as E
    from spinbot.nodes.render import jobs as J

    # Jobs of a second or more each (4 s+ at 25 fps, 512 px): when the first one is reported, the
    # killed server still holds the two others it was given (3 in flight per server).
    clips = dict(base=4.0, step=0.5, fps=25)
    batch = _batch(tmp_path / "k", 6, size=512, **clips)
    results = J.results_dir(batch)
    by_url = {s.url: s for s in servers}
    killed = []

    def kill_after_first(record):
        if record["status"] == "ok" and not killed:
            victim = by_url[record["server"]]
            victim.proc.terminate()
            victim.proc.wait(30)
            killed.append(victim.url)

    records = E.run_batch(J.read_jobs(batch), list(by_url), results, quiet=True, per_server=3,
                          retries=2, on_record=kill_after_first)
    assert killed and all(r["status"] == "ok" for r in records), records
    assert sorted(r["id"] for r in records) == [f"clip{i}" for i in range(6)]
    _check_clips(results, 6, **clips)
    retried = [r for r in records if r["attempts"] > 1]
    assert retried, records  # the killed server's queued jobs came back
    assert all(r["server"] != killed[0] for r in retried)
    assert records[0]["server"] == killed[0]
