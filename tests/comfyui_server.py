"""Start a real ComfyUI (from ``COMFYUI_PATH``) with this pack installed, for integration tests.

The renderer's `LocalComfyUI` (nodes/render/servers.py) does the starting: ComfyUI runs in its own
process, on the CPU, with ``--base-directory`` pointing at a scratch folder whose
``custom_nodes/ComfyUI-SpinBot`` is a link to this checkout, so the user's ComfyUI folders are not
touched. Its Python is ``COMFYUI_PYTHON`` or the interpreter running the tests. This class adds
the calls the tests make against it.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid

from tests._pack import load_pack

load_pack()
from spinbot.nodes.render.servers import LocalComfyUI, free_port  # noqa: E402

__all__ = ["ComfyUI", "free_port"]


class ComfyUI(LocalComfyUI):
    def __init__(self, comfy_path: str, base_dir: str, startup_timeout: float = 240.0,
                 link_pack: bool = True, extra_args: tuple[str, ...] = ()):
        # A models folder of its own (the tiny factory models, or empty), never a link to the
        # ComfyUI checkout's.
        os.makedirs(os.path.join(base_dir, "models"), exist_ok=True)
        super().__init__(comfy_path, base_dir=base_dir, startup_timeout=startup_timeout,
                         extra_args=extra_args, link_pack=link_pack)
        self.wait_ready()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {path} -> {e.code}: {e.read().decode()}") from None

    def skip_first_visit(self) -> None:
        """Mark the web UI's tutorial as done, so a browser test sees no templates dialog of a
        first visit opening over (or some time after) the graph it loads."""
        req = urllib.request.Request(self.url + "/settings/Comfy.TutorialCompleted", data=b"true",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()

    def queue(self, workflow: dict, extra_pnginfo: dict | None = None) -> str:
        payload = {"prompt": workflow, "client_id": uuid.uuid4().hex}
        if extra_pnginfo:
            payload["extra_data"] = {"extra_pnginfo": extra_pnginfo}
        return self.post("/prompt", payload)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") == "error" or not entry["status"]["completed"]:
                    raise RuntimeError(f"prompt failed: {json.dumps(entry['status'])[:3000]}")
                return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f}s:\n{self.log()}")
