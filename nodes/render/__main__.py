"""SpinBot renderer: render one workflow, or a batch of jobs spread over ComfyUI servers with Ray.

    python -m nodes.render one direct --set "Portrait.image=me.png" ... --server URL --out renders/
    python -m nodes.render batch jobs.jsonl --server URL1 --server URL2
    python -m nodes.render batch jobs.csv --start 2            (two local ComfyUI from $COMFYUI_PATH)
    python -m nodes.render batch jobs.jsonl --address ray://head:10001 --server http://gpu1:8188 ...

Run from the pack's folder. Standard library only, except Ray for ``batch`` (``pip install -r
nodes/render/requirements.txt``). ``one`` is the client (nodes/client.py) with locally started
servers; ``batch`` writes ``<batch file>.results/``: ``<job id>.mp4`` per job and ``report.jsonl``
(appended as jobs finish) plus ``report.csv``. Running a batch again skips jobs whose MP4 is there
and decodes. Exit status: 0 all jobs done, 1 some failed, 2 bad arguments or batch file, 130
interrupted (Ctrl-C; the prompts the batch queued are taken off the servers).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

from .. import client as C
from . import jobs as J
from . import servers as S


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a running ComfyUI (repeatable), e.g. http://127.0.0.1:8188")
    p.add_argument("--start", type=_count(0, "N servers, or 0 for one per GPU"), metavar="N",
                   help="start N local ComfyUI servers from $COMFYUI_PATH (0: one per GPU), each with a "
                        "scratch base folder; one per GPU when there are GPUs, else CPU servers")
    p.add_argument("--models-dir", help="models folder for started servers (default $COMFYUI_PATH/models)")
    p.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds one job may take")


def _servers(args: argparse.Namespace) -> tuple[list[str], list[S.LocalComfyUI]]:
    """Server URLs (given, then started ones; else $COMFYUI_URL or :8188) and the started servers."""
    started: list[S.LocalComfyUI] = []
    if args.models_dir is not None and not os.path.isdir(args.models_dir):
        raise FileNotFoundError(f"--models-dir {args.models_dir!r} is not a folder")
    if args.start is not None:
        started = S.start_servers(args.start or None, models_dir=args.models_dir,
                                  log=lambda m: print(m, file=sys.stderr))
    urls = [*args.server, *(s.url for s in started)]
    if not urls:
        urls = [os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")]
    return urls, started


def cmd_one(args: argparse.Namespace) -> int:
    """``one``: nodes/client.py's command on the given or a started server; its exit status."""
    urls, started = _servers(args)
    try:
        argv = [args.workflow, *sum((["--set", s] for s in args.sets), []), "--out", args.out,
                "--server", urls[0], "--timeout", str(args.timeout)]
        return C.main(argv + (["--quiet"] if args.quiet else []))
    finally:
        for s in started:
            s.stop()


def _count(low: int, what: str):
    """An argparse type: an integer of at least ``low`` (argparse turns the ValueError into exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: {what}")
        return value
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def check_address(address: str, timeout: float = 3.0) -> None:
    """Check that a Ray ``--address`` (``host:port`` or ``ray://host:port``; ``auto`` is left to
    Ray) answers on TCP within ``timeout`` seconds: Ray itself waits minutes on an address where
    nothing listens. Raises RuntimeError with one line."""
    if address.strip().lower() in ("auto", "local"):
        return
    text = address.strip()
    text = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = text.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise RuntimeError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise RuntimeError(f"--address {address!r}: no Ray cluster answers at {host}:{port} "
                           f"({e.strerror or e}); start one with 'ray start --head' or leave out "
                           "--address to run Ray embedded") from None


def check_jobs(jobs: list[dict]) -> list[str]:
    """What the server would refuse, found without one: an unknown workflow, a --set typo, a bad
    split value, a local file that is not there. One message per bad job ("job X: ...")."""
    from . import engine

    segments = engine._segments()
    problems = []
    for job in jobs:
        try:
            if segments is not None:
                segments.split_limit(job)
            missing = []

            def upload(path: str) -> str:
                return path

            before = C.load_workflow(job["workflow"])
            workflow = C.apply_overrides(before, J.assignments(job), upload)
            for nid, node in workflow.items():  # only what the job sets: shipped defaults are server files
                for name, value in (node.get("inputs") or {}).items():
                    if ((node.get("class_type"), name) in C.UPLOAD_INPUTS
                            and value != (before[nid].get("inputs") or {}).get(name)
                            and J.looks_like_missing_file(value)):
                        missing.append(value)
            if missing:
                raise C.UsageError(f"local file not found: {missing[0]}")
        except (C.ClientError, ValueError, OSError) as e:
            problems.append(str(e) if str(e).startswith("job ") else f"job {job['id']}: {e}")
    return problems


def cmd_batch(args: argparse.Namespace) -> int:
    """``batch``: 0 every job rendered or skipped, 1 some failed, 2 bad arguments or batch file,
    130 interrupted (Ctrl-C; what the batch queued is taken off the servers)."""
    from . import engine  # imports only the standard library; Ray is imported in run_batch

    args.server = [C.server_url(s) for s in args.server]  # UsageError: exit 2, as `one` says it
    if args.models_dir is not None and not os.path.isdir(args.models_dir):
        print(f"error: --models-dir {args.models_dir!r} is not a folder", file=sys.stderr)
        return 2
    try:
        jobs = J.read_jobs(args.batch)
    except (OSError, J.JobFileError) as e:
        print(f"error: {args.batch}: {e}", file=sys.stderr)
        return 2
    if not jobs:
        print(f"error: no jobs in {args.batch}", file=sys.stderr)
        return 2
    problems = check_jobs(jobs)
    if problems:
        print(f"error: {args.batch}: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    engine.import_ray()  # before starting servers: a missing Ray is reported at once
    if args.address:
        check_address(args.address)
    results = os.path.abspath(args.results or J.results_dir(args.batch))
    urls, started = _servers(args)
    records = []
    interrupted = None
    try:
        records = engine.run_batch(jobs, urls, results, per_server=args.per_server,
                                   retries=args.retries, address=args.address, quiet=args.quiet,
                                   timeout=args.timeout)
    except engine.BatchInterrupted as e:
        interrupted = e
        records = e.records
    finally:
        failed = interrupted is not None or any(r["status"] == "failed" for r in records)
        for s in started:
            # a failed job's ComfyUI log is what explains it: keep the scratch folder then
            s.stop(keep=failed)
            if failed:
                print(f"ComfyUI at {s.url} kept its folder {s.base_dir}; its log: {s.log_path}",
                      file=sys.stderr)
    if interrupted is not None:
        print(f"interrupted: {interrupted.finished} jobs finished, {interrupted.left} left; run the "
              "same command again to resume", file=sys.stderr)
        return 130
    counts = {k: sum(r["status"] == k for r in records) for k in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} rendered, {counts['skipped']} skipped (already done), {counts['failed']} "
          f"failed; results and report in {results}", file=sys.stderr)
    for r in records:
        if r["status"] == "failed":
            print(f"  {r['id']}: {r['error']}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m nodes.render", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("one", help="render one workflow with --set inputs")
    one.add_argument("workflow", help="API workflow JSON, or a shipped name (direct, guided, story, ...)")
    one.add_argument("--set", dest="sets", action="append", default=[], metavar="TITLE.INPUT=VALUE",
                     help="override a node input (repeatable); local files for LoadImage/LoadAudio are uploaded")
    one.add_argument("--out", default=".", help="folder for the downloaded results")
    one.add_argument("--quiet", action="store_true")
    _server_args(one)
    batch = sub.add_parser("batch", help="render a JSONL/CSV file of jobs over one or more servers (Ray)")
    batch.add_argument("batch", help="jobs file: .jsonl (one {\"id\", \"workflow\", \"set\"} a line) or .csv")
    batch.add_argument("--results", help="results folder (default: <batch file>.results)")
    batch.add_argument("--per-server", type=_count(1, "at least one job per server"), default=2, metavar="K",
                       help="jobs in flight per server (default 2: one running, one queued)")
    batch.add_argument("--retries", type=_count(0, "0 or more retries"), default=2, metavar="R",
                       help="times a job whose server died is retried elsewhere (default 2)")
    batch.add_argument("--address", help="join this Ray cluster (e.g. ray://head:10001 or auto) "
                                         "instead of starting Ray embedded")
    batch.add_argument("--quiet", action="store_true", help="no progress bars")
    _server_args(batch)
    args = parser.parse_args(argv)
    try:
        return cmd_one(args) if args.command == "one" else cmd_batch(args)
    except (FileNotFoundError, RuntimeError, TimeoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
