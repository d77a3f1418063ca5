"""The pack inside a real ComfyUI: loads without error and renders over POST /prompt.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README).
"""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

import spinbot
from tests._pack import ROOT
from tests.media import astronaut, speech_wav, tone, write_wav
from tests.mp4probe import probe, workflow_from
from tests.workflow_tools import load_json, validate_api, validate_ui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests.comfyui_server import ComfyUI

    server = ComfyUI(COMFYUI_PATH, str(tmp_path_factory.mktemp("comfy")))
    yield server
    server.stop()


def test_pack_loads_without_import_errors(comfy):
    info = comfy.get("/object_info")
    for name in spinbot.NODE_CLASS_MAPPINGS:
        assert name in info, f"{name} missing from /object_info"
        assert info[name]["category"].startswith("SpinBot/")
    log = comfy.log()
    assert "custom_nodes/ComfyUI-SpinBot" in log, log
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not [line for line in failed if "SpinBot" in line], log


def test_workflows_validate_against_live_object_info(comfy):
    info = comfy.get("/object_info")
    defs = {name: {"input": node["input"], "output": tuple(node["output"])}
            for name, node in info.items()}
    for name in ("LoadImage", "LoadAudio"):
        defs[name]["input"]["required"][next(iter(defs[name]["input"]["required"]))] = (["*"], {})
        defs[name]["upload_widgets"] = 2
    for path in sorted(os.listdir(os.path.join(ROOT, "workflows", "api"))):
        validate_api(load_json(os.path.join(ROOT, "workflows", "api", path)), defs)
        validate_ui(load_json(os.path.join(ROOT, "workflows", path)), defs)


def test_workflows_are_listed_as_templates(comfy):
    templates = comfy.get("/workflow_templates")
    assert "photo_with_audio" in templates.get("ComfyUI-SpinBot", []), templates


def test_photo_with_audio_over_http(comfy):
    inputs = os.path.join(comfy.base_dir, "input")
    Image.fromarray(astronaut(96)).save(os.path.join(inputs, "portrait.png"))
    wav = os.path.join(inputs, "narration.wav")
    if speech_wav(wav, "This video was queued over HTTP.") is None:
        write_wav(wav, tone(1.7, 22050), 22050)
    workflow = load_json(os.path.join(ROOT, "workflows", "api", "photo_with_audio.json"))
    ui = load_json(os.path.join(ROOT, "workflows", "photo_with_audio.json"))
    prompt_id = comfy.queue(workflow, extra_pnginfo={"workflow": ui})
    entry = comfy.wait(prompt_id)
    video = entry["outputs"]["3"]["spinbot_video"][0]
    path = os.path.join(comfy.base_dir, "output", video["subfolder"], video["filename"])
    p = probe(path)
    assert p.video_frames > 0 and p.audio_seconds is not None
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / p.fps
    assert (p.width, p.height) == (96, 96)
    assert workflow_from(p) == ui
    embedded = json.loads(p.metadata["prompt"])  # ComfyUI adds its own keys (is_changed)
    assert {k: v["inputs"] for k, v in embedded.items()} == {k: v["inputs"] for k, v in workflow.items()}


def test_client_uploads_queues_follows_and_downloads(comfy, tmp_path):
    """nodes/client.py: local files uploaded, inputs overridden by title, MP4 downloaded."""
    import subprocess
    import sys

    portrait = tmp_path / "me.png"
    Image.fromarray(astronaut(64)).save(portrait)
    voice = tmp_path / "me.wav"
    if speech_wav(str(voice), "Queued by the SpinBot client.") is None:
        write_wav(str(voice), tone(1.3, 16000), 16000)
    out = tmp_path / "renders"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "nodes", "client.py"), "photo_with_audio",
         "--server", comfy.url, "--set", f"Portrait.image={portrait}", "--set", f"Narration.audio={voice}",
         "--set", "Video Combine.fps=12", "--set", "Video Combine.filename_prefix=SpinBot/client",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr + comfy.log()
    assert "running node 3" in run.stderr  # progress came over the websocket
    paths = run.stdout.split()
    assert len(paths) == 1 and paths[0].endswith(".mp4") and os.path.dirname(paths[0]) == str(out)
    p = probe(paths[0])
    assert (p.width, p.height, round(p.fps)) == (64, 64, 12)
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / 12
    assert os.path.exists(os.path.join(comfy.base_dir, "input", "me.png"))


def test_client_reports_validation_errors(comfy):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "nodes", "client.py"), "photo_with_audio",
         "--server", comfy.url, "--set", "Portrait.image=missing-file.png"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "HTTP 400" in run.stderr and "missing-file.png" in run.stderr, run.stderr


def _chromium() -> str | None:
    import shutil

    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_web_extension_plays_the_mp4_in_the_node(comfy):
    """Headless Chromium: load the drag-and-drop workflow, run it, see the node's <video> play."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("no chromium")
    inputs = os.path.join(comfy.base_dir, "input")
    Image.fromarray(astronaut(128)).save(os.path.join(inputs, "portrait.png"))
    write_wav(os.path.join(inputs, "narration.wav"), tone(1.2, 24000), 24000)
    ui = load_json(os.path.join(ROOT, "workflows", "photo_with_audio.json"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(comfy.url, wait_until="networkidle")
            page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            page.keyboard.press("Escape")  # the templates dialog of a first visit
            page.evaluate("wf => window.app.loadGraphData(wf)", ui)
            page.evaluate("() => window.app.queuePrompt(0)")
            page.wait_for_function(
                "() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)",
                timeout=120_000)
            videos = page.evaluate("() => [...document.querySelectorAll('video')].map(v => ("
                                   "{src: v.src, w: v.videoWidth, h: v.videoHeight, d: v.duration}))")
        finally:
            browser.close()
    assert len(videos) == 1, videos
    assert "subfolder=SpinBot" in videos[0]["src"] and "type=output" in videos[0]["src"]
    assert (videos[0]["w"], videos[0]["h"]) == (128, 128)
    assert videos[0]["d"] == pytest.approx(1.2, abs=0.05)
