"""Camera motion (Ken Burns) over stills, rendered frame by frame into the video store.

Each frame shows a crop window of the still: a rectangle of the output's aspect, ``s`` of the
(cover-fitted) still's width and height, centred at ``(cx, cy)`` (fractions of the still, 0..1).
The window moves continuously: it is sampled with bilinear interpolation at float coordinates
(``torch.nn.functional.grid_sample``), never rounded to whole pixels, so a slow pan glides
instead of stepping a pixel at a time. Paths, for ``zoom`` z and eased progress p (0..1):

* push in: ``s = (1+z)^-p`` (the picture grows by the factor 1+z), centred. The scale changes
  exponentially, so the zoom speed looks constant (each frame magnifies by the same ratio);
  pull out is the same path backwards.
* pan left/right/up/down: ``s = 1/(1+z)`` (zoomed in by 1+z to have room to move) and the window
  travels the whole margin ``1-s`` in that direction: "pan left" moves the camera left, so the
  picture slides right. With zoom 0 there is no margin and a pan stands still.
* static: the whole cover-fitted still, no motion.
* auto: push in, pan right, pull out, pan left, ... one per segment in turn when each segment
  has its own image (a cut anyway); with one image for every segment, push in and pull out
  alternate, so each segment starts where the last one ended and the camera never jumps.

Easing maps a segment's time t (0 at its first frame, 1 at its last) to p: "ease in-out" is the
cosine curve ``(1 - cos(pi t)) / 2`` (starts and stops at zero speed), "linear" is ``t``, "ease
out" is the quadratic ``1 - (1-t)^2`` (starts at full speed, stops smoothly).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics, runtime
from ..media import MediaError, audio_duration, check_image
from ..script.segments import Segment, coerce_segments, total_seconds
from ..video.store import SpinBotVideo, VideoWriter, content_key, load_video
from .timing import boundaries, total_frames

MOTIONS = ("auto", "push in", "pull out", "pan left", "pan right", "pan up", "pan down", "static")
AUTO_CYCLE = ("push in", "pan right", "pull out", "pan left")
AUTO_ONE_IMAGE = ("push in", "pull out")  # continuous: each ends where the next starts
EASINGS = ("ease in-out", "linear", "ease out")
# Output frames rendered per grid_sample call: ~96 MB of float32 output at any size (4 frames
# of 1080p), so memory stays a few frames whatever the video's length.
BATCH_BYTES = 96 << 20


def ease(easing: str, t: np.ndarray) -> np.ndarray:
    """Eased progress p(t) for t in 0..1 (float64 array in, same shape out, 0..1).

    Raises MediaError for an unknown easing name."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    if easing == "ease in-out":
        return (1.0 - np.cos(np.pi * t)) / 2.0
    if easing == "linear":
        return t
    if easing == "ease out":
        return 1.0 - (1.0 - t) ** 2
    raise MediaError(f"unknown easing {easing!r}; choose one of {', '.join(EASINGS)}")


def resolve_motion(motion: str, segment: int, one_image: bool = False) -> str:
    """The path segment ``segment`` uses: ``motion`` itself, or for "auto" the entry of
    `AUTO_CYCLE` (`AUTO_ONE_IMAGE` when ``one_image`` serves every segment).

    Raises MediaError for an unknown motion name."""
    if motion not in MOTIONS:
        raise MediaError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    if motion != "auto":
        return motion
    cycle = AUTO_ONE_IMAGE if one_image else AUTO_CYCLE
    return cycle[segment % len(cycle)]


def window(path: str, p: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop windows ``(s, cx, cy)`` along ``path`` at eased progress ``p`` (float64 arrays of
    p's shape): size as a fraction of the still, centre as fractions (see the module docstring).
    """
    p = np.asarray(p, dtype=np.float64)
    grow = 1.0 + float(zoom)
    half = np.full_like(p, 0.5)
    if path == "push in":
        return grow ** -p, half, half.copy()
    if path == "pull out":
        return grow ** -(1.0 - p), half, half.copy()
    if path == "static":
        return np.ones_like(p), half, half.copy()
    s = np.full_like(p, 1.0 / grow)
    lo, span = s / 2.0, 1.0 - s
    if path == "pan left":
        return s, 1.0 - lo - p * span, half
    if path == "pan right":
        return s, lo + p * span, half
    if path == "pan up":
        return s, half, 1.0 - lo - p * span
    if path == "pan down":
        return s, half, lo + p * span
    raise MediaError(f"unknown camera path {path!r}")


def output_size(width: int, height: int, image_height: int, image_width: int) -> tuple[int, int]:
    """``(width, height)`` of the frames: as asked; 0 takes the still's size, or with the other
    side given, keeps the still's aspect (rounded, at least 1). Odd sizes are kept (the store
    holds any size; SpinBot Video Combine pads odd frames by one edge row/column for yuv420p).

    Raises MediaError for negative sizes."""
    width, height = int(width), int(height)
    if width < 0 or height < 0:
        raise MediaError(f"width and height must be 0 (the image's size) or positive, got "
                         f"{width}x{height}")
    if not width and not height:
        return image_width, image_height
    if not width:
        return max(1, round(height * image_width / image_height)), height
    if not height:
        return width, max(1, round(width * image_height / image_width))
    return width, height


@dataclass(frozen=True)
class Still:
    """A still ready for sampling: ``pixels`` float32 ``[1,3,h,w]`` (on the render device) and
    the fractions ``ax, ay`` of its width and height that the cover-fit crop of the output's
    aspect keeps (centred)."""

    pixels: torch.Tensor
    ax: float
    ay: float


def prepare_still(image: torch.Tensor, width: int, height: int, zoom: float,
                  device: torch.device | None = None) -> Still:
    """Cover-fit one still ``[H,W,3]`` (float 0..1) to ``width`` x ``height``, on ``device``
    (default: the image's).

    A still much larger than the frames is first shrunk with an antialiased resample so the
    tightest window (``1/(1+zoom)`` of the crop) still maps about one still pixel to one output
    pixel: bilinear sampling of a far larger image would alias (shimmer). Smaller stills are
    sampled as they are (upscaled by the bilinear sampling itself)."""
    pixels = image.to(device or image.device).permute(2, 0, 1).unsqueeze(0).float()
    h, w = pixels.shape[-2:]
    target = width / height
    crop_w, crop_h = (h * target, h) if w / h > target else (w, w / target)
    shrink = max(width / crop_w, height / crop_h) * (1.0 + float(zoom))
    if shrink < 1.0:
        size = (max(height, round(h * shrink)), max(width, round(w * shrink)))
        try:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True,
                                   align_corners=False)
        except (NotImplementedError, RuntimeError):  # backends without antialias
            pixels = F.interpolate(pixels, size=size, mode="area")
        h, w = size
    # Fractions from the (possibly resized) size itself, so the kept region has the output's
    # aspect exactly: no stretch from the rounding of the resized size.
    if w / h > target:
        ax, ay = h * target / w, 1.0
    else:
        ax, ay = 1.0, w / target / h
    return Still(pixels.contiguous(), float(ax), float(ay))


def render(still: Still, s: np.ndarray, cx: np.ndarray, cy: np.ndarray, width: int,
           height: int) -> np.ndarray:
    """Frames of the windows ``(s[i], cx[i], cy[i])``: uint8 ``[n,height,width,3]``.

    Output pixel centres (align_corners=False convention) map to still coordinates
    ``x = ax * (s * u + 2cx - 1)``, ``y = ay * (s * v + 2cy - 1)`` in grid_sample's -1..1
    space: a continuous function of the window, sampled bilinearly on the still's device."""
    n = len(s)
    # Per-frame rows/columns in float64 on the CPU (small; MPS has no float64), then float32
    # (grid_sample's type: 6e-8 of the -1..1 range, 1e-4 px at 2000 px) on the device.
    u = (torch.arange(width, dtype=torch.float64) * 2 + 1) / width - 1
    v = (torch.arange(height, dtype=torch.float64) * 2 + 1) / height - 1
    s_t = torch.from_numpy(np.asarray(s, np.float64))[:, None]
    gx = still.ax * (s_t * u[None] + torch.from_numpy(2 * np.asarray(cx) - 1)[:, None])
    gy = still.ay * (s_t * v[None] + torch.from_numpy(2 * np.asarray(cy) - 1)[:, None])
    device = still.pixels.device
    gx, gy = gx.to(device, torch.float32), gy.to(device, torch.float32)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    # All n frames' grids stacked as one tall grid: one call, and the still is not copied n times.
    grid = grid.reshape(1, n * height, width, 2)
    out = F.grid_sample(still.pixels, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    out = out.reshape(3, n, height, width).permute(1, 2, 3, 0)
    # +0.5 then truncation rounds half up, like media.images_to_uint8.
    return out.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()


def batch_frames(width: int, height: int) -> int:
    """Frames per render call at this size (`BATCH_BYTES` of float32 output, at least 1)."""
    return max(1, BATCH_BYTES // (width * height * 3 * 4))


def segment_windows(path: str, easing: str, zoom: float, frames: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows for the ``frames`` frames of one segment: t = j/(frames-1), so the first frame
    shows the path's start and the last its end (a 1-frame segment shows the start)."""
    t = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)
    return window(path, ease(easing, t), zoom)


def check_zoom(zoom: float) -> float:
    """``zoom`` as a float; MediaError unless finite and 0..10."""
    zoom = float(zoom)
    if not (math.isfinite(zoom) and 0.0 <= zoom <= 10.0):
        raise MediaError(f"zoom must be between 0 and 10 (0.15 = 15% closer), got {zoom}")
    return zoom


# ----------------------------------------------------------------------------- the stage

def camera_motion(images: torch.Tensor, fps: float, width: int, height: int, motion: str,
                  zoom: float, easing: str, duration_seconds: float = 0.0,
                  segments=None, audio: dict | None = None) -> tuple[SpinBotVideo, str]:
    """Render camera motion over ``images`` (IMAGE ``[n,H,W,C]``) into a SPINBOT_VIDEO.

    Length: the audio's when given (it is the master track), else the segments' last end, else
    ``duration_seconds``; ``round(seconds * fps)`` frames. Scenes: with segments, one per
    segment (`timing.boundaries`), image k for segment k, or the one image for all; without
    segments, the n images share the length equally (and the video carries n matching
    segments with empty text, so SpinBot Transitions finds the cuts). Frames are rendered on
    `runtime.torch_device()` and stream into the store a few at a time, keyed by what decides
    them (images, size, fps, paths, frame spans, device type), so a re-run, or new audio of the
    same length, reuses them.

    Returns ``(video, report)``: the video carries ``audio`` and the segments. Raises
    MediaError for empty or broken images, an image count that is neither 1 nor one per segment,
    no length, or bad fps/zoom/size/names; `runtime.Interrupted` (or ComfyUI's) on Cancel,
    leaving no stored video behind.
    """
    images = check_image(images, "images")
    if not bool(torch.isfinite(images.flatten(1).sum(dim=1)).all()):
        raise MediaError("images: some images contain NaN or infinite values")
    fps = float(fps)
    zoom = check_zoom(zoom)
    ease(easing, np.zeros(1))  # unknown names fail before any work
    resolve_motion(motion, 0)
    count, img_h, img_w = images.shape[:3]
    segs = coerce_segments(segments) if segments else ()
    if audio is not None:
        seconds, source = audio_duration(audio), "the audio"
    elif segs:
        seconds, source = total_seconds(segs), "the segments"
    else:
        seconds, source = float(duration_seconds or 0.0), "duration_seconds"
    if not (math.isfinite(seconds) and seconds > 0):
        raise MediaError(f"the video length comes from {source}, which gives {seconds:g} s: "
                         "connect audio or segments, or set duration_seconds above 0")
    total = total_frames(seconds, fps)
    if segs:
        if count not in (1, len(segs)):
            raise MediaError(
                f"SpinBot Camera Motion got {count} images for {len(segs)} segments: give one "
                "image (used for every segment) or exactly one per segment")
        starts = [s.start for s in segs]
        picks = [k if count > 1 else 0 for k in range(len(segs))]
    else:
        starts = [k * seconds / count for k in range(count)]
        picks = list(range(count))
    cuts = boundaries(starts, fps, total)
    width, height = output_size(width, height, img_h, img_w)
    plan = [(cuts[k], cuts[k + 1], resolve_motion(motion, k, one_image=count == 1), picks[k])
            for k in range(len(picks))]
    if segs:
        seg_dicts = [s.to_dict() for s in segs]
    elif count > 1:
        seg_dicts = [Segment(index=k, text="", start=cuts[k] / fps, end=cuts[k + 1] / fps,
                             estimated=False).to_dict() for k in range(count)]
    else:
        seg_dicts = None
    used = sorted({pick for a, b, _path, pick in plan if b > a})
    # Rendered on the torch device (a GPU renders 1080p far faster than the CPU); its type is
    # in the key because bilinear sampling may differ in the last bit between backends.
    device = runtime.torch_device()
    key = content_key("scene_camera", 1, [images[i] for i in used], used, fps, width, height,
                      zoom, easing, plan, device.type)
    stored = load_video(key)
    started = time.perf_counter()
    rendered = 0
    if stored is None:
        step = batch_frames(width, height)
        with runtime.Progress(total, "SpinBot Camera Motion") as progress, \
                VideoWriter(key, fps) as writer:
            for first, stop, path, pick in plan:
                if stop <= first:
                    continue
                runtime.check_interrupted()
                still = prepare_still(images[pick], width, height, zoom, device)
                s, cx, cy = segment_windows(path, easing, zoom, stop - first)
                for i in range(0, stop - first, step):
                    runtime.check_interrupted()
                    frames = render(still, s[i:i + step], cx[i:i + step], cy[i:i + step],
                                    width, height)
                    writer.write(frames)
                    progress.update(len(frames))
                    rendered += len(frames)
            runtime.check_interrupted()
            stored = writer.finish(extra={"stage": "camera_motion", "plan": plan})
    metrics.add_frames(rendered)
    video = stored.with_audio(audio).with_segments(seg_dicts)
    lines = [f"Camera Motion: {total} frames {width}x{height} @ {fps:g} fps "
             f"({total / fps:.3f} s from {source}), {easing}, zoom {zoom:g}"]
    for k, (first, stop, path, pick) in enumerate(plan):
        if stop > first:
            span = f"frames {first}-{stop - 1}"
        elif first >= total:
            span = "no frames (starts at or after the video's end)"
        else:  # boundaries never run backwards: a later segment starting earlier ends this one
            span = (f"no frames (segment {k + 1} starts at {starts[k + 1]:g} s, not after this "
                    f"one's {starts[k]:g} s: out of order or on the same frame)")
        lines.append(f"  segment {k}: {span} ({stop - first}), image {pick}, {path}")
    if rendered:
        took = time.perf_counter() - started
        lines.append(f"rendered {rendered} frames in {took:.1f} s "
                     f"({rendered / max(took, 1e-9):.1f} frames/s)")
    else:
        lines.append("reused the stored frames (same images and settings)")
    return video, "\n".join(lines)
