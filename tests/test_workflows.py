"""Shipped workflows validate against the pack's node definitions and run end to end."""
from __future__ import annotations

import copy
import math
import glob
import os

import pytest
from PIL import Image

import spinbot
from tests._pack import ROOT
from tests.core_nodes import CORE_NODE_CLASSES
from tests.media import astronaut, speech_wav, tone, write_wav
from tests.mp4probe import probe, workflow_from
from tests.workflow_tools import (WorkflowError, definitions, load_json, run_api, ui_to_api_shape,
                                  validate_api, validate_ui)

DEFS = definitions(spinbot.NODE_CLASS_MAPPINGS)
UI_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
API_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))
names = lambda paths: [os.path.basename(p) for p in paths]  # noqa: E731


def test_every_ui_workflow_has_an_api_twin():
    assert UI_FILES and names(UI_FILES) == names(API_FILES)


@pytest.mark.parametrize("path", UI_FILES, ids=names(UI_FILES))
def test_every_workflow_has_a_template_thumbnail(path):
    """ComfyUI's Templates browser shows <name>.jpg beside <name>.json."""
    with Image.open(path[:-5] + ".jpg") as thumb:
        assert thumb.format == "JPEG" and min(thumb.size) >= 256


@pytest.mark.parametrize("path", UI_FILES, ids=names(UI_FILES))
def test_ui_workflow_validates(path):
    validate_ui(load_json(path), DEFS)


@pytest.mark.parametrize("path", API_FILES, ids=names(API_FILES))
def test_api_workflow_validates(path):
    validate_api(load_json(path), DEFS)


@pytest.mark.parametrize("path", UI_FILES, ids=names(UI_FILES))
def test_ui_and_api_formats_agree(path):
    ui = ui_to_api_shape(load_json(path), DEFS)
    api = load_json(os.path.join(ROOT, "workflows", "api", os.path.basename(path)))
    assert ui == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


API = load_json(os.path.join(ROOT, "workflows", "api", "photo_with_audio.json"))
UI = load_json(os.path.join(ROOT, "workflows", "photo_with_audio.json"))


@pytest.mark.parametrize("mutate, message", [
    (lambda w: w["3"]["inputs"].pop("crf"), r"node 3 \(SpinBotVideoCombine, 'Video Combine'\) input 'crf': required input is missing"),
    (lambda w: w["3"]["inputs"].update(preset="ludicrous"), r"input 'preset': 'ludicrous' is not one of"),
    (lambda w: w["3"]["inputs"].update(crf=99), r"input 'crf': 99 is outside \[0, 51\]"),
    (lambda w: w["3"]["inputs"].update(audio=["1", 0]), r"input 'audio': expects AUDIO, but node 1 \(LoadImage\) output 0 is IMAGE"),
    (lambda w: w["3"]["inputs"].update(images=["9", 0]), r"input 'images': linked to missing node 9"),
    (lambda w: w["3"]["inputs"].update(colour="red"), r"input 'colour' is not an input"),
    (lambda w: w["3"].update(class_type="SpinBotNope"), r"node 3 .*unknown node type"),
    (lambda w: w["3"]["inputs"].update(normalize_loudness="yes"), r"'normalize_loudness': expected true/false"),
])
def test_validator_rejects_broken_api_workflows(mutate, message):
    broken = copy.deepcopy(API)
    mutate(broken)
    with pytest.raises(WorkflowError, match=message):
        validate_api(broken, DEFS)


def _ui_node(w, nid):
    return next(n for n in w["nodes"] if n["id"] == nid)


@pytest.mark.parametrize("mutate, message", [
    (lambda w: _ui_node(w, 3)["widgets_values"].__setitem__(3, "ludicrous"), r"node 3 .* widget 'preset': 'ludicrous'"),
    (lambda w: _ui_node(w, 3)["widgets_values"].pop(), r"widget 'subtitle_language_2': no value"),
    (lambda w: w["links"].__setitem__(1, [2, 1, 0, 3, 2, "IMAGE"]), r"input 'audio': expects AUDIO, link 2 brings IMAGE"),
    (lambda w: w["links"].append([3, 7, 0, 3, 1, "IMAGE"]), r"link 3 refers to missing node 7"),
    (lambda w: _ui_node(w, 3).update(type="SpinBotNope"), r"node 3 .*unknown node type"),
])
def test_validator_rejects_broken_ui_workflows(mutate, message):
    broken = copy.deepcopy(UI)
    mutate(broken)
    with pytest.raises(WorkflowError, match=message):
        validate_ui(broken, DEFS)


def test_photo_with_audio_runs_end_to_end(spinbot_dirs):
    inputs = spinbot_dirs["input"]
    Image.fromarray(astronaut(160)).save(inputs / "portrait.png")
    if speech_wav(str(inputs / "narration.wav"), "Hello from the SpinBot test suite.") is None:
        write_wav(str(inputs / "narration.wav"), tone(2.2, 22050), 22050)
    classes = {**spinbot.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}
    results = run_api(API, classes, extra_pnginfo={"workflow": UI})
    path, report = results["3"]["result"]
    audio = classes["LoadAudio"]().load("narration.wav")[0]
    seconds = audio["waveform"].shape[-1] / audio["sample_rate"]
    p = probe(path)
    assert p.video_frames == math.ceil(seconds * 25 - 1e-9)
    assert abs(p.audio_seconds - p.video_seconds) <= 1 / 25
    assert (p.width, p.height) == (160, 160)
    assert workflow_from(p) == UI


def test_workflow_files_are_generated_from_their_source():
    """UI and API files are both written from tests/workflow_graphs.py, so they cannot drift."""
    from tests.workflow_build import WORKFLOWS_DIR, all_graphs, rendered

    graphs = all_graphs()
    assert sorted(f"{g.name}.json" for g in graphs) == names(UI_FILES)
    for graph in graphs:
        for rel, text in rendered(graph, DEFS).items():
            with open(os.path.join(WORKFLOWS_DIR, rel), encoding="utf-8") as f:
                assert f.read() == text, f"{rel} differs from its source: python -m tests.workflow_build --write"


@pytest.mark.parametrize("path", UI_FILES, ids=names(UI_FILES))
def test_model_widgets_carry_the_frontend_model_metadata(path):
    """Each widget naming a manifest file carries {name, url, directory, hash} on its node (the
    frontend keeps a node's entry only when a widget value equals its name); the files inside a
    widget's model folder (the Vocos weights) are on the workflow's top-level list. Files ComfyUI
    cannot list (.onnx, .yaml, .txt) and files without a download url are left out."""
    from spinbot.nodes import manifest
    from tests.workflow_build import LISTED_SUFFIXES

    ui = load_json(path)
    offered_files: set[tuple[str, str]] = set()
    for node in ui["nodes"]:
        values = [v for v in node.get("widgets_values") or [] if isinstance(v, str) and v]
        on_node = node.get("properties", {}).get("models", [])
        for meta in on_node:
            assert meta["name"] in values, (node["id"], meta)  # else the frontend drops it
        for value in values if node["type"] != "Note" else []:
            for m in manifest.models():
                if m.path == value and m.url and value.endswith(LISTED_SUFFIXES):
                    want = {"name": m.path, "url": m.url, "directory": m.folder}
                    if m.sha256:
                        want.update(hash=m.sha256, hash_type="sha256")
                    assert want in on_node, (node["id"], value)
        offered_files |= {(m["directory"], m["name"]) for m in on_node}
    graph_level = ui.get("models", [])
    offered_files |= {(m["directory"], m["name"]) for m in graph_level}
    by_file = {(m.folder, m.path): m for m in manifest.models()}
    for meta in [m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])] + graph_level:
        entry = by_file[(meta["directory"], meta["name"])]
        assert meta["url"] == entry.url and meta["url"].startswith("https://")
        assert meta["name"].endswith(LISTED_SUFFIXES)
    widgets = {v for n in ui["nodes"] if n["type"] != "Note"
               for v in n.get("widgets_values") or [] if isinstance(v, str) and v}
    for folder in {v for v in widgets if any(p.startswith(v + "/") for _f, p in by_file)}:
        inside = {(f, p) for (f, p), m in by_file.items()
                  if p.startswith(folder + "/") and m.url and p.endswith(LISTED_SUFFIXES)}
        assert inside <= offered_files, (folder, inside - offered_files)
    assert not any(name.endswith(".onnx") for _d, name in offered_files)
    if any(n["type"] == "SpinBotF5TTS" for n in ui["nodes"]):  # every workflow with a voice
        assert ("tts", "vocos-mel-24khz/pytorch_model.bin") in offered_files
        assert ("tts", "F5TTS_v1_Base/model_1250000.safetensors") in offered_files
    elif os.path.basename(path) == "photo_with_audio.json":
        assert offered_files == set()
