"""The shipped direct, guided, story, quote and narrated workflows run end to end on the tiny
models.

Each API file is loaded as shipped, its inputs overridden the way a user does with the client
(`--set TITLE.INPUT=VALUE`), and run through the standalone runner that calls the same node classes
ComfyUI calls. The MP4 must decode, and its audio and subtitle streams must agree with the video
within one frame.
"""
from __future__ import annotations

import json
import math
import re

import av
import numpy as np
import pytest
import torch
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
    assert p.video_frames == math.ceil(speech_seconds * p.fps - 1e-6)
    check_subtitles(path, speech_seconds)


def check_subtitles(path: str, speech_seconds: float) -> None:
    """Audio as long as the video within a frame; cues in order, the last one ending with the
    speech."""
    p = probe(path)
    frame = 1 / p.fps
    assert abs(p.audio_seconds - p.video_seconds) <= frame
    assert p.subtitles, "no subtitle stream"
    assert p.video_seconds >= speech_seconds - frame
    assert p.subtitles[0][0] >= 0
    assert abs(p.subtitles[-1][1] - speech_seconds) <= frame + 0.25  # last cue ends with the speech
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


def check_av(path: str, fps: float, frames: int) -> None:
    """The MP4 decodes at ``fps`` with ``frames`` frames, and its audio is as long as the video
    within one frame."""
    p = probe(path)
    assert p.fps == pytest.approx(fps)
    assert p.video_frames == frames
    assert p.audio_seconds is not None and abs(p.audio_seconds - p.video_seconds) <= 1 / fps


def test_story_workflow_runs_end_to_end(inputs):
    """SVD's 8 fps become 24 fps through RIFE x3 (the same length), with the music bed under the
    narration and subtitles."""
    text = "A keeper lit the lamp. Far away, a boat turned home."
    results, path = run("story", [
        f"Story.narration={json.dumps(text)}", *FAST_VOICE,
        'Story Image.size_preset="custom"', "Story Image.width=64", "Story Image.height=64",
        "Story Image.steps=2", "SVD.width=64", "SVD.height=64", "SVD.steps=2", "SVD.frames=4"])
    speech, segments = out(results, "4")[0], out(results, "4")[1]
    assert len(segments) == 2
    assert out(results, "7")[0].shape == (2, 64, 64, 3)  # one scene per sentence
    svd = out(results, "9")[0]
    assert svd.fps == 8 and svd.frame_count == math.ceil(segments[-1].end * 8 - 1e-6)
    smooth = out(results, "14")[0]
    assert smooth.fps == 24 and smooth.frame_count == 3 * svd.frame_count
    # SVD's frames cover the speech at 8 fps, so the 24 fps video may run up to two of its
    # frames past the speech (ceil at 8 fps); the bed fills the audio to the video's length.
    seconds = speech["waveform"].shape[-1] / speech["sample_rate"]
    check_av(path, 24, 3 * svd.frame_count)
    assert 0 <= smooth.duration - seconds < 1 / 8
    check_subtitles(path, seconds)
    assert (probe(path).width, probe(path).height) == (64, 64)
    assert _final_lufs(out(results, "15")[1]) == pytest.approx(-14, abs=1)  # the bed's mix, at the target


def _final_lufs(report: str) -> float:
    """The mix loudness the Audio Bed report measured ("final: -14.0 LUFS")."""
    m = re.search(r"final: (-?[\d.]+) LUFS", report)
    assert m, report
    return float(m.group(1))


def _box(report: str) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) inclusive, from the overlay report's "box x A-B, y C-D"."""
    m = re.search(r"box x (\d+)-(\d+), y (\d+)-(\d+)", report)
    assert m, report
    return tuple(int(v) for v in m.groups())


def test_quote_workflow_runs_end_to_end(inputs):
    """Quote: one image pushed in at 30 fps for as long as the quote is spoken, the quote drawn
    over it (typed once, in the script), a generated music bed as the audio track."""
    quote = "Small steps every day. They add up."
    results, path = run("quote", [
        f"Quote.narration={json.dumps(quote)}", *FAST_VOICE, 'Quote Image.size_preset="custom"',
        "Quote Image.width=96", "Quote Image.height=160", "Quote Image.steps=2"])
    speech = out(results, "4")[0]
    seconds = speech["waveform"].shape[-1] / speech["sample_rate"]
    camera, overlay = out(results, "7")[0], out(results, "8")[0]
    assert camera.fps == overlay.fps == 30
    assert camera.frame_count == overlay.frame_count == round(seconds * 30)  # timed to the speech
    check_av(path, 30, camera.frame_count)
    p = probe(path)
    assert (p.width, p.height) == (96, 160) and not p.subtitles
    # The quote text (linked from the script, not typed twice) is drawn: a frame in the middle
    # differs from the camera-motion frame, and only inside the centred text box.
    report = out(results, "8")[1]
    assert quote.split()[0] in report
    x0, x1, y0, y1 = _box(report)
    mid = camera.frame_count // 2
    before, after = camera.read(mid, mid + 1)[0], overlay.read(mid, mid + 1)[0]
    changed = np.abs(after.astype(int) - before.astype(int)).max(axis=-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 0.02 * changed.size  # text pixels are there
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert y0 < 80 < y1 and x0 < 48 < x1  # centred
    # ... and the MP4 shows it: inside the box its middle frame is the overlay's, not the bare
    # camera frame (H.264 differs from both by a little).
    with av.open(path) as container:
        decoded = next(f for k, f in enumerate(container.decode(video=0)) if k == mid)
    shown = decoded.to_ndarray(format="rgb24")[y0:y1 + 1, x0:x1 + 1].astype(int)
    to_overlay = np.abs(shown - after[y0:y1 + 1, x0:x1 + 1]).mean()
    to_camera = np.abs(shown - before[y0:y1 + 1, x0:x1 + 1]).mean()
    assert to_overlay < to_camera / 2, (to_overlay, to_camera)
    # The bed's mix is the audio track, made as long as the video.
    bed = out(results, "9")[0]
    assert bed["waveform"].shape[-1] / bed["sample_rate"] == pytest.approx(overlay.duration, abs=1 / 30)
    assert _final_lufs(out(results, "9")[1]) == pytest.approx(-14, abs=1)


def test_narrated_workflow_runs_end_to_end_with_the_test_ollama(inputs):
    """Narrated: the script writes one scene per sentence (with the character and the LoRA's
    trigger word); Stage Image paints each segment from its own scene; camera motion cuts where
    each sentence starts; crossfades keep the length; bed and subtitles are in the MP4."""
    from spinbot.nodes.image.nodes_image import SpinBotStageImage
    from tests.fake_ollama import FakeOllama, script_reply

    sentences = ["The baker left at dawn.", "She crossed the old bridge.", "Bread is patience."]
    scenes = ["a bakery van on a country road at dawn", "an old stone bridge over a river",
              "loaves of bread cooling on a wooden table"]
    character = "a young woman with short red hair"
    with FakeOllama(replies=[script_reply(sentences, scenes)]) as ollama:
        results, path = run("narrated", [
            f"Script.host={json.dumps(ollama.url)}", "Script.target_seconds=8",
            f"Script.character={json.dumps(character)}",
            "Identity LoRA.lora_1=\"spinbot-identity-sd15.safetensors\"",
            'Scene Images.size_preset="custom"', "Scene Images.width=96", "Scene Images.height=64",
            "Scene Images.steps=2", *FAST_VOICE])
        assert ollama.chats and "scenes" in ollama.chats[-1]["format"]["properties"]
    trigger = out(results, "3")[1]
    speech, segments = out(results, "7")[0], out(results, "7")[1]
    assert [s.text for s in segments] == sentences
    for seg, scene in zip(segments, scenes):
        assert scene in seg.scene and character in seg.scene and trigger in seg.scene
    images = out(results, "4")[0]
    assert images.shape == (3, 64, 96, 3)  # one image per segment
    # Image k is painted from scene k (seed + k): repainting segment 1 alone from its own scene
    # gives the same picture, and from another scene a different one.
    model = out(results, "3")[0]
    settings = dict(negative="blurry, deformed, watermark", size_preset="custom", width=96,
                    height=64, steps=2, cfg=7.0, scheduler="dpm++ 2m karras", seed=1, batch_size=1)
    own = SpinBotStageImage().paint(model, prompt=segments[1].scene, **settings)[0]
    other = SpinBotStageImage().paint(model, prompt=segments[0].scene, **settings)[0]
    assert torch.allclose(own[0], images[1], atol=1e-4)
    assert not torch.allclose(other[0], images[1], atol=1e-2)

    camera, faded = out(results, "8")[0], out(results, "9")[0]
    seconds = speech["waveform"].shape[-1] / speech["sample_rate"]
    assert camera.fps == faded.fps == 24
    assert faded.frame_count == camera.frame_count == round(seconds * 24)  # transitions keep the length
    cut = round(segments[1].start * 24)
    a, b = camera.read(cut - 1, cut + 1), faded.read(cut - 1, cut + 1)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1  # blended around the cut
    far = round((segments[1].start + segments[1].end) / 2 * 24)
    assert np.array_equal(camera.read(far, far + 1), faded.read(far, far + 1))  # untouched between
    check_av(path, 24, faded.frame_count)
    check_subtitles(path, seconds)
    assert len(probe(path).subtitles) == 3
