"""Dubbing nodes (see this package's docstring)."""
from __future__ import annotations

from .. import runtime
from ..media import MediaError, check_audio
from ..script.segments import SEGMENTS_TYPE, coerce_segments
from ..video.load import VIDEO_INPUT, as_spinbot_video
from ..voice import engine as voice_engine, nodes_voice, profiles
from . import background, languages, transcribe, translate, voice_fit

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
                "original_segments": (SEGMENTS_TYPE, {"tooltip": "The transcription in the "
                                      "original language (SpinBot Transcribe): its text is the "
                                      "transcript of the reference cut. Without it (and without "
                                      "'voice') the cut is transcribed with Whisper from "
                                      "models/whisper."}),
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
        stamp = "|".join(runtime.file_stamp(f)
                         for f in voice_engine.model_files(f5_path, vocos_dir))
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
                "centre_only": ("BOOLEAN", {"default": False, "tooltip": "Stereo originals: "
                                "duck only the centre (mid) of the speech band, where film and "
                                "TV mixes put dialogue, so stereo music keeps its width and "
                                "level. Leave off for speech recorded off-centre."}),
            },
        }

    def mix(self, original, speech, segments, speech_reduction_db: float,
            background_ducking_db: float, attack_seconds: float, release_seconds: float,
            centre_only: bool = False):
        segs = coerce_segments(segments) if segments else ()
        if not segs:
            raise MediaError("SpinBot Dub Mix: 'segments' is empty; connect the segments of the "
                             "speech (SpinBot Transcribe/Translate or SpinBot Dub Voice)")
        settings = background.MixSettings(float(speech_reduction_db),
                                           float(background_ducking_db), float(attack_seconds),
                                           float(release_seconds), bool(centre_only))
        result = background.dub_mix(original, speech, segs, settings,
                                     runtime.check_interrupted)
        return ({"waveform": result.wave[None], "sample_rate": result.rate}, result.report())


# --------------------------------------------------------------------------- transcribe + translate (17b)

AUTO = "auto"
FROM_TRANSCRIPTION = "from transcription"


def _video_audio(video) -> dict:
    """The audio of a SPINBOT_VIDEO or a core VIDEO (stored through the video stage's loader)."""
    video = as_spinbot_video(video, "SpinBot Transcribe: video")
    if video.audio is None:
        raise transcribe.TranscribeError("SpinBot Transcribe: the video has no audio track, so "
                                         "there is no speech to transcribe")
    return video.audio


class SpinBotTranscribe:
    DESCRIPTION = ("Transcribes speech with Whisper (a transformers folder in models/whisper) "
                   "into timed segments: audio or a video's sound is mixed to mono and resampled "
                   "to 16 kHz, silent stretches are skipped, long audio is read in Whisper's 30 s "
                   "windows, each continuing where the last complete segment ended. Language "
                   "auto-detected or given. Segment times are measured by the model; word times "
                   "too when the model has alignment heads. Silent input is an error.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (SEGMENTS_TYPE, "STRING", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("segments", "text", "language", "words", "report")
    OUTPUT_TOOLTIPS = (
        "The spoken sentences with measured start/end (seconds from the start of the audio), "
        "for SpinBot Translate, subtitles and the dubbing voice.",
        "The whole transcript.",
        "The language spoken (Whisper code, e.g. 'de'): detected or the one given. Connect it "
        "to SpinBot Translate's 'language'.",
        "Word timestamps as JSON [{word, start, end}] ('[]' when the model has no alignment "
        "heads or word timestamps are off).",
        "Model, language, windows, conversions, segment count and any notes.")

    @classmethod
    def INPUT_TYPES(cls):
        models = transcribe.list_whisper()
        default = transcribe.DEFAULT_MODEL if transcribe.DEFAULT_MODEL in models else models[0]
        names = sorted(n.title() for n in languages.whisper_languages().values())
        return {
            "required": {
                "model": (models, {"default": default, "tooltip": "Whisper folder in "
                          "models/whisper (config.json, model.safetensors, tokenizer and "
                          "preprocessor files), e.g. whisper-large-v3-turbo."}),
                "language": ([AUTO] + names, {"default": AUTO, "tooltip": "The language "
                             "spoken; 'auto' detects it from the first speech."}),
                "word_timestamps": ("BOOLEAN", {"default": True, "tooltip": "Also time every "
                                    "word (needs the model's alignment heads; said in the "
                                    "report when missing)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Speech to transcribe (any rate and channels)."}),
                "video": (VIDEO_INPUT, {"tooltip": "A video (SpinBot or core "
                          "VIDEO) whose sound is transcribed (used when no audio is "
                          "connected)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model: str = "", **_kw):
        return runtime.model_stamp(transcribe.FOLDER, model)

    def run(self, model: str, language: str, word_timestamps: bool, audio=None, video=None):
        if audio is None and video is None:
            raise MediaError("SpinBot Transcribe: connect 'audio' or 'video'")
        what = "audio" if audio is not None else "video's audio"
        wave, notes = transcribe.audio_16k_mono(audio if audio is not None
                                                else _video_audio(video), what)
        whisper = transcribe.load_whisper(model)
        result = transcribe.transcribe(wave, whisper, language, bool(word_timestamps), what)
        seconds = len(wave) / transcribe.SAMPLE_RATE
        lines = [f"Whisper '{model}', language {languages.whisper_name(result.language)} "
                 f"({result.language}, {'given' if language != AUTO else 'detected'})",
                 f"{seconds:.2f} s of {what} in {result.windows} window(s) of 30 s; "
                 f"{len(result.segments)} segment(s), {len(result.text.split())} word(s)",
                 ("word timestamps: " + (f"{len(result.words)} words" if result.word_level
                                         else "off" if not word_timestamps else "unavailable"))]
        lines += notes + [n for n in result.notes if not n.startswith("detected language")]
        return (result.segments, result.text, result.language, result.words_json(),
                "\n".join(lines))


class SpinBotTranslate:
    DESCRIPTION = ("Translates timed segments with NLLB-200 (a transformers folder in "
                   "models/translation such as nllb-200-distilled-600M) into any of its 202 "
                   "languages, sentence by sentence (long sentences split within the token "
                   "limit and joined again). Every segment keeps its start and end. Glossary "
                   "terms are kept as written (or as you give them); terms the model dropped "
                   "are reported.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = (SEGMENTS_TYPE, "STRING", "STRING")
    RETURN_NAMES = ("segments", "text", "report")
    OUTPUT_TOOLTIPS = (
        "The translated segments with the original start/end, for SpinBot Dub Voice and "
        "subtitles.",
        "The whole translation.",
        "Model, languages, pieces translated, sentences split, glossary terms dropped.")

    @classmethod
    def INPUT_TYPES(cls):
        models = translate.list_translators()
        default = translate.DEFAULT_MODEL if translate.DEFAULT_MODEL in models else models[0]
        names = languages.nllb_names()
        return {
            "required": {
                "segments": (SEGMENTS_TYPE, {"tooltip": "Segments to translate (SpinBot "
                             "Transcribe)."}),
                "model": (models, {"default": default, "tooltip": "NLLB-200 folder in "
                          "models/translation (config.json, model.safetensors, tokenizer "
                          "files)."}),
                "target_language": (names, {"default": "English", "tooltip": "Language to "
                                    "translate into."}),
                "source_language": ([FROM_TRANSCRIPTION] + names, {"default": FROM_TRANSCRIPTION,
                                    "tooltip": "Language of the segments; 'from transcription' "
                                    "uses the connected 'language' (SpinBot Transcribe's)."}),
                "glossary": ("STRING", {"multiline": True, "default": "", "tooltip": "Terms to "
                             "keep, one per line: 'Name' keeps it as written, 'Term = "
                             "Translation' forces a translation. Lines starting with # are "
                             "ignored."}),
                "max_tokens": ("INT", {"default": translate.DEFAULT_MAX_TOKENS, "min": 16,
                               "max": translate.MAX_TOKENS_LIMIT, "tooltip": "Longest piece "
                               "given to the model at once, in tokens; longer sentences are "
                               "split at commas or between words."}),
            },
            "optional": {
                "language": ("STRING", {"forceInput": True, "tooltip": "The source language "
                             "from SpinBot Transcribe (a code like 'de' or a name)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model: str = "", **_kw):
        return runtime.model_stamp(translate.FOLDER, model)

    def run(self, segments, model: str, target_language: str, source_language: str,
            glossary: str, max_tokens: int, language: str | None = None):
        segs = coerce_segments(segments) if segments else ()
        if not segs:
            raise translate.TranslateError("SpinBot Translate: 'segments' is empty; connect "
                                           "SpinBot Transcribe's segments")
        source = source_language
        if source_language == FROM_TRANSCRIPTION:
            if not (language or "").strip():
                raise translate.TranslateError(
                    "SpinBot Translate: source_language is 'from transcription' but no "
                    "'language' is connected; connect SpinBot Transcribe's 'language' or choose "
                    "the source language")
            source = language
        terms = translate.parse_glossary(glossary)
        translator = translate.load_translator(model)
        result = translate.translate_segments(segs, translator, source, target_language, terms,
                                              int(max_tokens))
        lines = [f"NLLB '{model}': {languages.nllb_name(result.source)} ({result.source}) -> "
                 f"{languages.nllb_name(result.target)} ({result.target})",
                 f"{len(result.segments)} segment(s), {result.pieces} piece(s) translated, "
                 f"{result.split_sentences} sentence(s) over {int(max_tokens)} tokens split",
                 f"glossary: {len(terms)} term(s)" + (
                     "; dropped by the model: " + ", ".join(f"'{t}' (segment {i})"
                                                            for i, t in result.dropped)
                     if result.dropped else "")]
        return (result.segments, result.text, "\n".join(lines + result.notes))


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SpinBotTranscribe": SpinBotTranscribe,
    "SpinBotTranslate": SpinBotTranslate,
    "SpinBotDubVoice": SpinBotDubVoice,
    "SpinBotDubMix": SpinBotDubMix,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SpinBotTranscribe": "SpinBot Transcribe",
    "SpinBotTranslate": "SpinBot Translate",
    "SpinBotDubVoice": "SpinBot Dub Voice",
    "SpinBotDubMix": "SpinBot Dub Mix",
}
