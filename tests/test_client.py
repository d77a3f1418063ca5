"""nodes/client.py without a server: workflow lookup, --set overrides, uploads, error wording.

The full round trip (upload, /prompt, websocket progress, /view download) runs against a real
ComfyUI in tests/test_comfyui.py.
"""
from __future__ import annotations

import json
import os

import pytest

from spinbot.nodes import client as C


def test_shipped_workflow_by_name_and_ui_format_refused(tmp_path):
    wf = C.load_workflow("photo_with_audio")
    assert wf["3"]["class_type"] == "SpinBotVideoCombine"
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(C.ClientError, match="UI-format"):
        C.load_workflow(str(ui))
    with pytest.raises(C.ClientError, match="shipped: .*photo_with_audio"):
        C.load_workflow("no_such_workflow")


@pytest.mark.parametrize("text, expected", [
    ("Video Combine.crf=23", ("Video Combine", "crf", 23)),
    ("Video Combine.burn_in_subtitles=true", ("Video Combine", "burn_in_subtitles", True)),
    ("Narration.text=Hello. World=1", ("Narration", "text", "Hello. World=1")),
    ("v1.5 model.ckpt_name=a.safetensors", ("v1.5 model", "ckpt_name", "a.safetensors")),
    ("3.fps=12.5", ("3", "fps", 12.5)),
])
def test_assignments_parse(text, expected):
    assert C.parse_assignment(text) == expected


@pytest.mark.parametrize("bad", ["crf=3", "Video Combine.crf", ".crf=1", "Video Combine.=1"])
def test_malformed_assignments_are_refused(bad):
    with pytest.raises(C.ClientError, match="TITLE.INPUT=VALUE"):
        C.parse_assignment(bad)


def test_overrides_by_title_or_id_upload_local_files_and_leave_the_original(tmp_path):
    wf = C.load_workflow("photo_with_audio")
    image = tmp_path / "me.png"
    image.write_bytes(b"not really a png")
    uploaded = []

    def upload(path):
        uploaded.append(path)
        return "spinbot/me.png"

    out = C.apply_overrides(wf, [f"portrait.image={image}", "3.crf=30", "Narration.audio=on-server.wav"], upload)
    assert uploaded == [str(image)]  # a name that is not a local file is passed through as is
    assert out["1"]["inputs"]["image"] == "spinbot/me.png"
    assert out["3"]["inputs"]["crf"] == 30 and out["2"]["inputs"]["audio"] == "on-server.wav"
    assert wf["3"]["inputs"]["crf"] == 19 and wf["1"]["inputs"]["image"] == "portrait.png"


def test_override_errors_name_the_choices():
    wf = C.load_workflow("photo_with_audio")
    with pytest.raises(C.ClientError, match="no node titled or numbered 'Portait'.*Portrait"):
        C.apply_overrides(wf, ["Portait.image=x.png"])
    with pytest.raises(C.ClientError, match="is a link"):
        C.apply_overrides(wf, ["Video Combine.images=3"])
    dup = dict(wf, **{"9": dict(wf["1"])})
    with pytest.raises(C.ClientError, match="2 nodes are titled 'Portrait'"):
        C.find_node(dup, "Portrait")


def test_validation_errors_become_one_line_per_problem():
    body = json.dumps({"error": {"message": "Prompt outputs failed validation"},
                       "node_errors": {"1": {"class_type": "LoadImage", "errors": [
                           {"message": "Invalid image file", "details": "image - Invalid image file: x.png"}]}}})
    text = C.describe_error(body)
    assert text == ("Prompt outputs failed validation; node 1 (LoadImage): Invalid image file: "
                    "image - Invalid image file: x.png")
    assert C.describe_error("plain text") == "plain text"


def test_output_files_lists_videos_before_images_and_skips_temp_previews():
    entry = {"outputs": {"3": {"spinbot_video": [{"filename": "a.mp4", "subfolder": "SpinBot", "type": "output"}]},
                         "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"},
                                          {"filename": "s.png", "subfolder": "", "type": "output"}]}}}
    assert [f["filename"] for f in C.output_files(entry)] == ["a.mp4", "s.png"]


def test_unreachable_server_says_how_to_start_comfyui():
    client = C.Client("http://127.0.0.1:9", timeout=2)
    with pytest.raises(C.ClientError, match="cannot reach ComfyUI.*main.py"):
        client.queue({"1": {}})


def test_downloads_never_overwrite_an_earlier_render(tmp_path):
    first = C.write_new_file(str(tmp_path), "direct_00001_.mp4", b"one")
    second = C.write_new_file(str(tmp_path), "direct_00001_.mp4", b"two")
    third = C.write_new_file(str(tmp_path), "direct_00001_.mp4", b"three")
    assert [os.path.basename(p) for p in (first, second, third)] == [
        "direct_00001_.mp4", "direct_00001_-2.mp4", "direct_00001_-3.mp4"]
    assert open(first, "rb").read() == b"one" and open(third, "rb").read() == b"three"
