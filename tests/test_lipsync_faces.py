"""Face boxes, smoothing and paste-back (known boxes on a real face), and the insightface path.

Random-weight detectors find noise, so the crop/smooth/paste logic is tested with KNOWN boxes on
skimage's astronaut (face about x 178-268, y 50-160 at 512x512); the tiny SCRFD pack only proves
that insightface's own loading and decoding run on the pack layout.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinbot.nodes.lipsync import faces, paste
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.media import MediaError

FACE_BOX = (178, 50, 268, 160)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


def _full_mask(shape, box, region=paste.MouthRegion()):
    x1, y1, x2, y2 = box
    mask = np.zeros(shape[:2], np.float32)
    mask[y1:y2, x1:x2] = paste.mouth_mask(y2 - y1, x2 - x1, region)
    return mask


# --------------------------------------------------------------------------- paste-back

def test_paste_changes_only_the_mouth_region(astronaut):
    frame = astronaut.copy()
    generated = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0))
    paste.paste_mouth(frame, generated, FACE_BOX)
    mask = _full_mask(frame.shape, FACE_BOX)
    outside = mask == 0
    assert np.array_equal(frame[outside], astronaut[outside])  # pixel-exact outside
    changed = np.any(frame != astronaut, axis=-1)
    assert changed.sum() > 0.5 * (mask > 0.5).sum()
    rows = np.flatnonzero(changed.any(axis=1))
    # Only the lower part of the face box (the part Wav2Lip regenerates) is touched.
    assert rows.min() >= FACE_BOX[1] + 0.45 * (FACE_BOX[3] - FACE_BOX[1])
    assert rows.max() < FACE_BOX[3]


def test_mouth_mask_is_feathered_and_zero_at_the_box_edge():
    mask = paste.mouth_mask(110, 90, paste.MouthRegion(feather=0.4))
    assert mask.min() == 0.0 and mask.max() == pytest.approx(1.0)
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0
    soft = ((mask > 0) & (mask < 1)).sum()
    assert soft > 0.2 * (mask > 0).sum()
    hard = paste.mouth_mask(110, 90, paste.MouthRegion(feather=0.0))
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_color_match_pulls_a_tinted_mouth_back_to_the_skin(astronaut):
    x1, y1, x2, y2 = FACE_BOX
    crop = torch.from_numpy(astronaut[y1:y2, x1:x2].copy()).permute(2, 0, 1).float() / 255
    tinted = (crop + torch.tensor([0.25, -0.1, -0.1])[:, None, None]).clamp(0, 1)
    mask = _full_mask(astronaut.shape, FACE_BOX) > 0
    errors = {}
    for match in (False, True):
        frame = astronaut.copy()
        paste.paste_mouth(frame, tinted, FACE_BOX, color_match=match)
        errors[match] = np.abs(frame[mask].astype(float) - astronaut[mask]).mean()
    assert errors[True] < 0.5 * errors[False]


def test_paste_resize_modes_and_upscaled_crops(astronaut):
    gen = torch.Generator().manual_seed(1)
    outside = _full_mask(astronaut.shape, FACE_BOX) == 0
    results = []
    # A 96x96 crop is enlarged to the 90x110 box (modes differ); a 4x-upscaled crop is shrunk.
    for generated, mode in [(torch.rand(3, 96, 96, generator=gen), m) for m in paste.RESIZE_MODES] \
            + [(torch.rand(3, 384, 384, generator=gen), "bicubic")]:
        frame = astronaut.copy()
        paste.paste_mouth(frame, generated, FACE_BOX, resize_mode=mode)
        assert np.array_equal(frame[outside], astronaut[outside])
        results.append(frame)
    assert not np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_resize_image_matches_the_torch_fallback():
    image = np.random.default_rng(0).random((96, 96, 3), dtype=np.float32)
    big = paste.resize_image(image, 150, 120, "bilinear")
    assert big.shape == (150, 120, 3)
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=(150, 120), mode="bilinear",
        align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(big - reference).max() < 0.02


# --------------------------------------------------------------------------- boxes

def test_smoothing_reduces_jitter_of_a_moving_face():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    x = 100 + 2.0 * t + rng.normal(0, 3, t.size)
    y = 80 + 0.5 * t + rng.normal(0, 3, t.size)
    track = [(x[i], y[i], x[i] + 90, y[i] + 110, 0.9) for i in t]
    smoothed = faces.smooth_boxes(track, 5)
    raw_jitter = np.std(np.diff(np.array(track)[:, :4], axis=0), axis=0)
    new_jitter = np.std(np.diff(np.array(smoothed)[:, :4], axis=0), axis=0)
    assert np.all(new_jitter < 0.5 * raw_jitter)
    # A centred window follows the motion without lag: the mean offset stays near zero.
    lag = np.mean(np.array(smoothed)[5:-5, 0] - (100 + 2.0 * t[5:-5]))
    assert abs(lag) < 1.5
    assert faces.smooth_boxes(track, 1) == track


def test_smoothing_does_not_cross_frames_without_a_face():
    track = [(0, 0, 10, 10, 1.0)] * 3 + [None] + [(100, 100, 110, 110, 1.0)] * 3
    smoothed = faces.smooth_boxes(track, 5)
    assert smoothed[3] is None
    assert smoothed[2][:4] == (0, 0, 10, 10)
    assert smoothed[4][:4] == (100, 100, 110, 110)


def test_choose_face_largest_or_by_position():
    left_small = (10, 10, 50, 50, 0.9)
    right_big = (200, 10, 300, 120, 0.8)
    middle = (100, 10, 160, 80, 0.99)
    boxes = [right_big, left_small, middle]
    assert faces.choose_face(boxes, -1) == right_big
    assert faces.choose_face(boxes, 0) == left_small
    assert faces.choose_face(boxes, 1) == middle
    assert faces.choose_face(boxes, 3) is None
    assert faces.choose_face([], -1) is None


def test_crop_box_pads_and_clips():
    pads = faces.Pads(top=5, bottom=10, left=3, right=4)
    assert faces.crop_box((20.4, 30.6, 80, 90, 1), pads, 200, 200) == (17, 26, 84, 100)
    assert faces.crop_box((-20, -5, 195, 198, 1), pads, 200, 200) == (0, 0, 199, 200)
    assert faces.crop_box((300, 300, 400, 400, 1), pads, 200, 200) is None


def test_missing_faces_policy_lists_frames():
    crops = [(0, 0, 4, 4), None, (0, 0, 4, 4), None]
    assert faces.missing_faces(crops, "pass through") == [1, 3]
    with pytest.raises(MediaError, match=r"frame 1, 3"):
        faces.missing_faces(crops, "error")
    with pytest.raises(MediaError, match="policy"):
        faces.missing_faces(crops, "ignore")


# --------------------------------------------------------------------------- insightface

@pytest.fixture
def tiny_pack(spinbot_dirs):
    from tests.factory_lipsync_faces import tiny_buffalo_l

    return tiny_buffalo_l(spinbot_dirs["models"] / "insightface")[0]


def test_insightface_loads_the_tiny_pack_and_detects(tiny_pack, astronaut):
    pytest.importorskip("insightface")
    assert faces.list_detector_packs() == ["buffalo_l"]
    detector = faces.load_detector("buffalo_l", det_size=320)
    scrfd = detector.analysis.det_model
    assert scrfd.taskname == "detection" and scrfd.use_kps and scrfd.fmc == 3
    assert list(detector.analysis.models) == ["detection"]
    boxes = detector.detect(astronaut)
    assert boxes and all(len(b) == 5 for b in boxes)
    assert all(b[0] < b[2] and b[1] < b[3] and 0.5 <= b[4] <= 1 for b in boxes)
    # Deterministic: the same frame gives the same boxes.
    assert detector.detect(astronaut) == boxes


def test_missing_pack_names_folder_and_source(spinbot_dirs):
    with pytest.raises(MissingModelError) as info:
        faces.load_detector("buffalo_l")
    message = str(info.value)
    assert "insightface" in message and "models/buffalo_l/det_10g.onnx" in message
    assert "buffalo_l.zip" in message
    with pytest.raises(MissingModelError):
        faces.find_pack("../escape")


def test_broken_pack_is_a_clear_error(spinbot_dirs):
    pytest.importorskip("insightface")
    pack = spinbot_dirs["models"] / "insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / "scrfd_10g_bnkps.onnx").write_bytes(b"not an onnx file")
    assert faces.list_detector_packs() == ["antelopev2"]
    with pytest.raises(MediaError, match="antelopev2"):
        faces.load_detector("antelopev2")
