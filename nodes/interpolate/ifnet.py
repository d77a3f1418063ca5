"""IFNet, the flow network of RIFE 4.x (Huang et al., "Real-Time Intermediate Flow Estimation for
Video Frame Interpolation", ECCV 2022; releases at github.com/hzwer/Practical-RIFE).

One architecture, built from an `IFNetConfig`. Parameter names equal the keys of the released
checkpoints (after their ``module.`` prefix is stripped), so a release loads with a plain
``load_state_dict``. Three released layouts are covered, told apart by their keys:

* ``4.6``  (rife46): no feature encoder; blocks read both frames, the timestep and the mask.
* ``4.7``  (rife47, rife49): adds ``encode`` (Conv 3->16 stride 2, ConvTranspose 16->4)
  whose 4-channel features of both frames (warped by the current flow) feed every block.
* ``4.17`` (rife417): the encoder is a 4-layer head (``encode.cnn0..cnn3``) giving
  8 channels.

Every block works at ``1/scale_i`` of the frame (8, 4, 2, 1 divided by the user's ``scale``),
downsamples 4x with two strided convolutions, refines with residual convolutions and upsamples
4x (transposed convolution + pixel shuffle) to 4 flow channels (frame 0 and frame 1 backward
flows) and one blend-mask logit. The result blends both frames warped by the final flow.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

# The four blocks run at 1/8, 1/4, 1/2 and full resolution (Practical-RIFE's scale_list for
# 4.x before 4.26), each divided by the user's scale.
BLOCK_SCALES = (8.0, 4.0, 2.0, 1.0)
# Two stride-2 convolutions in every block: its input must divide by 4 at the block's scale.
BLOCK_DOWNSAMPLE = 4
NEGATIVE_SLOPE = 0.2  # LeakyReLU slope of every activation in the 4.5+ releases


@dataclass(frozen=True)
class IFNetConfig:
    """What differs between releases (and the tiny test models, which shrink only widths).

    version: "4.6", "4.7" or "4.17" (the layout family, see the module docstring).
    block_channels: width ``c`` of each block (released: 192, 128, 96, 64).
    res_convs: residual convolutions per block (released: 8).
    encoder: "none", "conv" (4.7) or "head" (4.17).
    encoder_channels: hidden width of the encoder (released: 16 for conv, 32 for head).
    feature_channels: channels of the encoded features (released: 4 for conv, 8 for head).
    head_channels: channels out of each block's transposed convolution, before the 2x pixel
      shuffle (released 4.6+: 24, i.e. 6 per pixel: 4 flow, 1 mask, 1 unused).
    mask_residual: 4.6 adds each block's mask to the previous one; 4.7+ replaces it.
    """

    version: str = "4.7"
    block_channels: tuple[int, ...] = (192, 128, 96, 64)
    res_convs: int = 8
    encoder: str = "conv"
    encoder_channels: int = 16
    feature_channels: int = 4
    head_channels: int = 24
    mask_residual: bool = False

    def __post_init__(self):
        if self.encoder not in ("none", "conv", "head"):
            raise ValueError(f"unknown encoder {self.encoder!r}")
        if len(self.block_channels) != len(BLOCK_SCALES):
            raise ValueError(f"IFNet has {len(BLOCK_SCALES)} blocks, got "
                             f"{len(self.block_channels)} widths")
        if self.head_channels < 20 or self.head_channels % 4:
            raise ValueError(f"head_channels must be a multiple of 4 and >= 20 (5 outputs after "
                             f"the 2x pixel shuffle), got {self.head_channels}")

    @property
    def features(self) -> int:
        return 0 if self.encoder == "none" else self.feature_channels

    def block_inputs(self, index: int) -> int:
        """Input channels of block ``index``: both frames (3+3), both feature maps, the
        timestep (1); later blocks add the mask (1) and the current flow (4)."""
        base = 6 + 2 * self.features + 1
        return base if index == 0 else base + 1 + 4


def released_config(version: str) -> IFNetConfig:
    """The full-size configuration of a released layout ("4.6", "4.7", "4.17")."""
    if version == "4.6":
        return IFNetConfig(version="4.6", encoder="none", encoder_channels=0, feature_channels=0,
                           mask_residual=True)
    if version == "4.7":
        return IFNetConfig(version="4.7", encoder="conv", encoder_channels=16, feature_channels=4)
    if version == "4.17":
        return IFNetConfig(version="4.17", encoder="head", encoder_channels=32, feature_channels=8)
    raise ValueError(f"no released RIFE layout {version!r}; known: 4.6, 4.7, 4.17")


def _conv_act(cin: int, cout: int, stride: int) -> nn.Sequential:
    # A Sequential so the keys read "<i>.0.weight" like the release.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1),
                         nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


class ResConv(nn.Module):
    """3x3 convolution scaled per channel by ``beta``, added to its input, LeakyReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine step: ``cin`` input channels ``[B,*,H,W]`` (and the current flow)
    -> flow ``[B,4,H,W]`` and mask logit ``[B,1,H,W]``, computed at ``H/scale``."""

    def __init__(self, cin: int, channels: int, res_convs: int, head_channels: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv_act(cin, channels // 2, 2),
                                   _conv_act(channels // 2, channels, 2))
        self.convblock = nn.Sequential(*(ResConv(channels) for _ in range(res_convs)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(channels, head_channels, 4, 2, 1),
                                      nn.PixelShuffle(2))

    def forward(self, parts: list[torch.Tensor], flow: torch.Tensor | None,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``parts``: the input channels as separate tensors, each resized on its own before
        they are concatenated (bilinear resizing is per channel, so this equals resizing the
        concatenation, without a full-resolution copy of all channels)."""
        if scale != 1:
            parts = [F.interpolate(p, scale_factor=1.0 / scale, mode="bilinear",
                                   align_corners=False) for p in parts]
        if flow is not None:
            if scale != 1:  # flow is in pixels: it shrinks with the image
                flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear",
                                     align_corners=False) / scale
            parts = [*parts, flow]
        out = self.lastconv(self.convblock(self.conv0(torch.cat(parts, 1))))
        if scale != 1:
            out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5]


class Head(nn.Module):
    """The 4.17 feature encoder: stride-2 conv, two convs, transposed conv back to full size."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


@lru_cache(maxsize=4)
def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Normalised sampling positions of every pixel, ``[1,H,W,2]`` float32 (x, y in -1..1)."""
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=torch.float32)
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=torch.float32)
    return torch.stack((xs.view(1, width).expand(height, width),
                        ys.view(height, 1).expand(height, width)), dim=-1)[None]


def flow_grid(flow: torch.Tensor) -> torch.Tensor:
    """The grid_sample grid ``[B,H,W,2]`` (float32) of a backward flow ``[B,2,H,W]`` (x, y in
    pixels). Built in float32: fp16 positions would lose sub-pixel precision at 1080p."""
    _, _, h, w = flow.shape
    # Pixels to normalised coordinates with align_corners=True: 2 / (size - 1).
    per_pixel = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device)
    return torch.addcmul(_base_grid(h, w, flow.device), flow.permute(0, 2, 3, 1).float(),
                         per_pixel)


def sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``image`` ``[B,C,H,W]`` read at ``grid`` (`flow_grid`), bilinear, clamped to the border."""
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``[B,C,H,W]`` at each pixel plus ``flow`` ``[B,2,H,W]`` (in pixels)."""
    return sample(image, flow_grid(flow))


class IFNet(nn.Module):
    """RIFE 4.x flow network; see the module docstring. Build with `IFNetConfig`."""

    def __init__(self, config: IFNetConfig | None = None):
        super().__init__()
        self.config = config = config or IFNetConfig()
        for i, channels in enumerate(config.block_channels):
            self.add_module(f"block{i}", IFBlock(config.block_inputs(i), channels,
                                                 config.res_convs, config.head_channels))
        if config.encoder == "conv":
            self.encode = nn.Sequential(
                nn.Conv2d(3, config.encoder_channels, 3, 2, 1),
                nn.ConvTranspose2d(config.encoder_channels, config.feature_channels, 4, 2, 1))
        elif config.encoder == "head":
            self.encode = Head(config.encoder_channels, config.feature_channels)

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.config.block_channels))]

    @staticmethod
    def size_multiple(scale: float = 1.0) -> int:
        """Frame height and width must be multiples of this for ``scale`` (the coarsest block
        works at ``1/(8/scale)`` and downsamples 4x more): 32 at scale 1, 64 at 0.5."""
        return max(32, int(round(BLOCK_DOWNSAMPLE * BLOCK_SCALES[0] / scale)))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor,
                timestep: float | torch.Tensor = 0.5, scale: float = 1.0) -> torch.Tensor:
        """The frame at ``timestep`` (0 = img0, 1 = img1) between two frame batches.

        img0, img1: ``[B,3,H,W]`` in 0..1, H and W multiples of `size_multiple(scale)`.
        timestep: a float or a ``[B]`` tensor. scale: 1.0 for <=1080p, 0.5 for 4K (coarser
        flow, larger motions), a power of two. Returns ``[B,3,H,W]`` in 0..1.
        """
        b, _, h, w = img0.shape
        if torch.is_tensor(timestep):
            t = timestep.to(img0.dtype).reshape(-1, 1, 1, 1).expand(b, 1, h, w)
        else:
            t = img0.new_full((b, 1, 1, 1), float(timestep)).expand(b, 1, h, w)
        cfg = self.config
        feats0 = feats1 = None
        if cfg.encoder != "none":
            feats0, feats1 = self.encode(img0), self.encode(img1)
        flow = mask = grid0 = grid1 = None
        warped0, warped1 = img0, img1
        for block, block_scale in zip(self.blocks, BLOCK_SCALES):
            step_scale = block_scale / scale
            if flow is None:
                parts = [img0, img1] + ([feats0, feats1] if feats0 is not None else []) + [t]
                flow, mask = block(parts, None, step_scale)
            else:
                parts = [warped0, warped1]
                if feats0 is not None:  # warped by the same flow as the frames: same grids
                    parts += [sample(feats0, grid0), sample(feats1, grid1)]
                delta, new_mask = block(parts + [t, mask], flow, step_scale)
                flow = flow + delta
                mask = mask + new_mask if cfg.mask_residual else new_mask
            grid0, grid1 = flow_grid(flow[:, :2]), flow_grid(flow[:, 2:4])
            warped0, warped1 = sample(img0, grid0), sample(img1, grid1)
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)
