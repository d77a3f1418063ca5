"""Face recognition for the identity stage: embeddings and cosine similarity between images.

The recogniser is insightface's ArcFace model of a face pack (``w600k_r50.onnx`` in buffalo_l,
``glintr100.onnx`` in antelopev2), loaded with the pack's SCRFD detector through insightface's own
``FaceAnalysis`` from ``models/insightface/models/<pack>/`` (the folder the lip-sync stage reads).
insightface aligns every detected face to its 112x112 ArcFace template with the 5 detected
keypoints (``face_align.norm_crop``) and embeds it; embeddings here are L2-normalised, so the
cosine similarity of two faces is their dot product (1 = identical crop; insightface's
verification threshold for buffalo_l lies around 0.3-0.4, different people score near 0).

Two uses: the Face Similarity node (any two IMAGE batches) and the training stage's checkpoint
choice (samples against the training photos). Both compare the largest face of each image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .. import model_cache, runtime
from ..lipsync.faces import FOLDER, Box, InsightFaceDetector, _detector_bytes, find_pack
from ..manifest import MissingModelError, entries_for
from ..media import MediaError

EMBEDDING_SIZE = 512  # ArcFace r50/r100 releases: one 512-d feature per face
RECOGNITION_FILES = ("w600k_r50.onnx", "glintr100.onnx")  # buffalo_l, antelopev2


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2 in pixels), detector ``score``, ``kps`` float32
    [5,2] (eyes, nose, mouth corners; None when the detector gives none) and ``embedding`` float32
    [512], L2-normalised."""

    box: tuple[float, float, float, float]
    score: float
    kps: np.ndarray | None
    embedding: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class Recognizer(Protocol):
    """Finds and embeds faces: uint8 ``[H,W,3]`` RGB -> faces with L2-normalised embeddings."""

    def embed(self, frame: np.ndarray) -> list[Face]: ...


def normalise(vector: np.ndarray) -> np.ndarray:
    """``vector`` float32 scaled to unit L2 norm (a zero vector stays zero)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class InsightFaceRecognizer(InsightFaceDetector):
    """SCRFD + ArcFace of one insightface pack, through ``insightface.app.FaceAnalysis``.

    Loads the ``detection`` and ``recognition`` models only (landmark and gender/age models of
    the pack are skipped). Also a face detector (``detect``), so one loaded pack serves both.
    """

    MODULES = ("detection", "recognition")
    PURPOSE = "face recognition"

    def _check_models(self) -> None:
        """A pack with a detector but no ArcFace model raises MissingModelError naming the
        files the full pack has."""
        if "recognition" not in self.analysis.models:
            rel = f"models/{self.name}"
            known = entries_for(FOLDER, rel)
            raise MissingModelError(
                FOLDER, [f"{rel}/{name}" for name in RECOGNITION_FILES],
                source=(known.url or known.source) if known else None,
                hint=f"the pack '{self.name}' has a face detector but no ArcFace recognition "
                     "model; face similarity needs the full pack (buffalo_l has w600k_r50.onnx)")

    def _detections(self, frame: np.ndarray) -> tuple[np.ndarray, list]:
        """BGR frame and insightface ``Face`` objects (box, score, keypoints) of its faces."""
        from insightface.app.common import Face as InsightFace

        bgr = np.ascontiguousarray(as_rgb_uint8(frame)[..., ::-1])  # insightface wants BGR
        # The detector alone (FaceAnalysis.get would embed every face, also for detect()).
        bboxes, kpss = self.analysis.det_model.detect(bgr, max_num=0, metric="default")
        found = [InsightFace(bbox=bboxes[i, :4], kps=None if kpss is None else kpss[i],
                             det_score=bboxes[i, 4]) for i in range(bboxes.shape[0])]
        return bgr, found

    def _embed(self, bgr: np.ndarray, face) -> Face:
        # ArcFaceONNX.get aligns with the 5 keypoints (face_align.norm_crop, 112x112) and embeds.
        emb = self.analysis.models["recognition"].get(bgr, face)
        kps = None if face.kps is None else np.asarray(face.kps, dtype=np.float32).reshape(5, 2)
        return Face(box=tuple(float(v) for v in face.bbox[:4]), score=float(face.det_score),
                    kps=kps, embedding=normalise(emb))

    def detect(self, frame: np.ndarray) -> list[Box]:
        return [(*map(float, f.bbox[:4]), float(f.det_score)) for f in self._detections(frame)[1]]

    def embed(self, frame: np.ndarray) -> list[Face]:
        """Every face of ``frame`` (uint8 ``[H,W,3]`` RGB) with its L2-normalised embedding."""
        bgr, found = self._detections(frame)
        return [self._embed(bgr, f) for f in found]

    def embed_largest(self, frame: np.ndarray) -> Face | None:
        """The largest face of ``frame`` with its embedding (only that face is embedded)."""
        bgr, found = self._detections(frame)
        if not found:
            return None
        box_area = lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))  # noqa: E731
        return self._embed(bgr, max(found, key=box_area))


def _recognizer_bytes(recognizer: InsightFaceRecognizer, pack_dir: str) -> int:
    rec = recognizer.analysis.models.get("recognition")
    path = getattr(rec, "model_file", None)
    extra = os.path.getsize(path) if path and os.path.isfile(path) else 0
    return _detector_bytes(recognizer, pack_dir) + extra


def load_recognizer(pack: str, device: str = "cpu", det_size: int = 640) -> InsightFaceRecognizer:
    """Detector + ArcFace recogniser of the insightface pack ``pack`` (a folder name under
    ``models/insightface/models/``), from the model cache (key: the pack folder's stamp, device,
    detection size). Raises MissingModelError for a missing pack or one without a recognition
    model, MediaError for unreadable ONNX files."""
    pack_dir = find_pack(pack)
    key = ("face_recognizer", runtime.file_stamp(pack_dir), str(device), int(det_size))
    return model_cache.cached_model(
        "face_recognizer", key,
        lambda: InsightFaceRecognizer(pack_dir, device=device, det_size=det_size),
        name=os.path.basename(pack_dir), size_of=lambda r: _recognizer_bytes(r, pack_dir),
        limit=1)


# --------------------------------------------------------------------------- similarity

def as_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """``frame`` as uint8 ``[H,W,3]``: float images in 0..1 are scaled, grey gets three channels,
    alpha is dropped. Raises MediaError for anything else."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise MediaError(f"expected an image [H,W,3], got an array of shape {tuple(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box, or None."""
    return max(faces, key=lambda f: f.area) if faces else None


def embed_largest(frames: Sequence[np.ndarray], recognizer: Recognizer) -> list[np.ndarray | None]:
    """The embedding (float32 [512], unit norm) of the largest face of each frame, None where a
    frame has no face. Checks Cancel between frames."""
    out: list[np.ndarray | None] = []
    only_largest = getattr(recognizer, "embed_largest", None)
    for frame in frames:
        runtime.check_interrupted()
        face = only_largest(frame) if only_largest else largest_face(recognizer.embed(frame))
        out.append(None if face is None else face.embedding)
    return out


@dataclass
class SimilarityResult:
    """Cosine similarities of the largest faces of two image lists.

    ``matrix`` float32 [len(a), len(b)]: cosine of a[i]'s and b[j]'s largest face, NaN where
    either has no face. ``mean``: mean over the compared pairs (for a list against itself, the
    pairs i<j: the diagonal is 1 by definition), 0.0 when no pair could be compared; ``pairs``:
    how many. ``missing_a``/``missing_b``: indices without a face; ``notes`` say so in words.
    """

    matrix: np.ndarray
    mean: float
    pairs: int
    same: bool
    names_a: list[str]
    names_b: list[str]
    missing_a: list[int] = field(default_factory=list)
    missing_b: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self, max_rows: int = 32) -> str:
        """Mean, spread and the per-pair matrix (rows of a, columns of b) as text."""
        lines = []
        if self.pairs:
            values = self._compared()
            lines.append(f"mean cosine similarity {self.mean:.4f} over {self.pairs} pair(s) "
                         f"(min {values.min():.4f}, max {values.max():.4f}); largest face of "
                         "each image; 1 = same crop, same person typically above ~0.4, "
                         "different people near 0")
        else:
            lines.append("no pair of faces to compare: mean similarity reported as 0")
        lines.extend(self.notes)
        rows = self.matrix.shape[0]
        head = " " * 12 + " ".join(f"{n[:9]:>9}" for n in self.names_b[:max_rows])
        lines.append(head)
        for i in range(min(rows, max_rows)):
            cells = " ".join("  no face" if np.isnan(v) else f"{v:9.4f}"
                             for v in self.matrix[i, :max_rows])
            lines.append(f"{self.names_a[i][:11]:>11} {cells}")
        if rows > max_rows or self.matrix.shape[1] > max_rows:
            lines.append(f"(matrix cut to {max_rows}x{max_rows} of {self.matrix.shape[0]}x"
                         f"{self.matrix.shape[1]})")
        return "\n".join(lines)

    def _compared(self) -> np.ndarray:
        m = self.matrix
        if self.same:
            iu = np.triu_indices(m.shape[0], k=1)
            m = m[iu]
        return m[~np.isnan(m)]


def similarity_matrix(emb_a: Sequence[np.ndarray | None],
                      emb_b: Sequence[np.ndarray | None]) -> np.ndarray:
    """Cosine matrix float32 [len(a), len(b)] of unit embeddings; NaN where either is None."""
    m = np.full((len(emb_a), len(emb_b)), np.nan, dtype=np.float32)
    for i, ea in enumerate(emb_a):
        if ea is None:
            continue
        for j, eb in enumerate(emb_b):
            if eb is not None:
                m[i, j] = float(np.clip(np.dot(ea, eb), -1.0, 1.0))
    return m


def compare_embeddings(emb_a: Sequence[np.ndarray | None],
                       emb_b: Sequence[np.ndarray | None] | None,
                       names_a: Sequence[str] | None = None,
                       names_b: Sequence[str] | None = None) -> SimilarityResult:
    """`SimilarityResult` of embeddings already computed (``emb_b`` None: ``emb_a`` against
    itself). Lets a caller embed reference photos once and compare many sample sets to them."""
    same = emb_b is None
    emb_b = emb_a if same else emb_b
    names_a = list(names_a) if names_a is not None else [f"a{i}" for i in range(len(emb_a))]
    names_b = names_a if same else (list(names_b) if names_b is not None
                                    else [f"b{j}" for j in range(len(emb_b))])
    matrix = similarity_matrix(emb_a, emb_b)
    if same:
        np.fill_diagonal(matrix, np.where(np.isnan(np.diag(matrix)), np.nan, 1.0))
    result = SimilarityResult(matrix=matrix, mean=0.0, pairs=0, same=same,
                              names_a=names_a, names_b=names_b,
                              missing_a=[i for i, e in enumerate(emb_a) if e is None],
                              missing_b=[] if same else
                              [j for j, e in enumerate(emb_b) if e is None])
    compared = result._compared()
    result.pairs = int(compared.size)
    result.mean = float(compared.mean()) if compared.size else 0.0
    for side, missing, names in (("a", result.missing_a, names_a),
                                 ("b", result.missing_b, names_b)):
        if missing:
            shown = ", ".join(names[i] for i in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            result.notes.append(f"no face found in {len(missing)} image(s) of {side}: "
                                f"{shown}{more} (left out of the mean)")
    if same and len(emb_a) < 2:
        result.notes.append("one image compared with itself: nothing to compare")
    return result


def face_similarity(a: Sequence[np.ndarray], b: Sequence[np.ndarray] | None,
                    recognizer: Recognizer, names_a: Sequence[str] | None = None,
                    names_b: Sequence[str] | None = None) -> SimilarityResult:
    """Cosine similarity of the largest face of every image of ``a`` with every image of ``b``
    (uint8 ``[H,W,3]`` RGB frames; ``b`` None compares ``a`` with itself, pairs i<j).

    Images without a face are NaN in the matrix, named in ``notes`` and left out of the mean.
    """
    emb_a = embed_largest(a, recognizer)
    emb_b = None if b is None else embed_largest(b, recognizer)
    return compare_embeddings(emb_a, emb_b, names_a, names_b)
