"""Face restoration models in the release layouts of ``models/facerestore_models``.

The releases (github.com/TencentARC/GFPGAN releases: ``GFPGANv1.4.pth``, ``RestoreFormer.pth``)
are basicsr checkpoints: the network's state dict under ``"params_ema"``, saved with torch.save.
The networks are built here from the architecture code spandrel vendors (copies of GFPGAN's
``gfpganv1_clean_arch.py`` and RestoreFormer's ``RestoreFormer_arch.py``), randomly initialised.

- RestoreFormer: spandrel reads every width from the tensors (only the 512 px resolution, the
  attention at 16 px and 8 heads are fixed), so the tiny one has 32 channels (GroupNorm's 32
  groups are the floor) and one block per level: 0.5 M parameters, 2 MB, ~1 s per 512 face on a
  CPU core. The six levels stay, so the attention still runs at 16x16 as in the release.
- GFPGAN: spandrel fixes every size (512 px, 512-wide style code, channel multiplier 2), so the
  only file it accepts is full size: 87 M parameters, 349 MB. It is not in the factory's default
  group (a real ComfyUI test does not need it); `write_gfpgan` builds it on demand.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tests.factory import builder, seeded

GFPGAN_FILE = "GFPGANv1.4.pth"
RESTOREFORMER_FILE = "RestoreFormer.pth"


def restoreformer_state_dict(seed: int = 0, ch: int = 32, levels: int = 6,
                             z_channels: int = 8, n_embed: int = 16) -> dict[str, torch.Tensor]:
    """A tiny RestoreFormer's state dict (the release's key names)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    seeded(seed)
    model = RestoreFormer(n_embed=n_embed, embed_dim=z_channels, ch=ch, out_ch=3,
                          ch_mult=(1,) * levels, num_res_blocks=1, attn_resolutions=(16,),
                          dropout=0.0, in_channels=3, resolution=512, z_channels=z_channels,
                          double_z=False, enable_mid=True, head_size=8)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def gfpgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-size GFPGANv1Clean state dict (GFPGANv1.3/1.4's configuration), random weights."""
    from spandrel.architectures.GFPGAN import GFPGAN

    seeded(seed)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2,
                   decoder_load_path=None, fix_decoder=False, num_mlp=8, input_is_latent=True,
                   different_w=True, narrow=1, sft_half=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def codeformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A CodeFormer state dict (needs spandrel_extra_arches) with the smallest transformer
    spandrel reads from the tensors (64-wide, one layer, 16 codes, one skip connection); its
    VQ autoencoder's widths are fixed there, so the file is still 68 M parameters (271 MB)."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    seeded(seed)
    model = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=16, latent_size=256,
                       connect_list=["32"], fix_modules=["quantize", "generator"])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_release(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": state_dict}, str(path))
    return path


def write_gfpgan(folder: Path, seed: int = 0) -> Path:
    """``folder/GFPGANv1.4.pth``, full size (349 MB)."""
    return write_release(folder / GFPGAN_FILE, gfpgan_state_dict(seed))


@builder("facerestore_models")
def tiny_restoreformer(folder: Path) -> list[Path]:
    return [write_release(folder / RESTOREFORMER_FILE, restoreformer_state_dict(seed=17))]
