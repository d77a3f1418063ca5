"""The shipped direct, guided and story workflows run end to end on the tiny models.

Each API file is loaded as shipped, its inputs overridden the way a user does with the client
(`--set TITLE.INPUT=VALUE`), and run through the standalone runner that calls the same node classes
ComfyUI calls. The MP4 must decode, and its audio and subtitle streams must agree with the video
within one frame.
"""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

import spinbot
from tests import factory
from tests.core_nodes import CORE_NODE_CLASSES
from tests.media import astronaut, speech_wav, tone, write_wav
from tests.mp4probe import probe
from tests.workflow_graphs import REFERENCE_TEXT
from tests.workflow_tools import definitions, run_api, validate_api

from spinbot.nodes.client import apply_overrides, load_workflow

CLASSES = {**spinbot.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    factory.build(root)
    return root


@pytest.fixture
def inputs(spinbot_dirs, tiny_models, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(tiny_models))
    folder = spinbot_dirs["input"]
    Image.fromarray(astronaut(160)).save(folder / "portrait.png")
    if speech_wav(str(folder / "voice_reference.wav"), REFERENCE_TEXT) is None:
        write_wav(str(folder / "voice_reference.wav"), tone(3.5, 22050), 22050)
    return folder


def out(results: dict, node_id: str) -> tuple:
    value = results[node_id]
    return value["result"] if isinstance(value, dict) else value


def run(name: str, sets: list[str]) -> tuple[dict, str]:
    workflow = apply_overrides(load_workflow(name), sets)
    validate_api(workflow, definitions(spinbot.NODE_CLASS_MAPPINGS))
    results = run_api(workflow, CLASSES)
    combine = next(k for k, v in workflow.items() if v["class_type"] == "SpinBotVideoCombine")
    return results, out(results, combine)[0]


def check_streams(path: str, speech_seconds: float) -> None:
    p = probe(path)
    frame = 1 / p.fps
    assert p.video_frames == math.ceil(speech_seconds * p.fps - 1e-6)
    assert abs(p.audio_seconds - p.video_seconds) <= frame
    assert p.subtitles, "no subtitle stream"
    assert p.subtitles[0][0] >= 0
    assert abs(p.subtitles[-1][1] - p.video_seconds) <= frame + 0.25  # last cue ends with the speech
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(p.subtitles, p.subtitles[1:]))


FAST_VOICE = ["F5-TTS.nfe_steps=4"]


def test_direct_workflow_runs_end_to_end(inputs):
    text = "Hello there. This is the direct workflow, rendered by tiny models."
    results, path = run("direct", [f"Narration.narration={json.dumps(text)}", *FAST_VOICE,
                                   "Wav2Lip.no_face=\"pass through\""])
    speech = out(results, "5")[0]
    seconds = speech["waveform"].shape[-1] / speech["sample_rate"]
    check_streams(path, seconds)
    p = probe(path)
    assert (p.width, p.height) == (320, 320)  # 160 px portrait, upscaled x2
    assert len(p.subtitles) == len(out(results, "5")[1]) == 2


def test_guided_workflow_runs_end_to_end_with_the_test_ollama(inputs):
    from tests.fake_ollama import FakeOllama

    reply = json.dumps({"stage": "a sunny kitchen, a person smiling at the camera",
                        "narrative": "Good morning. Drink a glass of water first."})
    with FakeOllama(replies=[reply]) as ollama:
        results, path = run("guided", [
            f"Script.host={json.dumps(ollama.url)}", "Script.target_seconds=6",
            "Identity LoRA.lora_1=\"spinbot-identity-sd15.safetensors\"",
            "Stage Image.width=128", "Stage Image.height=192", "Stage Image.steps=2",
            "Stage Image.size_preset=\"custom\"", *FAST_VOICE])
    trigger = out(results, "3")[1]
    assert trigger and trigger in out(results, "1")[0]  # the LoRA's trigger word reached the stage prompt
    assert out(results, "4")[0].shape == (1, 192, 128, 3)
    speech = out(results, "7")[0]
    check_streams(path, speech["waveform"].shape[-1] / speech["sample_rate"])
    assert (probe(path).width, probe(path).height) == (256, 384)


def test_main_job_lists_missing_models_and_renders_on_tiny_ones(tmp_path, capsys):
    """The README's main job on a machine without the real models (CI): it names each missing
    file with its folder and source and the install command, then renders on tiny models."""
    from tests import demo

    empty = tmp_path / "no-models"
    empty.mkdir()
    assert demo.main(["--models-dir", str(empty), "--out", str(tmp_path / "out"), "--no-tiny"]) == 3
    err = capsys.readouterr().err
    for line in ("tts/F5TTS_v1_Base/model_1250000.safetensors", "lipsync/wav2lip_gan.pth",
                 "insightface/models/buffalo_l", "upscale_models/realesr-general-x4v3.pth",
                 f"python install.py --models direct --models-dir {empty}"):
        assert line in err, err

    assert demo.main(["--models-dir", str(empty), "--out", str(tmp_path / "out"),
                      "--text", "Short and sweet."]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.startswith(str(tmp_path / "out")) and path.endswith(".mp4")
    p = probe(path)
    assert p.video_frames > 0 and p.subtitles and abs(p.audio_seconds - p.video_seconds) <= 1 / p.fps


def test_story_workflow_runs_end_to_end(inputs):
    text = "A keeper lit the lamp. Far away, a boat turned home."
    results, path = run("story", [
        f"Story.narration={json.dumps(text)}", *FAST_VOICE,
        'Story Image.size_preset="custom"', "Story Image.width=64", "Story Image.height=64",
        "Story Image.steps=2", "SVD.width=64", "SVD.height=64", "SVD.steps=2", "SVD.frames=4"])
    speech, segments = out(results, "4")[0], out(results, "4")[1]
    assert len(segments) == 2
    assert out(results, "7")[0].shape == (2, 64, 64, 3)  # one scene per sentence
    video = out(results, "9")[0]
    assert video.frame_count == math.ceil(segments[-1].end * 8 - 1e-6)
    check_streams(path, speech["waveform"].shape[-1] / speech["sample_rate"])
    assert (probe(path).width, probe(path).height) == (64, 64)
