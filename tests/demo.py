"""The main job: render the direct workflow (your text, your portrait, your voice) to an MP4.

    python -m tests.demo [--text "..."] [--image me.png] [--voice me.wav --voice-text "..."]
                         [--models-dir DIR] [--server URL] [--out output]

1. It checks the model files of the direct workflow against the manifest in the models folder
   (`--models-dir`, else `<ComfyUI>/models` of `$COMFYUI_PATH` or of the ComfyUI whose
   custom_nodes folder holds this pack, else `./models`). Missing files are listed with
   their folder and source, and with the command that fetches them.
2. Where they are all present it renders through a real ComfyUI with the pack's renderer
   (`python -m nodes.render one`): on the one at `--server`, or on one it starts from
   `$COMFYUI_PATH` (CPU unless a GPU is there) with this pack installed. It uploads the inputs,
   queues workflows/api/direct.json, follows progress and downloads the MP4.
3. Where some are missing (a fresh machine, CI) it still renders, on tiny random models written by
   the test factory: through ComfyUI when `$COMFYUI_PATH` is set, else through the standalone
   runner that calls the same node classes. Those videos are noise with the right timing.

Inputs it makes when not given: skimage's astronaut portrait, espeak-ng speech as the voice
reference (a tone when espeak-ng is missing).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from PIL import Image

from tests._pack import ROOT, load_pack

WORKFLOW = "direct"
PRESET = "direct"
REFERENCE_TEXT = "Some call me nature, others call me mother nature."
DEFAULT_TEXT = ("Hello! I am your SpinBot avatar. Everything you see and hear was rendered on this "
                "machine, offline.")


def find_comfyui() -> str | None:
    """``$COMFYUI_PATH``, else the ComfyUI this pack is installed in (``<ComfyUI>/custom_nodes/<pack>``)."""
    if os.environ.get("COMFYUI_PATH"):
        return os.environ["COMFYUI_PATH"]
    custom_nodes = os.path.dirname(ROOT)
    comfy = os.path.dirname(custom_nodes)
    if os.path.basename(custom_nodes) == "custom_nodes" and os.path.isfile(os.path.join(comfy, "main.py")):
        return comfy
    return None


def missing_models(models_dir: str, preset: str = PRESET) -> list[dict]:
    """Manifest entries of a preset whose file (or folder) is not in ``models_dir``."""
    load_pack()
    from spinbot.nodes import manifest

    wanted = manifest.presets()[preset]["models"]
    out = []
    for model_id in wanted:
        m = manifest.model(model_id)
        if not os.path.exists(os.path.join(models_dir, m.folder, m.path)):
            out.append({"folder": m.folder, "path": m.path, "source": m.source or m.url or ""})
    return out


def make_inputs(folder: str, args: argparse.Namespace) -> tuple[str, str, str]:
    """Portrait, voice reference and its transcript (the user's, or made here)."""
    from tests.media import astronaut, speech_wav, tone, write_wav

    portrait = os.path.join(folder, "portrait.png")
    if args.image:
        shutil.copy(args.image, portrait)
    else:
        Image.fromarray(astronaut(256)).save(portrait)
    if args.voice:
        return portrait, os.path.abspath(args.voice), args.voice_text
    voice = os.path.join(folder, "voice.wav")
    if speech_wav(voice, REFERENCE_TEXT) is None:
        print("espeak-ng not found: the voice reference is a tone", file=sys.stderr)
        write_wav(voice, tone(4.0, 24000), 24000)
    return portrait, voice, REFERENCE_TEXT


def assignments(portrait: str, voice: str, voice_text: str, text: str) -> list[str]:
    import json

    return [f"Portrait.image={portrait}", f"Voice reference.audio={voice}",
            f"Voice Profile.reference_text={json.dumps(voice_text)}",
            f"Narration.narration={json.dumps(text)}"]


def _client():
    """nodes/client.py is standard-library only and importable without the pack's package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("spinbot_client", os.path.join(ROOT, "nodes", "client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_through_comfyui(server: str | None, comfy_path: str | None, models_dir: str,
                        sets: list[str], out: str) -> int:
    """The pack's renderer (``python -m nodes.render one``) on ``server``, or on a ComfyUI it starts
    from ``comfy_path`` (one per GPU, else CPU) whose models folder is ``models_dir``."""
    import importlib

    load_pack()
    render = importlib.import_module("spinbot.nodes.render.__main__")
    argv = ["one", WORKFLOW, *sum((["--set", s] for s in sets), []), "--out", out]
    if server:
        return render.main([*argv, "--server", server])
    os.environ["COMFYUI_PATH"] = comfy_path
    return render.main([*argv, "--start", "1", "--models-dir", os.path.abspath(models_dir)])


def run_standalone(models_dir: str, sets: list[str], out: str) -> int:
    from tests.core_nodes import CORE_NODE_CLASSES
    from tests.workflow_tools import definitions, run_api, validate_api

    inputs = tempfile.mkdtemp(prefix="spinbot-inputs-")
    os.environ["SPINBOT_INPUT_DIR"] = inputs
    os.environ["SPINBOT_OUTPUT_DIR"] = os.path.abspath(out)
    os.environ["SPINBOT_MODELS_DIR"] = os.path.abspath(models_dir)

    def upload(path: str) -> str:
        shutil.copy(path, os.path.join(inputs, os.path.basename(path)))
        return os.path.basename(path)

    client = _client()
    pack = load_pack()
    workflow = client.apply_overrides(client.load_workflow(WORKFLOW), sets, upload=upload)
    classes = {**pack.NODE_CLASS_MAPPINGS, **CORE_NODE_CLASSES}
    validate_api(workflow, definitions(pack.NODE_CLASS_MAPPINGS))
    results = run_api(workflow, classes)
    combine = next(nid for nid, node in workflow.items() if node["class_type"] == "SpinBotVideoCombine")
    path, report = results[combine]["result"]
    shutil.rmtree(inputs, ignore_errors=True)
    print(report, file=sys.stderr)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what the avatar says")
    parser.add_argument("--image", help="portrait image (default: skimage's astronaut)")
    parser.add_argument("--voice", help="voice reference audio, 5-12 s of clean speech")
    parser.add_argument("--voice-text", default="", help="transcript of --voice")
    parser.add_argument("--models-dir", help="ComfyUI models folder (default: $COMFYUI_PATH/models)")
    parser.add_argument("--server", help="a running ComfyUI, e.g. http://127.0.0.1:8188")
    parser.add_argument("--out", default=os.path.join(ROOT, "output"), help="where the MP4 goes")
    parser.add_argument("--no-tiny", action="store_true",
                        help="stop when models are missing instead of rendering with tiny ones")
    args = parser.parse_args(argv)
    if args.voice and not args.voice_text:
        parser.error("--voice needs --voice-text (its transcript)")

    comfy_path = find_comfyui()
    models_dir = args.models_dir or (os.path.join(comfy_path, "models") if comfy_path else
                                     os.path.join(ROOT, "models"))
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="spinbot-demo-")
    try:
        portrait, voice, voice_text = make_inputs(scratch, args)
        sets = assignments(portrait, voice, voice_text, args.text)
        missing = missing_models(models_dir)
        if missing:
            print(f"The direct workflow needs model files missing from {models_dir}:", file=sys.stderr)
            for m in missing:
                print(f"  {m['folder']}/{m['path']}  ({m['source']})", file=sys.stderr)
            print(f"Get them with: python install.py --models {PRESET} --models-dir {models_dir}",
                  file=sys.stderr)
            if args.no_tiny or args.server:
                return 3  # a running server cannot see tiny models written here
            from tests import factory

            models_dir = os.path.join(scratch, "models")
            factory.build(models_dir)
            print("Rendering with tiny random models instead: right timing, noise for pictures "
                  "and sound.", file=sys.stderr)
        if args.server or comfy_path:
            return run_through_comfyui(args.server, comfy_path, models_dir, sets, args.out)
        return run_standalone(models_dir, sets, args.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
