"""Segment fan-out (issue 19): a long narration split into sub-jobs, their MP4s stitched on one
audio clock with exact frame counts per segment and no drift at the joins."""
from __future__ import annotations

import copy
import json
import math
import os
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from spinbot.nodes.render.segments import (DEFAULT_SPLIT_SECONDS, SEGMENTS_METADATA_KEY,
                                           SplitError, StitchError, expand_job, frame_boundaries,
                                           read_audio, read_cues, stitch)
from spinbot.nodes.script.segments import estimate_seconds, split_sentences
from spinbot.nodes.video.combine import combine_to_mp4
from spinbot.nodes.video.encode import mux_mp4
from tests.mp4probe import probe

FPS = 25
RATE = 24000  # F5-TTS / Vocos output rate, kept by Video Combine (an AAC rate)

NARRATION = ("The lighthouse keeper climbed the stairs one last time. Below him the sea was calm. "
             "He had kept the light burning for forty years, through storms that broke the windows "
             "and winters that froze the rails. Tonight a machine would take his place. He lit the "
             "lamp anyway. Ships passed. Nobody knew it was the last night a person watched them, "
             "and that was fine with him.")


# --------------------------------------------------------------------------- splitting

def _job(**kw):
    job = {"id": "week/ep 1", "workflow": "direct",
           "set": {"Narration.narration": NARRATION, "Portrait.image": "me.png",
                   "Voice reference.audio": "me.wav"},
           "files": ["me.png"], "split_seconds": 10}
    job.update(kw)
    return job


def test_split_keeps_whole_sentences_under_the_limit():
    job = _job()
    original = copy.deepcopy(job)
    subs = expand_job(job)
    assert job == original  # the caller's job is not modified
    assert subs is not None and len(subs) >= 3
    sentences = split_sentences(NARRATION, "English")
    regrouped = [s for sub in subs for s in split_sentences(sub["set"]["Narration.narration"])]
    assert regrouped == sentences  # every sentence once, in order, none cut
    for k, sub in enumerate(subs):
        text = sub["set"]["Narration.narration"]
        spoken = sum(estimate_seconds(s) for s in split_sentences(text)) \
            + 0.3 * (len(split_sentences(text)) - 1)
        assert spoken <= 10 + 1e-6
        assert sub["segment"]["estimated_seconds"] == pytest.approx(spoken, abs=1e-3)
        assert sub["id"] == f"week/ep 1.{k}"
        assert sub["segment"] == {**sub["segment"], "parent": "week/ep 1", "index": k,
                                  "count": len(subs), "text": text, "notes": []}
        # other inputs and keys unchanged, the split keys gone (no recursion in the runner)
        assert sub["set"]["Portrait.image"] == "me.png" and sub["files"] == ["me.png"]
        assert "split_seconds" not in sub and "split" not in sub
    prefixes = [s["set"]["Video Combine.filename_prefix"] for s in subs]
    assert len(set(prefixes)) == len(subs)
    assert prefixes[0] == "SpinBot/direct_week_ep_1_part000"
    assert len({s["id"] for s in subs}) == len(subs)


def test_greedy_groups_are_not_needlessly_small():
    subs = expand_job(_job(split_seconds=10))
    texts = [s["set"]["Narration.narration"] for s in subs]
    for a, b in zip(texts, texts[1:]):
        # the next group's first sentence did not fit in this group
        first = split_sentences(b)[0]
        total = sum(estimate_seconds(s) + 0.3 for s in split_sentences(a)) + estimate_seconds(first)
        assert total > 10


def test_a_sentence_longer_than_the_limit_stays_whole_with_a_note(caplog):
    long = ("This single sentence goes on and on, with clause after clause, far beyond the few "
            "seconds that the limit allows for one segment of the narration.")
    job = _job(set={"Narration.narration": f"Short one. {long} Short two."}, split_seconds=3)
    with caplog.at_level("WARNING"):
        subs = expand_job(job)
    texts = [s["set"]["Narration.narration"] for s in subs]
    assert texts == ["Short one.", long, "Short two."]
    assert subs[1]["segment"]["notes"] and "kept whole" in subs[1]["segment"]["notes"][0]
    assert subs[0]["segment"]["notes"] == [] and subs[2]["segment"]["notes"] == []
    assert "kept whole" in caplog.text


@pytest.mark.parametrize("job", [
    {"id": "a", "workflow": "direct", "set": {"Narration.narration": NARRATION}},  # not asked
    {"id": "a", "workflow": "direct", "split": False, "split_seconds": 5,
     "set": {"Narration.narration": NARRATION}},
    {"id": "a", "workflow": "direct", "split": "no", "set": {"Narration.narration": NARRATION}},
    {"id": "a", "workflow": "guided", "split": True},  # the LLM writes the narration
    {"id": "a", "workflow": "photo_with_audio", "split": True},  # 'Narration' is a LoadAudio
    {"id": "a", "workflow": "direct", "split_seconds": 60,  # fits in one group
     "set": {"Narration.narration": "Hello there. This is short."}},
    {"id": "a", "workflow": "direct", "split": True, "set": {"Narration.narration": "  "}},
    {"id": "a", "workflow": "no_such_workflow", "split": True},  # fails alone when rendered
])
def test_jobs_that_are_not_split(job):
    assert expand_job(job) is None


@pytest.mark.parametrize("bad", [0, -2, "abc", float("inf"), float("nan")])
def test_bad_split_seconds_is_a_clear_error(bad):
    with pytest.raises(SplitError, match="split_seconds"):
        expand_job(_job(split_seconds=bad))


def test_split_true_uses_the_default_and_the_story_workflow_splits_story_narration():
    long = " ".join([NARRATION] * 4)  # ~85 s of estimated speech
    subs = expand_job({"id": "s", "workflow": "story", "split": "true",
                       "set": {"Story.narration": long}})
    assert subs and all(set(s["set"]) == {"Story.narration", "Video Combine.filename_prefix"}
                        for s in subs)
    assert all(s["segment"]["estimated_seconds"] <= DEFAULT_SPLIT_SECONDS for s in subs)
    assert subs[0]["set"]["Video Combine.filename_prefix"] == "SpinBot/story_s_part000"
    # the workflow's own narration is split when the job does not set one
    own = expand_job({"id": "t", "workflow": "story", "split_seconds": 6})
    story = json.load(open(os.path.join(os.path.dirname(__file__), "..", "workflows", "api",
                                        "story.json")))["1"]["inputs"]["narration"]
    assert [s for sub in own for s in split_sentences(sub["set"]["Story.narration"])] == \
        split_sentences(story)


def test_node_id_keys_and_a_set_prefix_are_replaced_not_duplicated():
    subs = expand_job(_job(set={"2.narration": NARRATION, "9.filename_prefix": "Shows/ep"}))
    assert all(set(s["set"]) == {"2.narration", "9.filename_prefix"} for s in subs)
    assert subs[1]["set"]["9.filename_prefix"] == "Shows/ep_week_ep_1_part001"


def test_cjk_narration_splits_at_sentence_ends_without_spaces():
    text = "我们今天去公园散步。天气非常好，阳光明媚！孩子们在草地上玩耍。老人们在树下下棋。" \
           "小狗跑来跑去，非常开心。傍晚我们回家了。"
    subs = expand_job({"id": "zh", "workflow": "direct", "split_seconds": 6,
                       "set": {"Narration.narration": text, "Narration.language": "Chinese"}})
    texts = [s["set"]["Narration.narration"] for s in subs]
    assert len(texts) >= 2 and "".join(texts) == text  # joined without spaces, nothing lost
    assert all(t.endswith(("。", "！")) for t in texts)
    assert all(s["segment"]["estimated_seconds"] <= 6 for s in subs)


def test_the_module_imports_without_torch_numpy_or_pyav():
    """The renderer imports it to expand jobs; media libraries load only when stitching."""
    import subprocess
    import sys

    from tests._pack import ROOT

    code = ("import sys, nodes.render.segments as m; "
            "print(sorted(x for x in ('torch', 'numpy', 'av') if x in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- segment MP4s

LEVELS = (40, 130, 220)  # a grey level per segment in the top half of its frames


def _frames(n, level, size=(32, 48)):
    """Top half: the segment's level; bottom half: 8 + 6 * frame index (order after decoding)."""
    h, w = size
    img = np.zeros((n, h, w, 3), np.float32)
    img[:, : h // 2] = level / 255.0
    for i in range(n):
        img[i, h // 2:] = (8 + 6 * i) / 255.0
    return torch.from_numpy(img)


def _audio(seconds, freq, rate=RATE, seed=0):
    """A tone at ``freq`` whose first 50 ms carry a noise burst (a sharp mark to locate joins)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    wave = 0.25 * np.sin(2 * np.pi * freq * t)
    burst = int(0.05 * rate)
    wave[:burst] += np.random.default_rng(seed).uniform(-0.5, 0.5, burst)
    return {"waveform": torch.from_numpy(wave.astype(np.float32))[None, None], "sample_rate": rate}


def _segment(k, seconds, frames, freq, level=None, size=(32, 48), cue=True, fps=FPS):
    srt = f"1\n00:00:00,100 --> 00:00:00,800\nsegment {k}\n" if cue else ""
    result = combine_to_mp4(images=_frames(frames, LEVELS[k] if level is None else level, size),
                            fps=fps, audio=_audio(seconds, freq, seed=k), subtitles=srt,
                            filename_prefix=f"seg/part{k}", preset="ultrafast",
                            metadata={"prompt": json.dumps({"segment": k}),
                                      "workflow": json.dumps({"nodes": [], "k": k})})
    return result.path


def _levels(path, size=(32, 48)):
    """(top level, bottom level) of every decoded frame."""
    h = size[0]
    out = []
    with av.open(path) as c:
        for f in c.decode(c.streams.video[0]):
            a = f.to_ndarray(format="rgb24").astype(float)
            out.append((a[2:h // 2 - 2].mean(), a[h // 2 + 2:-2].mean()))
    return out


def _peak_hz(wave, rate):
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / rate)[int(np.argmax(spec))]


# (seconds of speech, frames given to Video Combine, tone): segment 0 fills whole frames; 1 and 2
# have fewer frames than speech, so Video Combine pads the video (ceil) and keeps the audio at
# its true, frame-unaligned length.
PLAN = [(1.0, 25, 300.0), (1.37, 10, 550.0), (0.93, 5, 900.0)]


@pytest.fixture()
def three_segments():
    return [_segment(k, s, n, f) for k, (s, n, f) in enumerate(PLAN)]


def test_segment_audio_is_read_sample_exactly(three_segments):
    for path, (seconds, _n, _f) in zip(three_segments, PLAN):
        pcm, rate = read_audio(path)
        assert rate == RATE and pcm.shape[0] == 1
        assert pcm.shape[1] == int(round(seconds * RATE))  # priming and padding both gone
        p = probe(path)
        assert p.video_frames == math.ceil(seconds * FPS - 1e-9)
        assert abs(pcm.shape[1] / rate - p.video_frames / FPS) <= 1 / FPS
        # what a plain decode gives is whole 1024-sample AAC frames: the padding must be cut
        with av.open(path) as c:
            raw = sum(f.samples for f in c.decode(c.streams.audio[0]))
        assert raw > pcm.shape[1] and raw % 1024 == 0


def test_three_segments_stitch_on_one_audio_clock(three_segments, spinbot_dirs):
    out = str(spinbot_dirs["output"] / "stitched" / "long.mp4")
    job = {"id": "long", "workflow": "direct", "set": {"Video Combine.preset": "ultrafast"}}
    t0 = time.perf_counter()
    assert stitch(job, three_segments, out) == out
    elapsed = time.perf_counter() - t0

    counts = [int(round(s * RATE)) for s, _n, _f in PLAN]
    starts = np.cumsum([0] + counts)
    total = starts[-1] / RATE
    p = probe(out)
    # ceil: the pack's "pad video with last frame" policy, the picture never ends before speech
    assert p.video_frames == math.ceil(total * FPS - 1e-9) == 83
    assert p.audio_rate == RATE and p.audio_seconds == pytest.approx(total, abs=1e-6)
    assert 0 <= p.video_seconds - p.audio_seconds < 1 / FPS

    bounds = [math.floor(Fraction(int(s), RATE) * FPS + Fraction(1, 2)) for s in starts[:-1]] \
        + [p.video_frames]
    assert bounds == [0, 25, 59, 83]
    levels = _levels(out)
    for k in range(3):
        for i in range(bounds[k], bounds[k + 1]):
            top, bottom = levels[i]
            assert abs(top - LEVELS[k]) < 12, (k, i, top)
            # its own frames in order (Video Combine padded segments 1 and 2 with their last)
            own = min(i - bounds[k], PLAN[k][1] - 1)
            assert abs(bottom - (8 + 6 * own)) < 4, (k, i, bottom)
        # the join is within half a frame of the segment's start on the audio clock
        assert abs(bounds[k] - starts[k] / RATE * FPS) <= 0.5

    pcm, rate = read_audio(out)
    assert pcm.shape[1] == starts[-1]
    joins = []
    for k, path in enumerate(three_segments):
        at = int(starts[k])
        window = pcm[0, at + int(0.1 * rate): at + int(0.5 * rate)]
        assert _peak_hz(window, rate) == pytest.approx(PLAN[k][2], abs=5)
        # locate the segment's noise burst: cross-correlate its own first 50 ms around start_k
        own = read_audio(path)[0][0, : int(0.05 * rate)]
        lo = max(at - 1200, 0)
        region = pcm[0, lo: at + 1200 + len(own)]
        corr = np.correlate(region, own, mode="valid")
        joins.append(lo + int(np.argmax(corr)) - at)
    assert joins == [0, 0, 0]

    assert [(round(a, 3), round(b, 3), t) for a, b, t in p.subtitles] == \
        [(round(s / RATE + 0.1, 3), round(s / RATE + 0.8, 3), f"segment {k}")
         for k, s in enumerate(starts[:-1])]
    assert json.loads(p.metadata["prompt"]) == {"segment": 0}
    assert json.loads(p.metadata["workflow"])["k"] == 0
    listing = json.loads(p.metadata[SEGMENTS_METADATA_KEY])
    assert [(d["first_frame"], d["frames"], d["samples"]) for d in listing] == \
        [(0, 25, 24000), (25, 34, 32880), (59, 24, 22320)]
    assert [os.path.basename(d["source"]) for d in listing] == \
        [os.path.basename(x) for x in three_segments]
    assert os.listdir(os.path.dirname(out)) == ["long.mp4"]  # no partial file left
    print(f"stitch: {p.video_frames} frames in {elapsed:.2f}s")


def test_twenty_segments_do_not_drift(spinbot_dirs):
    n, seconds = 20, 1.37
    paths = [_segment(k, seconds, 5, 300.0 + 40 * k, level=10 + 12 * k, size=(16, 16), cue=False)
             for k in range(n)]
    out = str(spinbot_dirs["output"] / "twenty.mp4")
    t0 = time.perf_counter()
    stitch({"id": "twenty", "workflow": "direct", "stitch_preset": "ultrafast"}, paths, out)
    elapsed = time.perf_counter() - t0
    p = probe(out)
    total = n * seconds
    assert p.video_frames == math.ceil(total * FPS - 1e-9) == 685  # not 20 * 35 = 700
    assert p.audio_seconds == pytest.approx(total, abs=1e-6)
    assert abs(p.video_seconds - p.audio_seconds) < 1 / FPS
    tops = [t for t, _b in _levels(out, size=(16, 16))]
    seg_of = [int(np.argmin([abs(t - (10 + 12 * k)) for k in range(n)])) for t in tops]
    assert seg_of == sorted(seg_of) and set(seg_of) == set(range(n))
    for k in range(n):
        first = seg_of.index(k)
        assert abs(first - k * seconds * FPS) <= 0.5  # every join, the last included
    assert seg_of.index(n - 1) == 651  # round(19 * 1.37 * 25 = 650.75)
    print(f"stitch: {p.video_frames} frames of 20 segments in {elapsed:.2f}s")


def test_a_segment_with_too_few_frames_holds_its_last_and_mono_joins_stereo(spinbot_dirs):
    first = _segment(0, 1.0, 25, 300.0)
    # made with the encoder directly: 10 frames under 1.0 s of stereo audio (a file Video
    # Combine would have padded), so the stitcher must hold the last frame for 15 frames
    short = str(spinbot_dirs["output"] / "short.mp4")
    frames = (_frames(10, LEVELS[1]).numpy() * 255).round().astype(np.uint8)
    t = np.arange(RATE) / RATE
    stereo = np.stack([np.sin(2 * np.pi * 700 * t), np.sin(2 * np.pi * 700 * t)]) * 0.25
    mux_mp4(short, [frames], FPS, 48, 32, audio=(stereo.astype(np.float32), RATE),
            preset="ultrafast")
    out = str(spinbot_dirs["output"] / "held.mp4")
    stitch({"id": "h", "workflow": "direct", "stitch_preset": "ultrafast"}, [first, short], out)
    p = probe(out)
    assert p.video_frames == 50 and p.audio_channels == 2
    assert p.audio_seconds == pytest.approx(2.0, abs=1e-6)
    levels = _levels(out)
    assert all(abs(levels[i][0] - LEVELS[1]) < 12 for i in range(25, 50))
    assert [round((b - 8) / 6) for _t, b in levels[25:50]] == list(range(10)) + [9] * 15
    pcm, _ = read_audio(out)
    assert np.abs(pcm[1, : RATE // 2]).max() > 0.1  # the mono segment plays on both channels
    assert _peak_hz(pcm[0, RATE + 2400: RATE + 12000], RATE) == pytest.approx(700, abs=5)


def test_stitch_refuses_bad_segments_and_leaves_nothing(spinbot_dirs, tmp_path):
    a = _segment(0, 1.0, 25, 300.0)
    b = _segment(1, 1.0, 25, 500.0, size=(16, 16))
    c = _segment(2, 1.0, 30, 500.0, fps=30)
    folder = tmp_path / "stitched"
    out = str(folder / "x.mp4")
    job = {"id": "bad", "workflow": "direct"}
    with pytest.raises(StitchError, match="no segment files"):
        stitch(job, [], out)
    with pytest.raises(StitchError, match="does not exist"):
        stitch(job, [a, str(tmp_path / "missing.mp4")], out)
    with pytest.raises(StitchError, match="16x16.*48x32|one frame size"):
        stitch(job, [a, b], out)
    with pytest.raises(StitchError, match="30 fps.*25 fps"):
        stitch(job, [a, c], out)
    silent = str(tmp_path / "silent.mp4")
    mux_mp4(silent, [(_frames(5, 100).numpy() * 255).astype(np.uint8)], FPS, 48, 32,
            preset="ultrafast")
    with pytest.raises(StitchError, match="no audio track"):
        stitch(job, [a, silent], out)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(open(a, "rb").read()[:2000])
    with pytest.raises(StitchError, match="broken.mp4 is not a readable MP4"):
        stitch(job, [a, str(broken)], out)
    assert not folder.exists() or os.listdir(folder) == []


def test_an_interrupted_stitch_leaves_no_file(three_segments, tmp_path):
    from spinbot.nodes import runtime

    out = tmp_path / "stitched" / "x.mp4"
    runtime.request_interrupt()  # Cancel: raised at the first batch the encoder takes
    try:
        with pytest.raises(runtime.Interrupted):
            stitch({"id": "x", "stitch_preset": "ultrafast"}, three_segments, str(out))
    finally:
        runtime.request_interrupt(False)
    assert os.listdir(out.parent) == []  # neither the MP4 nor its partial file


def test_frame_boundaries_are_exact_rationals():
    # 1000 segments of 1.37 s at 24000 Hz, 30000/1001 fps: no accumulated float error
    counts = [32880] * 1000
    fps = Fraction(30000, 1001)
    bounds = frame_boundaries(counts, RATE, fps)
    assert bounds[0] == 0 and len(bounds) == 1001
    for k in range(1000):
        exact = Fraction(32880 * k, RATE) * fps
        assert abs(bounds[k] - exact) <= Fraction(1, 2)
    assert bounds[-1] == math.ceil(Fraction(32880 * 1000, RATE) * fps)
    assert sum(b - a for a, b in zip(bounds, bounds[1:])) == bounds[-1]


def test_read_cues_returns_what_video_combine_wrote(three_segments):
    cues = read_cues(three_segments[1])
    assert [(round(c.start, 3), round(c.end, 3), c.text) for c in cues] == [(0.1, 0.8, "segment 1")]


# --------------------------------------------------------------------------- real ComfyUI

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
THREE_SENTENCES = "Queued over HTTP today. It works quite well. Thanks for watching this."


@pytest.fixture(scope="module")
def comfy_pair(tmp_path_factory):
    """Two real ComfyUI servers (the renderer's own starter) sharing one tiny model folder."""
    if not COMFYUI_PATH:
        pytest.skip("COMFYUI_PATH is not set")
    from spinbot.nodes.render import servers as S
    from tests import factory

    models = tmp_path_factory.mktemp("comfy-segments-models")
    factory.build(models)
    started = S.start_servers(2, comfy_path=COMFYUI_PATH, models_dir=str(models), log=lambda *_: None)
    yield started
    for server in started:
        server.stop()


def _long_job(tmp_path) -> dict:
    from PIL import Image

    from tests.media import astronaut, speech_wav, tone, write_wav
    from tests.workflow_graphs import REFERENCE_TEXT

    voice, portrait = tmp_path / "voice.wav", tmp_path / "face.png"
    if speech_wav(str(voice), REFERENCE_TEXT) is None:
        write_wav(str(voice), tone(3.5, 22050), 22050)
    Image.fromarray(astronaut(128)).save(portrait)
    # 3 sentences of 1.6 s estimated speech each: 4 s per segment makes groups of 2 (3.5 s) and 1
    return {"id": "long", "workflow": "direct", "split_seconds": 4,
            "set": {"Narration.narration": THREE_SENTENCES, "Portrait.image": str(portrait),
                    "Voice reference.audio": str(voice), "F5-TTS.nfe_steps": 4,
                    "Video Combine.preset": "ultrafast"}}


def _frame_at(path, index):
    with av.open(path) as c:
        for i, f in enumerate(c.decode(c.streams.video[0])):
            if i == index:
                return f.to_ndarray(format="rgb24").astype(float)
    raise IndexError(index)


@pytest.mark.comfyui
def test_long_narration_rendered_as_sub_jobs_in_comfyui_stitches_exactly(comfy_pair, tmp_path):
    """expand_job's sub-jobs rendered by the pack's client on a real ComfyUI (tiny models, each
    segment speaks its own TTS audio, so its length is measured), then stitched."""
    from spinbot.nodes import client as C

    job = _long_job(tmp_path)
    subs = expand_job(job)
    assert [s["set"]["Narration.narration"] for s in subs] == \
        ["Queued over HTTP today. It works quite well.", "Thanks for watching this."]
    api = C.Client(comfy_pair[0].url, timeout=120)
    outputs = []
    for sub in subs:
        assignments = [f"{k}={json.dumps(v)}" for k, v in sub["set"].items()]
        workflow = C.apply_overrides(C.load_workflow(sub["workflow"]), assignments, api.upload)
        entry = api.wait(api.queue(workflow), timeout=900)
        mp4s = [f for f in C.output_files(entry) if f["filename"].endswith(".mp4")]
        assert len(mp4s) == 1 and mp4s[0]["filename"].startswith(f"direct_long_part00{len(outputs)}")
        outputs.append(api.download(mp4s[0], str(tmp_path / "segments")))
    out = str(tmp_path / "long.mp4")
    stitch(job, outputs, out)

    counts = [read_audio(p)[0].shape[1] for p in outputs]
    rate = read_audio(outputs[0])[1]
    seg = [probe(p) for p in outputs]
    for s, n in zip(seg, counts):  # each segment's measured audio is as long as its video
        assert abs(n / rate - s.video_seconds) <= 1 / s.fps
    p = probe(out)
    fps = Fraction(p.fps).limit_denominator(1000)
    total = Fraction(sum(counts), rate)
    assert p.video_frames == math.ceil(total * fps)
    assert p.audio_seconds == pytest.approx(float(total), abs=1e-6)
    assert 0 <= p.video_seconds - p.audio_seconds < 1 / p.fps
    join = math.floor(Fraction(counts[0], rate) * fps + Fraction(1, 2))
    listing = json.loads(p.metadata[SEGMENTS_METADATA_KEY])
    assert [d["first_frame"] for d in listing] == [0, join]
    assert [d["text"] for d in listing] == [s["segment"]["text"] for s in subs]
    # the frames on either side of the join are segment 0's and segment 1's own
    first_of_1 = _frame_at(out, join)
    assert np.abs(first_of_1 - _frame_at(outputs[1], 0)).mean() < 4
    assert np.abs(_frame_at(out, join - 1) - _frame_at(outputs[0], join - 1)).mean() < 4
    # subtitles: every segment's cues, segment 1's shifted to its start on the audio clock
    assert len(p.subtitles) == len(seg[0].subtitles) + len(seg[1].subtitles)
    shifted = p.subtitles[len(seg[0].subtitles)]
    assert shifted[0] == pytest.approx(seg[1].subtitles[0][0] + counts[0] / rate, abs=2e-3)
    assert shifted[2] == seg[1].subtitles[0][2]
    assert json.loads(p.metadata["prompt"]) == json.loads(seg[0].metadata["prompt"])
    print(f"segments: {counts} samples at {rate} Hz, own frames {[s.video_frames for s in seg]}; "
          f"stitched {p.video_frames} frames, join at frame {join} "
          f"(audio boundary {float(Fraction(counts[0], rate) * fps):.3f}), "
          f"A/V {p.video_seconds - p.audio_seconds:+.4f}s")


def _history(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url + "/history", timeout=30) as r:
        return len(json.loads(r.read()))


@pytest.mark.comfyui
def test_long_narration_split_over_two_servers_by_the_batch_renderer(comfy_pair, tmp_path):
    """Acceptance (issue 19): the renderer's Ray batch runner fans a long narration out as two
    sub-jobs, one per server, and stitches them to an MP4 with the exact frame count."""
    ray = pytest.importorskip("ray")
    from spinbot.nodes.render import engine as E
    from spinbot.nodes.render import jobs as J

    job = _long_job(tmp_path)
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(json.dumps(job) + "\n")
    results = J.results_dir(str(batch))
    urls = [s.url for s in comfy_pair]
    before = [_history(u) for u in urls]
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    try:
        records = E.run_batch(J.read_jobs(str(batch)), urls, results, quiet=True, per_server=1)
    finally:
        if own_ray:
            ray.shutdown()
    assert [(r["id"], r["status"]) for r in records] == [("long", "ok")], records
    assert [_history(u) - b for u, b in zip(urls, before)] == [1, 1]  # one segment per server
    out = records[0]["output"]
    parts = [os.path.join(results, f"long.{k}.mp4") for k in range(2)]
    counts = [read_audio(p)[0].shape[1] for p in parts]
    rate = read_audio(parts[0])[1]
    p = probe(out)
    fps = Fraction(p.fps).limit_denominator(1000)
    total = Fraction(sum(counts), rate)
    assert p.video_frames == math.ceil(total * fps)
    assert p.audio_seconds == pytest.approx(float(total), abs=1e-6)
    assert 0 <= p.video_seconds - p.audio_seconds < 1 / p.fps
    listing = json.loads(p.metadata[SEGMENTS_METADATA_KEY])
    assert [d["first_frame"] for d in listing] == \
        [0, math.floor(Fraction(counts[0], rate) * fps + Fraction(1, 2))]
    assert sum(d["frames"] for d in listing) == p.video_frames
    assert [c[2] for c in p.subtitles] == [c[2] for q in parts for c in probe(q).subtitles]
    print(f"batch: segments {counts} samples, stitched {p.video_frames} frames, "
          f"A/V {p.video_seconds - p.audio_seconds:+.4f}s")
