"""RIFE IFNet: key layout against the upstream code, parity, detection and load errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spinbot.nodes.interpolate import model as rife_model
from spinbot.nodes.interpolate.ifnet import IFNet, released_config
from tests.factory_rife import (PARITY_CASES, PARITY_SEED, parity_frames, seeded_state_dict,
                                tiny_config, tiny_state_dict)

HERE = os.path.dirname(__file__)
VERSIONS = {"4.6": "rife46_keys.txt", "4.7": "rife47_keys.txt", "4.17": "rife417_keys.txt"}


def upstream_keys(filename: str) -> dict[str, tuple[int, ...]]:
    # Dumped from the upstream IFNet (the file's header names the source and commit).
    out = {}
    with open(os.path.join(HERE, filename), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.split()
            out[key] = tuple(int(s) for s in shape.split("x"))
    return out


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_full_size_keys_and_shapes_equal_the_upstream_list(version):
    expected = upstream_keys(VERSIONS[version])
    assert len(expected) > 100
    ours = {k: tuple(v.shape) for k, v in IFNet(released_config(version)).state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_detect_config_reads_the_released_layout_from_keys(version):
    shapes = upstream_keys(VERSIONS[version])
    sd = {k: torch.empty(s) for k, s in shapes.items()}
    assert rife_model.detect_config(sd) == released_config(version)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_tiny_model_has_the_release_keys_and_loads_strictly(version, tmp_path):
    sd = tiny_state_dict(version)
    assert set(sd) == set(upstream_keys(VERSIONS[version]))
    path = tmp_path / "tiny.pth"
    torch.save(sd, path)
    loaded = rife_model.load_rife_file(str(path))
    assert loaded.net.config == tiny_config(version)
    missing, unexpected = rife_model._key_diff(sd, loaded.net.config)
    assert missing == [] and unexpected == []
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_module_prefix_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    sd = tiny_state_dict("4.7", seed=3)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "flownet.pkl.pth")
    save_file(sd, str(tmp_path / "rife.safetensors"))
    a = rife_model.load_rife_file(str(tmp_path / "flownet.pkl.pth")).net.state_dict()
    b = rife_model.load_rife_file(str(tmp_path / "rife.safetensors")).net.state_dict()
    assert all(torch.equal(a[k], sd[k]) and torch.equal(b[k], sd[k]) for k in sd)


@pytest.mark.parametrize("label,version,scale,timestep", PARITY_CASES)
def test_output_matches_the_upstream_model(label, version, scale, timestep):
    reference = np.load(os.path.join(HERE, "rife_parity.npz"))[label].astype(np.float32)
    net = IFNet(released_config(version)).eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    net.load_state_dict(seeded_state_dict(shapes, PARITY_SEED))
    f0, f1 = parity_frames()
    with torch.no_grad():
        out = net(f0, f1, timestep, scale)[0, :, ::2, ::2].numpy()
    # The fixture is not a plain blend: the flow moves pixels, so a wrong warp would show.
    assert np.abs(reference - (0.5 * (f0 + f1))[0, :, ::2, ::2].numpy()).mean() > 0.01
    # fp16 storage: 2^-11 relative, under 5e-4 in 0..1; float32 reordering adds less.
    assert np.abs(out - reference).max() < 2e-3


def test_wrong_keys_give_a_clear_error_listing_them(tmp_path):
    sd = tiny_state_dict("4.7")
    sd["block2.extra.weight"] = torch.zeros(1)
    del sd["block1.convblock.3.beta"]
    torch.save(sd, tmp_path / "edited.pth")
    with pytest.raises(rife_model.RIFEModelError) as err:
        rife_model.load_rife_file(str(tmp_path / "edited.pth"))
    text = str(err.value)
    assert "'edited.pth'" in text and "block1.convblock.3.beta" in text
    assert "unexpected keys: block2.extra.weight" in text


def test_other_model_is_rejected_with_missing_keys(tmp_path):
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "upscaler.pth")
    with pytest.raises(rife_model.RIFEModelError) as err:
        rife_model.load_rife_file(str(tmp_path / "upscaler.pth"))
    text = str(err.value)
    assert "no IFNet blocks" in text and "block0.conv0.0.0.weight" in text
    assert "unexpected keys: conv_first.weight" in text


def test_wrong_shape_and_unreadable_files(tmp_path):
    sd = tiny_state_dict("4.7")
    sd["block0.convblock.0.beta"] = torch.ones(1, 5, 1, 1)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(rife_model.RIFEModelError, match="wrong shape"):
        rife_model.load_rife_file(str(tmp_path / "shape.pth"))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(rife_model.RIFEModelError, match="could not be read"):
        rife_model.load_rife_file(str(tmp_path / "broken.pth"))
    five = tiny_state_dict("4.7")
    five.update({k.replace("block3", "block4"): v for k, v in five.items() if k.startswith("block3")})
    torch.save(five, tmp_path / "rife426.pth")
    with pytest.raises(rife_model.RIFEModelError, match="5 IFNet blocks"):
        rife_model.load_rife_file(str(tmp_path / "rife426.pth"))
