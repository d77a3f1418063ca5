"""Template thumbnails: ``workflows/<name>.jpg`` is a 512x512 view of the graph as ComfyUI shows it.

    COMFYUI_PATH=~/ComfyUI python -m tests.workflow_thumbnails quote narrated story
    COMFYUI_PATH=~/ComfyUI python -m tests.workflow_thumbnails guided --focus "guided=Stage image+Voice"

Starts a scratch ComfyUI (tests/comfyui_server.py) with the Missing Models dialog, the minimap
and the canvas info turned off (its models folder is empty, and neither belongs in a thumbnail),
opens each UI workflow in headless Chromium, centres the canvas on the named groups (the stages
the workflow is about; default: FOCUS, else the whole graph) and saves a square of the canvas,
clear of the menu, tabs and toolbar, as JPEG.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import urllib.request

from PIL import Image

from tests._pack import ROOT
from tests.workflow_tools import load_json

SIZE = 512
# The groups each workflow's thumbnail centres on: the stages that set it apart.
FOCUS = {"quote": ["Camera and text", "Music", "Output"],
         "narrated": ["Motion", "Music and subtitles"], "story": ["Motion", "24 fps and music"]}
# Frontend settings for a clean canvas (ids from ComfyUI_frontend's coreSettings).
SETTINGS = {"Comfy.Workflow.ShowMissingModelsWarning": False, "Comfy.Minimap.Visible": False,
            "Comfy.Graph.CanvasInfo": False}
VIEWPORT = {"width": 1200, "height": 1300}
# The square taken from the page: right of the sidebar, below the workflow tabs and above the
# canvas toolbar in the bottom corner (measured on ComfyUI_frontend 1.2x at this viewport).
CLIP = {"x": 70, "y": 90, "width": 1100, "height": 1100}


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    return path


def focus_box(ui: dict, groups: list[str] | None) -> tuple[float, float, float, float]:
    """(x, y, w, h) in graph units around ``groups`` (their bounding boxes' union), or around
    every node when none is given. A group name the workflow lacks is a ``SystemExit``."""
    if groups:
        known = {g["title"]: g["bounding"] for g in ui.get("groups", [])}
        missing = [g for g in groups if g not in known]
        if missing:
            raise SystemExit(f"no group {missing} in the workflow; it has {sorted(known)}")
        boxes = [known[g] for g in groups]
    else:
        boxes = [[*n["pos"], *n["size"]] for n in ui["nodes"]]
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


def shoot(page, ui: dict, groups: list[str] | None) -> Image.Image:
    """The graph around ``groups`` (or the whole graph), as a SIZE x SIZE image."""
    page.evaluate("wf => window.app.loadGraphData(wf)", ui)
    page.wait_for_timeout(1200)
    x, y, w, h = focus_box(ui, groups)
    scale = min(CLIP["width"] / (w + 60), CLIP["height"] / (h + 60), 1.2)
    # The canvas draws graph point p at canvas pixel (p + offset) x scale; the canvas element
    # starts at its client rect, so the clip's centre is put on the box's centre.
    page.evaluate("""([x, y, w, h, s, cx, cy]) => {
        const canvas = window.app.canvas;
        const rect = canvas.canvas.getBoundingClientRect();
        canvas.ds.scale = s;
        canvas.ds.offset[0] = (cx - rect.left) / s - (x + w / 2);
        canvas.ds.offset[1] = (cy - rect.top) / s - (y + h / 2);
        canvas.setDirty(true, true);
    }""", [x, y, w, h, scale, CLIP["x"] + CLIP["width"] / 2, CLIP["y"] + CLIP["height"] / 2])
    page.wait_for_timeout(800)  # DOM widgets (text boxes, players) follow on the next frames
    shot = Image.open(io.BytesIO(page.screenshot(clip=CLIP))).convert("RGB")
    return shot.resize((SIZE, SIZE), Image.LANCZOS)


def _set(url: str, key: str, value) -> None:
    req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", help="workflow names (workflows/<name>.json)")
    parser.add_argument("--focus", action="append", default=[],
                        help="NAME=GROUP[+GROUP...]: centre that workflow's thumbnail on groups")
    args = parser.parse_args(argv)
    focus = {name: groups for name, groups in FOCUS.items()}
    focus.update({name: groups.split("+") for name, groups in
                  (item.split("=", 1) for item in args.focus)})
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    from playwright.sync_api import sync_playwright

    from tests.comfyui_server import ComfyUI

    with tempfile.TemporaryDirectory() as base:
        server = ComfyUI(comfy_path, base)
        server.skip_first_visit()
        for key, value in SETTINGS.items():
            _set(server.url, key, value)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(server.url, wait_until="networkidle")
                page.wait_for_function("window.app && window.app.graph", timeout=60_000)
                page.keyboard.press("Escape")
                page.evaluate("() => document.querySelectorAll('.p-dialog-mask').forEach(e => e.remove())")
                for name in args.names:
                    ui = load_json(os.path.join(ROOT, "workflows", f"{name}.json"))
                    out = os.path.join(ROOT, "workflows", f"{name}.jpg")
                    shoot(page, ui, focus.get(name)).save(out, "JPEG", quality=88)
                    print("wrote", out)
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
