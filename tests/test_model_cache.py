"""The pack's model cache (nodes/model_cache.py): every stage's models go through one registry that
ComfyUI can empty, keys describe the files (never the free memory), IS_CHANGED follows every
file a node reads.

Standalone: `model_cache.unload_all()` plays ComfyUI's "Unload models". The same registry inside a
real ComfyUI is tested in tests/test_comfyui_memory.py.
"""
from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
import torch

from spinbot.nodes import model_cache, runtime
from tests import factory


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    from tests import factory_lipsync, factory_motion, factory_voice

    root = tmp_path_factory.mktemp("cache_models")
    factory.tiny_sd15(root / "checkpoints")
    factory.tiny_identity_loras(root / "loras")
    factory_motion.tiny_svd_xt(root / "checkpoints")
    factory_voice.tiny_f5tts_v1_base(root / "tts")
    factory_voice.tiny_vocos_mel_24khz(root / "tts")
    factory_lipsync.tiny_wav2lip(root / "lipsync")
    factory.tiny_realesr_general_x4v3(root / "upscale_models")
    try:
        from tests import factory_lipsync_faces

        factory_lipsync_faces.tiny_buffalo_l(root / "insightface")
    except ImportError:  # onnx missing: the detector part is skipped below
        pass
    return root


@pytest.fixture(autouse=True)
def use_models(models_root, monkeypatch, spinbot_dirs):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models_root))
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    model_cache.unload_all()
    yield
    model_cache.unload_all()


def _bump(path, seconds: int = 5) -> None:
    """Give a file a new mtime, as a replaced download has."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def _kinds() -> list[str]:
    return sorted(m["kind"] for m in model_cache.resident_models())


SD15 = "v1-5-pruned-emaonly.safetensors"
LORA = "spinbot-identity-sd15.safetensors"


def _image_model(name=SD15):
    from spinbot.nodes.image import nodes_image

    return nodes_image.SpinBotImageModel().load(name, "none", "auto", "none")[0]


def _with_lora(model):
    from spinbot.nodes.image import nodes_image

    return nodes_image.SpinBotIdentityLoRA().apply(model, LORA, 1.0)[0]


# --------------------------------------------------------------------------- file stamps

def test_file_stamp_of_files_folders_and_missing_paths(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"1234")
    stamp = runtime.file_stamp(str(f))
    assert stamp.startswith(str(f)) and "|4|" in stamp
    assert runtime.file_stamp(str(f)) == stamp
    f.write_bytes(b"12345")
    assert runtime.file_stamp(str(f)) != stamp
    assert runtime.file_stamp(str(tmp_path / "gone.pth")) == f"{tmp_path / 'gone.pth'}|missing"
    assert runtime.file_stamp(None) == runtime.file_stamp("") == ""

    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"w" * 10)
    (folder / "model_index.json").write_text("{}")
    stamp = runtime.file_stamp(str(folder))
    assert "|dir|2|" in stamp
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.lock").write_text("hub bookkeeping")
    (folder / ".DS_Store").write_text("finder")
    assert runtime.file_stamp(str(folder)) == stamp  # hidden files are not the model
    _bump(weights)  # a weight file deep inside, replaced
    assert runtime.file_stamp(str(folder)) != stamp
    bumped = runtime.file_stamp(str(folder))
    (folder / "unet" / "extra.bin").write_bytes(b"")
    assert runtime.file_stamp(str(folder)) != bumped


# --------------------------------------------------------------------------- the registry

def test_every_stage_registers_and_unload_all_frees_its_memory(models_root):
    from spinbot.nodes.lipsync.engine import get_wav2lip
    from spinbot.nodes.motion import checkpoint as motion
    from spinbot.nodes.upscale.model import load_upscaler
    from spinbot.nodes.voice import engine as voice

    cpu = torch.device("cpu")
    image = _image_model()
    lora = _with_lora(image)
    svd = motion.load_motion_model(str(models_root / "checkpoints" / "svd_xt.safetensors"))
    f5, vocos = voice.get_models(str(models_root / "tts" / "F5TTS_v1_Base" / "model_1250000.safetensors"),
                                 str(models_root / "tts" / "vocos-mel-24khz"))
    wav2lip = get_wav2lip(str(models_root / "lipsync" / "wav2lip.pth"), cpu, torch.float32)
    upscaler = load_upscaler("realesr-general-x4v3.pth")
    expected = ["image", "image_lora", "lipsync", "motion", "upscale", "voice"]
    held = {"image": image.pipe.unet, "image_lora": lora.pipe.unet, "motion": svd.pipe.unet,
            "voice": f5.dit, "lipsync": wav2lip, "upscale": upscaler.descriptor.model}
    try:
        import insightface  # noqa: F401
        from spinbot.nodes.lipsync.faces import load_detector

        detector = load_detector("buffalo_l", "cpu", det_size=320)
        held["face_detector"] = detector
        expected.append("face_detector")
        del detector
    except ImportError:
        pass
    resident = {m["kind"]: m for m in model_cache.resident_models()}
    assert sorted(resident) == sorted(expected)
    assert all(m["bytes"] > 0 and m["device"] == "cpu" for m in resident.values()), resident
    # sizes are the weights: parameters and buffers, shared tensors counted once
    voice_bytes = sum(t.numel() * t.element_size() for t in
                      {id(t): t for m in (f5.dit, vocos) for t in [*m.parameters(), *m.buffers()]}.values())
    assert resident["voice"]["bytes"] == voice_bytes
    assert resident["voice"]["name"] == "model_1250000.safetensors + vocos-mel-24khz"
    # a LoRA copy costs only its patched layers: the weights it shares are the base's
    base_params = {id(p) for p in image.pipe.unet.parameters()}
    own = {id(p): p for m in (lora.pipe.unet, lora.pipe.text_encoder, lora.pipe.vae)
           for p in [*m.parameters(), *m.buffers()] if id(p) not in base_params}
    base_all = {id(t) for m in model_cache.resolve(image.pipe).components.values()
                if isinstance(m, torch.nn.Module) for t in [*m.parameters(), *m.buffers()]}
    own_bytes = sum(t.numel() * t.element_size() for i, t in own.items() if i not in base_all)
    assert 0 < resident["image_lora"]["bytes"] == own_bytes < resident["image"]["bytes"]
    # a cache hit is the same object
    assert voice.get_models(str(models_root / "tts" / "F5TTS_v1_Base" / "model_1250000.safetensors"),
                            str(models_root / "tts" / "vocos-mel-24khz"))[0] is f5
    assert load_upscaler("realesr-general-x4v3.pth") is upscaler

    patched = dict(lora.pipe.unet.named_parameters())
    changed = next(n for n, p in patched.items()
                   if p is not dict(image.pipe.unet.named_parameters())[n])
    lora_weight = patched[changed].detach().clone()
    refs = {kind: weakref.ref(obj) for kind, obj in held.items()}
    del held, f5, vocos, wav2lip, upscaler, patched
    assert model_cache.unload_all() == len(expected)
    assert model_cache.resident_models() == []
    gc.collect()
    alive = [kind for kind, ref in refs.items() if ref() is not None]
    assert alive == [], f"still referenced after unload_all: {alive}"

    # node outputs are handles: used again, they reload from disk (the LoRA copy re-applied)
    assert dict(lora.pipe.unet.named_parameters())[changed].detach().equal(lora_weight)
    assert _kinds() == ["image", "image_lora"]
    assert svd.default_frames == 25 and "motion" in _kinds()


def test_evicting_a_base_takes_its_lora_copies_along():
    image = _image_model()
    lora = _with_lora(image)
    assert _kinds() == ["image", "image_lora"]
    unet = weakref.ref(lora.pipe.unet)
    assert model_cache.evict_models("image") == 1
    gc.collect()
    assert _kinds() == [] and unet() is None  # the copy would have kept the base's weights


def test_kind_limits_keep_the_most_recently_used(models_root, tmp_path):
    from spinbot.nodes.upscale.model import load_upscaler

    folder = models_root / "upscale_models"
    for i in (1, 2):
        (folder / f"copy{i}.pth").write_bytes((folder / "realesr-general-x4v3.pth").read_bytes())
    try:
        load_upscaler("realesr-general-x4v3.pth")
        load_upscaler("copy1.pth")
        load_upscaler("realesr-general-x4v3.pth")  # used again: now the most recent
        load_upscaler("copy2.pth")
        names = [m["name"] for m in model_cache.resident_models()]
        assert names == ["realesr-general-x4v3.pth", "copy2.pth"]
    finally:
        for i in (1, 2):
            os.remove(folder / f"copy{i}.pth")


# --------------------------------------------------------------------------- keys

@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device whose free memory the test sets, without CUDA (nothing is moved to it)."""
    state = {"free": 70 << 30, "total": 80 << 30}
    monkeypatch.setattr(runtime, "torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda device=None: state["free"])
    monkeypatch.setattr(runtime, "total_memory_bytes", lambda device=None: state["total"])
    monkeypatch.setattr(runtime, "make_room", lambda n, device=None: None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    return state


def test_cache_keys_do_not_depend_on_the_free_memory(models_root, fake_gpu, monkeypatch):
    from spinbot.nodes.image import checkpoint as image
    from spinbot.nodes.motion import checkpoint as motion

    loads = []
    for module in (image, motion):
        original = module.load_single_file
        monkeypatch.setattr(module, "load_single_file",
                            lambda *a, _o=original, _m=module.__name__, **k: loads.append(_m) or _o(*a, **k))
    monkeypatch.setattr(motion, "apply_policy", lambda pipe, device, policy: None)
    monkeypatch.setattr(image, "place_pipeline", lambda pipe, device, offload: None)

    svd_path = str(models_root / "checkpoints" / "svd_xt.safetensors")
    first = motion.load_motion_model(svd_path)
    assert not first.extra["policy"].offload  # 70 of 80 GB free: everything on the device
    fake_gpu["free"] = 6 << 30  # another program took VRAM: the auto policy would now offload
    assert motion.memory_policy(torch.device("cuda"), "auto").offload
    again = motion.load_motion_model(svd_path)
    assert model_cache.resolve(again.pipe) is model_cache.resolve(first.pipe)
    assert again.extra["stamp"] == first.extra["stamp"]

    sd_path = str(models_root / "checkpoints" / SD15)
    a = image.load_image_model(sd_path, offload="auto")
    fake_gpu["free"] = 70 << 30
    b = image.load_image_model(sd_path, offload="auto")
    assert model_cache.resolve(b.pipe) is model_cache.resolve(a.pipe)
    assert loads.count(motion.__name__) == 1 and loads.count(image.__name__) == 1
    key = image.cache_key(sd_path, None, torch.float16, torch.device("cuda"), "auto")
    assert str(6 << 30) not in repr(key) and str(70 << 30) not in repr(key)


# --------------------------------------------------------------------------- IS_CHANGED

def test_f5_is_changed_and_cache_follow_vocoder_weights_and_vocab(models_root):
    from spinbot.nodes.voice import engine
    from spinbot.nodes.voice.nodes_voice import SpinBotF5TTS

    model, vocoder = "F5TTS_v1_Base/model_1250000.safetensors", "vocos-mel-24khz"
    f5_path = str(models_root / "tts" / model)
    vocos_dir = str(models_root / "tts" / vocoder)
    stamp = SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder, nfe_steps=8)
    assert SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder, nfe_steps=32) == stamp
    (models_root / "tts" / "unrelated.txt").write_text("not read by this node")
    assert SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder) == stamp
    loaded = engine.get_models(f5_path, vocos_dir)

    _bump(models_root / "tts" / vocoder / "pytorch_model.bin")  # vocoder weights replaced
    after_vocoder = SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder)
    assert after_vocoder != stamp
    reloaded = engine.get_models(f5_path, vocos_dir)
    assert reloaded[1] is not loaded[1]

    _bump(models_root / "tts" / "F5TTS_v1_Base" / "vocab.txt")  # another vocabulary
    assert SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder) != after_vocoder
    assert engine.get_models(f5_path, vocos_dir)[0] is not reloaded[0]
    assert _kinds() == ["voice"]  # one pair: the stale ones were replaced, not kept


def test_voice_profile_is_changed_follows_the_saved_transcript(models_root):
    from spinbot.nodes.voice import profiles
    from spinbot.nodes.voice.nodes_voice import SpinBotVoiceProfile

    wave = torch.from_numpy(np.sin(np.linspace(0, 2000, 24000 * 3)).astype(np.float32) * 0.1)
    folder = profiles.save_profile(profiles.VoiceProfile(wave=wave, text="Hello there."), "anna")
    typed = dict(load_profile="anna", reference_text="typed words")
    stamp = SpinBotVoiceProfile.IS_CHANGED(**typed)
    assert SpinBotVoiceProfile.IS_CHANGED(**typed) == stamp
    with open(os.path.join(folder, "reference.txt"), "w", encoding="utf-8") as f:
        f.write("A corrected transcript, longer than before.")
    assert SpinBotVoiceProfile.IS_CHANGED(**typed) != stamp  # reference.wav did not change
    # an empty transcript is made by Whisper: its folder counts too
    empty = SpinBotVoiceProfile.IS_CHANGED(load_profile="(none)", reference_text="")
    whisper = models_root / "whisper" / "whisper-small"
    whisper.mkdir(parents=True, exist_ok=True)
    try:
        (whisper / "config.json").write_text("{}")
        assert SpinBotVoiceProfile.IS_CHANGED(load_profile="(none)", reference_text="") != empty
        assert SpinBotVoiceProfile.IS_CHANGED(load_profile="(none)", reference_text="typed") == ""
    finally:
        (whisper / "config.json").unlink()


def test_wav2lip_is_changed_follows_the_crop_upscaler_file(models_root):
    from spinbot.nodes.lipsync.nodes_lipsync import SpinBotWav2Lip

    inputs = dict(model_name="wav2lip.pth", face_detector="buffalo_l")
    with_model = SpinBotWav2Lip.IS_CHANGED(crop_upscale="realesr-general-x4v3.pth", **inputs)
    resized = SpinBotWav2Lip.IS_CHANGED(crop_upscale="bicubic", **inputs)
    assert with_model != resized
    _bump(models_root / "upscale_models" / "realesr-general-x4v3.pth")
    assert SpinBotWav2Lip.IS_CHANGED(crop_upscale="realesr-general-x4v3.pth", **inputs) != with_model
    assert SpinBotWav2Lip.IS_CHANGED(crop_upscale="bicubic", **inputs) == resized
    _bump(models_root / "lipsync" / "wav2lip.pth")
    assert SpinBotWav2Lip.IS_CHANGED(crop_upscale="bicubic", **inputs) != resized


def test_diffusers_folder_weights_change_is_changed_and_the_cache(models_root):
    from spinbot.nodes.image import nodes_image

    folder = models_root / "diffusers" / "tiny-sd15"
    if not folder.exists():
        model_cache.resolve(_image_model().pipe).save_pretrained(str(folder), safe_serialization=True)
    name = "diffusers/tiny-sd15"
    stamp = nodes_image.SpinBotImageModel.IS_CHANGED(checkpoint=name, vae="none")
    assert nodes_image.SpinBotImageModel.IS_CHANGED(checkpoint=name, vae="none") == stamp
    first = _image_model(name)
    assert _image_model(name) is first
    weights = next((folder / "unet").glob("*.safetensors"))
    _bump(weights)  # model_index.json untouched: only the UNet was replaced
    assert nodes_image.SpinBotImageModel.IS_CHANGED(checkpoint=name, vae="none") != stamp
    second = _image_model(name)
    assert model_cache.resolve(second.pipe) is not model_cache.resolve(first.pipe)
    # a single file's own .config folder is read too
    single = nodes_image.SpinBotImageModel.IS_CHANGED(checkpoint=SD15, vae="none")
    config = models_root / "checkpoints" / "v1-5-pruned-emaonly.config" / "unet" / "config.json"
    _bump(config)
    assert nodes_image.SpinBotImageModel.IS_CHANGED(checkpoint=SD15, vae="none") != single


def test_svd_is_changed_follows_its_config_folder_and_clip_vision(models_root):
    from spinbot.nodes.motion.nodes_motion import SpinBotSVDModel

    stamp = SpinBotSVDModel.IS_CHANGED(checkpoint="svd_xt.safetensors", clip_vision="none")
    assert SpinBotSVDModel.IS_CHANGED(checkpoint="svd_xt.safetensors", clip_vision="none") == stamp
    _bump(models_root / "checkpoints" / "svd_xt.config" / "unet" / "config.json")
    assert SpinBotSVDModel.IS_CHANGED(checkpoint="svd_xt.safetensors", clip_vision="none") != stamp
    missing = SpinBotSVDModel.IS_CHANGED(checkpoint="svd_missing.safetensors", clip_vision="none")
    assert missing.startswith("svd_missing.safetensors|missing")


def test_runtime_keeps_the_model_cache_names_and_standalone_hooks_do_nothing():
    """The cache moved to model_cache.py; ``runtime.<name>`` still reaches the same objects, and
    its ComfyUI hooks leave a standalone entry unlisted (no patcher, no owner)."""
    for name in ("CachedModel", "ModelRef", "cached_model", "put_model", "peek_model",
                 "evict_models", "unload_all", "resident_models", "model_cache_stats", "resolve"):
        assert getattr(runtime, name) is getattr(model_cache, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        runtime.no_such_name  # noqa: B018
    key = ("seam-test", id(object()))
    layer = torch.nn.Linear(3, 2)
    assert model_cache.put_model("seam_test", key, layer, name="tiny", modules=lambda m: [m]) is layer
    entry = model_cache.get_entry(key)
    assert entry.patcher is None and entry.owner is None and runtime.current_owner() is None
    runtime.comfy_register(entry)
    runtime.comfy_unregister(entry)
    assert entry.patcher is None and model_cache.peek_model(key) is layer
    assert entry.size() == (3 * 2 + 2) * 4
    assert model_cache.evict_models(key=key) == 1 and model_cache.peek_model(key) is None


def test_model_cache_imports_no_comfyui():
    """Only runtime.py may import ComfyUI internals (folder_paths, comfy.*, server)."""
    import ast

    tree = ast.parse(open(model_cache.__file__, encoding="utf-8").read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported
                if m.split(".")[0] in ("comfy", "server", "folder_paths", "comfy_execution")}
