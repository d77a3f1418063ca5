"""Video Combine's pipelined encoder and the fps widgets.

The encoder overlaps IMAGE -> uint8, rgb24 -> yuv420p and x264 on three threads; these tests hold
it to the serial result (lossless encodes decoded back), to leaving nothing behind on an error or a
Cancel, and to a look-ahead of a few chunks. The fps tests cover every fps widget of the pack as
ComfyUI's frontend rounds it and as the MP4 stores it.
"""
from __future__ import annotations

import math
import os
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import spinbot
from spinbot.nodes import runtime
from spinbot.nodes.media import MediaError, images_to_uint8, pad_to_even
from spinbot.nodes.video import encode
from spinbot.nodes.video.encode import fps_fraction, mux_mp4
from spinbot.nodes.video.nodes_video import SpinBotVideoCombine
from tests.media import tone_audio

COMBINE = dict(fps=25.0, filename_prefix="SpinBot/speed", crf=19, preset="ultrafast",
               audio_bitrate="192k", length_policy="pad video with last frame",
               normalize_loudness=False, loudness_lufs=-14.0)


def combine(**kw):
    return SpinBotVideoCombine().combine(**{**COMBINE, **kw})


def textured(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Noise over a per-frame level: every frame differs, so order and count are visible."""
    g = torch.Generator().manual_seed(seed)
    level = torch.linspace(0.0, 0.8, n)[:, None, None, None]
    return (level + 0.2 * torch.rand(n, h, w, 3, generator=g)).clamp(0, 1)


def decoded_yuv(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def serial_yuv(frames: np.ndarray) -> list[np.ndarray]:
    """What the one-thread encoder fed x264: each padded rgb24 frame through PyAV's swscale."""
    out = []
    for frame in pad_to_even(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        out.append(vf.reformat(format="yuv420p").to_ndarray())
    return out


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("spinbot-encode")]


def no_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


# --------------------------------------------------------------------------- pipelined encoder

@pytest.mark.parametrize("size", [(48, 64), (47, 63)])
def test_pipelined_encode_is_frame_exact(size):
    """crf 0 is lossless in x264: the decoded planes must equal the serial conversion of every
    frame, in order, across several chunks and the padding copies."""
    h, w = size
    images = textured(45, h, w)  # 3 chunks of 16 (the last short)
    path, report = combine(images=images, crf=0, audio=tone_audio(2.0, rate=24000))["result"]
    got = decoded_yuv(path)
    frames = images_to_uint8(images)
    expected = serial_yuv(np.concatenate([frames, np.repeat(frames[-1:], 5, axis=0)]))
    assert len(got) == len(expected) == 50  # ceil(2.0 s x 25 fps): 5 copies of the last frame
    for i, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"frame {i} differs from the serial conversion"
    assert pipeline_threads() == []


def test_images_to_uint8_keeps_the_torch_rounding():
    """The per-frame numpy conversion gives the bytes of the former chunk-wide torch formula,
    including exact half steps, values outside 0..1, alpha and half precision input."""
    k = torch.arange(0, 256 * 8).float() / 8 / 255
    edges = torch.cat([k, (k * 255 - 0.5) / 255, (k * 255 + 0.5) / 255, k * 1.3 - 0.1])
    cases = [edges[:edges.numel() // 3 * 3].reshape(1, 1, -1, 3),
             torch.rand(5, 7, 9, 4), torch.rand(3, 6, 6, 3).half(), torch.rand(2, 5, 5, 1)]
    for image in cases:
        ref = image.float()
        ref = ref.expand(-1, -1, -1, 3) if ref.shape[-1] == 1 else ref[..., :3]
        ref = ref.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).numpy()
        assert np.array_equal(images_to_uint8(image), ref)


def test_error_from_a_later_chunk_leaves_nothing(spinbot_dirs):
    images = textured(60, 32, 32)
    images[37, 3, 3, 0] = float("nan")
    with pytest.raises(MediaError, match=r"frame\(s\) 37 contain NaN"):
        combine(images=images)
    assert no_files(spinbot_dirs["output"]) == []
    assert pipeline_threads() == []


def test_cancel_from_another_thread_stops_promptly_and_leaves_nothing(spinbot_dirs):
    """Cancel arrives from the server thread while frames are being produced on the pipeline's
    own threads: the encoder raises at the next chunk, the source is closed, and the producers
    were never more than a few chunks ahead."""
    state = {"made": 0, "closed": False}

    def source():
        try:
            for i in range(500):
                state["made"] += 1
                if i == 3:
                    runtime.request_interrupt()
                yield np.full((4, 16, 16, 3), i % 256, dtype=np.uint8)
        finally:
            state["closed"] = True

    path = str(spinbot_dirs["output"] / "cancel.mp4")
    with pytest.raises(runtime.Interrupted):
        mux_mp4(path, source(), 25.0, 16, 16, preset="ultrafast")
    runtime.request_interrupt(False)
    assert no_files(spinbot_dirs["output"]) == []
    assert state["closed"] and state["made"] <= 10, state
    assert pipeline_threads() == []


def test_look_ahead_is_bounded_by_a_few_chunks(spinbot_dirs):
    """Memory stays a few chunks however long the video: while the encoder is slow, the source
    is never asked for more than 5 chunks beyond those already encoded."""
    made, encoded, ahead = [0], [0], []

    def source():
        for i in range(60):
            made[0] += 1
            ahead.append(made[0] - encoded[0])
            yield np.full((2, 16, 16, 3), i, dtype=np.uint8)

    def slow_encoder(n):
        encoded[0] += 1
        time.sleep(0.01)

    path = str(spinbot_dirs["output"] / "bounded.mp4")
    assert mux_mp4(path, source(), 25.0, 16, 16, preset="ultrafast", on_frames=slow_encoder) == 120
    assert max(ahead) <= 5, ahead
    assert len(decoded_yuv(path)) == 120


def test_prefetch_reraises_the_same_exception_and_joins():
    boom = RuntimeError("chunk 3 is bad")

    def source():
        for i in range(10):
            if i == 3:
                raise boom
            yield i

    seen = []
    with pytest.raises(RuntimeError) as err:
        for item in encode._prefetch(source(), "spinbot-encode-test", convert=lambda x: x * 10):
            seen.append(item)
    assert err.value is boom and seen == [0, 10, 20]
    assert pipeline_threads() == []


def test_x264_uses_frame_threads(spinbot_dirs):
    """Frame threads (as the ffmpeg CLI) rather than PyAV's default sliced threads: a sliced
    encode writes one slice per thread in every frame, a frame-threaded one a single slice."""
    path = str(spinbot_dirs["output"] / "threads.mp4")
    frames = images_to_uint8(textured(8, 256, 256))
    mux_mp4(path, [frames], 25.0, 256, 256, preset="ultrafast")
    with av.open(path) as c:
        stream = c.streams.video[0]
        packet = next(p for p in c.demux(stream) if p.size)
        # Annex-B is not used in MP4: NAL units are 4-byte length-prefixed; count the slices
        # (types 1 and 5) of the first frame.
        data, pos, slices = bytes(packet), 0, 0
        while pos + 4 <= len(data):
            size = int.from_bytes(data[pos:pos + 4], "big")
            slices += (data[pos + 4] & 0x1F) in (1, 5)
            pos += 4 + size
    assert slices == 1


# --------------------------------------------------------------------------- fps widgets

NTSC = {23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001), 59.94: Fraction(60000, 1001)}
# SVD's micro-conditioning is an integer by design (the model was trained on whole fps values).
NOT_A_RATE = {("SpinBotSVD", "fps_conditioning")}


def frontend_value(value: float, spec: dict) -> float:
    """What ComfyUI's frontend stores for a typed FLOAT value (comfyui_frontend_package,
    src/renderer/extensions/vueNodes/widgets/composables/useFloatWidget.ts, default settings):
    precision = max(0, -floor(log10(step))), step defaulting to 0.5; round = the spec's round,
    else 10^-precision; value = round(v / round) * round, printed to ``precision`` decimals."""
    step = spec.get("step", 0.5)
    precision = max(0, -math.floor(math.log10(step)))
    rnd = spec.get("round") or (10.0 ** -precision if precision else None)
    if not rnd:
        return value
    js_round = math.floor(value / rnd + 0.5)  # Math.round
    return float(f"{js_round * rnd:.{precision}f}")


def fps_inputs() -> list[tuple[str, str, tuple]]:
    found = []
    for name, cls in spinbot.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for key, value in spec.get(group, {}).items():
                if ("fps" in key or "frame_rate" in key) and (name, key) not in NOT_A_RATE:
                    found.append((name, key, value))
    return found


def test_every_fps_widget_keeps_ntsc_rates_through_validation_and_the_frontend():
    inputs = fps_inputs()
    names = {(n, k) for n, k, _ in inputs}
    # The known ones must be among them, so the check cannot pass on an empty list.
    assert {("SpinBotVideoCombine", "fps"), ("SpinBotImagesToVideo", "fps"),
            ("SpinBotWav2Lip", "fps"), ("SpinBotSVD", "output_fps")} <= names, names
    for node, key, (kind, spec) in inputs:
        assert kind == "FLOAT", f"{node}.{key} is {kind}: 29.97 cannot be entered"
        for value, exact in NTSC.items():
            assert spec["min"] <= value <= spec["max"], f"{node}.{key} refuses {value}"
            stored = frontend_value(value, spec)
            assert stored == value, f"{node}.{key}: the frontend turns {value} into {stored}"
            assert fps_fraction(stored) == exact


def test_frontend_rule_catches_a_coarse_step():
    """The emulation itself: the former steps (0.01 and 0.5) did round the NTSC rates away."""
    assert frontend_value(23.976, {"step": 0.01}) == 23.98
    assert frontend_value(29.97, {"step": 0.5}) == 30.0
    assert frontend_value(23.976, {"step": 0.001}) == 23.976


@pytest.mark.parametrize("fps,exact", [(23.976, Fraction(24000, 1001)),
                                       (29.97, Fraction(30000, 1001)),
                                       (23.98, Fraction(24000, 1001)),
                                       (25.0, Fraction(25))])
def test_ntsc_rates_are_exact_in_the_mp4(fps, exact):
    audio = tone_audio(1.0, rate=48000)
    path, report = combine(images=textured(10, 32, 32), fps=fps, audio=audio)["result"]
    with av.open(path) as c:
        v = c.streams.video[0]
        assert Fraction(v.average_rate) == exact
        frames = sum(1 for _ in c.decode(v))
    assert frames == math.ceil(fps)  # the video covers the 1.0 s of audio
    assert f"@ {fps:g} fps" in report


# --------------------------------------------------------------------------- in a real ComfyUI

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests.comfyui_server import ComfyUI

    server = ComfyUI(COMFYUI_PATH, str(tmp_path_factory.mktemp("comfy-fps")))
    yield server
    server.stop()


@pytest.mark.comfyui
@pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")
def test_ntsc_rate_through_comfyui_validation_and_object_info(comfy):
    """The spec the frontend receives (/object_info) keeps 29.97, the server validates it, and
    the MP4 carries 30000/1001."""
    info = comfy.get("/object_info")
    for node, key, _ in fps_inputs():
        group = "required" if key in info[node]["input"].get("required", {}) else "optional"
        spec = info[node]["input"][group][key][1]
        assert frontend_value(29.97, spec) == 29.97 and frontend_value(23.976, spec) == 23.976
    defaults = {k: v[1]["default"] for k, v in info["SpinBotVideoCombine"]["input"]["required"].items()
                if len(v) > 1 and "default" in v[1]}
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 12,
                                                     "color": 0x336699}},
        "2": {"class_type": "SpinBotVideoCombine", "inputs": {
            **defaults, "images": ["1", 0], "fps": frontend_value(29.97, {"step": 0.001}),
            "preset": "ultrafast", "filename_prefix": "SpinBot/ntsc"}},
    }
    entry = comfy.wait(comfy.queue(prompt))
    path = entry["outputs"]["2"]["spinbot_video"][0]
    mp4 = os.path.join(comfy.base_dir, "output", path["subfolder"], path["filename"])
    with av.open(mp4) as c:
        assert Fraction(c.streams.video[0].average_rate) == Fraction(30000, 1001)
        assert sum(1 for _ in c.decode(video=0)) == 12
