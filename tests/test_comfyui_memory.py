"""The pack's models inside a real ComfyUI go back to ComfyUI's memory manager: after a run,
POST /free with unload_models leaves none resident, and a core node's own load can evict them.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (see README). The figures (resident
models, the server's RSS before and after) are printed; run with -s to see them.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from tests.comfyui_fixture import COMFYUI_PATH, comfyui_marks, serve
from tests.media import astronaut

pytestmark = comfyui_marks()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    yield from serve(tmp_path_factory, "comfy_memory", models=True)


def _resident(comfy) -> list[dict]:
    return comfy.get("/spinbot/models")["models"]


def _free(comfy) -> None:
    """POST /free {"unload_models": true}, as the UI's "Unload models" does (empty reply)."""
    import urllib.request

    req = urllib.request.Request(comfy.url + "/free", data=json.dumps({"unload_models": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def _rss_mib(comfy) -> float:
    with open(f"/proc/{comfy.proc.pid}/status", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def _wait_empty(comfy, timeout: float = 60.0) -> float:
    """Seconds until /spinbot/models lists nothing (the worker handles /free between prompts)."""
    start = time.time()
    while time.time() - start < timeout:
        if not _resident(comfy):
            return time.time() - start
        time.sleep(0.2)
    raise AssertionError(f"still resident {timeout:.0f}s after /free: {_resident(comfy)}\n{comfy.log()}")


def _run_shipped(comfy, name: str, tmp_path, extra: tuple[str, ...] = (),
                 ollama_url: str | None = None) -> None:
    from tests.test_comfyui import _client_run, _workflow_sets

    tmp_path.mkdir(parents=True, exist_ok=True)
    run = _client_run(comfy, name, _workflow_sets(name, tmp_path, ollama_url) + list(extra),
                      tmp_path / "renders")
    assert run.returncode == 0, run.stderr + comfy.log()
    assert run.stdout.strip().endswith(".mp4"), run.stdout


def _free_and_report(comfy, label: str, expected_kinds: set[str]) -> None:
    listed = _resident(comfy)
    kinds = {m["kind"] for m in listed}
    assert expected_kinds <= kinds, listed
    assert all(m["bytes"] > 0 and m["device"] == "cpu" and m["name"] for m in listed), listed
    before = _rss_mib(comfy)
    stats = comfy.get("/spinbot/models")["stats"]
    _free(comfy)
    waited = _wait_empty(comfy)
    # ComfyUI's unload_all_models did it (not the pack on its own)
    after_stats = comfy.get("/spinbot/models")["stats"]
    assert after_stats["unloaded_by_comfyui"] - stats["unloaded_by_comfyui"] == len(listed)
    time.sleep(1.0)  # ComfyUI's own gc.collect() runs right after the unload
    after = _rss_mib(comfy)
    total = sum(m["bytes"] for m in listed)
    print(f"\n[{label}] resident before /free: "
          + "; ".join(f"{m['kind']}:{m['name']} {m['bytes'] / 2**20:.2f} MiB on {m['device']}"
                      for m in listed)
          + f"\n[{label}] {len(listed)} models, {total / 2**20:.2f} MiB; server RSS "
          f"{before:.0f} MiB -> {after:.0f} MiB after /free (empty after {waited:.1f} s)")


def test_story_models_go_back_on_free(comfy, tmp_path):
    assert _resident(comfy) == []  # nothing is loaded before a run
    _run_shipped(comfy, "story", tmp_path)
    _free_and_report(comfy, "story", {"image", "motion", "voice"})
    # the next run loads them again from disk: a new voice seed makes every stage run again
    # (ComfyUI's output cache, which /free with only unload_models keeps, holds no weights)
    _run_shipped(comfy, "story", tmp_path / "again", ("F5-TTS.seed=7",))
    assert {"image", "motion", "voice"} <= {m["kind"] for m in _resident(comfy)}
    _free(comfy)
    _wait_empty(comfy)


def test_direct_models_go_back_on_free(comfy, tmp_path):
    _run_shipped(comfy, "direct", tmp_path)
    _free_and_report(comfy, "direct", {"voice", "lipsync", "face_detector", "upscale"})


def test_guided_models_and_lora_copy_go_back_on_free(comfy, tmp_path):
    from tests.fake_ollama import FakeOllama

    reply = json.dumps({"stage": "a bright studio, a person looking at the camera",
                        "narrative": "Hello from the guided workflow. Thanks for watching."})
    with FakeOllama(replies=[reply]) as ollama:
        _run_shipped(comfy, "guided", tmp_path, ollama_url=ollama.url,
                     extra=('Identity LoRA.lora_1="spinbot-identity-sd15.safetensors"',))
    _free_and_report(comfy, "guided", {"image", "image_lora", "voice", "lipsync", "upscale"})


def _upscale_chain(core_between: bool, first: int, second: int) -> dict:
    """LoadImage -> SpinBot Upscale -> [core Upscale Image (using Model)] -> SpinBot Upscale
    (the same model file again) -> PreviewImage. ``first``/``second``: the SpinBot nodes'
    frames_per_batch (a different value from an earlier prompt's keeps ComfyUI from reusing that
    node's cached output, so it runs and fetches its model)."""
    def spinbot(source: list, frames: int) -> dict:
        return {"class_type": "SpinBotUpscale",
                "inputs": {"model_name": "realesr-general-x4v3.pth", "target_scale": 0.0,
                           "tile": 0, "overlap": 0, "precision": "auto",
                           "frames_per_batch": frames, "images": source}}

    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
              "2": spinbot(["1", 0], first)}
    middle = ["2", 0]
    if core_between:
        prompt["3"] = {"class_type": "UpscaleModelLoader",
                       "inputs": {"model_name": "RealESRGAN_x2plus.pth"}}
        prompt["4"] = {"class_type": "ImageUpscaleWithModel",
                       "inputs": {"upscale_model": ["3", 0], "image": ["2", 0]}}
        middle = ["4", 0]
    prompt["5"] = spinbot(middle, second)
    prompt["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    return prompt


def test_a_core_nodes_load_evicts_the_packs_models(tmp_path_factory):
    """ComfyUI's Upscale Image (using Model) frees memory for its model through
    `model_management.free_memory`, as core loaders do. With smart memory off (ComfyUI's
    --disable-smart-memory: unload whatever can be unloaded, as on a GPU that is full) that call
    unloads the SpinBot upscaler the first SpinBot node loaded, so the second SpinBot node of the
    same prompt loads it again; without the core node in between, it is loaded once. (On this CPU
    server with smart memory on, the same call unloads only when RAM is short.)"""
    from tests import factory
    from tests.comfyui_server import ComfyUI

    base = tmp_path_factory.mktemp("comfy_evict")
    factory.build(base / "models", only=["upscale_models"])
    server = ComfyUI(COMFYUI_PATH, str(base), extra_args=("--disable-smart-memory",))
    try:
        Image.fromarray(astronaut(32)).save(os.path.join(base, "input", "face.png"))

        def run(core_between: bool, first: int, second: int) -> dict:
            before = server.get("/spinbot/models")["stats"]
            entry = server.wait(server.queue(_upscale_chain(core_between, first, second)))
            assert entry["outputs"]["6"]["images"], json.dumps(entry)[:2000]
            after = server.get("/spinbot/models")["stats"]
            return {k: after[k] - before[k] for k in after}

        alone = run(False, 1, 2)
        with_core = run(True, 3, 4)
        print(f"\n[core load] SpinBot upscaler loads/unloads in one prompt: without the core node "
              f"between {alone}, with it {with_core}")
        # alone: loaded once, unloaded once (ComfyUI unloads everything after each prompt in this
        # mode); with the core node: unloaded by its free_memory, loaded again by the next node
        assert alone == {"loaded": 1, "unloaded_by_comfyui": 1, "unloaded_by_pack": 0}, alone
        assert with_core == {"loaded": 2, "unloaded_by_comfyui": 2, "unloaded_by_pack": 0}, with_core
        log = server.log()
        assert "SpinBot model cache: unloaded upscale realesr-general-x4v3.pth (by ComfyUI)" in log
        assert _resident(server) == []
    finally:
        server.stop()
