"""Face boxes for lip-sync: detection behind a small interface, face choice, padding, smoothing.

Detection runs once per source frame before the model runs (boxes are a few numbers per frame,
so a whole video's worth is cheap to keep); smoothing then works on the box track over time.
The detector is insightface's SCRFD (``det_10g.onnx`` of a pack such as ``buffalo_l`` or
``antelopev2``) in ComfyUI's ``models/insightface/models/<pack>/``, the layout IPAdapter,
InstantID and ReActor users already have. Anything with a ``detect`` method can stand in for it.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from .. import model_cache, runtime
from ..manifest import MissingModelError, entries_for
from ..media import MediaError

FOLDER = "insightface"
DEFAULT_PACK = "buffalo_l"
NO_FACE_POLICIES = ("pass through", "error")

Box = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score (pixels of the frame)


class FaceDetector(Protocol):
    """Finds faces in one frame: uint8 ``[H,W,3]`` RGB -> boxes ``(x1, y1, x2, y2, score)``."""

    def detect(self, frame: np.ndarray) -> list[Box]: ...


# --------------------------------------------------------------------------- insightface

def pack_roots() -> list[str]:
    """Folders that hold insightface packs: ``<insightface folder>/models`` for each path."""
    return [os.path.join(root, "models") for root in runtime.model_folder_paths(FOLDER)]


def _pack_has_detector(path: str) -> bool:
    return bool(glob.glob(os.path.join(path, "*.onnx")))


def list_detector_packs() -> list[str]:
    """Names of the installed insightface packs (sub-folders with ONNX models), for dropdowns."""
    names: set[str] = set()
    for root in pack_roots():
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root)
                         if _pack_has_detector(os.path.join(root, d)))
    return sorted(names)


def find_pack(name: str) -> str:
    """Full path of an installed pack, or a MissingModelError saying where it goes."""
    if name and "/" not in name and "\\" not in name and name not in (".", ".."):
        for root in pack_roots():
            path = os.path.join(root, name)
            if os.path.isdir(path) and _pack_has_detector(path):
                return path
    rel = f"models/{name}"
    known = entries_for(FOLDER, rel)
    raise MissingModelError(FOLDER, [rel + "/det_10g.onnx"],
                            source=(known.url or known.source) if known else None,
                            hint="unzip the pack so its .onnx files sit in that folder")


def pack_identity(pack: str) -> list:
    """The pack's name and content stamp (its files), so a node's cache key changes when the
    pack is replaced; the name alone when it is not installed (the node then fails naming it)."""
    try:
        return [pack, runtime.file_stamp(find_pack(pack))]
    except FileNotFoundError:
        return [pack]


def onnx_providers(device: str) -> list[str]:
    """CUDA for the detector when the model runs on a GPU and onnxruntime has it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InsightFaceDetector:
    """SCRFD from an insightface pack, loaded through ``insightface.app.FaceAnalysis``.

    Only the detection model is loaded (``allowed_modules=["detection"]``); recognition and
    landmark models in the pack are skipped. ``root`` is the folder above ``models/<pack>``,
    which is where insightface looks, so it finds the files and never downloads.
    """

    # The pack's models to load and what the node needs insightface for (in the error when it
    # is not installed); a subclass that also embeds faces widens both.
    MODULES: tuple[str, ...] = ("detection",)
    PURPOSE = "face detection"

    def __init__(self, pack_dir: str, device: str = "cpu", det_size: int = 640,
                 det_thresh: float = 0.5):
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MediaError(f"{self.PURPOSE} needs the 'insightface' package: pip install "
                             "insightface (see the pack's requirements.txt)") from exc
        pack_dir = os.path.abspath(pack_dir)
        self.name = os.path.basename(pack_dir)
        root = os.path.dirname(os.path.dirname(pack_dir))
        providers = onnx_providers(device)
        try:
            self.analysis = FaceAnalysis(name=self.name, root=root,
                                         allowed_modules=list(self.MODULES),
                                         providers=providers)
        except AssertionError as exc:  # insightface asserts that a detection model was found
            raise MediaError(f"the insightface pack '{self.name}' ({pack_dir}) has no face "
                             "detection model (such as det_10g.onnx)") from exc
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign ONNX file
            raise MediaError(f"the insightface pack '{self.name}' ({pack_dir}) could not be "
                             f"loaded: {type(exc).__name__}: {exc}") from exc
        self._check_models()
        ctx_id = 0 if providers[0] == "CUDAExecutionProvider" else -1
        self.analysis.prepare(ctx_id=ctx_id, det_thresh=det_thresh, det_size=(det_size, det_size))

    def _check_models(self) -> None:
        """Raise when the loaded pack lacks a model this class needs (the detector's absence
        is insightface's own AssertionError above)."""

    def detect(self, frame: np.ndarray) -> list[Box]:
        # insightface follows OpenCV: BGR frames (its blob step swaps them back to RGB).
        bgr = np.ascontiguousarray(frame[..., ::-1])
        faces = self.analysis.get(bgr)
        return [(*map(float, f.bbox[:4]), float(f.det_score)) for f in faces]


def _detector_bytes(detector: InsightFaceDetector, pack_dir: str) -> int:
    """Size of the ONNX file the session holds (the pack's files when insightface hides it)."""
    model = getattr(detector.analysis, "det_model", None)
    path = getattr(model, "model_file", None)
    if path and os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(pack_dir, "*.onnx")))


def load_detector(pack: str, device: str = "cpu", det_size: int = 640) -> InsightFaceDetector:
    """The face detector of an insightface pack, from the pack's model cache (ComfyUI can unload
    it; its key is the pack folder's stamp, the device and the detection size)."""
    pack_dir = find_pack(pack)
    key = ("face_detector", runtime.file_stamp(pack_dir), str(device), int(det_size))
    return model_cache.cached_model(
        "face_detector", key,
        lambda: InsightFaceDetector(pack_dir, device=device, det_size=det_size),
        name=os.path.basename(pack_dir), size_of=lambda d: _detector_bytes(d, pack_dir), limit=1)


# --------------------------------------------------------------------------- choosing, padding

@dataclass(frozen=True)
class Pads:
    """Pixels added around the detected box, like upstream Wav2Lip's ``--pads`` (top, bottom,
    left, right; upstream's default 0, 10, 0, 0 takes the chin in)."""

    top: int = 0
    bottom: int = 10
    left: int = 0
    right: int = 0


def choose_face(boxes: list[Box], face_index: int) -> Box | None:
    """The largest face (``face_index < 0``) or the n-th face counted from the left."""
    if not boxes:
        return None
    if face_index < 0:
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    by_x = sorted(boxes, key=lambda b: (b[0] + b[2]) / 2)
    return by_x[face_index] if face_index < len(by_x) else None


def detect_track(frames: Iterable[np.ndarray], detector: FaceDetector,
                 face_index: int = -1) -> list[Box | None]:
    """One chosen box (or None) per frame, in frame order."""
    return [choose_face(detector.detect(frame), face_index) for frame in frames]


def smooth_boxes(track: list[Box | None], window: int) -> list[Box | None]:
    """Centred moving average of the box corners over ``window`` frames.

    Upstream averages a forward window of 5; a centred one does not lag the face. Frames without
    a face split the track: a box is only averaged with boxes of the same run, so a cut or a face
    leaving the frame does not drag boxes across it. Windows shrink at the ends of a run.
    """
    if window <= 1:
        return list(track)
    out: list[Box | None] = list(track)
    half_before, half_after = (window - 1) // 2, window // 2
    i = 0
    while i < len(track):
        if track[i] is None:
            i += 1
            continue
        j = i
        while j < len(track) and track[j] is not None:
            j += 1
        run = np.asarray(track[i:j], dtype=np.float64)
        # Prefix sums give every window mean in one pass.
        cums = np.concatenate([np.zeros((1, run.shape[1])), np.cumsum(run, axis=0)])
        for k in range(len(run)):
            lo, hi = max(0, k - half_before), min(len(run), k + half_after + 1)
            mean = (cums[hi] - cums[lo]) / (hi - lo)
            out[i + k] = (*mean[:4].tolist(), float(run[k, 4]))
        i = j
    return out


def crop_box(box: Box, pads: Pads, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pad, round and clip a box to the frame; None when nothing of it is left."""
    x1 = max(0, int(round(box[0] - pads.left)))
    y1 = max(0, int(round(box[1] - pads.top)))
    x2 = min(width, int(round(box[2] + pads.right)))
    y2 = min(height, int(round(box[3] + pads.bottom)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def missing_faces(crops: list, policy: str, what: str = "frame") -> list[int]:
    """Indices of frames without a face; with the 'error' policy, a MediaError listing them."""
    if policy not in NO_FACE_POLICIES:
        raise MediaError(f"no-face policy must be one of {NO_FACE_POLICIES}, got {policy!r}")
    missing = [i for i, c in enumerate(crops) if c is None]
    if missing and policy == "error":
        shown = ", ".join(str(i) for i in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise MediaError(f"no face found in {len(missing)} of {len(crops)} {what}s "
                         f"({what} {shown}{more}); choose the 'pass through' no-face policy to "
                         "leave such frames unchanged, or use a clearer, larger face")
    return missing
