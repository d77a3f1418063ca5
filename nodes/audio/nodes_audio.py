"""Audio nodes (see this package's docstring)."""
from __future__ import annotations

from collections import OrderedDict

from .. import runtime
from ..media import make_audio
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..video.store import SpinBotVideo, content_key
from .bed import FITS, SOURCES, BedSettings, make_bed_mix

CATEGORY = "SpinBot/audio"
# Finished mixes by content key: a re-run with the same inputs (after an upstream node re-ran and
# produced the same voice, say) does no work. Two entries: a 10-minute stereo mix is ~230 MB.
_RESULTS: "OrderedDict[str, tuple[dict, str]]" = OrderedDict()
_KEEP = 2


def _seconds(default: float, maximum: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": maximum, "step": 0.05,
                      "tooltip": tooltip})


class SpinBotAudioBed:
    DESCRIPTION = ("Puts music or a generated ambience (noise, a drone or a tone from ffmpeg's "
                   "filters) under the narration, ducked by exactly 'ducking_db' while the voice "
                   "speaks and mixed to the loudness target. The bed is looped with crossfaded "
                   "seams or trimmed to the video's exact length (or the voice plus a tail), faded "
                   "in and out and set 'bed_level_db' under the voice's BS.1770 loudness. The "
                   "report gives the levels measured on the mix.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "report")
    OUTPUT_TOOLTIPS = (
        "The mix: voice plus bed at the target loudness, at the voice's sample rate when it is "
        "44.1 kHz or more, otherwise 48 kHz; stereo when the voice or the music is. Connect it to "
        "Video Combine's 'audio' (it replaces the video's own track).",
        "Measured on the mix: voice LUFS, bed level under speech and in pauses, final LUFS, "
        "sample and true peak, loop count, and what was resampled or downmixed.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "voice": ("AUDIO", {"tooltip": "The narration. Its loudness sets the bed's level "
                                               "and its envelope drives the ducking."}),
                "source": (list(SOURCES), {"default": "music input", "tooltip":
                           "The bed: the 'music' input, or one made by ffmpeg: pink/brown/white "
                           "noise (seeded), a drone (detuned low sines, slowly swelling; seeded) "
                           "or a plain 220 Hz tone."}),
                "bed_level_db": ("FLOAT", {"default": -18.0, "min": -60.0, "max": 12.0,
                                           "step": 0.5, "tooltip":
                                           "Bed loudness relative to the voice's integrated "
                                           "loudness (LU), before ducking. -15 to -25 keeps "
                                           "music clearly under speech."}),
                "ducking_db": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 60.0, "step": 0.5,
                                         "tooltip": "How many dB lower the bed goes while the "
                                                    "voice speaks; 0 turns ducking off."}),
                "attack_seconds": _seconds(0.1, 5.0, "Time for the bed to go down, ramped in dB; "
                                           "the ramp ends as the voice starts."),
                "release_seconds": _seconds(0.4, 10.0, "Time for the bed to come back up after "
                                            "the voice stops (after a 150 ms hold)."),
                "fade_in_seconds": _seconds(2.0, 60.0, "Linear fade-in of the bed at the start."),
                "fade_out_seconds": _seconds(3.0, 60.0, "Linear fade-out of the bed at the end."),
                "fit": (list(FITS), {"default": "loop", "tooltip":
                        "Music shorter than the mix: 'loop' repeats it with 100 ms crossfades at "
                        "the seams; 'trim' plays it once and fades it out at its end. Longer "
                        "music is trimmed either way. Generated sources are made to length."}),
                "target_lufs": ("FLOAT", {"default": -14.0, "min": -40.0, "max": -5.0,
                                          "step": 0.5, "tooltip":
                                          "Integrated loudness of the mix (ITU BS.1770), peaks "
                                          "held under -1 dBFS. -14 suits web video platforms."}),
                "tail_seconds": _seconds(2.0, 60.0, "Bed after the voice ends, when no video is "
                                         "connected (with a video, its length is used)."),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                                 "Seed of the noise and drone sources: the same seed gives the same "
                                 "bed."}),
            },
            "optional": {
                "music": ("AUDIO", {"tooltip": "Music or ambience for source 'music input': any "
                                               "sample rate (resampled) and channel count (5.1 is "
                                               "downmixed to stereo)."}),
                "video": (VIDEO_INPUT, {"tooltip": "When connected (a SpinBot video or a core "
                                                   "VIDEO), the mix is exactly as long as this "
                                                   "video (frames / fps)."}),
            },
        }

    def mix(self, voice: dict, source: str, bed_level_db: float, ducking_db: float,
            attack_seconds: float, release_seconds: float, fade_in_seconds: float,
            fade_out_seconds: float, fit: str, target_lufs: float, tail_seconds: float, seed: int,
            music: dict | None = None, video: SpinBotVideo | None = None):
        settings = BedSettings(source=source, bed_level_db=float(bed_level_db),
                               ducking_db=float(ducking_db), attack_seconds=float(attack_seconds),
                               release_seconds=float(release_seconds),
                               fade_in_seconds=float(fade_in_seconds),
                               fade_out_seconds=float(fade_out_seconds), fit=fit,
                               target_lufs=float(target_lufs), tail_seconds=float(tail_seconds),
                               seed=int(seed))
        video = as_spinbot_video(video)
        video_seconds = None if video is None else float(video.duration)
        # Only what the mix depends on: the music is not read by generated sources, and the video
        # only through its duration.
        key = content_key("audio_bed", 1, voice, vars(settings),
                          music if source == "music input" else None, video_seconds)
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            audio, report = _RESULTS[key]
            return (audio, report + "\n(reused: same inputs as an earlier run)")
        with runtime.Progress(5, "SpinBot audio bed") as bar:
            def step() -> None:
                runtime.check_interrupted()
                bar.update(1)

            result = make_bed_mix(voice, settings, music=music, video_seconds=video_seconds,
                                  check_interrupted=step)
        audio = make_audio(result.wave, result.rate)
        report = result.report()
        _RESULTS[key] = (audio, report)
        while len(_RESULTS) > _KEEP:
            _RESULTS.popitem(last=False)
        return (audio, report)


NODE_CLASS_MAPPINGS = {"SpinBotAudioBed": SpinBotAudioBed}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotAudioBed": "SpinBot Audio Bed"}
