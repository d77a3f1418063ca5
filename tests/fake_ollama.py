"""A stand-in Ollama server for tests: the parts of the HTTP API the script node uses.

It listens on 127.0.0.1 on a free port, records every request, and answers ``GET /api/tags``,
``GET /api/version`` and ``POST /api/chat`` (streamed NDJSON or one JSON object, like Ollama).
Chat replies come from a script of canned answers: strings, ``(text, done_reason)`` pairs, or
callables that get the request body. `script_reply` makes a callable that answers whichever
script the request's ``format`` schema asks for: one stage + narrative, or ("scene per segment")
the narrative + one scene per sentence.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence, Union

Reply = Union[str, tuple, Callable[[dict], str]]

DEFAULT_STAGE = "head and shoulders, looking at the viewer, soft light"


def wants_scenes(body: dict) -> bool:
    """Whether a chat request asks for a "scene per segment" script (its ``format`` schema has
    a "scenes" property)."""
    schema = body.get("format")
    return isinstance(schema, dict) and "scenes" in (schema.get("properties") or {})


def script_reply(sentences: Sequence[str], scenes: Sequence[str] | None = None,
                 stage: str = DEFAULT_STAGE) -> Callable[[dict], str]:
    """A reply (for ``FakeOllama(replies=[...])``) that answers by the request's schema.

    ``sentences`` are joined with spaces into the narrative, so pass whole sentences that the
    pack's splitter keeps apart (one segment each). A "scene per segment" request gets
    ``{"narrative", "scenes"}`` with ``scenes`` as given (default: "scene k, <sentence k>" for
    each sentence, so the count matches); any other request gets ``{"stage", "narrative"}``.
    """
    narrative = " ".join(s.strip() for s in sentences)
    chosen = list(scenes) if scenes is not None else [
        f"scene {k + 1}, {s.strip().rstrip('.!?')}" for k, s in enumerate(sentences)]

    def reply(body: dict) -> str:
        if wants_scenes(body):
            return json.dumps({"narrative": narrative, "scenes": chosen})
        return json.dumps({"stage": stage, "narrative": narrative})
    return reply


@dataclass
class Request:
    method: str
    path: str
    body: dict | None
    headers: dict = field(default_factory=dict)


class FakeOllama:
    def __init__(self, models=("qwen2.5:7b",), replies: list[Reply] | None = None,
                 redirect_chat_to: str | None = None):
        self.models = list(models)
        self.replies = list(replies or [])
        self.redirect_chat_to = redirect_chat_to
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "FakeOllama":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def chats(self) -> list[dict]:
        return [r.body for r in self.requests if r.path == "/api/chat"]

    # -------------------------------------------------------------- behaviour
    def next_reply(self, body: dict) -> tuple[str, str]:
        with self._lock:
            reply = self.replies.pop(0) if len(self.replies) > 1 else (self.replies or [""])[0]
        if callable(reply):
            reply = reply(body)
        if isinstance(reply, tuple):
            return reply[0], reply[1]
        return reply, "stop"


def _handler(fake: FakeOllama) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, body: dict | None) -> None:
            with fake._lock:
                fake.requests.append(Request(self.command, self.path, body, dict(self.headers)))

        def do_GET(self) -> None:
            self._record(None)
            if self.path == "/api/tags":
                self._send_json(200, {"models": [
                    {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1234,
                     "digest": "0" * 64, "details": {"format": "gguf", "family": "qwen2"}}
                    for m in fake.models]})
            elif self.path == "/api/version":
                self._send_json(200, {"version": "0.0.0-fake"})
            else:
                self._send_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._record(None)
                self._send_json(400, {"error": "invalid JSON body"})
                return
            self._record(body)
            if self.path != "/api/chat":
                self._send_json(404, {"error": f"unknown endpoint {self.path}"})
                return
            if fake.redirect_chat_to:
                self.send_response(307)
                self.send_header("Location", fake.redirect_chat_to + "/api/chat")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            model = body.get("model", "")
            if model not in fake.models:
                self._send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
                return
            text, reason = fake.next_reply(body)
            stamp = "2025-01-01T00:00:00Z"
            final = {"model": model, "created_at": stamp, "done": True, "done_reason": reason,
                     "message": {"role": "assistant", "content": ""}, "eval_count": len(text)}
            if body.get("stream", True) is False:
                final["message"]["content"] = text
                self._send_json(200, final)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            try:
                for k in range(0, len(text), 7):
                    part = {"model": model, "created_at": stamp, "done": False,
                            "message": {"role": "assistant", "content": text[k:k + 7]}}
                    self.wfile.write((json.dumps(part) + "\n").encode())
                self.wfile.write((json.dumps(final) + "\n").encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up mid-stream (Cancel), as it may with real Ollama

    return Handler
