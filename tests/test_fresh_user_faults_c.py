"""Faults a fresh user hit (issue 14 follow-up, part c), each with the kind it stands for.

Client (nodes/client.py): an address without ``http://`` is reached, one that is no address at
all is one line and exit status 2, a ``--set`` of an input the node does not have is refused naming
the node and its inputs (and the other command-line mistakes of that kind exit 2 without a
traceback and before anything is queued). install.py: a present but wrong model file is reported
as such with what to do, a ``--models-dir`` that is a file and an unknown preset are one error
before anything is installed. The video store: ``SPINBOT_VIDEO_CACHE_GB=inf`` means no cap.

The client's round trip runs against a loopback HTTP server that records what reaches it, and
(with ``COMFYUI_PATH``) against a real ComfyUI on a core-only graph.
"""
from __future__ import annotations

import gc
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from spinbot.nodes import client as C
from spinbot.nodes.video import store, store_limits
from tests._pack import ROOT
from tests.test_manifest import load_install

CLIENT = os.path.join(ROOT, "nodes", "client.py")
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


def run_client(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python nodes/client.py ARGS`` as a user runs it (its own process, its exit status)."""
    full_env = {k: v for k, v in os.environ.items() if k != "COMFYUI_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, CLIENT, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def recorder():
    """A loopback HTTP server that records each request line and answers /prompt the way ComfyUI
    answers an invalid prompt (HTTP 400 with node_errors), so the client stops there."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            seen.append(f"POST {self.path}")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"error": {"message": "Prompt outputs failed validation"},
                               "node_errors": {"1": {"class_type": "LoadImage", "errors": [
                                   {"message": "Invalid image file", "details": "image - x.png"}]}}})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self):  # noqa: N802
            seen.append(f"GET {self.path}")
            self.send_error(404)

        def log_message(self, *_a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- client: addresses

@pytest.mark.parametrize("how", ["--server", "COMFYUI_URL"])
def test_address_without_scheme_reaches_the_server(recorder, how):
    port, seen = recorder
    if how == "--server":
        done = run_client("photo_with_audio", "--server", f"127.0.0.1:{port}", "--quiet")
    else:
        done = run_client("photo_with_audio", "--quiet", env={"COMFYUI_URL": f"localhost:{port}"})
    assert "cannot reach" not in done.stderr, done.stderr
    assert "POST /prompt" in seen, (seen, done.stderr)
    # the server's own answer came back: validation errors, status 1 (a failed render, not usage)
    assert done.returncode == 1 and "HTTP 400" in done.stderr and "Invalid image file" in done.stderr


@pytest.mark.parametrize("address, reason", [
    ("not-a-url", "no scheme and no port"),
    ("ftp://127.0.0.1:8188", "http or https"),
    ("http://127.0.0.1:port", "Port could not be cast"),
    ("127.0.0.1:99999", "out of range"),
    ("http://no host:8188", "no valid host name"),
    ("", "empty"),
])
def test_an_address_that_is_not_one_is_one_line_and_status_2(address, reason):
    for done in (run_client("photo_with_audio", "--server", address, "--quiet"),
                 run_client("photo_with_audio", "--quiet", env={"COMFYUI_URL": address})):
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert reason in lines[0] and "http://127.0.0.1:8188" in lines[0]


def test_addresses_are_normalised_and_checked():
    assert C.server_url("127.0.0.1:18931") == "http://127.0.0.1:18931"
    assert C.server_url(" localhost:18931/ ") == "http://localhost:18931"
    assert C.server_url("https://comfy.example.org") == "https://comfy.example.org"
    assert C.server_url("http://[::1]:8188/") == "http://[::1]:8188"
    assert C.server_url("http://127.0.0.1:8188/comfy") == "http://127.0.0.1:8188/comfy"  # a proxy path
    assert C.Client("127.0.0.1:18931").server == "http://127.0.0.1:18931"
    with pytest.raises(C.UsageError, match="query"):
        C.server_url("http://127.0.0.1:8188/?x=1")
    # a Client made directly (the renderer does) turns urllib's refusal into a ClientError
    for bad in ("http://127.0.0.1:port", "htp://127.0.0.1:8188"):
        with pytest.raises(C.UsageError, match="is not a ComfyUI address"):
            C.Client(bad, timeout=2).get_json("/system_stats")


# --------------------------------------------------------------------------- client: --set

def test_unknown_input_names_the_node_the_input_and_its_inputs():
    wf = C.load_workflow("photo_with_audio")
    with pytest.raises(C.UsageError) as info:
        C.apply_overrides(wf, ["Video Combine.fpz=25"])
    text = str(info.value)
    assert "node 3 'Video Combine' (SpinBotVideoCombine) has no input 'fpz'" in text
    assert "did you mean 'fps'?" in text
    for name in wf["3"]["inputs"]:
        assert name in text  # every input, the linked ones marked as links
    assert "(links: images, audio)" in text
    # the same mistake on any node, addressed by id; nothing is uploaded before the check
    uploads = []
    with pytest.raises(C.UsageError, match="node 1 'Portrait' \\(LoadImage\\) has no input 'imgae'"):
        C.apply_overrides(wf, [f"Portrait.image={CLIENT}", "1.imgae=x.png"], uploads.append)
    assert uploads == []
    assert "fpz" not in wf["3"]["inputs"] and "imgae" not in wf["1"]["inputs"]  # original untouched


def test_unknown_input_on_the_command_line_is_status_2_before_any_request(recorder):
    port, seen = recorder
    done = run_client("photo_with_audio", "--server", f"127.0.0.1:{port}",
                      "--set", "Video Combine.fpz=25", "--quiet")
    assert done.returncode == 2, done.stderr
    assert "has no input 'fpz'" in done.stderr and "Traceback" not in done.stderr
    assert seen == []  # nothing queued with the typo ignored


def test_other_command_line_mistakes_exit_2_without_a_traceback(tmp_path, recorder):
    port, seen = recorder
    broken = tmp_path / "broken.json"
    broken.write_text('{"1": {"class_type": "LoadImage", "inputs": ')
    not_api = tmp_path / "list.json"
    not_api.write_text("[1, 2]")
    out_file = tmp_path / "renders"
    out_file.write_text("a file, not a folder")
    cases = [
        ((str(broken),), "cannot read the workflow"),
        ((str(not_api),), "not an API-format workflow"),
        (("photo_with_audio", "--out", str(out_file)), "is a file"),
        (("photo_with_audio", "--set", "Portait.image=x.png"), "no node titled"),
        (("photo_with_audio", "--set", "Video Combine.images=3"), "is a link"),
        (("no_such_workflow",), "no shipped workflow"),
    ]
    for args, expected in cases:
        done = run_client(*args, "--server", f"127.0.0.1:{port}", "--quiet")
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert seen == []


# --------------------------------------------------------------------------- client: real ComfyUI

@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    if not COMFYUI_PATH:
        pytest.skip("COMFYUI_PATH is not set")
    from tests.comfyui_server import ComfyUI

    server = ComfyUI(COMFYUI_PATH, str(tmp_path_factory.mktemp("comfy")), link_pack=False)
    yield server
    server.stop()


@pytest.mark.comfyui
def test_a_real_comfyui_is_reached_without_the_scheme(comfy, tmp_path):
    """Core nodes only (no pack needed): queue, websocket progress, /history, /view download."""
    wf = {"1": {"class_type": "EmptyImage", "_meta": {"title": "Blank"},
                "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 255}},
          "2": {"class_type": "SaveImage", "_meta": {"title": "Save"},
                "inputs": {"images": ["1", 0], "filename_prefix": "fresh"}}}
    path = tmp_path / "blank.json"
    path.write_text(json.dumps(wf))
    from PIL import Image

    for args, env in ((["--server", f"127.0.0.1:{comfy.port}"], None),
                      ([], {"COMFYUI_URL": f"localhost:{comfy.port}"})):
        out = tmp_path / f"out{len(args)}"
        done = run_client(str(path), *args, "--set", "Blank.width=24", "--out", str(out), "--quiet",
                          env=env, timeout=300)
        assert done.returncode == 0, done.stderr + comfy.log()
        files = done.stdout.split()
        assert len(files) == 1 and Image.open(files[0]).size == (24, 8)
    done = run_client(str(path), "--server", f"127.0.0.1:{comfy.port}", "--set", "Blank.widht=24")
    assert done.returncode == 2 and "node 1 'Blank' (EmptyImage) has no input 'widht'" in done.stderr


# --------------------------------------------------------------------------- install.py

@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def one_model_manifest(install, monkeypatch, tmp_path, url: str, payload: bytes) -> None:
    """A manifest whose preset 'lip' is one file, lipsync/wav2lip_gan.pth, of ``payload``."""
    data = {"version": 1, "presets": {"lip": {"description": "d", "models": ["wav2lip_gan"]}},
            "models": [{"id": "wav2lip_gan", "folder": "lipsync", "path": "wav2lip_gan.pth",
                        "url": url, "source": "https://github.com/Rudrabha/Wav2Lip",
                        "size_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                        "license": "x", "stage": "lipsync"}]}
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(install, "MANIFEST", str(path))


def test_a_present_but_wrong_file_is_reported_as_such(tmp_path, monkeypatch, capsys):
    install = load_install()
    payload = os.urandom(1000)
    one_model_manifest(install, monkeypatch, tmp_path, "http://127.0.0.1:9/wav2lip_gan.pth", payload)
    models = tmp_path / "models"
    target = models / "lipsync" / "wav2lip_gan.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload[:600])
    assert install.install_models("lip", str(models), dry_run=True) == 1
    out = capsys.readouterr().out
    assert "missing" not in out and "put it at" not in out, out
    assert "wrong    lipsync/wav2lip_gan.pth" in out
    assert f"{target} is present but wrong size (got 600 bytes, expected 1000)" in out
    assert f"delete it and download it again, or run: python install.py --models lip --models-dir {models}" in out

    target.write_bytes(bytes(1000))  # the right size, other bytes
    assert install.install_models("lip", str(models), dry_run=True) == 1
    out = capsys.readouterr().out
    expected = hashlib.sha256(payload).hexdigest()
    assert f"present but wrong sha256 (got {hashlib.sha256(bytes(1000)).hexdigest()}, expected {expected})" in out
    # offline (nothing listens on port 9): the failure still says what is wrong with the file
    assert install.install_models("lip", str(models), dry_run=False) == 1
    out = capsys.readouterr().out
    assert "replacing lipsync/wav2lip_gan.pth" in out and "failed" in out
    assert "present but wrong sha256" in out and "put it at" not in out
    assert target.read_bytes() == bytes(1000)  # a failed replacement keeps what was there


def test_a_wrong_file_is_replaced_by_a_verified_download(tmp_path, served, monkeypatch, capsys):
    install = load_install()
    root, base = served
    payload = os.urandom(2048)
    (root / "wav2lip_gan.pth").write_bytes(payload)
    one_model_manifest(install, monkeypatch, tmp_path, base + "/wav2lip_gan.pth", payload)
    models = tmp_path / "models"
    target = models / "lipsync" / "wav2lip_gan.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    assert install.install_models("lip", str(models), dry_run=False) == 0
    out = capsys.readouterr().out
    assert "present but wrong size (got 9 bytes, expected 2048)" in out and "replacing" in out
    assert target.read_bytes() == payload
    assert install.install_models("lip", str(models), dry_run=False) == 0
    assert "ok       lipsync/wav2lip_gan.pth" in capsys.readouterr().out


def test_a_folder_where_the_file_belongs_is_reported_and_kept(tmp_path, served, monkeypatch, capsys):
    install = load_install()
    root, base = served
    payload = os.urandom(512)
    (root / "wav2lip_gan.pth").write_bytes(payload)
    one_model_manifest(install, monkeypatch, tmp_path, base + "/wav2lip_gan.pth", payload)
    models = tmp_path / "models"
    folder = models / "lipsync" / "wav2lip_gan.pth"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("the user's file")
    assert install.install_models("lip", str(models), dry_run=False) == 1
    out = capsys.readouterr().out
    assert "present but a folder, where the model file belongs" in out and "delete it" in out
    assert (folder / "mine.txt").read_text() == "the user's file"


@pytest.mark.parametrize("inside", [False, True])
def test_models_dir_that_is_a_file_is_one_error_up_front(tmp_path, monkeypatch, capsys, inside):
    install = load_install()
    one_model_manifest(install, monkeypatch, tmp_path, "http://127.0.0.1:9/x.pth", b"x")
    a_file = tmp_path / "models.txt"
    a_file.write_text("not a folder")
    models_dir = str(a_file / "models") if inside else str(a_file)
    pip_runs = []
    monkeypatch.setattr(install, "install_requirements", lambda: pip_runs.append(1) or 0)
    for run in (lambda: install.install_models("lip", models_dir, dry_run=False),
                lambda: install.main(["--models", "lip", "--models-dir", models_dir])):
        assert run() == 2
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and out.startswith(f"error: --models-dir {models_dir} "), out
        assert "not a folder" in out and "Errno" not in out and "offline?" not in out
    assert pip_runs == []
    assert a_file.read_text() == "not a folder"


def test_unknown_preset_is_refused_before_pip_runs(monkeypatch, capsys):
    install = load_install()
    pip_runs = []
    monkeypatch.setattr(install, "install_requirements", lambda: pip_runs.append(1) or 0)
    assert install.main(["--models", "dirct"]) == 2
    out = capsys.readouterr().out
    assert "unknown preset 'dirct'; choose from direct, guided" in out
    assert pip_runs == []
    assert install.main(["--models", "direct", "--dry-run", "--models-dir", "/nonexistent/m"]) == 1
    assert pip_runs == []  # a dry run installs nothing either


# --------------------------------------------------------------------------- video store cap

@pytest.mark.parametrize("setting", ["inf", "INF", "Infinity", "none", "None", "unlimited", " unlimited "])
def test_no_cap_settings(monkeypatch, caplog, setting):
    caplog.set_level("WARNING", "spinbot.video")
    monkeypatch.setattr(store_limits, "_warned_cap", False)
    monkeypatch.setenv(store_limits.CACHE_ENV, setting)
    assert store_limits.store_cap(10**15) >= 2**63 - 1  # above any store on any disk
    assert store_limits.CACHE_ENV not in caplog.text  # accepted, not "not a number"


def test_invalid_settings_still_fall_back_to_the_default(monkeypatch):
    monkeypatch.setattr(store_limits, "_warned_cap", False)
    for bad in ("-inf", "nan", "infinite-ish", "none please"):
        monkeypatch.setenv(store_limits.CACHE_ENV, bad)
        assert store_limits.store_cap(0) <= store_limits.DEFAULT_CAP_BYTES


def test_no_cap_keeps_every_video_where_the_default_would_evict(monkeypatch):
    Usage = type("Usage", (), {"free": 0})  # a full disk: the default cap is half the store
    monkeypatch.setattr(store_limits.shutil, "disk_usage", lambda path: Usage())
    monkeypatch.setattr(store_limits, "LEASE_S", 0.0)
    monkeypatch.setenv(store_limits.CACHE_ENV, "inf")
    frames = np.ones((4, 16, 16, 3), np.uint8)
    for i in range(6):
        store.write_video(f"keep{i}", 25, iter([frames * i]))  # handles dropped at once
    gc.collect()
    report = store_limits.trim_store()
    assert report.removed == () and len(os.listdir(store.video_root())) == 6
    monkeypatch.delenv(store_limits.CACHE_ENV)  # the default on a full disk does evict: the check can fail
    assert store_limits.trim_store().removed
