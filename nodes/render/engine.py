"""Spread render jobs over ComfyUI servers with Ray: one actor per server, back-pressure, retries.

The driver (``run_batch``) reads every input file and resolves every workflow itself, so an actor
needs nothing but its server's URL: on a Ray cluster it may run on any node. Each actor uploads a
job's inputs, queues the workflow, follows it over the websocket and ``/history`` (nodes/client.py)
and returns the output file's bytes; the driver checks that the MP4 decodes and writes it.

Retry rules (``Scheduler``): at most ``per_server`` jobs are in flight on a server (ComfyUI runs one
prompt at a time; one more waiting keeps it busy while the next inputs upload). A job whose server
stops answering (connection refused or reset, the actor died) goes back to the queue for another
server, at most ``retries`` times, and that server gets no more jobs; a job ComfyUI refuses (HTTP
400 from /prompt: validation errors) or that fails in a node is reported and not retried.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import client as C
from . import jobs as J

RAY_MISSING = ("the batch renderer runs on Ray, which is not installed. Install it with:\n"
               "    pip install -r nodes/render/requirements.txt      (or: pip install \"ray>=2.9\")")

OK, FAILED, SERVER_GONE = "ok", "failed", "server_gone"


def import_ray():
    """``ray``, or SystemExit with the pip command that installs it."""
    try:
        import ray
    except ImportError:
        raise SystemExit("error: " + RAY_MISSING) from None
    return ray


class BatchInterrupted(Exception):
    """Ctrl-C stopped the batch; what it had queued was taken off the servers. ``records`` are the
    report's records so far, ``finished`` the jobs settled, ``left`` the jobs not settled."""

    def __init__(self, records: list[dict], finished: int, left: int):
        super().__init__(f"interrupted: {finished} jobs finished, {left} left")
        self.records, self.finished, self.left = records, finished, left


def cancel_prompts(url: str, prompt_ids: set[str], timeout: float = 10.0) -> list[str]:
    """Take this batch's prompts off one ComfyUI server: the waiting ones are deleted from its queue
    (``POST /queue {"delete": [...]}``) and, when the running one is ours, it is interrupted
    (``POST /interrupt``, with its prompt_id so a newer ComfyUI stops only that one). Other
    clients' prompts are left alone. Returns the ids it acted on; a server that does not answer
    is skipped (it is not rendering for us then)."""
    client = C.Client(url, timeout=timeout)
    try:
        queue = client.get_json("/queue")
    except (C.ClientError, OSError, ValueError):
        return []

    def ids(key: str) -> list[str]:
        return [item[1] for item in queue.get(key) or [] if isinstance(item, list) and len(item) > 1]

    pending = [p for p in ids("queue_pending") if p in prompt_ids]
    running = [p for p in ids("queue_running") if p in prompt_ids]
    try:
        if pending:
            client._request("POST", "/queue", json.dumps({"delete": pending}).encode(),
                            {"Content-Type": "application/json"})
        for p in running:
            client._request("POST", "/interrupt", json.dumps({"prompt_id": p}).encode(),
                            {"Content-Type": "application/json"})
    except (C.ClientError, OSError):
        pass
    return pending + running


# --------------------------------------------------------------------------- scheduling (no Ray)

@dataclass
class Task:
    job: dict
    attempts: int = 0          # dispatches so far
    tried: list = field(default_factory=list)  # servers it was sent to


class Scheduler:
    """Which job goes to which server next, and what happens to a job when it comes back.

    Pure bookkeeping (no I/O, no Ray) so its rules are tested on their own. Servers are names.
    """

    def __init__(self, jobs: list[dict], servers: list[str], per_server: int = 2, retries: int = 2):
        if per_server < 1:
            raise ValueError("per_server must be at least 1")
        self.pending: collections.deque[Task] = collections.deque(Task(j) for j in jobs)
        self.servers = list(servers)
        self.alive = set(servers)
        self.in_flight: dict[str, dict[str, Task]] = {s: {} for s in servers}
        self.per_server = per_server
        self.retries = retries
        self._turn = 0

    def assign(self) -> list[tuple[str, Task]]:
        """Fill every live server up to ``per_server`` jobs, least-loaded first."""
        out = []
        while self.pending:
            live = [s for s in self.servers if s in self.alive and len(self.in_flight[s]) < self.per_server]
            if not live:
                break
            # least loaded; ties broken round-robin so equal servers share the first jobs
            self._turn += 1
            live.sort(key=lambda s: (len(self.in_flight[s]), (self.servers.index(s) - self._turn) % len(self.servers)))
            server = live[0]
            task = self.pending.popleft()
            task.attempts += 1
            task.tried.append(server)
            self.in_flight[server][task.job["id"]] = task
            out.append((server, task))
        return out

    def finish(self, server: str, job_id: str, outcome: str) -> tuple[str, Task]:
        """Record a job's return. ``outcome`` is OK, FAILED (no retry) or SERVER_GONE.

        Returns (decision, task): "done", "failed", or "retry" (queued again for another server;
        the server is taken out of the rotation). SERVER_GONE after ``retries`` retries, or with no
        live server left, is "failed"."""
        task = self.in_flight[server].pop(job_id)
        if outcome == OK:
            return "done", task
        if outcome != SERVER_GONE:
            return "failed", task
        self.server_down(server)
        if task.attempts <= self.retries and self.alive:
            self.pending.appendleft(task)  # first in line: it has waited longest
            return "retry", task
        return "failed", task

    def server_down(self, server: str) -> None:
        self.alive.discard(server)

    def orphaned(self) -> list[Task]:
        """Queued jobs that can never run because no server is left (removed from the queue)."""
        if self.alive:
            return []
        out = list(self.pending)
        self.pending.clear()
        return out

    @property
    def busy(self) -> bool:
        """Jobs are still queued or in flight."""
        return bool(self.pending) or any(self.in_flight.values())


# --------------------------------------------------------------------------- the per-server actor

class ServerWorker:
    """Runs jobs on one ComfyUI server (wrapped with ``ray.remote`` as a threaded actor).

    ``run`` returns {"status": OK|FAILED|SERVER_GONE, "error", "seconds", "prompt_id",
    "files": [(name, bytes)]}; errors are data, so Ray's exception wrapping never hides the kind.
    """

    def __init__(self, url: str, timeout: float = 3600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._progress: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._uploaded: set[str] = set()

    def ping(self) -> bool:
        """Whether the server answers ``/system_stats``."""
        try:
            C.Client(self.url, timeout=10).get_json("/system_stats")
            return True
        except C.ClientError:
            return False

    def progress(self) -> dict[str, dict]:
        """{job id: {"nodes_done", "node", "value", "max"}} for the jobs in flight here."""
        with self._lock:
            return {k: dict(v) for k, v in self._progress.items()}

    def _event(self, job_id: str, prompt_id: list, message: dict) -> None:
        data = message.get("data") or {}
        if prompt_id and data.get("prompt_id") not in (None, prompt_id[0]):
            return
        kind = message.get("type")
        with self._lock:
            p = self._progress.setdefault(job_id, {"nodes_done": 0, "node": None, "value": 0, "max": 0})
            if kind == "executing" and data.get("node"):
                if p["node"] is not None:
                    p["nodes_done"] += 1
                p.update(node=data["node"], value=0, max=0)
            elif kind == "execution_cached":
                p["nodes_done"] += len(data.get("nodes") or [])
            elif kind == "progress":
                p.update(value=data.get("value", 0), max=data.get("max", 0))

    def run(self, job_id: str, workflow: dict, files: dict[str, bytes]) -> dict:
        """Upload ``files`` (name -> bytes) unless already there, queue ``workflow``, wait, fetch."""
        started = time.time()
        prompt: list = []
        result: dict[str, Any] = {"status": FAILED, "error": None, "prompt_id": None, "files": []}
        client = C.Client(self.url)
        try:
            with tempfile.TemporaryDirectory(prefix="spinbot-upload-") as tmp:
                for name, data in files.items():
                    if name in self._uploaded:
                        continue  # content-addressed names: same name, same bytes
                    path = os.path.join(tmp, name)
                    with open(path, "wb") as f:
                        f.write(data)
                    client.upload(path)
                    self._uploaded.add(name)
            messages = client.open_socket(self.timeout)
            with self._lock:
                self._progress[job_id] = {"nodes_done": 0, "node": None, "value": 0, "max": 0}
            prompt.append(client.queue(workflow))
            result["prompt_id"] = prompt[0]
            with self._lock:  # the driver reads it from progress(): on Ctrl-C it cancels this prompt
                self._progress[job_id]["prompt_id"] = prompt[0]
            entry = client.wait(prompt[0], lambda m: self._event(job_id, prompt, m), self.timeout, messages)
            items = C.output_files(entry)
            if not items:
                raise C.ClientError("the prompt finished without output files")
            for item in items:
                query = C.urllib.parse.urlencode({"filename": item["filename"],
                                                  "subfolder": item.get("subfolder", ""),
                                                  "type": item.get("type", "output")})
                result["files"].append((os.path.basename(item["filename"]),
                                        client._request("GET", f"/view?{query}")))
            result["status"] = OK
        except C.ServerUnreachable as e:
            result.update(status=SERVER_GONE, error=str(e))
        except C.ClientError as e:
            result.update(status=FAILED, error=str(e))
        except (OSError, ValueError, KeyError) as e:
            result.update(status=FAILED, error=f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._progress.pop(job_id, None)
        result["seconds"] = round(time.time() - started, 3)
        return result


# --------------------------------------------------------------------------- driver side

def prepare(job: dict) -> tuple[dict, dict[str, bytes]]:
    """The job's API workflow with its ``set`` applied, and the local files it uploads.

    Files are renamed ``<sha1 of content, 12 hex>-<name>``: two jobs' different ``portrait.png``
    never overwrite each other on a server, and the same file is uploaded once. Raises
    ClientError (unknown workflow, title or input)."""
    files: dict[str, bytes] = {}

    def upload(path: str) -> str:
        with open(path, "rb") as f:
            data = f.read()
        name = f"{hashlib.sha1(data).hexdigest()[:12]}-{os.path.basename(path)}"
        files[name] = data
        return name

    workflow = C.apply_overrides(C.load_workflow(job["workflow"]), J.assignments(job), upload)
    return workflow, files


def _segments():
    """nodes/render/segments.py (segment fan-out) when it exists, else None."""
    try:
        from . import segments
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("render.segments"):
            return None
        raise
    return segments


class _Bars:
    """An overall bar and one bar per job in flight (tqdm on stderr; silent when quiet)."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.jobs: dict[str, Any] = {}
        self.overall = None
        if not quiet:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            self._tqdm = tqdm
            if tqdm:
                self.overall = tqdm(total=total, desc="batch", unit="job", position=0, file=sys.stderr)

    def say(self, text: str) -> None:
        if self.quiet:
            return
        (self._tqdm.write if self.overall is not None else print)(text, file=sys.stderr)

    def start(self, job_id: str, nodes: int, server: str) -> None:
        if self.overall is not None:
            self.jobs[job_id] = self._tqdm(total=nodes, desc=f"{job_id} @ {server}", unit="node",
                                           leave=False, file=sys.stderr)

    def update(self, job_id: str, p: dict) -> None:
        bar = self.jobs.get(job_id)
        if bar is not None:
            bar.n = min(bar.total, p["nodes_done"] + (p["value"] / p["max"] if p.get("max") else 0))
            bar.set_postfix_str(f"node {p['node']} {p['value']}/{p['max']}" if p.get("node") else "")

    def end(self, job_id: str, finished: bool = True) -> None:
        bar = self.jobs.pop(job_id, None)
        if bar is not None:
            bar.close()
        if self.overall is not None and finished:
            self.overall.update(1)

    def close(self) -> None:
        for bar in self.jobs.values():
            bar.close()
        if self.overall is not None:
            self.overall.close()


def _write_output(results: str, job_id: str, files: list[tuple[str, bytes]]) -> str:
    """The first file (a SpinBot video first) as ``<id>.mp4`` (others ``<id>.<k><ext>``), written to a
    temporary name and renamed only once it decodes: a half-written file never looks finished."""
    main = None
    for k, (name, data) in enumerate(files):
        ext = os.path.splitext(name)[1].lower() or ".bin"
        target = J.output_path(results, job_id) if k == 0 else os.path.join(results, f"{job_id}.{k}{ext}")
        tmp = target + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        if k == 0 and not (ext == ".mp4" and J.mp4_is_valid(tmp)):
            os.remove(tmp)
            raise C.ClientError(f"the result {name!r} is not an MP4 that decodes")
        os.replace(tmp, target)
        main = main or target
    return main


def run_batch(jobs: list[dict], servers: list[str], results: str, *, per_server: int = 2,
              retries: int = 2, address: str | None = None, quiet: bool = False,
              timeout: float = 3600.0, on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Render ``jobs`` over ``servers`` (URLs) into ``results``; returns the report records.

    Jobs whose ``<results>/<id>.mp4`` exists and decodes are "skipped" (nothing queued). With the
    segment module present, a job it expands runs as sub-jobs ``<id>.<k>`` that are stitched in
    order. Ray is started embedded (``ray.init()``) unless one is running or ``address`` is given.
    ``on_record`` is called in the driver with each record as it is appended to the report.

    Raises RuntimeError (one line) when Ray cannot be joined at ``address``, and BatchInterrupted
    on Ctrl-C after taking the prompts this batch queued off the servers (`cancel_prompts`)."""
    ray = import_ray()
    if not servers:
        raise ValueError("no servers: give --server URL or --start N")
    report = J.Report(results)
    records: list[dict] = []

    def record(r: dict) -> None:
        records.append(report.add(r))
        if on_record:
            on_record(records[-1])

    segments = _segments()
    work: list[dict] = []          # what is dispatched (jobs and sub-jobs)
    parents: dict[str, dict] = {}  # sub-job id -> {"job", "subs", "outputs"}
    for job in jobs:
        out = J.output_path(results, job["id"])
        if J.mp4_is_valid(out):
            record({"id": job["id"], "status": "skipped", "output": out, "attempts": 0})
            continue
        subs = segments.expand_job(job) if segments else None
        if subs:
            group = {"job": job, "ids": [], "outputs": {}, "failed": None}
            for k, sub in enumerate(subs):
                sub = dict(sub, id=f"{job['id']}.{k}")
                group["ids"].append(sub["id"])
                parents[sub["id"]] = group
                if J.mp4_is_valid(J.output_path(results, sub["id"])):
                    group["outputs"][sub["id"]] = J.output_path(results, sub["id"])
                else:
                    work.append(sub)
            if len(group["outputs"]) == len(subs):
                _stitch(segments, group, results, record)
        else:
            work.append(job)
    if not work:
        report.write_csv(records)
        return records

    started_ray = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, TimeoutError) as e:  # no cluster at the address, or it went away
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RuntimeError(f"cannot join the Ray cluster at {address or 'a local Ray'}: {first}") from None
        started_ray = True
    # Ship this package's code with the actor instead of importing it on the workers: a cluster's
    # nodes need not have the pack installed (or on the same path).
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(C)
    Worker = ray.remote(ServerWorker)
    actors = {url: Worker.options(num_cpus=0, max_concurrency=per_server + 2).remote(url, timeout)
              for url in servers}
    sched = Scheduler(work, servers, per_server, retries)
    bars = _Bars(len(work), quiet)
    running: dict[Any, tuple[str, Task, float]] = {}  # ray ref -> (server, task, started)
    prompts: dict[str, set[str]] = {url: set() for url in servers}  # what this batch queued where
    prepared: dict[str, tuple[dict, dict] | Exception] = {}

    def fail(task: Task, server: str | None, error: str, seconds: float | None = None) -> None:
        bars.end(task.job["id"])
        if task.job["id"] in parents:
            group = parents[task.job["id"]]
            group["failed"] = group["failed"] or f"segment {task.job['id']}: {error}"
            if _group_complete(group):
                _stitch(segments, group, results, record)
            return
        record({"id": task.job["id"], "status": "failed", "server": server, "seconds": seconds,
                "error": error, "attempts": task.attempts})

    try:
        while sched.busy:
            for server, task in sched.assign():
                jid = task.job["id"]
                if jid not in prepared:
                    try:
                        prepared[jid] = prepare(task.job)
                    except (C.ClientError, OSError) as e:
                        prepared[jid] = e
                if isinstance(prepared[jid], Exception):
                    sched.finish(server, jid, FAILED)
                    fail(task, None, f"{prepared[jid]}")
                    continue
                workflow, files = prepared[jid]
                ref = actors[server].run.remote(jid, workflow, files)
                running[ref] = (server, task, time.time())
                bars.start(jid, len(workflow), server.split("//")[-1])
            for task in sched.orphaned():
                fail(task, None, "no server left to run it")
            if not running:
                continue
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for server in {s for s, _, _ in running.values()}:
                try:
                    for jid, p in ray.get(actors[server].progress.remote(), timeout=5).items():
                        if p.get("prompt_id"):
                            prompts[server].add(p["prompt_id"])
                        bars.update(jid, p)
                except Exception:  # noqa: BLE001 - progress is best effort; run() reports the failure
                    pass
            for ref in done:
                server, task, t0 = running.pop(ref)
                jid = task.job["id"]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # the actor (or its node) died
                    result = {"status": SERVER_GONE, "error": f"actor for {server} died: {e}",
                              "seconds": round(time.time() - t0, 3), "files": []}
                if result.get("prompt_id"):
                    prompts[server].discard(result["prompt_id"])
                output = None
                if result["status"] == OK:
                    try:
                        output = _write_output(results, jid, result["files"])
                    except (C.ClientError, OSError) as e:
                        result.update(status=FAILED, error=str(e))
                decision, task = sched.finish(server, jid, result["status"])
                if decision == "retry":
                    bars.say(f"{jid}: {server} is gone ({result['error']}); retrying on another server")
                    bars.end(jid, finished=False)
                    continue
                if decision == "failed":
                    error = result["error"]
                    if result["status"] == SERVER_GONE:
                        error = f"server gone on every try ({task.attempts}): {error}"
                    fail(task, server, error, result.get("seconds"))
                    continue
                bars.end(jid)
                if jid in parents:
                    group = parents[jid]
                    group["outputs"][jid] = output
                    if _group_complete(group):
                        _stitch(segments, group, results, record)
                else:
                    record({"id": jid, "status": "ok", "server": server, "seconds": result["seconds"],
                            "output": output, "attempts": task.attempts})
    except KeyboardInterrupt:
        # Ctrl-C: the prompts this batch queued would go on rendering (and render again on the
        # re-run), so they come off the servers; prompt ids the driver has not seen yet are asked
        # of the actors once more.
        bars.close()
        for server, actor in actors.items():
            try:
                for p in ray.get(actor.progress.remote(), timeout=3).values():
                    if p.get("prompt_id"):
                        prompts[server].add(p["prompt_id"])
            except Exception:  # noqa: BLE001 - an actor that cannot answer has nothing to add
                pass
        for server, ids in prompts.items():
            if ids:
                cancel_prompts(server, ids)
        report.write_csv(records)
        settled = {r["id"] for r in records}
        raise BatchInterrupted(records, len(settled), len([j for j in jobs if j["id"] not in settled])) from None
    finally:
        bars.close()
        for actor in actors.values():
            ray.kill(actor)
        if started_ray:
            ray.shutdown()
    report.write_csv(records)
    return records


def _group_complete(group: dict) -> bool:
    """A fanned-out job is settled when every segment is back, or one failed (reported once)."""
    return len(group["outputs"]) == len(group["ids"]) or (
        group["failed"] is not None and not group.get("reported"))


def _stitch(segments, group: dict, results: str, record: Callable[[dict], None]) -> None:
    """Join a fanned-out job's segment outputs in order into ``<id>.mp4`` (segment module's stitch)."""
    job = group["job"]
    if group.get("reported"):
        return
    group["reported"] = True
    if group["failed"]:
        record({"id": job["id"], "status": "failed", "error": group["failed"]})
        return
    out = J.output_path(results, job["id"])
    started = time.time()
    try:
        path = segments.stitch(job, [group["outputs"][i] for i in group["ids"]], out + ".part.mp4")
        if not J.mp4_is_valid(path):
            raise C.ClientError("the stitched video does not decode")
        os.replace(path, out)
        record({"id": job["id"], "status": "ok", "server": "stitched", "output": out,
                "seconds": round(time.time() - started, 3), "attempts": 1})
    except Exception as e:  # noqa: BLE001 - the segment module's failure is this job's error
        record({"id": job["id"], "status": "failed", "error": f"stitching: {e}"})
