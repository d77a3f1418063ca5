"""Identity LoRA training on the tiny SD 1.5 / SDXL models of the factory (CPU, 64 px, few steps).

The LoRA files are checked with readers that are not the trainer's: diffusers' own kohya loader
(`lora_state_dict` + `load_lora_weights`, which injects peft layers into a fresh pipeline) and
the pack's Identity LoRA loader; images rendered with and without the LoRA must differ.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.identity import kohya
from spinbot.nodes.identity import nodes_identity as NI
from spinbot.nodes.identity import train as T
from spinbot.nodes.image import checkpoint as ckpt
from spinbot.nodes.image import nodes_image as N
from spinbot.nodes.image.lora import declared_arch, trigger_word
from tests import factory

SD15 = "v1-5-pruned-emaonly.safetensors"
XL = "sd_xl_base_1.0.safetensors"
TRIGGER = "ohwx"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity_models")
    factory.build(root, only=["checkpoints"])
    return root


@pytest.fixture(autouse=True)
def use_models(models_root, monkeypatch, spinbot_dirs):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models_root))
    monkeypatch.setenv("SPINBOT_DEVICE", "cpu")
    # Two shared cores: OpenMP threads spinning against each other make a 0.2 s step take seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    runtime.request_interrupt(False)


def _model(name=SD15):
    return N.SpinBotImageModel().load(name, "none", "auto", "auto")[0]


def _items(count=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    # smooth random images (a blurred pattern), not white noise: the VAE latents then have
    # structure the LoRA can fit in a few steps
    out = []
    for i in range(count):
        small = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
        out.append((f"photo{i}", np.kron(small, np.ones((8, 8, 1), np.uint8)),
                    f"photo of {TRIGGER} person"))
    return out


def _settings(arch="sd15", **kw):
    base = dict(steps=4, resolution=64, checkpoint_every=2, learning_rate=1e-3, rank=4, alpha=4.0,
                samples=1, sample_steps=1, sample_cfg=1.0)
    base.update(kw)
    preset = base.pop("preset", "quick")
    return T.resolve_settings(preset, arch, **base)


def _run(model, tmp, name="ident", items=None, **kw):
    settings = _settings(model.arch, **kw)
    out = os.path.join(runtime.model_folder_paths("loras")[0], f"{name}.safetensors")
    return T.train_identity_lora(model, items or _items(), TRIGGER, settings, out,
                                 os.path.join(tmp, "run-" + name), name=name)


def test_presets_resolve_and_overrides_win():
    s = T.resolve_settings("standard", "sd15")
    assert (s.rank, s.alpha, s.learning_rate, s.steps, s.resolution, s.checkpoint_every) == \
        (16, 8.0, 1e-4, 1000, 512, 250)
    assert T.resolve_settings("quick", "sdxl_base").resolution == 1024
    s = T.resolve_settings("strong", "sd15", rank=4, alpha=-1, steps=10, resolution=256)
    assert (s.rank, s.alpha, s.steps, s.resolution) == (4, 16.0, 10, 256)
    with pytest.raises(T.IdentityTrainError, match="multiple of 64"):
        T.resolve_settings("quick", "sd15", resolution=100)
    with pytest.raises(T.IdentityTrainError, match="refiner"):
        T.resolve_settings("quick", "sdxl_refiner")
    with pytest.raises(T.IdentityTrainError, match="unknown preset"):
        T.resolve_settings("huge", "sd15")


@pytest.mark.parametrize("name", [SD15, XL])
def test_a_short_run_lowers_the_loss_on_a_fixed_batch(name):
    model = _model(name)
    settings = _settings(model.arch, learning_rate=5e-3, steps=20)
    trainer = T.LoRATrainer(model.pipe, model.arch, T.as_samples(_items()), settings)
    batch = trainer.fixed_batch(count=3)
    before = trainer.eval_loss(batch)
    for step in range(20):
        k = step % 3
        trainer.train_step((batch.index[k], batch.noise[k], batch.timesteps[k]))
    after = trainer.eval_loss(batch)
    print(f"{model.arch}: fixed-batch loss {before:.4f} -> {after:.4f}")
    assert after < before * 0.97, (before, after)
    # the base pipeline's own UNet is untouched (the LoRA lives on a structural copy)
    assert not any("lora" in n for n, _ in model.pipe.unet.named_modules())


def _expected_modules(unet) -> set[str]:
    return {n for n, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and n.endswith(tuple("." + t for t in T.UNET_TARGETS))}


@pytest.mark.parametrize("name", [SD15, XL])
def test_the_file_loads_in_diffusers_and_the_pack_and_changes_the_image(name, tmp_path):
    model = _model(name)
    result = _run(model, str(tmp_path), name="id-" + model.arch, steps=6, checkpoint_every=6,
                  learning_rate=2e-2, train_text_encoder=True)
    sd, meta = kohya.read(result.path)
    expected = _expected_modules(model.pipe.unet)
    te = {"sd15": {"text_encoder": "lora_te_"},
          "sdxl_base": {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}}[model.arch]
    te_expected = {c: {n for n, m in getattr(model.pipe, c).named_modules()
                       if isinstance(m, torch.nn.Linear) and n.endswith(tuple(T.TEXT_TARGETS))}
                   for c in te}
    wanted = {"lora_unet_" + m.replace(".", "_") for m in expected}
    for c, prefix in te.items():
        wanted |= {prefix + ("" if m.startswith("text_model.") else "text_model_") + m.replace(".", "_")
                   for m in te_expected[c]}
    assert {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd} == wanted
    assert len(sd) == 3 * len(wanted)
    sd_unet = {k: v for k, v in sd.items() if k.startswith("lora_unet_")}

    # diffusers' kohya reader on a fresh pipeline (not the cached base)
    with ckpt.offline():
        fresh, _arch = ckpt.load_single_file(str(runtime.find_model("checkpoints", name)),
                                             torch.float32)
    converted, _alphas = type(fresh).lora_state_dict(dict(sd), unet_config=fresh.unet.config)
    assert len([k for k in converted if k.startswith("unet.")]) == 2 * len(expected)
    fresh.load_lora_weights(dict(sd), adapter_name="identity")
    from peft import get_peft_model_state_dict

    loaded = get_peft_model_state_dict(fresh.unet, adapter_name="identity")
    assert {k.rsplit(".lora_", 1)[0] for k in loaded} == expected        # no missing / unexpected
    for module in list(expected)[:4]:
        down = sd_unet["lora_unet_" + module.replace(".", "_") + ".lora_down.weight"]
        assert torch.equal(loaded[module + ".lora_A.weight"].to(down.dtype), down)
    for c in te:                                   # the text encoders' layers too
        loaded_te = get_peft_model_state_dict(getattr(fresh, c), adapter_name="identity")
        assert {k.rsplit(".lora_", 1)[0] for k in loaded_te} == te_expected[c]

    # the pack's loader, by name from models/loras, with the trigger word from the metadata
    lora_name = os.path.basename(result.path)
    with_lora, trigger = N.SpinBotIdentityLoRA().apply(model, lora_name, 1.0, "none", 1.0, "none", 1.0)
    assert trigger == TRIGGER
    paint = lambda m: N.SpinBotStageImage().paint(m, "photo of ohwx person", "", "custom", 64, 64,  # noqa: E731
                                                  2, 1.0, "euler", 3, 1)[0]
    base_image, lora_image = paint(model), paint(with_lora)
    diff = (base_image - lora_image).abs().mean().item()
    print(f"{model.arch}: mean |image with LoRA - without| = {diff:.4f}")
    assert diff > 1e-3


def test_metadata_round_trips(tmp_path):
    model = _model()
    result = _run(model, str(tmp_path), name="meta")
    _sd, meta = kohya.read(result.path)
    assert meta["modelspec.trigger_phrase"] == TRIGGER == trigger_word(meta)
    assert meta["ss_sd_model_name"] == SD15
    assert declared_arch(meta) == "sd15"
    assert (meta["ss_network_dim"], float(meta["ss_network_alpha"])) == ("4", 4.0)
    assert meta["ss_steps"] == "4" and meta["ss_max_train_steps"] == "4"
    assert meta["spinbot.dataset_hash"] == T.dataset_hash(T.as_samples(_items()))
    assert meta["ss_num_train_images"] == "3" and meta["ss_resolution"] == "(64, 64)"
    assert json.loads(meta["ss_tag_frequency"]) == {f"1_{TRIGGER}": {TRIGGER: 3}}
    table = json.loads(meta["spinbot.checkpoint_table"])
    assert [row[0] for row in table] == [2, 4]
    assert "step | loss | face similarity" in result.report()


def _tensors(path):
    return kohya.read(path)[0]


def test_same_seed_same_lora_and_another_seed_differs(tmp_path):
    model = _model()
    a = _tensors(_run(model, str(tmp_path), name="a", seed=7).path)
    b = _tensors(_run(model, str(tmp_path), name="b", seed=7).path)
    c = _tensors(_run(model, str(tmp_path), name="c", seed=8).path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("lora_up.weight"))


def test_cancel_keeps_the_last_checkpoint_and_a_rerun_resumes_to_the_same_lora(tmp_path, monkeypatch):
    model = _model()
    reference = _run(model, str(tmp_path), name="whole", steps=6, checkpoint_every=2)

    original = T.LoRATrainer.train_step

    def cancel_during_step_3(self, example=None):
        if self.step == 2:          # Cancel pressed while the third step runs
            runtime.request_interrupt()
        return original(self, example)

    monkeypatch.setattr(T.LoRATrainer, "train_step", cancel_during_step_3)
    with pytest.raises(runtime.Interrupted):
        _run(model, str(tmp_path), name="cut", steps=6, checkpoint_every=2)
    run_dir = os.path.join(str(tmp_path), "run-cut")
    out = os.path.join(runtime.model_folder_paths("loras")[0], "cut.safetensors")
    assert not os.path.exists(out)                     # nothing half-written in models/loras
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".safetensors")) == \
        ["step_000002.safetensors"]
    assert not [f for f in os.listdir(run_dir) if f.endswith(".part")]
    monkeypatch.setattr(T.LoRATrainer, "train_step", original)

    resumed = _run(model, str(tmp_path), name="cut", steps=6, checkpoint_every=2)
    assert resumed.resumed_from == 2
    a, b = _tensors(reference.path), _tensors(resumed.path)
    # bitwise on the CPU: same weights, optimizer moments and per-step random draws
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.step for r in resumed.table] == [2, 4, 6]

    again = _run(model, str(tmp_path), name="cut", steps=6, checkpoint_every=2)
    assert again.reused and again.resumed_from == 0
    assert all(torch.equal(a[k], v) for k, v in _tensors(again.path).items())


@pytest.mark.parametrize("bad", ["../evil", "sub/name", "/abs/name", "..", "", " ", ".hidden",
                                 "a\\b", "x" * 200])
def test_names_that_leave_the_loras_folder_are_refused(bad):
    with pytest.raises(kohya.LoRAFileError, match="LoRA name"):
        NI._lora_output_path(bad)


def test_plain_names_stay_in_the_loras_folder():
    name, path = NI._lora_output_path("Anna (v2).safetensors")
    assert name == "Anna (v2).safetensors"
    assert os.path.dirname(path) == os.path.realpath(runtime.model_folder_paths("loras")[0])


def test_zero_photos_and_bad_items_are_refused(tmp_path):
    with pytest.raises(T.IdentityTrainError, match="no training photos"):
        T.as_samples([])
    with pytest.raises(T.IdentityTrainError, match="photo1: 60x64 is not a multiple of 64"):
        T.as_samples([("photo1", np.zeros((64, 60, 3), np.uint8), "c")])
    model = _model()
    with pytest.raises(T.IdentityTrainError, match="trigger word is empty"):
        T.train_identity_lora(model, _items(), " ", _settings(), str(tmp_path / "x.safetensors"),
                              str(tmp_path / "run"))
    with pytest.raises(Exception, match="no photos"):
        NI._photo_list(None, "")


def test_trains_on_a_model_loaded_and_run_under_inference_mode(tmp_path):
    """ComfyUI loads models and runs nodes under torch.inference_mode(): the weights are
    inference tensors, which autograd cannot save for backward unless the trainer converts them."""
    ckpt.clear_cache()
    with torch.inference_mode():
        model = _model()
        assert model.pipe.unet.conv_in.weight.is_inference()
        result = _run(model, str(tmp_path), name="inference", steps=2, checkpoint_every=2)
    assert os.path.isfile(result.path) and result.best.step == 2
    ckpt.clear_cache()


def test_progress_bar_counts_steps_and_shows_loss_and_eta(tmp_path, monkeypatch):
    texts, updates = [], []
    monkeypatch.setattr(runtime.Progress, "text", lambda self, t: texts.append(t))
    original = runtime.Progress.update
    monkeypatch.setattr(runtime.Progress, "update",
                        lambda self, n=1, preview=None: (updates.append(n), original(self, n, preview)))
    _run(_model(), str(tmp_path), name="progress", steps=4, checkpoint_every=2)
    assert sum(updates) == 4 and len(texts) == 4
    assert texts[0].startswith("step 1/4  loss ") and " ETA 0:" in texts[0]
    assert "[checkpoint 2" in texts[1] and "[checkpoint 4" in texts[3]


def test_node_trains_from_an_image_batch_and_reuses_the_finished_run(models_root, tmp_path):
    """The node end to end outside ComfyUI: photos as an IMAGE batch, faces from the pack's
    detector (a fixed-output SCRFD, see tests/test_identity_comfyui.py), recogniser scores, the
    LoRA in models/loras; the same inputs again reuse the finished run."""
    import onnx

    from tests.media import astronaut
    from tests.test_identity_comfyui import FACE_BOX, FACE_KPS, fixed_scrfd_model

    factory.build(models_root, only=["insightface"])
    pack = models_root / "insightface" / "models" / "buffalo_l"
    onnx.save(fixed_scrfd_model(FACE_BOX, FACE_KPS, 512), str(pack / "det_10g.onnx"))
    face = astronaut().astype(np.float32) / 255.0
    photos = torch.from_numpy(np.stack([np.clip(face + 0.02 * i, 0, 1) for i in range(3)]))
    node = NI.SpinBotTrainIdentityLoRA()
    kwargs = dict(image_model=_model(), trigger_word=" ohwx ", name="node-made", preset="quick",
                  photo_folder="", face_pack="buffalo_l", rank=4, steps=2, resolution=256,
                  checkpoint_every=1, samples=1, sample_steps=1, photos=photos)
    out = node.train(**kwargs)
    name, trigger, samples, report = out["result"]
    assert (name, trigger) == ("node-made.safetensors", "ohwx")
    assert os.path.isfile(os.path.join(runtime.model_folder_paths("loras")[0], name))
    assert samples.shape == (1, 256, 256, 3) and samples.dtype == torch.float32
    rows = [line for line in report.splitlines() if line[:1].isdigit() and " | " in line]
    assert [r.split(" | ")[0] for r in rows] == ["1", "2"]
    assert all(r.split(" | ")[2].split()[0] != "n/a" for r in rows)   # scored by the recogniser
    assert "3 photo(s) used" in report and "step | loss | face similarity" in out["ui"]["text"][0]
    again = node.train(**kwargs)["result"][3]
    assert "finished run reused" in again


def test_more_steps_continue_a_finished_run(tmp_path):
    model = _model()
    _run(model, str(tmp_path), name="grow", steps=4, checkpoint_every=2)
    grown = _run(model, str(tmp_path), name="grow", steps=6, checkpoint_every=2)
    fresh = _run(model, str(tmp_path), name="fresh6", steps=6, checkpoint_every=2)
    assert grown.resumed_from == 4 and [r.step for r in grown.table] == [2, 4, 6]
    a, b = _tensors(grown.path), _tensors(fresh.path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_v_prediction_models_train_against_the_velocity():
    from diffusers import DDPMScheduler

    model = _model()
    trainer = T.LoRATrainer(model.pipe, model.arch, T.as_samples(_items()), _settings())
    assert trainer.prediction == "epsilon"
    trainer.scheduler = DDPMScheduler.from_config(trainer.scheduler.config,
                                                  prediction_type="v_prediction")
    trainer.prediction = "v_prediction"
    index, noise, t = trainer.draw(0)
    latents = trainer.latents[index]
    velocity = trainer.scheduler.get_velocity(latents, noise, t)
    with torch.no_grad():
        v_loss = trainer.loss(index, noise, t, grad=False).item()
        noisy = trainer.scheduler.add_noise(latents, noise, t)
        embeds, _ = trainer._condition(trainer.samples[index].caption, 64, 64, False)
        pred = trainer.unet(noisy, t, encoder_hidden_states=embeds).sample
    assert v_loss == pytest.approx(torch.nn.functional.mse_loss(pred, velocity).item(), rel=1e-5)
    assert v_loss != pytest.approx(torch.nn.functional.mse_loss(pred, noise).item(), rel=1e-3)


def test_is_changed_follows_the_photo_folder_and_the_lora_file(spinbot_dirs):
    from PIL import Image

    folder = spinbot_dirs["input"] / "me"
    folder.mkdir()
    Image.new("RGB", (64, 64), "red").save(folder / "a.png")
    stamp = lambda: NI.SpinBotTrainIdentityLoRA.IS_CHANGED(  # noqa: E731
        photo_folder="me", face_pack="buffalo_l", name="mine")
    first = stamp()
    assert stamp() == first
    Image.new("RGB", (64, 64), "blue").save(folder / "b.png")
    second = stamp()
    assert second != first
    loras = runtime.model_folder_paths("loras")[0]
    os.makedirs(loras, exist_ok=True)
    open(os.path.join(loras, "mine.safetensors"), "wb").close()
    assert stamp() != second
    assert NI.SpinBotTrainIdentityLoRA.IS_CHANGED(photo_folder="../..", face_pack="x", name="../x")


def test_node_several_faces_largest_trains_on_group_photos_and_dominant_names_them(models_root):
    """The factory's random SCRFD finds many faces of similar size in every photo (a stand-in
    for group photos): with the default 'dominant' each photo is dropped and the error names
    them; with 'largest' the node trains on the largest face of each."""
    from spinbot.nodes.identity.dataset import IdentityDataError
    from spinbot.nodes.lipsync.faces import load_detector
    from tests.media import astronaut

    factory.build(models_root, only=["insightface"])
    face = astronaut().astype(np.float32) / 255.0
    photos = torch.from_numpy(np.stack([np.clip(face + 0.02 * i, 0, 1) for i in range(3)]))
    found = load_detector("buffalo_l", device="cpu").detect(astronaut())
    assert len(found) >= 2  # the premise: several faces in one photo
    assert "several_faces" in NI.SpinBotTrainIdentityLoRA.INPUT_TYPES()["optional"]
    node = NI.SpinBotTrainIdentityLoRA()
    kwargs = dict(image_model=_model(), trigger_word="ohwx", name="group-made", preset="quick",
                  photo_folder="", face_pack="buffalo_l", rank=4, steps=1, resolution=256,
                  checkpoint_every=1, samples=0, sample_steps=1, photos=photos)
    with pytest.raises(IdentityDataError, match=r"got 0 of 3; dropped: photos\[0\]: \d+ "
                                                  r"faces of similar size .*photos\[2\]: \d+"):
        node.train(**kwargs)
    report = node.train(**kwargs, several_faces="largest")["result"][3]
    assert "3 photo(s) used" in report and "faces; used the largest" in report
