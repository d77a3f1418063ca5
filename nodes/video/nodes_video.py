"""Video nodes: IMAGE <-> SPINBOT_VIDEO and the MP4 combiner."""
from __future__ import annotations

import os

import torch

from .. import metrics, runtime
from ..media import MediaError, check_audio, check_image, make_audio
from .combine import combine_to_mp4, workflow_metadata
from .encode import LENGTH_POLICIES, X264_PRESETS, fps_fraction
from .load import (VIDEO_INPUT, LoadSettings, as_spinbot_video, list_input_videos, load_video_file,
                   resolve_input_file, silence_like, to_core_video)
from .store import SpinBotVideo, content_key, write_video

VIDEO = "SPINBOT_VIDEO"
CATEGORY = "SpinBot/video"
RUN_METADATA_KEY = "spinbot_run"  # MP4 tag holding the run report (metrics.RunReport JSON)
# ComfyUI's frontend rounds a FLOAT widget to its step's decimals (useFloatWidget: precision =
# -floor(log10(step))), so a step of 0.01 turned 23.976 into 23.98; 0.001 keeps NTSC rates exact.
_FPS = ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.001, "round": 0.001,
                  "tooltip": "Frames per second of the video. 23.976, 29.97 and 59.94 are "
                             "written as the exact NTSC rates 24000/1001, 30000/1001 and "
                             "60000/1001."})


class SpinBotImagesToVideo:
    DESCRIPTION = ("Stores an IMAGE batch as a SPINBOT_VIDEO: frames kept on disk as uint8 chunks in "
                   "ComfyUI's temp folder, so later SpinBot stages stream them instead of holding "
                   "float32 copies in RAM. The same frames, fps and audio reuse the stored copy.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (VIDEO,)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("A handle to the frames on disk, with fps and optional master audio.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to store, [B,H,W,C] in 0..1."}),
                "fps": _FPS,
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Master audio to carry with the video (kept at its "
                                               "own sample rate)."}),
            },
        }

    def convert(self, images: torch.Tensor, fps: float, audio: dict | None = None):
        images = check_image(images, "images")
        key = content_key("images_to_video", images, float(fps), audio)
        batches = (images[i:i + 16] for i in range(0, images.shape[0], 16))
        return (write_video(key, fps, batches, audio=audio),)


class SpinBotVideoToImages:
    DESCRIPTION = ("Reads frames of a SPINBOT_VIDEO back as an IMAGE batch (plus its audio and fps), "
                   "so core nodes and other packs can use them. Pick a range to keep memory small.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", "INT")
    RETURN_NAMES = ("images", "audio", "fps", "frame_count")
    OUTPUT_TOOLTIPS = (
        "The selected frames, [B,H,W,C] float32.",
        "The video's master audio for the selected range (silence if it has none).",
        "The video's frame rate.",
        "Number of frames returned.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video handle (or a core VIDEO)."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                        "tooltip": "First frame to read."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                       "tooltip": "How many frames to read; 0 reads to the end. A "
                                                  "minute of 720p is ~10 GB as IMAGE."}),
            },
        }

    def convert(self, video: SpinBotVideo, start_frame: int, max_frames: int):
        video = as_spinbot_video(video)
        stop = None if max_frames == 0 else start_frame + max_frames
        frames = video.read(start_frame, stop)
        if len(frames) == 0:
            raise MediaError(f"start_frame {start_frame} is past the end of the video "
                             f"({video.frame_count} frames)")
        images = torch.from_numpy(frames).float().div_(255.0)
        t0, t1 = start_frame / video.fps, (start_frame + len(frames)) / video.fps
        if video.audio is not None:
            rate = video.audio["sample_rate"]
            a, b = int(round(t0 * rate)), int(round(t1 * rate))
            wave = video.audio["waveform"][..., a:b]
            # Frames past the end of a shorter audio get silence: an empty waveform is no AUDIO.
            audio = make_audio(torch.nn.functional.pad(wave, (0, b - a - wave.shape[-1])), rate)
        else:
            audio = make_audio(torch.zeros(1, int(round((t1 - t0) * 48000))), 48000)
        return (images, audio, float(video.fps), len(frames))


class SpinBotVideoCombine:
    DESCRIPTION = ("Encodes frames (IMAGE or SPINBOT_VIDEO) and optional audio and subtitles into an "
                   "H.264/AAC MP4 in ComfyUI's output folder, in-process with PyAV. Audio is kept at "
                   "full rate and loudness-normalised; the workflow is embedded in the file.")
    CATEGORY = CATEGORY
    FUNCTION = "combine"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("path", "report")
    OUTPUT_TOOLTIPS = ("Absolute path of the written MP4.",
                       "What was written: frames, durations, loudness, length policy applied; "
                       "then the run's stages so far (time, peak RAM/VRAM) and this stage's line.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "fps": (_FPS[0], {**_FPS[1], "tooltip": "Frame rate for IMAGE input. A connected "
                                                         "SPINBOT_VIDEO keeps its own fps."}),
                "filename_prefix": ("STRING", {"default": "SpinBot/video", "tooltip":
                                               "File name inside ComfyUI's output folder; '/' makes "
                                               "sub-folders. Paths leaving the folder are refused."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip":
                                "x264 quality: lower is better and bigger; 17-23 is typical."}),
                "preset": (list(X264_PRESETS), {"default": "medium", "tooltip":
                                                "x264 speed/size trade-off: faster presets encode "
                                                "quicker into bigger files."}),
                "audio_bitrate": (["96k", "128k", "160k", "192k", "256k", "320k"],
                                  {"default": "192k", "tooltip": "AAC bit rate."}),
                "length_policy": (list(LENGTH_POLICIES), {"default": LENGTH_POLICIES[0], "tooltip":
                                  "When audio is longer than the video: repeat the last frame "
                                  "until it ends, or cut the audio. Shorter audio is padded with "
                                  "silence. Mismatches over one frame are listed in the report."}),
                "normalize_loudness": ("BOOLEAN", {"default": True, "tooltip":
                                       "Scale the audio to the loudness target (ITU BS.1770), never "
                                       "past a -1 dBFS peak."}),
                "loudness_lufs": ("FLOAT", {"default": -14.0, "min": -40.0, "max": -5.0, "step": 0.5,
                                            "tooltip": "Integrated loudness target in LUFS (-14 "
                                                       "suits web video platforms)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to encode. Connect this or 'video'."}),
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video, streamed from disk (a core "
                                                   "VIDEO is streamed into one first). Connect "
                                                   "this or 'images'."}),
                "audio": ("AUDIO", {"tooltip": "Audio track; defaults to the video's own master "
                                               "audio when a SPINBOT_VIDEO carries one."}),
                "subtitles": ("STRING", {"forceInput": True, "tooltip":
                                         "SRT or WebVTT text (WebVTT when it starts with "
                                         "'WEBVTT'), muxed as a soft mov_text subtitle track. "
                                         "Cues past the video's end are cut; overlapping cues "
                                         "are shown together."}),
                "burn_in_subtitles": ("BOOLEAN", {"default": False, "tooltip":
                                      "Also draw the subtitles into the frames (for players and "
                                      "sites that ignore soft subtitle tracks). Only the first "
                                      "track ('subtitles') is drawn."}),
                "subtitles_2": ("STRING", {"forceInput": True, "tooltip":
                                           "A second subtitle track (SRT or WebVTT), e.g. the "
                                           "original language beside a translation; cues are "
                                           "clipped and overlaps shown as for 'subtitles'."}),
                "subtitle_language": ("STRING", {"default": "und", "tooltip":
                                      "Language tag of the 'subtitles' track: an ISO 639-2 code "
                                      "('spa') or a name ('Spanish'); 'und' = undetermined."}),
                "subtitle_language_2": ("STRING", {"default": "und", "tooltip":
                                        "Language tag of the 'subtitles_2' track: an ISO 639-2 "
                                        "code ('eng') or a name ('English')."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def combine(self, fps, filename_prefix, crf, preset, audio_bitrate, length_policy,
                normalize_loudness, loudness_lufs, images=None, video=None, audio=None,
                subtitles=None, burn_in_subtitles=False, subtitles_2=None,
                subtitle_language="und", subtitle_language_2="und", prompt=None,
                extra_pnginfo=None):
        # The run so far (this stage listed as running: its own time is known only after the
        # file is written), embedded beside the workflow and printed in the report.
        video = as_spinbot_video(video)
        run = metrics.run_report()
        meta = workflow_metadata(prompt, extra_pnginfo)
        meta[RUN_METADATA_KEY] = run.to_json()
        result = combine_to_mp4(
            images=images, video=video, fps=fps, audio=audio, subtitles=subtitles or "",
            filename_prefix=filename_prefix, crf=crf, preset=preset, audio_bitrate=audio_bitrate,
            length_policy=length_policy,
            loudness_lufs=loudness_lufs if normalize_loudness else None, burn_in=burn_in_subtitles,
            metadata=meta, subtitles_2=subtitles_2 or "", subtitle_language=subtitle_language,
            subtitle_language_2=subtitle_language_2)
        metrics.add_frames(result.frames)
        out_root = os.path.realpath(runtime.output_dir())
        subfolder = os.path.relpath(os.path.dirname(result.path), out_root).replace(os.sep, "/")
        entry = {"filename": os.path.basename(result.path),
                 "subfolder": "" if subfolder == "." else subfolder,
                 "type": "output", "format": "video/mp4", "frame_rate": result.fps}
        report = f"{result.report()}\n{run.summary()}"
        return {"ui": {"spinbot_video": [entry]}, "result": (result.path, report)}


class SpinBotLoadVideo:
    DESCRIPTION = ("Loads a video file from ComfyUI's input folder (upload one with the button) as a "
                   "SPINBOT_VIDEO with its original audio. Frames are decoded one at a time straight "
                   "into the on-disk store, so a long video never sits in memory; variable frame "
                   "rates are placed on a constant clock by timestamp. Loading the same unchanged "
                   "file with the same settings reuses the stored copy.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (VIDEO, "AUDIO", "FLOAT", "INT", "STRING")
    RETURN_NAMES = ("video", "audio", "fps", "frame_count", "report")
    OUTPUT_TOOLTIPS = (
        "The frames on disk with the original audio as master audio.",
        "The original audio at its own sample rate with all its channels, as long as the video "
        "(silence when the file has none).",
        "Frame rate of the loaded video (the source's, or force_fps).",
        "Number of frames loaded.",
        "What was loaded: size, fps, duration, audio, frames duplicated/dropped by the frame "
        "clock, reuse.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (list_input_videos() or [""], {
                    "video_upload": True,
                    "tooltip": "A video file in ComfyUI's input folder (mp4, mov, mkv, webm, ...); "
                               "the upload button puts one there."}),
                "start_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0,
                                            "step": 0.001, "tooltip":
                                            "Where to start, in seconds of the source."}),
                "max_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0,
                                          "step": 0.001, "tooltip":
                                          "How many seconds to load; 0 loads to the end."}),
                "force_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001,
                                        "tooltip": "Output frame rate; 0 keeps the source's. "
                                                   "Frames are duplicated or dropped by their "
                                                   "timestamps to fit it."}),
                "max_side": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 2, "tooltip":
                                     "Scale the longer side down to at most this many pixels; 0 "
                                     "keeps the size."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, video: str = "", **_inputs):
        # The file's stamp (size, mtime): a file replaced under the same name loads again.
        try:
            return runtime.file_stamp(resolve_input_file(video))
        except MediaError as e:
            return str(e)

    @classmethod
    def VALIDATE_INPUTS(cls, video: str = ""):
        # Also lets a file in a sub-folder of input/ through (the dropdown lists the top only).
        try:
            resolve_input_file(video)
        except MediaError as e:
            return str(e)
        return True

    def load(self, video: str, start_seconds: float, max_seconds: float, force_fps: float,
             max_side: int):
        settings = LoadSettings(float(start_seconds), float(max_seconds), float(force_fps),
                                int(max_side))
        loaded = load_video_file(video, settings)
        result = loaded.video
        metrics.add_frames(result.frame_count)
        audio = result.audio if result.audio is not None else silence_like(result)
        return (result, audio, float(result.fps), result.frame_count, loaded.text())


class SpinBotVideoToCoreVideo:
    DESCRIPTION = ("Turns a SPINBOT_VIDEO into ComfyUI's own VIDEO type, for core nodes such as "
                   "Save Video and Get Video Components: the frames are streamed from disk into "
                   "an H.264/AAC MP4 in the temp folder (never all in memory) that the VIDEO "
                   "reads. Converting the same video again reuses that file.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "report")
    OUTPUT_TOOLTIPS = ("A core VIDEO over the MP4 (frames, fps and master audio of the input).",
                       "What was converted and where the MP4 is.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (VIDEO, {"tooltip": "The SpinBot video to hand to core video nodes."}),
                "crf": ("INT", {"default": 17, "min": 0, "max": 51, "tooltip":
                                "x264 quality of the MP4 in between: lower is closer to the "
                                "frames; 17 is visually lossless."}),
            },
        }

    def convert(self, video, crf: int):
        video = as_spinbot_video(video)
        notes: list[str] = []
        core, path = to_core_video(video, crf=int(crf), notes=notes)
        return (core, "\n".join([video.describe(), f"core VIDEO over {path}", *notes]))


class SpinBotVideoInfo:
    DESCRIPTION = ("The audio, fps, frame count, size and duration of a SPINBOT_VIDEO or a core "
                   "VIDEO (from core Load Video, say) without loading its frames into memory. A "
                   "core VIDEO is streamed into the on-disk store once, as every SpinBot video "
                   "input does. The audio is "
                   "exactly as long as the frames (frame_count / fps), unlike core Get Video "
                   "Components, which decodes every frame and keeps the AAC encoder's padding.")
    CATEGORY = CATEGORY
    FUNCTION = "info"
    RETURN_TYPES = ("AUDIO", "FLOAT", "INT", "INT", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("audio", "fps", "frame_count", "width", "height", "duration", "report")
    OUTPUT_TOOLTIPS = (
        "The video's audio at its own sample rate and channels, cut or padded to exactly "
        "frame_count / fps seconds (silence when the video has none).",
        "Frames per second.",
        "Number of frames.",
        "Frame width in pixels.",
        "Frame height in pixels.",
        "Duration in seconds: frame_count / fps.",
        "Size, fps, frames, duration and audio of the video.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (VIDEO_INPUT, {"tooltip": "A SpinBot video or a core VIDEO (core Load "
                                                   "Video, Create Video, ...)."}),
            },
        }

    def info(self, video):
        video = as_spinbot_video(video)
        duration = float(video.duration)
        if video.audio is None:
            audio, what = silence_like(video), "no audio: silence"
        else:
            wave, rate = check_audio(video.audio, "video audio")
            # the sample count of frame_count / fps at the audio's rate (NTSC rates exact)
            samples = int(round(video.frame_count * rate / fps_fraction(video.fps)))
            if wave.shape[-1] >= samples:
                wave = wave[..., :samples]
            else:
                wave = torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))
            audio = make_audio(wave, rate)
            what = f"audio {samples / rate:.3f} s @ {rate} Hz x{wave.shape[0]}"
        report = (f"{video.width}x{video.height}, {video.fps:g} fps, {video.frame_count} frames, "
                  f"{duration:.3f} s; {what}")
        return (audio, float(video.fps), int(video.frame_count), int(video.width),
                int(video.height), duration, report)


NODE_CLASS_MAPPINGS = {
    "SpinBotLoadVideo": SpinBotLoadVideo,
    "SpinBotVideoInfo": SpinBotVideoInfo,
    "SpinBotVideoToCoreVideo": SpinBotVideoToCoreVideo,
    "SpinBotImagesToVideo": SpinBotImagesToVideo,
    "SpinBotVideoToImages": SpinBotVideoToImages,
    "SpinBotVideoCombine": SpinBotVideoCombine,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SpinBotLoadVideo": "SpinBot Load Video",
    "SpinBotVideoInfo": "SpinBot Video Info",
    "SpinBotVideoToCoreVideo": "SpinBot Video to Core Video",
    "SpinBotImagesToVideo": "SpinBot Images to Video",
    "SpinBotVideoToImages": "SpinBot Video to Images",
    "SpinBotVideoCombine": "SpinBot Video Combine",
}
