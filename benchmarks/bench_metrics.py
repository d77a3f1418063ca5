"""Metrics benchmark (figures, not assertions): what the stage wrapper costs per node call, and
what the 20 ms RSS sampler costs while a stage runs, in each peak-RAM mode.

    python -m benchmarks.bench_metrics [--calls 5000] [--idle 3]

The wrapped call is a node class that returns at once (so the figure is the wrapper alone: the
/proc reads, Prometheus updates and the report line); the sampler figure is the process CPU time
spent during an idle stage of ``--idle`` seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--idle", type=float, default=3.0)
    args = ap.parse_args()

    sys.path.insert(0, ROOT)
    from tests._pack import load_pack

    load_pack()
    from spinbot.nodes import metrics

    class Plain:
        FUNCTION = "go"
        RETURN_TYPES = ("INT",)
        RETURN_NAMES = ("x",)

        def go(self, x):
            return (x,)

    class Wrapped(Plain):
        def go(self, x):
            return (x,)

    metrics.instrument_node(Wrapped, "bench")
    plain, wrapped = Plain(), Wrapped()
    modes = ["sampler"]
    try:
        metrics.set_peak_ram_mode("hwm")
        modes.insert(0, "hwm")
    except ValueError:
        pass
    for mode in modes:
        metrics.set_peak_ram_mode(mode)
        metrics.new_run()
        t = time.perf_counter()
        for i in range(args.calls):
            plain.go(i)
        base = (time.perf_counter() - t) / args.calls
        t = time.perf_counter()
        for i in range(args.calls):
            wrapped.go(i)
        per_call = (time.perf_counter() - t) / args.calls - base
        cpu = time.process_time()
        with metrics.stage("idle"):
            time.sleep(args.idle)
        cpu = time.process_time() - cpu
        print(f"{mode:8s} wrapper {per_call * 1e6:7.1f} us/call   idle stage of {args.idle:g} s: "
              f"{cpu * 1e3:6.1f} ms CPU ({cpu / args.idle * 100:.2f}% of a core)")


if __name__ == "__main__":
    main()
