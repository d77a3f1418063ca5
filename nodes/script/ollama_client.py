"""The only network code of the script stage: Ollama's HTTP API through the `ollama` client.

It talks to the one configured host and nowhere else: proxies from the environment are ignored
and redirects are not followed. Connection problems and missing models become `ScriptError`s
that name the host and the fix.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Sequence
from urllib.parse import urlsplit

import httpx
import ollama

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434


class ScriptError(RuntimeError):
    """A script could not be written; the message says why and what to do."""


class OllamaUnreachable(ScriptError):
    pass


class ModelNotFound(ScriptError):
    pass


def normalize_host(host: str) -> str:
    """``scheme://host:port[/path]`` from what users type: ``localhost``, ``:11434``,
    ``10.0.0.2:8080``, ``https://ollama.example.org/``."""
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_HOST
    if "://" not in raw:
        raw = "http://" + (f"127.0.0.1{raw}" if raw.startswith(":") else raw)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScriptError(f"Ollama host {host!r} is not an http(s) address such as {DEFAULT_HOST}")
    try:
        port = parts.port
    except ValueError:
        raise ScriptError(f"Ollama host {host!r} has an invalid port") from None
    if port is None:
        port = DEFAULT_PORT if "://" not in host else (443 if parts.scheme == "https" else 80)
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{name}:{port}{parts.path.rstrip('/')}"


def default_host() -> str:
    """``OLLAMA_HOST`` (Ollama's own variable) or the local default."""
    try:
        return normalize_host(os.environ.get("OLLAMA_HOST", ""))
    except ScriptError:
        return DEFAULT_HOST


def _client(host: str, timeout: float, connect_timeout: float | None = None) -> ollama.Client:
    limits = httpx.Timeout(timeout, connect=min(timeout, connect_timeout or timeout))
    return ollama.Client(host=host, timeout=limits, trust_env=False, follow_redirects=False)


def _unreachable(host: str, detail: str) -> OllamaUnreachable:
    return OllamaUnreachable(
        f"Cannot reach Ollama at {host} ({detail}). Start it (`ollama serve`, or the Ollama app) "
        f"on that machine, or set the node's host / the OLLAMA_HOST variable to where it runs.")


def _model_names(response) -> list[str]:
    return sorted({m.model for m in response.models if m.model})


def list_models(host: str, timeout: float = 1.0) -> list[str]:
    """Names of the models pulled on the server (``GET /api/tags``)."""
    try:
        with _client(host, timeout) as client:
            return _model_names(client.list())
    except (ConnectionError, httpx.ConnectError) as exc:
        raise _unreachable(host, "could not connect") from exc
    except httpx.TimeoutException as exc:
        raise _unreachable(host, f"no answer within {timeout:g} s") from exc
    except (httpx.HTTPError, ollama.ResponseError) as exc:
        raise _unreachable(host, str(exc) or type(exc).__name__) from exc


_cache: dict[str, tuple[float, list[str]]] = {}
_cache_lock = threading.Lock()


def cached_model_names(host: str, timeout: float = 1.0, ttl: float = 30.0,
                       ttl_unreachable: float = 5.0) -> list[str]:
    """`list_models` for dropdowns: never raises ([] when unreachable), remembers the answer for
    ``ttl`` seconds because ComfyUI asks for node definitions often (page loads, every queue).
    A failure is remembered briefly, so a server started a moment later shows up on refresh."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(host)
        if hit and now - hit[0] < (ttl if hit[1] else ttl_unreachable):
            return list(hit[1])
    try:
        names = list_models(host, timeout)
    except ScriptError:
        names = []
    with _cache_lock:
        _cache[host] = (time.monotonic(), names)
    return list(names)


def forget_cached_models() -> None:
    with _cache_lock:
        _cache.clear()


def chat_json(host: str, model: str, messages: Sequence[dict], schema: dict, *, seed: int,
              temperature: float, keep_alive: float | str, num_predict: int,
              timeout: float = 300.0, on_chunk: Callable[[int], None] | None = None
              ) -> tuple[str, str]:
    """One structured-output chat (``POST /api/chat`` with ``format=schema``), streamed.

    Returns ``(content, done_reason)``. ``on_chunk(n)`` is called per streamed piece, with the
    count so far: the caller checks for Cancel and moves a progress bar there (raising from it
    closes the stream, which makes Ollama stop generating).
    """
    options = {"seed": int(seed), "temperature": float(temperature),
               "num_predict": int(num_predict)}
    parts: list[str] = []
    done_reason = ""
    try:
        with _client(host, timeout, connect_timeout=10.0) as client:
            stream = client.chat(model=model, messages=list(messages), format=schema,
                                 options=options, keep_alive=keep_alive, stream=True)
            try:
                for n, chunk in enumerate(stream, start=1):
                    if chunk.message is not None and chunk.message.content:
                        parts.append(chunk.message.content)
                    if chunk.done:
                        done_reason = chunk.done_reason or ""
                    if on_chunk is not None:
                        on_chunk(n)
            finally:
                stream.close()  # closing the response tells Ollama to stop generating
    except (ConnectionError, httpx.ConnectError) as exc:
        raise _unreachable(host, "could not connect") from exc
    except httpx.TimeoutException as exc:
        raise _unreachable(host, f"no answer within {timeout:g} s") from exc
    except ollama.ResponseError as exc:
        message = str(exc.error)
        if exc.status_code == 404 or "not found" in message.lower():
            raise ModelNotFound(_missing_model_message(host, model, message)) from None
        raise ScriptError(f"Ollama at {host} refused the request for model '{model}': {exc}") \
            from None
    except httpx.HTTPError as exc:
        raise _unreachable(host, f"{type(exc).__name__}: {exc}") from exc
    return "".join(parts), done_reason


def _missing_model_message(host: str, model: str, detail: str) -> str:
    try:
        available = list_models(host, timeout=2.0)
    except ScriptError:
        available = []
    listed = ", ".join(available) if available else "none"
    return (f"Model '{model}' is not available on the Ollama server at {host} ({detail}). "
            f"Pull it there with: ollama pull {model}   (models on that server: {listed})")
