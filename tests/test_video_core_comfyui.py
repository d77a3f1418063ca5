"""Core ComfyUI VIDEO and SpinBot Load Video inside a real ComfyUI (one server for the module).

- core LoadVideo -> SpinBot Video Combine over POST /prompt (the "SPINBOT_VIDEO,VIDEO" input
  passes ComfyUI's validation and the VIDEO is streamed into the store);
- SpinBot Load Video -> SpinBot Video to Core Video -> core SaveVideo;
- in the browser, the frontend lets a LoadVideo output connect to SpinBot inputs and shows the
  loader's upload button.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout.
"""
from __future__ import annotations

import os
import shutil

import av
import pytest

from tests.comfyui_fixture import comfyui_marks, serve
from tests.test_video_load import H, W, index_of, write_video

pytestmark = comfyui_marks()


def _write_inputs(base) -> None:
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    write_video(os.path.join(base, "input", "clip.mp4"), 30, fps=25, audio=(44100, 2))


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    yield from serve(tmp_path_factory, "comfy_video", prepare=_write_inputs,
                     skip_first_visit=True)


def _decode(path: str) -> tuple[list[int], float, int]:
    """Frame indices, audio seconds and audio channels of an output file."""
    with av.open(path) as c:
        frames = [index_of(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(path) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(audio=0))
        return frames, samples / a.rate, a.channels


def _output_file(comfy, entry: dict, key: str) -> str:
    for outputs in entry["outputs"].values():
        for item in outputs.get(key, []):
            return os.path.join(comfy.base_dir, "output", item.get("subfolder", ""),
                                item["filename"])
    raise AssertionError(f"no {key} output in {entry['outputs']}")


def test_object_info_declares_core_video_inputs(comfy):
    info = comfy.get("/object_info")
    for name, section in (("SpinBotVideoCombine", "optional"), ("SpinBotVideoToImages", "required"),
                          ("SpinBotUpscale", "optional"), ("SpinBotTextOverlay", "required")):
        assert info[name]["input"][section]["video"][0] == "SPINBOT_VIDEO,VIDEO", name
    spec = info["SpinBotLoadVideo"]["input"]["required"]["video"]
    assert "clip.mp4" in spec[0] and spec[1]["video_upload"] is True
    assert info["SpinBotVideoToCoreVideo"]["output"][0] == "VIDEO"


def test_core_load_video_into_spinbot_video_combine(comfy):
    workflow = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "SpinBotVideoCombine", "inputs": {
            "video": ["1", 0], "fps": 25.0, "filename_prefix": "SpinBot/core_in", "crf": 19,
            "preset": "ultrafast", "audio_bitrate": "128k",
            "length_policy": "pad video with last frame", "normalize_loudness": False,
            "loudness_lufs": -14.0}},
    }
    entry = comfy.wait(comfy.queue(workflow), timeout=600)
    path = _output_file(comfy, entry, "spinbot_video")
    frames, audio_s, channels = _decode(path)
    assert frames == list(range(30))
    assert abs(audio_s - 30 / 25) < 0.03 and channels == 2


def test_core_video_from_components_into_spinbot(comfy):
    """CreateVideo makes a VideoFromComponents (frames in memory, no file): stored from them."""
    workflow = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo", "inputs": {
            "images": ["2", 0], "audio": ["2", 1], "fps": ["2", 2]}},
        "4": {"class_type": "SpinBotVideoCombine", "inputs": {
            "video": ["3", 0], "fps": 25.0, "filename_prefix": "SpinBot/components", "crf": 19,
            "preset": "ultrafast", "audio_bitrate": "128k",
            "length_policy": "trim audio to video", "normalize_loudness": False,
            "loudness_lufs": -14.0}},
    }
    entry = comfy.wait(comfy.queue(workflow), timeout=600)
    frames, audio_s, channels = _decode(_output_file(comfy, entry, "spinbot_video"))
    assert frames == list(range(30))
    assert abs(audio_s - 30 / 25) < 0.03 and channels == 2


def test_spinbot_load_video_to_core_save_video(comfy):
    workflow = {
        "1": {"class_type": "SpinBotLoadVideo", "inputs": {
            "video": "clip.mp4", "start_seconds": 0.4, "max_seconds": 0.6, "force_fps": 0.0,
            "max_side": 0}},
        "2": {"class_type": "SpinBotVideoToCoreVideo", "inputs": {"video": ["1", 0], "crf": 17}},
        "3": {"class_type": "SaveVideo", "inputs": {
            "video": ["2", 0], "filename_prefix": "video/spinbot", "format": "auto",
            "codec": "auto"}},
    }
    entry = comfy.wait(comfy.queue(workflow), timeout=600)
    path = _output_file(comfy, entry, "images")  # SaveVideo's UI entry (PreviewVideo)
    frames, audio_s, _channels = _decode(path)
    assert frames == list(range(10, 25))
    assert abs(audio_s - 0.6) < 0.03
    with av.open(path) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (W, H)


def test_path_leaving_input_is_refused_by_validation(comfy):
    workflow = {
        "1": {"class_type": "SpinBotLoadVideo", "inputs": {
            "video": "../comfyui.log", "start_seconds": 0.0, "max_seconds": 0.0,
            "force_fps": 0.0, "max_side": 0}},
        "2": {"class_type": "SpinBotVideoToImages", "inputs": {
            "video": ["1", 0], "start_frame": 0, "max_frames": 1}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    with pytest.raises(RuntimeError, match="refused"):
        comfy.queue(workflow)


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_frontend_connects_core_video_to_spinbot_inputs(comfy):
    sync_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("no chromium")
    script = """() => {
      const g = window.app.graph;
      const LiteGraph = window.LiteGraph || window.comfyAPI.litegraph.LiteGraph;
      const load = LiteGraph.createNode("LoadVideo"); g.add(load);
      const combine = LiteGraph.createNode("SpinBotVideoCombine"); g.add(combine);
      const overlay = LiteGraph.createNode("SpinBotTextOverlay"); g.add(overlay);
      const spin = LiteGraph.createNode("SpinBotLoadVideo"); g.add(spin);
      const core = LiteGraph.createNode("SpinBotVideoToCoreVideo"); g.add(core);
      const save = LiteGraph.createNode("SaveVideo"); g.add(save);
      const slot = (n, name) => n.inputs.findIndex(i => i.name === name);
      const linked = (n, name) => n.inputs[slot(n, name)].link != null;
      load.connect(0, combine, slot(combine, "video"));
      load.connect(0, overlay, slot(overlay, "video"));
      spin.connect(0, core, slot(core, "video"));
      core.connect(0, save, slot(save, "video"));
      // a wrong type must still be refused: AUDIO into the video input
      const wrong = LiteGraph.createNode("SpinBotVideoToImages"); g.add(wrong);
      spin.connect(1, wrong, slot(wrong, "video"));
      return {combine: linked(combine, "video"), overlay: linked(overlay, "video"),
              core: linked(core, "video"), save: linked(save, "video"),
              wrong: linked(wrong, "video"),
              upload: (spin.widgets || []).map(w => w.name)};
    }"""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(comfy.url, wait_until="networkidle")
            page.wait_for_function("window.app && window.app.graph",
                                   timeout=60_000)
            page.keyboard.press("Escape")
            got = page.evaluate(script)
            print("frontend:", got)
        finally:
            browser.close()
    assert got["combine"] and got["overlay"], got
    assert got["core"] and got["save"], got
    assert not got["wrong"], got
    assert any("upload" in name for name in got["upload"]), got
