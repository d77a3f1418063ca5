"""Queue a SpinBot API workflow on a running ComfyUI and download the resulting MP4.

    python custom_nodes/ComfyUI-SpinBot/nodes/client.py direct \\
        --set "Portrait.image=me.jpg" --set "Voice reference.audio=me.wav" \\
        --set "Narration.text=Hello there" --out renders/

The workflow is a path to an API-format JSON or the name of a shipped one (workflows/api/NAME.json).
`--set TITLE.INPUT=VALUE` overrides a node input, the node named by its title (or id); the value
is read as JSON when it parses (numbers, true/false) and as text otherwise. A value that names a
local file for a LoadImage/LoadAudio node is uploaded first through `/upload/image`. Progress comes
over ComfyUI's websocket; the outputs (MP4s, audio, images) are downloaded with `/view`.

Standard library only, so it runs from any Python, with or without ComfyUI's environment.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import mimetypes
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(os.path.dirname(HERE), "workflows", "api")
UPLOAD_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file")}


class ClientError(RuntimeError):
    pass


class ServerUnreachable(ClientError):
    """The server refused, reset or dropped the connection: the job may be retried elsewhere."""


# --------------------------------------------------------------------------- workflow edits

def load_workflow(name_or_path: str) -> dict:
    path = name_or_path
    if not os.path.exists(path):
        shipped = os.path.join(SHIPPED, name_or_path if name_or_path.endswith(".json") else name_or_path + ".json")
        if not os.path.exists(shipped):
            names = sorted(f[:-5] for f in os.listdir(SHIPPED) if f.endswith(".json"))
            raise ClientError(f"no workflow file {name_or_path!r} and no shipped workflow of that "
                              f"name (shipped: {', '.join(names)})")
        path = shipped
    with open(path, encoding="utf-8") as f:
        workflow = json.load(f)
    if not isinstance(workflow, dict) or "nodes" in workflow:
        raise ClientError(f"{path} is a UI-format workflow; queue the API format "
                          "(workflows/api/, or 'Export (API)' in ComfyUI)")
    return workflow


def find_node(workflow: dict, ref: str) -> str:
    if ref in workflow:
        return ref
    matches = [nid for nid, node in workflow.items()
               if (node.get("_meta") or {}).get("title", "").lower() == ref.lower()]
    if len(matches) == 1:
        return matches[0]
    titles = ", ".join(sorted({(n.get('_meta') or {}).get('title', nid) for nid, n in workflow.items()}))
    if not matches:
        raise ClientError(f"no node titled or numbered {ref!r} (titles: {titles})")
    raise ClientError(f"{len(matches)} nodes are titled {ref!r}; use the node id ({', '.join(matches)})")


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """'Title.input=value' -> (title, input, value); the title may contain dots."""
    target, sep, raw = text.partition("=")
    ref, dot, name = target.rpartition(".")
    if not sep or not dot or not ref or not name:
        raise ClientError(f"--set {text!r}: expected TITLE.INPUT=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return ref, name, value


def apply_overrides(workflow: dict, assignments: list[str],
                    upload: Callable[[str], str] | None = None) -> dict:
    """A copy of ``workflow`` with the ``--set`` assignments applied (local files uploaded)."""
    workflow = json.loads(json.dumps(workflow))
    for text in assignments:
        ref, name, value = parse_assignment(text)
        nid = find_node(workflow, ref)
        node = workflow[nid]
        if isinstance(node["inputs"].get(name), list):
            raise ClientError(f"--set {text!r}: input {name!r} of node {nid} is a link, not a value")
        if (node["class_type"], name) in UPLOAD_INPUTS and isinstance(value, str) and os.path.isfile(value):
            if upload is None:
                raise ClientError(f"--set {text!r}: a local file needs a server to upload to")
            value = upload(value)
        node["inputs"][name] = value
    return workflow


# --------------------------------------------------------------------------- HTTP

class Client:
    def __init__(self, server: str = "http://127.0.0.1:8188", timeout: float = 30.0):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> bytes:
        req = urllib.request.Request(self.server + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise ClientError(f"{method} {path} -> HTTP {e.code}: {describe_error(detail)}") from None
        except urllib.error.URLError as e:
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.server} ({e.reason}); is it running? "
                                    "Start it with: python main.py --listen 127.0.0.1 --port 8188") from None
        except (ConnectionError, http.client.HTTPException) as e:
            # A server that dies mid-reply resets the socket or closes it without a status line.
            raise ServerUnreachable(f"ComfyUI at {self.server} dropped the connection "
                                    f"({type(e).__name__}: {e})") from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def upload(self, path: str) -> str:
        """Upload a local image/audio file to ComfyUI's input folder; returns the name to use."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            data = f.read()
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                 f"filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n".encode() + data + b"\r\n",
                 f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\n"
                 "true\r\n".encode(),
                 f"--{boundary}--\r\n".encode()]
        reply = json.loads(self._request("POST", "/upload/image", b"".join(parts),
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def queue(self, workflow: dict, extra_data: dict | None = None) -> str:
        payload = {"prompt": workflow, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        reply = json.loads(self._request("POST", "/prompt", json.dumps(payload).encode(),
                                         {"Content-Type": "application/json"}))
        return reply["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def download(self, item: dict, out_dir: str) -> str:
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        data = self._request("GET", f"/view?{query}")
        os.makedirs(out_dir, exist_ok=True)
        return write_new_file(out_dir, os.path.basename(item["filename"]), data)

    def open_socket(self, timeout: float = 3600.0) -> Iterator[dict] | None:
        """Connect to /ws before queueing, so no message of the prompt is missed; None if that fails."""
        try:
            messages = websocket_messages(self.server, self.client_id, time.time() + timeout)
            first = next(messages)  # the handshake happens here; ComfyUI greets with a status message

            def chain() -> Iterator[dict]:
                yield first
                yield from messages
            return chain()
        except (OSError, ConnectionError, StopIteration):
            return None

    def wait(self, prompt_id: str, on_event: Callable[[dict], None] | None = None,
             timeout: float = 3600.0, messages: Iterator[dict] | None = None) -> dict:
        """Follow the prompt over the websocket (or poll /history without one) until it ends."""
        deadline = time.time() + timeout
        try:
            for message in messages or ():
                if on_event:
                    on_event(message)
                data = message.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                kind = message.get("type")
                if kind == "execution_error":
                    raise ClientError(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                      f"{data.get('exception_message', '').strip()}")
                if kind == "execution_interrupted":
                    raise ClientError("the prompt was cancelled in ComfyUI")
                if kind in ("execution_success",) or (kind == "executing" and data.get("node") is None):
                    break
        except (OSError, ConnectionError):
            pass  # no websocket: fall back to polling
        while time.time() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error":
                    raise ClientError("the prompt failed: " + describe_history_error(status))
                return entry
            time.sleep(0.5)
        raise ClientError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")


def write_new_file(folder: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``folder/name``, or ``name-2``, ``name-3``... when that exists: another
    server (or a restarted one) numbers its outputs from 1 again, and a render is never overwritten."""
    stem, ext = os.path.splitext(name)
    n = 1
    while True:
        target = os.path.join(folder, name if n == 1 else f"{stem}-{n}{ext}")
        try:
            with open(target, "xb") as f:
                f.write(data)
            return target
        except FileExistsError:
            n += 1


def describe_error(text: str) -> str:
    """ComfyUI's /prompt validation errors as one readable line per problem."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    lines = [data.get("error", {}).get("message", "")] if isinstance(data.get("error"), dict) else []
    for nid, node in (data.get("node_errors") or {}).items():
        for err in node.get("errors", []):
            lines.append(f"node {nid} ({node.get('class_type')}): {err.get('message')}: {err.get('details')}")
    return "; ".join(l for l in lines if l) or text.strip()[:500]


def describe_history_error(status: dict) -> str:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            return f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_message', '').strip()}"
    return json.dumps(status)[:500]


def output_files(entry: dict) -> list[dict]:
    """Every file a finished prompt produced (SpinBot videos first), from its /history entry."""
    files = []
    for node_output in entry.get("outputs", {}).values():
        for key in ("spinbot_video", "gifs", "videos", "audio", "images"):
            for item in node_output.get(key) or []:
                if isinstance(item, dict) and item.get("filename") and item.get("type", "output") == "output":
                    files.append(item)
    return files


# --------------------------------------------------------------------------- websocket (RFC 6455)

def websocket_messages(server: str, client_id: str, deadline: float) -> Iterator[dict]:
    """JSON text messages from ComfyUI's /ws; binary frames (live previews) are skipped."""
    url = urllib.parse.urlparse(server)
    if url.scheme != "http":
        raise OSError("websocket progress needs a plain http:// server")
    sock = socket.create_connection((url.hostname, url.port or 80), timeout=30)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake closed")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError("websocket upgrade refused")
        buffer = bytearray(rest)

        def read(n: int) -> bytes:
            while len(buffer) < n:
                sock.settimeout(max(0.1, deadline - time.time()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("websocket closed")
                buffer.extend(chunk)
            out = bytes(buffer[:n])
            del buffer[:n]
            return out

        message = bytearray()
        while time.time() < deadline:
            b0, b1 = read(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", read(8))[0]
            mask = read(4) if b1 & 0x80 else None
            payload = read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                return
            if opcode == 0x9:  # ping -> pong (client frames are masked)
                sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode in (0x1, 0x0, 0x2):
                if opcode == 0x2 or (opcode == 0x0 and not message):
                    message.clear()
                    continue
                message.extend(payload)
                if b0 & 0x80:
                    text = bytes(message).decode("utf-8", "replace")
                    message.clear()
                    try:
                        yield json.loads(text)
                    except ValueError:
                        continue
    finally:
        sock.close()


# --------------------------------------------------------------------------- command line

def _progress_printer(stream=None) -> Callable[[dict], None]:
    # stderr looked up at call time: the module is shipped by value to Ray workers (render engine)
    stream = stream or sys.stderr

    def show(message: dict) -> None:
        data = message.get("data") or {}
        kind = message.get("type")
        if kind == "progress":
            stream.write(f"\r  node {data.get('node')}: {data.get('value')}/{data.get('max')}   ")
        elif kind == "executing" and data.get("node"):
            stream.write(f"\nrunning node {data['node']}")
        elif kind == "execution_cached" and data.get("nodes"):
            stream.write(f"\ncached: nodes {', '.join(map(str, data['nodes']))}")
        stream.flush()
    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow", help="API workflow JSON, or a shipped name (direct, guided, story, ...)")
    parser.add_argument("--server", default=os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188"))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="TITLE.INPUT=VALUE",
                        help="override a node input (repeatable); local files for LoadImage/LoadAudio are uploaded")
    parser.add_argument("--out", default=".", help="folder for the downloaded results")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the result")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        client = Client(args.server)
        workflow = apply_overrides(load_workflow(args.workflow), args.sets, client.upload)
        messages = client.open_socket(args.timeout)
        prompt_id = client.queue(workflow)
        print(f"queued {prompt_id} on {client.server}", file=sys.stderr)
        entry = client.wait(prompt_id, None if args.quiet else _progress_printer(), args.timeout,
                            messages)
        files = output_files(entry)
        if not files:
            raise ClientError("the prompt finished without output files")
        for item in files:
            print(client.download(item, args.out))
    except ClientError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
