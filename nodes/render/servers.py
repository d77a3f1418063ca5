"""Start local ComfyUI servers for the renderer: one per GPU when there are GPUs, else CPU servers.

Each server runs ``$COMFYUI_PATH/main.py`` in its own process with a scratch ``--base-directory``
(its ``custom_nodes/ComfyUI-SpinBot`` links to this pack, its ``models`` to the models folder), on a
free loopback port, so the user's ComfyUI folders are not written to. Standard library only.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    """NVIDIA GPUs that ``nvidia-smi -L`` lists (0 without the tool); no torch import."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    tool = shutil.which("nvidia-smi")
    if not tool:
        return 0
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class LocalComfyUI:
    """One ComfyUI process. ``gpu`` is the CUDA device index it may see, or None for ``--cpu``."""

    def __init__(self, comfy_path: str, models_dir: str | None = None, gpu: int | None = None,
                 base_dir: str | None = None, startup_timeout: float = 300.0,
                 extra_args: tuple[str, ...] = (), link_pack: bool = True):
        if not os.path.isfile(os.path.join(comfy_path, "main.py")):
            raise FileNotFoundError(f"no ComfyUI at {comfy_path!r} (its main.py is missing); set "
                                    "COMFYUI_PATH to your ComfyUI folder")
        self._own_dir = base_dir is None  # a scratch folder made here is removed by stop()
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="spinbot-render-comfy-")
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            os.makedirs(os.path.join(self.base_dir, sub), exist_ok=True)
        link = os.path.join(self.base_dir, "custom_nodes", "ComfyUI-SpinBot")
        if link_pack and not os.path.exists(link):  # off where the pack was installed for real
            os.symlink(PACK_ROOT, link)
        models = os.path.join(self.base_dir, "models")
        if not os.path.exists(models):
            source = models_dir or os.path.join(comfy_path, "models")
            if os.path.isdir(source):
                os.symlink(os.path.abspath(source), models)
            else:
                os.makedirs(models)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.base_dir, "comfyui.log")
        self._log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
        device = ["--cpu"]
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
            device = []
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        self.proc = subprocess.Popen(
            [python, "main.py", *device, "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", self.base_dir, "--disable-auto-launch", *extra_args],
            cwd=comfy_path, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._deadline = time.time() + startup_timeout

    def wait_ready(self) -> "LocalComfyUI":
        """Block until ``/system_stats`` answers. Raises RuntimeError (exited) or TimeoutError."""
        while time.time() < self._deadline:
            if self.proc.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"ComfyUI exited during start-up:\n{log}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=10) as r:
                    json.loads(r.read())
                return self
            except (urllib.error.URLError, ConnectionError, ValueError):
                time.sleep(1)
        log = self.log()
        self.stop()
        raise TimeoutError(f"ComfyUI did not start in time:\n{log}")

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-6000:]

    def stop(self, keep: bool = False) -> None:
        """Stop the process; the scratch base folder made here goes too unless ``keep`` (the
        results were downloaded from it already; its log matters only after a failure)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self._own_dir and not keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_servers(n: int | None, comfy_path: str | None = None, models_dir: str | None = None,
                  log=print) -> list[LocalComfyUI]:
    """Start ``n`` servers (None: one per GPU, at least one) from ``comfy_path`` or
    ``$COMFYUI_PATH``; they start in parallel. GPUs are dealt round-robin; CPU servers without
    GPUs. Raises FileNotFoundError without a ComfyUI; stops the started ones on any failure."""
    comfy_path = comfy_path or os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        raise FileNotFoundError("--start needs a ComfyUI: set COMFYUI_PATH to its folder")
    gpus = gpu_count()
    n = n or max(1, gpus)
    servers: list[LocalComfyUI] = []
    try:
        for i in range(n):
            servers.append(LocalComfyUI(comfy_path, models_dir, gpu=(i % gpus) if gpus else None))
            log(f"starting ComfyUI {i + 1}/{n} at {servers[-1].url} "
                f"({'GPU ' + str(i % gpus) if gpus else 'CPU'}; log {servers[-1].log_path})")
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
