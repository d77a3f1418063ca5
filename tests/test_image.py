"""Image stage: offline SD 1.5 / SDXL loading from single files, LoRAs, stage image node.

Tiny models come from the factory (LDM key layout, release file names); every generation is
64x64 with 2-3 steps so the file runs in well under a minute on two CPU cores.
"""
from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch

from spinbot.nodes.image import checkpoint as ckpt
from spinbot.nodes.image import nodes_image as N
from spinbot.nodes.image.checkpoint import ImageModelError
from spinbot.nodes.image.generate import with_trigger
from spinbot.nodes.image.lora import trigger_word
from tests.offline import refuse_network
from tests import factory, sd_layout

SD15 = "v1-5-pruned-emaonly.safetensors"
XL = "sd_xl_base_1.0.safetensors"
REFINER = "sd_xl_refiner_1.0.safetensors"
LORA_KOHYA = "spinbot-identity-sd15.safetensors"
LORA_PEFT = "spinbot-identity-sd15-peft.safetensors"
LORA_XL = "spinbot-identity-sdxl.safetensors"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_models")
    factory.build(root, only=["checkpoints", "loras"])
    return root


@pytest.fixture(autouse=True)
def use_models(models_root, monkeypatch, spinbot_dirs):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models_root))
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")


def _load(name: str):
    return N.SpinBotImageModel().load(name, "none", "auto", "auto")[0]


def _paint(model, seed=1, steps=2, batch=1, prompt="a person on a stage", **kw):
    return N.SpinBotStageImage().paint(model, prompt, "blurry", "custom", 64, 64, steps, 5.0,
                                       kw.pop("scheduler", "euler"), seed, batch, **kw)[0]


def _loras(model, *pairs):
    inputs = {}
    for i in range(1, N.LORA_SLOTS + 1):
        name, strength = pairs[i - 1] if i <= len(pairs) else (N.NONE, 1.0)
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = name, strength
    return N.SpinBotIdentityLoRA().apply(model, **inputs)


@pytest.fixture
def no_network(monkeypatch):
    """Any hub call or socket connection fails the test."""
    refuse_network(monkeypatch)
    ckpt.clear_cache()


@pytest.mark.parametrize("name,arch", [(SD15, "sd15"), (XL, "sdxl_base"), (REFINER, "sdxl_refiner")])
def test_single_files_load_offline_with_the_checkpoint_weights(no_network, models_root, name, arch):
    model = _load(name)
    assert model.arch == arch
    # The tiny file uses the release layout; its weights must arrive unchanged in diffusers.
    from safetensors import safe_open
    with safe_open(str(models_root / "checkpoints" / name), "pt") as f:
        conv_in = f.get_tensor("model.diffusion_model.input_blocks.0.0.weight")
        out_key = "first_stage_model.decoder.conv_out.weight"
        vae_out = f.get_tensor(out_key)
    assert torch.equal(model.pipe.unet.conv_in.weight, conv_in)
    assert torch.equal(model.pipe.vae.decoder.conv_out.weight, vae_out)


def test_architecture_detection_from_keys():
    assert ckpt.detect_architecture({"model.diffusion_model.input_blocks.0.0.weight",
                                     "cond_stage_model.transformer.text_model.x"}) == "sd15"
    with pytest.raises(ImageModelError, match="Stable Diffusion 2"):
        ckpt.detect_architecture({"model.diffusion_model.input_blocks.0.0.weight",
                                  "cond_stage_model.model.token_embedding.weight"})
    with pytest.raises(ImageModelError, match="not a Stable Diffusion 1.5 / SDXL checkpoint"):
        ckpt.detect_architecture({"body.0.weight", "conv_first.weight"}, "x.safetensors")


def test_stage_image_shape_range_and_seeds():
    model = _load(SD15)
    a = _paint(model, seed=3, batch=2)
    assert a.shape == (2, 64, 64, 3) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0
    assert torch.equal(a, _paint(model, seed=3, batch=2))
    assert not torch.allclose(a, _paint(model, seed=4, batch=2))
    # image i of a batch uses seed + i
    assert torch.allclose(a[1:], _paint(model, seed=4, batch=1), atol=1e-5)


def test_sdxl_with_refiner_and_schedulers():
    base, refiner = _load(XL), _load(REFINER)
    plain = _paint(base, steps=3, scheduler="dpm++ 2m karras")
    refined = _paint(base, steps=3, scheduler="dpm++ 2m karras", refiner=refiner, refiner_split=0.6)
    assert plain.shape == refined.shape == (1, 64, 64, 3)
    assert not torch.allclose(plain, refined)
    with pytest.raises(ImageModelError, match="refiner cannot start from noise"):
        _paint(refiner)
    with pytest.raises(ImageModelError, match="SDXL refiner used with an SDXL base"):
        _paint(_load(SD15), refiner=refiner)


def test_progress_and_cancel(monkeypatch):
    from spinbot.nodes import runtime
    model = _load(SD15)
    updates = []
    update = runtime.Progress.update

    def record(self, n=1, preview=None):
        updates.append(n)
        update(self, n, preview)

    monkeypatch.setattr(runtime.Progress, "update", record)
    _paint(model, steps=3)
    assert len(updates) == 3
    calls = []

    def cancel_on_second():
        calls.append(1)
        if len(calls) == 2:
            raise runtime.Interrupted("processing interrupted")
    monkeypatch.setattr(runtime, "check_interrupted", cancel_on_second)
    with pytest.raises(runtime.Interrupted):
        _paint(model, steps=3)
    assert len(calls) == 2


@pytest.mark.parametrize("lora", [LORA_KOHYA, LORA_PEFT])
def test_lora_strength_zero_is_base_and_one_changes(lora):
    base = _load(SD15)
    reference = _paint(base)
    zero, _ = _loras(base, (lora, 0.0))
    one, _ = _loras(base, (lora, 1.0))
    prompt = "ohwx person, sks face, a person on a stage"  # same text for all: trigger inserted
    assert torch.allclose(_paint(zero, prompt=prompt), _paint(base, prompt=prompt), atol=1e-6)
    assert (_paint(one, prompt=prompt) - _paint(base, prompt=prompt)).abs().max() > 1e-3
    assert torch.equal(_paint(base), reference)


def test_two_lora_models_from_one_base_do_not_interfere():
    base = _load(SD15)
    before = {k: v.clone() for k, v in base.pipe.unet.state_dict().items()}
    prompt = "ohwx person, sks face, x"
    a, _ = _loras(base, (LORA_KOHYA, 1.0))
    img_a = _paint(a, prompt=prompt)
    b, _ = _loras(base, (LORA_PEFT, 1.0))
    _ = _paint(b, prompt=prompt)
    assert torch.equal(_paint(a, prompt=prompt), img_a)
    after = base.pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # untouched layers are shared with the base, not copied
    assert a.pipe.unet.conv_in.weight is base.pipe.unet.conv_in.weight
    assert a.pipe.vae is base.pipe.vae


def test_sdxl_kohya_lora_with_ldm_block_names():
    base = _load(XL)
    model, trigger = _loras(base, (LORA_XL, 1.0))
    assert trigger == "ohwx person"
    changed = [n for n, p in model.pipe.unet.named_parameters()
               if p is not dict(base.pipe.unet.named_parameters())[n]]
    assert changed and all("attn" in n for n in changed)
    assert model.pipe.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj.weight is not \
        base.pipe.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj.weight


def test_trigger_words_from_metadata_and_prompt():
    assert trigger_word({"modelspec.trigger_phrase": "zxc man"}) == "zxc man"
    assert trigger_word({"ss_tag_frequency": json.dumps({"5_ohwx": {"ohwx": 9, "smile": 2}})}) == "ohwx"
    assert trigger_word({"ss_tag_frequency": "not json"}) == ""
    assert with_trigger("a portrait", ["ohwx"]) == "ohwx, a portrait"
    assert with_trigger("OHWX at work", ["ohwx"]) == "OHWX at work"
    _, words = _loras(_load(SD15), (LORA_KOHYA, 1.0), (LORA_PEFT, 0.5))
    assert words == "ohwx person, sks face"


def test_wrong_base_lora_gives_clear_error(models_root):
    with pytest.raises(ImageModelError, match="trained for SDXL but the model is SD 1.5"):
        _loras(_load(SD15), (LORA_XL, 1.0))
    with pytest.raises(ImageModelError, match="made for another base model"):
        _loras(_load(XL), (LORA_PEFT, 1.0))  # no metadata: caught by the layer names/shapes


def test_corrupt_and_non_sd_checkpoints_give_clear_errors(models_root):
    folder = models_root / "checkpoints"
    (folder / "broken.safetensors").write_bytes((folder / SD15).read_bytes()[:5000])
    with pytest.raises(ImageModelError, match="not a readable safetensors file"):
        _load("broken.safetensors")
    from safetensors.torch import save_file
    save_file({"conv_first.weight": torch.zeros(2, 3, 3, 3)}, str(folder / "esrgan.safetensors"))
    with pytest.raises(ImageModelError, match="not a Stable Diffusion 1.5 / SDXL checkpoint"):
        _load("esrgan.safetensors")
    with pytest.raises(ImageModelError, match="not found in models/checkpoints"):
        _load("missing.safetensors")


def test_missing_tokenizer_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(tmp_path))
    with pytest.raises(ImageModelError, match="text_encoders/clip-vit-large-patch14"):
        ckpt.load_tokenizer(str(tmp_path / "nowhere"))
    sd_layout.write_tiny_tokenizer(tmp_path / "text_encoders" / "clip-vit-large-patch14")
    tok = ckpt.load_tokenizer(str(tmp_path / "nowhere"), "tokenizer_2")
    assert tok.pad_token == "!" and tok.model_max_length == 77


def test_cache_and_is_changed_follow_the_file(models_root):
    first = _load(SD15)
    assert _load(SD15) is first
    stamp = N.SpinBotImageModel.IS_CHANGED(checkpoint=SD15, vae="none")
    path = models_root / "checkpoints" / SD15
    import os
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert N.SpinBotImageModel.IS_CHANGED(checkpoint=SD15, vae="none") != stamp
    assert _load(SD15) is not first


def test_shipped_configs_are_the_published_sizes():
    def cfg(*parts):
        return json.loads((ckpt.os.path.join(ckpt.CONFIGS_DIR, *parts) and
                           open(ckpt.os.path.join(ckpt.CONFIGS_DIR, *parts))).read())
    assert cfg("sd15", "unet", "config.json")["block_out_channels"] == [320, 640, 1280, 1280]
    assert cfg("sdxl_base", "unet", "config.json")["cross_attention_dim"] == 2048
    assert cfg("sdxl_base", "text_encoder_2", "config.json")["num_hidden_layers"] == 32
    assert cfg("sdxl_refiner", "unet", "config.json")["projection_class_embeddings_input_dim"] == 2560


def _write_vae(models_root, name: str, nudge: float = 0.0) -> str:
    """A standalone VAE file in the LDM layout (like vae-ft-mse-840000 or sdxl_vae), cut from the
    tiny checkpoint's first_stage_model, optionally with a changed output bias."""
    from safetensors.torch import load_file, save_file
    sd = load_file(str(models_root / "checkpoints" / SD15))
    vae = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    vae["decoder.conv_out.bias"] = vae["decoder.conv_out.bias"] + nudge
    folder = models_root / "vae"
    folder.mkdir(exist_ok=True)
    save_file(vae, str(folder / name))
    return name


def test_separate_vae_replaces_the_checkpoints_own(no_network, models_root):
    same, nudged = _write_vae(models_root, "same-vae.safetensors"), _write_vae(models_root, "nudged-vae.safetensors", 0.5)
    assert {same, nudged} <= set(N.SpinBotImageModel.INPUT_TYPES()["required"]["vae"][0])
    base = _paint(_load(SD15), seed=5)
    with_same = _paint(N.SpinBotImageModel().load(SD15, same, "auto", "auto")[0], seed=5)
    with_nudged = N.SpinBotImageModel().load(SD15, nudged, "auto", "auto")[0]
    assert torch.allclose(base, with_same, atol=1e-6)
    assert with_nudged.pipe.vae.decoder.conv_out.bias[0].item() == pytest.approx(
        _load(SD15).pipe.vae.decoder.conv_out.bias[0].item() + 0.5, abs=1e-6)
    assert (_paint(with_nudged, seed=5) - base).abs().mean() > 0.01
    with pytest.raises(ImageModelError, match="not a VAE"):
        (models_root / "vae" / "lora-not-vae.safetensors").write_bytes(
            (models_root / "loras" / LORA_KOHYA).read_bytes())
        N.SpinBotImageModel().load(SD15, "lora-not-vae.safetensors", "auto", "auto")


def test_diffusers_folder_gives_the_single_file_image(no_network, models_root):
    single = _load(SD15)
    folder = models_root / "diffusers" / "tiny-sd15"
    single.pipe.save_pretrained(str(folder), safe_serialization=True)
    choices = N.SpinBotImageModel.INPUT_TYPES()["required"]["checkpoint"][0]
    assert "diffusers/tiny-sd15" in choices
    from_folder = N.SpinBotImageModel().load("diffusers/tiny-sd15", "none", "auto", "auto")[0]
    assert from_folder.arch == "sd15"
    assert torch.allclose(_paint(single, seed=9), _paint(from_folder, seed=9), atol=1e-5)
    # A separate VAE applies to diffusers folders too.
    nudged = _write_vae(models_root, "nudged-vae.safetensors", 0.5)
    with_vae = N.SpinBotImageModel().load("diffusers/tiny-sd15", nudged, "auto", "auto")[0]
    assert (_paint(with_vae, seed=9) - _paint(from_folder, seed=9)).abs().mean() > 0.01
    # LoRAs work on folder-loaded models like on single files.
    lora = _loras(from_folder, (LORA_KOHYA, 1.0))[0]
    assert not torch.allclose(_paint(lora, seed=9), _paint(from_folder, seed=9))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    ckpt.clear_cache()
    with pytest.raises(ImageModelError, match="StableVideoDiffusionPipeline folder; SpinBot loads SD 1.5 and SDXL"):
        N.SpinBotImageModel().load("diffusers/tiny-sd15", "none", "auto", "auto")


def test_half_precision_loads_half_weights(models_root):
    model = N.SpinBotImageModel().load(SD15, "none", "bf16", "none")[0]
    assert model.pipe.unet.dtype == torch.bfloat16 and model.pipe.vae.dtype == torch.bfloat16
    image = _paint(model, seed=2)
    assert image.dtype == torch.float32 and torch.isfinite(image).all()


def test_one_image_per_segment_for_story_mode():
    from spinbot.nodes.script.segments import Segment
    model = _load(SD15)
    segments = (Segment(0, "A ship leaves the harbour.", 0.0, 2.0), Segment(1, "The storm comes.", 2.0, 4.5))
    images = _paint(model, seed=7, segments=segments)
    assert images.shape == (2, 64, 64, 3)
    # Segment k is the plain generation of "scene, words" at seed + k.
    alone = _paint(model, seed=8, prompt="a person on a stage, The storm comes.")
    assert torch.allclose(images[1:], alone, atol=1e-5)
    assert N.segment_prompt("  ", "Hi.") == "Hi."


# ----------------------------------------------------------------------------- placement policy

GIB = 1 << 30


def _published_sizes(arch: str) -> dict[str, int]:
    """Parameter counts of the full-size models built from the shipped configs (on the meta
    device: no memory, no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = ckpt.os.path.join(ckpt.CONFIGS_DIR, arch)
    counts = {}
    with torch.device("meta"):
        for sub, build in (("unet", UNet2DConditionModel.from_config),
                           ("vae", AutoencoderKL.from_config),
                           ("text_encoder", lambda c: CLIPTextModel(CLIPTextConfig(**c))),
                           ("text_encoder_2", lambda c: CLIPTextModelWithProjection(CLIPTextConfig(**c)))):
            path = ckpt.os.path.join(folder, sub, "config.json")
            if ckpt.os.path.isfile(path):
                config = {k: v for k, v in json.load(open(path)).items()
                          if k not in ("architectures", "_name_or_path")}
                counts[sub] = sum(p.numel() for p in build(config).parameters())
    return counts


def test_full_size_configs_have_the_published_parameter_counts():
    # Published counts: SD 1.5 UNet 859.52 M, SDXL UNet 2.567 B, KL VAE 83.65 M, CLIP ViT-L/14
    # text 123.06 M, OpenCLIP ViT-bigG/14 text + projection 694.66 M.
    sd15, xl, refiner = (_published_sizes(a) for a in ("sd15", "sdxl_base", "sdxl_refiner"))
    assert sd15 == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert xl == {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                  "text_encoder_2": 694_659_840}
    assert set(refiner) == {"unet", "vae", "text_encoder_2"}
    assert refiner["text_encoder_2"] == 694_659_840 and refiner["vae"] == 83_653_863
    # The release files hold exactly these parts: v1-5-pruned-emaonly (fp32) is 4.27 GB,
    # sd_xl_base_1.0 (fp16) 6.94 GB and sd_xl_refiner_1.0 (fp16) 6.08 GB.
    for counts, bytes_per_weight, published_gb in ((sd15, 4, 4.27), (xl, 2, 6.94), (refiner, 2, 6.08)):
        assert abs(sum(counts.values()) * bytes_per_weight / 1e9 - published_gb) < 0.01


# The UNet/VAE sections of the original release configs (CompVis v1-inference.yaml, Stability's
# sgm sd_xl_base.yaml / sd_xl_refiner.yaml), which diffusers' own single-file code converts.
_LDM_UNET = {
    "sd15": dict(in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, transformer_depth=1,
                 context_dim=768, use_linear_in_transformer=False),
    "sdxl_base": dict(adm_in_channels=2816, num_classes="sequential", in_channels=4, out_channels=4,
                      model_channels=320, attention_resolutions=[4, 2], num_res_blocks=2,
                      channel_mult=[1, 2, 4], num_head_channels=64, transformer_depth=[1, 2, 10],
                      context_dim=2048, use_linear_in_transformer=True),
    "sdxl_refiner": dict(adm_in_channels=2560, num_classes="sequential", in_channels=4, out_channels=4,
                         model_channels=384, attention_resolutions=[4, 2], num_res_blocks=2,
                         channel_mult=[1, 2, 4, 4], num_head_channels=64, transformer_depth=4,
                         context_dim=1280, use_linear_in_transformer=True),
}
_LDM_SCALE = {"sd15": (0.18215, 512), "sdxl_base": (0.13025, 1024), "sdxl_refiner": (0.13025, 1024)}


@pytest.mark.parametrize("arch", list(_LDM_UNET))
def test_shipped_configs_match_diffusers_conversion_of_the_release_yaml(arch):
    from diffusers.loaders import single_file_utils as sfu
    scale, size = _LDM_SCALE[arch]
    ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                    ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    original = {"model": {"params": {"scale_factor": scale,
                                     "unet_config": {"params": _LDM_UNET[arch]},
                                     "first_stage_config": {"params": {"embed_dim": 4,
                                                                       "ddconfig": ddconfig}}}}}
    folder = ckpt.os.path.join(ckpt.CONFIGS_DIR, arch)
    shipped_unet = json.load(open(ckpt.os.path.join(folder, "unet", "config.json")))
    shipped_vae = json.load(open(ckpt.os.path.join(folder, "vae", "config.json")))
    with warnings.catch_warnings():  # image_size is deprecated for checkpoints, not for this
        warnings.simplefilter("ignore", FutureWarning)
        unet = sfu.create_unet_diffusers_config_from_ldm(original, {}, image_size=size)
        vae = sfu.create_vae_diffusers_config_from_ldm(original, {}, image_size=size)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    def effective(cls, shipped):  # a key a config leaves out means the class default
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        return {**defaults, **shipped}

    shipped_unet = effective(UNet2DConditionModel, shipped_unet)
    shipped_vae = effective(AutoencoderKL, shipped_vae)
    for key, value in unet.items():
        value = list(value) if isinstance(value, tuple) else value
        if key == "transformer_layers_per_block" and isinstance(value, int):
            assert shipped_unet[key] in (value, [value] * len(shipped_unet["block_out_channels"]))
        else:
            shipped = shipped_unet[key]
            assert (list(shipped) if isinstance(shipped, tuple) else shipped) == value, key
    for key, value in vae.items():
        shipped = shipped_vae[key]
        assert (list(shipped) if isinstance(shipped, tuple) else shipped) == (
            list(value) if isinstance(value, tuple) else value), key


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device with a settable amount of free memory, without CUDA."""
    from spinbot.nodes import runtime
    state = {"free": 24 * GIB, "bf16": False, "made_room": []}
    monkeypatch.setattr(runtime, "torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda device=None: state["free"])
    monkeypatch.setattr(runtime, "make_room", lambda n, device=None: state["made_room"].append(n))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


def test_precision_policy(fake_gpu):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert ckpt.choose_dtype(cuda) == torch.float16
    fake_gpu["bf16"] = True
    assert ckpt.choose_dtype(cuda, "auto") == torch.bfloat16
    assert ckpt.choose_dtype(cuda, "fp16") == torch.float16
    assert ckpt.choose_dtype(cpu, "auto") == torch.float32
    assert ckpt.choose_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ImageModelError, match="unknown precision"):
        ckpt.choose_dtype(cpu, "fp8")


def test_offload_policy_follows_free_vram(fake_gpu):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    sd15 = sum(_published_sizes("sd15").values()) * 2          # fp16 bytes, about 2.1 GB
    sdxl = sum(_published_sizes("sdxl_base").values()) * 2     # about 6.9 GB
    fake_gpu["free"] = 24 * GIB
    assert not ckpt.choose_offload(cuda, sdxl, "auto")
    assert fake_gpu["made_room"][-1] >= sdxl  # ComfyUI was asked to unload its models first
    fake_gpu["free"] = 6 * GIB
    assert ckpt.choose_offload(cuda, sdxl, "auto")
    assert not ckpt.choose_offload(cuda, sd15, "auto")
    assert not ckpt.choose_offload(cuda, sdxl, "none")
    fake_gpu["free"] = 2 * GIB
    assert ckpt.choose_offload(cuda, sd15, "auto")
    assert ckpt.choose_offload(cuda, 1, "model_cpu_offload")
    fake_gpu["free"] = 1
    assert not ckpt.choose_offload(cpu, sdxl, "auto")  # the weights are in RAM anyway


@pytest.mark.parametrize("free,bf16,dtype,offloaded", [(24 * GIB, False, torch.float16, False),
                                                       (24 * GIB, True, torch.bfloat16, False),
                                                       (1, False, torch.float16, True)])
def test_loader_places_components_by_policy(fake_gpu, monkeypatch, free, bf16, dtype, offloaded):
    fake_gpu.update(free=free, bf16=bf16)
    placed = []
    monkeypatch.setattr(ckpt, "place_pipeline", lambda pipe, device, offload: placed.append(
        (str(device), offload)))
    ckpt.clear_cache()
    try:
        model = _load(XL)
        assert placed == [("cuda", offloaded)]
        assert model.offloaded is offloaded and model.device == "cuda"
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            assert getattr(model.pipe, name).dtype == dtype, name
    finally:
        ckpt.clear_cache()


def test_lora_on_an_offloaded_base(monkeypatch):
    """Offload on the CPU (explicit model_cpu_offload) runs the real accelerate hook path."""
    plain = N.SpinBotImageModel().load(SD15, "none", "auto", "none")[0]
    base = N.SpinBotImageModel().load(SD15, "none", "auto", "model_cpu_offload")[0]
    assert base.offloaded and not plain.offloaded and base.pipe is not plain.pipe
    parts = {n: m for n, m in base.pipe.components.items() if isinstance(m, torch.nn.Module)}
    assert all(hasattr(m, "_hf_hook") for m in parts.values())
    weights = {k: v.clone() for k, v in base.pipe.unet.state_dict().items()}
    hooks = {n: m._hf_hook for n, m in parts.items()}
    prompt = "ohwx person, sks face, a person on a stage"
    base_image = _paint(base, prompt=prompt)
    assert torch.allclose(base_image, _paint(plain, prompt=prompt), atol=1e-6)

    hooks = {n: m._hf_hook for n, m in parts.items()}
    lora, trigger = _loras(base, (LORA_KOHYA, 1.0), (LORA_PEFT, 0.7))
    assert trigger == "ohwx person, sks face" and lora.offloaded
    # The base keeps its own hooks, chained through its own parts.
    assert {n: m._hf_hook for n, m in parts.items()} == hooks
    assert base.pipe.unet._hf_hook.prev_module_hook.model is base.pipe.text_encoder
    # The copy has hooks of its own over its own parts; unpatched weights are shared, not copied.
    copy_parts = {n: m for n, m in lora.pipe.components.items() if isinstance(m, torch.nn.Module)}
    for name, part in copy_parts.items():
        assert part is not parts[name] and part._hf_hook is not hooks[name], name
    assert lora.pipe.unet._hf_hook.prev_module_hook.model is lora.pipe.text_encoder
    assert lora.pipe.vae.decoder.conv_out.weight is base.pipe.vae.decoder.conv_out.weight
    assert lora.pipe.unet.conv_in.weight is base.pipe.unet.conv_in.weight

    same_on_plain = _loras(plain, (LORA_KOHYA, 1.0), (LORA_PEFT, 0.7))[0]
    lora_image = _paint(lora, prompt=prompt)
    assert torch.allclose(lora_image, _paint(same_on_plain, prompt=prompt), atol=1e-6)
    assert (lora_image - base_image).abs().max() > 1e-3
    assert torch.equal(_paint(base, prompt=prompt), base_image)
    after = base.pipe.unet.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
