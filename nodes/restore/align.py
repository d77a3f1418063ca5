"""Face alignment for restoration: 5 keypoints -> the FFHQ 512 template, and the paste back.

Face restorers were trained on FFHQ-aligned 512x512 faces. A similarity transform (rotation,
uniform scale, translation) maps the detector's five keypoints (eyes, nose tip, mouth corners)
onto the template's, the face is warped into the 512 square, restored, and the restored square is
warped back with the inverse transform. The blend weights are the lip-sync stage's seamless
ellipse mask (`nodes.lipsync.paste.mouth_mask`, feathered with a smoothstep and exactly zero
outside), here laid over the whole aligned face and warped back with it: every frame pixel whose
warped weight is zero keeps its exact original value.
"""
from __future__ import annotations

import numpy as np

from ..lipsync.paste import MouthRegion, mouth_mask

FACE_SIZE = 512

# Keypoints of a 512x512 FFHQ-aligned face: left eye, right eye, nose tip, left and right mouth
# corner (x, y in pixels). The values of facexlib's FaceRestoreHelper.face_template
# (facexlib/utils/face_restoration_helper.py), which GFPGAN, RestoreFormer and CodeFormer use.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936],
                              [256.63416, 314.01935], [201.26117, 371.41043],
                              [313.08905, 371.15118]], dtype=np.float32)

# The pasted region in the aligned square: an ellipse over forehead to chin (the template puts
# the eyes at y = 0.47 and the mouth at y = 0.73 of the square), feathered over its outer 30 %,
# so hair, ears and the square's corners (filled with the border colour) are never pasted.
FACE_REGION = MouthRegion(center_x=0.5, center_y=0.55, radius_x=0.38, radius_y=0.42, feather=0.3)

# The colour outside the frame in the aligned crop (facexlib's border value, in RGB).
BORDER_RGB = (132, 133, 135)


def alignment(kps: np.ndarray, size: int = FACE_SIZE) -> np.ndarray | None:
    """The 2x3 similarity transform taking frame pixels to the aligned ``size`` square, from
    five keypoints ``[5,2]`` (x, y in frame pixels, the order of `FFHQ_TEMPLATE_512`); None when
    the points are degenerate (all in one spot or on one line, as a random detector gives).

    Least squares over the five points (Umeyama's closed form, no outlier rejection: five points
    of one face need none). On the astronaut's keypoints it equals facexlib's
    ``cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`` to 3e-5 (tested).
    """
    src = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    dst = FFHQ_TEMPLATE_512.astype(np.float64) * (size / FACE_SIZE)
    if src.shape != (5, 2) or not np.isfinite(src).all():
        return None
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    var = (s * s).sum()
    if var < 1e-6:
        return None
    # Similarity from complex least squares: d = (a + ib) s + t.
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / var
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var
    scale = float(np.hypot(a, b))
    # The template's eyes are 126 px apart at 512: a face whose eyes are under 8 px apart
    # (scale > 16) holds too little to restore, and blowing it up only pastes a smear.
    if not np.isfinite(scale) or scale <= 0 or scale > 16.0 * size / FACE_SIZE:
        return None
    sv = np.linalg.svd(s, compute_uv=False)
    if sv[-1] < 1e-3 * sv[0]:
        return None
    rot = np.array([[a, -b], [b, a]])
    t = dst_mean - rot @ src_mean
    return np.hstack([rot, t[:, None]]).astype(np.float64)


def invert(affine: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine transform."""
    m = np.vstack([affine, [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def warp_face(frame: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The aligned face: ``frame`` (uint8 or float ``[H,W,3]``) warped by ``affine`` into a
    ``size`` x ``size`` crop of the same dtype (bilinear; outside the frame the border colour)."""
    import cv2

    border = BORDER_RGB if frame.dtype == np.uint8 else tuple(v / 255.0 for v in BORDER_RGB)
    return cv2.warpAffine(np.ascontiguousarray(frame), affine, (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border)


def face_mask(size: int = FACE_SIZE) -> np.ndarray:
    """Blend weights ``[size,size]`` in 0..1 over the aligned face (read-only)."""
    return mouth_mask(size, size, FACE_REGION)


def paste_region(affine: np.ndarray, height: int, width: int,
                 size: int = FACE_SIZE) -> tuple[int, int, int, int] | None:
    """Frame rectangle ``(x1, y1, x2, y2)`` holding the aligned square's image, clipped to the
    frame; None when it lies outside."""
    inv = invert(affine)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    pts = corners @ inv.T
    x1 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y1 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x2 = min(width, int(np.ceil(pts[:, 0].max())) + 2)
    y2 = min(height, int(np.ceil(pts[:, 1].max())) + 2)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def frame_weights(affine: np.ndarray, height: int, width: int,
                  size: int = FACE_SIZE) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The face mask warped back into the frame: weights ``[y2-y1, x2-x1]`` float32 in 0..1 over
    the rectangle ``(x1, y1, x2, y2)`` returned with them; None when nothing lands in the frame.
    Pixels outside the rectangle, and inside it where the weight is 0, are never changed."""
    import cv2

    rect = paste_region(affine, height, width, size)
    if rect is None:
        return None
    x1, y1, x2, y2 = rect
    inv = invert(affine)
    inv[:, 2] -= (x1, y1)  # into the rectangle's coordinates
    weights = cv2.warpAffine(np.ascontiguousarray(face_mask(size)), inv, (x2 - x1, y2 - y1),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0.0)
    if not (weights > 0).any():
        return None
    return weights, rect


def paste_face(frame: np.ndarray, restored: np.ndarray, affine: np.ndarray,
               strength: float = 1.0) -> np.ndarray:
    """Blend an aligned restored face (float32 ``[size,size,3]`` in 0..1) back into ``frame``
    (uint8 ``[H,W,3]`` or float32 in 0..1; modified in place and returned): each pixel moves
    from its original value towards the restored one by ``strength`` times the mask weight.
    Pixels with weight 0 (everything outside the warped ellipse) keep their exact value."""
    import cv2

    if strength <= 0:
        return frame
    height, width = frame.shape[:2]
    size = restored.shape[0]
    found = frame_weights(affine, height, width, size)
    if found is None:
        return frame
    weights, (x1, y1, x2, y2) = found
    inv = invert(affine)
    inv[:, 2] -= (x1, y1)
    back = cv2.warpAffine(np.ascontiguousarray(restored, dtype=np.float32), inv,
                          (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    target = frame[y1:y2, x1:x2]
    scale = 255.0 if frame.dtype == np.uint8 else 1.0
    original = target.astype(np.float32)
    alpha = (weights * np.float32(min(float(strength), 1.0)))[..., None]
    blended = original + (back * np.float32(scale) - original) * alpha
    inside = weights > 0
    if frame.dtype == np.uint8:
        blended = np.clip(blended + 0.5, 0, 255).astype(np.uint8)  # round half up
    else:
        blended = np.clip(blended, 0.0, 1.0).astype(frame.dtype)
    target[inside] = blended[inside]
    return frame
