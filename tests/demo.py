"""The main job without ComfyUI: render the shipped talking-photo workflow to an MP4.

    python -m tests.demo [--text "..."] [--image portrait.png] [--out output]

It makes its own inputs (skimage's astronaut portrait, espeak-ng speech or a tone when espeak-ng
is missing), runs workflows/api/photo_with_audio.json through the standalone runner (the same node
classes ComfyUI calls) and prints the MP4's path and report.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from PIL import Image

from tests._pack import ROOT, load_pack
from tests.core_nodes import CORE_NODE_CLASSES
from tests.media import astronaut, speech_wav, tone, write_wav
from tests.workflow_tools import definitions, load_json, run_api, validate_api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default="Hello! I am your SpinBot avatar, rendered fully offline.")
    parser.add_argument("--image", help="portrait image (default: skimage's astronaut)")
    parser.add_argument("--out", default=os.path.join(ROOT, "output"), help="output folder")
    args = parser.parse_args(argv)

    inputs = tempfile.mkdtemp(prefix="spinbot-demo-")
    os.environ["SPINBOT_INPUT_DIR"] = inputs
    os.environ["SPINBOT_OUTPUT_DIR"] = os.path.abspath(args.out)
    if args.image:
        shutil.copy(args.image, os.path.join(inputs, "portrait.png"))
    else:
        Image.fromarray(astronaut(512)).save(os.path.join(inputs, "portrait.png"))
    narration = os.path.join(inputs, "narration.wav")
    if speech_wav(narration, args.text) is None:
        print("espeak-ng not found: using a tone as narration")
        write_wav(narration, tone(3.0, 24000), 24000)

    pack = load_pack()
    workflow = load_json(os.path.join(ROOT, "workflows", "api", "photo_with_audio.json"))
    classes = {**pack.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}
    validate_api(workflow, definitions(pack.NODE_CLASS_MAPPINGS))
    results = run_api(workflow, classes)
    path, report = results["3"]["result"]
    shutil.rmtree(inputs, ignore_errors=True)
    print(report)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
