"""Paste-back: put the generated mouth into the frame without the box seam.

Upstream Wav2Lip pastes the whole 96x96 prediction, resized, over the face box, which leaves a
visible square (the model's output is softer and slightly off in colour). Here only the mouth
region is replaced: an ellipse in the lower part of the face box, faded out over a feathered
edge, with the generated pixels colour-matched (per-channel mean and spread) to the original
skin in a ring around the mouth. Every pixel outside the ellipse keeps its exact original value.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("bicubic", "bilinear")

# A model hook for the crop: ``[B,3,h,w]`` float 0..1 -> ``[B,3,h*s,w*s]`` (e.g. a spandrel
# upscaler's forward). It runs on the 96x96 crops before they are resized to the face box.
CropUpscaler = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MouthRegion:
    """The replaced ellipse, as fractions of the (padded) face box, and its soft edge.

    Wav2Lip regenerates the lower half of its input, so the ellipse sits in that half: centred
    below the nose, wide enough for the jaw line to move, ending above the box's bottom edge.
    ``feather`` is the fraction of the ellipse radius over which the blend fades out.
    """

    center_x: float = 0.5
    center_y: float = 0.72
    radius_x: float = 0.36
    radius_y: float = 0.24
    feather: float = 0.35


@lru_cache(maxsize=64)
def _mask_cached(height: int, width: int, region: MouthRegion) -> np.ndarray:
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    dy = (ys[:, None] - region.center_y) / region.radius_y
    dx = (xs[None, :] - region.center_x) / region.radius_x
    radius = np.sqrt(dx * dx + dy * dy)  # 1.0 on the ellipse's edge
    feather = float(np.clip(region.feather, 0.0, 1.0))
    if np.isnan(feather):  # np.clip keeps NaN, which would turn the whole mask into NaN
        raise ValueError("mouth_feather must be a number from 0 to 1, got nan")
    if feather <= 0:
        mask = (radius < 1.0).astype(np.float32)
    else:
        t = np.clip((1.0 - radius) / feather, 0.0, 1.0)
        mask = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible ring where the fade starts
    mask[radius >= 1.0] = 0.0  # exactly zero outside: those pixels are never touched
    mask.setflags(write=False)
    return mask


def mouth_mask(height: int, width: int, region: MouthRegion = MouthRegion()) -> np.ndarray:
    """Blend weights ``[height, width]`` in 0..1 for a face box of that size (read-only)."""
    return _mask_cached(int(height), int(width), region)


def _ring(height: int, width: int, region: MouthRegion) -> np.ndarray:
    """Pixels just inside the ellipse's edge: mostly skin around the mouth, in both images."""
    inner = MouthRegion(region.center_x, region.center_y, region.radius_x * 0.7,
                        region.radius_y * 0.7, 0.0)
    return (mouth_mask(height, width, MouthRegion(region.center_x, region.center_y,
                                                  region.radius_x, region.radius_y, 0.0)) > 0) \
        & ~(mouth_mask(height, width, inner) > 0)


def match_colors(generated: np.ndarray, original: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Shift and scale each channel of ``generated`` (float ``[h,w,3]``) so that its mean and
    spread over ``where`` equal ``original``'s there. The scale is kept within 0.5..2 so a flat
    patch cannot blow the colours up."""
    if where.sum() < 16:
        return generated
    gen = generated[where]
    ref = original[where].astype(np.float32)
    gen_mean, gen_std = gen.mean(axis=0), gen.std(axis=0)
    ref_mean, ref_std = ref.mean(axis=0), ref.std(axis=0)
    scale = np.clip(ref_std / np.maximum(gen_std, 1e-3), 0.5, 2.0)
    return (generated - gen_mean) * scale + ref_mean


def resize_image(image: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    """Resize one ``[h,w,3]`` image (uint8 or float32); area-averaged when shrinking.

    OpenCV (installed with insightface) does a face crop in well under a millisecond; torch's
    CPU kernels spend more than that starting threads for such small images. torch is the
    fallback where OpenCV is missing.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] or width < image.shape[1]
    try:
        import cv2
    except ImportError:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        out = F.interpolate(tensor, size=(height, width), mode=mode, align_corners=False,
                            antialias=shrinking)[0].permute(1, 2, 0).numpy()
        return out if image.dtype != np.uint8 else np.clip(out + 0.5, 0, 255).astype(np.uint8)
    flag = cv2.INTER_AREA if shrinking else (cv2.INTER_CUBIC if mode == "bicubic"
                                             else cv2.INTER_LINEAR)
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=flag)


def paste_mouth(frame: np.ndarray, generated: torch.Tensor, box: tuple[int, int, int, int],
                region: MouthRegion = MouthRegion(), color_match: bool = True,
                resize_mode: str = "bicubic") -> np.ndarray:
    """Blend a generated face crop (``[3,h,w]`` float 0..1, any size) into ``frame`` (uint8
    ``[H,W,3]``, modified in place and returned) inside ``box`` = (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    height, width = y2 - y1, x2 - x1
    mask = mouth_mask(height, width, region)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return frame
    # Work on the ellipse's bounding rectangle only: the rest of the box is never changed.
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = generated.detach().float().permute(1, 2, 0).cpu().numpy() * np.float32(255.0)
    gen = resize_image(crop, height, width, resize_mode)[r0:r1, c0:c1]
    target = frame[y1 + r0:y1 + r1, x1 + c0:x1 + c1]
    weights = mask[r0:r1, c0:c1]
    if color_match:
        gen = match_colors(gen, target, _ring(height, width, region)[r0:r1, c0:c1])
    original = target.astype(np.float32)
    blended = original + (gen - original) * weights[..., None]
    blended = np.clip(blended + 0.5, 0, 255).astype(np.uint8)  # round half up
    inside = weights > 0
    target[inside] = blended[inside]
    return frame
