"""SpinBot Load Video and core VIDEO acceptance (nodes/video/load.py), without ComfyUI.

Test videos are made here with PyAV: frames whose index is written into two stripes of grey
(so every decoded frame says which source frame it is), a moving square, and a tone per channel.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError
from spinbot.nodes.video import load as vl
from spinbot.nodes.video.nodes_video import (SpinBotImagesToVideo, SpinBotLoadVideo,
                                             SpinBotVideoCombine, SpinBotVideoToCoreVideo,
                                             SpinBotVideoToImages)
from spinbot.nodes.video.store import SpinBotVideo
from tests._pack import ROOT

W, H = 96, 64


def pattern(i: int, width: int = W, height: int = H) -> np.ndarray:
    """Frame ``i`` (index mod 256): top stripes give i // 16 and i % 16 as grey levels 16k+8, a white
    8x8 square moves 2 px per frame over a dark gradient."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = (np.arange(width, dtype=np.uint8) // 4 + 20)[None, :, None]
    frame[:8, : width // 2] = (i % 256 // 16) * 16 + 8
    frame[:8, width // 2:] = (i % 16) * 16 + 8
    x = (2 * i) % (width - 8)
    frame[16:24, x:x + 8] = 250
    return frame


def index_of(frame: np.ndarray) -> int:
    hi = int(np.median(frame[1:3, 4: frame.shape[1] // 2 - 4]))
    lo = int(np.median(frame[1:3, frame.shape[1] // 2 + 4: -4]))
    return (hi // 16) * 16 + lo // 16


def tones(seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32 [C, T]: channel c a sine of its own, amplitude 0.3 (the 4th, a 5.1 file's LFE,
    low: AAC low-passes that channel at 120 Hz)."""
    t = np.arange(int(round(seconds * rate))) / rate
    freqs = (220, 330, 440, 55, 660, 770)
    return np.stack([0.3 * np.sin(2 * np.pi * freqs[c] * t) for c in range(channels)]
                    ).astype(np.float32)


def write_video(path, n: int, fps=25, times_ms: list[int] | None = None,
                audio: tuple[int, int] | None = (44100, 2), size=(W, H), lossless=True,
                rotate: int = 0, gop: int = 250) -> np.ndarray | None:
    """Encode ``n`` pattern frames (at ``times_ms`` for a VFR file) + tones; returns the audio."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuv444p" if lossless else "yuv420p"
        v.options = {"qp": "0", "g": str(gop)} if lossless else {"crf": "23", "g": str(gop)}
        if times_ms is not None:
            v.codec_context.time_base = Fraction(1, 1000)
            v.time_base = Fraction(1, 1000)
        wave = None
        if audio is not None:
            rate, channels = audio
            layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
            a = c.add_stream("aac", rate=rate)
            a.layout = layout
            seconds = (times_ms[-1] + 40) / 1000 if times_ms is not None else n / fps
            wave = tones(seconds, rate, channels)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
            if times_ms is not None:
                f.pts = times_ms[i]
                f.time_base = Fraction(1, 1000)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if wave is not None:
            for st in range(0, wave.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, st:st + 1024]),
                                                format="fltp", layout=layout)
                af.sample_rate, af.pts = rate, st
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    if rotate:
        rotated = str(path) + ".rot.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-c", "copy",
                        "-metadata:s:v:0", f"rotate={rotate}", rotated], check=True)
        os.replace(rotated, str(path))
    return wave


def _load(name, **kw):
    return vl.load_video_file(name, vl.LoadSettings(**kw))


def _best_lag_error(got: np.ndarray, want: np.ndarray, max_lag: int = 64) -> tuple[int, float]:
    """Lag (samples) and relative RMS error of ``got`` against ``want`` at its best alignment."""
    n = min(got.shape[-1], want.shape[-1]) - 2 * max_lag
    best = (0, math.inf)
    for lag in range(-max_lag, max_lag + 1):
        g = got[..., max_lag + lag: max_lag + lag + n]
        w = want[..., max_lag: max_lag + n]
        err = float(np.sqrt(np.mean((g - w) ** 2)) / np.sqrt(np.mean(w ** 2)))
        if err < best[1]:
            best = (lag, err)
    return best


def test_loads_frames_fps_size_and_audio_exactly(spinbot_dirs):
    wave = write_video(spinbot_dirs["input"] / "clip.mp4", 50, fps=25, audio=(44100, 2))
    node = SpinBotLoadVideo()
    video, audio, fps, count, report = node.load("clip.mp4", 0.0, 0.0, 0.0, 0)
    assert isinstance(video, SpinBotVideo)
    assert (count, fps, video.width, video.height) == (50, 25.0, W, H)
    frames = video.read()
    assert [index_of(f) for f in frames] == list(range(50))
    want = np.stack([pattern(i) for i in range(50)]).astype(np.int16)
    err = np.abs(frames.astype(np.int16) - want)
    assert err.mean() < 1.0 and err.max() <= 4, (err.mean(), err.max())  # yuv444 qp0: rounding
    w = audio["waveform"]
    assert audio["sample_rate"] == 44100 and w.shape == (1, 2, 88200)
    assert video.audio is not None and torch.equal(video.audio["waveform"], w)
    lag, rel = _best_lag_error(w[0].numpy(), wave)
    assert lag == 0 and rel < 0.1, (lag, rel)  # AAC, in sync
    assert "50 frames 96x64 @ 25 fps" in report and "44100 Hz, 2 channels" in report


def test_start_and_max_seconds_are_exact_on_frames_and_samples(spinbot_dirs):
    # key frames at most 12 apart: the start seeks to one after frame 0, decoding up to 30 unseen
    wave = write_video(spinbot_dirs["input"] / "clip.mp4", 100, fps=25, audio=(48000, 1), gop=12)
    with av.open(str(spinbot_dirs["input"] / "clip.mp4")) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert any(12 <= k < 30 for k in keys), keys
    loaded = _load("clip.mp4", start_seconds=1.2, max_seconds=2.0)
    frames = loaded.video.read()
    assert [index_of(f) for f in frames] == list(range(30, 80))
    w = loaded.video.audio["waveform"][0].numpy()
    assert w.shape == (1, 96000)
    lag, rel = _best_lag_error(w, wave[:, 57600:57600 + 96000])
    assert lag == 0 and rel < 0.1, (lag, rel)
    # to the end from a start; max past the end stops at the end
    tail = _load("clip.mp4", start_seconds=3.0, max_seconds=10.0).video
    assert [index_of(f) for f in tail.read()] == list(range(75, 100))
    with pytest.raises(MediaError, match="no frames at or after start_seconds 9"):
        _load("clip.mp4", start_seconds=9.0)


def test_variable_frame_rate_is_placed_on_a_constant_clock(spinbot_dirs):
    # 0-1 s at 25 fps, then 1-2 s at 10 fps, then a burst at 50 fps
    times = [40 * i for i in range(25)] + [1000 + 100 * i for i in range(10)] + \
            [2000 + 20 * i for i in range(23)]
    write_video(spinbot_dirs["input"] / "vfr.mp4", len(times), times_ms=times, audio=(44100, 2))
    loaded = _load("vfr.mp4", force_fps=25.0)
    video = loaded.video
    end = times[-1] + 40  # the muxer gives the last frame the stream's nominal 1/25 s
    assert video.fps == 25.0
    assert video.frame_count == math.floor(end / 40 + 0.5)
    got = [index_of(f) for f in video.read()]
    # slot n shows the last frame whose time rounds to slot n or earlier
    want = [max(i for i, t in enumerate(times) if math.floor(t / 40 + 0.5) <= n)
            for n in range(video.frame_count)]
    assert got == want
    dup = sum(1 for a, b in zip(want, want[1:]) if a == b)
    dropped = len(times) - len(set(want))
    assert f"{dup} duplicated, {dropped} dropped" in loaded.text()
    assert dup > 0 and dropped > 0
    assert video.audio["waveform"].shape[-1] == round(video.frame_count / 25 * 44100)
    if shutil.which("ffmpeg"):  # ffmpeg's fps filter picks the same frames
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(spinbot_dirs["input"] / "vfr.mp4"),
                              "-vf", "fps=25", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout
        ref = np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)
        assert [index_of(f) for f in ref] == got


def test_force_fps_matches_ffmpeg_and_source_rate_without_it(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "c.mp4", 60, fps=30, audio=None)
    same = _load("c.mp4").video
    assert same.frame_count == 60 and same.fps == 30.0
    down = _load("c.mp4", force_fps=12.0)
    got = [index_of(f) for f in down.video.read()]
    assert len(got) == 24  # 2 s at 12 fps
    assert got == [max(i for i in range(60) if math.floor(i / 30 * 12 + 0.5) <= n)
                   for n in range(24)]
    assert "30.000 fps source resampled to 12 fps" in down.text()


def test_no_audio_gives_silence_of_the_video_length(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "mute.mp4", 30, fps=25, audio=None)
    video, audio, _fps, count, report = SpinBotLoadVideo().load("mute.mp4", 0.0, 0.0, 0.0, 0)
    assert video.audio is None and count == 30
    assert audio["waveform"].shape[-1] == round(30 / 25 * 48000)
    assert float(audio["waveform"].abs().max()) == 0.0
    assert "no audio stream" in report


def test_surround_audio_keeps_all_channels(spinbot_dirs):
    wave = write_video(spinbot_dirs["input"] / "surround.mp4", 25, fps=25, audio=(48000, 6))
    loaded = _load("surround.mp4")
    w = loaded.video.audio["waveform"][0].numpy()
    assert w.shape == (6, 48000) and loaded.video.audio["sample_rate"] == 48000
    for c in range(6):  # each channel its own tone, in place
        lag, rel = _best_lag_error(w[c], wave[c])
        assert lag == 0 and rel < 0.15, (c, lag, rel)
    assert "6 channels (5.1" in loaded.text()


def test_max_side_scales_and_rotation_is_applied(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "big.mp4", 10, fps=25, audio=None, size=(192, 128))
    small = _load("big.mp4", max_side=96).video
    assert (small.width, small.height) == (96, 64)
    assert [index_of(f) for f in small.read()] == list(range(10))
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg CLI needed to tag a rotation")
    write_video(spinbot_dirs["input"] / "rot.mp4", 5, fps=25, audio=None, rotate=90)
    loaded = _load("rot.mp4")
    assert (loaded.video.width, loaded.video.height) == (H, W)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(spinbot_dirs["input"] / "rot.mp4"),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout  # ffmpeg autorotates
    ref = np.frombuffer(raw, np.uint8).reshape(-1, W, H, 3)
    err = np.abs(loaded.video.read().astype(np.int16) - ref.astype(np.int16))
    assert err.mean() < 1.0, err.mean()
    assert "rotated 90 degrees" in loaded.text() or "rotated 270 degrees" in loaded.text()


def test_reload_reuses_and_a_changed_file_loads_again(spinbot_dirs):
    path = spinbot_dirs["input"] / "clip.mp4"
    write_video(path, 20, audio=(44100, 1))
    first = _load("clip.mp4")
    stamp = SpinBotLoadVideo.IS_CHANGED(video="clip.mp4")
    again = _load("clip.mp4")
    assert not first.reused and again.reused and again.video.key == first.video.key
    assert "reused the stored copy" in again.text()
    assert _load("clip.mp4", max_seconds=0.4).video.key != first.video.key  # settings in the key
    write_video(path, 30, audio=(44100, 1))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert SpinBotLoadVideo.IS_CHANGED(video="clip.mp4") != stamp
    changed = _load("clip.mp4")
    assert not changed.reused and changed.video.frame_count == 30


@pytest.mark.parametrize("name", ["../clip.mp4", "/etc/passwd", "sub/../../clip.mp4",
                                  "..\\clip.mp4", "C:/clip.mp4"])
def test_paths_leaving_the_input_folder_are_refused(spinbot_dirs, name):
    write_video(spinbot_dirs["input"].parent / "clip.mp4", 5, audio=None)
    with pytest.raises(MediaError, match="refused"):
        _load(name)
    assert "refused" in SpinBotLoadVideo.VALIDATE_INPUTS(video=name)


def test_subfolder_and_listing(spinbot_dirs):
    (spinbot_dirs["input"] / "clips").mkdir()
    write_video(spinbot_dirs["input"] / "clips" / "a.mp4", 5, audio=None)
    write_video(spinbot_dirs["input"] / "b.mov", 5, audio=None)
    (spinbot_dirs["input"] / "notes.txt").write_text("x")
    assert SpinBotLoadVideo.VALIDATE_INPUTS(video="clips/a.mp4") is True
    assert _load("clips/a.mp4").video.frame_count == 5
    spec = SpinBotLoadVideo.INPUT_TYPES()["required"]["video"]
    assert spec[0] == ["b.mov"] and spec[1]["video_upload"] is True


def test_unreadable_and_missing_files_give_clear_errors(spinbot_dirs):
    (spinbot_dirs["input"] / "broken.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match=r"video file 'broken.mp4' cannot be read as a video"):
        _load("broken.mp4")
    with pytest.raises(MediaError, match=r"'gone.mp4' is not in ComfyUI's input folder"):
        _load("gone.mp4")
    with av.open(str(spinbot_dirs["input"] / "audio_only.m4a"), "w") as c:
        a = c.add_stream("aac", rate=24000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(tones(0.5, 24000, 1), format="fltp", layout="mono")
        f.sample_rate, f.pts = 24000, 0
        c.mux(a.encode(f))
        c.mux(a.encode(None))
    with pytest.raises(MediaError, match="'audio_only.m4a' has no video stream"):
        _load("audio_only.m4a")
    assert not [d for d in os.listdir(runtime.temp_dir()) if "partial" in d]


_MEMORY_SCRIPT = r"""
import json, os, sys, resource
sys.path.insert(0, sys.argv[1])
from tests._pack import load_pack
load_pack()
from spinbot.nodes.video import load as vl, store
store.CHUNK_BYTES = 4 << 20  # small chunks: what the writer holds stays small
def rss():
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(("VmRSS", "VmHWM"))}
vl.load_video_file("warm.mp4", vl.LoadSettings())  # imports, codec and thread pools warmed
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
base = rss()["VmRSS"]
video = vl.load_video_file("long.mp4", vl.LoadSettings()).video
print(json.dumps({"growth": rss()["VmHWM"] - base, "frames": video.frame_count,
                  "decoded": video.frame_count * video.width * video.height * 3}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_long_video_is_streamed_with_bounded_memory(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "warm.mp4", 5, size=(320, 240), audio=(24000, 1),
                lossless=False)
    write_video(spinbot_dirs["input"] / "long.mp4", 750, size=(320, 240), audio=(24000, 1),
                lossless=False)
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, ROOT], capture_output=True,
                         text=True, env=dict(os.environ), cwd=str(spinbot_dirs["input"].parent),
                         timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    print("memory:", got)
    assert got["frames"] == 750 and got["decoded"] == 750 * 320 * 240 * 3  # 173 MB decoded
    assert got["growth"] < got["decoded"] / 5, got


def test_core_video_like_inputs_are_converted(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "clip.mp4", 20, audio=(44100, 2))
    core = runtime.core_video_from_file(str(spinbot_dirs["input"] / "clip.mp4"))
    assert runtime.is_core_video(core)
    video = vl.as_spinbot_video(core)
    assert [index_of(f) for f in video.read()] == list(range(20))
    assert video.audio["waveform"].shape == (1, 2, round(20 / 25 * 44100))
    assert vl.as_spinbot_video(video) is video and vl.as_spinbot_video(None) is None
    with pytest.raises(MediaError, match="expected a SPINBOT_VIDEO or a core VIDEO, got str"):
        vl.as_spinbot_video("clip.mp4")
    # every node input that takes a SpinBot video takes a core VIDEO too
    images, _audio, fps, count = SpinBotVideoToImages().convert(core, 5, 3)
    assert count == 3 and fps == 25.0
    assert [index_of((im.numpy() * 255).round().astype(np.uint8)) for im in images] == [5, 6, 7]


def test_video_to_core_video_round_trip(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "clip.mp4", 25, audio=(48000, 6))
    video = _load("clip.mp4").video
    core, report = SpinBotVideoToCoreVideo().convert(video, 17)
    path = core.get_stream_source()
    assert os.path.isfile(path) and path.startswith(runtime.temp_dir()) and path in report
    with av.open(path) as c:
        vs = c.streams.video[0]
        assert (vs.width, vs.height, vs.average_rate) == (W, H, 25)
        assert c.streams.audio[0].channels == 2  # 5.1 downmixed for AAC stereo
    back = vl.as_spinbot_video(core)
    assert [index_of(f) for f in back.read()] == list(range(25))
    assert back.audio["waveform"].shape[-1] == 48000
    # converting again reuses the MP4
    mtime = os.stat(path).st_mtime_ns
    core2, _ = SpinBotVideoToCoreVideo().convert(video, 17)
    assert core2.get_stream_source() == path and os.stat(path).st_mtime_ns == mtime


def test_video_to_core_video_says_when_audio_is_cut_or_padded(spinbot_dirs):
    """A 10-frame video carrying 5 s of audio: the MP4 holds 0.4 s of it, and the report says
    4.6 s were dropped (it used to drop them silently); short audio is reported as padded."""
    frames = np.stack([pattern(i) for i in range(10)])
    tone = torch.sin(torch.arange(5 * 24000) / 24000 * 2 * math.pi * 440).reshape(1, -1)
    long = SpinBotImagesToVideo().convert(torch.from_numpy(frames).float() / 255, 25.0,
                                          {"waveform": tone[None], "sample_rate": 24000})[0]
    core, report = SpinBotVideoToCoreVideo().convert(long, 17)
    assert "5.000 s cut to the video's 0.400 s (4.600 s dropped)" in report, report
    with av.open(core.get_stream_source()) as c:
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 0.4) < 0.05
    short = long.with_audio({"waveform": tone[None, :, :2400], "sample_rate": 24000})
    _core, report = SpinBotVideoToCoreVideo().convert(short, 17)
    assert "0.100 s padded with silence to the video's 0.400 s" in report, report
    same = long.with_audio({"waveform": tone[None, :, :9600], "sample_rate": 24000})
    _core, report = SpinBotVideoToCoreVideo().convert(same, 17)
    assert "cut" not in report and "padded" not in report, report


def test_combine_takes_a_core_video(spinbot_dirs):
    write_video(spinbot_dirs["input"] / "clip.mp4", 25, audio=(44100, 2))
    core = runtime.core_video_from_file(str(spinbot_dirs["input"] / "clip.mp4"))
    out = SpinBotVideoCombine().combine(25.0, "SpinBot/core", 19, "ultrafast", "128k",
                                        "pad video with last frame", False, -14.0, video=core)
    path = out["result"][0]
    with av.open(path) as c:
        assert c.streams.video[0].frames == 25
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 1.0) < 0.05


def test_in_memory_file_is_decoded_and_keyed_by_its_bytes(spinbot_dirs):
    import io

    path = spinbot_dirs["input"] / "clip.mp4"
    write_video(path, 12, audio=(44100, 1))
    data = path.read_bytes()
    video, reused, _notes = vl.stream_to_video(io.BytesIO(data), "bytes:a", vl.LoadSettings(),
                                               "in-memory file")
    assert not reused and [index_of(f) for f in video.read()] == list(range(12))
    assert video.audio["waveform"].shape == (1, 1, round(12 / 25 * 44100))


def test_cancel_leaves_nothing_half_written(spinbot_dirs):
    from spinbot.nodes.video.store import video_root

    write_video(spinbot_dirs["input"] / "clip.mp4", 40, audio=(44100, 1))
    runtime.request_interrupt()
    try:
        with pytest.raises(runtime.Interrupted):
            _load("clip.mp4")
    finally:
        runtime.request_interrupt(False)
    root = video_root()
    assert not os.path.isdir(root) or os.listdir(root) == []
    again = _load("clip.mp4")
    assert not again.reused and again.video.frame_count == 40


def test_video_info_gives_audio_of_exactly_the_frames_length_without_decoding_frames(
        spinbot_dirs):
    """Core Load Video -> SpinBot Video Info: the audio is frame_count / fps long to the sample
    (core Get Video Components keeps the AAC priming/padding and holds every frame in RAM);
    the core VIDEO's frames are streamed, never asked for as components."""
    from spinbot.nodes.video.nodes_video import SpinBotVideoInfo

    node = SpinBotVideoInfo()
    assert "video" in node.INPUT_TYPES()["required"]
    wave = write_video(spinbot_dirs["input"] / "clip.mp4", 23, fps=Fraction(30000, 1001),
                       audio=(44100, 2))
    core = runtime.core_video_from_file(str(spinbot_dirs["input"] / "clip.mp4"))

    def no_components():
        raise AssertionError("the frames were decoded into memory")

    core.get_components = no_components
    with av.open(str(spinbot_dirs["input"] / "clip.mp4")) as c:  # the file's AAC is longer
        a = c.streams.audio[0]
        assert sum(f.samples for f in c.decode(a)) > round(23 * 1001 / 30000 * 44100)
    audio, fps, count, width, height, duration, report = node.info(core)
    assert (count, width, height) == (23, W, H) and fps == pytest.approx(30000 / 1001)
    assert duration == pytest.approx(23 * 1001 / 30000)
    got = audio["waveform"]
    assert audio["sample_rate"] == 44100
    assert got.shape == (1, 2, round(Fraction(23 * 1001 * 44100, 30000)))
    assert got.shape[-1] == 33844  # 23 frames / (30000/1001) fps * 44100 Hz = 33844.2
    lag, err = _best_lag_error(got[0, 0].numpy(), wave[0, :got.shape[-1]])
    assert lag == 0 and err < 0.2, (lag, err)  # AAC of a 0.77 s clip, in sync
    assert "23 frames" in report and "audio 0.767 s @ 44100 Hz x2" in report
    # a SpinBot video without audio: silence of the same length
    write_video(spinbot_dirs["input"] / "mute.mp4", 10, audio=None)
    mute = _load("mute.mp4").video
    audio, fps, count, *_rest, report = node.info(mute)
    assert (fps, count) == (25.0, 10) and "no audio: silence" in report
    assert float(audio["waveform"].abs().max()) == 0
    assert audio["waveform"].shape[-1] == round(0.4 * audio["sample_rate"])
