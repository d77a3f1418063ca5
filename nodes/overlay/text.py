"""Text over frames: a quote or title rendered once with Pillow, alpha-blended frame by frame.

`render_text` lays the text out (wrapped by measured pixel width, CJK text per character, see
`script.subtitles.wrap_text`), draws fill, outline and a soft drop shadow into one premultiplied
RGBA patch and crops it to its ink. `blend` puts the patch on uint8 frames with a per-frame
opacity (the fade), touching only the patch's box: a pixel whose patch alpha is 0 (and every
pixel outside the box) keeps its exact value. `TextEvent` places a rendered text on the frame
timeline; `overlay_frames` applies the events active on a batch of frames.

Characters the font has no glyph for are left out and listed (`RenderedText.missing`), never drawn
as the font's empty box: the check is the burn-in stage's (`script.burn_in._has_glyph`). Emoji
are removed first with the pack's one emoji filter (`text_filters.remove_emoji`); no outline font
draws colour emoji.
"""
from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFilter, ImageFont

from .. import runtime
from ..script.burn_in import drop_unglyphed
from ..script.subtitles import wrap_text
from ..text_filters import remove_emoji

FONT_FOLDER = "fonts"  # models/fonts/, registered in runtime.PACK_MODEL_FOLDERS
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
DEFAULT_FONT = "default"
# DejaVu Sans Bold (Bitstream Vera licence, see LICENSE-DejaVu.txt beside it): Latin, Greek,
# Cyrillic; no CJK. Bold reads better over busy images than the regular weight.
BUNDLED_FONT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                            "fonts", "DejaVuSans-Bold.ttf")
POSITIONS = ("center", "top", "bottom", "lower third")
MARGIN = 0.06  # gap to the frame edge as a fraction of the height (TV "title safe" is ~5-10 %)
LINE_GAP = 0.15  # extra leading between lines, fraction of the font size
SHADOW_OPACITY = 0.6  # drop shadow strength: dark enough to lift light text off a light image
# Scripts that break between characters get a CJK-font hint in the report (as in burn_in).
_WIDE = ("\u1100", "\u11ff"), ("\u2e80", "\u9fff"), ("\uac00", "\ud7af"), ("\uf900", "\ufaff"), \
    ("\uff00", "\uffef")


class OverlayError(ValueError):
    """A bad overlay input: the message names the input and what is allowed."""


# --------------------------------------------------------------------------- fonts

def list_fonts() -> list[str]:
    """Choices of the font dropdown: ``"default"`` (the bundled font) and the font files
    (.ttf/.otf/.ttc) in ComfyUI's ``models/fonts/`` folders, relative names."""
    return [DEFAULT_FONT] + runtime.list_models(FONT_FOLDER, FONT_SUFFIXES)


def font_path(name: str) -> str:
    """Full path of the font called ``name`` in the dropdown. Raises OverlayError when a file
    name is not in ``models/fonts/`` (the message says where fonts go)."""
    if not name or name == DEFAULT_FONT:
        return BUNDLED_FONT
    path = runtime.find_model(FONT_FOLDER, name)
    if path is None or not os.path.isfile(path):
        folders = ", ".join(runtime.model_folder_paths(FONT_FOLDER))
        raise OverlayError(f"font {name!r} is not in the fonts folder ({folders}); put a .ttf, "
                           ".otf or .ttc file there or choose 'default'")
    return path


def font_label(path: str) -> str:
    """How the report names a font file: its file name, "(bundled default)" for the pack's."""
    name = os.path.basename(path)
    return f"{name} (bundled default)" if path == BUNDLED_FONT else name


@lru_cache(maxsize=32)
def _load_font(path: str, size: int, _stamp: str) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:  # FreeType's "unknown file format", "cannot open resource"
        raise OverlayError(f"font file {os.path.basename(path)!r} ({path}) cannot be loaded as a "
                           f"font: {exc}") from None


def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The font file ``path`` at ``size`` pixels (cached; a file replaced under the same name is
    loaded again). Raises OverlayError naming the file when FreeType cannot read it."""
    if size < 1:
        raise OverlayError(f"font size must be at least 1 pixel, got {size}")
    return _load_font(path, int(size), runtime.file_stamp(path))


# The zero-width non-joiner (Unicode format character) decides where Persian letters join; ZWJ
# is still removed, as the emoji filter would turn it into a space.
_JOINERS = "\u200c"


def drawable_text(text: str, font: ImageFont.FreeTypeFont) -> tuple[str, bool, tuple[str, ...]]:
    """``text`` as it can be drawn with ``font``: canonical composition (NFC), invisible format
    characters (category Cf: zero-width space, direction marks; not the ZWNJ, which shapes
    Persian; a line of nothing else is emptied) and emoji removed, then every character the
    font has no glyph for (`script.burn_in._has_glyph`). Returns the text, whether emoji were
    removed and the characters left out for want of a glyph, in order of first
    appearance. Line breaks are kept; spaces left around a removed character are merged."""
    lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # ZWNJ is kept: raqm shapes Persian words with it (mi-khaham is not one joined word).
    lines = ["".join(c for c in line if unicodedata.category(c) != "Cf" or c in _JOINERS)
             for line in lines]
    lines = [line if line.replace(_JOINERS, "").strip() else "" for line in lines]
    kept = [remove_emoji(line) for line in lines]
    had_emoji = kept != lines
    kept, missing = drop_unglyphed(kept, font)
    return "\n".join(kept), had_emoji, missing


def _is_wide(c: str) -> bool:
    return any(lo <= c <= hi for lo, hi in _WIDE)


def missing_note(missing: Sequence[str], font_file: str) -> str:
    """A report line naming the characters ``font_file`` cannot draw (code points included: a
    character that cannot be drawn may not show in the UI's font either)."""
    listed = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in list(missing)[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    hint = ("choose a CJK font (e.g. Noto Sans CJK) from models/fonts"
            if any(_is_wide(c) for c in missing) else
            "choose a font that has them (put it in models/fonts)")
    return (f"glyphs left out: the font {font_label(font_file)} has no glyph for {listed}{more}; "
            f"they are not drawn ({hint})")


def parse_color(value: str, what: str) -> tuple[int, int, int]:
    """An RGB triple from ``"#rrggbb"``, ``"#rgb"``, a CSS colour name (``"white"``) or
    ``"r,g,b"`` (0-255 each). Raises OverlayError naming the input ``what``."""
    text = str(value).strip()
    try:
        if "," in text and not text.lower().startswith(("rgb", "hsl", "hsv")):
            parts = [int(p) for p in text.split(",")]
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError
            return tuple(parts)  # type: ignore[return-value]
        return tuple(ImageColor.getrgb(text)[:3])  # type: ignore[return-value]
    except ValueError:
        raise OverlayError(f"{what}: {value!r} is not a colour; use '#rrggbb', a name such as "
                           "'white' or 'r,g,b'") from None


# --------------------------------------------------------------------------- layout

@dataclass(frozen=True)
class TextStyle:
    """How text is drawn. Sizes are fractions so one setting suits every resolution.

    font_size: font size in pixels / frame height, (0, 1].
    wrap_width: widest line (ink, outline and shadow included) / frame width, (0, 1].
    position: one of `POSITIONS`.
    color, outline_color, shadow_color: RGB 0-255.
    outline: outline width / font size, [0, 0.5] (0: none).
    shadow: drop-shadow offset (down and right) / font size, [0, 0.5] (0: none); the shadow is
        blurred by a third of its offset.
    """

    font_size: float = 0.08
    wrap_width: float = 0.8
    position: str = "center"
    color: tuple[int, int, int] = (255, 255, 255)
    outline: float = 0.06
    shadow: float = 0.06
    outline_color: tuple[int, int, int] = (0, 0, 0)
    shadow_color: tuple[int, int, int] = (0, 0, 0)

    def check(self) -> None:
        """Raise OverlayError for a value out of range (named as the node input)."""
        for name, value, lo, hi, closed_lo in (("font_size", self.font_size, 0.0, 1.0, False),
                                               ("wrap_width", self.wrap_width, 0.0, 1.0, False),
                                               ("outline", self.outline, 0.0, 0.5, True),
                                               ("shadow", self.shadow, 0.0, 0.5, True)):
            ok = math.isfinite(value) and (lo <= value if closed_lo else lo < value) and value <= hi
            if not ok:
                span = f"[{lo:g}, {hi:g}]" if closed_lo else f"({lo:g}, {hi:g}]"
                of = {"font_size": "the frame height", "wrap_width": "the frame width"}.get(
                    name, "the font size")
                raise OverlayError(f"{name} must be in {span} (a fraction of {of}), got {value}")
        if self.position not in POSITIONS:
            raise OverlayError(f"position must be one of {', '.join(POSITIONS)}; got "
                               f"{self.position!r}")


@dataclass(frozen=True)
class RenderedText:
    """One text, drawn. ``rgb`` is the colour premultiplied by alpha (uint16 ``[h,w,3]``, 0..65025)
    and ``alpha`` uint16 ``[h,w,1]`` 0..255; the patch goes at row ``y``, column ``x`` of the frame
    and covers ``box`` = (x0, y0, x1, y1), exclusive ends. ``lines`` are the lines drawn (after
    wrapping and leaving out what cannot be drawn), ``dropped`` lines that did not fit the frame's
    height, ``size_px`` the font size, ``missing`` the characters without a glyph."""

    x: int
    y: int
    rgb: np.ndarray
    alpha: np.ndarray
    lines: tuple[str, ...]
    dropped: tuple[str, ...]
    size_px: int
    font_file: str
    missing: tuple[str, ...]
    had_emoji: bool
    line_widths: tuple[int, ...]

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.alpha.shape[:2]
        return self.x, self.y, self.x + w, self.y + h

    @property
    def empty(self) -> bool:
        return self.alpha.size == 0


def _shadow_geometry(size: int, style: TextStyle) -> tuple[int, float, int]:
    """Shadow offset in pixels, blur radius and how far the blurred shadow reaches beyond the
    glyph outline (a Gaussian is negligible past three radii)."""
    offset = int(round(size * style.shadow))
    blur = offset / 3.0
    return offset, blur, offset + int(math.ceil(3 * blur))


def wrap_lines(text: str, max_width: int, measure: Callable[[str], float]) -> list[str]:
    """``text``'s lines (its own line breaks kept, blank lines dropped) each wrapped greedily to
    ``max_width`` as ``measure`` counts it (pixels of ink in `render_text`): breaks at spaces and
    between CJK characters, never before closing punctuation (`script.subtitles.wrap_text`)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if paragraph.strip():
            lines.extend(wrap_text(paragraph, max(1, int(max_width)), measure=measure))
    return lines


# Events hold their patches; the cache only spares re-rendering across chunks, runs and re-runs.
# 16 bounds it to ~60 MB even for full-frame 1080p patches.
@lru_cache(maxsize=16)
def render_text(text: str, width: int, height: int, style: TextStyle,
                font_file: str) -> RenderedText:
    """Lay out and draw ``text`` for ``width`` x ``height`` frames (cached: every frame and chunk
    showing the same text shares one patch; the arrays are read-only).

    Lines: the text's own line breaks, each wrapped greedily so its ink (outline and shadow
    included) fits ``style.wrap_width`` of the width, measured in pixels with the font (CJK
    breaks between characters). Lines are centred; the block is placed by ``style.position``
    with a margin of `MARGIN` x height; lines that do not fit the height are dropped (listed in
    ``dropped``). An empty result (nothing drawable) has a 0x0 patch.

    Raises:
        OverlayError: a style value out of range or a font file FreeType cannot read.
    """
    style.check()
    if width < 1 or height < 1:
        raise OverlayError(f"frame size must be positive, got {width}x{height}")
    size = max(1, int(round(height * style.font_size)))
    font = load_font(font_file, size)
    clean, had_emoji, missing = drawable_text(text, font)
    stroke = int(round(size * style.outline))
    shadow_offset, blur, shadow_reach = _shadow_geometry(size, style)
    # Ink may reach `pad` beyond the glyphs on each side: outline all round, shadow down-right
    # (counted on both sides so the centred block stays inside the wrap width).
    pad = stroke + (max(0, shadow_reach - stroke) if shadow_offset else 0)
    wrap_px = int(round(width * style.wrap_width))
    avail = max(1, wrap_px - 2 * pad)

    def ink(s: str) -> int:
        left, _top, right, _bottom = font.getbbox(s)
        return right - left

    lines = wrap_lines(clean, avail, ink)
    ascent, descent = font.getmetrics()
    gap = int(round(size * LINE_GAP))
    line_height = ascent + descent + gap

    def block_h(n: int) -> int:
        return n * line_height - gap if n else 0

    margin = int(round(height * MARGIN))
    room = max(0, height - 2 * margin - 2 * pad)
    fit = len(lines)
    while fit and block_h(fit) > room:
        fit -= 1
    lines, dropped = lines[:fit], lines[fit:]
    empty = np.zeros((0, 0, 1), np.uint16)
    if not lines:
        return RenderedText(0, 0, np.zeros((0, 0, 3), np.uint16), empty, (), tuple(dropped),
                            size, font_file, missing, had_emoji, ())
    bh = block_h(len(lines))
    top = {"top": margin + pad, "bottom": height - margin - pad - bh,
           "center": (height - bh) // 2,
           "lower third": min(int(round(height * 2 / 3)), height - margin - pad - bh)}[style.position]
    # Canvas: the full frame width, the block plus `pad` above and below; frame row of its top:
    origin = top - pad
    canvas = (width, bh + 2 * pad + 1)
    body_img, halo_img, shade_img = (Image.new("L", canvas) for _ in range(3))
    body, halo, shade = ImageDraw.Draw(body_img), ImageDraw.Draw(halo_img), ImageDraw.Draw(shade_img)
    widths = []
    for k, line in enumerate(lines):
        left, _t, right, _b = font.getbbox(line)
        widths.append(right - left)
        x = int(round(width / 2 - (left + right) / 2))
        y = pad + k * line_height
        body.text((x, y), line, font=font, fill=255)
        if stroke:
            halo.text((x, y), line, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        if shadow_offset:
            shade.text((x + shadow_offset, y + shadow_offset), line, font=font, fill=255,
                       stroke_width=stroke, stroke_fill=255)
    if shadow_offset and blur > 0:
        shade_img = shade_img.filter(ImageFilter.GaussianBlur(blur))
    f = np.asarray(body_img, np.float32) / 255.0
    o = np.asarray(halo_img, np.float32) / 255.0 if stroke else np.zeros_like(f)
    s = (np.asarray(shade_img, np.float32) / 255.0 * SHADOW_OPACITY if shadow_offset
         else np.zeros_like(f))
    # "over" compositing, premultiplied: fill over outline over shadow (Porter-Duff 1984).
    c_f, c_o, c_s = (np.array(c, np.float32) for c in (style.color, style.outline_color,
                                                         style.shadow_color))
    alpha = f + (1 - f) * (o + (1 - o) * s)
    prem = (c_f * f[..., None] + (1 - f[..., None])
            * (c_o * o[..., None] + (1 - o[..., None]) * c_s * s[..., None]))
    a16 = np.rint(alpha * 255).astype(np.uint16)
    p16 = np.minimum(np.rint(prem * 255).astype(np.uint16), a16[..., None] * 255)
    # Clip to the frame (the canvas may stick out above or below), then crop to the ink.
    r0, r1 = max(0, -origin), min(canvas[1], height - origin)
    a16, p16 = a16[r0:r1], p16[r0:r1]
    rows, cols = np.nonzero(a16.any(axis=1))[0], np.nonzero(a16.any(axis=0))[0]
    if not len(rows):
        return RenderedText(0, 0, np.zeros((0, 0, 3), np.uint16), empty, tuple(lines),
                            tuple(dropped), size, font_file, missing, had_emoji, tuple(widths))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    a_patch = np.ascontiguousarray(a16[y0:y1, x0:x1, None])
    p_patch = np.ascontiguousarray(p16[y0:y1, x0:x1])
    for arr in (a_patch, p_patch):  # shared through the cache
        arr.flags.writeable = False
    return RenderedText(int(x0), int(origin + r0 + y0), p_patch, a_patch, tuple(lines),
                        tuple(dropped), size, font_file, missing, had_emoji, tuple(widths))


# --------------------------------------------------------------------------- timeline

@dataclass(frozen=True)
class TextEvent:
    """A rendered text shown on frames ``first`` .. ``last - 1`` with fades of ``fade_in`` and
    ``fade_out`` seconds at ``fps``."""

    text: RenderedText
    first: int
    last: int
    fade_in: float
    fade_out: float
    fps: float

    def opacity(self, frame: int) -> float:
        """Opacity 0..1 of the text on ``frame``: 0 outside [first, last); inside, a linear ramp
        measured at the frame's centre (frame k covers [k, k+1)/fps): ``(k - first + 0.5) /
        (fade_in x fps)`` going up and ``(last - k - 0.5) / (fade_out x fps)`` going down, capped
        at 1, so a fade-in and a fade-out of the same length are mirror images. Fades longer
        together than the text is shown shrink in proportion (`fade_frames`), so the text still
        reaches full opacity."""
        if not self.first <= frame < self.last:
            return 0.0
        a = 1.0
        fade_in, fade_out = self.fade_frames()
        if fade_in > 0:
            a = min(a, (frame - self.first + 0.5) / fade_in)
        if fade_out > 0:
            a = min(a, (self.last - frame - 0.5) / fade_out)
        return max(0.0, min(1.0, a))

    def fade_frames(self) -> tuple[float, float]:
        """Fade-in and fade-out lengths in frames, scaled down together (keeping their ratio) to
        the frames shown when longer than them: a 0.5 + 0.5 s fade on a 0.4 s text would
        otherwise never pass 40 % opacity."""
        fade_in, fade_out = self.fade_in * self.fps, self.fade_out * self.fps
        shown = self.last - self.first
        if fade_in + fade_out > shown > 0:
            scale = shown / (fade_in + fade_out)
            fade_in, fade_out = fade_in * scale, fade_out * scale
        return fade_in, fade_out


def frame_range(start: float, end: float, fps: float, frame_count: int) -> tuple[int, int]:
    """Frames ``round(start x fps)`` .. ``round(end x fps)`` (exclusive) clipped to the video,
    the same rounding camera motion uses for segment boundaries."""
    return (min(frame_count, max(0, int(round(start * fps)))),
            min(frame_count, max(0, int(round(end * fps)))))


def blend(frame: np.ndarray, text: RenderedText, opacity: float) -> None:
    """Blend ``text`` into ``frame`` (uint8 ``[H,W,3]``, modified in place) at ``opacity``
    0..1 (quantised to 1/256). Pixels where the patch's alpha is 0 keep their exact value."""
    if text.empty or opacity <= 0:
        return
    k = int(round(min(opacity, 1.0) * 256))
    if k <= 0:
        return
    x0, y0, x1, y1 = text.box
    region = frame[y0:y1, x0:x1]
    if k >= 256:
        a, p = text.alpha, text.rgb
    else:
        a = (text.alpha.astype(np.uint32) * k + 128) >> 8
        p = (text.rgb.astype(np.uint32) * k + 128) >> 8
    out = (p + region.astype(np.uint32) * (255 - a) + 127) // 255
    region[...] = np.minimum(out, 255).astype(np.uint8)


def overlay_frames(frames: np.ndarray, first_index: int, events: Sequence[TextEvent]) -> np.ndarray:
    """A copy of ``frames`` (uint8 ``[n,H,W,3]``, the video's frames ``first_index`` ..) with
    every event drawn where it is active, in list order. The input is not modified."""
    out = np.array(frames, copy=True)
    for i in range(len(out)):
        for event in events:
            blend(out[i], event.text, event.opacity(first_index + i))
    return out


def touches(events: Sequence[TextEvent], lo: int, hi: int) -> bool:
    """Whether any event draws something on frames ``lo`` .. ``hi - 1``."""
    return any(not e.text.empty and e.first < hi and lo < e.last for e in events)
