#!/usr/bin/env python3
"""Two builds side by side in one run: the cost workers add to a run through the API, with one
build against another (issue 16's benchmark, for a change to the worker path).

Four daemons from temporary state folders: NEW and OLD, each with --workers 0 and --workers N,
each with the busybox image and its warm parent (the setup of scripts/workers-bench.py). Rounds
go through the four in turn (each sees the same machine load); a sample is
POST /v1/containers/run {echo hi} over a kept-alive connection, with the parent's pool full.
Prints each daemon's p50 and, per build, workers − one.

Usage: python3 scripts/workers-ab.py NEW_BINARY OLD_BINARY [WORKERS] [ROUNDS]
Wrap it in `flock /work/bench.lock` on a shared machine. Build OLD from a worktree of the
commit to compare against (`git worktree add /tmp/old REV && cd /tmp/old && swift build -c release`).
"""
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile

spec = importlib.util.spec_from_file_location("workers_bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers-bench.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def main():
    new, old = (os.path.abspath(path) for path in sys.argv[1:3])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    rootfs = tempfile.mkdtemp(prefix="workers-ab-rootfs-")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    daemons = []
    try:
        for label, binary in (("new", new), ("old", old)):
            for count in (0, workers):
                daemons.append(((label, count), bench.Daemon(binary, count, rootfs)))
        for _, daemon in daemons:  # warm-up
            for _ in range(20):
                daemon.echo()
        samples = {key: [] for key, _ in daemons}
        for _ in range(rounds):
            for key, daemon in daemons:
                samples[key].append(daemon.echo())
    finally:
        for _, daemon in daemons:
            daemon.stop()
        shutil.rmtree(rootfs, ignore_errors=True)
    p50 = {key: statistics.median(values) for key, values in samples.items()}
    print(f"fork -> busybox echo hi through the API, {rounds} rounds through four daemons in turn, p50 µs")
    for label in ("new", "old"):
        one, many = p50[(label, 0)], p50[(label, workers)]
        print(f"{label}: one process {one:.0f}, {workers} workers {many:.0f}, workers - one {many - one:+.0f}")
    print(f"{workers} workers, new / old: {p50[('new', workers)] / p50[('old', workers)]:.2f}")


if __name__ == "__main__":
    main()
