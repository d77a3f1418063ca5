"""Batch job files (JSONL or CSV), the results folder, and the report written as jobs finish.

A job is ``{"id": str, "workflow": shipped name or API JSON path, "set": {"Title.input": value}}``
plus optional keys other parts may read (``"split"`` for segment fan-out). Local files named in
``set`` for LoadImage/LoadAudio/LoadVideo are uploaded to the server that runs the job.

Standard library only (PyAV, a pack requirement, is used when present to check that an existing
MP4 decodes).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
import time
from typing import Any, Iterable

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JOB_KEYS = ("id", "workflow", "set")


class JobFileError(ValueError):
    """A batch file that cannot be read as jobs; the message names the line and the problem."""


def _resolve_files(values: dict, folder: str) -> dict:
    """Relative paths of files beside the batch file become absolute, so the batch runs from anywhere."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and value and not os.path.isabs(value):
            candidate = os.path.join(folder, value)
            if os.path.isfile(candidate):
                value = os.path.abspath(candidate)
        out[key] = value
    return out


def _check(job: dict, where: str, seen: set[str]) -> dict:
    if not isinstance(job.get("workflow"), str) or not job["workflow"]:
        raise JobFileError(f"{where}: no 'workflow' (a shipped name such as photo_with_audio, or an "
                           "API JSON path)")
    if not isinstance(job.get("set", {}), dict):
        raise JobFileError(f"{where}: 'set' must be an object of \"Title.input\": value")
    for key in job.get("set", {}):
        if "." not in key:
            raise JobFileError(f"{where}: set key {key!r} is not Title.input")
    if not isinstance(job["id"], str) or not _ID.match(job["id"]):
        raise JobFileError(f"{where}: id {job['id']!r} must be letters, digits, '.', '_' or '-' "
                           "(it names the output file)")
    if job["id"] in seen:
        raise JobFileError(f"{where}: id {job['id']!r} is used twice")
    seen.add(job["id"])
    return job


def _cell(raw: str) -> Any:
    """A CSV cell read like a --set value: JSON when it parses (numbers, true/false), else text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_jobs(text: str, fmt: str, folder: str = ".") -> list[dict]:
    """Jobs from a batch file's text.

    ``fmt`` is "jsonl" (one JSON object a line; blank lines and lines starting with '#' skipped)
    or "csv" (a header row: ``id``, ``workflow`` and other plain keys, and ``Title.input`` columns
    whose non-empty cells become ``set`` entries). A job without an id gets ``job<line>``.
    Relative file paths are taken from ``folder``. Raises JobFileError naming the line.
    """
    jobs: list[dict] = []
    lines: list[int] = []  # each job's line, for messages about pairs of jobs
    seen: set[str] = set()
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                job = json.loads(line)
            except ValueError as e:
                raise JobFileError(f"line {n}: not JSON ({e})") from None
            if not isinstance(job, dict):
                raise JobFileError(f"line {n}: a job is a JSON object, got {type(job).__name__}")
            job = dict(job)
            job.setdefault("id", f"job{n}")
            job["set"] = _resolve_files(job.get("set") or {}, folder) if isinstance(job.get("set", {}), dict) else job["set"]
            jobs.append(_check(job, f"line {n}", seen))
            lines.append(n)
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "workflow" not in reader.fieldnames:
            raise JobFileError("line 1: the CSV header needs a 'workflow' column")
        for row in reader:
            n = reader.line_num
            job: dict[str, Any] = {"set": {}}
            for key, raw in row.items():
                if key is None:
                    raise JobFileError(f"line {n}: more cells than header columns")
                if raw is None or raw == "":
                    continue
                if "." in key:
                    job["set"][key] = _cell(raw)
                else:
                    job[key] = raw if key in ("id", "workflow") else _cell(raw)
            if len(job) == 1 and not job["set"]:
                continue  # an empty row
            job.setdefault("id", f"job{n}")
            job["set"] = _resolve_files(job["set"], folder)
            jobs.append(_check(job, f"line {n}", seen))
            lines.append(n)
    else:
        raise JobFileError(f"unknown batch format {fmt!r} (jsonl or csv)")
    _check_derived_names(jobs, lines)
    return jobs


_DERIVED = re.compile(r"^(.+?)((?:\.[0-9]+)+)$")


def _check_derived_names(jobs: list[dict], lines: list[int]) -> None:
    """Refuse an id that another job's derived names use: a split job X runs sub-jobs ``X.<k>``
    (written to ``X.<k>.mp4``) and a job's extra outputs are ``X.<k><ext>``, so a job ``X.<k>``
    (or ``X.<k>.<j>``, a sub-job's extra) beside a job ``X`` would share files and report rows.
    Raises JobFileError naming the later line."""
    where = {job["id"]: n for job, n in zip(jobs, lines)}
    for job, n in zip(jobs, lines):
        m = _DERIVED.match(job["id"])
        if not m:
            continue
        stem, parts = m.group(1), m.group(2).split(".")[1:]
        for cut in range(len(parts)):
            base = stem + "".join("." + p for p in parts[:cut])
            if base in where:
                raise JobFileError(
                    f"line {max(n, where[base])}: id {job['id']!r} clashes with job {base!r} (line "
                    f"{where[base]}), whose segments and extra outputs are named {base}.<k>; "
                    "rename one of them")


def read_jobs(path: str) -> list[dict]:
    """Jobs of a ``.jsonl``/``.json`` or ``.csv`` batch file (see parse_jobs)."""
    fmt = "csv" if path.lower().endswith(".csv") else "jsonl"
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    return parse_jobs(text, fmt, os.path.dirname(os.path.abspath(path)))


# What LoadImage/LoadAudio/LoadVideo read; a value with one of these endings (or a folder in it)
# that is not a local file is a mistyped path, which ComfyUI would answer with a bare HTTP 400.
MEDIA_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".wav",
                    ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".mp4", ".mov", ".webm",
                    ".mkv", ".avi")


def looks_like_missing_file(value: Any) -> bool:
    """True when ``value`` (a LoadImage/LoadAudio/LoadVideo input) looks like a local path, i.e.
    has a directory separator or a media extension (`MEDIA_EXTENSIONS`), and no such file exists."""
    if not isinstance(value, str) or not value.strip():
        return False
    looks = ("/" in value or os.sep in value) or value.lower().endswith(MEDIA_EXTENSIONS)
    return looks and not os.path.isfile(value)


def assignments(job: dict) -> list[str]:
    """The job's ``set`` as client --set strings; values JSON-encoded so their types survive."""
    return [f"{key}={json.dumps(value)}" for key, value in (job.get("set") or {}).items()]


def results_dir(batch_path: str) -> str:
    """``<batch>.results/`` beside the batch file."""
    return os.path.abspath(batch_path) + ".results"


def output_path(results: str, job_id: str) -> str:
    """``<results>/<job id>.mp4``: where a job's video goes, and what a re-run checks."""
    return os.path.join(results, f"{job_id}.mp4")


def mp4_is_valid(path: str) -> bool:
    """True when ``path`` is an MP4 whose video stream decodes to at least one frame (and whose
    audio stream, if any, decodes). Without PyAV: the file starts with an ISO-BMFF 'ftyp' box."""
    if not os.path.isfile(path) or os.path.getsize(path) < 16:
        return False
    try:
        import av
    except ImportError:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"ftyp"
    try:
        with av.open(path) as c:
            if not c.streams.video:
                return False
            frames = sum(1 for _ in c.decode(c.streams.video[0]))
        with av.open(path) as c:
            for s in c.streams.audio:
                for _ in c.decode(s):
                    pass
        return frames > 0
    except Exception:  # noqa: BLE001 - any decode failure means "not a finished result"
        return False


class Report:
    """``report.jsonl`` appended (and flushed to disk) as each job finishes; ``report.csv`` rewritten
    from it at the end. A record: id, status (ok / skipped / failed), server, seconds, output,
    error, attempts."""

    FIELDS = ("id", "status", "server", "seconds", "output", "error", "attempts")

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.jsonl = os.path.join(folder, "report.jsonl")
        self.csv = os.path.join(folder, "report.csv")
        self.records: list[dict] = []
        self._lock = threading.Lock()

    def add(self, record: dict) -> dict:
        record = {k: record.get(k) for k in self.FIELDS} | {"time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._lock:
            self.records.append(record)
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return record

    def write_csv(self, records: Iterable[dict] | None = None) -> str:
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[*self.FIELDS, "time"])
            writer.writeheader()
            for r in records if records is not None else self.records:
                writer.writerow(r)
        return self.csv
