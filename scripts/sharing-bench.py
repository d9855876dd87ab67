#!/usr/bin/env python3
"""What the memory-sharing report costs beside many live containers (issue 16's figures).

One daemon per mode, from the same vmfork binary, on temporary state folders: A holds its
VMs itself (--workers 0), B in three worker processes (--workers 3). Each has the busybox
image and the three warm parents scripts/workers-bench.py makes (busybox.main.64m with 16
ready VMs, busybox.main.32m and busybox.main.48m with 8), then IDLE containers (default
1,000) blocked reading their open standard input, alternately of the 32m and 48m policies.

Timed, each ROUNDS times (interleaved: A, B, A, B ...), from the request's first byte to the
response's last over a kept-alive connection to the daemon's Unix socket:
  GET /v1/parents                       every family with its sharing figures
  GET /v1/parents/busybox.main.32m      one family (500 children) with its figures
  GET /v1/parents?sharing=false         the peer: the same answer without figures

The figures are checked too: each family's figures in the list are those its own call gives
(children counted alike, parent bytes alike).

Usage: python3 scripts/sharing-bench.py .build/release/vmfork [ROUNDS] [IDLE] [WORKERS]
(WORKERS: "0", "3" or "0,3", the default). Wrap it in `flock /work/bench.lock`.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
workers_bench = __import__("workers-bench")

QUERIES = (("list, sharing", "/v1/parents"),
           ("one family", "/v1/parents/busybox.main.32m"),
           ("list, sharing=false", "/v1/parents?sharing=false"))


def timed(daemon, path):
    start = time.perf_counter_ns()
    status, body = daemon.call("GET", path)
    elapsed = (time.perf_counter_ns() - start) / 1e6
    assert status == 200, body
    return elapsed, json.loads(body)


def check(daemon, idle):
    """Each family's figures in the list are those the single-family call gives."""
    _, listed = timed(daemon, "/v1/parents")
    for info in listed:
        _, single = timed(daemon, f"/v1/parents/{info['id']}")
        mine, theirs = info.get("sharing"), single.get("sharing")
        assert (mine is None) == (theirs is None), (info["id"], mine, theirs)
        if mine:
            assert mine["children"] == theirs["children"] == info["liveChildren"], (info["id"], mine, theirs)
            assert mine["parentBytes"] == theirs["parentBytes"], (info["id"], mine, theirs)
    children = sum(info["sharing"]["children"] for info in listed if info.get("sharing"))
    return children, listed


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ".build/release/vmfork"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    idle = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    modes = [int(mode) for mode in (sys.argv[4] if len(sys.argv) > 4 else "0,3").split(",")]
    rootfs = tempfile.mkdtemp(prefix="sharing-bench-rootfs-")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    daemons = []
    samples = {}
    try:
        for mode in modes:
            daemon = workers_bench.Daemon(binary, mode, rootfs)
            daemons.append(daemon)
            daemon.make_idle(idle)
        for daemon in daemons:
            children, listed = check(daemon, idle)
            print(f"--workers {daemon.workers}: {children} children measured; "
                  + ", ".join(f"{info['id']} {info['liveChildren']} live" for info in listed))
        for _ in range(rounds):
            for daemon in daemons:
                for name, path in QUERIES:
                    samples.setdefault((daemon.workers, name), []).append(timed(daemon, path)[0])
        load = open("/proc/loadavg").read().split()[:3]
    finally:
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"GET wall time with {idle} live idle containers, {rounds} interleaved rounds, ms (load {' '.join(load)})")
    print(f"{'mode':<12} {'query':<22} {'median':>9} {'min':>9} {'max':>9}")
    for (mode, name), values in samples.items():
        print(f"{'--workers ' + str(mode):<12} {name:<22} {statistics.median(values):>9.1f} {min(values):>9.1f} {max(values):>9.1f}")


if __name__ == "__main__":
    main()
