"""Face restore: model loading through spandrel, FFHQ alignment, the paste-back mask, the node.

Outputs of random models are noise, so these tests assert on which pixels may change (the warped
mask), strength, face-less frames, loading and errors. Most pipeline tests use a cheap stand-in
restorer (colour inversion: every restored pixel differs from the original, so the changed area
is exactly visible); the tiny RestoreFormer (about 1 s per face on a free CPU core) runs through
the node once, and the full-size GFPGAN (spandrel fixes its sizes) loads and runs one face.
"""
from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spinbot.nodes import runtime
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError, make_audio
from spinbot.nodes.restore import align, model as restore_model, nodes_restore
from spinbot.nodes.restore.restore import (RestoreSettings, RestoreStats, find_faces,
                                           restore_images, restore_video, video_key)
from spinbot.nodes.video.store import load_video, write_video

# Keypoints of the face in skimage's astronaut (512x512): eyes, nose tip, mouth corners, read
# off the image; the face box is the one the lip-sync tests use.
ASTRONAUT_BOX = (178.0, 50.0, 268.0, 160.0, 0.99)
ASTRONAUT_KPS = np.array([[205, 100], [242, 96], [226, 122], [210, 142], [240, 139]], np.float32)
FPS = 25.0
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


class KnownFaces:
    """A detector returning fixed faces (box + keypoints), none for the listed frames (counted
    over all calls), and calling ``on_call(n)`` before each frame when given."""

    def __init__(self, faces, without=(), on_call=None):
        self.faces, self.without, self.on_call, self.calls = list(faces), set(without), on_call, 0

    def detect_landmarks(self, frame):
        n = self.calls
        self.calls += 1
        if self.on_call is not None:
            self.on_call(n)
        return [] if n in self.without else list(self.faces)


class InvertRestorer:
    """A stand-in restorer: 1 - x, so every pixel it pastes with weight > 0 changes."""

    architecture = "Invert"
    name = "invert"
    descriptor = SimpleNamespace(supports_half=False, supports_bfloat16=False)

    def __init__(self, path: str):
        self.path = path
        self.calls = 0
        self.batches: list[int] = []

    def to(self, device, dtype):
        return self

    def size_bytes(self) -> int:
        return 0

    def describe(self) -> str:
        return "invert"

    def forward(self, faces: torch.Tensor, fidelity: float = 0.5) -> torch.Tensor:
        # Real networks need standard NCHW (GFPGAN's view() fails on channels-last batches).
        assert faces.is_contiguous() and faces.shape[1:] == (3, 512, 512), faces.stride()
        self.calls += faces.shape[0]
        self.batches.append(faces.shape[0])
        return 1.0 - faces


@pytest.fixture
def invert(tmp_path):
    path = tmp_path / "invert.pth"
    path.write_bytes(b"stand-in")
    return InvertRestorer(str(path))


def frame_mask(kps, height, width) -> np.ndarray:
    """Where the paste may change a frame: the warped mask's non-zero weights."""
    out = np.zeros((height, width), bool)
    found = align.frame_weights(align.alignment(kps), height, width)
    if found is not None:
        weights, (x1, y1, x2, y2) = found
        out[y1:y2, x1:x2] = weights > 0
    return out


# --------------------------------------------------------------------------- alignment

def test_alignment_maps_keypoints_onto_the_ffhq_template():
    # Keypoints = the template moved by a known similarity; the estimate must undo it.
    angle, scale, shift = np.deg2rad(20.0), 0.3, np.array([40.0, 70.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = align.FFHQ_TEMPLATE_512 @ rot.T + shift
    affine = align.alignment(kps)
    mapped = kps @ affine[:, :2].T + affine[:, 2]
    assert np.abs(mapped - align.FFHQ_TEMPLATE_512).max() < 1e-3
    assert abs(np.hypot(*affine[0, :2]) - 1 / scale) < 1e-6
    back = align.invert(affine)
    assert np.allclose(align.FFHQ_TEMPLATE_512 @ back[:, :2].T + back[:, 2], kps, atol=1e-3)


def test_alignment_matches_facexlibs_opencv_estimate():
    cv2 = pytest.importorskip("cv2")
    ours = align.alignment(ASTRONAUT_KPS)
    theirs = cv2.estimateAffinePartial2D(ASTRONAUT_KPS, align.FFHQ_TEMPLATE_512,
                                         method=cv2.LMEDS)[0]
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.parametrize("kps", [np.full((5, 2), 50.0),                       # one spot
                                 np.stack([np.arange(5) * 10.0, np.arange(5) * 5.0], 1),  # a line
                                 np.array([[0, 0], [1, 0], [0.5, 0.5], [0, 1], [1, 1]]),  # 1 px
                                 np.full((5, 2), np.nan)])
def test_degenerate_keypoints_give_no_alignment(kps):
    assert align.alignment(kps) is None


def test_face_mask_is_the_lipsync_ellipse_zero_at_the_square_edges():
    mask = align.face_mask()
    assert mask.shape == (512, 512) and mask.max() == 1.0
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0
    cx, cy = align.FFHQ_TEMPLATE_512[2].astype(int)  # the nose: fully pasted
    assert mask[cy, cx] == 1.0


# --------------------------------------------------------------------------- the paste

def test_pixels_change_only_inside_the_mask_and_the_face_region_changes(astronaut, invert):
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    stats = RestoreStats()
    out = restore_images(invert, KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)]), images,
                         RestoreSettings(strength=1.0), stats, CPU)
    inside = frame_mask(ASTRONAUT_KPS, 512, 512)
    changed = (out != images).any(-1)[0].numpy()
    assert not changed[~inside].any()  # bit-identical outside the pasted mask
    assert changed[inside].mean() > 0.99
    # the face box is mostly inside the mask, the mask reaches a bit beyond the box
    x1, y1, x2, y2, _ = map(int, ASTRONAUT_BOX)
    assert changed[y1:y2, x1:x2].mean() > 0.6
    assert 0.02 < inside.mean() < 0.1
    assert stats.faces_per_frame == [1] and invert.calls == 1


def test_uint8_video_frames_change_only_inside_the_mask(astronaut, invert):
    frames = np.stack([astronaut, astronaut[:, ::-1].copy()])
    video = write_video("restore_src_uint8", FPS, iter([frames]),
                        audio=make_audio(torch.zeros(1, 1600), 16000))
    stats = RestoreStats()
    out, reused = restore_video(invert, KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)]), video,
                                RestoreSettings(strength=1.0), stats, "known", CPU)
    assert not reused and out.frame_count == 2 and out.fps == FPS
    assert out.audio is not None and out.audio["waveform"].shape[-1] == 1600
    result = out.read()
    inside = frame_mask(ASTRONAUT_KPS, 512, 512)
    for i in range(2):
        changed = (result[i] != frames[i]).any(-1)
        assert not changed[~inside].any()
        assert changed[inside].mean() > 0.95


def test_strength_zero_gives_identical_output(astronaut, invert):
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    detector = KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)])
    out = restore_images(invert, detector, images, RestoreSettings(strength=0.0),
                         RestoreStats(), CPU)
    assert torch.equal(out, images) and invert.calls == 0
    video = write_video("restore_src_s0", FPS, iter([astronaut[None]]))
    same, _ = restore_video(invert, detector, video, RestoreSettings(strength=0.0),
                            RestoreStats(), "known", CPU)
    assert np.array_equal(same.read(), video.read())


def test_strength_blends_linearly_between_original_and_restored(astronaut, invert):
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    faces = [(ASTRONAUT_BOX, ASTRONAUT_KPS)]
    full = restore_images(invert, KnownFaces(faces), images, RestoreSettings(strength=1.0),
                          RestoreStats(), CPU)
    half = restore_images(invert, KnownFaces(faces), images, RestoreSettings(strength=0.5),
                          RestoreStats(), CPU)
    assert torch.allclose(half, (images + full) / 2, atol=1e-5)
    assert (half != images).any()


def test_faceless_frames_pass_through_identical(astronaut, invert):
    frames = np.stack([astronaut] * 4)
    video = write_video("restore_src_faceless", FPS, iter([frames]))
    stats = RestoreStats()
    out, _ = restore_video(invert, KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)], without={1, 3}),
                           video, RestoreSettings(strength=1.0, faces_per_batch=2), stats,
                           "known-1-3", CPU)
    result = out.read()
    assert np.array_equal(result[1], frames[1]) and np.array_equal(result[3], frames[3])
    assert not np.array_equal(result[0], frames[0]) and not np.array_equal(result[2], frames[2])
    assert stats.faces_per_frame == [1, 0, 1, 0] and stats.faceless == [1, 3]
    assert invert.batches == [1, 1]
    assert "frames without a face, passed through unchanged: 2 (1, 3)" in stats.summary()


def test_only_largest_face_or_all_faces(astronaut, invert):
    small_kps = ASTRONAUT_KPS * 0.5 + np.array([300.0, 300.0], np.float32)
    small = ((389.0, 325.0, 434.0, 380.0, 0.9), small_kps)
    faces = [small, (ASTRONAUT_BOX, ASTRONAUT_KPS)]
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    big_mask, small_mask = frame_mask(ASTRONAUT_KPS, 512, 512), frame_mask(small_kps, 512, 512)
    assert not (big_mask & small_mask).any()
    largest = restore_images(invert, KnownFaces(faces), images,
                             RestoreSettings(only_largest_face=True), RestoreStats(), CPU)
    changed = (largest != images).any(-1)[0].numpy()
    assert changed[big_mask].any() and not changed[small_mask].any()
    stats = RestoreStats()
    every = restore_images(invert, KnownFaces(faces), images,
                           RestoreSettings(only_largest_face=False), stats, CPU)
    changed = (every != images).any(-1)[0].numpy()
    assert changed[big_mask].mean() > 0.9 and changed[small_mask].mean() > 0.9
    assert not changed[~(big_mask | small_mask)].any() and stats.faces_per_frame == [2]
    assert invert.batches[-1] == 2  # both faces in one contiguous batch


def test_face_at_the_frame_edge_pastes_only_inside_the_frame(astronaut, invert):
    kps = ASTRONAUT_KPS - np.array([200.0, 90.0], np.float32)  # face half out at the top left
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    out = restore_images(invert, KnownFaces([((0, 0, 70, 70, 0.9), kps)]), images,
                         RestoreSettings(), RestoreStats(), CPU)
    changed = (out != images).any(-1)[0].numpy()
    inside = frame_mask(kps, 512, 512)
    assert changed.any() and not changed[~inside].any()


def test_bad_strength_is_an_error_naming_it(astronaut, invert):
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    for bad in (float("nan"), 1.5, -0.1):
        with pytest.raises(MediaError, match="strength"):
            restore_images(invert, KnownFaces([]), images, RestoreSettings(strength=bad),
                           RestoreStats(), CPU)


def test_cancel_leaves_no_video_and_a_rerun_finishes(astronaut, invert):
    frames = np.stack([astronaut] * 6)
    video = write_video("restore_src_cancel", FPS, iter([frames]))
    settings = RestoreSettings(faces_per_batch=2)

    def cancel_at(n):
        if n == 3:
            runtime.request_interrupt()

    detector = KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)], on_call=cancel_at)
    try:
        with pytest.raises(runtime.Interrupted):
            restore_video(invert, detector, video, settings, RestoreStats(), "cancel", CPU)
    finally:
        runtime.request_interrupt(False)
    assert load_video(video_key(invert, "cancel", settings, video, CPU)) is None
    out, reused = restore_video(invert, KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)]), video,
                                settings, RestoreStats(), "cancel", CPU)
    assert not reused and out.frame_count == 6
    again, reused = restore_video(invert, KnownFaces([]), video, settings, RestoreStats(),
                                  "cancel", CPU)
    assert reused and again.identity() == out.identity()


def test_insightface_detector_gives_five_keypoints(tmp_path, astronaut):
    from spinbot.nodes.lipsync.faces import InsightFaceDetector
    from tests.factory_lipsync_faces import write_tiny_pack

    pack = tmp_path / "models" / "buffalo_l"
    write_tiny_pack(pack, seed=10)
    faces = find_faces(InsightFaceDetector(str(pack), det_size=320), astronaut)
    assert faces, "the tiny SCRFD gives a few random faces per frame"
    for box, kps in faces:
        assert len(box) == 5 and kps.shape == (5, 2) and np.isfinite(kps).all()


def test_a_detector_without_keypoints_is_a_clear_error(astronaut):
    class BoxesOnly:
        def detect(self, frame):
            return [ASTRONAUT_BOX]

    with pytest.raises(MediaError, match="gives no keypoints"):
        find_faces(BoxesOnly(), astronaut)


# --------------------------------------------------------------------------- models

@pytest.fixture(scope="module")
def tiny_restoreformer(tmp_path_factory):
    from tests.factory_restore import tiny_restoreformer as build

    return build(tmp_path_factory.mktemp("facerestore_models"))[0]


def test_tiny_restoreformer_loads_through_spandrel_as_a_face_restorer(tiny_restoreformer):
    restorer = restore_model.load_restorer_file(str(tiny_restoreformer))
    assert restorer.architecture == "RestoreFormer"
    assert restorer.descriptor.purpose == "FaceSR"
    assert restore_model.pick_dtype(restorer, "auto", CPU) == torch.float32
    assert restore_model.pick_dtype(restorer, "fp16", torch.device("cuda")) == torch.float32
    with torch.inference_mode():
        out = restorer.forward(torch.rand(1, 3, 512, 512))
    assert out.shape == (1, 3, 512, 512) and 0 <= out.min() and out.max() <= 1
    assert out.std() > 0.01  # not the clamped half of a [-1, 1] output


def test_full_size_gfpgan_release_layout_loads_and_restores_a_face(tmp_path):
    from tests.factory_restore import write_gfpgan

    path = write_gfpgan(tmp_path)
    restorer = restore_model.load_restorer_file(str(path))
    path.unlink()
    assert restorer.architecture == "GFPGAN" and restorer.descriptor.purpose == "FaceSR"
    with torch.inference_mode():
        face = torch.rand(1, 3, 512, 512)
        out = restorer.forward(face)
    assert out.shape == (1, 3, 512, 512) and 0 <= out.min() and out.max() <= 1
    assert out.std() > 0.01


def test_codeformer_loads_when_spandrel_extra_arches_is_installed(tmp_path):
    pytest.importorskip("spandrel_extra_arches")
    from tests.factory_restore import codeformer_state_dict, write_release

    path = write_release(tmp_path / "codeformer.pth", codeformer_state_dict())
    restorer = restore_model.load_restorer_file(str(path))
    assert restorer.architecture == "CodeFormer" and restorer.descriptor.purpose == "FaceSR"
    # Its forward (``weight=fidelity``, one 512 face) took 23 s on the loaded test machine: not
    # run here; FaceRestorer.forward calls it as inference_codeformer.py does.


def test_an_upscaler_in_the_folder_is_a_clear_error(spinbot_dirs):
    from tests.factory import rrdbnet_state_dict

    folder = spinbot_dirs["models"] / "facerestore_models"
    folder.mkdir()
    torch.save({"params_ema": rrdbnet_state_dict()}, folder / "RealESRGAN_x4plus.pth")
    with pytest.raises(restore_model.FaceRestoreModelError) as err:
        restore_model.load_restorer("RealESRGAN_x4plus.pth")
    message = str(err.value)
    assert "'RealESRGAN_x4plus.pth' holds a model of architecture ESRGAN (spandrel purpose " \
        "'SR')" in message
    assert "not a face restoration model" in message and "upscale_models" in message


def test_a_file_of_no_known_kind_is_a_clear_error(spinbot_dirs):
    folder = spinbot_dirs["models"] / "facerestore_models"
    folder.mkdir()
    torch.save({"foo.weight": torch.zeros(3)}, folder / "mystery.pth")
    with pytest.raises(restore_model.FaceRestoreModelError, match="not a model that spandrel "
                       "recognises") as err:
        restore_model.load_restorer("mystery.pth")
    if importlib.util.find_spec("spandrel_extra_arches") is None:  # say how CodeFormer loads
        assert "pip install spandrel_extra_arches" in str(err.value)


def test_missing_model_names_folder_and_source(spinbot_dirs):
    with pytest.raises(MissingModelError) as err:
        nodes_restore.SpinBotFaceRestoreModel().load("GFPGANv1.4.pth")
    message = str(err.value)
    assert "'facerestore_models'" in message and "GFPGANv1.4.pth" in message
    assert "https://github.com/TencentARC/GFPGAN" in message


# --------------------------------------------------------------------------- the node

def test_node_restores_a_video_with_the_tiny_restoreformer(spinbot_dirs, tiny_restoreformer,
                                                           astronaut, monkeypatch):
    folder = spinbot_dirs["models"] / "facerestore_models"
    folder.mkdir()
    (folder / "RestoreFormer.pth").symlink_to(tiny_restoreformer)
    from tests.factory_lipsync_faces import tiny_buffalo_l

    tiny_buffalo_l(spinbot_dirs["models"] / "insightface")
    # The tiny SCRFD's random keypoints may not align; a known face makes the geometry exact.
    detector = KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)], without={1})
    monkeypatch.setattr(nodes_restore, "load_detector", lambda *a, **k: detector)
    monkeypatch.setattr(runtime, "torch_device", lambda: CPU)

    model, report = nodes_restore.SpinBotFaceRestoreModel().load("RestoreFormer.pth")
    assert "RestoreFormer" in report
    frames = np.stack([astronaut, astronaut])
    video = write_video("restore_node_src", FPS, iter([frames]),
                        audio=make_audio(torch.zeros(1, 3200), 16000))
    images, out, report = nodes_restore.SpinBotFaceRestore().restore(
        model, "buffalo_l", 1.0, True, 0.5, "auto", 2, video=video)
    assert out.frame_count == 2 and out.fps == FPS and out.audio is not None
    result = out.read()
    inside = frame_mask(ASTRONAUT_KPS, 512, 512)
    changed = (result[0] != frames[0]).any(-1)
    assert not changed[~inside].any() and changed[inside].mean() > 0.5
    assert np.array_equal(result[1], frames[1])  # no face found there
    assert images.shape == (1, 512, 512, 3)
    assert "RestoreFormer" in report and "fp32 on cpu" in report
    assert "2 frames, 1 faces restored" in report and "(1)" in report
    # the same inputs again: the finished video is reused, the model does not run
    _images, again, report = nodes_restore.SpinBotFaceRestore().restore(
        model, "buffalo_l", 1.0, True, 0.5, "auto", 2, video=video)
    assert again.identity() == out.identity() and "reused" in report


def test_node_needs_images_or_video(invert):
    with pytest.raises(MediaError, match="connect 'images' or 'video'"):
        nodes_restore.SpinBotFaceRestore().restore(invert, "buffalo_l", 1.0, True, 0.5, "auto", 2)


@pytest.fixture
def known_node(spinbot_dirs, monkeypatch):
    """The node's detector pack present (tiny SCRFD) but replaced by the known astronaut face."""
    from tests.factory_lipsync_faces import tiny_buffalo_l

    tiny_buffalo_l(spinbot_dirs["models"] / "insightface")
    detector = KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)])
    monkeypatch.setattr(nodes_restore, "load_detector", lambda *a, **k: detector)
    monkeypatch.setattr(runtime, "torch_device", lambda: CPU)
    return detector


def test_node_image_in_gives_image_and_video_out(known_node, invert, astronaut):
    images = torch.from_numpy(np.stack([astronaut] * 2).astype(np.float32) / 255.0)
    out, video, report = nodes_restore.SpinBotFaceRestore().restore(
        invert, "buffalo_l", 1.0, True, 0.5, "auto", 4, images=images)
    inside = frame_mask(ASTRONAUT_KPS, 512, 512)
    changed = (out != images).any(-1).numpy()
    assert out.shape == images.shape and out.dtype == torch.float32
    assert changed[:, inside].mean() > 0.95 and not changed[:, ~inside].any()
    assert video.frame_count == 2 and video.fps == nodes_restore.IMAGE_FPS
    assert np.abs(video.read().astype(np.int16) - np.round(out.numpy() * 255)).max() <= 1
    assert "2 frames, 2 faces restored" in report


def test_node_takes_a_core_video(known_node, invert, astronaut, spinbot_dirs):
    from spinbot.nodes.video.load import to_core_video

    source = write_video("restore_core_src", FPS, iter([np.stack([astronaut] * 3)]),
                         audio=make_audio(torch.zeros(1, 1920), 16000))
    core, _path = to_core_video(source)
    assert runtime.is_core_video(core)
    _images, out, report = nodes_restore.SpinBotFaceRestore().restore(
        invert, "buffalo_l", 1.0, True, 0.5, "auto", 4, video=core)
    assert out.frame_count == 3 and out.fps == FPS and out.audio is not None
    assert "3 frames, 3 faces restored" in report


# --------------------------------------------------------------------------- real ComfyUI

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests import factory
    from tests.comfyui_server import ComfyUI

    base = tmp_path_factory.mktemp("comfy_restore")
    factory.build(base / "models", only=["facerestore_models", "insightface"])
    server = ComfyUI(COMFYUI_PATH, str(base))
    yield server
    server.stop()


@pytest.mark.comfyui
@pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")
def test_face_restore_runs_in_a_real_comfyui(comfy, astronaut):
    from PIL import Image

    info = comfy.get("/object_info")
    restore = info["SpinBotFaceRestore"]["input"]
    assert restore["optional"]["video"][0] == "SPINBOT_VIDEO,VIDEO"
    assert "RestoreFormer.pth" in info["SpinBotFaceRestoreModel"]["input"]["required"][
        "model_name"][0]
    Image.fromarray(astronaut).resize((256, 256)).save(os.path.join(comfy.base_dir, "input",
                                                                    "face.png"))
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "2": {"class_type": "SpinBotFaceRestoreModel",
              "inputs": {"model_name": "RestoreFormer.pth"}},
        "3": {"class_type": "SpinBotFaceRestore",
              "inputs": {"face_restore_model": ["2", 0], "face_detector": "buffalo_l",
                         "strength": 1.0, "only_largest_face": True, "codeformer_fidelity": 0.5,
                         "precision": "auto", "faces_per_batch": 4, "images": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0],
                                                    "filename_prefix": "restored"}},
    }
    entry = comfy.wait(comfy.queue(graph), timeout=600)
    saved = entry["outputs"]["4"]["images"][0]
    path = os.path.join(comfy.base_dir, "output", saved.get("subfolder", ""), saved["filename"])
    assert Image.open(path).size == (256, 256)


def test_node_without_the_detector_pack_names_the_folder(spinbot_dirs, invert, astronaut):
    images = torch.from_numpy(astronaut[None].astype(np.float32) / 255.0)
    with pytest.raises(MissingModelError, match="'insightface'"):
        nodes_restore.SpinBotFaceRestore().restore(invert, "buffalo_l", 1.0, True, 0.5, "auto",
                                                   4, images=images)


def test_nan_frames_are_named_before_any_work(invert, astronaut):
    images = torch.from_numpy(np.stack([astronaut] * 3).astype(np.float32) / 255.0)
    images[2, 10, 10, 0] = float("nan")
    with pytest.raises(MediaError, match="frame\\(s\\) 2 contain NaN"):
        restore_images(invert, KnownFaces([(ASTRONAUT_BOX, ASTRONAUT_KPS)]), images,
                       RestoreSettings(), RestoreStats(), CPU)
    assert invert.calls == 0
