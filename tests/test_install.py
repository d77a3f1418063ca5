"""install.py --models with archives: the insightface pack zip (flat, as the official
``buffalo_l.zip`` is, or with a top-level folder) is fetched from a loopback server, verified by
size and sha256, unpacked into ``models/insightface/models/buffalo_l/`` where the lip-sync stage
finds it, and not fetched again; a wrong hash or an unsafe member path leaves nothing behind."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

from spinbot.nodes.lipsync import faces
from tests.test_manifest import load_install

PACK_PARTS = ("insightface", "models", "buffalo_l")


@pytest.fixture
def server(tmp_path):
    """A loopback file server that counts GET requests per path."""
    root = tmp_path / "served"
    root.mkdir()
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):  # noqa: N802 - http.server's name
            hits[self.path] = hits.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *_a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def detector_bytes() -> bytes:
    from tests.factory_lipsync_faces import tiny_scrfd_model

    return tiny_scrfd_model(seed=10).SerializeToString()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if name.endswith("/"):
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return buf.getvalue()


def use_manifest(install, monkeypatch, tmp_path, url: str, payload: bytes, **override) -> None:
    """The real manifest's buffalo_l entry, pointed at the loopback server with the size and
    sha256 of ``payload`` (the zip served there)."""
    real = json.load(open(install.MANIFEST, encoding="utf-8"))
    entry = dict(next(m for m in real["models"] if m["id"] == "buffalo_l"))
    entry.update(url=url, size_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    entry.update(override)
    data = {"version": 1, "models": [entry],
            "presets": {"faces": {"description": "face detector", "models": ["buffalo_l"]}}}
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(install, "MANIFEST", str(path))


def files_under(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _dirs, names in os.walk(path) for f in names)


def test_flat_zip_lands_in_the_pack_folder_is_found_and_not_fetched_again(
        server, detector_bytes, spinbot_dirs, tmp_path, monkeypatch, capsys):
    install = load_install()
    root, base, hits = server
    payload = zip_bytes({"det_10g.onnx": detector_bytes})
    (root / "buffalo_l.zip").write_bytes(payload)
    use_manifest(install, monkeypatch, tmp_path, base + "/buffalo_l.zip", payload)
    models = spinbot_dirs["models"]

    assert install.install_models("faces", str(models), dry_run=False) == 0
    pack = models.joinpath(*PACK_PARTS)
    assert (pack / "det_10g.onnx").read_bytes() == detector_bytes
    assert files_under(models) == [os.path.join(*PACK_PARTS, "det_10g.onnx")]  # no zip, no .partial
    assert hits == {"/buffalo_l.zip": 1}

    capsys.readouterr()
    assert install.install_models("faces", str(models), dry_run=False) == 0
    assert "ok       insightface/models/buffalo_l" in capsys.readouterr().out
    assert hits == {"/buffalo_l.zip": 1}  # found, not downloaded again

    assert faces.find_pack("buffalo_l") == str(pack)
    assert faces.list_detector_packs() == ["buffalo_l"]
    detector = faces.load_detector("buffalo_l", det_size=160)
    boxes = detector.detect(np.zeros((160, 160, 3), np.uint8))
    assert all(len(b) == 5 for b in boxes)


@pytest.mark.parametrize("top", ["buffalo_l/", "buffalo_l-v0.7/"])
def test_zip_with_a_top_level_folder_lands_in_the_same_place(
        server, detector_bytes, spinbot_dirs, tmp_path, monkeypatch, top):
    install = load_install()
    root, base, hits = server
    payload = zip_bytes({top: b"", top + "det_10g.onnx": detector_bytes, top + "README.txt": b"hi"})
    (root / "pack.zip").write_bytes(payload)
    use_manifest(install, monkeypatch, tmp_path, base + "/pack.zip", payload)
    models = spinbot_dirs["models"]
    assert install.install_models("faces", str(models), dry_run=False) == 0
    assert files_under(models) == [os.path.join(*PACK_PARTS, "README.txt"),
                                   os.path.join(*PACK_PARTS, "det_10g.onnx")]
    assert faces.find_pack("buffalo_l") == str(models.joinpath(*PACK_PARTS))
    assert install.install_models("faces", str(models), dry_run=False) == 0
    assert hits == {"/pack.zip": 1}


@pytest.mark.parametrize("change, message", [
    ({"sha256": "0" * 64}, "sha256"),
    ({"size_bytes": 12345}, "size"),
])
def test_a_zip_that_does_not_match_the_manifest_is_refused_and_nothing_is_left(
        server, detector_bytes, spinbot_dirs, tmp_path, monkeypatch, capsys, change, message):
    install = load_install()
    root, base, hits = server
    payload = zip_bytes({"det_10g.onnx": detector_bytes})
    (root / "buffalo_l.zip").write_bytes(payload)
    use_manifest(install, monkeypatch, tmp_path, base + "/buffalo_l.zip", payload, **change)
    models = spinbot_dirs["models"]
    assert install.install_models("faces", str(models), dry_run=False) == 1
    out = capsys.readouterr().out
    assert "failed" in out and message in out and "does not match" in out
    assert os.listdir(models) == []  # no pack, no zip, no partial, not even empty folders
    with pytest.raises(faces.MissingModelError):
        faces.find_pack("buffalo_l")
    # A second try fetches again (nothing was kept as if it were installed).
    assert install.install_models("faces", str(models), dry_run=False) == 1
    assert hits == {"/buffalo_l.zip": 2}


@pytest.mark.parametrize("evil", ["../evil.onnx", "buffalo_l/../../evil.onnx", "/tmp/evil.onnx",
                                  "a/../../../evil.onnx", "C:/evil.onnx", "..\\evil.onnx"])
def test_zip_slip_is_refused(server, detector_bytes, spinbot_dirs, tmp_path, monkeypatch, capsys,
                             evil):
    install = load_install()
    root, base, _hits = server
    payload = zip_bytes({"det_10g.onnx": detector_bytes, evil: b"owned"})
    (root / "evil.zip").write_bytes(payload)
    use_manifest(install, monkeypatch, tmp_path, base + "/evil.zip", payload)  # hash matches
    models = spinbot_dirs["models"]
    assert install.install_models("faces", str(models), dry_run=False) == 1
    out = capsys.readouterr().out
    assert "unsafe path" in out and repr(evil) in out
    assert os.listdir(models) == []
    assert not any("evil" in name for name in files_under(tmp_path)
                   if not name.startswith("served")), files_under(tmp_path)
    assert not os.path.exists("/tmp/evil.onnx") or os.path.getsize("/tmp/evil.onnx") != 5


def test_an_archive_without_the_files_the_pack_needs_is_refused(
        server, spinbot_dirs, tmp_path, monkeypatch, capsys):
    install = load_install()
    root, base, _hits = server
    payload = zip_bytes({"readme.txt": b"not a face detector"})
    (root / "empty.zip").write_bytes(payload)
    use_manifest(install, monkeypatch, tmp_path, base + "/empty.zip", payload)
    models = spinbot_dirs["models"]
    assert install.install_models("faces", str(models), dry_run=False) == 1
    assert "det_10g.onnx" in capsys.readouterr().out
    assert os.listdir(models) == []


def test_an_existing_pack_is_kept_and_not_fetched(server, detector_bytes, spinbot_dirs, tmp_path,
                                                 monkeypatch, capsys):
    """A pack unpacked by hand (as IPAdapter/ReActor users already have it) counts as installed."""
    install = load_install()
    _root, base, hits = server
    use_manifest(install, monkeypatch, tmp_path, base + "/buffalo_l.zip", b"unused")
    pack = spinbot_dirs["models"].joinpath(*PACK_PARTS)
    pack.mkdir(parents=True)
    (pack / "det_10g.onnx").write_bytes(detector_bytes)
    assert install.install_models("faces", str(spinbot_dirs["models"]), dry_run=False) == 0
    assert hits == {}


def test_real_manifest_archive_entries_name_their_contents():
    install = load_install()
    manifest = json.load(open(install.MANIFEST, encoding="utf-8"))
    archives = [m for m in manifest["models"] if (m.get("url") or "").endswith(".zip")]
    assert [m["id"] for m in archives] == ["buffalo_l"]
    for m in archives:
        assert m["contains"] and m["size_bytes"] and len(m["sha256"]) == 64
    for m in manifest["models"]:
        if m.get("sha256"):
            assert m.get("size_bytes"), f"{m['id']}: a published sha256 comes with its size"
