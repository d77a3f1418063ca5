"""Image-to-video with Stable Video Diffusion, clip by clip, straight into a SPINBOT_VIDEO.

One SVD run makes one clip of `frames` frames. To cover a duration (the narration's length), clips
are chained: clip k+1 is conditioned on the last frame written for clip k; its own frame 0 (SVD's
copy of the conditioning image) is dropped and its next `crossfade` frames fade in from that last
frame, so the join neither repeats a frame nor jumps. Frames go to disk through VideoWriter as
each clip finishes, so only one clip is ever held in memory. Clip k uses seed `seed + k`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime
from ..media import MediaError, check_image, images_to_uint8
from ..video.store import SpinBotVideo, VideoWriter, content_key, load_video
from .checkpoint import MotionModel, MotionModelError

FIT_MODES = ("crop", "pad", "stretch")
SIZE_MULTIPLE = 64


@dataclass(frozen=True)
class MotionSettings:
    width: int = 1024
    height: int = 576
    fit: str = "crop"
    frames: int = 0                # frames per clip; 0: the model's own (14 SVD, 25 SVD-XT)
    fps_conditioning: int = 6      # the fps SVD is told (micro-conditioning, not the output rate)
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    steps: int = 25
    min_guidance: float = 1.0
    max_guidance: float = 3.0
    seed: int = 0
    decode_chunk_size: int = 0     # frames the VAE decodes at once; 0: the memory policy decides
    output_fps: float = 8.0
    crossfade: int = 3             # frames that fade in at each join between chained clips


# ----------------------------------------------------------------------------- planning

def snap_size(width: int, height: int) -> tuple[int, int]:
    """Round down to SVD's multiple of 64 (at least 64)."""
    return (max(SIZE_MULTIPLE, int(width) // SIZE_MULTIPLE * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, int(height) // SIZE_MULTIPLE * SIZE_MULTIPLE))


def fit_image(image: torch.Tensor, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """IMAGE [B,H,W,3] -> [B,height,width,3]: `crop` fills and centre-crops, `pad` letterboxes
    on black, `stretch` ignores the aspect ratio."""
    if fit not in FIT_MODES:
        raise MotionModelError(f"unknown fit mode '{fit}' ({', '.join(FIT_MODES)})")
    x = check_image(image, "image").permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if fit == "stretch":
        out = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    else:
        scale = (max if fit == "crop" else min)(width / w, height / h)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        if fit == "crop":
            top, left = (nh - height) // 2, (nw - width) // 2
            out = resized[..., top:top + height, left:left + width]
        else:
            out = torch.zeros(x.shape[0], 3, height, width, dtype=x.dtype)
            top, left = (height - nh) // 2, (width - nw) // 2
            out[..., top:top + nh, left:left + nw] = resized
    return out.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def frames_for(duration: float | None, fps: float, clip_frames: int) -> int:
    """Frames to write: ceil(duration x fps), or one clip without a duration."""
    if duration is not None and not math.isfinite(duration):
        raise MediaError(f"duration_seconds must be a finite number of seconds, got {duration}")
    if not duration or duration <= 0:
        return clip_frames
    return max(1, math.ceil(round(float(duration) * float(fps), 6)))


def clip_plan(total: int, clip_frames: int) -> list[int]:
    """Frames each chained clip adds: the first all of its frames, later ones all but frame 0."""
    if clip_frames < 2:
        raise MotionModelError("frames per clip must be at least 2.")
    plan = [min(total, clip_frames)]
    while sum(plan) < total:
        plan.append(min(total - sum(plan), clip_frames - 1))
    return plan


def scene_frames(total: int, fps: float, segments: list[dict], scenes: int) -> list[int]:
    """Frames of each scene when image k animates segment k: cuts fall on the frames where
    segments 1.. start, and the last scene runs to ``total``."""
    cuts = [0] + [min(total, max(0, round(float(s["start"]) * fps))) for s in segments[1:scenes]] + [total]
    for k in range(1, len(cuts)):
        cuts[k] = max(cuts[k], cuts[k - 1])  # overlapping timings never run backwards
    return [b - a for a, b in zip(cuts, cuts[1:])]


def join_clip(last_frame: np.ndarray, clip: np.ndarray, crossfade: int) -> np.ndarray:
    """Frames a chained clip adds after ``last_frame`` (uint8 [H,W,3]): ``clip`` (uint8 [N,H,W,3],
    frame 0 = the conditioning frame) without frame 0, its first ``crossfade`` frames blended from
    ``last_frame`` with weights 1/(c+1) .. c/(c+1) for the new clip."""
    new = clip[1:].astype(np.float32)
    c = max(0, min(int(crossfade), len(new)))
    if c:
        w = (np.arange(1, c + 1, dtype=np.float32) / (c + 1))[:, None, None, None]
        new[:c] = (1 - w) * last_frame.astype(np.float32)[None] + w * new[:c]
    return np.clip(np.floor(new + 0.5), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- running

def _callback(progress: runtime.Progress):
    def on_step_end(_pipe, _step, _timestep, callback_kwargs):
        progress.update(1)
        runtime.check_interrupted()  # Cancel takes effect between denoising steps
        return callback_kwargs
    return on_step_end


def run_clip(model: MotionModel, image: np.ndarray, settings: MotionSettings, frames: int,
             seed: int, progress: runtime.Progress) -> np.ndarray:
    """One SVD run from a uint8 [H,W,3] frame (already at the output size) -> uint8
    [frames,H,W,3]. The frame goes in as a PIL image: diffusers resizes only PIL input to the
    CLIP encoder's 224x224 the way the original implementation does."""
    from PIL import Image

    policy = model.extra.get("policy")
    default = policy.decode_chunk_size if policy is not None else 0
    chunk = int(settings.decode_chunk_size) or default or frames
    if policy is not None and policy.offload and policy.decode_chunk_size:
        chunk = min(chunk, policy.decode_chunk_size)  # the 16 GB budget wins over the widget
    height, width = image.shape[:2]
    generator = torch.Generator("cpu").manual_seed(int(seed) % 2**64)
    with torch.inference_mode():
        out = model.pipe(Image.fromarray(image), height=height, width=width, num_frames=frames,
                         num_inference_steps=int(settings.steps),
                         min_guidance_scale=float(settings.min_guidance),
                         max_guidance_scale=float(settings.max_guidance),
                         fps=int(settings.fps_conditioning),
                         motion_bucket_id=int(settings.motion_bucket_id),
                         noise_aug_strength=float(settings.noise_aug_strength),
                         decode_chunk_size=max(1, chunk), generator=generator, output_type="pt",
                         callback_on_step_end=_callback(progress)).frames
    video = out[0].float().clamp(0, 1).permute(0, 2, 3, 1).cpu()  # [N,3,H,W] -> [N,H,W,3]
    return images_to_uint8(video, "SVD frames")


def check_settings(model: MotionModel, settings: MotionSettings) -> int:
    if settings.steps < 1:
        raise MotionModelError("steps must be at least 1.")
    if not (math.isfinite(settings.output_fps) and settings.output_fps > 0):
        raise MotionModelError(f"output fps must be a positive finite number, got "
                               f"{settings.output_fps}.")
    if settings.min_guidance > settings.max_guidance:
        raise MotionModelError(f"min guidance ({settings.min_guidance}) is above max guidance "
                               f"({settings.max_guidance}).")
    frames = int(settings.frames) or model.default_frames
    if frames < 2:
        raise MotionModelError("frames per clip must be at least 2.")
    return frames


def animate(model: MotionModel, image: torch.Tensor, settings: MotionSettings,
            duration: float | None = None, audio: dict | None = None,
            segments: list[dict] | None = None, model_key: str = "") -> SpinBotVideo:
    """Animate ``image`` into a SPINBOT_VIDEO covering ``duration`` seconds at
    ``settings.output_fps`` (one clip when no duration), with optional audio/segments attached.

    One image: it starts the first clip. One image per segment (a story: SpinBot Stage Image
    with segments): image k starts the clips of segment k, cut where the segment starts, so each
    scene shows while its words are spoken. The same inputs reuse the stored video."""
    clip_frames = check_settings(model, settings)
    width, height = snap_size(settings.width, settings.height)
    count = check_image(image, "image").shape[0]
    per_segment = count > 1 and bool(segments)
    if per_segment and count != len(segments):
        raise MediaError(f"SpinBot SVD got {count} images for {len(segments)} segments: give one "
                         "image (it starts the video) or one per segment (each starts its segment).")
    firsts = images_to_uint8(fit_image(image if per_segment else image[:1], width, height, settings.fit),
                             "image")
    total = frames_for(duration, settings.output_fps, clip_frames)
    spans = scene_frames(total, settings.output_fps, segments, count) if per_segment else [total]
    scenes = [(first, clip_plan(n, clip_frames)) for first, n in zip(firsts, spans) if n > 0]
    key = content_key("svd", model_key or model.name, firsts, asdict(settings), total, audio, segments)
    existing = load_video(key)
    if existing is not None:
        return existing
    runtime.check_interrupted()
    clips = sum(len(plan) for _first, plan in scenes)
    with runtime.Progress(clips * int(settings.steps), desc="SpinBot SVD") as progress, \
            VideoWriter(key, settings.output_fps) as writer:
        k = 0
        for condition, plan in scenes:
            last = None  # a new scene is a cut, not a cross-fade
            for take in plan:
                clip = run_clip(model, condition, settings, clip_frames, int(settings.seed) + k, progress)
                added = clip if last is None else join_clip(last, clip, settings.crossfade)
                added = added[:take]
                writer.write(added)
                last = added[-1]
                condition = last
                k += 1
                runtime.check_interrupted()
        extra = {"stage": "svd", "model": model.name, "clips": clips, "scenes": len(scenes),
                 "clip_frames": clip_frames}
        return writer.finish(audio=audio, segments=segments, extra=extra)


def duration_of(duration_seconds: float = 0.0, audio: dict | None = None,
                segments=None) -> float | None:
    """The length to cover: the explicit seconds, else the segments' end, else the audio length."""
    if duration_seconds and duration_seconds > 0:
        return float(duration_seconds)
    if segments:
        from ..script.segments import coerce_segments, total_seconds

        end = total_seconds(coerce_segments(segments))
        if end > 0:
            return end
    if audio is not None:
        from ..media import audio_duration

        seconds = audio_duration(audio)
        if seconds <= 0:
            raise MediaError("the audio that sets the video length is empty.")
        return seconds
    return None
