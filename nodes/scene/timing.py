"""The one frame clock the scene stage shares: where each segment's frames start and end.

Segment k covers frames ``round(start_k * fps)`` up to the frame where segment k+1 starts; the
first segment starts at frame 0 (a lead-in before its first word belongs to it) and the last runs
to ``round(total * fps)``. A pause between two segments belongs to the segment before it, so every
frame belongs to exactly one segment. Python's ``round`` is used, as the SVD stage's
`scene_frames` does, so cuts made by either stage fall on the same frames.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..media import MediaError


def total_frames(seconds: float, fps: float) -> int:
    """Frames of a video ``seconds`` long at ``fps``: ``round(seconds * fps)``, at least 1.

    Raises MediaError for a non-finite or non-positive length or fps."""
    if not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"fps must be a positive finite number, got {fps}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise MediaError(f"the video length must be a positive number of seconds, got {seconds}")
    return max(1, round(seconds * fps))


def boundaries(starts: Sequence[float], fps: float, total: int) -> list[int]:
    """Frame boundaries ``[0, b_1, .., b_{S-1}, total]`` of S segments starting at ``starts``
    (seconds; ``starts[0]`` is ignored: the first segment begins at frame 0).

    ``b_k = round(starts[k] * fps)`` clamped to ``0..total`` and never below ``b_{k-1}``
    (overlapping timings never run backwards), so a segment starting at or after the end gets 0
    frames. Returns S+1 ints; segment k covers frames ``b_k .. b_{k+1}-1``."""
    cuts = [0]
    for start in list(starts)[1:]:
        cuts.append(min(total, max(cuts[-1], round(float(start) * fps))))
    cuts.append(total)
    return cuts
