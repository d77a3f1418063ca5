from __future__ import annotations

import pytest
import torch

from spinbot.nodes import runtime


def test_standalone_model_folders(spinbot_dirs):
    assert not runtime.IN_COMFYUI
    root = spinbot_dirs["models"] / "upscale_models"
    (root / "sub").mkdir(parents=True)
    (root / "a.pth").write_bytes(b"x")
    (root / "sub" / "b.safetensors").write_bytes(b"x")
    (root / "notes.md").write_text("x")
    assert runtime.list_models("upscale_models", {".pth", ".safetensors"}) == ["a.pth", "sub/b.safetensors"]
    assert runtime.list_models("upscale_models", dirs=True) == ["sub"]
    assert runtime.list_models("no_such_folder") == []
    assert runtime.find_model("upscale_models", "sub/b.safetensors") == str(root / "sub" / "b.safetensors")
    assert runtime.find_model("upscale_models", "missing.pth") is None
    assert runtime.find_model("upscale_models", "../upscale_models/a.pth") is None


def test_output_and_temp_dirs(spinbot_dirs):
    assert runtime.output_dir() == str(spinbot_dirs["output"])
    assert runtime.temp_dir() == str(spinbot_dirs["temp"])


def test_interrupt_is_raised_once():
    runtime.request_interrupt()
    with pytest.raises(runtime.Interrupted):
        runtime.check_interrupted()
    runtime.check_interrupted()  # cleared


def test_progress_counts():
    with runtime.Progress(3) as bar:
        bar.update()
        bar.update(5)
        assert bar.current == 3


def test_device_and_dtype(monkeypatch):
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    assert runtime.torch_device() == torch.device("cpu")
    assert runtime.torch_dtype(torch.device("cpu")) == torch.float32
    assert runtime.free_memory_bytes(torch.device("cpu")) > 0
    runtime.make_room(1 << 20, torch.device("cpu"))
