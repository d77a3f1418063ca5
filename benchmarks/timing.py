"""Timing helpers shared by the frame-processing benchmarks."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def time_chunks(frames: np.ndarray, chunk: int, fn: Callable[[np.ndarray, int], object]) -> float:
    """Seconds to call ``fn(batch, first_index)`` on ``frames`` ``[N,...]`` in batches of
    ``chunk`` frames (the way a stage walks a stored video chunk by chunk)."""
    t0 = time.perf_counter()
    for a in range(0, len(frames), chunk):
        fn(frames[a:a + chunk], a)
    return time.perf_counter() - t0
