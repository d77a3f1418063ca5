"""Run metrics inside a real ComfyUI: the run report in the MP4 is keyed by the prompt and lists
its nodes, and GET /spinbot/metrics serves Prometheus text with the stages that ran, frames,
failures by error type and the queue wait.

One ComfyUI server for the module: LoadImage/LoadAudio -> SpinBot video nodes, and the tiny
Real-ESRGAN x2 of tests/factory.py for a model load.
Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README).
"""
from __future__ import annotations

import json
import os
import urllib.request

import pytest
from PIL import Image

from tests.media import astronaut, tone, write_wav
from tests.mp4probe import probe

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]

prom_parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests import factory
    from tests.comfyui_server import ComfyUI

    base = tmp_path_factory.mktemp("comfy_metrics")
    factory.build(base / "models", only=["upscale_models"])
    server = ComfyUI(COMFYUI_PATH, str(base))
    inputs = os.path.join(server.base_dir, "input")
    Image.fromarray(astronaut(64)).save(os.path.join(inputs, "portrait.png"))
    write_wav(os.path.join(inputs, "narration.wav"), tone(1.0, 24000), 24000)
    yield server
    server.stop()


def scrape(comfy) -> tuple[str, dict]:
    with urllib.request.urlopen(comfy.url + "/spinbot/metrics", timeout=30) as r:
        content_type = r.headers["Content-Type"]
        text = r.read().decode()
    samples = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return content_type, samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


RENDER = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
    "2": {"class_type": "LoadAudio", "inputs": {"audio": "narration.wav"}},
    "3": {"class_type": "SpinBotImagesToVideo",
          "inputs": {"images": ["1", 0], "fps": 12.0, "audio": ["2", 0]}},
    "4": {"class_type": "SpinBotVideoCombine",
          "inputs": {"video": ["3", 0], "fps": 12.0, "filename_prefix": "SpinBot/metrics",
                     "crf": 23, "preset": "ultrafast", "audio_bitrate": "128k",
                     "length_policy": "pad video with last frame", "normalize_loudness": False,
                     "loudness_lufs": -14.0, "burn_in_subtitles": False}},
}
# Reads frames past the end of the stored video: SpinBot Video to Images raises MediaError.
FAIL = {
    "1": RENDER["1"], "3": {**RENDER["3"], "inputs": {"images": ["1", 0], "fps": 12.0}},
    "5": {"class_type": "SpinBotVideoToImages",
          "inputs": {"video": ["3", 0], "start_frame": 50, "max_frames": 0}},
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
}

UPSCALE = {
    "1": RENDER["1"],
    "7": {"class_type": "SpinBotUpscale",
          "inputs": {"images": ["1", 0], "model_name": "RealESRGAN_x2plus.pth", "target_scale": 0.0,
                     "tile": 0, "overlap": 0, "precision": "fp32", "frames_per_batch": 1}},
    "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
}


def test_run_report_and_prometheus_series_after_runs(comfy):
    _, before = scrape(comfy)
    assert value(before, "spinbot_queue_wait_seconds_count") == 0

    prompt_id = comfy.queue(RENDER)
    entry = comfy.wait(prompt_id, timeout=600)
    video = entry["outputs"]["4"]["spinbot_video"][0]
    p = probe(os.path.join(comfy.base_dir, "output", video["subfolder"], video["filename"]))
    assert p.video_frames == 12  # 1 s of audio at 12 fps, the one photo padded

    run = json.loads(p.metadata["spinbot_run"])
    assert run["run"] == prompt_id
    assert [(s["name"], s["node_id"]) for s in run["stages"]] == [
        ("SpinBotImagesToVideo", "3"), ("SpinBotVideoCombine", "4")]
    assert run["stages"][0]["status"] == "done" and run["stages"][0]["frames"] == 1
    assert run["stages"][0]["peak_ram_bytes"] > 0
    assert run["stages"][1]["status"] == "running"
    assert 0 <= run["queue_wait_seconds"] < 600

    fail_id = comfy.queue(FAIL)
    with pytest.raises(RuntimeError, match="MediaError|past the end"):
        comfy.wait(fail_id, timeout=600)

    content_type, after = scrape(comfy)
    assert content_type.startswith("text/plain")
    for stage in ("SpinBotImagesToVideo", "SpinBotVideoCombine"):
        assert value(after, "spinbot_stage_seconds_count", stage=stage) >= 1, stage
        assert value(after, "spinbot_stage_seconds_sum", stage=stage) > 0, stage
        assert value(after, "spinbot_stage_seconds_bucket", stage=stage, le="+Inf") >= 1, stage
    assert value(after, "spinbot_frames_rendered_total", stage="SpinBotVideoCombine") == 12
    assert value(after, "spinbot_frames_rendered_total", stage="SpinBotImagesToVideo") >= 1
    assert value(after, "spinbot_stage_failures_total", stage="SpinBotVideoToImages",
                 error="MediaError") == 1
    assert value(after, "spinbot_stage_seconds_count", stage="SpinBotVideoToImages") == 0
    # both prompts reached a SpinBot stage: each observed its queue wait once
    assert value(after, "spinbot_queue_wait_seconds_count") == 2
    assert 0 < value(after, "spinbot_queue_wait_seconds_sum") < 1200
    assert value(after, "spinbot_stage_peak_ram_bytes", stage="SpinBotVideoCombine") > 0
    assert "SpinBot SpinBotVideoCombine (node 4) stage: " in comfy.log()

    comfy.wait(comfy.queue(UPSCALE), timeout=600)
    _, last = scrape(comfy)
    assert value(last, "spinbot_model_loads_total", kind="upscale") == 1
    assert value(last, "spinbot_stage_seconds_count", stage="SpinBotUpscale") == 1
    assert value(last, "spinbot_frames_rendered_total", stage="SpinBotUpscale") == 1
    assert value(last, "spinbot_queue_wait_seconds_count") == 3
