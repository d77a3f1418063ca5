"""Tiled inference for image-to-image models, with cross-faded seams.

Each axis is cut into near-equal *cores* of about ``tile`` pixels. A tile reads its core plus
``overlap`` pixels of context on each inner side; the seam between two cores is cross-faded over
``blend = min(overlap, smallest core)`` pixels centred on the core boundary, so the outer half of
the overlap is context only and never reaches the output. The two linear ramps that meet at a
boundary sum to one, and the 2-D weight of a tile is the product of its two axis weights, so the
weights of all tiles sum to one everywhere: tiles are added straight into the output buffer with
no weight buffer and no division. A tile's output is exact wherever the model's receptive field
stays inside what the tile read, so with ``overlap / 2`` at least that radius the tiled result
equals the whole-frame one.

Models that need sizes in multiples (pixel-unshuffle) get windows that start on a multiple and
grow into real neighbouring pixels; only a window that reaches the end of the axis is padded
there (reflect, then replicate, as spandrel does), exactly like the whole frame, and its output
is cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window it reads and the core it is responsible for."""

    start: int
    stop: int
    core_start: int
    core_stop: int
    pad: int = 0  # samples added after ``stop`` because the axis is too short for the model


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1,
              minimum: int = 0) -> list[Span]:
    """Cut ``[0, length)`` into tiles. ``tile <= 0`` (or >= length) means one whole-axis tile."""
    count = 1 if tile <= 0 or tile >= length else -(-length // tile)
    bounds = [i * length // count for i in range(count + 1)]
    spans = []
    for i in range(count):
        core_start, core_stop = bounds[i], bounds[i + 1]
        # Windows start on a multiple: a pixel-unshuffle model groups pixels in blocks, and only
        # the same grouping as the whole frame gives the same result.
        start = max(0, core_start - overlap) // multiple * multiple
        stop = min(length, core_stop + overlap)
        stop = start + _round_up(max(stop - start, minimum, 1), multiple)
        pad = max(0, stop - length)  # only a window reaching the end of the axis is padded
        spans.append(Span(start, stop - pad, core_start, core_stop, pad=pad))
    return spans


def blend_width(spans: list[Span], overlap: int) -> int:
    return min([overlap] + [s.core_stop - s.core_start for s in spans])


def axis_weights(span: Span, length: int, scale: int, blend: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """Weights of the output samples ``[span.start*scale, span.stop*scale)`` of one tile."""
    # Output sample u covers input position (u + 0.5) / scale; boundaries sit on whole input
    # pixels, so no sample lies exactly on one and the hard cut (blend 0) is unambiguous.
    pos = (torch.arange(span.start * scale, span.stop * scale, device=device,
                        dtype=torch.float64) + 0.5) / scale
    weight = torch.ones_like(pos)
    if span.core_start > 0:
        if blend > 0:
            weight *= ((pos - span.core_start) / blend + 0.5).clamp(0.0, 1.0)
        else:
            weight *= (pos >= span.core_start).to(pos.dtype)
    if span.core_stop < length:
        if blend > 0:
            weight *= ((span.core_stop - pos) / blend + 0.5).clamp(0.0, 1.0)
        else:
            weight *= (pos < span.core_stop).to(pos.dtype)
    return weight.float()


def pad_bottom_right(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect where the size allows it, replicate the rest (spandrel's own scheme)."""
    if not (pad_h or pad_w):
        return x
    h, w = x.shape[-2:]
    rh, rw = min(pad_h, h - 1), min(pad_w, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_h - rh or pad_w - rw:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


def upscale_tiled(forward: Forward, x: torch.Tensor, scale: int, tile: int, overlap: int,
                  multiple: int = 1, minimum: int = 0, out: torch.Tensor | None = None,
                  check: Callable[[], None] | None = None) -> torch.Tensor:
    """Run ``forward`` over ``x`` ``[B,C,H,W]`` tile by tile into float32 ``[B,C,H*s,W*s]``.

    ``out`` (on x's device) is filled and returned; it is allocated when not given. ``check`` is
    called between tiles (Cancel). The model sees tiles in x's dtype; blending is in float32.
    """
    b, c, h, w = x.shape
    rows = plan_axis(h, tile, overlap, multiple, minimum)
    cols = plan_axis(w, tile, overlap, multiple, minimum)
    whole = len(rows) == 1 and len(cols) == 1
    if whole and out is None:  # one tile: the model's own output is the result, no copy
        piece = pad_bottom_right(x, rows[0].pad, cols[0].pad)
        return _checked(forward(piece), piece, scale)[:, :, :h * scale, :w * scale].float()
    if out is None:
        out = torch.empty(b, c, h * scale, w * scale, device=x.device, dtype=torch.float32)
    if not whole:
        out.zero_()
    blend_h, blend_w = blend_width(rows, overlap), blend_width(cols, overlap)
    col_parts = [_weight_part(s, w, scale, blend_w, x.device) for s in cols]
    for row in rows:
        row_weight, y0, y1 = _weight_part(row, h, scale, blend_h, x.device)
        for col, (col_weight, x0, x1) in zip(cols, col_parts):
            if check is not None:
                check()
            piece = pad_bottom_right(x[:, :, row.start:row.stop, col.start:col.stop],
                                     row.pad, col.pad)
            result = _checked(forward(piece), piece, scale)
            th, tw = (row.stop - row.start) * scale, (col.stop - col.start) * scale
            target = out[:, :, row.start * scale:row.stop * scale,
                         col.start * scale:col.stop * scale]
            if whole:
                target.copy_(result[:, :, :th, :tw])
            else:
                # Only the samples with non-zero weight are touched: outer context is dropped.
                weight = row_weight[:, None] * col_weight[None, :]
                target[:, :, y0:y1, x0:x1].addcmul_(result[:, :, y0:y1, x0:x1].float(), weight)
            del result
    return out


def _checked(result: torch.Tensor, piece: torch.Tensor, scale: int) -> torch.Tensor:
    want = (piece.shape[0], piece.shape[1], piece.shape[2] * scale, piece.shape[3] * scale)
    if tuple(result.shape) != want:
        raise RuntimeError(f"the model returned {tuple(result.shape)} for a "
                           f"{tuple(piece.shape)} tile at scale {scale}")
    return result


def _weight_part(span: Span, length: int, scale: int, blend: int,
                 device: torch.device) -> tuple[torch.Tensor, int, int]:
    """The non-zero stretch ``[lo, hi)`` of a tile's axis weights (window-relative), on device."""
    weight = axis_weights(span, length, scale, blend)
    nonzero = torch.nonzero(weight).flatten()
    lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1
    return weight[lo:hi].to(device), lo, hi
