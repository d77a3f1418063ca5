"""The model manifest, the missing-model error and install.py."""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import threading

import pytest

from spinbot.nodes import manifest, runtime
from tests._pack import ROOT


def load_install():
    spec = importlib.util.spec_from_file_location("spinbot_install", os.path.join(ROOT, "install.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_entries_are_complete():
    folders = set(runtime.CORE_MODEL_FOLDERS) | set(runtime.PACK_MODEL_FOLDERS)
    ids = [m.id for m in manifest.models()]
    assert len(ids) == len(set(ids))
    for m in manifest.models():
        assert m.folder in folders, m
        assert m.license and m.source.startswith("https://") and m.stage
        assert m.url is None or m.url.startswith("https://")
        assert m.sha256 is None or len(m.sha256) == 64
    for name, preset in manifest.presets().items():
        assert preset["description"] and set(preset["models"]) <= set(ids), name


def test_missing_model_error_says_what_to_put_where(spinbot_dirs):
    with pytest.raises(manifest.MissingModelError) as err:
        manifest.require_model("upscale_models", "RealESRGAN_x4plus.pth")
    text = str(err.value)
    assert "'RealESRGAN_x4plus.pth'" in text and "'upscale_models'" in text
    assert str(spinbot_dirs["models"] / "upscale_models") in text
    assert "https://github.com/xinntao/Real-ESRGAN" in text
    (spinbot_dirs["models"] / "upscale_models").mkdir()
    (spinbot_dirs["models"] / "upscale_models" / "RealESRGAN_x4plus.pth").write_bytes(b"x")
    assert manifest.require_model("upscale_models", "RealESRGAN_x4plus.pth").endswith("x4plus.pth")


def test_install_requirements_holds_torch(monkeypatch):
    install = load_install()
    seen = {}

    def fake_call(cmd):
        seen["cmd"] = cmd
        seen["constraints"] = open(cmd[cmd.index("-c") + 1]).read()
        return 0

    monkeypatch.setattr(install.subprocess, "call", fake_call)
    assert install.install_requirements() == 0
    from importlib.metadata import version

    assert f"torch=={version('torch')}" in seen["constraints"].splitlines()
    assert seen["cmd"][:4] == [install.sys.executable, "-m", "pip", "install"]
    assert not os.path.exists(seen["cmd"][seen["cmd"].index("-c") + 1])


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_install_models_downloads_verifies_and_is_idempotent(tmp_path, file_server, monkeypatch, capsys):
    install = load_install()
    root, base = file_server
    payload = os.urandom(4096)
    (root / "tiny.pth").write_bytes(payload)
    (root / "bad.pth").write_bytes(b"corrupt")
    digest = hashlib.sha256(payload).hexdigest()
    data = {"version": 1, "presets": {"p": {"description": "d", "models": ["good"]},
                                       "q": {"description": "d", "models": ["bad"]}},
            "models": [
                {"id": "good", "folder": "upscale_models", "path": "tiny.pth", "url": base + "/tiny.pth",
                 "source": base, "size_bytes": 4096, "sha256": digest, "license": "MIT", "stage": "x"},
                {"id": "bad", "folder": "upscale_models", "path": "bad.pth", "url": base + "/bad.pth",
                 "source": base, "size_bytes": None, "sha256": digest, "license": "MIT", "stage": "x"}]}
    fake = tmp_path / "models.json"
    fake.write_text(json.dumps(data))
    monkeypatch.setattr(install, "MANIFEST", str(fake))
    models = tmp_path / "models"
    assert install.install_models("p", str(models), dry_run=False) == 0
    assert (models / "upscale_models" / "tiny.pth").read_bytes() == payload
    capsys.readouterr()
    assert install.install_models("p", str(models), dry_run=False) == 0
    assert "ok       upscale_models/tiny.pth" in capsys.readouterr().out
    assert install.install_models("q", str(models), dry_run=False) == 1
    assert not (models / "upscale_models" / "bad.pth").exists()
    assert not (models / "upscale_models" / "bad.pth.partial").exists()


def test_install_models_offline_prints_what_goes_where(tmp_path, capsys):
    install = load_install()
    assert install.install_models("direct", str(tmp_path), dry_run=True) == 1
    out = capsys.readouterr().out
    assert f"put it at {tmp_path}/tts/F5TTS_v1_Base/model_1250000.safetensors" in out
    assert "https://huggingface.co/SWivid/F5-TTS" in out
    assert install.install_models("nope", str(tmp_path), dry_run=True) == 2
