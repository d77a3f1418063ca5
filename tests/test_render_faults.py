"""Faults a fresh user found in the batch renderer (nodes/render): ids that clash with segment
names, addresses and counts checked only after Ray started, Ctrl-C leaving prompts queued, the
scratch folder of a failed batch deleted, and files and job files that are wrong.

No real ComfyUI: dead-server cases use a loopback port where nothing listens, and the Ctrl-C test
a small standard-library HTTP server that answers like ComfyUI's queue (no websocket, so the client
polls /history and /queue).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spinbot.nodes.render import __main__ as M
from spinbot.nodes.render import engine as E
from spinbot.nodes.render import jobs as J
from tests._pack import ROOT


def _dead_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _render(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodes.render", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _jobs_file(tmp_path, *jobs: dict, name: str = "jobs.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return str(path)


GOOD = {"id": "a", "workflow": "photo_with_audio"}


# --------------------------------------------------------------------------- 1: id clashes

@pytest.mark.parametrize("text, message", [
    ('{"id": "long", "workflow": "direct", "split": true}\n{"id": "long.0", "workflow": "direct"}',
     "line 2: id 'long.0' clashes with job 'long' (line 1)"),
    # the later line is named whichever comes first
    ('{"id": "long.3", "workflow": "direct"}\n{"id": "long", "workflow": "direct", "split": 20}',
     "line 2: id 'long.3' clashes with job 'long' (line 2)"),
    # a sub-job's extra output long.0.<k><ext>
    ('{"id": "long", "workflow": "direct", "split": true}\n{"id": "long.0.1", "workflow": "direct"}',
     "line 2: id 'long.0.1' clashes with job 'long'"),
    # not split: its extra outputs are a.<k><ext>, so a.1.mp4 could be either
    ('{"id": "a", "workflow": "direct"}\n\n{"id": "a.1", "workflow": "direct"}',
     "line 3: id 'a.1' clashes with job 'a' (line 1)"),
])
def test_an_id_that_another_jobs_segments_or_extras_use_is_refused(text, message):
    with pytest.raises(J.JobFileError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        J.parse_jobs(text, "jsonl")


def test_ids_with_dots_that_clash_with_nothing_are_kept():
    jobs = J.parse_jobs('{"id": "v1.2", "workflow": "direct"}\n{"id": "v1.3", "workflow": "direct"}\n'
                        '{"id": "long", "workflow": "direct", "split": true}\n{"id": "long.x", "workflow": "direct"}',
                        "jsonl")
    assert [j["id"] for j in jobs] == ["v1.2", "v1.3", "long", "long.x"]
    with pytest.raises(J.JobFileError, match=r"line 3: id 'v1\.2\.0' clashes with job 'v1\.2'"):
        J.parse_jobs("id,workflow\nv1.2,direct\nv1.2.0,direct\n", "csv")


def test_the_cli_refuses_the_clash_before_anything_starts(tmp_path):
    batch = _jobs_file(tmp_path, {"id": "long", "workflow": "direct", "split": True},
                       {"id": "long.0", "workflow": "direct"})
    done = _render("batch", batch, "--server", f"http://127.0.0.1:{_dead_port()}", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "line 2: id 'long.0' clashes with job 'long'" in done.stderr
    assert not os.path.exists(J.results_dir(batch))


# --------------------------------------------------------------------------- 2, 5, 7, 8: checked up front

@pytest.mark.parametrize("server, message", [
    ("not-a-url", "--server 'not-a-url' is not a ComfyUI address (no scheme and no port)"),
    ("ftp://x", "ComfyUI is reached over http or https, not 'ftp'"),
    ("localhost", "--server 'localhost' is not a ComfyUI address (no scheme and no port)"),
    ("http://127.0.0.1:abc", "--server 'http://127.0.0.1:abc' is not a ComfyUI address"),
])
def test_bad_server_addresses_are_refused_like_one_does(tmp_path, server, message):
    batch = _jobs_file(tmp_path, GOOD)
    done = _render("batch", batch, "--server", server, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Ray" not in done.stderr
    assert not os.path.exists(J.results_dir(batch))  # refused before the batch ran
    one = _render("one", "photo_with_audio", "--server", server, "--quiet", timeout=60)
    assert one.returncode == 2 and message in one.stderr  # the same words from both commands


@pytest.mark.parametrize("args, message", [
    (["--per-server", "0"], "argument --per-server: 0 is too small"),
    (["--retries", "-1"], "argument --retries: -1 is too small"),
    (["--start", "-1"], "argument --start: -1 is too small"),
    (["--per-server", "two"], "argument --per-server: 'two' is not a whole number"),
    (["--timeout", "0"], "argument --timeout: 0 is not a positive number of seconds"),
    (["--timeout", "nan"], "argument --timeout: nan is not a positive number of seconds"),
])
def test_bad_counts_are_refused_by_the_argument_parser(tmp_path, args, message):
    batch = _jobs_file(tmp_path, GOOD)
    with pytest.raises(SystemExit) as exit_:
        M.main(["batch", batch, "--server", "http://127.0.0.1:9", *args])
    assert exit_.value.code == 2
    done = _render("batch", batch, "--server", "http://127.0.0.1:9", *args, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_missing_models_dir_is_refused_before_servers_start(tmp_path, capsys):
    batch = _jobs_file(tmp_path, GOOD)
    missing = str(tmp_path / "no-models")
    # COMFYUI_PATH need not be set: the check comes before any server would start
    assert M.main(["batch", batch, "--start", "1", "--models-dir", missing]) == 2
    assert f"--models-dir {missing!r} is not a folder" in capsys.readouterr().err
    assert M.main(["one", "direct", "--start", "1", "--models-dir", missing]) == 2
    assert f"--models-dir {missing!r} is not a folder" in capsys.readouterr().err


def test_an_empty_job_file_is_an_error(tmp_path, capsys):
    for name, text in (("empty.jsonl", ""), ("comments.jsonl", "# nothing yet\n\n"), ("empty.csv", "id,workflow\n")):
        path = tmp_path / name
        path.write_text(text)
        assert M.main(["batch", str(path), "--server", "http://127.0.0.1:9"]) == 2
        assert f"error: no jobs in {path}" in capsys.readouterr().err
        assert not os.path.exists(J.results_dir(str(path)))


@pytest.mark.parametrize("job, message", [
    ({"id": "w", "workflow": "no_such_workflow"}, "job w: no workflow file 'no_such_workflow'"),
    ({"id": "t", "workflow": "photo_with_audio", "set": {"Video Combine.fsp": 3}},
     "job t: --set 'Video Combine.fsp=3': "),
    ({"id": "s", "workflow": "direct", "split_seconds": -4}, "job 's': split_seconds must be a positive"),
    ({"id": "s2", "workflow": "direct", "split": "soon"}, "job 's2'"),
    ({"id": "f", "workflow": "photo_with_audio", "set": {"Portrait.image": "pics/me.png"}},
     "job f: local file not found: pics/me.png"),
    ({"id": "g", "workflow": "photo_with_audio", "set": {"Narration.audio": "voice.wav"}},
     "job g: local file not found: voice.wav"),
])
def test_bad_jobs_are_refused_before_ray_or_servers_start(tmp_path, capsys, job, message):
    batch = _jobs_file(tmp_path, GOOD, job)
    # --start 1 without COMFYUI_PATH would fail with "set COMFYUI_PATH" if it were reached
    env_comfy = os.environ.pop("COMFYUI_PATH", None)
    try:
        assert M.main(["batch", batch, "--start", "1"]) == 2
    finally:
        if env_comfy is not None:
            os.environ["COMFYUI_PATH"] = env_comfy
    err = capsys.readouterr().err
    assert message in err, err
    assert "COMFYUI_PATH" not in err and not os.path.exists(J.results_dir(batch))


def test_files_that_exist_and_server_names_without_a_path_pass_the_check(tmp_path):
    (tmp_path / "me.png").write_bytes(b"\x89PNG")
    jobs = J.read_jobs(_jobs_file(tmp_path, {"id": "a", "workflow": "photo_with_audio",
                                             "set": {"Portrait.image": "me.png", "Narration.audio": "voice"}}))
    assert M.check_jobs(jobs) == []
    assert J.looks_like_missing_file("sub/x") and J.looks_like_missing_file("x.WAV")
    assert not J.looks_like_missing_file("voice") and not J.looks_like_missing_file(3)


# --------------------------------------------------------------------------- 3: --address

def test_an_address_where_nothing_listens_fails_at_once(tmp_path):
    port = _dead_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RuntimeError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
            M.check_address(address, timeout=2)
    with pytest.raises(RuntimeError, match="is not HOST:PORT"):
        M.check_address("somewhere")
    batch = _jobs_file(tmp_path, GOOD)
    t0 = time.time()
    done = _render("batch", batch, "--server", "http://127.0.0.1:9", "--address", f"127.0.0.1:{port}",
                   timeout=90)
    assert done.returncode == 2, done.stderr
    assert f"error: --address '127.0.0.1:{port}': no Ray cluster answers" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert time.time() - t0 < 60  # Ray's own wait on such an address lasts minutes


def test_address_auto_without_a_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    batch = _jobs_file(tmp_path, GOOD)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = _render("batch", batch, "--server", "http://127.0.0.1:9", "--address", "auto", "--quiet",
                   timeout=110, env=env)
    if "Ray cluster" not in done.stderr and done.returncode != 2:
        pytest.skip("a Ray cluster is running on this machine")  # pragma: no cover
    assert done.returncode == 2, done.stderr
    assert "error: cannot join the Ray cluster at auto" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- 4: Ctrl-C

class FakeQueue:
    """A ComfyUI look-alike for the queue: /prompt queues, nothing ever finishes; /queue lists the
    first prompt as running and the others (and one of another client) as pending; deletions and
    interrupts are recorded."""

    def __init__(self):
        self.prompts: list[str] = []
        self.other = str(uuid.uuid4())  # another client's prompt: must stay
        self.deleted: list[str] = []
        self.interrupted: list = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, payload):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/queue":
                    with fake.lock:
                        live = [p for p in fake.prompts if p not in fake.deleted]
                        running = [[0, live[0], {}, {}, []]] if live else []
                        pending = [[i + 1, p, {}, {}, []] for i, p in enumerate([*live[1:], fake.other])]
                    return self._send(200, {"queue_running": running, "queue_pending": pending})
                if self.path.startswith("/history") or self.path == "/system_stats":
                    return self._send(200, {})
                return self._send(404, {"error": "not here"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with fake.lock:
                    if self.path == "/prompt":
                        pid = str(uuid.uuid4())
                        fake.prompts.append(pid)
                        return self._send(200, {"prompt_id": pid, "number": len(fake.prompts)})
                    if self.path == "/queue":
                        fake.deleted += body.get("delete", [])
                        return self._send(200, {})
                    if self.path == "/interrupt":
                        fake.interrupted.append(body.get("prompt_id"))
                        return self._send(200, {})
                return self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_queue():
    fake = FakeQueue()
    yield fake
    fake.close()


def test_cancel_takes_off_only_this_batchs_prompts(fake_queue):
    import urllib.request

    for _ in range(3):
        urllib.request.urlopen(urllib.request.Request(fake_queue.url + "/prompt", b"{}", method="POST"))
    ours = set(fake_queue.prompts[:2])  # the third was queued by someone else
    acted = E.cancel_prompts(fake_queue.url, ours)
    assert sorted(acted) == sorted(ours)
    assert fake_queue.deleted == [fake_queue.prompts[1]]        # the pending one of ours
    assert fake_queue.interrupted == [fake_queue.prompts[0]]    # the running one of ours
    assert fake_queue.other not in fake_queue.deleted
    assert E.cancel_prompts(f"http://127.0.0.1:{_dead_port()}", ours) == []  # a dead server is skipped


def test_ctrl_c_takes_the_batchs_prompts_off_the_server_and_exits_130(tmp_path, fake_queue):
    pytest.importorskip("ray")
    batch = _jobs_file(tmp_path, *({"id": f"j{i}", "workflow": "photo_with_audio"} for i in range(3)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "nodes.render", "batch", batch, "--server",
                             fake_queue.url, "--quiet"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 150
        while len(fake_queue.prompts) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert len(fake_queue.prompts) == 2, "the batch did not queue two prompts (per-server 2)"
        time.sleep(1.5)  # the driver polls the actors' prompt ids every 0.5 s
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert ("interrupted: 0 jobs finished, 3 left; run the same command again to resume"
            in err.strip().splitlines()[-1]), err
    assert fake_queue.deleted == [fake_queue.prompts[1]]
    assert fake_queue.interrupted == [fake_queue.prompts[0]]
    assert fake_queue.other not in fake_queue.deleted


# --------------------------------------------------------------------------- 6: keep a failed batch's log

def test_a_failed_batch_keeps_the_started_servers_folder_and_says_where_the_log_is(tmp_path, monkeypatch, capsys):
    from spinbot.nodes.render import servers as S

    stopped = []

    class Started:
        def __init__(self, base):
            self.url, self.base_dir = "http://127.0.0.1:1", str(base)
            self.log_path = os.path.join(self.base_dir, "comfyui.log")

        def stop(self, keep=False):
            stopped.append(keep)

    def run_batch(jobs, urls, results, **kw):
        return [{"id": "a", "status": "failed", "error": "the prompt failed: boom"},
                {"id": "b", "status": "ok"}][: len(jobs)]

    monkeypatch.setattr(S, "start_servers", lambda *a, **k: [Started(tmp_path / "scratch")])
    monkeypatch.setattr(E, "run_batch", run_batch)
    batch = _jobs_file(tmp_path, GOOD)
    assert M.main(["batch", batch, "--start", "1"]) == 1
    err = capsys.readouterr().err
    assert stopped == [True]
    assert f"its log: {tmp_path / 'scratch' / 'comfyui.log'}" in err
    batch2 = _jobs_file(tmp_path, GOOD, {"id": "b", "workflow": "photo_with_audio"}, name="two.jsonl")
    monkeypatch.setattr(E, "run_batch", lambda jobs, *a, **k: [{"id": j["id"], "status": "ok"} for j in jobs])
    assert M.main(["batch", batch2, "--start", "1"]) == 0
    assert stopped == [True, False] and "its log" not in capsys.readouterr().err


def test_stop_keep_leaves_the_scratch_folder(tmp_path):
    """The real LocalComfyUI with a stand-in main.py that just sleeps (no ComfyUI needed)."""
    from spinbot.nodes.render import servers as S

    fake = tmp_path / "ComfyUI"
    fake.mkdir()
    (fake / "main.py").write_text("import time\ntime.sleep(60)\n")
    kept = S.LocalComfyUI(str(fake), link_pack=False)
    kept.stop(keep=True)
    assert os.path.isfile(kept.log_path)
    gone = S.LocalComfyUI(str(fake), link_pack=False)
    gone.stop()
    assert not os.path.exists(gone.base_dir)
    import shutil
    shutil.rmtree(kept.base_dir)
