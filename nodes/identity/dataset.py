"""Training data for an identity LoRA: face crops, a few wider crops, buckets, captions, a hash.

From a handful of photos of one person (an IMAGE batch, or a folder under ComfyUI's ``input/``)
this makes the images and captions the trainer sees:

- **Face crops** (one per photo, square, ``resolution`` x ``resolution``): a square of
  ``FACE_CONTEXT`` (2.2) times the face box's longer side, centred on the face. The detector's
  box runs from the brows to the chin; at 2.2x the face fills about 45% of the crop's width, which
  keeps hair, ears, jaw line and the top of the shoulders (what makes a likeness) at the highest
  pixel density the resolution allows, while tighter crops (1.5x) cut the head and teach the model
  cropped heads. Square because the face itself has no preferred aspect and square is the size
  every base model was trained at most. Near the photo's edge the square slides inwards to stay
  inside the photo (no padding: padded borders would be learnt as part of the look); a photo too
  narrow for the full square gives the largest square it has.
- **Wide crops** (``wide_crops`` in total, not per photo): upper-body crops, so the LoRA does not
  only know the person as a close-up. They come from the photos with the most room around the
  face, one per photo, the crop ``WIDE_CONTEXT`` (5) face sizes on its short side with the face
  in the upper third (the body is below it), at the photo's aspect ratio snapped to a resolution
  bucket: a portrait photo gives a portrait crop, as in kohya's aspect-ratio bucketing. A photo
  whose wide crop would be barely larger than its face crop (under ``WIDE_MIN_GAIN``) gives none.
- **Buckets** (`buckets`): kohya-style sizes of about ``resolution^2`` pixels, both sides
  multiples of 64 between resolution/2 and resolution*2 (kohya's defaults for
  ``min_bucket_reso``/``max_bucket_reso`` with ``bucket_reso_steps`` 64): 512 -> 512x512,
  576x448, 640x384, 704x320, 768x320 ... and their transposes. Multiples of 64 keep the SD VAE's
  8x latent a multiple of 8, which SDXL's UNet needs.
- **Captions**: ``photo of <trigger> person``, then ``, <user caption>`` when one is given for
  the photo (a ``captions`` dict by photo name or stem; `load_folder_captions` reads a ``.txt``
  beside each photo, kohya's convention).
- **Bad input** (notes naming the photos, or `IdentityDataError` when fewer than ``MIN_PHOTOS``
  remain): tiny images, no face, several faces without a clearly dominant one (the largest must
  have ``DOMINANT_AREA`` times the area of the next; the "largest" policy takes it anyway),
  faces under ``MIN_FACE`` pixels, and, when a recogniser is given, photos of a different person
  (see `identity_outliers`).

``dataset_hash`` covers every item's pixels and caption and the settings, so a trainer can tell
"same data" apart from "changed data" for resuming and metadata.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from .. import runtime
from ..lipsync.faces import Box, FaceDetector
from ..media import MediaError
from .faces import Recognizer, as_rgb_uint8

MIN_PHOTOS = 3            # below this a LoRA learns one photo, not a person (issue 16)
MIN_IMAGE = 64            # shorter side in pixels: nothing smaller holds a usable face
MIN_FACE = 64             # face box shorter side in pixels: a 64 px face is already enlarged
                          # 512/(64*2.2) = 3.6x in a 512 crop; smaller ones teach blur
SOFT_UPSCALE = 2.0        # face crops enlarged more than this get a note (kept)
FACE_CONTEXT = 2.2        # face crop side / face box longer side (see module docstring)
WIDE_CONTEXT = 5.0        # wide crop short side / face box longer side: head and upper body
WIDE_FACE_Y = 1 / 3       # face centre's height in a wide crop, from the top
WIDE_MIN_GAIN = 1.3       # a wide crop's short side must be this much larger than the face crop
DOMINANT_AREA = 2.0       # largest face's area / next face's area for "clearly the subject"
SEVERAL_FACES = ("dominant", "largest")  # policies for photos with several faces
OUTLIER_MARGIN = 0.2      # cosine below the group's median (see identity_outliers)
BUCKET_STEP = 64
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_PHOTO_SIDE = 4096     # folder photos are reduced to this longer side on load (RAM bound;
                          # crops at up to 2048 px never need more)
HASH_VERSION = "spinbot-identity-data-1"


class IdentityDataError(MediaError):
    """The photos cannot make a training set; the message names the photos and the reasons."""


@dataclass(frozen=True)
class TrainItem:
    """One training image: ``image`` uint8 [H,W,3] at a bucket size (H, W multiples of 64),
    its ``caption``, the source photo's ``name`` and ``kind`` ("face" or "wide")."""

    name: str
    image: np.ndarray
    caption: str
    kind: str = "face"


@dataclass
class PhotoSet:
    """The prepared training set: ``items``, human-readable ``notes`` (photos dropped or doubtful,
    by name), ``dataset_hash`` (sha256 hex of pixels, captions and settings), ``used`` (names of
    the photos that gave items) and ``dropped`` (name -> reason)."""

    items: list[TrainItem]
    notes: list[str]
    dataset_hash: str
    used: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        """Counts, bucket sizes and the notes, as lines of text."""
        sizes: dict[tuple[int, int], int] = {}
        for item in self.items:
            key = (item.image.shape[1], item.image.shape[0])
            sizes[key] = sizes.get(key, 0) + 1
        faces = sum(1 for i in self.items if i.kind == "face")
        lines = [f"{len(self.used)} photo(s) used, {len(self.dropped)} dropped; {len(self.items)} "
                 f"training image(s): {faces} face crop(s), {len(self.items) - faces} wide crop(s)",
                 "sizes: " + ", ".join(f"{w}x{h} x{n}" for (w, h), n in sorted(sizes.items())),
                 f"dataset hash {self.dataset_hash[:16]}"]
        return "\n".join(lines + self.notes)


# --------------------------------------------------------------------------- buckets

def buckets(resolution: int, step: int = BUCKET_STEP) -> list[tuple[int, int]]:
    """Kohya-style aspect buckets ``(width, height)`` for ``resolution`` (a multiple of ``step``):
    both sides multiples of ``step`` in [resolution/2, resolution*2], area <= resolution^2, each
    width with the tallest height that fits; sorted by aspect ratio (w/h). Raises ValueError for a
    resolution that is not a positive multiple of ``step``."""
    if resolution <= 0 or resolution % step:
        raise ValueError(f"resolution must be a positive multiple of {step}, got {resolution}")
    lo, hi, area = max(step, resolution // 2), resolution * 2, resolution * resolution
    found: set[tuple[int, int]] = set()
    for w in range(lo, hi + 1, step):
        h = min(hi, (area // w) // step * step)
        if h >= lo:
            found.add((w, h))
            found.add((h, w))
    return sorted(found, key=lambda wh: wh[0] / wh[1])


def nearest_bucket(width: float, height: float, resolution: int) -> tuple[int, int]:
    """The bucket ``(w, h)`` whose aspect ratio is closest (in log ratio) to ``width/height``."""
    aspect = math.log(width / height)
    return min(buckets(resolution), key=lambda wh: (abs(math.log(wh[0] / wh[1]) - aspect),
                                                   -wh[0] * wh[1]))


# --------------------------------------------------------------------------- geometry

def _fit_window(cx: float, cy: float, w: float, h: float, width: int,
                height: int) -> tuple[int, int, int, int]:
    """A w x h window centred at (cx, cy), shrunk (keeping its aspect) to fit a width x height
    photo and slid inside it; integer (x1, y1, x2, y2)."""
    scale = min(1.0, width / w, height / h)
    w, h = w * scale, h * scale
    x1 = min(max(cx - w / 2, 0.0), width - w)
    y1 = min(max(cy - h / 2, 0.0), height - h)
    x1i, y1i = int(round(x1)), int(round(y1))
    x2i = min(width, x1i + max(1, int(round(w))))
    y2i = min(height, y1i + max(1, int(round(h))))
    return x1i, y1i, x2i, y2i


def _resize(image: np.ndarray, window: tuple[int, int, int, int],
            size: tuple[int, int]) -> np.ndarray:
    x1, y1, x2, y2 = window
    crop = Image.fromarray(np.ascontiguousarray(image[y1:y2, x1:x2]))
    # Lanczos for reductions (sharp, no aliasing), bicubic for enlargements (no ringing halos).
    method = Image.LANCZOS if (x2 - x1) >= size[0] else Image.BICUBIC
    return np.asarray(crop.resize(size, method), dtype=np.uint8)


def face_window(box: Box, width: int, height: int,
                context: float = FACE_CONTEXT) -> tuple[int, int, int, int]:
    """Square window (x1, y1, x2, y2) of ``context`` x the face's longer side around its centre,
    inside a width x height photo (slid inwards, shrunk to the shorter side if needed)."""
    side = context * max(box[2] - box[0], box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return _fit_window(cx, cy, side, side, width, height)


def wide_window(box: Box, width: int, height: int, bucket: tuple[int, int],
                context: float = WIDE_CONTEXT) -> tuple[int, int, int, int]:
    """Window of the bucket's aspect whose shorter side is ``context`` x the face's longer side,
    the face centre at ``WIDE_FACE_Y`` of its height, inside the photo."""
    face = max(box[2] - box[0], box[3] - box[1])
    bw, bh = bucket
    short = context * face
    w, h = (short, short * bh / bw) if bw <= bh else (short * bw / bh, short)
    cx, fy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    cy = fy + h * (0.5 - WIDE_FACE_Y)
    return _fit_window(cx, cy, w, h, width, height)


# --------------------------------------------------------------------------- checks

def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def choose_subject(boxes: Sequence[Box], several_faces: str = "dominant"
                   ) -> tuple[Box | None, str | None]:
    """The subject's face box and a note, or (None, reason) when there is none or, with the
    ``"dominant"`` policy, several faces are too alike in size to tell which is the subject
    (largest < ``DOMINANT_AREA`` x next). ``"largest"`` always takes the largest face."""
    if several_faces not in SEVERAL_FACES:
        raise IdentityDataError(f"several_faces must be one of {SEVERAL_FACES}, got "
                                f"{several_faces!r}")
    if not boxes:
        return None, "no face found"
    ranked = sorted(boxes, key=_area, reverse=True)
    if len(ranked) == 1:
        return ranked[0], None
    ratio = _area(ranked[0]) / max(_area(ranked[1]), 1e-6)
    if ratio < DOMINANT_AREA and several_faces == "dominant":
        return None, (f"{len(ranked)} faces of similar size (largest {ratio:.1f}x the next, "
                      f"needs {DOMINANT_AREA:g}x): cannot tell which person to learn")
    return ranked[0], (f"{len(ranked)} faces; used the largest ({ratio:.1f}x the area of the "
                       "next)")


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _area(a) + _area(b) - inter  # type: ignore[arg-type]
    return inter / union if union > 0 else 0.0


def identity_outliers(embeddings: dict[str, np.ndarray],
                      margin: float = OUTLIER_MARGIN) -> tuple[list[str], dict[str, float], float]:
    """Photos that look like someone else: ``(names, mean similarity per photo, group median)``.

    Each photo's score is its mean cosine similarity to all the others; a photo whose score is
    more than ``margin`` (0.2) below the median score is an outlier. ArcFace scores one person's
    photos around 0.4-0.8 with each other and different people near 0, so a stranger among n
    photos of one person scores about 0.6*(n-2)/(n-1) lower than them: far beyond the margin, while
    light, age and pose spread within one person stay inside it. The median (not the mean) keeps a
    single stranger from dragging the reference down. Needs 3 photos (with 2, neither is the odd
    one); returns no outliers otherwise.
    """
    names = list(embeddings)
    if len(names) < 3:
        return [], {}, float("nan")
    e = np.stack([embeddings[n] for n in names]).astype(np.float32)
    sims = e @ e.T
    n = len(names)
    scores = (sims.sum(axis=1) - np.diag(sims)) / (n - 1)
    median = float(np.median(scores))
    per = {name: float(s) for name, s in zip(names, scores)}
    return [name for name in names if per[name] < median - margin], per, median


def _match_embedding(recognizer: Recognizer, photo: np.ndarray, box: Box) -> np.ndarray | None:
    """The recogniser's embedding of the face that overlaps ``box`` most (IoU >= 0.3)."""
    only_largest = getattr(recognizer, "embed_largest", None)
    if only_largest is not None:  # the subject is usually the largest face: embed only it
        face = only_largest(photo)
        if face is not None and _iou(face.box, box) >= 0.3:
            return face.embedding
    best, best_iou = None, 0.3
    for face in recognizer.embed(photo):
        iou = _iou(face.box, box)
        if iou >= best_iou:
            best, best_iou = face.embedding, iou
    return best


# --------------------------------------------------------------------------- captions, hash

def base_caption(trigger: str) -> str:
    return f"photo of {trigger} person"


def caption_for(name: str, trigger: str, captions: dict[str, str] | None) -> str:
    """``photo of <trigger> person``, plus ``, <user caption>`` for ``name`` (looked up by the full
    name, then by its stem) when the captions dict has a non-empty one."""
    text = ""
    if captions:
        text = captions.get(name) or captions.get(os.path.splitext(name)[0]) or ""
    text = " ".join(str(text).split()).strip(" ,")
    return f"{base_caption(trigger)}, {text}" if text else base_caption(trigger)


def dataset_hash(items: Sequence[TrainItem], settings: dict) -> str:
    """sha256 hex over the settings (sorted repr) and every item's name, kind, caption, shape and
    pixels, in order."""
    h = hashlib.sha256(HASH_VERSION.encode())
    h.update(repr(sorted(settings.items())).encode())
    for item in items:
        h.update(f"\0{item.name}\0{item.kind}\0{item.caption}\0{item.image.shape}\0".encode())
        h.update(np.ascontiguousarray(item.image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _check_trigger(trigger: str) -> str:
    t = " ".join(str(trigger or "").split())
    if not t:
        raise IdentityDataError("the trigger word is empty: give a rare token such as 'sks' or "
                                "'ohwx' that the LoRA will bind to this person")
    return t


# --------------------------------------------------------------------------- prepare

def prepare_photos(photos: Sequence[tuple[str, np.ndarray]], trigger: str, resolution: int,
                   detector: FaceDetector, recognizer: Recognizer | None = None,
                   captions: dict[str, str] | None = None, wide_crops: int = 2,
                   several_faces: str = "dominant") -> PhotoSet:
    """Face crops, wide crops and captions from ``photos`` (name, uint8 [H,W,3] RGB) of one person.

    ``resolution``: square face crop side and bucket area (a multiple of 64, 256..2048).
    ``detector``: anything with ``detect(frame) -> [(x1, y1, x2, y2, score)]``.
    ``recognizer``: optional; with it, photos of another person are dropped (`identity_outliers`).
    ``captions``: user captions by photo name or stem. ``wide_crops``: upper-body crops in total.
    ``several_faces``: "dominant" (default) drops a photo whose largest face is not clearly the
    largest (`choose_subject`); "largest" always uses the largest face (with a note).

    Returns a `PhotoSet` (items: face crops in photo order, then wide crops). Raises
    `IdentityDataError` naming every dropped photo and why when fewer than ``MIN_PHOTOS`` usable
    photos remain, or for an empty trigger, a bad resolution or duplicate photo names.
    """
    trigger = _check_trigger(trigger)
    if not isinstance(resolution, int) or resolution % BUCKET_STEP or not 256 <= resolution <= 2048:
        raise IdentityDataError(f"resolution must be a multiple of {BUCKET_STEP} between 256 and "
                                f"2048, got {resolution!r}")
    if wide_crops < 0:
        raise IdentityDataError(f"wide_crops must be 0 or more, got {wide_crops}")
    choose_subject([], several_faces)  # a bad policy fails before any work
    names = [str(n) for n, _ in photos]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise IdentityDataError(f"photo names must be unique; repeated: {', '.join(repeated)}")

    notes: list[str] = []
    dropped: dict[str, str] = {}
    usable: list[tuple[str, np.ndarray, Box]] = []
    for name, raw in photos:
        runtime.check_interrupted()
        try:
            photo = as_rgb_uint8(raw)
        except MediaError as exc:
            dropped[name] = f"not an image ({exc})"
            continue
        height, width = photo.shape[:2]
        if min(height, width) < MIN_IMAGE:
            dropped[name] = f"tiny image ({width}x{height} px, needs at least {MIN_IMAGE} px)"
            continue
        box, why = choose_subject(detector.detect(photo), several_faces)
        if box is None:
            dropped[name] = why or "no face found"
            continue
        if why:
            notes.append(f"{name}: {why}")
        face = min(box[2] - box[0], box[3] - box[1])
        if face < MIN_FACE:
            dropped[name] = (f"face too small ({face:.0f} px, needs {MIN_FACE} px; use a closer "
                             "or larger photo)")
            continue
        usable.append((name, photo, box))

    if recognizer is not None and len(usable) >= MIN_PHOTOS:
        embeddings: dict[str, np.ndarray] = {}
        for name, photo, box in usable:
            runtime.check_interrupted()
            emb = _match_embedding(recognizer, photo, box)
            if emb is None:
                notes.append(f"{name}: the recogniser found no face where the detector did; "
                             "identity not checked")
            else:
                embeddings[name] = emb
        outliers, scores, median = identity_outliers(embeddings)
        for name in outliers:
            dropped[name] = (f"looks like a different person (mean similarity to the other "
                             f"photos {scores[name]:.2f}, the group's median {median:.2f}; "
                             f"limit {median - OUTLIER_MARGIN:.2f})")
        if outliers:
            usable = [u for u in usable if u[0] not in outliers]
        if scores and median < 0.3:
            notes.append(f"the photos look like several people or are hard to recognise (median "
                         f"similarity {median:.2f}; one person's photos usually score above 0.4)")

    dropped_lines = [f"{name}: {why}" for name, why in dropped.items()]
    if len(usable) < MIN_PHOTOS:
        detail = ("; dropped: " + "; ".join(dropped_lines)) if dropped_lines else ""
        raise IdentityDataError(
            f"identity training needs at least {MIN_PHOTOS} usable photos of one person, got "
            f"{len(usable)} of {len(photos)}{detail}")
    notes = [f"dropped {line}" for line in dropped_lines] + notes

    items: list[TrainItem] = []
    room: list[tuple[float, str, np.ndarray, Box]] = []
    for name, photo, box in usable:
        height, width = photo.shape[:2]
        window = face_window(box, width, height)
        side = window[2] - window[0]
        if resolution / side > SOFT_UPSCALE:
            notes.append(f"{name}: face crop of {side} px enlarged {resolution / side:.1f}x to "
                         f"{resolution} px; expect a softer likeness (use a larger photo)")
        items.append(TrainItem(name, _resize(photo, window, (resolution, resolution)),
                               caption_for(name, trigger, captions), "face"))
        room.append((min(width, height) / max(box[2] - box[0], box[3] - box[1]), name, photo, box))

    # Wide crops from the photos with the most room around the face (ties: photo order).
    made = 0
    for ratio, name, photo, box in sorted(room, key=lambda r: -r[0]):
        if made >= wide_crops:
            break
        height, width = photo.shape[:2]
        bucket = nearest_bucket(width, height, resolution)
        window = wide_window(box, width, height, bucket)
        face_side = FACE_CONTEXT * max(box[2] - box[0], box[3] - box[1])
        short = min(window[2] - window[0], window[3] - window[1])
        if short < WIDE_MIN_GAIN * face_side:
            continue
        items.append(TrainItem(name, _resize(photo, window, bucket),
                               caption_for(name, trigger, captions), "wide"))
        made += 1
    if made < wide_crops:
        notes.append(f"{made} of {wide_crops} wide crop(s): the other photos have too little room "
                     "around the face for an upper-body crop")

    settings = {"trigger": trigger, "resolution": resolution, "wide_crops": wide_crops,
                "face_context": FACE_CONTEXT, "wide_context": WIDE_CONTEXT,
                "several_faces": several_faces}
    return PhotoSet(items=items, notes=notes, dataset_hash=dataset_hash(items, settings),
                    used=[u[0] for u in usable], dropped=dropped)


# --------------------------------------------------------------------------- folders

def _photo_folder(subfolder: str) -> tuple[str, str]:
    """(input folder, resolved photo folder) or IdentityDataError when it leaves input/."""
    base = os.path.realpath(runtime.input_dir())
    sub = str(subfolder or "").strip()
    if not sub:
        raise IdentityDataError("no photo folder given: name a folder inside ComfyUI's input "
                                f"folder ({base})")
    if os.path.isabs(sub) or sub.startswith(("/", "\\")) or (len(sub) > 1 and sub[1] == ":"):
        raise IdentityDataError(f"photo folder '{subfolder}' must be a folder inside ComfyUI's "
                                f"input folder ({base}), not an absolute path")
    path = os.path.realpath(os.path.join(base, sub))
    if os.path.commonpath([base, path]) != base:
        raise IdentityDataError(f"photo folder '{subfolder}' leaves ComfyUI's input folder "
                                f"({base}); name a folder inside it")
    if not os.path.isdir(path):
        raise IdentityDataError(f"photo folder '{subfolder}' not found in ComfyUI's input "
                                f"folder ({path}); create it and put the photos there")
    return base, path


def _photo_files(subfolder: str) -> list[tuple[str, str]]:
    base, path = _photo_folder(subfolder)
    found = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if not entry.lower().endswith(PHOTO_EXTENSIONS) or not os.path.isfile(full):
            continue
        real = os.path.realpath(full)
        if os.path.commonpath([base, real]) != base:  # a link pointing out of input/
            raise IdentityDataError(f"photo '{entry}' in '{subfolder}' links outside ComfyUI's "
                                    f"input folder ({base}); copy the photo in instead")
        found.append((entry, real))
    return found


def load_photo_folder(subfolder: str) -> list[tuple[str, np.ndarray]]:
    """The photos of a folder inside ComfyUI's input folder: ``[(file name, uint8 [H,W,3] RGB)]``
    in name order. EXIF orientation is applied (phone photos are stored sideways); photos are
    reduced to ``MAX_PHOTO_SIDE`` on their longer side. Not recursive.

    Raises IdentityDataError for a folder outside input/ (absolute, ``..``, or a link leading out),
    a missing folder, a folder without photos, or an unreadable photo (named).
    """
    files = _photo_files(subfolder)
    if not files:
        raise IdentityDataError(f"photo folder '{subfolder}' has no photos "
                                f"({', '.join(PHOTO_EXTENSIONS)})")
    photos = []
    for name, path in files:
        runtime.check_interrupted()
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                if max(img.size) > MAX_PHOTO_SIDE:
                    img.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.LANCZOS)
                photos.append((name, np.asarray(img, dtype=np.uint8).copy()))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise IdentityDataError(f"photo '{name}' in '{subfolder}' could not be read "
                                    f"({type(exc).__name__}: {exc}); remove or replace it") from exc
    return photos


def load_folder_captions(subfolder: str) -> dict[str, str]:
    """User captions of a photo folder: ``{photo file name: text}`` from a ``<stem>.txt`` beside
    each photo (kohya's convention); photos without one are absent. Same folder rules as
    `load_photo_folder`."""
    base, path = _photo_folder(subfolder)
    out = {}
    for name, _real in _photo_files(subfolder):
        txt = os.path.join(path, os.path.splitext(name)[0] + ".txt")
        if os.path.isfile(txt):
            if os.path.commonpath([base, os.path.realpath(txt)]) != base:
                raise IdentityDataError(f"caption '{os.path.basename(txt)}' in '{subfolder}' "
                                        f"links outside ComfyUI's input folder ({base}); copy "
                                        "the file in instead")
            with open(txt, encoding="utf-8", errors="replace") as f:
                text = " ".join(f.read().split())
            if text:
                out[name] = text
    return out
