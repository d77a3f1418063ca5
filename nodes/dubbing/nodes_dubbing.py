"""Dubbing nodes (see this package's docstring)."""
from __future__ import annotations

from .. import runtime
from ..media import MediaError, check_audio
from ..script.segments import SEGMENTS_TYPE, coerce_segments
from ..voice import engine as voice_engine, nodes_voice, profiles
from . import background, voice_fit

CATEGORY = "SpinBot/dubbing"

# --------------------------------------------------------------------------- voice + mix (17c)


def _speakable_segments(value, name: str) -> tuple:
    segs = tuple(s for s in coerce_segments(value) if s.text.strip()) if value else ()
    if not segs:
        raise MediaError(f"{name}: no segments with text; connect the translated segments "
                         "(SpinBot Translate)")
    return segs


class SpinBotDubVoice:
    DESCRIPTION = ("Speaks translated segments in the original speaker's voice with F5-TTS, each "
                   "fitted to its original slot: F5's own duration control first (within "
                   "'max_speed_change' of its natural length), then a tempo change that keeps "
                   "the pitch (ffmpeg atempo, within 'max_tempo_change'). Speech still too long "
                   "overruns into the gap after its slot and is cut at the next segment; the "
                   "report names those segments. The voice is a saved profile or is cut "
                   "automatically from the cleanest 5-12 s of the original speech. Every "
                   "segment starts exactly at its original start and the speech track is as long "
                   "as the original audio. Finished segments are kept, so a re-run after Cancel "
                   "speaks only the rest.")
    CATEGORY = CATEGORY
    FUNCTION = "speak"
    RETURN_TYPES = ("AUDIO", SEGMENTS_TYPE, "STRING")
    RETURN_NAMES = ("speech", "segments", "report")
    OUTPUT_TOOLTIPS = (
        "The new speech alone on the original timeline: mono, the original's sample rate and "
        "exact length, silence between segments. Mix it over the original with SpinBot Dub Mix.",
        "The translated segments with the times actually spoken (start = the original start; "
        "end = where the fitted speech ends) for subtitles and lip-sync.",
        "The reference used, the bounds, each segment's slot, natural length, F5 length, tempo "
        "and result, segments over the bound, and how many segments were reused.")

    @classmethod
    def INPUT_TYPES(cls):
        models, vocoders = nodes_voice.f5_choices(), nodes_voice.vocoder_choices()
        f5_default = nodes_voice.DEFAULT_F5
        voc_default = nodes_voice.DEFAULT_VOCODER
        return {
            "required": {
                "segments": (SEGMENTS_TYPE, {"tooltip": "The translated segments (SpinBot "
                             "Translate): the text to speak and the original start/end of "
                             "each."}),
                "audio": ("AUDIO", {"tooltip": "The original audio (the video's sound). Sets "
                          "the output's length and rate and, without a 'voice', gives the "
                          "reference voice."}),
                "model": (models, {"default": f5_default if f5_default in models else models[0],
                          "tooltip": "F5-TTS checkpoint in models/tts (a model for the target "
                          "language speaks it best)."}),
                "vocoder": (vocoders, {"default": voc_default if voc_default in vocoders
                            else vocoders[0], "tooltip": "Vocos folder in models/tts."}),
                "nfe_steps": ("INT", {"default": 32, "min": 4, "max": 128, "tooltip":
                              "Flow-matching steps per segment (32: reference quality)."}),
                "cfg_strength": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                 "tooltip": "Classifier-free guidance strength."}),
                "sway_sampling": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0,
                                  "step": 0.05, "tooltip": "Sway sampling coefficient."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip":
                         "Noise seed; segment i uses seed + 1000 x i."}),
                "max_speed_change": ("FLOAT", {"default": 1.3, "min": 1.0, "max": 2.0,
                                     "step": 0.05, "tooltip": "Most F5-TTS is asked to speed up "
                                     "or slow down a segment from its natural length (its own "
                                     "duration control, natural-sounding)."}),
                "max_tempo_change": ("FLOAT", {"default": 1.25, "min": 1.0, "max": 2.0,
                                     "step": 0.05, "tooltip": "Most the spoken segment is then "
                                     "sped up or slowed down by atempo (pitch kept). Segments "
                                     "needing more are reported."}),
            },
            "optional": {
                "voice": (profiles.VOICE_TYPE, {"tooltip": "A voice from SpinBot Voice Profile. "
                          "Without it the voice is cut from the original audio."}),
                "original_segments": (SEGMENTS_TYPE, {"tooltip": "The transcription in the original "
                                      "language (SpinBot Transcribe): its text is the transcript "
                                      "of the reference cut. Without it (and without 'voice') "
                                      "the cut is transcribed with Whisper from models/whisper."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model: str = "", vocoder: str = "", **_kw):
        # the F5/Vocos files, and Whisper's (it transcribes the reference cut when no
        # original_segments are connected)
        whisper = [runtime.file_stamp(p)
                   for p in runtime.model_folder_paths(profiles.WHISPER_FOLDER)]
        return "|".join([nodes_voice.SpinBotF5TTS.IS_CHANGED(model=model, vocoder=vocoder)]
                        + whisper)

    def speak(self, segments, audio, model: str, vocoder: str, nfe_steps: int,
              cfg_strength: float, sway_sampling: float, seed: int, max_speed_change: float,
              max_tempo_change: float, voice=None, original_segments=None):
        segs = _speakable_segments(segments, "segments")
        if voice is not None and not isinstance(voice, profiles.VoiceProfile):
            raise profiles.VoiceError("SpinBot Dub Voice: 'voice' must come from SpinBot Voice "
                                       "Profile")
        wave, rate = check_audio(audio, "audio")
        voice_fit.require_sound(wave, rate)  # even with a profile: no speech, nothing to dub
        originals = coerce_segments(original_segments) if original_segments else None
        if voice is not None:
            reference = voice_fit.Reference(voice, f"voice profile '{voice.name or '(unsaved)'}'"
                                             f" ({voice.seconds:.1f} s)")
        else:
            reference = voice_fit.reference_from_audio(audio, originals, segs)
        f5_path, vocos_dir = nodes_voice.model_paths(model, vocoder)
        stamp = "|".join(runtime.file_stamp(f) for f in voice_engine.model_files(f5_path, vocos_dir))
        settings = voice_fit.FitSettings(
            nfe_steps=int(nfe_steps), cfg_strength=float(cfg_strength), sway=float(sway_sampling),
            seed=int(seed), max_speed_change=float(max_speed_change),
            max_tempo_change=float(max_tempo_change))
        models = voice_engine.get_models(f5_path, vocos_dir)
        with voice_engine.models_on_device(models) as pair:
            result = voice_fit.dub_voice(pair, stamp, reference, segs, wave.shape[-1], rate,
                                          settings)
        return ({"waveform": result.wave[None], "sample_rate": result.rate}, result.segments,
                result.report())


class SpinBotDubMix:
    DESCRIPTION = ("Keeps the original soundtrack under the dubbed speech. The original is split "
                   "into its speech band (100 Hz-5 kHz) and the rest; where the original or the "
                   "new speech is, the speech band is lowered by 'speech_reduction_db' (the "
                   "original voice is ducked, not separated) and the rest by "
                   "'background_ducking_db', with smooth ramps; elsewhere the original is "
                   "untouched. The new speech is added on top. The report gives the drops "
                   "measured on the result.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "report")
    OUTPUT_TOOLTIPS = (
        "Original background + new speech: the original's rate, channels and exact length.",
        "Method and measured figures: how far the original speech band dropped, how much of the "
        "background was kept under and outside the speech, bed levels.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("AUDIO", {"tooltip": "The original soundtrack (speech + "
                             "background)."}),
                "speech": ("AUDIO", {"tooltip": "The new speech on the original timeline "
                           "(SpinBot Dub Voice's 'speech')."}),
                "segments": (SEGMENTS_TYPE, {"tooltip": "Where the original speech is: the "
                             "transcribed or translated segments (their original times); Dub "
                             "Voice's segments work too."}),
                "speech_reduction_db": ("FLOAT", {"default": 24.0, "min": 0.0, "max": 60.0,
                                        "step": 0.5, "tooltip": "How far the original's speech "
                                        "band goes down where speech is."}),
                "background_ducking_db": ("FLOAT", {"default": 4.0, "min": 0.0,
                                          "max": background.MAX_BACKGROUND_DB,
                                          "step": 0.5, "tooltip": "How far the rest of the "
                                          "original (below 100 Hz, above 5 kHz) goes down under "
                                          "the speech; 0 keeps it whole, 20 at most (never a "
                                          "silent bed)."}),
                "attack_seconds": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 5.0,
                                   "step": 0.01, "tooltip": "Ramp down, ahead of each phrase."}),
                "release_seconds": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 5.0,
                                    "step": 0.01, "tooltip": "Ramp back up after each phrase."}),
            },
        }

    def mix(self, original, speech, segments, speech_reduction_db: float,
            background_ducking_db: float, attack_seconds: float, release_seconds: float):
        segs = coerce_segments(segments) if segments else ()
        if not segs:
            raise MediaError("SpinBot Dub Mix: 'segments' is empty; connect the segments of the "
                             "speech (SpinBot Transcribe/Translate or SpinBot Dub Voice)")
        settings = background.MixSettings(float(speech_reduction_db),
                                           float(background_ducking_db), float(attack_seconds),
                                           float(release_seconds))
        result = background.dub_mix(original, speech, segs, settings,
                                     runtime.check_interrupted)
        return ({"waveform": result.wave[None], "sample_rate": result.rate}, result.report())


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotDubVoice": SpinBotDubVoice,
    "SpinBotDubMix": SpinBotDubMix,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotDubVoice": "SpinBot Dub Voice",
    "SpinBotDubMix": "SpinBot Dub Mix",
}
