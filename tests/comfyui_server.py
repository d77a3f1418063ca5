"""Start a real ComfyUI (from ``COMFYUI_PATH``) with this pack installed, for integration tests.

ComfyUI runs in its own process with ``--base-directory`` pointing at a scratch folder whose
``custom_nodes/ComfyUI-SpinBot`` is a link to this checkout, so the user's ComfyUI folders are not
touched. Its Python is ``COMFYUI_PYTHON`` or the interpreter running the tests.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from tests._pack import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyUI:
    def __init__(self, comfy_path: str, base_dir: str, startup_timeout: float = 240.0,
                 link_pack: bool = True, extra_args: tuple[str, ...] = ()):
        self.base_dir = base_dir
        for sub in ("custom_nodes", "input", "output", "temp", "models", "user"):
            os.makedirs(os.path.join(base_dir, sub), exist_ok=True)
        link = os.path.join(base_dir, "custom_nodes", "ComfyUI-SpinBot")
        if link_pack and not os.path.exists(link):
            os.symlink(ROOT, link)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        self.log_path = os.path.join(base_dir, "comfyui.log")
        self._log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
        self.proc = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", base_dir, "--disable-auto-launch", *extra_args],
            cwd=comfy_path, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        self.stop()
        raise TimeoutError(f"ComfyUI did not start in {startup_timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return open(self.log_path, encoding="utf-8", errors="replace").read()[-6000:]

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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
