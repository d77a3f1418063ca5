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
from tests.comfyui_fixture import COMFYUI_PATH, comfyui_marks, serve
from tests.media import astronaut, speech_wav, tone, write_wav
from tests.mp4probe import probe, workflow_from
from tests.workflow_tools import load_json, validate_api, validate_ui

pytestmark = comfyui_marks()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests import factory_restore

    # the tiny model folder, as `python -m tests.factory` installs it, and the dubbing
    # workflow's GFPGANv1.4.pth: spandrel takes it only at full size (random, 349 MB), so the
    # factory leaves it out; here the shipped files must validate and load as they are
    yield from serve(tmp_path_factory, "comfy", models=True, skip_first_visit=True,
                     prepare=lambda base: factory_restore.write_gfpgan(
                         base / "models" / "facerestore_models"))


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
    shipped = sorted(name[:-5] for name in os.listdir(os.path.join(ROOT, "workflows")) if name.endswith(".json"))
    assert sorted(templates.get("ComfyUI-SpinBot", [])) == shipped, templates


def _provide_inputs(comfy, ui: dict) -> None:
    """The files a UI workflow's LoadImage/LoadAudio/SpinBot Load Video widgets name, so their
    previews load (and the dropdowns list them)."""
    inputs = os.path.join(comfy.base_dir, "input")
    for node in ui["nodes"]:
        name = (node.get("widgets_values") or [None])[0]
        if node["type"] == "LoadImage" and not os.path.exists(os.path.join(inputs, name)):
            Image.fromarray(astronaut(128)).save(os.path.join(inputs, name))
        elif node["type"] == "LoadAudio" and not os.path.exists(os.path.join(inputs, name)):
            write_wav(os.path.join(inputs, name), tone(1.0, 24000), 24000)
        elif node["type"] == "SpinBotLoadVideo" and not os.path.exists(os.path.join(inputs, name)):
            _write_clip(os.path.join(inputs, name))


def _write_clip(path: str, frames: int = 5) -> None:
    """A short silent H.264 clip of the astronaut (SpinBot Load Video's dropdown lists it)."""
    import av

    with av.open(path, "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(astronaut(64), format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))


UI_NAMES = sorted(name for name in os.listdir(os.path.join(ROOT, "workflows")) if name.endswith(".json"))


@pytest.mark.parametrize("name", UI_NAMES)
def test_ui_workflow_loads_in_the_browser_without_errors(comfy, name):
    """Headless Chromium: each drag-and-drop file loads with no missing-node or error dialog, and
    the frontend keeps every widget value (a widget mismatch would shift or reset them)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("no chromium")
    ui = load_json(os.path.join(ROOT, "workflows", name))
    _provide_inputs(comfy, ui)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
            page.goto(comfy.url, wait_until="networkidle")
            page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            page.keyboard.press("Escape")
            page.evaluate("() => document.querySelectorAll('.p-dialog-mask').forEach(e => e.remove())")
            errors.clear()
            page.evaluate("wf => window.app.loadGraphData(wf)", ui)
            page.wait_for_timeout(1500)
            dialogs = page.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(d => d.innerText)")
            loaded = page.evaluate("() => window.app.graph.serialize().nodes.map("
                                   "n => ({id: n.id, type: n.type, widgets_values: n.widgets_values ?? null}))")
            bad_combos = page.evaluate(
                "() => window.app.graph._nodes.flatMap(n => (n.widgets || []).filter(w => w.type === 'combo'"
                " && Array.isArray(w.options?.values) && !w.options.values.includes(w.value))"
                ".map(w => `node ${n.id} ${w.name}=${w.value}`))")
        finally:
            browser.close()
    assert dialogs == [], dialogs
    assert bad_combos == [], bad_combos
    assert [e for e in errors if "favicon" not in e and not e.startswith("Failed to load resource")] == [], errors
    expected = {n["id"]: (n["type"], n.get("widgets_values")) for n in ui["nodes"]}
    got = {n["id"]: (n["type"], n["widgets_values"]) for n in loaded}
    for nid in expected:
        assert got.get(nid) == expected[nid], f"node {nid}: browser {got.get(nid)} != file {expected[nid]}"
    assert set(got) == set(expected)


@pytest.fixture(scope="module")
def comfy_without_models(tmp_path_factory):
    """A second ComfyUI whose models folder is empty, as a new user's is."""
    from tests.comfyui_server import ComfyUI

    server = ComfyUI(COMFYUI_PATH, str(tmp_path_factory.mktemp("comfy-empty")))
    server.skip_first_visit()  # no templates dialog opening beside the one under test
    yield server
    server.stop()


def _expected_offers(ui: dict) -> dict[str, str]:
    """'<directory> / <name>' -> url of each manifest file the workflow's widgets name (a file,
    or the files of a named folder) that ComfyUI can list, so the Missing Models dialog can tell
    whether it is installed."""
    from spinbot.nodes import manifest
    from tests.workflow_build import LISTED_SUFFIXES

    values = {v for n in ui["nodes"] if n["type"] != "Note"
              for v in n.get("widgets_values") or [] if isinstance(v, str) and v}
    return {f"{m.folder} / {m.path}": m.url for m in manifest.models()
            if m.url and m.path.endswith(LISTED_SUFFIXES)
            and any(m.path == v or m.path.startswith(v + "/") for v in values)}


@pytest.mark.parametrize("name", UI_NAMES)
def test_missing_models_dialog_offers_the_workflow_models(comfy_without_models, name):
    """Headless Chromium on a ComfyUI without models: opening a shipped workflow shows the
    frontend's Missing Models dialog listing exactly the manifest files its model widgets name,
    each with the manifest's url; Hugging Face .safetensors files are offered for download."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("no chromium")
    comfy = comfy_without_models
    ui = load_json(os.path.join(ROOT, "workflows", name))
    _provide_inputs(comfy, ui)
    expected = _expected_offers(ui)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(comfy.url, wait_until="networkidle")
            page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            page.keyboard.press("Escape")
            page.evaluate("() => document.querySelectorAll('.p-dialog-mask').forEach(e => e.remove())")
            page.evaluate("wf => window.app.loadGraphData(wf)", ui)
            if expected:
                page.wait_for_selector(".comfy-missing-models li", timeout=30_000)
            else:
                page.wait_for_timeout(1500)
            offered = page.evaluate(
                "() => [...document.querySelectorAll('.comfy-missing-models li')].map(li => {"
                " const label = li.querySelector('span[title]');"
                " return {label: label?.innerText, url: label?.title,"
                " error: li.querySelector('.p-message')?.innerText ?? null}; })")
            dialogs = page.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(d => d.innerText)")
        finally:
            browser.close()
    if not expected:
        assert offered == [] and dialogs == [], dialogs
        return
    assert len(dialogs) == 1 and "Missing Models" in dialogs[0], dialogs
    assert {o["label"]: o["url"] for o in offered} == expected
    assert len(offered) == len(expected)
    downloadable = {o["label"] for o in offered if not o["error"]}
    assert downloadable == {label for label, url in expected.items()
                            if url.startswith("https://huggingface.co/")
                            and label.endswith(".safetensors")}, offered


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
    portrait = tmp_path / "me.png"
    Image.fromarray(astronaut(64)).save(portrait)
    voice = tmp_path / "me.wav"
    if speech_wav(str(voice), "Queued by the SpinBot client.") is None:
        write_wav(str(voice), tone(1.3, 16000), 16000)
    out = tmp_path / "renders"
    run = _client_run(comfy, "photo_with_audio", [
        f"Portrait.image={portrait}", f"Narration.audio={voice}", "Video Combine.fps=12",
        "Video Combine.filename_prefix=SpinBot/client"], out, timeout=600, quiet=False)
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


def _client_run(comfy, workflow: str, sets: list[str], out, timeout: float = 900, quiet: bool = True):
    import subprocess
    import sys

    args = [sys.executable, os.path.join(ROOT, "nodes", "client.py"), workflow, "--server", comfy.url,
            "--out", str(out)] + (["--quiet"] if quiet else [])
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _workflow_sets(name: str, tmp_path, ollama_url: str | None) -> list[str]:
    from tests.workflow_graphs import REFERENCE_TEXT

    voice = tmp_path / "voice.wav"
    if speech_wav(str(voice), REFERENCE_TEXT) is None:
        write_wav(str(voice), tone(3.5, 22050), 22050)
    sets = [f"Voice reference.audio={voice}", "F5-TTS.nfe_steps=4"]
    if name == "direct":
        portrait = tmp_path / "face.png"
        Image.fromarray(astronaut(128)).save(portrait)
        return sets + [f"Portrait.image={portrait}", 'Narration.narration="Queued over HTTP. It works."']
    if name == "guided":
        return sets + [f"Script.host={json.dumps(ollama_url)}", "Script.target_seconds=5",
                       'Stage Image.size_preset="custom"', "Stage Image.width=96",
                       "Stage Image.height=128", "Stage Image.steps=2"]
    if name == "story":
        # Two short sentences: the shipped three-sentence story is ~60 SVD clips of 4 frames
        return sets + ['Story.narration="A keeper lit the lamp. Far away, a boat turned home."',
                       'Story Image.size_preset="custom"', "Story Image.width=64", "Story Image.height=64",
                       "Story Image.steps=2", "SVD.width=64", "SVD.height=64", "SVD.steps=2", "SVD.frames=4"]
    if name == "quote":
        return sets + ['Quote.narration="Small steps every day. They add up."',
                       'Quote Image.size_preset="custom"', "Quote Image.width=64",
                       "Quote Image.height=96", "Quote Image.steps=2"]
    if name == "narrated":
        return sets + [f"Script.host={json.dumps(ollama_url)}", "Script.target_seconds=6",
                       'Identity LoRA.lora_1="spinbot-identity-sd15.safetensors"',
                       'Scene Images.size_preset="custom"', "Scene Images.width=96",
                       "Scene Images.height=64", "Scene Images.steps=2"]
    if name == "dubbing":
        from tests.test_dubbing import SETS

        return [f"Source Video.video={tmp_path / 'talk.mp4'}", *SETS]
    raise KeyError(name)


def _dubbing_source(comfy, tmp_path, name: str = "talk.mp4") -> int:
    """The generated talking video in tmp_path (and the server's input folder), its Whisper
    window answered in advance (random tiny Whisper finds no timing); returns its frame count."""
    from pathlib import Path

    from tests.test_dubbing import answer_whisper_in_advance, write_talk

    frames, spans = write_talk(tmp_path / name)
    base = Path(comfy.base_dir)
    answer_whisper_in_advance(tmp_path / name, spans, base / "models", base / "temp")
    return frames


# The frame rate each shipped workflow asks for (Camera Motion's fps, SVD's 8 fps x RIFE's 3).
WORKFLOW_FPS = {"quote": 30, "narrated": 24, "story": 24}


# profile ends in a LoRA file, not an MP4: tests/test_identity_comfyui.py runs it
@pytest.mark.parametrize("name", [n[:-5] for n in UI_NAMES
                                  if n not in ("photo_with_audio.json", "profile.json")])
def test_shipped_workflow_renders_through_the_client(comfy, tmp_path, name):
    """Each API workflow, queued by the pack's client on the tiny model folder, gives an MP4 that
    decodes with audio as long as the video, subtitles (the quote is on screen instead), and the
    24-30 fps the workflow asks for. The test Ollama answers whichever script is asked for: one
    stage (guided) or a scene per sentence (narrated)."""
    from tests.fake_ollama import FakeOllama, script_reply

    reply = script_reply(["Hello from the SpinBot workflows.", "Thanks for watching."],
                         stage="a bright studio, a person looking at the camera")
    frames = _dubbing_source(comfy, tmp_path) if name == "dubbing" else None
    with FakeOllama(replies=[reply]) as ollama:
        run = _client_run(comfy, name, _workflow_sets(name, tmp_path, ollama.url), tmp_path / "renders")
        asked = [bool(chat.get("format", {}).get("properties", {}).get("scenes")) for chat in ollama.chats]
    assert run.returncode == 0, run.stderr + comfy.log()
    paths = run.stdout.split()
    assert len(paths) == 1 and paths[0].endswith(".mp4"), run.stdout
    p = probe(paths[0])
    assert p.video_frames > 0 and p.audio_seconds is not None
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / p.fps
    if name == "quote":
        assert not p.subtitles
    else:
        assert p.subtitles and p.subtitles[-1][1] <= p.video_seconds + 1 / p.fps
    if name in WORKFLOW_FPS:
        assert 24 <= p.fps <= 30 and p.fps == pytest.approx(WORKFLOW_FPS[name])
    if name == "dubbing":  # the source's frames and fps
        assert p.video_frames == frames and p.fps == 25
    assert asked == {"guided": [False], "narrated": [True]}.get(name, [])


def test_dubbing_renders_from_core_load_video(comfy, tmp_path):
    """The dubbing workflow with core Load Video as its source (its VIDEO into Transcribe and
    Wav2Lip, the audio from SpinBot Video Info) over POST /prompt on the tiny models: an MP4
    with exactly the source's frames and fps, audio as long as the video, translated subtitles."""
    import shutil

    from spinbot.nodes.client import apply_overrides, load_workflow
    from tests.test_dubbing import SETS

    frames = _dubbing_source(comfy, tmp_path, "core_talk.mp4")
    shutil.copy(tmp_path / "core_talk.mp4", os.path.join(comfy.base_dir, "input", "core_talk.mp4"))
    workflow = apply_overrides(load_workflow("dubbing"), SETS)
    workflow["1"] = {"class_type": "LoadVideo", "inputs": {"file": "core_talk.mp4"}}
    assert "90" not in workflow
    workflow["90"] = {"class_type": "SpinBotVideoInfo", "inputs": {"video": ["1", 0]}}
    workflow["4"]["inputs"]["audio"] = workflow["5"]["inputs"]["original"] = ["90", 0]
    workflow["10"]["inputs"]["filename_prefix"] = "SpinBot/dubbing_core"
    entry = comfy.wait(comfy.queue(workflow), timeout=900)
    video = entry["outputs"]["10"]["spinbot_video"][0]
    p = probe(os.path.join(comfy.base_dir, "output", video["subfolder"], video["filename"]))
    # Video Info's audio is frame_count / fps long (core Get Video Components kept the AAC
    # padding, 5.589 s for 5.56 s, and Wav2Lip made one frame more), so the dub has the source's
    assert p.fps == 25 and p.video_frames == frames == 139, (p.video_frames, frames)
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / p.fps
    assert len(p.subtitles) >= 3 and all(text.strip() for _a, _b, text in p.subtitles)
