"""Burn subtitles into frames: outlined text, bottom-centred, wrapped to the frame width.

A plain function over uint8 frame batches, so Video Combine can call it chunk by chunk while it
streams a SPINBOT_VIDEO: ``first_frame_index`` places the batch on the timeline. What is drawn
is `video.subtitles.screen_cues`, the same non-overlapping intervals the mov_text track shows:
where cues overlap, all their texts, one per line in start order. Each distinct text is rendered
once (Pillow) and alpha-blended where it is active; pixels outside the text and frames without
an active cue are left exactly as they were.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..video.subtitles import Cue, screen_cues
from ..voice.text import spoken_text
from .subtitles import wrap_text


_WIDE = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


class BurnInError(ValueError):
    pass


@dataclass(frozen=True)
class _Overlay:
    y: int
    x: int
    rgb: np.ndarray  # uint16 [h,w,3], colour premultiplied by alpha
    alpha: np.ndarray  # uint16 [h,w,1], 0..255


# Pillow's bundled font covers ASCII only (no umlauts, no CJK), so a system font is preferred.
# Bare names are looked up by Pillow in the platform's font folders (Linux, Windows, macOS).
_LATIN_FONTS = ("DejaVuSans-Bold.ttf", "arialbd.ttf", "Arial Bold.ttf", "LiberationSans-Bold.ttf",
                "NotoSans-Bold.ttf", "DejaVuSans.ttf", "arial.ttf", "Arial.ttf")
_CJK_FONTS = ("NotoSansCJK-Bold.ttc", "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Bold.otf",
              "msyhbd.ttc", "msyh.ttc", "YuGothB.ttc", "PingFang.ttc", "Hiragino Sans GB.ttc",
              "wqy-zenhei.ttc", "wqy-microhei.ttc", "Arial Unicode.ttf", "malgun.ttf")


@lru_cache(maxsize=16)
def _font(size: int, font_path: str | None, cjk: bool) -> ImageFont.FreeTypeFont:
    if font_path:
        try:
            return ImageFont.truetype(font_path, size)
        except OSError as exc:
            raise BurnInError(f"cannot load subtitle font {font_path!r}: {exc}") from None
    for name in (_CJK_FONTS if cjk else ()) + _LATIN_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


# A noncharacter: no font maps it, so it draws the font's .notdef glyph (the "empty box").
_NOTDEF = "\uffff"


@lru_cache(maxsize=4096)
def _has_glyph(font: ImageFont.FreeTypeFont, char: str) -> bool:
    """Whether ``font`` has a glyph for ``char``: Pillow draws a missing glyph as the font's
    .notdef glyph, so a mask identical to that of `_NOTDEF` means there is none (fonts are
    cached by `_font`, so each one is compared once per character)."""
    if char.isspace():
        return True
    mask, notdef = font.getmask(char), font.getmask(_NOTDEF)
    return not (mask.size == notdef.size and bytes(mask) == bytes(notdef))


def drop_unglyphed(lines: list[str], font: ImageFont.FreeTypeFont
                   ) -> tuple[list[str], tuple[str, ...]]:
    """``lines`` without the characters ``font`` has no glyph for (`_has_glyph`; the spaces
    left around them merged), and those characters in order of first appearance."""
    missing = tuple(dict.fromkeys(c for line in lines for c in line if not _has_glyph(font, c)))
    if missing:
        lines = [" ".join("".join(c for c in line if c not in missing).split()) for line in lines]
    return lines, missing


def _drawable(text: str, font: ImageFont.FreeTypeFont) -> tuple[str, bool, tuple[str, ...]]:
    """``text`` as it can be burned in with ``font``: emoji removed (`voice.text.spoken_text`,
    the pack's one emoji filter; no subtitle font draws colour emoji), then every character the
    font has no glyph for. Returns the text, whether emoji were removed and the characters
    without a glyph, in order of first appearance."""
    lines = text.split("\n")
    kept = [spoken_text(line) for line in lines]
    had_emoji = kept != lines
    kept, missing = drop_unglyphed(kept, font)
    return "\n".join(kept), had_emoji, missing


def _font_for(text: str, height: int, font_scale: float,
              font_path: str | None) -> ImageFont.FreeTypeFont:
    size = max(8, int(round(height * font_scale)))
    return _font(size, font_path, bool(_WIDE.search(text)))


def burn_in_notes(cues: Sequence[Cue], height: int, font_scale: float = 0.06,
                  font_path: str | None = None) -> list[str]:
    """What `burn_subtitles` leaves out of ``cues`` on frames ``height`` pixels high, as report
    lines: emoji, and characters the chosen font has no glyph for (they would be drawn as empty
    boxes). Empty when everything can be drawn. Raises BurnInError as `burn_subtitles`."""
    emoji, missing = False, {}
    for cue in screen_cues(cues):
        font = _font_for(cue.text, height, font_scale, font_path or None)
        _text, had_emoji, chars = _drawable(cue.text, font)
        emoji |= had_emoji
        missing.update(dict.fromkeys(chars))
    notes = []
    if emoji:
        notes.append("burn-in: emoji are left out of the burned-in text (the subtitle track "
                     "keeps them)")
    if missing:
        listed = ", ".join(repr(c) for c in list(missing)[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        hint = ("install a CJK font (e.g. Noto Sans CJK) or pass font_path"
                if any(_WIDE.match(c) for c in missing) else
                "install a font that has them or pass font_path")
        notes.append(f"burn-in: the font has no glyph for {listed}{more}; left out of the "
                     f"burned-in text ({hint})")
    return notes


@lru_cache(maxsize=32)  # Video Combine calls chunk by chunk: a cue spans several calls
def _render(text: str, width: int, height: int, font_scale: float, margin: float,
            outline: float, color: tuple[int, int, int], outline_color: tuple[int, int, int],
            font_path: str | None) -> _Overlay | None:
    size = max(8, int(round(height * font_scale)))
    font = _font(size, font_path, bool(_WIDE.search(text)))
    text = _drawable(text, font)[0]  # never an empty box; burn_in_notes reports what is left out
    stroke = int(round(size * outline))
    side = int(round(width * 0.04)) + stroke
    lines = wrap_text(text, max(width - 2 * side, size), measure=lambda s: font.getlength(s))
    if not lines:
        return None
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 2 * stroke + int(round(size * 0.15))
    block = Image.new("L", (width, line_height * len(lines)))
    fill = Image.new("L", block.size)
    halo, body = ImageDraw.Draw(block), ImageDraw.Draw(fill)
    for k, line in enumerate(lines):
        x = (width - font.getlength(line)) / 2
        y = k * line_height + stroke
        halo.text((x, y), line, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        body.text((x, y), line, font=font, fill=255)
    alpha = np.asarray(block, dtype=np.uint16)
    if not alpha.any():
        return None
    mix = np.asarray(fill, dtype=np.uint16)[..., None]  # 255 where the letters are
    rgb = (np.array(color, np.uint16) * mix + np.array(outline_color, np.uint16) * (255 - mix)
           + 127) // 255
    rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    bottom = height - int(round(height * margin))
    y = bottom - (r1 - r0)
    if y < 0:  # more text than frame: keep the last lines
        r0, y = r0 - y, 0
    a = alpha[r0:r1, c0:c1, None]
    premultiplied = rgb[r0:r1, c0:c1] * a
    for arr in (a, premultiplied):  # shared through the cache
        arr.flags.writeable = False
    return _Overlay(y, int(c0), premultiplied, a)


@lru_cache(maxsize=8)  # Video Combine calls chunk by chunk with the same cues
def _timeline(cues: tuple[Cue, ...]) -> tuple[tuple[float, ...], tuple[Cue, ...]]:
    shown = tuple(screen_cues(cues))
    return tuple(c.start for c in shown), shown


def active_text(cues: Sequence[Cue], t: float) -> str:
    """Text on screen at ``t`` seconds: every cue with start <= t < end, one per line, in start
    order (the `screen_cues` interval holding ``t``); "" when none is active."""
    return _text_at(*_timeline(tuple(cues)), t)


def _text_at(starts: Sequence[float], shown: Sequence[Cue], t: float) -> str:
    k = bisect.bisect_right(starts, t) - 1
    return shown[k].text if k >= 0 and t < shown[k].end else ""


def burn_subtitles(frames: np.ndarray, first_frame_index: int, fps: float, cues: Sequence[Cue],
                   font_scale: float = 0.06, margin: float = 0.06, outline: float = 0.1,
                   color: tuple[int, int, int] = (255, 255, 255),
                   outline_color: tuple[int, int, int] = (0, 0, 0),
                   font_path: str | None = None) -> np.ndarray:
    """Copy of ``frames`` (uint8 ``[n,H,W,3]``) with the cues drawn on the frames they cover.

    Frame ``i`` of the batch is shown at ``(first_frame_index + i) / fps`` seconds and gets
    `active_text` of that time: overlapping cues show all their texts, stacked in start order.
    ``font_scale`` is the font size as a fraction of the frame height, ``margin`` the gap below
    the text, ``outline`` the outline width as a fraction of the font size. Emoji and characters
    the font has no glyph for are left out, never drawn as empty boxes (`burn_in_notes` lists
    them for the report).

    Raises:
        BurnInError: frames not uint8 ``[n,H,W,3]``, fps not positive and finite, a size option
            out of range, or a ``font_path`` that cannot be loaded.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise BurnInError(f"frames must be uint8 [n,H,W,3], got {frames.dtype} {frames.shape}")
    if not (math.isfinite(fps) and fps > 0):
        raise BurnInError(f"fps must be a positive finite number, got {fps}")
    if not 0 < font_scale <= 0.5 or not 0 <= margin < 0.5 or not 0 <= outline <= 0.5:
        raise BurnInError("font_scale must be in (0, 0.5], margin in [0, 0.5), outline in [0, 0.5]")
    out = frames.copy()
    if not cues or len(frames) == 0:
        return out
    timeline = _timeline(tuple(cues))
    height, width = frames.shape[1:3]
    overlays: dict[str, _Overlay | None] = {}
    for i in range(len(frames)):
        text = _text_at(*timeline, (first_frame_index + i) / fps)
        if not text.strip():
            continue
        if text not in overlays:
            overlays[text] = _render(text, width, height, font_scale, margin, outline,
                                     tuple(color), tuple(outline_color), font_path or None)
        ov = overlays[text]
        if ov is None:
            continue
        h, w = ov.alpha.shape[:2]
        region = out[i, ov.y:ov.y + h, ov.x:ov.x + w]
        blended = (ov.rgb + region.astype(np.uint16) * (255 - ov.alpha) + 127) // 255
        region[...] = blended.astype(np.uint8)
    return out
