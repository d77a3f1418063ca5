"""Voice nodes: SpinBot Voice Profile (reference clip + transcript -> VOICE) and SpinBot F5-TTS
(VOICE + text or segments -> AUDIO + measured segment timings)."""
from __future__ import annotations

import os

from .. import runtime
from ..manifest import require_model
from ..media import MediaError, make_audio
from ..script.script import SCRIPT_TYPE
from ..script.segments import SEGMENTS_TYPE, coerce_segments
from . import engine, profiles
from .profiles import VOICE_TYPE, VoiceError
from .text import is_speakable

CATEGORY = "SpinBot/voice"
FOLDER = "tts"
DEFAULT_F5 = "F5TTS_v1_Base/model_1250000.safetensors"
DEFAULT_VOCODER = "vocos-mel-24khz"
NO_PROFILE = "(none)"


def f5_choices() -> list[str]:
    names = [n for n in runtime.list_models(FOLDER, [".safetensors", ".pt"])
             if not n.startswith(profiles.PROFILES_SUBDIR + "/") and "vocos" not in n.lower()]
    return names or [DEFAULT_F5]


def vocoder_choices() -> list[str]:
    names = [d for d in runtime.list_models(FOLDER, dirs=True)
             if runtime.find_model(FOLDER, f"{d}/config.yaml")
             and (runtime.find_model(FOLDER, f"{d}/pytorch_model.bin")
                  or runtime.find_model(FOLDER, f"{d}/model.safetensors"))]
    return names or [DEFAULT_VOCODER]


def model_paths(model: str, vocoder: str) -> tuple[str, str]:
    """(F5 checkpoint path, Vocos folder) of the two dropdown choices; raises MissingModelError
    naming the file (and its download) when the checkpoint, its vocab.txt or the vocoder's
    config/weights are not installed."""
    f5_path = require_model(FOLDER, model)
    vocab = os.path.join(os.path.dirname(f5_path), "vocab.txt")
    if not os.path.exists(vocab):
        require_model(FOLDER, os.path.join(os.path.dirname(model), "vocab.txt").replace("\\", "/"))
    require_model(FOLDER, f"{vocoder}/config.yaml")
    vocos_dir = os.path.dirname(require_model(FOLDER, f"{vocoder}/pytorch_model.bin",
                                              [f"{vocoder}/model.safetensors"]))
    return f5_path, vocos_dir


class SpinBotVoiceProfile:
    DESCRIPTION = ("Makes a reusable voice from about 5-12 s of someone speaking plus the words "
                   "they say. The clip is mixed to mono, resampled to 24 kHz, edge silence "
                   "trimmed, cut at a pause to 12 s, loudness-normalised; clipping is warned "
                   "about, silence and clips under 2 s are rejected. Give a profile_name and "
                   "save it to reuse it later from 'load_profile' without the audio. An empty "
                   "reference_text is transcribed with Whisper from models/whisper.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (VOICE_TYPE, "AUDIO", "STRING")
    RETURN_NAMES = ("voice", "reference_audio", "reference_text")
    OUTPUT_TOOLTIPS = ("The voice profile for SpinBot F5-TTS.",
                       "The cleaned reference clip (24 kHz mono) to preview.",
                       "The transcript used (typed, loaded or from Whisper).")
    # An output node so the UI shows where a profile was saved. ComfyUI always runs output
    # nodes, which is harmless here: with 'save' off (or no profile_name) nothing is written.
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference_text": ("STRING", {"multiline": True, "default": "", "tooltip":
                                   "Exactly the words spoken in the reference audio. Leave empty "
                                   "to transcribe with Whisper (models/whisper/whisper-small), or "
                                   "when loading a saved profile."}),
                "load_profile": ([NO_PROFILE] + profiles.list_profiles(), {"default": NO_PROFILE,
                                 "tooltip": "A saved profile from models/tts/voices, used "
                                 "when no audio is connected (connected audio wins). A typed "
                                 "reference_text replaces the saved transcript."}),
                "profile_name": ("STRING", {"default": "", "tooltip": "Name to save this voice "
                                 "under (letters, digits, space, _ . -). Empty: not saved."}),
                "save": ("BOOLEAN", {"default": True, "tooltip": "Save the profile under "
                         "profile_name (replacing one of that name)."}),
                "max_seconds": ("FLOAT", {"default": profiles.MAX_SECONDS, "min": 3.0,
                                "max": 20.0, "step": 0.5, "tooltip": "Longest reference kept; "
                                "longer clips are cut at a pause. F5-TTS works best with 5-12 s."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Reference recording (e.g. from LoadAudio): one "
                          "speaker, little background noise."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, load_profile: str = NO_PROFILE, reference_text: str = "", **_kw):
        stamps = []
        if load_profile and load_profile != NO_PROFILE:
            try:  # the whole profile folder: reference.wav, the transcript and meta.json
                folder = profiles.profile_dir(load_profile)
                stamps.append(f"{load_profile}|{runtime.file_stamp(folder)}")
            except VoiceError:
                stamps.append(load_profile)
        if not reference_text.strip():  # an empty transcript is made by Whisper (models/whisper)
            stamps += [runtime.file_stamp(p)
                       for p in runtime.model_folder_paths(profiles.WHISPER_FOLDER)]
        return "|".join(stamps)

    def build(self, reference_text: str, load_profile: str, profile_name: str, save: bool,
              max_seconds: float, audio: dict | None = None):
        if audio is None:
            if not load_profile or load_profile == NO_PROFILE:
                raise VoiceError("SpinBot Voice Profile: connect reference 'audio' or choose a "
                                 "saved profile in 'load_profile'")
            voice = profiles.load_profile(load_profile)
            if reference_text.strip():
                voice.text = reference_text.strip()
        else:
            voice = profiles.make_profile(audio, reference_text, name=profile_name.strip(),
                                          max_seconds=float(max_seconds))
        if not is_speakable(voice.text):  # typed, saved or transcribed: refused before saving
            raise VoiceError(f"SpinBot Voice Profile: the reference text {voice.text[:60]!r} has "
                             "no words (only punctuation, spaces, symbols or emoji): type the "
                             "words spoken in the reference audio")
        if save and profile_name.strip():
            folder = profiles.save_profile(voice, profile_name)
            return {"ui": {"text": [f"saved voice profile '{voice.name}' to {folder}"]},
                    "result": (voice, voice.audio(), voice.text)}
        return (voice, voice.audio(), voice.text)


class SpinBotF5TTS:
    DESCRIPTION = ("Speaks text in a cloned voice with F5-TTS (Vocos vocoder), fully offline. "
                   "The text (or the connected script segments) is synthesized sentence by "
                   "sentence, long sentences in chunks, and joined with cross-fades or pauses; "
                   "the segments output carries the measured start/end of every sentence for "
                   "subtitles and animation. Same seed and settings give the same audio.")
    CATEGORY = CATEGORY
    FUNCTION = "speak"
    RETURN_TYPES = ("AUDIO", SEGMENTS_TYPE)
    RETURN_NAMES = ("audio", "segments")
    OUTPUT_TOOLTIPS = ("The speech, 24 kHz mono.",
                       "Measured timings of every segment (start/end in seconds) for SpinBot "
                       "Subtitles, Video Combine and the animation stages.")

    @classmethod
    def INPUT_TYPES(cls):
        models, vocoders = f5_choices(), vocoder_choices()
        return {
            "required": {
                "voice": (VOICE_TYPE, {"tooltip": "The voice from SpinBot Voice Profile."}),
                "text": ("STRING", {"multiline": True, "default": "", "tooltip": "What to say. "
                         "Split into sentences automatically. Ignored when 'script' or "
                         "'segments' is connected."}),
                "model": (models, {"default": DEFAULT_F5 if DEFAULT_F5 in models else models[0],
                          "tooltip": "F5-TTS checkpoint in models/tts (a fine-tune for another "
                          "language needs its own vocab.txt beside it)."}),
                "vocoder": (vocoders, {"default": DEFAULT_VOCODER if DEFAULT_VOCODER in vocoders
                            else vocoders[0], "tooltip": "Vocos folder in models/tts "
                            "(config.yaml + pytorch_model.bin)."}),
                "nfe_steps": ("INT", {"default": 32, "min": 4, "max": 128, "tooltip":
                              "Flow-matching steps. 32 is the reference quality; 16 is about "
                              "twice as fast."}),
                "cfg_strength": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                 "tooltip": "Classifier-free guidance: higher follows text and "
                                 "voice more closely; 0 halves the work."}),
                "sway_sampling": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0,
                                  "step": 0.05, "tooltip": "Sway sampling coefficient: negative "
                                  "spends more steps early (better at low step counts)."}),
                "speed": ("FLOAT", {"default": 1.0, "min": 0.3, "max": 3.0, "step": 0.05,
                          "tooltip": "Speaking rate relative to the reference."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip":
                         "Noise seed. Segment i uses seed + 1000 x i (its chunks +1, +2, ...), so "
                         "the same settings give the same audio."}),
                "cross_fade": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Seconds of cross-fade between chunks (and between "
                               "segments when silence is 0)."}),
                "silence": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 5.0, "step": 0.05,
                            "tooltip": "Seconds of silence between segments."}),
            },
            "optional": {
                "script": (SCRIPT_TYPE, {"tooltip": "A script from SpinBot Script (Ollama) or "
                           "SpinBot Direct Script: its narrative segments are spoken one by one, "
                           "replacing 'text'."}),
                "segments": (SEGMENTS_TYPE, {"tooltip": "Segments to speak one by one (e.g. "
                             "from another F5-TTS run); replace 'text' and 'script'."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model: str = "", vocoder: str = "", **_kw):
        # every file speak() reads: the checkpoint, the vocab.txt beside it, the Vocos folder
        f5_path, vocos_dir = runtime.find_model(FOLDER, model), runtime.find_model(FOLDER, vocoder)
        if f5_path is None or vocos_dir is None:
            return f"{runtime.model_stamp(FOLDER, model)}|{runtime.model_stamp(FOLDER, vocoder)}"
        return "|".join(runtime.file_stamp(f) for f in engine.model_files(f5_path, vocos_dir))

    def speak(self, voice, text: str, model: str, vocoder: str, nfe_steps: int,
              cfg_strength: float, sway_sampling: float, speed: float, seed: int,
              cross_fade: float, silence: float, script=None, segments=None):
        if not isinstance(voice, profiles.VoiceProfile):
            raise VoiceError("SpinBot F5-TTS: 'voice' must come from SpinBot Voice Profile")
        source = segments if segments else script
        segs = coerce_segments(source) if source else engine.text_segments(text)
        segs = tuple(s for s in segs if s.text.strip())
        if not segs:
            raise MediaError("SpinBot F5-TTS: nothing to say: type some text or connect segments")
        models = engine.get_models(*model_paths(model, vocoder))
        settings = engine.Settings(nfe_steps=int(nfe_steps), cfg_strength=float(cfg_strength),
                                   sway=float(sway_sampling), speed=float(speed), seed=int(seed),
                                   cross_fade=float(cross_fade), silence=float(silence))
        with engine.models_on_device(models) as (f5, voc):
            result = engine.synthesize(f5, voc, voice, segs, settings)
        return (make_audio(result.wave, result.sample_rate), result.segments)


NODE_CLASS_MAPPINGS = {"SpinBotVoiceProfile": SpinBotVoiceProfile, "SpinBotF5TTS": SpinBotF5TTS}
NODE_DISPLAY_NAME_MAPPINGS = {"SpinBotVoiceProfile": "SpinBot Voice Profile",
                              "SpinBotF5TTS": "SpinBot F5-TTS"}
