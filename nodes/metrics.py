"""Run metrics: each stage's wall time, peak RAM and peak VRAM, a per-run report, Prometheus series.

ComfyUI-free. `stage(name)` measures one piece of work and records it into the current run's
report; `instrument_node(cls)` wraps a node class's FUNCTION in a stage (the pack does this for
every node in `nodes/__init__.py`). A run is one prompt inside ComfyUI (keyed by its prompt id,
which the runtime adapter supplies through `configure`), or a process-level run standalone
(`new_run()` starts a fresh one).

Peak RAM is the peak resident set size (RSS) *during* the stage, not the process-lifetime peak:
on Linux the kernel's high-water mark (``VmHWM``) is reset at the start of each stage
(``/proc/self/clear_refs``, value 5; Linux >= 4.0) and read at its end, which is exact and costs
no thread; elsewhere, or with ``SPINBOT_PEAK_RAM=sampler``, a background thread samples RSS every
20 ms while a stage runs (a shorter spike can be missed). Nested or concurrent stages each get
their own peak: before a reset the current high-water mark is folded into every running stage.
Peak VRAM is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (the
current CUDA device, only once CUDA is initialised; 0 otherwise), folded the same way.

Prometheus series (a registry of the pack's own, not the global default, so other packs'
collectors cannot clash with it), served by the runtime adapter at ``GET /spinbot/metrics``:

- ``spinbot_stage_seconds`` histogram {stage}: wall time of stages that finished without error
- ``spinbot_frames_rendered_total`` counter {stage}: frames a stage produced
- ``spinbot_stage_failures_total`` counter {stage, error}: stages that raised, by exception type
- ``spinbot_model_loads_total`` counter {kind}: models loaded into the pack's model cache
- ``spinbot_queue_wait_seconds`` histogram: prompt queued -> its first SpinBot stage started
- ``spinbot_stage_peak_ram_bytes`` / ``spinbot_stage_peak_vram_bytes`` gauges {stage}: the
  last run of each stage (RAM above the stage's starting RSS; VRAM allocated by torch)
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

MIB = 2 ** 20
SAMPLE_INTERVAL_S = 0.020  # sampler period: a 20 ms tick costs ~1% of one core (see README)
MAX_RUNS = 32  # prompt runs kept in memory; older reports are dropped
MAX_STAGES = 1000  # per run: a standalone process-level run must not grow without bound

try:  # a runtime requirement; without it the pack still runs and only the endpoint is off
    import prometheus_client as _prom
except ImportError:  # pragma: no cover - depends on the install
    _prom = None


def _log() -> logging.Logger:
    return logging.getLogger("spinbot")


# --------------------------------------------------------------------------- records

@dataclass
class StageRecord:
    """One stage of a run. Byte counts are absolute except where named ``*_delta``.

    ``seconds`` is None while the stage runs; ``error`` is the exception type's name when it
    raised. ``peak_ram_bytes``: peak RSS of the process during the stage; ``ram_start_bytes``:
    RSS when it started; ``peak_vram_bytes``: peak bytes torch had allocated on the CUDA device.
    """

    name: str
    node_id: str | None = None
    started_at: float = 0.0  # unix time
    seconds: float | None = None
    ram_start_bytes: int = 0
    peak_ram_bytes: int = 0
    peak_vram_bytes: int = 0
    frames: int = 0
    frames_reported: bool = False
    error: str | None = None

    @property
    def peak_ram_delta(self) -> int:
        """Peak RSS above the RSS at the stage's start, in bytes (>= 0)."""
        return max(0, self.peak_ram_bytes - self.ram_start_bytes)

    def line(self) -> str:
        """The node report's stage line: ``stage: 1.23 s, peak RAM +350 MiB (1310 MiB RSS), peak
        VRAM 0 MiB[, N frames][, failed: ErrorType]``, or ``stage: running``."""
        if self.seconds is None:  # peaks so far would read as final figures
            return "stage: running"
        text = (f"stage: {self.seconds:.2f} s, peak RAM +{self.peak_ram_delta / MIB:.0f} MiB "
                f"({self.peak_ram_bytes / MIB:.0f} MiB RSS), "
                f"peak VRAM {self.peak_vram_bytes / MIB:.0f} MiB")
        if self.frames:
            text += f", {self.frames} frames"
        if self.error:
            text += f", failed: {self.error}"
        return text

    def to_dict(self) -> dict:
        return {"name": self.name, "node_id": self.node_id, "started_at": round(self.started_at, 3),
                "seconds": None if self.seconds is None else round(self.seconds, 4),
                "status": ("running" if self.seconds is None else
                           "failed" if self.error else "done"),
                "error": self.error, "peak_ram_bytes": self.peak_ram_bytes,
                "peak_ram_delta_bytes": self.peak_ram_delta,
                "peak_vram_bytes": self.peak_vram_bytes, "frames": self.frames}


@dataclass
class RunReport:
    """The stages of one run (one ComfyUI prompt, or the standalone process run), in the order
    they started. ``queue_wait_seconds``: queued -> first stage, when known (ComfyUI only)."""

    run_id: str
    created_at: float = field(default_factory=time.time)
    stages: list[StageRecord] = field(default_factory=list)
    queue_wait_seconds: float | None = None

    def to_dict(self) -> dict:
        return {"run": self.run_id, "created_at": round(self.created_at, 3),
                "queue_wait_seconds": (None if self.queue_wait_seconds is None
                                       else round(self.queue_wait_seconds, 4)),
                "stages": [s.to_dict() for s in list(self.stages)]}

    def to_json(self) -> str:
        """Compact JSON of `to_dict` (what Video Combine embeds as ``spinbot_run``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def summary(self) -> str:
        """One line per stage, for node reports and logs."""
        lines = [f"run {self.run_id}:"]
        if self.queue_wait_seconds is not None:
            lines.append(f"  queue wait {self.queue_wait_seconds:.2f} s")
        for s in list(self.stages):
            node = f" (node {s.node_id})" if s.node_id is not None else ""
            lines.append(f"  {s.name}{node}: {s.line()[len('stage: '):]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- context / runs

_lock = threading.RLock()
_runs: "collections.OrderedDict[str, RunReport]" = collections.OrderedDict()
_standalone: RunReport | None = None
_standalone_count = 0
_context: Callable[[], tuple] = lambda: (None, None)
_queued_at: Callable[[str], float | None] = lambda _prompt_id: None
_local = threading.local()  # .stack: the stages running on this thread, innermost last


def configure(context: Callable[[], tuple] | None = None,
              queued_at: Callable[[str], float | None] | None = None) -> None:
    """Set where runs come from (the runtime adapter calls this inside ComfyUI).

    ``context()`` -> ``(prompt_id, node_id)`` of the node running now, ``(None, None)`` outside a
    prompt; ``queued_at(prompt_id)`` -> unix time the prompt was queued, or None.
    """
    global _context, _queued_at
    if context is not None:
        _context = context
    if queued_at is not None:
        _queued_at = queued_at


def _safe_context() -> tuple:
    try:
        prompt_id, node_id = _context()
    except Exception:  # noqa: BLE001 - metrics must never break a node
        return None, None
    return (None if prompt_id is None else str(prompt_id),
            None if node_id is None else str(node_id))


def new_run(run_id: str | None = None) -> RunReport:
    """Start a fresh standalone run (the process-level current run) and return it."""
    global _standalone, _standalone_count
    with _lock:
        _standalone_count += 1
        _standalone = RunReport(run_id or f"standalone-{os.getpid()}-{_standalone_count}")
        return _standalone


def run_report(run_id: str | None = None) -> RunReport:
    """The report of run ``run_id``, else of the prompt running now, else the standalone run.

    A prompt id seen for the first time starts its run (and observes its queue wait)."""
    if run_id is None:
        run_id = _safe_context()[0]
    with _lock:
        if run_id is None:
            return _standalone if _standalone is not None else new_run()
        run = _runs.get(run_id)
        if run is not None:
            return run
        if _standalone is not None and _standalone.run_id == run_id:
            return _standalone
        run = _runs[run_id] = RunReport(run_id)
        while len(_runs) > MAX_RUNS:
            _runs.popitem(last=False)
    try:
        queued = _queued_at(run_id)
    except Exception:  # noqa: BLE001
        queued = None
    if queued is not None:
        run.queue_wait_seconds = max(0.0, time.time() - float(queued))
        if _metrics is not None:
            _metrics["queue_wait"].observe(run.queue_wait_seconds)
    return run


def current_stage() -> StageRecord | None:
    """The innermost stage running on this thread, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def add_frames(count: int) -> None:
    """Credit ``count`` rendered frames to the stage running on this thread (no-op outside one).
    A node that calls it is not credited again from its outputs by `instrument_node`."""
    rec = current_stage()
    if rec is not None:
        rec.frames += int(count)
        rec.frames_reported = True


# --------------------------------------------------------------------------- peak memory

def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cuda():
    """torch, when CUDA is initialised in this process (never initialises it), else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch
    except Exception:  # noqa: BLE001
        pass
    return None


class _PeakWatch:
    """Peak RSS and VRAM of every running stage (all threads), kept by one process-wide object
    because the counters it resets are process-wide."""

    def __init__(self, mode: str):
        self.mode = mode  # "hwm" or "sampler"
        self.active: list[StageRecord] = []
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.thread: threading.Thread | None = None
        self.samples = 0

    def _fold(self, ram: int | None, vram: int | None) -> None:
        for rec in self.active:
            if ram is not None and ram > rec.peak_ram_bytes:
                rec.peak_ram_bytes = ram
            if vram is not None and vram > rec.peak_vram_bytes:
                rec.peak_vram_bytes = vram

    def _peaks(self) -> tuple[int | None, int | None]:
        ram = _read_hwm() if self.mode == "hwm" else _rss()
        torch = _cuda()
        return ram, (int(torch.cuda.max_memory_allocated()) if torch is not None else None)

    def enter(self, rec: StageRecord) -> None:
        with self.lock:
            self._fold(*self._peaks())
            torch = _cuda()
            if self.mode == "hwm":
                _reset_hwm()
            rec.ram_start_bytes = rec.peak_ram_bytes = _rss()
            if torch is not None:
                torch.cuda.reset_peak_memory_stats()
                rec.peak_vram_bytes = int(torch.cuda.memory_allocated())
            self.active.append(rec)
            if self.mode == "sampler":
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(target=self._sample, name="spinbot-rss-sampler",
                                                   daemon=True)
                    self.thread.start()
                self.wake.notify_all()

    def exit(self, rec: StageRecord) -> None:
        with self.lock:
            self._fold(*self._peaks())
            if self.mode == "sampler":
                self._fold(_rss(), None)
            if rec in self.active:
                self.active.remove(rec)

    def _sample(self) -> None:
        # One thread for all stages; it sleeps on the condition while no stage runs.
        with self.lock:
            while True:
                while not self.active:
                    self.wake.wait()
                self._fold(_rss(), None)
                self.samples += 1
                self.wake.wait(SAMPLE_INTERVAL_S)


def _pick_mode() -> str:
    wanted = os.environ.get("SPINBOT_PEAK_RAM", "auto").lower()
    if wanted == "sampler":
        return "sampler"
    if _read_hwm() is not None and _reset_hwm():
        return "hwm"
    return "sampler"


_watch = _PeakWatch(_pick_mode())


def peak_ram_mode() -> str:
    """How peak RAM is measured: ``"hwm"`` (kernel high-water mark) or ``"sampler"``."""
    return _watch.mode


def set_peak_ram_mode(mode: str) -> None:
    """Switch between ``"hwm"`` and ``"sampler"`` (tests; never while a stage runs).
    Raises ValueError for another mode or when ``hwm`` is not available here."""
    global _watch
    if mode not in ("hwm", "sampler"):
        raise ValueError(f"peak RAM mode must be 'hwm' or 'sampler', not {mode!r}")
    if mode == "hwm" and not (_read_hwm() is not None and _reset_hwm()):
        raise ValueError("the kernel high-water mark (/proc/self/clear_refs) is not available")
    if _watch.active:
        raise RuntimeError("cannot switch the peak RAM mode while a stage runs")
    _watch = _PeakWatch(mode)


# --------------------------------------------------------------------------- Prometheus

def _make_metrics() -> dict | None:
    if _prom is None:
        return None
    reg = _prom.CollectorRegistry(auto_describe=True)
    # Buckets from 50 ms (text stages) to an hour (long SVD/InfiniteTalk renders on one GPU).
    stage_buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
    wait_buckets = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
    return {
        "registry": reg,
        "stage_seconds": _prom.Histogram("spinbot_stage_seconds", "Wall time of SpinBot stages "
                                         "that finished", ["stage"], registry=reg,
                                         buckets=stage_buckets),
        "frames": _prom.Counter("spinbot_frames_rendered", "Frames produced by SpinBot stages",
                                ["stage"], registry=reg),
        "failures": _prom.Counter("spinbot_stage_failures", "SpinBot stages that raised, by "
                                  "exception type", ["stage", "error"], registry=reg),
        "model_loads": _prom.Counter("spinbot_model_loads", "Models loaded into the SpinBot "
                                     "model cache", ["kind"], registry=reg),
        "queue_wait": _prom.Histogram("spinbot_queue_wait_seconds", "Time from a prompt being "
                                      "queued to its first SpinBot stage starting", registry=reg,
                                      buckets=wait_buckets),
        "peak_ram": _prom.Gauge("spinbot_stage_peak_ram_bytes", "Peak RSS above the stage's "
                                "start, last run of each stage", ["stage"], registry=reg),
        "peak_vram": _prom.Gauge("spinbot_stage_peak_vram_bytes", "Peak torch CUDA memory "
                                 "allocated during the stage, last run of each stage", ["stage"],
                                 registry=reg),
    }


_metrics = _make_metrics()

# The series names a scrape shows (counters get ``_total``, histograms ``_bucket/_sum/_count``).
EXPORTED_SERIES = (
    "spinbot_stage_seconds_bucket", "spinbot_stage_seconds_sum", "spinbot_stage_seconds_count",
    "spinbot_frames_rendered_total", "spinbot_stage_failures_total", "spinbot_model_loads_total",
    "spinbot_queue_wait_seconds_bucket", "spinbot_queue_wait_seconds_sum",
    "spinbot_queue_wait_seconds_count", "spinbot_stage_peak_ram_bytes",
    "spinbot_stage_peak_vram_bytes",
)


def prometheus_available() -> bool:
    return _metrics is not None


def prometheus_text() -> tuple[bytes, str]:
    """The pack's series in Prometheus text format: ``(body, content type)``.
    Raises RuntimeError when ``prometheus_client`` is not installed."""
    if _metrics is None:
        raise RuntimeError("prometheus_client is not installed: pip install 'prometheus-client>=0.17'")
    return _prom.generate_latest(_metrics["registry"]), _prom.CONTENT_TYPE_LATEST


def model_loaded(kind: str) -> None:
    """Count one model load of ``kind`` (the model cache calls this)."""
    if _metrics is not None:
        _metrics["model_loads"].labels(kind=str(kind)).inc()


def _observe(rec: StageRecord) -> None:
    if _metrics is None:
        return
    if rec.error:
        _metrics["failures"].labels(stage=rec.name, error=rec.error).inc()
    else:
        _metrics["stage_seconds"].labels(stage=rec.name).observe(rec.seconds or 0.0)
    if rec.frames:
        _metrics["frames"].labels(stage=rec.name).inc(rec.frames)
    _metrics["peak_ram"].labels(stage=rec.name).set(rec.peak_ram_delta)
    _metrics["peak_vram"].labels(stage=rec.name).set(rec.peak_vram_bytes)


# --------------------------------------------------------------------------- stages

@contextlib.contextmanager
def stage(name: str, node_id: str | None = None, run_id: str | None = None) -> Iterator[StageRecord]:
    """Measure the enclosed work as stage ``name`` of the current run (or of ``run_id``).

    Yields the `StageRecord` (set ``frames`` on it, or call `add_frames`). On an exception the
    record's ``error`` is the exception type's name, ``spinbot_stage_failures_total`` counts it
    and the exception propagates unchanged. Logs the stage line at INFO."""
    prompt_id, ctx_node = _safe_context()
    run = run_report(run_id or prompt_id)
    rec = StageRecord(name=name, node_id=node_id if node_id is not None else ctx_node,
                      started_at=time.time())
    with _lock:
        run.stages.append(rec)
        del run.stages[:-MAX_STAGES]
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    watch = _watch
    watch.enter(rec)
    stack.append(rec)
    t0 = time.perf_counter()
    try:
        yield rec
    except BaseException as exc:
        rec.error = type(exc).__name__
        raise
    finally:
        rec.seconds = time.perf_counter() - t0
        stack.remove(rec)
        watch.exit(rec)
        try:
            _observe(rec)
        except Exception:  # noqa: BLE001 - a metrics fault must not mask the node's result
            _log().exception("SpinBot metrics: recording %s failed", name)
        _log().info("SpinBot %s%s %s", name, "" if rec.node_id is None else f" (node {rec.node_id})",
                    rec.line())


def _frames_in(outputs, returns: tuple) -> int:
    """Frames in a node's outputs: the largest IMAGE batch or video ``frame_count``."""
    best = 0
    for kind, value in zip(returns, outputs):
        if kind == "IMAGE" and hasattr(value, "shape") and len(value.shape) == 4:
            best = max(best, int(value.shape[0]))
        elif isinstance(kind, str) and kind.endswith("VIDEO"):
            count = getattr(value, "frame_count", None)
            if isinstance(count, int):
                best = max(best, count)
    return best


_REPORT_NAMES = ("report", "info")


def _with_stage_line(result, rec: StageRecord, returns: tuple, names: tuple):
    """``result`` with the stage line appended to its report/info STRING outputs and UI text."""
    outputs = result.get("result") if isinstance(result, dict) else result
    if isinstance(outputs, (tuple, list)):
        changed = list(outputs)
        for i, (kind, name) in enumerate(zip(returns, names)):
            if kind == "STRING" and name in _REPORT_NAMES and isinstance(changed[i], str):
                changed[i] = f"{changed[i]}\n{rec.line()}" if changed[i] else rec.line()
        outputs = tuple(changed)
    if not isinstance(result, dict):
        return outputs
    result = dict(result)
    if "result" in result:
        result["result"] = outputs
    ui = result.get("ui")
    if isinstance(ui, dict) and isinstance(ui.get("text"), list):
        result["ui"] = {**ui, "text": [*ui["text"], rec.line()]}
    return result


def instrument_node(cls: type, name: str | None = None) -> type:
    """Wrap ``cls``'s FUNCTION method in `stage` (``name``: the stage label, default the class
    name) and return ``cls``. The wrapper keeps the method's name, docstring and signature
    (``functools.wraps``; ``inspect.signature`` follows ``__wrapped__``); it credits the frames in
    the IMAGE / *VIDEO outputs unless the node called `add_frames`, and appends the stage line to
    report/info STRING outputs and ``ui.text``. Wrapping twice is a no-op."""
    func_name = cls.FUNCTION
    original = cls.__dict__.get(func_name, getattr(cls, func_name))
    if getattr(original, "_spinbot_stage", None) is not None:
        return cls
    label = name or cls.__name__
    returns = tuple(getattr(cls, "RETURN_TYPES", ()))
    names = tuple(getattr(cls, "RETURN_NAMES", returns))

    @functools.wraps(original)
    def run_stage(self, *args, **kwargs):
        with stage(label) as rec:
            result = original(self, *args, **kwargs)
            if not rec.frames_reported:
                outputs = result.get("result", ()) if isinstance(result, dict) else result
                if isinstance(outputs, (tuple, list)):
                    rec.frames = _frames_in(outputs, returns)
        return _with_stage_line(result, rec, returns, names)

    run_stage._spinbot_stage = label
    setattr(cls, func_name, run_stage)
    return cls
