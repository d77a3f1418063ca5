"""The lip-sync loop and the SpinBot Wav2Lip node, on tiny random-weight models.

Outputs of tiny models are noise, so these tests assert on frame counts, audio carried, which
pixels may change (known face boxes on skimage's astronaut), the no-face policies, batch-size
invariance, looping, cancel, and errors.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.lipsync import engine, faces, paste
from spinbot.nodes.lipsync.nodes_lipsync import SpinBotWav2Lip
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError, make_audio, uint8_to_images
from spinbot.nodes.video.store import video_root, write_video

FACE_BOX = (178, 50, 268, 160)
FPS = 25.0


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def built_models(tmp_path_factory):
    """The tiny wav2lip_gan.pth and buffalo_l detector, built once for the module."""
    from tests.factory_lipsync import tiny_wav2lip_gan
    from tests.factory_lipsync_faces import tiny_buffalo_l

    root = tmp_path_factory.mktemp("lipsync_models")
    tiny_wav2lip_gan(root / "lipsync")
    tiny_buffalo_l(root / "insightface")
    return root


@pytest.fixture
def models(spinbot_dirs, built_models):
    for folder in ("lipsync", "insightface"):
        (spinbot_dirs["models"] / folder).symlink_to(built_models / folder)
    return spinbot_dirs["models"]


@pytest.fixture(scope="module")
def tiny_model(built_models):
    from spinbot.nodes.lipsync.wav2lip import load_wav2lip

    return load_wav2lip(str(built_models / "lipsync" / "wav2lip_gan.pth"))


class KnownFaces:
    """A detector that returns a fixed box, except for the listed source frames."""

    def __init__(self, box=FACE_BOX, missing=()):
        self.box, self.missing, self.calls = box, set(missing), 0

    def detect(self, frame):
        index, self.calls = self.calls, self.calls + 1
        return [] if index in self.missing else [(*self.box, 0.99)]


def speech(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> dict:
    """A voiced-like test signal: a 150 Hz buzz with harmonics, amplitude-modulated at 4 Hz."""
    t = torch.arange(int(round(seconds * rate))) / rate
    buzz = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6))
    wave = 0.2 * buzz * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))
    noise = torch.randn(channels, t.numel(), generator=torch.Generator().manual_seed(seed))
    return make_audio((wave + 0.01 * noise).float(), rate)


def still(image: np.ndarray) -> torch.Tensor:
    return uint8_to_images(image[None])


def blend_region(shape, box=FACE_BOX, pads=faces.Pads()) -> np.ndarray:
    x1, y1, x2, y2 = faces.crop_box((*box, 1.0), pads, shape[1], shape[0])
    mask = np.zeros(shape[:2], bool)
    mask[y1:y2, x1:x2] = paste.mouth_mask(y2 - y1, x2 - x1) > 0
    return mask


def run(model, source, audio, **settings) -> "engine.SpinBotVideo":
    detector = settings.pop("detector", None) or KnownFaces()
    return engine.lip_sync(model, detector, source, audio,
                           engine.LipSyncSettings(**{"smoothing_window": 1, **settings}))


def node_inputs(**overrides) -> dict:
    inputs = dict(model_name="wav2lip_gan.pth", face_detector="buffalo_l", fps=FPS, batch_size=16,
                  face_index=-1, pad_top=0, pad_bottom=10, pad_left=0, pad_right=0,
                  smoothing_window=5, no_face="pass through", loop_mode="ping-pong",
                  mouth_feather=0.35, color_match=True, crop_upscale="bicubic")
    inputs.update(overrides)
    return inputs


# --------------------------------------------------------------------------- the node

def test_node_still_image_and_speech(models, astronaut):
    audio = speech(1.3, rate=44100, channels=2)
    (video,) = SpinBotWav2Lip().lipsync(audio=audio, image=still(astronaut), **node_inputs())
    assert video.frame_count == math.ceil(1.3 * 25) == 33
    assert video.fps == FPS and (video.width, video.height) == (512, 512)
    assert video.audio["sample_rate"] == 44100
    assert torch.equal(video.audio["waveform"][0], audio["waveform"][0])  # full-rate, untouched
    frames = video.read()
    assert frames.dtype == np.uint8 and not np.array_equal(frames[0], astronaut)
    # The same inputs again reuse the finished video instead of recomputing it.
    (again,) = SpinBotWav2Lip().lipsync(audio=audio, image=still(astronaut), **node_inputs())
    assert again.key == video.key


def test_node_crop_upscale_with_an_upscale_model(models, astronaut, spinbot_dirs):
    from tests.factory import tiny_realesr_general_x4v3

    tiny_realesr_general_x4v3(spinbot_dirs["models"] / "upscale_models")
    choices = SpinBotWav2Lip.INPUT_TYPES()["required"]["crop_upscale"][0]
    assert choices[:2] == ["bicubic", "bilinear"] and "realesr-general-x4v3.pth" in choices
    audio = speech(0.2)
    (plain,) = SpinBotWav2Lip().lipsync(audio=audio, image=still(astronaut), **node_inputs())
    (sharp,) = SpinBotWav2Lip().lipsync(audio=audio, image=still(astronaut), **node_inputs(
        crop_upscale="realesr-general-x4v3.pth"))
    assert sharp.frame_count == plain.frame_count == 5 and sharp.key != plain.key
    assert not np.array_equal(sharp.read(), plain.read())


def test_node_registered_with_tooltips():
    from spinbot.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    assert NODE_CLASS_MAPPINGS["SpinBotWav2Lip"] is SpinBotWav2Lip
    assert NODE_DISPLAY_NAME_MAPPINGS["SpinBotWav2Lip"] == "SpinBot Wav2Lip"
    spec = SpinBotWav2Lip.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (_kind, options) in spec[group].items():
            assert options.get("tooltip"), name


def test_node_errors(models, astronaut, spinbot_dirs):
    with pytest.raises(MediaError, match="connect 'image'"):
        SpinBotWav2Lip().lipsync(audio=speech(0.2), **node_inputs())
    with pytest.raises(MissingModelError, match="lipsync"):
        SpinBotWav2Lip().lipsync(audio=speech(0.2), image=still(astronaut),
                                 **node_inputs(model_name="wav2lip_missing.pth"))
    with pytest.raises(MissingModelError, match="models/antelopev2"):
        SpinBotWav2Lip().lipsync(audio=speech(0.2), image=still(astronaut),
                                 **node_inputs(face_detector="antelopev2"))


# --------------------------------------------------------------------------- the engine

def test_only_the_mouth_region_changes(tiny_model, astronaut):
    video = run(tiny_model, engine.FrameSource(still(astronaut), fps=FPS), speech(0.4))
    frames = video.read()
    assert len(frames) == 10
    region = blend_region(astronaut.shape)
    for frame in frames:
        assert np.array_equal(frame[~region], astronaut[~region])
        assert np.any(frame[region] != astronaut[region])
    assert video.extra["frames_without_face"] == 0


def test_no_face_pass_through_and_error(tiny_model, astronaut):
    rng = np.random.default_rng(0)
    clip = np.stack([np.clip(astronaut.astype(int) + rng.integers(-3, 4, astronaut.shape), 0, 255)
                     for _ in range(6)]).astype(np.uint8)
    source = engine.FrameSource(uint8_to_images(clip), fps=FPS)
    audio = speech(6 / FPS)
    video = run(tiny_model, source, audio, detector=KnownFaces(missing={2, 3}))
    out = video.read()
    assert len(out) == 6 and video.extra["frames_without_face"] == 2
    for i in range(6):
        assert np.array_equal(out[i], clip[i]) == (i in (2, 3))
    with pytest.raises(MediaError, match=r"no face found in 2 of 6 frames \(frame 2, 3\)"):
        run(tiny_model, source, audio, detector=KnownFaces(missing={2, 3}), no_face="error")
    with pytest.raises(MediaError, match="no face was found in any frame"):
        run(tiny_model, source, audio, detector=KnownFaces(missing=range(6)))


def test_batch_size_does_not_change_the_output(tiny_model, astronaut):
    source = engine.FrameSource(still(astronaut), fps=FPS)
    audio = speech(0.3)
    outputs = [run(tiny_model, source, audio, batch_size=b).read().astype(int) for b in (1, 3, 16)]
    for other in outputs[1:]:
        assert np.abs(other - outputs[0]).max() <= 1


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_rates_and_channels(tiny_model, astronaut, rate, channels):
    audio = speech(0.3, rate=rate, channels=channels)
    video = run(tiny_model, engine.FrameSource(still(astronaut), fps=FPS), audio)
    assert video.frame_count == math.ceil(0.3 * FPS)
    assert video.audio["sample_rate"] == rate
    assert tuple(video.audio["waveform"].shape[-2:]) == (channels, audio["waveform"].shape[-1])


@pytest.mark.parametrize("mode, expected", [
    ("ping-pong", [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]),
    ("loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
    ("repeat last", [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]),
])
def test_video_source_loops(tiny_model, astronaut, mode, expected, monkeypatch):
    # Four frames told apart by a corner square outside the face.
    clip = np.stack([astronaut.copy() for _ in range(4)])
    for i in range(4):
        clip[i, :20, :20] = 60 * i
    source_video = write_video("lipsync-test-source", FPS, iter([clip]))
    source_video = source_video.with_segments([{"text": "hi", "start": 0.0, "end": 0.4}])
    source = engine.FrameSource(video=source_video)
    reads = []
    original_read = source.read
    monkeypatch.setattr(source, "read", lambda a, b: reads.append(b - a) or original_read(a, b))
    video = run(tiny_model, source, speech(10 / FPS), loop_mode=mode, batch_size=3)
    shown = [int(frame[0, 0, 0]) // 60 for frame in video.read()]
    assert shown == expected
    assert max(reads) <= 3  # a batch reads only the frames it shows, even across the wrap
    assert video.fps == FPS
    assert video.segments == source_video.segments  # TTS timings carried


def test_source_indices_modes():
    assert engine.source_indices(8, 3, "ping-pong").tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert engine.source_indices(7, 3, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert engine.source_indices(5, 3, "repeat last").tolist() == [0, 1, 2, 2, 2]
    assert engine.source_indices(4, 1, "ping-pong").tolist() == [0, 0, 0, 0]
    assert engine.source_indices(2, 5, "loop").tolist() == [0, 1]  # the video is cut
    with pytest.raises(MediaError):
        engine.source_indices(3, 3, "bounce")


def test_model_input_masks_the_lower_half_in_bgr():
    crops = torch.arange(3.0)[None, :, None, None].expand(2, 3, 96, 96) * 100
    faces_in = engine.model_input(crops)
    assert faces_in.shape == (2, 6, 96, 96)
    assert torch.allclose(faces_in[0, 3:, 0, 0], torch.tensor([200.0, 100.0, 0.0]) / 255)  # BGR
    assert faces_in[:, :3, 48:].abs().max() == 0 and faces_in[:, :3, :48].max() > 0
    assert torch.equal(faces_in[:, 3:, 48:], crops[:, [2, 1, 0], 48:] / 255)


def test_cancel_leaves_no_partial_video(tiny_model, astronaut):
    class CancelAfterFirstBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_model

        def forward(self, audio, faces_in):
            runtime.request_interrupt()
            return self.inner(audio, faces_in)

    before = set(os.listdir(video_root()))
    with pytest.raises(runtime.Interrupted):
        run(CancelAfterFirstBatch(), engine.FrameSource(still(astronaut), fps=FPS),
            speech(1.0), batch_size=4)
    assert set(os.listdir(video_root())) == before


class MovingFace:
    """A detector whose face slides right 4 px per frame; it records the frames it was run on."""

    def __init__(self, no_face=()):
        self.seen, self.no_face = [], set(no_face)

    def detect(self, frame):
        index = int(frame[0, 0, 0])  # the test frames carry their index in the first pixel
        self.seen.append(index)
        return [] if index in self.no_face else [(40.0 + 4 * index, 30.0, 100.0 + 4 * index, 100.0, 0.9)]


def test_detect_every_runs_the_detector_on_every_nth_frame_and_interpolates():
    frames = np.zeros((11, 160, 240, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(11)
    source = engine.FrameSource(uint8_to_images(frames), fps=FPS)
    settings = engine.LipSyncSettings(smoothing_window=1, pads=faces.Pads(0, 0, 0, 0), detect_every=4)
    every_frame = engine.face_boxes(source, MovingFace(), engine.LipSyncSettings(
        smoothing_window=1, pads=faces.Pads(0, 0, 0, 0)), 11)
    detector = MovingFace()
    boxes = engine.face_boxes(source, detector, settings, 11)
    assert detector.seen == [0, 4, 8, 10]  # every 4th frame and the last
    assert boxes == every_frame  # linear motion is interpolated exactly
    # between a face and no face nothing is guessed: those frames count as face-less
    boxes = engine.face_boxes(source, MovingFace(no_face={8}), settings, 11)
    assert [i for i, b in enumerate(boxes) if b is None] == [5, 6, 7, 8, 9]
