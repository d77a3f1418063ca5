"""The shipped workflows, declared once (see tests/workflow_build.py for the two file formats).

Node ids are stable: the README, the client's `--set` examples and the tests refer to nodes by
title, and to a few by id.
"""
from __future__ import annotations

from tests.workflow_build import GROUP_COLORS as C
from tests.workflow_build import Graph, Group, Node, note


def photo_with_audio() -> Graph:
    return Graph("photo_with_audio", [
        Node(1, "LoadImage", "Portrait", (40, 80), (320, 360), {"image": "portrait.png"}),
        Node(2, "LoadAudio", "Narration", (40, 480), (320, 140), {"audio": "narration.wav"}),
        Node(3, "SpinBotVideoCombine", "Video Combine", (420, 80), (360, 560),
             {"filename_prefix": "SpinBot/photo"}, {"images": (1, 0), "audio": (2, 0)}),
        note(4, "Talking-photo baseline: a still portrait held for the length of the narration.\n\n"
                "1. Portrait: upload any image (odd sizes are padded for H.264).\n"
                "2. Narration: upload speech or music; it is loudness-normalised to -14 LUFS.\n"
                "3. Video Combine writes output/SpinBot/photo_00001_.mp4 and previews it here.\n\n"
                "No model files are needed.", (840, 80), (420, 220)),
    ], [Group("Inputs", (20, 10, 360, 630), C["inputs"]),
        Group("Output", (400, 10, 420, 900), C["output"])])


GRAPHS = [photo_with_audio]
