"""The shipped workflows, declared once (see tests/workflow_build.py for the two file formats).

Node ids are stable: the README, the client's `--set` examples and the tests refer to nodes by
title, and to a few by id.
"""
from __future__ import annotations

from tests.workflow_build import GROUP_COLORS as C
from tests.workflow_build import Graph, Group, Node, note


def photo_with_audio() -> Graph:
    return Graph("photo_with_audio", [
        Node(1, "LoadImage", "Portrait", (40, 80), (320, 360), {"image": "portrait.png"}),
        Node(2, "LoadAudio", "Narration", (40, 480), (320, 140), {"audio": "narration.wav"}),
        Node(3, "SpinBotVideoCombine", "Video Combine", (420, 80), (360, 560),
             {"filename_prefix": "SpinBot/photo"}, {"images": (1, 0), "audio": (2, 0)}),
        note(4, "Talking-photo baseline: a still portrait held for the length of the narration.\n\n"
                "1. Portrait: upload any image (odd sizes are padded for H.264).\n"
                "2. Narration: upload speech or music; it is loudness-normalised to -14 LUFS.\n"
                "3. Video Combine writes output/SpinBot/photo_00001_.mp4 and previews it here.\n\n"
                "No model files are needed.", (840, 80), (420, 220)),
    ], [Group("Inputs", (20, 10, 360, 630), C["inputs"]),
        Group("Output", (400, 10, 420, 900), C["output"])])


F5_MODEL = "F5TTS_v1_Base/model_1250000.safetensors"
VOCODER = "vocos-mel-24khz"
WAV2LIP = "wav2lip_gan.pth"
DETECTOR = "buffalo_l"
UPSCALER = "realesr-general-x4v3.pth"
RIFE = "rife47.pth"
REFERENCE_TEXT = "Some call me nature, others call me mother nature."

VOICE_NOTE = ("Voice reference: 5-12 s of your own clean speech (LoadAudio), and its exact words in "
              "Voice Profile's reference_text. Give the profile a name to save it to "
              "models/spinbot_voices and pick it later from load_profile instead.")
MODELS_DIRECT = ("Model files (python install.py --models direct):\n"
                 f"- models/tts/{F5_MODEL} + vocab.txt, models/tts/{VOCODER}/\n"
                 f"- models/lipsync/{WAV2LIP}\n"
                 f"- models/insightface/models/{DETECTOR}/ (face detector)\n"
                 f"- models/upscale_models/{UPSCALER}")


def _voice_nodes(first_id: int, x: int, y: int, script: tuple[int, int]) -> list[Node]:
    """LoadAudio -> Voice Profile -> F5-TTS, ids first_id..first_id+2."""
    a, v, t = first_id, first_id + 1, first_id + 2
    return [
        Node(a, "LoadAudio", "Voice reference", (x, y), (320, 140), {"audio": "voice_reference.wav"}),
        Node(v, "SpinBotVoiceProfile", "Voice Profile", (x, y + 180), (320, 260),
             {"reference_text": REFERENCE_TEXT, "save": False}, {"audio": (a, 0)}),
        Node(t, "SpinBotF5TTS", "F5-TTS", (x + 360, y), (340, 420),
             {"model": F5_MODEL, "vocoder": VOCODER}, {"voice": (v, 0), "script": script}),
    ]


def _talking_head_nodes(first_id: int, x: int, image: tuple[int, int], speech: tuple[int, int],
                        segments: tuple[int, int], prefix: str) -> list[Node]:
    """Wav2Lip -> Upscale, Subtitles -> Video Combine, ids first_id..first_id+3."""
    w, u, s, c = first_id, first_id + 1, first_id + 2, first_id + 3
    return [
        Node(w, "SpinBotWav2Lip", "Wav2Lip", (x, 80), (360, 560),
             {"model_name": WAV2LIP, "face_detector": DETECTOR}, {"image": image, "audio": speech}),
        Node(u, "SpinBotUpscale", "Upscale", (x + 400, 80), (340, 260),
             {"model_name": UPSCALER, "target_scale": 2.0}, {"video": (w, 0)}),
        Node(s, "SpinBotSubtitles", "Subtitles", (x + 400, 400), (340, 160), {}, {"segments": segments}),
        Node(c, "SpinBotVideoCombine", "Video Combine", (x + 780, 80), (380, 620),
             {"filename_prefix": prefix}, {"video": (u, 1), "subtitles": (s, 0)}),
    ]


def direct() -> Graph:
    """Your words, your portrait, your voice: no LLM and no diffusion model."""
    nodes = [
        Node(1, "LoadImage", "Portrait", (40, 80), (320, 360), {"image": "portrait.png"}),
        Node(2, "SpinBotDirectScript", "Narration", (40, 500), (320, 260),
             {"narration": "Hello! I am your SpinBot avatar. I say exactly what you type here, "
                           "in your own voice."}),
        *_voice_nodes(3, 400, 80, (2, 2)),
        *_talking_head_nodes(6, 1140, (1, 0), (5, 0), (5, 1), "SpinBot/direct"),
        note(10, "Direct mode: your text, your portrait, your voice -> a talking video.\n\n"
                 "1. Portrait: a photo with one clearly visible face.\n"
                 "2. Narration: what the avatar says (split into sentences for timing).\n"
                 f"3. {VOICE_NOTE}\n"
                 "4. Wav2Lip animates the mouth, Upscale doubles the size, Video Combine writes "
                 "output/SpinBot/direct_00001_.mp4 with subtitles.\n\n" + MODELS_DIRECT,
             (40, 820), (700, 360)),
    ]
    return Graph("direct", nodes, [
        Group("Inputs", (20, 10, 360, 780), C["inputs"]),
        Group("Voice", (380, 10, 740, 560), C["voice"]),
        Group("Lip sync", (1120, 10, 400, 660), C["lipsync"]),
        Group("Upscale and output", (1520, 10, 800, 740), C["output"]),
    ])


def guided() -> Graph:
    """A topic becomes a script, a stage image with your identity, your voice and a talking video."""
    nodes = [
        Node(1, "SpinBotScriptOllama", "Script", (40, 80), (360, 520),
             {"topic": "Three small habits that make mornings easier", "target_seconds": 20.0},
             {"trigger_word": (3, 1)}),
        Node(2, "SpinBotImageModel", "Image Model", (440, 80), (340, 180),
             {"checkpoint": "v1-5-pruned-emaonly.safetensors"}),
        Node(3, "SpinBotIdentityLoRA", "Identity LoRA", (440, 300), (340, 260), {}, {"image_model": (2, 0)}),
        Node(4, "SpinBotStageImage", "Stage Image", (820, 80), (360, 560),
             {"size_preset": "portrait 9:16"},
             {"image_model": (3, 0), "prompt": (1, 0)}),
        *_voice_nodes(5, 440, 700, (1, 2)),
        *_talking_head_nodes(8, 1220, (4, 0), (7, 0), (7, 1), "SpinBot/guided"),
        note(12, "Guided mode: a topic -> script (Ollama) -> stage image with your identity LoRA and "
                 "speech in your voice -> talking video.\n\n"
                 "1. Script: the topic; Ollama must run (ollama serve; ollama pull qwen2.5:7b). "
                 "It writes the stage (image prompt) and the narrative (spoken words).\n"
                 "2. Identity LoRA: pick your LoRA from models/loras (its trigger word goes into "
                 "the stage prompt); 'none' uses the base model only.\n"
                 f"3. {VOICE_NOTE}\n"
                 "4. Wav2Lip animates the face of the stage image; Video Combine writes "
                 "output/SpinBot/guided_00001_.mp4 with subtitles.\n\n"
                 "Model files: python install.py --models guided (SD 1.5 in models/checkpoints "
                 "plus the direct-mode models).", (40, 640), (360, 520)),
    ]
    return Graph("guided", nodes, [
        Group("Script", (20, 10, 400, 600), C["script"]),
        Group("Stage image", (420, 10, 780, 640), C["image"]),
        Group("Voice", (420, 630, 740, 560), C["voice"]),
        Group("Lip sync", (1200, 10, 400, 660), C["lipsync"]),
        Group("Upscale and output", (1600, 10, 800, 740), C["output"]),
    ])


def story() -> Graph:
    """A faceless narrated story: one SDXL scene per sentence, animated with SVD while it is spoken."""
    nodes = [
        Node(1, "SpinBotDirectScript", "Story", (40, 80), (360, 360),
             {"narration": "The lighthouse keeper climbed the stairs one last time. Below him, the "
                           "sea was calm and silver. He lit the lamp, and far away a small boat "
                           "turned towards home.",
              "scene_prompt": "cinematic film still, an old lighthouse on a rocky coast at dusk, "
                              "soft light, highly detailed"}),
        *_voice_nodes(2, 40, 580, (1, 2)),
        Node(5, "SpinBotImageModel", "SDXL Base", (820, 80), (340, 180),
             {"checkpoint": "sd_xl_base_1.0.safetensors"}),
        Node(6, "SpinBotImageModel", "SDXL Refiner", (820, 300), (340, 180),
             {"checkpoint": "sd_xl_refiner_1.0.safetensors"}),
        Node(7, "SpinBotStageImage", "Story Image", (1200, 80), (360, 600),
             {"size_preset": "landscape 16:9", "steps": 30},
             {"image_model": (5, 0), "refiner": (6, 0), "prompt": (1, 0), "segments": (4, 1)}),
        Node(8, "SpinBotSVDModel", "SVD Model", (1600, 80), (340, 200), {"checkpoint": "svd_xt.safetensors"}),
        Node(9, "SpinBotSVD", "SVD", (1600, 320), (360, 640),
             {"width": 1024, "height": 576},
             {"svd_model": (8, 0), "image": (7, 0), "segments": (4, 1), "audio": (4, 0)}),
        Node(10, "SpinBotSubtitles", "Subtitles", (2440, 620), (340, 160), {}, {"segments": (4, 1)}),
        Node(11, "SpinBotVideoCombine", "Video Combine", (2440, 80), (380, 500),
             {"filename_prefix": "SpinBot/story", "crf": 16, "preset": "slow"},
             {"video": (14, 0), "audio": (15, 0), "subtitles": (10, 0)}),
        note(12, "Story mode: a faceless narrated video at 24 fps with music under the voice.\n\n"
                 "1. Story: the narration, split into sentences; the scene prompt sets the look "
                 "(each sentence's words are added to it, one image per sentence).\n"
                 f"2. {VOICE_NOTE}\n"
                 "3. SDXL base + refiner paint one scene per sentence; SVD animates each scene "
                 "while its sentence is spoken (clips chained to cover it) at 8 fps.\n"
                 "4. Frame Interpolation (RIFE) makes three frames of each SVD frame: 24 fps, "
                 "the same length; scene changes are cut, never blended.\n"
                 "5. Music Bed: a generated drone under the voice, lowered while it speaks "
                 "(your own music: add a Load Audio node, connect it to 'music' and set source "
                 "to 'music input').\n"
                 "6. Video Combine writes output/SpinBot/story_00001_.mp4 (crf 16) with the "
                 "mix and subtitles.\n\n"
                 "Model files (python install.py --models story): models/checkpoints/"
                 "sd_xl_base_1.0.safetensors, sd_xl_refiner_1.0.safetensors, svd_xt.safetensors, "
                 f"models/frame_interpolation/{RIFE}, "
                 f"models/tts/{F5_MODEL} + vocab.txt, models/tts/{VOCODER}/.", (40, 1120), (700, 420)),
        Node(13, "SpinBotFrameInterpolationModel", "RIFE Model", (2000, 80), (380, 120),
             {"model_name": RIFE}),
        Node(14, "SpinBotFrameInterpolation", "Frame Interpolation", (2000, 240), (380, 260),
             {"multiplier": 3}, {"video": (9, 0), "rife_model": (13, 0), "segments": (4, 1)}),
        Node(15, "SpinBotAudioBed", "Music Bed", (2000, 560), (380, 480),
             {"source": "drone", "bed_level_db": -20.0}, {"voice": (4, 0), "video": (14, 0)}),
    ]
    return Graph("story", nodes, [
        Group("Story", (20, 10, 400, 480), C["script"]),
        Group("Voice", (20, 510, 760, 580), C["voice"]),
        Group("Scenes", (800, 10, 780, 700), C["image"]),
        Group("Motion", (1580, 10, 400, 980), C["motion"]),
        Group("24 fps and music", (1980, 10, 420, 1060), C["upscale"]),
        Group("Output", (2420, 10, 420, 780), C["output"]),
    ])


QUOTE = ("The best time to plant a tree was twenty years ago. The second best time is now.")


def quote() -> Graph:
    """A spoken quote over a themed image: slow push-in, the quote on screen, music under it."""
    nodes = [
        Node(1, "SpinBotDirectScript", "Quote", (40, 80), (360, 380),
             {"narration": QUOTE,
              "scene_prompt": "a lone oak tree on a green hill at sunrise, golden light, mist in "
                              "the valley below, cinematic, highly detailed"}),
        *_voice_nodes(2, 40, 580, (1, 2)),
        Node(5, "SpinBotImageModel", "Image Model", (820, 80), (340, 180),
             {"checkpoint": "v1-5-pruned-emaonly.safetensors"}),
        Node(6, "SpinBotStageImage", "Quote Image", (1200, 80), (360, 600),
             {"size_preset": "portrait 9:16",
              "negative": "blurry, deformed, watermark, text, letters, signature"},
             {"image_model": (5, 0), "prompt": (1, 0)}),
        Node(7, "SpinBotCameraMotion", "Camera Motion", (1600, 80), (360, 380),
             {"fps": 30.0, "motion": "push in", "zoom": 0.12},
             {"images": (6, 0), "audio": (4, 0)}),
        Node(8, "SpinBotTextOverlay", "Quote Text", (1600, 500), (360, 520),
             {"font_size": 0.055, "wrap_width": 0.82, "fade_in_seconds": 0.8,
              "fade_out_seconds": 0.8},
             {"video": (7, 0), "text": (1, 1)}),
        Node(9, "SpinBotAudioBed", "Music Bed", (2000, 80), (380, 480),
             {"source": "drone", "bed_level_db": -20.0}, {"voice": (4, 0), "video": (8, 0)}),
        Node(10, "SpinBotVideoCombine", "Video Combine", (2000, 680), (380, 500),
             {"filename_prefix": "SpinBot/quote"}, {"video": (8, 0), "audio": (9, 0)}),
        note(11, "Quote mode: a spoken quote over a themed image, the quote on screen, music "
                 "under the voice.\n\n"
                 "1. Quote: the words, typed once: they are spoken and shown on screen. The scene "
                 "prompt sets the picture's theme.\n"
                 f"2. {VOICE_NOTE}\n"
                 "3. Quote Image: SD 1.5 paints the scene (portrait 9:16); Camera Motion pushes "
                 "in slowly for exactly as long as the quote is spoken, at 30 fps.\n"
                 "4. Quote Text: the quote in the centre, faded in and out (font, size, "
                 "position, outline there).\n"
                 "5. Music Bed: a generated drone under the voice, lowered while it speaks. Your "
                 "own music: add a Load Audio node, connect it to 'music' and set source to "
                 "'music input'.\n"
                 "6. Video Combine writes output/SpinBot/quote_00001_.mp4.\n\n"
                 "Model files (python install.py --models quote): models/checkpoints/"
                 f"v1-5-pruned-emaonly.safetensors, models/tts/{F5_MODEL} + vocab.txt, "
                 f"models/tts/{VOCODER}/.", (40, 1120), (700, 420)),
    ]
    return Graph("quote", nodes, [
        Group("Quote", (20, 10, 400, 480), C["script"]),
        Group("Voice", (20, 510, 760, 580), C["voice"]),
        Group("Image", (800, 10, 780, 700), C["image"]),
        Group("Camera and text", (1580, 10, 400, 1040), C["motion"]),
        Group("Music", (1980, 10, 420, 580), C["upscale"]),
        Group("Output", (1980, 610, 420, 600), C["output"]),
    ])


def narrated() -> Graph:
    """A topic becomes a narrated video: one scene per sentence with the same character (identity
    LoRA), camera motion, crossfades, music under the voice and subtitles."""
    nodes = [
        Node(1, "SpinBotScriptOllama", "Script", (40, 80), (360, 640),
             {"topic": "Three lessons a travelling baker learned on the road",
              "tone": "calm storyteller", "target_seconds": 30.0, "scenes": "scene per segment",
              "character": "a young woman with short red hair, a green coat and a canvas "
                           "backpack"},
             {"trigger_word": (3, 1)}),
        Node(2, "SpinBotImageModel", "Image Model", (440, 80), (340, 180),
             {"checkpoint": "v1-5-pruned-emaonly.safetensors"}),
        Node(3, "SpinBotIdentityLoRA", "Identity LoRA", (440, 300), (340, 260), {}, {"image_model": (2, 0)}),
        Node(4, "SpinBotStageImage", "Scene Images", (820, 80), (360, 600),
             {"size_preset": "landscape 16:9"},
             {"image_model": (3, 0), "prompt": (1, 0), "segments": (7, 1)}),
        *_voice_nodes(5, 440, 800, (1, 2)),
        Node(8, "SpinBotCameraMotion", "Camera Motion", (1220, 80), (360, 380),
             {"fps": 24.0, "motion": "auto", "zoom": 0.15},
             {"images": (4, 0), "segments": (7, 1), "audio": (7, 0)}),
        Node(9, "SpinBotTransitions", "Transitions", (1220, 500), (360, 160),
             {"transition": "crossfade", "duration_seconds": 0.6}, {"video": (8, 0)}),
        Node(10, "SpinBotAudioBed", "Music Bed", (1620, 80), (380, 480),
             {"source": "drone", "bed_level_db": -20.0}, {"voice": (7, 0), "video": (9, 0)}),
        Node(11, "SpinBotSubtitles", "Subtitles", (1620, 620), (380, 160), {}, {"segments": (7, 1)}),
        Node(12, "SpinBotVideoCombine", "Video Combine", (2040, 80), (380, 500),
             {"filename_prefix": "SpinBot/narrated"},
             {"video": (9, 0), "audio": (10, 0), "subtitles": (11, 0)}),
        note(13, "Narrated mode: a topic -> a script with one scene per sentence -> one picture "
                 "per scene with the same character -> camera motion, crossfades, music and "
                 "subtitles.\n\n"
                 "1. Script: the topic and the character (the same words go into every scene "
                 "prompt). Ollama must run (ollama serve; ollama pull qwen2.5:7b). It writes the "
                 "narration and one image prompt per sentence.\n"
                 "2. Identity LoRA: your LoRA from models/loras (its trigger word goes into "
                 "every scene); 'none' uses the base model only.\n"
                 f"3. {VOICE_NOTE}\n"
                 "4. Scene Images paints one picture per spoken sentence; Camera Motion moves "
                 "over each while its sentence is spoken (24 fps); Transitions crossfades "
                 "between them.\n"
                 "5. Music Bed: a generated drone under the voice (your own music: add a Load "
                 "Audio node, connect it to 'music' and set source to 'music input').\n"
                 "6. Video Combine writes output/SpinBot/narrated_00001_.mp4 with subtitles.\n\n"
                 "Model files (python install.py --models narrated): models/checkpoints/"
                 f"v1-5-pruned-emaonly.safetensors, models/tts/{F5_MODEL} + vocab.txt, "
                 f"models/tts/{VOCODER}/.", (40, 800), (360, 820)),
    ]
    return Graph("narrated", nodes, [
        Group("Script", (20, 10, 400, 740), C["script"]),
        Group("Scenes", (420, 10, 780, 700), C["image"]),
        Group("Voice", (420, 730, 740, 560), C["voice"]),
        Group("Motion", (1200, 10, 400, 680), C["motion"]),
        Group("Music and subtitles", (1600, 10, 420, 800), C["upscale"]),
        Group("Output", (2020, 10, 420, 600), C["output"]),
    ])


def profile() -> Graph:
    """Your identity profile, made once: 5-20 photos of you -> an identity LoRA in models/loras."""
    nodes = [
        Node(1, "SpinBotImageModel", "Image Model", (40, 80), (340, 180),
             {"checkpoint": "v1-5-pruned-emaonly.safetensors"}),
        Node(2, "SpinBotTrainIdentityLoRA", "Train Identity LoRA", (420, 80), (380, 720),
             {"trigger_word": "ohwx", "name": "my-identity", "preset": "standard",
              "photo_folder": "my_photos", "face_pack": DETECTOR},
             {"image_model": (1, 0)}),
        Node(3, "PreviewImage", "Samples", (840, 80), (420, 460), {}, {"images": (2, 2)}),
        note(4, "Profile training: a handful of photos of you become an identity LoRA that every "
                "other workflow picks up by name.\n\n"
                "1. Put 5-20 photos of one person (face clearly visible, different angles, "
                "light and clothes) in ComfyUI/input/my_photos/ (optional captions: photo1.txt "
                "beside photo1.jpg), or connect a batch of images to 'photos'.\n"
                "2. Train Identity LoRA: a rare trigger word and the LoRA's name. Presets: quick "
                "(500 steps), standard (1000), strong (1600); any number not 0 overrides the "
                "preset. Every checkpoint renders samples and scores their face similarity to "
                "your photos; the best one is written to models/loras/my-identity.safetensors.\n"
                "3. Cancel keeps the last checkpoint; queue again to continue from it.\n"
                "4. Then open the guided or narrated workflow and pick my-identity.safetensors in "
                "Identity LoRA.\n\n"
                "Model files (python install.py --models profile): models/checkpoints/"
                f"v1-5-pruned-emaonly.safetensors, models/insightface/models/{DETECTOR}/ (face "
                "detector and recogniser). A 16 GB GPU trains 'standard' in minutes; CPU works "
                "but is very slow.", (40, 300), (360, 620)),
    ]
    return Graph("profile", nodes, [
        Group("Photos and model", (20, 10, 380, 940), C["inputs"]),
        Group("Training", (400, 10, 420, 820), C["image"]),
        Group("Samples", (820, 10, 460, 560), C["output"]),
    ])


WHISPER = "whisper-large-v3-turbo"
NLLB = "nllb-200-distilled-600M"
FACE_RESTORER = "GFPGANv1.4.pth"


def dubbing() -> Graph:
    """A video of someone speaking, in another language: the same voice, lip-synced, subtitled."""
    nodes = [
        Node(1, "SpinBotLoadVideo", "Source Video", (40, 80), (340, 420), {"video": "talk.mp4"}),
        Node(2, "SpinBotTranscribe", "Transcribe", (420, 80), (340, 260),
             {"model": WHISPER}, {"video": (1, 0)}),
        Node(3, "SpinBotTranslate", "Translate", (420, 380), (340, 360),
             {"model": NLLB, "target_language": "Spanish"},
             {"segments": (2, 0), "language": (2, 2)}),
        Node(4, "SpinBotDubVoice", "Dub Voice", (800, 80), (360, 520),
             {"model": F5_MODEL, "vocoder": VOCODER},
             {"segments": (3, 0), "audio": (1, 1), "original_segments": (2, 0)}),
        Node(5, "SpinBotDubMix", "Dub Mix", (800, 640), (360, 320), {},
             {"original": (1, 1), "speech": (4, 0), "segments": (2, 0)}),
        Node(6, "SpinBotWav2Lip", "Wav2Lip", (1200, 80), (360, 620),
             {"model_name": WAV2LIP, "face_detector": DETECTOR}, {"video": (1, 0), "audio": (5, 0)}),
        Node(7, "SpinBotFaceRestoreModel", "Face Restore Model", (1600, 80), (340, 120),
             {"model_name": FACE_RESTORER}),
        Node(8, "SpinBotFaceRestore", "Face Restore", (1600, 240), (340, 340),
             {"face_detector": DETECTOR}, {"face_restore_model": (7, 0), "video": (6, 0)}),
        Node(9, "SpinBotSubtitles", "Subtitles", (1600, 620), (340, 160), {}, {"segments": (4, 1)}),
        Node(10, "SpinBotVideoCombine", "Video Combine", (1980, 80), (380, 660),
             {"filename_prefix": "SpinBot/dubbing", "normalize_loudness": False,
              "subtitle_language": "Spanish", "subtitle_language_2": "English"},
             {"video": (8, 1), "audio": (5, 0), "subtitles": (9, 0), "subtitles_2": (12, 0)}),
        Node(12, "SpinBotSubtitles", "Original Subtitles", (1600, 840), (340, 160), {},
             {"segments": (2, 0)}),
        note(11, "Dubbing: a video of someone speaking -> the same speaker, in another language, "
                 "lip-synced, with subtitles.\n\n"
                 "1. Source Video: upload the video (input/talk.mp4). SpinBot Load Video streams "
                 "it to disk and gives its original audio. Core 'Load Video' works too: connect "
                 "its VIDEO to Transcribe's and Wav2Lip's 'video' and to a 'SpinBot Video Info' "
                 "node, whose 'audio' (exactly as long as the frames; no frames held in memory) "
                 "goes to Dub Voice's 'audio' and Dub Mix's 'original'.\n"
                 "2. Transcribe: Whisper finds the sentences and their times; set 'language' if "
                 "auto-detection picks the wrong one.\n"
                 "3. Translate: NLLB-200 into 'target_language'; terms to keep go in 'glossary'.\n"
                 "4. Dub Voice speaks each sentence in the speaker's own voice (cut from the "
                 "video), fitted to its original slot; the report names sentences that needed "
                 "more than 'max_tempo_change'.\n"
                 "5. Dub Mix keeps the original background and ducks the original voice.\n"
                 "6. Wav2Lip moves the lips of the original frames to the new speech (frames "
                 "without a face are passed through); Face Restore (GFPGAN) sharpens the face.\n"
                 "7. Video Combine writes output/SpinBot/dubbing_00001_.mp4 with the translated "
                 "subtitles as the first soft track and the original's (Original Subtitles, "
                 "from Transcribe) as a second; set 'subtitle_language' to Translate's target "
                 "and 'subtitle_language_2' to the video's language.\n"
                 "Cancel and queue again: finished sentences and windows are reused.\n\n"
                 "Model files (python install.py --models dubbing):\n"
                 f"- models/whisper/{WHISPER}/, models/translation/{NLLB}/\n"
                 f"- models/tts/{F5_MODEL} + vocab.txt, models/tts/{VOCODER}/\n"
                 f"- models/lipsync/{WAV2LIP}, models/insightface/models/{DETECTOR}/\n"
                 f"- models/facerestore_models/{FACE_RESTORER}", (40, 800), (700, 640)),
    ]
    return Graph("dubbing", nodes, [
        Group("Source", (20, 10, 380, 510), C["inputs"]),
        Group("Transcribe and translate", (400, 10, 380, 760), C["script"]),
        Group("Voice", (780, 10, 400, 980), C["voice"]),
        Group("Lip sync", (1180, 10, 400, 720), C["lipsync"]),
        Group("Restore and subtitles", (1580, 10, 380, 1010), C["upscale"]),
        Group("Output", (1960, 10, 420, 760), C["output"]),
    ])


GRAPHS = [photo_with_audio, direct, guided, story, quote, narrated, profile, dubbing]
