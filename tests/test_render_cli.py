"""The renderer without servers: job files (JSONL, CSV), the scheduler's retry rules, a light
start (no torch, no node modules) and the message when Ray is missing.

The renderer against real ComfyUI servers is tests/test_render_batch.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spinbot.nodes import client as C
from spinbot.nodes.render import engine as E
from spinbot.nodes.render import jobs as J
from tests._pack import ROOT


def test_jsonl_jobs_keep_types_resolve_files_beside_the_batch_and_default_ids(tmp_path):
    (tmp_path / "me.png").write_bytes(b"png")
    text = "\n".join([
        json.dumps({"id": "a", "workflow": "photo_with_audio",
                    "set": {"Portrait.image": "me.png", "Video Combine.fps": 12, "Narration.audio": "x.wav"}}),
        "",
        "# a comment",
        json.dumps({"workflow": "direct", "set": {"Narration.narration": "0042"}, "split": {"max": 2}}),
    ])
    jobs = J.parse_jobs(text, "jsonl", str(tmp_path))
    assert [j["id"] for j in jobs] == ["a", "job4"]
    assert jobs[0]["set"]["Portrait.image"] == str(tmp_path / "me.png")  # a file beside the batch
    assert jobs[0]["set"]["Narration.audio"] == "x.wav"  # not a local file: a name on the server
    assert jobs[1]["split"] == {"max": 2}  # extra keys are kept for the segment fan-out
    # --set strings round-trip every type through the client's parser ("0042" stays text)
    wf = C.apply_overrides(C.load_workflow("photo_with_audio"), J.assignments(jobs[0]), lambda p: "up.png")
    assert wf["3"]["inputs"]["fps"] == 12 and wf["1"]["inputs"]["image"] == "up.png"
    assert C.parse_assignment(J.assignments(jobs[1])[0])[2] == "0042"


def test_csv_jobs_read_title_input_columns_like_set_values(tmp_path):
    text = ("id,workflow,Video Combine.fps,Narration.narration,split\n"
            "one,direct,12.5,\"Hello, world\",\n"
            ",,,,\n"
            "two,direct,,7,3\n")
    jobs = J.parse_jobs(text, "csv", str(tmp_path))
    assert jobs == [
        {"id": "one", "workflow": "direct", "set": {"Video Combine.fps": 12.5, "Narration.narration": "Hello, world"}},
        {"id": "two", "workflow": "direct", "set": {"Narration.narration": 7}, "split": 3},
    ]
    path = tmp_path / "b.csv"
    path.write_text(text)
    assert J.read_jobs(str(path)) == jobs


@pytest.mark.parametrize("fmt, text, message", [
    ("jsonl", '{"id": "a", "workflow": "direct"}\n{"id": "a", "workflow": "direct"}', "line 2: id 'a' is used twice"),
    ("jsonl", '{"id": "a", "workflow": "direct"}\n{not json', "line 2: not JSON"),
    ("jsonl", '[1, 2]', "line 1: a job is a JSON object"),
    ("jsonl", '{"id": "a"}', "line 1: no 'workflow'"),
    ("jsonl", '{"id": "../up", "workflow": "direct"}', "line 1: id '../up' must be"),
    ("jsonl", '{"workflow": "direct", "set": {"fps": 3}}', "set key 'fps' is not Title.input"),
    ("csv", "id,Video Combine.fps\na,3\n", "needs a 'workflow' column"),
    ("csv", "id,workflow\na,direct,extra\n", "line 2: more cells than header columns"),
])
def test_bad_job_files_name_the_line_and_the_problem(fmt, text, message):
    with pytest.raises(J.JobFileError, match=message.replace(".", r"\.").replace("(", r"\(")):
        J.parse_jobs(text, fmt)


def _jobs(n):
    return [{"id": f"j{i}", "workflow": "w"} for i in range(n)]


def test_scheduler_spreads_jobs_with_back_pressure():
    s = E.Scheduler(_jobs(7), ["A", "B"], per_server=2)
    first = s.assign()
    assert len(first) == 4 and {srv for srv, _ in first} == {"A", "B"}
    assert all(len(s.in_flight[x]) == 2 for x in "AB") and len(s.pending) == 3
    assert s.assign() == []  # both full: nothing more until one returns
    server, task = first[0]
    assert s.finish(server, task.job["id"], E.OK)[0] == "done"
    again = s.assign()
    assert [srv for srv, _ in again] == [server]


def test_a_job_whose_server_died_is_retried_elsewhere_at_most_r_times():
    s = E.Scheduler(_jobs(1), ["A", "B", "C"], per_server=1, retries=2)
    (srv1, task), = s.assign()
    decision, _ = s.finish(srv1, "j0", E.SERVER_GONE)
    assert decision == "retry" and srv1 not in s.alive
    (srv2, task), = s.assign()
    assert srv2 != srv1 and task.attempts == 2
    assert s.finish(srv2, "j0", E.SERVER_GONE)[0] == "retry"
    (srv3, task), = s.assign()
    assert srv3 not in (srv1, srv2) and task.attempts == 3
    # R=2 retries used: a third dead server fails the job instead of looping
    decision, task = s.finish(srv3, "j0", E.SERVER_GONE)
    assert decision == "failed" and task.tried == [srv1, srv2, srv3] and not s.busy


def test_a_validation_failure_is_not_retried_and_the_server_stays_in_use():
    s = E.Scheduler(_jobs(2), ["A"], per_server=1, retries=5)
    (srv, task), = s.assign()
    assert s.finish(srv, task.job["id"], E.FAILED)[0] == "failed"
    assert s.alive == {"A"}
    (srv, task), = s.assign()
    assert task.job["id"] == "j1" and task.attempts == 1


def test_with_every_server_gone_the_queue_is_reported_not_waited_on():
    s = E.Scheduler(_jobs(3), ["A"], per_server=1, retries=3)
    (srv, task), = s.assign()
    assert s.finish(srv, "j0", E.SERVER_GONE)[0] == "failed"  # nowhere left to retry
    assert [t.job["id"] for t in s.orphaned()] == ["j1", "j2"] and not s.busy


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_renderer_starts_without_torch_or_the_node_modules():
    done = _run("import sys, runpy\n"
                "import nodes.render.__main__, nodes.render.engine, nodes.render.servers\n"
                "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'ray', 'av')\n"
                "               or m in ('nodes.runtime', 'nodes.video'))\n"
                "print(heavy)\n"
                "sys.argv = ['render', '--help']\n"
                "runpy.run_module('nodes.render', run_name='__main__')\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[]"
    assert "{one,batch}" in done.stdout


BLOCK_RAY = ("import sys, runpy\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'ray' or name.startswith('ray.'):\n"
             "            raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n"
             "sys.meta_path.insert(0, Block())\n"
             "sys.argv = ['render', *sys.argv[1:]]\n"
             "runpy.run_module('nodes.render', run_name='__main__')\n")


def test_missing_ray_names_the_pip_command(tmp_path):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(json.dumps({"id": "a", "workflow": "photo_with_audio"}) + "\n")
    done = _run(BLOCK_RAY, "batch", str(batch), "--server", "http://127.0.0.1:9")
    assert done.returncode != 0
    assert "pip install -r nodes/render/requirements.txt" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.exists(J.results_dir(str(batch)))  # nothing started, nothing written
    # `one` is the plain client and does not need Ray: it gets as far as the (absent) server
    done = _run(BLOCK_RAY, "one", "photo_with_audio", "--server", "http://127.0.0.1:9", "--quiet")
    assert done.returncode == 1 and "cannot reach ComfyUI at http://127.0.0.1:9" in done.stderr


def test_mp4_check_refuses_truncated_and_foreign_files(tmp_path):
    from tests.media import tone, write_wav
    import av
    import numpy as np

    good = tmp_path / "good.mp4"
    with av.open(str(good), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())
    assert J.mp4_is_valid(str(good))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wav = tmp_path / "a.wav"
    write_wav(str(wav), tone(0.5, 16000), 16000)
    assert not J.mp4_is_valid(str(cut)) and not J.mp4_is_valid(str(wav))
    assert not J.mp4_is_valid(str(tmp_path / "missing.mp4"))


def _closing_server():
    """A TCP server that accepts each connection and closes it at once (a dying ComfyUI)."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return sock


def test_refused_and_dropped_connections_mean_server_gone_not_a_job_failure(tmp_path):
    from tests.comfyui_server import free_port

    refused = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(C.ServerUnreachable, match="cannot reach ComfyUI"):
        C.Client(refused).get_json("/system_stats")
    sock = _closing_server()
    try:
        dropped = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(C.ServerUnreachable, match="dropped the connection"):
            C.Client(dropped).get_json("/system_stats")
        workflow, files = E.prepare({"id": "a", "workflow": "photo_with_audio", "set": {}})
        for url in (refused, dropped):
            result = E.ServerWorker(url, timeout=20).run("a", workflow, files)
            assert result["status"] == E.SERVER_GONE and result["files"] == [], result
            assert not E.ServerWorker(url).ping()
    finally:
        sock.close()


def test_prepare_uploads_each_local_file_under_a_content_name(tmp_path):
    one, two = tmp_path / "a", tmp_path / "b"
    one.mkdir(), two.mkdir()
    (one / "me.png").write_bytes(b"first")
    (two / "me.png").write_bytes(b"second")
    names = []
    for folder in (one, two):
        wf, files = E.prepare({"id": "x", "workflow": "photo_with_audio",
                               "set": {"Portrait.image": str(folder / "me.png")}})
        (name, data), = files.items()
        assert wf["1"]["inputs"]["image"] == name and name.endswith("-me.png")
        assert data == (folder / "me.png").read_bytes()
        names.append(name)
    assert names[0] != names[1]  # same file name, different pictures: never overwrite on a server
    with pytest.raises(C.ClientError, match="no node titled"):
        E.prepare({"id": "x", "workflow": "photo_with_audio", "set": {"Nobody.image": 1}})


def test_starting_servers_needs_a_comfyui_and_reports_a_failed_start(tmp_path, monkeypatch):
    from spinbot.nodes.render import servers as S

    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="set COMFYUI_PATH"):
        S.start_servers(1)
    with pytest.raises(FileNotFoundError, match="main.py is missing"):
        S.LocalComfyUI(str(tmp_path))
    fake = tmp_path / "ComfyUI"
    fake.mkdir()
    (fake / "main.py").write_text("import sys\nprint('boom: no torch here')\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match="(?s)exited during start-up.*boom: no torch here"):
        S.start_servers(2, comfy_path=str(fake))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert S.gpu_count() == 0
    done = subprocess.run([sys.executable, "-m", "nodes.render", "one", "direct", "--start", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")})
    assert done.returncode == 2 and "set COMFYUI_PATH" in done.stderr, done.stderr
