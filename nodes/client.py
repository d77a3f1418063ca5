"""Queue a SpinBot API workflow on a running ComfyUI and download the resulting MP4.

    python custom_nodes/ComfyUI-SpinBot/nodes/client.py direct \\
        --set "Portrait.image=me.jpg" --set "Voice reference.audio=me.wav" \\
        --set "Narration.narration=Hello there" --out renders/

The workflow is a path to an API-format JSON or the name of a shipped one (workflows/api/NAME.json).
`--set TITLE.INPUT=VALUE` overrides a node input, the node named by its title (or id); the value
is read as JSON when it parses (numbers, true/false) and as text otherwise. A value that names a
local file for a LoadImage/LoadAudio node is uploaded first through `/upload/image`. Progress comes
over ComfyUI's websocket; the outputs (MP4s, audio, images) are downloaded with `/view`.

`--server` (default ``$COMFYUI_URL``, else http://127.0.0.1:8188) may leave out ``http://``, as in
``127.0.0.1:8188``. Exit status: 0 done, 1 the server or the render failed, 2 the command line is
wrong (an address that is not one, an unknown workflow, node or input): nothing was queued then.

Standard library only, so it runs from any Python, with or without ComfyUI's environment.
"""
from __future__ import annotations

import argparse
import base64
import difflib
import http.client
import json
import mimetypes
import os
import re
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
UPLOAD_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file"),
                 ("SpinBotLoadVideo", "video")}


class ClientError(RuntimeError):
    pass


class ServerUnreachable(ClientError):
    """The server refused, reset or dropped the connection: the job may be retried elsewhere."""


class PromptLost(ServerUnreachable):
    """The prompt is neither queued nor in the history: the server restarted (or it was deleted)."""


class UsageError(ClientError):
    """The request itself is wrong (server address, workflow, ``--set``): retrying cannot help,
    and the command line exits with status 2 (argparse's status for a bad command line)."""


# A host name or IPv4 address (IPv6 literals are recognised by their ':' once unbracketed).
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def with_scheme(server: str) -> str:
    """``server`` with ``http://`` put in front when it names no scheme (``127.0.0.1:8188``,
    ``localhost:8188``) and without a trailing ``/``; anything else is left for `server_url` to judge.

    A ``://`` test, not urlparse: ``localhost:8188`` parses as scheme ``localhost``."""
    text = server.strip()
    if text and "://" not in text:
        text = "http:" + text if text.startswith("//") else "http://" + text
    return text.rstrip("/")


def server_url(server: str) -> str:
    """The ComfyUI base URL for ``server`` (`with_scheme` applied), checked: http or https, a
    host, a numeric port. An address given without a scheme must name its port: ComfyUI listens
    on 8188, not on http's 80, so a bare word (``not-a-url``) is a mistake rather than a host.

    Raises UsageError with one line saying what is wrong and what an address looks like."""
    example = "give HOST:PORT or a URL such as http://127.0.0.1:8188"
    text = with_scheme(server)
    if not text:
        raise UsageError(f"--server is empty; {example}")
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as e:  # a non-numeric or out-of-range port, a malformed IPv6 literal
        raise UsageError(f"--server {server!r} is not a ComfyUI address ({e}); {example}") from None
    if url.scheme.lower() not in ("http", "https"):
        raise UsageError(f"--server {server!r}: ComfyUI is reached over http or https, not "
                         f"{url.scheme!r}; {example}")
    host = url.hostname or ""
    if not (_HOST.fullmatch(host) or (":" in host and re.fullmatch(r"[0-9A-Fa-f:.]+", host))):
        raise UsageError(f"--server {server!r} is not a ComfyUI address (no valid host name); {example}")
    if port is None and "://" not in server:
        raise UsageError(f"--server {server!r} is not a ComfyUI address (no scheme and no port); {example}")
    if url.query or url.fragment:
        raise UsageError(f"--server {server!r}: the address takes no ?query or #fragment; {example}")
    return text


# --------------------------------------------------------------------------- workflow edits

def load_workflow(name_or_path: str) -> dict:
    path = name_or_path
    if not os.path.exists(path):
        shipped = os.path.join(SHIPPED, name_or_path if name_or_path.endswith(".json") else name_or_path + ".json")
        if not os.path.exists(shipped):
            names = sorted(f[:-5] for f in os.listdir(SHIPPED) if f.endswith(".json"))
            raise UsageError(f"no workflow file {name_or_path!r} and no shipped workflow of that "
                             f"name (shipped: {', '.join(names)})")
        path = shipped
    try:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
    except (OSError, ValueError) as e:  # a folder, unreadable, not UTF-8, not JSON
        raise UsageError(f"cannot read the workflow {path}: {e}") from None
    if isinstance(workflow, dict) and "nodes" in workflow:
        raise UsageError(f"{path} is a UI-format workflow; queue the API format "
                         "(workflows/api/, or 'Export (API)' in ComfyUI)")
    if not isinstance(workflow, dict) or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs", {}), dict)
            for n in workflow.values()):
        raise UsageError(f"{path} is not an API-format workflow (an object of nodes, each with "
                         "class_type and inputs)")
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
        raise UsageError(f"no node titled or numbered {ref!r} (titles: {titles})")
    raise UsageError(f"{len(matches)} nodes are titled {ref!r}; use the node id ({', '.join(matches)})")


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """'Title.input=value' -> (title, input, value); the title may contain dots."""
    target, sep, raw = text.partition("=")
    ref, dot, name = target.rpartition(".")
    if not sep or not dot or not ref or not name:
        raise UsageError(f"--set {text!r}: expected TITLE.INPUT=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return ref, name, value


def apply_overrides(workflow: dict, assignments: list[str],
                    upload: Callable[[str], str] | None = None) -> dict:
    """A copy of ``workflow`` with the ``--set`` assignments applied (local files uploaded).

    Raises UsageError for a malformed assignment, an unknown or ambiguous node, an input the node
    does not have (an API workflow lists every widget input of each node, so a name it lacks is a
    typo that ComfyUI would silently ignore) or an input that is a link; all are checked before
    anything is uploaded."""
    workflow = json.loads(json.dumps(workflow))
    planned = []
    for text in assignments:
        ref, name, value = parse_assignment(text)
        nid = find_node(workflow, ref)
        node = workflow[nid]
        inputs = node.setdefault("inputs", {})
        if name not in inputs:
            raise UsageError(f"--set {text!r}: {describe_node(nid, node)} has no input {name!r}"
                             f"{did_you_mean(name, inputs)}; its inputs: {describe_inputs(inputs)}")
        if isinstance(inputs[name], list):
            raise UsageError(f"--set {text!r}: input {name!r} of node {nid} is a link, not a value")
        planned.append((text, node, name, value))
    for text, node, name, value in planned:
        if (node["class_type"], name) in UPLOAD_INPUTS and isinstance(value, str) and os.path.isfile(value):
            if upload is None:
                raise UsageError(f"--set {text!r}: a local file needs a server to upload to")
            value = upload(value)
        node["inputs"][name] = value
    return workflow


def describe_node(nid: str, node: dict) -> str:
    """``node 3 'Video Combine' (SpinBotVideoCombine)``: how errors name a node."""
    title = (node.get("_meta") or {}).get("title")
    return f"node {nid}" + (f" {title!r}" if title else "") + f" ({node.get('class_type')})"


def describe_inputs(inputs: dict) -> str:
    """The inputs a ``--set`` can change, then the linked ones: ``crf, fps (links: images)``."""
    values = [k for k, v in inputs.items() if not isinstance(v, list)]
    links = [k for k, v in inputs.items() if isinstance(v, list)]
    text = ", ".join(values) or "none that take a value"
    return text + (f" (links: {', '.join(links)})" if links else "")


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean 'fps'?)`` for the closest of ``choices`` (difflib's default 0.6 ratio), or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- HTTP

class Client:
    def __init__(self, server: str = "http://127.0.0.1:8188", timeout: float = 30.0):
        # Lenient here (callers such as the renderer pass addresses on); main() checks with
        # server_url first, and _request turns what urllib refuses into a UsageError.
        self.server = with_scheme(server)
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
            if str(e.reason).startswith("unknown url type"):  # ftp://, a typo of http: not a server
                raise UsageError(f"{self.server!r} is not a ComfyUI address ({e.reason}); "
                                 "give HOST:PORT or a URL such as http://127.0.0.1:8188") from None
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.server} ({e.reason}); is it running? "
                                    "Start it with: python main.py --listen 127.0.0.1 --port 8188") from None
        except http.client.InvalidURL as e:  # a non-numeric port: an HTTPException, yet no server's fault
            raise UsageError(f"{self.server!r} is not a ComfyUI address ({e}); "
                             "give HOST:PORT or a URL such as http://127.0.0.1:8188") from None
        except (ConnectionError, http.client.HTTPException) as e:
            # A server that dies mid-reply resets the socket or closes it without a status line.
            raise ServerUnreachable(f"ComfyUI at {self.server} dropped the connection "
                                    f"({type(e).__name__}: {e})") from None
        except ValueError as e:  # urllib's 'unknown url type' (no scheme at all), a bad IPv6 literal
            raise UsageError(f"{self.server!r} is not a ComfyUI address ({e}); "
                             "give HOST:PORT or a URL such as http://127.0.0.1:8188") from None

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

    def queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or waiting in the server's queue (GET /queue)."""
        queue = self.get_json("/queue")
        return any(len(item) > 1 and item[1] == prompt_id
                   for item in [*queue.get("queue_running", []), *queue.get("queue_pending", [])])

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
        except (OSError, ConnectionError, StopIteration, ValueError):
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
            # ComfyUI moves a prompt from its queue to its history under one lock, so absent from the
            # queue and then still absent from the history means gone, not finishing: a restarted
            # server would otherwise be waited on until the timeout.
            if entry is None and not self.queued(prompt_id) and self.history(prompt_id) is None:
                raise PromptLost(f"prompt {prompt_id} is neither queued nor finished on {self.server} "
                                 "(the server restarted, or the prompt was deleted from its queue)")
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
        client = Client(server_url(args.server))
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError(f"--out {args.out!r} is a file; give a folder for the results")
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
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an upload that cannot be read, a download that cannot be written
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
