"""Identity LoRA training inside a real ComfyUI (one server for the module).

- The shipped `profile` API workflow trains a tiny LoRA from a photo folder under input/ (tiny
  SD 1.5 from the factory, 256 px crops, 2 steps) and writes models/loras/<name>.safetensors.
- The guided workflow's image part (Image Model -> Identity LoRA -> Stage Image) picks it up by
  name from the Identity LoRA dropdown and paints a different image than without it.
- ComfyUI's own LoRA code (`comfy.lora.model_lora_keys_unet/clip` + `load_lora`, what LoraLoader
  runs) maps every key of trained SD 1.5 and SDXL files (UNet and text encoders) and logs no
  "lora key not loaded". ComfyUI cannot build the tiny UNet itself (its ResBlocks hard-code
  GroupNorm(32) and the factory's UNet has 16 channels), so the key maps are built from the tiny
  checkpoint's keys and ComfyUI's own `detect_unet_config`, in a ComfyUI subprocess.

The face pack's detector is a fixed-output SCRFD graph (one face at a known box on the
astronaut photo) run through insightface's real decoding: the factory's random SCRFD finds ~120
equal boxes per photo, which the photo preparation rightly refuses as "several faces".
Skipped unless COMFYUI_PATH points at a ComfyUI checkout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests._pack import ROOT

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")]

NAME = "test-identity"
DET_SIZE = 640
STRIDES = (8, 16, 32)
# the astronaut's face in skimage.data.astronaut() (512x512) and its 5 keypoints (eyes, nose,
# mouth corners), read off the photo
FACE_BOX = (170, 60, 290, 200)
FACE_KPS = [(205, 115), (250, 112), (228, 140), (210, 168), (248, 166)]


def fixed_scrfd_model(box, kps, photo_side: int):
    """An ONNX graph with SCRFD's signature (input `input.1`, 9 outputs: scores, box distances,
    keypoint distances for strides 8/16/32, two anchors per cell) whose outputs are constants: one
    detection with score 0.95 at ``box`` (photo pixels of a square ``photo_side`` photo) and its
    keypoints ``kps``; every other anchor scores 0. insightface scales the photo into the
    640x640 detection canvas, so the constants are written in that canvas."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = DET_SIZE / photo_side
    s = STRIDES[-1]
    cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
    gx, gy = int(cx // s), int(cy // s)
    ax, ay = gx * s, gy * s
    index = (gy * (DET_SIZE // s) + gx) * 2
    nodes, outputs, out_id = [], [], 400
    for head, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            value = np.zeros(((DET_SIZE // stride) ** 2 * 2, width), np.float32)
            if stride == s:
                value[index] = {
                    "score": [0.95],
                    "bbox": [(ax - box[0] * scale) / s, (ay - box[1] * scale) / s,
                             (box[2] * scale - ax) / s, (box[3] * scale - ay) / s],
                    "kps": np.ravel([[(x * scale - ax) / s, (y * scale - ay) / s] for x, y in kps]),
                }[head]
            out_id += 1
            nodes.append(helper.make_node("Constant", [], [str(out_id)],
                                          value=numpy_helper.from_array(value, f"c{out_id}")))
            outputs.append(helper.make_tensor_value_info(str(out_id), TensorProto.FLOAT,
                                                         list(value.shape)))
    graph = helper.make_graph(
        nodes, "fixed_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import onnx
    from PIL import Image

    from tests import factory
    from tests.comfyui_server import ComfyUI
    from tests.media import astronaut

    base = tmp_path_factory.mktemp("comfy_identity")
    models = base / "models"
    factory.build(models, only=["checkpoints", "insightface"])
    pack = models / "insightface" / "models" / "buffalo_l"
    onnx.save(fixed_scrfd_model(FACE_BOX, FACE_KPS, 512), str(pack / "det_10g.onnx"))
    photos = base / "input" / "my_photos"
    photos.mkdir(parents=True)
    face = astronaut()
    for i in range(4):  # the same person in four exposures
        Image.fromarray(np.clip(face.astype(int) + 6 * i - 9, 0, 255).astype(np.uint8)).save(
            photos / f"photo{i}.png")
    server = ComfyUI(COMFYUI_PATH, str(base))
    yield server
    server.stop()


def _profile_workflow() -> dict:
    with open(os.path.join(ROOT, "workflows", "api", "profile.json"), encoding="utf-8") as f:
        workflow = json.load(f)
    workflow["2"]["inputs"].update(name=NAME, preset="quick", steps=2, resolution=256,
                                   checkpoint_every=2, rank=4, samples=1, sample_steps=1,
                                   learning_rate=1e-2)  # visible in 2 steps
    return workflow


def _image_part_of_guided(lora: str) -> dict:
    with open(os.path.join(ROOT, "workflows", "api", "guided.json"), encoding="utf-8") as f:
        guided = json.load(f)
    workflow = {k: guided[k] for k in ("2", "3", "4")}
    workflow["3"]["inputs"]["lora_1"] = lora
    workflow["4"]["inputs"].update(prompt="photo of ohwx person on a stage", size_preset="custom",
                                   width=64, height=64, steps=2, cfg=1.0, scheduler="euler")
    workflow["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    return workflow


def _image(comfy, entry: dict, node: str) -> np.ndarray:
    from PIL import Image

    meta = entry["outputs"][node]["images"][0]
    path = os.path.join(comfy.base_dir, meta["type"], meta["subfolder"], meta["filename"])
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_profile_workflow_trains_and_guided_uses_the_lora_by_name(comfy):
    entry = comfy.wait(comfy.queue(_profile_workflow()), timeout=900)
    path = os.path.join(comfy.base_dir, "models", "loras", NAME + ".safetensors")
    assert os.path.isfile(path)
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["modelspec.trigger_phrase"] == "ohwx" and meta["ss_steps"] == "2"
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    report = entry["outputs"]["2"]["text"][0]
    print(report)
    assert "4 photo(s) used" in report and "step | loss | face similarity" in report
    assert len(entry["outputs"]["3"]["images"]) == 1          # the kept checkpoint's sample

    choices = comfy.get("/object_info/SpinBotIdentityLoRA")["SpinBotIdentityLoRA"]["input"][
        "required"]["lora_1"][0]
    assert NAME + ".safetensors" in choices                   # picked up by name
    with_lora = comfy.wait(comfy.queue(_image_part_of_guided(NAME + ".safetensors")))
    without = comfy.wait(comfy.queue(_image_part_of_guided("none")))
    diff = np.abs(_image(comfy, with_lora, "5") - _image(comfy, without, "5")).mean()
    print(f"mean |with LoRA - without| = {diff:.3f} (0..255)")
    assert diff > 0.5, diff


COMFY_KEYS_SCRIPT = r"""
import io, json, logging, sys
ckpt_path, arch, lora_path = sys.argv[-3:]
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI's own argument parser reads sys.argv
log = io.StringIO()
logging.basicConfig(level=logging.WARNING, stream=log, force=True)
import comfy.options
comfy.options.enable_args_parsing()
import comfy.lora, comfy.model_detection, comfy.utils

sd = comfy.utils.load_torch_file(ckpt_path)
unet_config = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")

class Stand:  # what model_lora_keys_* read from a loaded model: its state dict keys and config
    def __init__(self, keys, unet_config=None):
        self.keys = keys
        self.model_config = type("C", (), {"unet_config": unet_config})()
    def state_dict(self):
        return dict.fromkeys(self.keys)

unet_keys = ["diffusion_model." + k[len("model.diffusion_model."):] for k in sd
             if k.startswith("model.diffusion_model.")]
if arch == "sd15":
    clip_keys = ["clip_l.transformer." + k[len("cond_stage_model.transformer."):] for k in sd
                 if k.startswith("cond_stage_model.transformer.")]
else:  # ComfyUI's SDXL CLIP-L keys; its bigG keys are converted from OpenCLIP the same way
    clip_keys = ["clip_l.transformer." + k[len("conditioner.embedders.0.transformer."):] for k in sd
                 if k.startswith("conditioner.embedders.0.transformer.")]
    clip_keys += ["clip_g.transformer.text_model.encoder.layers.%d.%s.weight" % (b, m)
                  for b in range(32) for m in ("self_attn.q_proj", "self_attn.k_proj",
                  "self_attn.v_proj", "self_attn.out_proj")
                  if "conditioner.embedders.1.model.transformer.resblocks.%d.attn.in_proj_weight" % b in sd]
key_map = comfy.lora.model_lora_keys_unet(Stand(unet_keys, unet_config), {})
key_map = comfy.lora.model_lora_keys_clip(Stand(clip_keys), key_map)
lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
patches = comfy.lora.load_lora(lora, key_map)
print(json.dumps({"patches": len(patches), "pairs": sum(k.endswith(".lora_down.weight") for k in lora),
                  "log": log.getvalue()}))
"""


@pytest.mark.parametrize("arch,checkpoint", [("sd15", "v1-5-pruned-emaonly.safetensors"),
                                             ("sdxl_base", "sd_xl_base_1.0.safetensors")])
def test_comfyuis_lora_code_maps_every_key(comfy, tmp_path, monkeypatch, arch, checkpoint):
    """UNet + text-encoder LoRAs: every pair becomes a ComfyUI patch, no 'lora key not loaded'."""
    from spinbot.nodes.identity import train as T
    from spinbot.nodes.image import nodes_image as N

    models = os.path.join(comfy.base_dir, "models")
    monkeypatch.setenv("SPINBOT_MODELS_DIR", models)
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    model = N.SpinBotImageModel().load(checkpoint, "none", "auto", "auto")[0]
    rng = np.random.default_rng(0)
    items = [(f"p{i}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "photo of ohwx person")
             for i in range(3)]
    settings = T.resolve_settings("quick", arch, steps=1, resolution=64, checkpoint_every=1,
                                  rank=4, samples=0, train_text_encoder=True)
    lora = str(tmp_path / f"te-{arch}.safetensors")
    T.train_identity_lora(model, items, "ohwx", settings, lora, str(tmp_path / "run"))
    out = subprocess.run([sys.executable, "-c", COMFY_KEYS_SCRIPT, "--",
                          os.path.join(models, "checkpoints", checkpoint), arch, lora],
                         cwd=COMFYUI_PATH, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "lora key not loaded" not in result["log"], result["log"][:2000]
    assert result["patches"] == result["pairs"] > 0
