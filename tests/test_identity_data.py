"""Identity training data: face crops on a real face, buckets, captions, hash, folders, bad photos.

The tiny SCRFD of the factory boxes random places, so the crop tests use an independent real
face detector: scikit-image's LBP frontal-face cascade (``skimage.feature.Cascade`` with
``data.lbp_frontal_face_cascade_filename()``; OpenCV 5 dropped its Haar ``CascadeClassifier``),
wrapped to the pack's FaceDetector protocol. On ``skimage.data.astronaut()`` (512x512) it boxes the
face at about (175, 70)-(268, 163); the eyes lie at about (205, 101) and (245, 104) (read off
the photo), so the eye region is (195, 92)-(255, 112).

For the identity check the test recogniser embeds a face as its 16x16 grey patch (zero mean,
unit norm): a weak but real measure that scores the astronaut's photos alike and another face
(an LFW face from ``skimage.data.lfw_subset()``) lower, which is what the outlier rule needs.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from spinbot.nodes.identity import dataset as ds
from spinbot.nodes.identity.faces import Face, normalise
from tests.media import astronaut

pytest.importorskip("skimage")

ASTRONAUT_FACE = (175, 70, 268, 163)
EYES = (195, 92, 255, 112)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


class CascadeDetector:
    """scikit-image's LBP face cascade as a FaceDetector; overlapping hits merged (largest kept),
    as a real detector's NMS does."""

    def __init__(self, min_size: int = 60):
        from skimage import data
        from skimage.feature import Cascade

        self.cascade = Cascade(data.lbp_frontal_face_cascade_filename())
        self.min_size = min_size
        self.calls = 0
        self.seen: dict[tuple, list[tuple]] = {}

    def detect(self, frame: np.ndarray) -> list[tuple]:
        # The same photos recur across tests: remember boxes by content (the cascade is slow).
        key = (frame.shape, hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest())
        if key not in self.seen:
            self.seen[key] = self._detect(frame)
        return list(self.seen[key])

    def _detect(self, frame: np.ndarray) -> list[tuple]:
        self.calls += 1
        top = int(min(frame.shape[:2]) * 0.9)
        if top <= self.min_size:
            return []
        hits = self.cascade.detect_multi_scale(img=frame, scale_factor=1.2, step_ratio=1,
                                               min_size=(self.min_size, self.min_size),
                                               max_size=(top, top))
        boxes = sorted(((float(h["c"]), float(h["r"]), float(h["c"] + h["width"]),
                         float(h["r"] + h["height"]), 1.0) for h in hits),
                       key=lambda b: -(b[2] - b[0]))
        kept: list[tuple] = []
        for b in boxes:
            if all(_iou(b, k) < 0.3 for k in kept):
                kept.append(b)
        return kept


class PatchRecognizer:
    """Faces from the cascade, embedded as their 16x16 grey patch (zero mean, unit norm)."""

    def __init__(self, detector: CascadeDetector):
        self.detector = detector

    def embed(self, frame: np.ndarray) -> list[Face]:
        faces = []
        for x1, y1, x2, y2, score in self.detector.detect(frame):
            patch = Image.fromarray(frame[int(y1):int(y2), int(x1):int(x2)]).convert("L")
            v = np.asarray(patch.resize((16, 16), Image.BILINEAR), np.float32).reshape(-1)
            faces.append(Face((x1, y1, x2, y2), score, None, normalise(v - v.mean())))
        return faces


@pytest.fixture(scope="module")
def detector() -> CascadeDetector:
    return CascadeDetector()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return astronaut()


def _scaled(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((round(w * factor), round(h * factor)),
                                                  Image.BICUBIC))


def _blank(h: int = 400, w: int = 400) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def _three(face: np.ndarray) -> list[tuple[str, np.ndarray]]:
    # Three different photos of one face: as is, mirrored, and a portrait cut (non-square).
    return [("front.png", face), ("mirror.png", np.ascontiguousarray(face[:, ::-1])),
            ("tall.png", np.ascontiguousarray(face[:, 60:380]))]


# --------------------------------------------------------------------------- crops

def test_the_detector_used_here_finds_the_astronauts_face(detector, face):
    boxes = detector.detect(face)
    assert len(boxes) == 1 and _iou(boxes[0], ASTRONAUT_FACE) > 0.7, boxes


def test_face_crops_of_the_astronaut_contain_the_face_and_eyes(detector, face):
    photos = _three(face)
    result = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0)
    assert [i.name for i in result.items] == ["front.png", "mirror.png", "tall.png"]
    for (name, photo), item in zip(photos, result.items):
        assert item.kind == "face" and item.image.shape == (512, 512, 3)
        assert item.image.dtype == np.uint8
        box = detector.detect(photo)[0]
        x1, y1, x2, y2 = ds.face_window(box, photo.shape[1], photo.shape[0])
        assert x2 - x1 == y2 - y1  # square
        # The window holds the detected face with context on every side it has room for.
        assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]
        assert (x2 - x1) >= 2.0 * (box[2] - box[0])
        # ... and the eyes (mirrored for the mirrored photo; shifted for the portrait cut).
        ex1, ey1, ex2, ey2 = EYES
        if name == "mirror.png":
            ex1, ex2 = face.shape[1] - ex2, face.shape[1] - ex1
        if name == "tall.png":
            ex1, ex2 = ex1 - 60, ex2 - 60
        assert x1 <= ex1 and x2 >= ex2 and y1 <= ey1 and y2 >= ey2, (name, (x1, y1, x2, y2))
        # The item is that window's pixels at 512 (not some other part of the photo).
        expected = np.asarray(Image.fromarray(photo[y1:y2, x1:x2]).resize((512, 512),
                                                                          Image.BICUBIC))
        assert np.abs(item.image.astype(int) - expected.astype(int)).mean() < 3.0
        # Independent check: the cascade finds one face in the crop, centred, about 1/2.2 wide.
        again = detector.detect(item.image)
        assert again, name
        fx = (again[0][0] + again[0][2]) / 2 / 512
        fy = (again[0][1] + again[0][3]) / 2 / 512
        assert abs(fx - 0.5) < 0.1 and abs(fy - 0.5) < 0.12, (name, again)
        assert 0.3 < (again[0][2] - again[0][0]) / 512 < 0.6, (name, again)


def test_a_face_at_the_photo_edge_gives_a_crop_inside_the_photo():
    box = (5.0, 300.0, 105.0, 400.0, 1.0)  # near the left and bottom edges of a 640x420 photo
    x1, y1, x2, y2 = ds.face_window(box, 640, 420)
    assert (x1, x2 - x1, y2 - y1) == (0, 220, 220) and y2 == 420
    # A narrow photo gives the largest square it has.
    x1, y1, x2, y2 = ds.face_window((10, 10, 110, 110, 1.0), 150, 600)
    assert (x2 - x1, y2 - y1) == (150, 150) and x1 == 0


# --------------------------------------------------------------------------- buckets

@pytest.mark.parametrize("resolution", [512, 768, 1024])
def test_buckets_are_multiples_of_64_within_the_pixel_budget(resolution):
    found = ds.buckets(resolution)
    assert (resolution, resolution) in found
    for w, h in found:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= resolution * resolution
        assert resolution // 2 <= min(w, h) and max(w, h) <= resolution * 2
        assert (h, w) in found
    # Each width has a bucket with the tallest height that fits (no whole 64-px row wasted).
    for w in {w for w, _h in found}:
        tallest = max(h for ww, h in found if ww == w)
        assert tallest + 64 > min(resolution * 2, resolution * resolution // w)


def test_non_square_photos_give_wide_crops_in_their_aspect_bucket(detector, face):
    portrait = np.full((900, 600, 3), 200, np.uint8)
    portrait[40:552, 44:556] = face
    landscape = np.full((600, 1000, 3), 200, np.uint8)
    landscape[30:542, 250:762] = face
    photos = [("portrait.png", portrait), ("landscape.png", landscape), ("square.png", face)]
    result = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=2)
    wide = {i.name: i for i in result.items if i.kind == "wide"}
    assert set(wide) == {"portrait.png", "landscape.png"}  # the most room around the face
    assert wide["portrait.png"].image.shape[:2] == (640, 384)  # h, w: 600/900 -> 384/640
    assert wide["landscape.png"].image.shape[:2] == (384, 640)  # 1000/600 = 640/384
    for item in result.items:
        h, w = item.image.shape[:2]
        assert h % 64 == 0 and w % 64 == 0 and h * w <= 512 * 512
    # The face crops stay square.
    assert all(i.image.shape[:2] == (512, 512) for i in result.items if i.kind == "face")


def test_nearest_bucket_follows_the_aspect_ratio():
    assert ds.nearest_bucket(600, 900, 512) == (384, 640)
    assert ds.nearest_bucket(1000, 600, 512) == (640, 384)
    assert ds.nearest_bucket(2000, 600, 512) == (832, 256)  # 3.33 -> 3.25
    assert ds.nearest_bucket(1000, 1000, 512) == (512, 512)


# --------------------------------------------------------------------------- captions, hash

def test_captions_are_the_trigger_sentence_plus_the_users_caption(detector, face):
    photos = _three(face)
    captions = {"front.png": "  smiling,  orange suit ", "mirror": "mirrored photo"}
    result = ds.prepare_photos(photos, " ohwx ", 512, detector, captions=captions, wide_crops=1)
    by = {(i.name, i.kind): i.caption for i in result.items}
    assert by[("front.png", "face")] == "photo of ohwx person, smiling, orange suit"
    assert by[("mirror.png", "face")] == "photo of ohwx person, mirrored photo"  # by stem
    assert by[("tall.png", "face")] == "photo of ohwx person"
    wide = [i for i in result.items if i.kind == "wide"]
    assert len(wide) == 1 and wide[0].caption == by[(wide[0].name, "face")]


def test_dataset_hash_is_stable_and_sees_pixels_captions_and_settings(detector, face):
    photos = _three(face)
    first = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0)
    again = ds.prepare_photos([(n, p.copy()) for n, p in photos], "sks", 512, detector,
                              wide_crops=0)
    assert first.dataset_hash == again.dataset_hash and len(first.dataset_hash) == 64
    changed_pixel = [(n, p.copy()) for n, p in photos]
    changed_pixel[0][1][120, 220] ^= 0xFF  # one pixel inside the face
    variants = {
        "pixel": ds.prepare_photos(changed_pixel, "sks", 512, detector, wide_crops=0),
        "caption": ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0,
                                     captions={"tall.png": "a portrait"}),
        "trigger": ds.prepare_photos(photos, "ohwx", 512, detector, wide_crops=0),
        "resolution": ds.prepare_photos(photos, "sks", 256, detector, wide_crops=0),
    }
    for what, other in variants.items():
        assert other.dataset_hash != first.dataset_hash, what


# --------------------------------------------------------------------------- folders

def _save_photos(folder, photos):
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in photos:
        Image.fromarray(img).save(folder / name)


def test_photo_folder_loads_photos_and_their_caption_files(spinbot_dirs, detector, face):
    folder = spinbot_dirs["input"] / "me"
    _save_photos(folder, [(n.replace(".png", ".jpg") if n == "tall.png" else n, p)
                          for n, p in _three(face)])
    (folder / "front.txt").write_text("at the space centre\n", encoding="utf-8")
    (folder / "notes.md").write_text("not a photo", encoding="utf-8")
    # A phone photo stored sideways with an EXIF orientation tag (6: rotate 90 clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(face, 1))).save(folder / "phone.jpg", exif=exif)
    photos = ds.load_photo_folder("me")
    assert [n for n, _ in photos] == ["front.png", "mirror.png", "phone.jpg", "tall.jpg"]
    by = dict(photos)
    assert np.array_equal(by["front.png"], face)
    assert by["tall.jpg"].shape == (512, 320, 3)
    # EXIF applied: the phone photo comes back upright, the same picture as the original.
    assert by["phone.jpg"].shape == face.shape
    assert np.abs(by["phone.jpg"].astype(int) - face.astype(int)).mean() < 6
    captions = ds.load_folder_captions("me")
    assert captions == {"front.png": "at the space centre"}
    result = ds.prepare_photos(photos, "sks", 512, detector, captions=captions, wide_crops=0)
    assert len(result.items) == 4
    assert result.items[0].caption == "photo of sks person, at the space centre"


@pytest.mark.parametrize("subfolder, message", [
    ("../secrets", "leaves ComfyUI's input folder"),
    ("me/../../x", "leaves ComfyUI's input folder"),
    ("/etc", "not an absolute path"),
    ("", "no photo folder given"),
    ("missing", "not found in ComfyUI's input folder"),
])
def test_photo_folder_outside_input_or_missing_is_refused(spinbot_dirs, subfolder, message):
    (spinbot_dirs["input"] / "me").mkdir()
    secrets = spinbot_dirs["input"].parent / "secrets"
    _save_photos(secrets, [("a.png", _blank())])
    with pytest.raises(ds.IdentityDataError, match=message):
        ds.load_photo_folder(subfolder)


def test_links_leading_out_of_input_are_refused(spinbot_dirs):
    outside = spinbot_dirs["input"].parent / "outside"
    _save_photos(outside, [("a.png", _blank())])
    os.symlink(outside, spinbot_dirs["input"] / "linked")
    with pytest.raises(ds.IdentityDataError, match="leaves ComfyUI's input folder"):
        ds.load_photo_folder("linked")
    (spinbot_dirs["input"] / "me").mkdir()
    os.symlink(outside / "a.png", spinbot_dirs["input"] / "me" / "a.png")
    with pytest.raises(ds.IdentityDataError, match="'a.png' in 'me' links outside"):
        ds.load_photo_folder("me")
    # A caption file linking out is refused too (its text would leak into the LoRA's data).
    (spinbot_dirs["input"] / "me" / "a.png").unlink()
    _save_photos(spinbot_dirs["input"] / "me", [("a.png", _blank())])
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    os.symlink(outside / "secret.txt", spinbot_dirs["input"] / "me" / "a.txt")
    with pytest.raises(ds.IdentityDataError, match="caption 'a.txt' in 'me' links outside"):
        ds.load_folder_captions("me")


def test_empty_folder_and_unreadable_photo_are_named(spinbot_dirs):
    (spinbot_dirs["input"] / "empty").mkdir()
    with pytest.raises(ds.IdentityDataError, match="'empty' has no photos"):
        ds.load_photo_folder("empty")
    folder = spinbot_dirs["input"] / "me"
    _save_photos(folder, [("a.png", _blank())])
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ds.IdentityDataError, match="photo 'b.jpg' in 'me' could not be read"):
        ds.load_photo_folder("me")


# --------------------------------------------------------------------------- bad input

def test_fewer_than_three_usable_photos_is_an_error_naming_each_dropped_photo(detector, face):
    photos = [("one.png", face), ("two.png", np.ascontiguousarray(face[:, ::-1])),
              ("wall.png", _blank()), ("thumb.png", _blank(40, 60))]
    with pytest.raises(ds.IdentityDataError) as err:
        ds.prepare_photos(photos, "sks", 512, detector)
    message = str(err.value)
    assert "at least 3 usable photos" in message and "got 2 of 4" in message
    assert "wall.png: no face found" in message
    assert "thumb.png: tiny image (60x40 px" in message


def test_photos_without_a_face_or_too_small_are_dropped_with_a_note(detector, face):
    small = _scaled(face, 0.3)  # the face is ~28 px
    photos = _three(face) + [("wall.png", _blank()), ("far.png", small)]
    result = ds.prepare_photos(photos, "sks", 512, CascadeDetector(min_size=20), wide_crops=0)
    assert result.used == ["front.png", "mirror.png", "tall.png"]
    assert "dropped wall.png: no face found" in result.notes
    assert any(n.startswith("dropped far.png: face too small (") for n in result.notes), \
        result.notes
    assert set(result.dropped) == {"wall.png", "far.png"}


def test_several_faces_use_a_dominant_one_and_drop_a_tie(detector, face):
    pair = np.full((512, 1024, 3), 200, np.uint8)
    pair[:, :512], pair[:, 512:] = face, face[:, ::-1]  # two faces of the same size
    group = np.full((768, 1280, 3), 200, np.uint8)
    group[:, :768] = _scaled(face, 1.5)  # the subject, close
    group[100:612, 768:] = face            # someone behind, smaller
    photos = _three(face) + [("pair.png", pair), ("group.png", group)]
    result = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0)
    assert "group.png" in result.used and "pair.png" not in result.used
    assert any(n.startswith("dropped pair.png: 2 faces of similar size") for n in result.notes)
    group_note = [n for n in result.notes if n.startswith("group.png:")]
    assert group_note and "used the largest" in group_note[0], result.notes
    crop = [i for i in result.items if i.name == "group.png"][0].image
    # The crop is of the large face: the cascade finds one face filling ~1/2.2 of it.
    again = detector.detect(crop)
    assert again and (again[0][2] - again[0][0]) / 512 > 0.3


def test_the_largest_policy_keeps_a_photo_with_faces_of_similar_size(detector, face):
    pair = np.full((512, 1024, 3), 200, np.uint8)
    pair[:, :512], pair[:, 512:] = face, face[:, ::-1]
    photos = _three(face) + [("pair.png", pair)]
    result = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0,
                               several_faces="largest")
    assert "pair.png" in result.used
    assert any(n.startswith("pair.png: 2 faces; used the largest") for n in result.notes)
    with pytest.raises(ds.IdentityDataError, match="several_faces must be one of"):
        ds.prepare_photos(photos, "sks", 512, detector, several_faces="all")


def _lfw_face() -> np.ndarray:
    from skimage import data

    lfw = (data.lfw_subset()[2] * 255).astype(np.uint8)  # a face from LFW (not the astronaut)
    big = np.asarray(Image.fromarray(lfw).resize((200, 200), Image.BICUBIC))
    canvas = np.full((400, 400, 3), 128, np.uint8)
    canvas[100:300, 100:300] = big[..., None]
    return canvas


def test_a_different_persons_photo_is_dropped_by_the_identity_check(detector, face):
    photos = [("a.png", face), ("b.png", np.clip(face * 0.85, 0, 255).astype(np.uint8)),
              ("c.png", np.ascontiguousarray(face[20:, 30:])), ("d.png", _scaled(face, 1.2)),
              ("stranger.png", _lfw_face())]
    recognizer = PatchRecognizer(detector)
    result = ds.prepare_photos(photos, "sks", 512, detector, recognizer=recognizer, wide_crops=0)
    assert "stranger.png" not in result.used and len(result.used) == 4
    note = [n for n in result.notes if n.startswith("dropped stranger.png: looks like a "
                                                    "different person")]
    assert note, result.notes
    # Without the recogniser nothing checks identity, so the stranger stays.
    plain = ds.prepare_photos(photos, "sks", 512, detector, wide_crops=0)
    assert "stranger.png" in plain.used


def test_identity_outliers_rule():
    rng = np.random.default_rng(0)
    person = normalise(rng.standard_normal(512))
    other = normalise(rng.standard_normal(512))

    def like(v, spread=0.8):  # cosine with v about 0.6, like one person's ArcFace embeddings
        return normalise(v + spread * normalise(rng.standard_normal(512)))

    same = {f"p{i}": like(person) for i in range(6)}
    assert ds.identity_outliers(same)[0] == []
    mixed = dict(same, stranger=like(other))
    names, scores, median = ds.identity_outliers(mixed)
    assert names == ["stranger"] and scores["stranger"] < median - ds.OUTLIER_MARGIN
    assert ds.identity_outliers({"a": person, "b": other})[0] == []  # two: no odd one out


def test_too_few_after_the_identity_check_is_an_error_naming_the_stranger(detector, face):
    photos = [("a.png", face), ("b.png", np.clip(face * 0.85, 0, 255).astype(np.uint8)),
              ("stranger.png", _lfw_face())]
    with pytest.raises(ds.IdentityDataError) as err:
        ds.prepare_photos(photos, "sks", 512, detector, recognizer=PatchRecognizer(detector),
                          wide_crops=0)
    assert "stranger.png: looks like a different person" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"trigger": "  "}, "trigger word is empty"),
    ({"resolution": 500}, "multiple of 64"),
    ({"wide_crops": -1}, "wide_crops must be 0 or more"),
])
def test_bad_settings_are_refused(detector, face, kwargs, message):
    args = {"trigger": "sks", "resolution": 512, "wide_crops": 2, **kwargs}
    with pytest.raises(ds.IdentityDataError, match=message):
        ds.prepare_photos(_three(face), args["trigger"], args["resolution"], detector,
                          wide_crops=args["wide_crops"])


def test_repeated_photo_names_are_refused(detector, face):
    with pytest.raises(ds.IdentityDataError, match="repeated: a.png"):
        ds.prepare_photos([("a.png", face), ("a.png", face), ("b.png", face)], "sks", 512,
                          detector)
