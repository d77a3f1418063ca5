"""Faults a fresh user found in the new stages (part d): a 1x1 still breaks the video store,
segments out of order or past the end lose their scene or transition without a word (or with a
misleading one), transitions of 1 frame or less silently do nothing, and segments with NaN times
crash with a bare ``int(nan)`` traceback. Each quoted input is a test here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinbot.nodes.script.segments import Segment, SegmentError, coerce_segments
from spinbot.nodes.scene.nodes_scene import SpinBotCameraMotion, SpinBotTransitions
from spinbot.nodes.overlay.nodes_overlay import SpinBotTextOverlay
from spinbot.nodes.video.nodes_video import SpinBotImagesToVideo
from spinbot.nodes.video.store import VideoWriter

CAMERA = dict(fps=25.0, width=0, height=0, motion="auto", zoom=0.15, easing="ease in-out",
              duration_seconds=1.0)
OVERLAY = dict(font="default", font_size=0.2, wrap_width=0.8, position="center",
               color="#ffffff", outline=0.06, shadow=0.05, fade_in_seconds=0.1,
               fade_out_seconds=0.1, start_seconds=0.0, end_seconds=0.0, timing="per segment")


def segs(*times):
    return [Segment(k, f"s{k}", a, b) for k, (a, b) in enumerate(times)]


def video(n=10, h=8, w=8, fps=25.0):
    images = torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(n))
    return SpinBotImagesToVideo().convert(images, fps)[0]


# --- 1. a 1x1 still: the store rejected its own chunk as "damaged (Fortran order)" ----------

def test_camera_motion_over_a_1x1_image():
    image = torch.rand(1, 1, 1, 3)
    out, report = SpinBotCameraMotion().animate(image, **CAMERA)
    assert out.frame_count == 25 and (out.width, out.height) == (1, 1)
    frames = out.read(0, 25)
    assert frames.shape == (25, 1, 1, 3)
    # A 1x1 still covers every zoom window: every frame is that pixel.
    want = np.floor(image[0, 0, 0].numpy() * 255 + 0.5)
    assert np.abs(frames.astype(int) - want).max() <= 1


def test_writer_stores_fortran_ordered_frames():
    frames = np.asfortranarray(np.arange(5 * 1 * 1 * 3, dtype=np.uint8).reshape(5, 1, 1, 3))
    assert frames.flags.f_contiguous and not frames.flags.c_contiguous
    with VideoWriter("fortran-order-test", 25.0) as writer:
        writer.write(frames)
        stored = writer.finish()
    np.testing.assert_array_equal(stored.read(0, 5), frames)


# --- 2. segments out of order / after the end ----------------------------------------------

def test_camera_motion_says_an_out_of_order_segment_is_out_of_order():
    _out, report = SpinBotCameraMotion().animate(torch.rand(3, 16, 24, 3), segments=segs(
        (0, 1), (2, 3), (1, 2)), **CAMERA)
    # Segment 2 (1 s) starts before segment 1 (2 s): segment 1 is the one left without frames.
    line = next(l for l in report.splitlines() if "segment 1:" in l)
    assert "no frames (segment 2 starts at 1 s, not after this one's 2 s: out of order" in line


def test_camera_motion_says_a_segment_after_the_audio_starts_after_the_end():
    audio = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
    _out, report = SpinBotCameraMotion().animate(torch.rand(2, 16, 24, 3), segments=segs(
        (0, 1), (5, 6)), audio=audio, **CAMERA)
    line = next(l for l in report.splitlines() if "segment 1:" in l)
    assert "no frames" in line and "video's end" in line


@pytest.mark.parametrize("times, says", [
    (((0, 0.2), (0.3, 0.4), (0.1, 0.2)), "segment 2 starts at 0.1 s, before segment 1"),
    (((0, 0.2), (5, 6)), "segment 1 starts at 5 s, at or after the video's end"),
])
def test_transitions_name_segments_that_get_no_transition(times, says):
    _out, report = SpinBotTransitions().transition(video(), "crossfade", 0.5,
                                                   segments=segs(*times))
    assert says in report


@pytest.mark.parametrize("transition", ["crossfade", "fade through black"])
def test_a_window_too_short_to_change_a_frame_is_reported_not_hidden(transition):
    v = video()
    out, report = SpinBotTransitions().transition(v, transition, 0.04,
                                                  segments=segs((0, 0.2), (0.2, 0.4)))
    np.testing.assert_array_equal(out.read(0, 10), v.read(0, 10))
    assert "boundaries at frames [5]" in report
    assert "boundary at frame 5: a 1-frame window changes no frame" in report


def test_windows_shrunk_to_nothing_still_list_their_boundaries():
    _out, report = SpinBotTransitions().transition(
        video(), "crossfade", 10.0, segments=segs((0, 0.04), (0.04, 0.08), (0.08, 0.4)))
    assert "boundaries at frames [1, 2]" in report
    assert "boundary at frame 1: a 1-frame window changes no frame" in report


# --- 3. segments with NaN / inf times --------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_segment_times_are_a_clear_error(bad):
    with pytest.raises(SegmentError, match="segment 0 has a time that is not a finite number"):
        coerce_segments(segs((0.0, bad), (0.0, 0.1)))
    with pytest.raises(SegmentError, match="not a finite number"):
        coerce_segments([{"index": 0, "text": "a", "start": bad, "end": 1.0}])


def test_text_overlay_per_segment_with_a_nan_end_is_a_clear_error():
    with pytest.raises(SegmentError, match="not a finite number"):
        SpinBotTextOverlay().overlay(video(), "a\n\nb", segments=segs((0.0, math.nan),
                                                                      (0.0, 0.1)), **OVERLAY)


# --- 4. Translate with the target language equal to the source --------------------------------

@pytest.fixture(scope="module")
def nllb(tmp_path_factory):
    from tests import factory
    root = tmp_path_factory.mktemp("nllb-models")
    factory.build(root, only=["translation"])
    return root


def test_same_language_still_applies_forced_glossary_translations(nllb, monkeypatch):
    from spinbot.nodes.dubbing.nodes_dubbing import SpinBotTranslate
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(nllb))
    segments = [Segment(0, "Colour me surprised.", 0.0, 1.0),
                Segment(1, "Nothing to change here.", 1.0, 2.0)]
    out, text, report = SpinBotTranslate().run(segments, "nllb-200-distilled-600M", "English",
                                               "English", "colour = color\nSpinBot", 200)
    assert [s.text for s in out] == ["color me surprised.", "Nothing to change here."]
    assert [(s.start, s.end) for s in out] == [(0.0, 1.0), (1.0, 2.0)]
    assert "text copied unchanged except glossary terms (1 segment(s))" in report


# --- 5. messages that named the wrong thing --------------------------------------------------

@pytest.fixture(scope="module")
def restore_models(tmp_path_factory):
    from tests import factory
    root = tmp_path_factory.mktemp("restore-models")
    factory.build(root, only=["facerestore_models", "insightface"])
    return root


def test_face_restore_nan_frames_do_not_blame_the_upscaler(restore_models, monkeypatch):
    from spinbot.nodes.media import MediaError
    from spinbot.nodes.restore.nodes_restore import SpinBotFaceRestore, SpinBotFaceRestoreModel
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(restore_models))
    model = SpinBotFaceRestoreModel().load("RestoreFormer.pth")[0]
    images = torch.rand(3, 16, 16, 3)
    images[1, 2, 3, 0] = math.nan
    with pytest.raises(MediaError) as caught:
        SpinBotFaceRestore().restore(model, "buffalo_l", 0.8, True, 0.5, "auto", 4,
                                     images=images)
    message = str(caught.value)
    assert "frame(s) 1 contain NaN" in message and "face restoration was not run" in message
    assert "upscaler" not in message


def test_a_lora_name_over_120_characters_is_told_the_limit():
    from spinbot.nodes.identity.kohya import LoRAFileError, safe_file_name
    assert safe_file_name("a" * 120) == "a" * 120 + ".safetensors"
    with pytest.raises(LoRAFileError, match="at most 120 letters"):
        safe_file_name("a" * 121)
    # Unicode letters are fine; folders are not.
    assert safe_file_name("Ünïcødé 名前") == "Ünïcødé 名前.safetensors"
    for bad in ("my/../../x", "a\\b", "/abs/path", ".."):
        with pytest.raises(LoRAFileError, match="no folders"):
            safe_file_name(bad)


# --- 6. Dub Voice: Whisper's music marks ('♪') failed the whole dub -------------------------

@pytest.fixture(scope="module")
def tts_models(tmp_path_factory):
    from tests import factory
    root = tmp_path_factory.mktemp("tts-models")
    factory.build(root, only=["tts"])
    return root


def test_dub_voice_leaves_music_mark_segments_to_the_original(tts_models, monkeypatch):
    from spinbot.nodes.dubbing.nodes_dubbing import SpinBotDubVoice
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(tts_models))
    rate = 24000
    n = 8 * rate
    gen = torch.Generator().manual_seed(0)
    gate = (torch.sin(torch.arange(n) / rate * 2 * math.pi * 3) > 0).float()
    original = {"waveform": (0.1 * torch.randn(n, generator=gen) * gate)[None, None],
                "sample_rate": rate}
    times = [(0.5, 3.5), (4.0, 6.0), (6.0, 7.5)]
    source = [Segment(k, t, a, b, estimated=False)
              for k, (t, (a, b)) in enumerate(zip(["hallo da", "♪", "auf wiedersehen"], times))]
    dub = [Segment(k, t, a, b, estimated=False)
           for k, (t, (a, b)) in enumerate(zip(["hello there", "♪", "good bye"], times))]
    speech, segments, report = SpinBotDubVoice().speak(
        dub, original, "F5TTS_v1_Base/model_1250000.safetensors", "vocos-mel-24khz", 4, 2.0,
        -1.0, 0, 1.3, 1.25, original_segments=source)
    wave = speech["waveform"][0, 0]
    assert wave.shape[-1] == n  # the speech track is as long as the original
    assert [s.text for s in segments] == ["hello there", "good bye"]
    assert "segment 2 ('♪') skipped: no words to speak" in report
    assert float(wave[4 * rate:6 * rate].abs().max()) == 0.0  # nothing spoken over the music
    assert float(wave[int(0.5 * rate):int(3.5 * rate)].abs().max()) > 0.0


def test_dub_mix_does_not_duck_music_mark_segments():
    from spinbot.nodes.dubbing.nodes_dubbing import SpinBotDubMix
    rate = 16000
    t = torch.arange(6 * rate) / rate
    # 1 kHz lies inside the ducked speech band: a ducked stretch would be 24 dB down.
    original = {"waveform": (0.3 * torch.sin(2 * math.pi * 1000.0 * t))[None, None],
                "sample_rate": rate}
    silence = {"waveform": torch.zeros(1, 1, 6 * rate), "sample_rate": rate}
    segments = [Segment(0, "hello", 0.5, 2.0), Segment(1, "♪", 2.5, 5.5)]
    audio, report = SpinBotDubMix().mix(original, silence, segments, 24.0, 4.0, 0.05, 0.3)
    wave = audio["waveform"][0, 0]

    def rms_db(a, b):
        return 20 * math.log10(float(wave[int(a * rate):int(b * rate)].pow(2).mean().sqrt()) / 0.3
                               * math.sqrt(2))

    assert abs(rms_db(3.0, 5.0)) < 0.1  # the music under '♪' is untouched
    assert rms_db(1.0, 1.5) < -20  # the speech under 'hello' is ducked
    assert ("segment 1 ('♪', 2.50-5.50 s) has no words (music or sound marks): not ducked"
            in report)


# --- 7. Persian text lost its zero-width non-joiner -------------------------------------------

def test_text_overlay_keeps_the_zero_width_non_joiner_of_persian():
    from PIL import features

    from spinbot.nodes.overlay import text as overlay_text
    font = overlay_text.load_font(overlay_text.font_path("default"), 40)
    word = "می\u200cخواهم"  # 'I want': mi + khaham, NOT joined across the ZWNJ
    assert overlay_text.drawable_text(word, font) == (word, False, ())
    # Other format characters still go; a line of only a ZWNJ is nothing to draw.
    assert overlay_text.drawable_text("a\u200bb\u200fc\u200dd", font)[0] == "abcd"
    assert overlay_text.drawable_text("\u200c", font)[0] == ""
    if not features.check("raqm"):
        pytest.skip("Pillow without raqm does not shape Arabic script")
    v = video(n=2, h=64, w=160)
    whole = dict(OVERLAY, timing="whole video", fade_in_seconds=0.0, fade_out_seconds=0.0)
    with_zwnj = SpinBotTextOverlay().overlay(v, word, **whole)[0].read(0, 2)
    joined = SpinBotTextOverlay().overlay(v, word.replace("\u200c", ""), **whole)[0].read(0, 2)
    assert not np.array_equal(with_zwnj, joined)


# --- 8. fades longer than the text kept it from ever being fully visible ----------------------

@pytest.mark.parametrize("fade", [0.5, 100.0])
def test_fades_longer_than_the_text_shrink_so_it_is_fully_visible(fade):
    from spinbot.nodes.overlay.text import TextEvent
    event = TextEvent(None, 0, 10, fade, fade, 25.0)  # 0.4 s shown, fades of 2 x fade
    levels = [event.opacity(k) for k in range(10)]
    # Frame centre 4.5 of a 5-frame ramp (before: 0.36 for 0.5 s fades, 0.002 for 100 s).
    assert max(levels) == pytest.approx(0.9)
    assert levels == levels[::-1]  # equal fades stay mirror images
    assert levels[0] < 0.2 and levels[-1] < 0.2  # still a fade in and out
    v = video(n=10, h=48, w=96)
    whole = dict(OVERLAY, timing="whole video", fade_in_seconds=fade, fade_out_seconds=fade,
                 color="#ff0000", outline=0.0, shadow=0.0)
    out, report = SpinBotTextOverlay().overlay(v, "HI", **whole)
    assert f"(fades of {fade:g} + {fade:g} s shortened to fit the 0.40 s the text is shown)" \
        in report
    assert "fade in 0.2 s, fade out 0.2 s" in report


def test_fades_that_fit_are_unchanged():
    from spinbot.nodes.overlay.text import TextEvent
    event = TextEvent(None, 0, 100, 1.0, 1.0, 25.0)
    assert event.fade_frames() == (25.0, 25.0)
    assert event.opacity(12) == pytest.approx(12.5 / 25) and event.opacity(50) == 1.0


def test_audio_bed_fades_longer_than_the_bed_shrink_so_it_reaches_its_level():
    from spinbot.nodes.audio.bed import fade_gain
    rate = 48000
    gain = fade_gain(3 * rate, rate, 2.0, 3.0)  # the node's default fades on a 3 s clip
    assert gain.max() > 0.999  # was 0.6 (-4.4 dB) where the two ramps crossed
    assert int(np.argmax(gain)) == pytest.approx(1.2 * rate, abs=2)  # the 2:3 ratio is kept
    assert gain[0] == 0.0 and gain[-1] < 1e-4
    fitting = fade_gain(10 * rate, rate, 2.0, 3.0)  # fades that fit are unchanged
    assert fitting[rate] == pytest.approx(0.5) and fitting[5 * rate] == 1.0
    assert fitting[int(8.5 * rate)] == pytest.approx(0.5, abs=1e-4)


def test_audio_bed_report_says_the_fades_were_shortened():
    from spinbot.nodes.audio.nodes_audio import SpinBotAudioBed
    rate = 24000
    t = torch.arange(rate) / rate
    voice = {"waveform": (0.3 * torch.sin(2 * math.pi * 220 * t))[None, None],
             "sample_rate": rate}
    node = SpinBotAudioBed()
    result = getattr(node, node.FUNCTION)(voice, "pink noise", -18.0, 10.0, 0.1, 0.4, 2.0, 3.0,
                                          "loop", -14.0, 2.0, 0)
    report = result[1]
    assert "fades: 2 s in + 3 s out shortened to 1.20 + 1.80 s to fit the 3.00 s bed" in report


# --- 9. per-segment text blocks: a blank line of no-break spaces, overlapping segments ---------

@pytest.mark.parametrize("blank", ["\u00a0", " \u00a0\t", "\u3000", "\u2007"])
def test_a_line_of_unicode_spaces_separates_text_blocks(blank):
    from spinbot.nodes.overlay.nodes_overlay import split_blocks
    assert split_blocks(f"first\n{blank}\nsecond") == ["first", "second"]
    assert split_blocks("one\ntwo") == ["one\ntwo"]  # a single line break is not a block break
    _out, report = SpinBotTextOverlay().overlay(video(n=25), f"a\n{blank}\nb",
                                                segments=segs((0, 0.5), (0.5, 1.0)), **OVERLAY)
    assert 'text 1: 1 line(s) drawn "a"' in report and 'text 2: 1 line(s) drawn "b"' in report
    assert "text block(s) for" not in report


def test_overlapping_segments_say_their_texts_are_drawn_over_each_other():
    _out, report = SpinBotTextOverlay().overlay(video(n=25), "a\n\nb",
                                                segments=segs((0, 0.6), (0.3, 1.0)), **OVERLAY)
    assert "blocks 1 and 2 are drawn over each other on frames 8-14" in report
    _out, report = SpinBotTextOverlay().overlay(video(n=25), "a\n\nb",
                                                segments=segs((0, 0.5), (0.5, 1.0)), **OVERLAY)
    assert "drawn over each other" not in report


def test_a_scene_prompt_line_of_only_a_zero_width_space_is_blank():
    from spinbot.nodes.script.nodes_script import SpinBotDirectScript
    result = SpinBotDirectScript().make("One. Two. Three.", "English", 2.5, 10.0,
                                        scene_prompts="a cat\n\u200b\na dog\n\ufeff\na bird")
    result = result.get("result", result) if isinstance(result, dict) else result
    script = next(x for x in result if hasattr(x, "segments"))
    assert [s.scene for s in script.segments] == ["a cat", "a dog", "a bird"]
