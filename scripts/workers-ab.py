#!/usr/bin/env python3
"""Two builds side by side in one run: the cost workers add to a run through the API, with one
build against another (issue 16's benchmark, for a change to the worker path).

Four daemons from temporary state folders: NEW and OLD, each with --workers 0 and --workers N,
each with the busybox image and its warm parent (the setup of scripts/workers-bench.py). Rounds
go through the four in turn (each sees the same machine load); a sample is
POST /v1/containers/run {echo hi} over a kept-alive connection, with the parent's pool full.
Prints each daemon's p50 and VM exits per container (its vmfork_vm_exits_per_container over the
rounds), per build workers − one, and new / old. With WORKERS 0, two daemons: NEW and OLD in
one process each (a change to the engine's path, not the worker's).

Usage: python3 scripts/workers-ab.py NEW_BINARY OLD_BINARY [WORKERS] [ROUNDS]
An older binary needs its VMFork_API.resources folder beside it.
Wrap it in `flock /work/bench.lock` on a shared machine. Build OLD from a worktree of the
commit to compare against (`git worktree add /tmp/old REV && cd /tmp/old && swift build -c release`).
"""
import importlib.util
import os
import re
import shutil
import statistics
import sys
import tempfile

spec = importlib.util.spec_from_file_location("workers_bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers-bench.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def exits(daemon):
    """The daemon's VM exits so far, summed over its containers, and how many containers."""
    text = daemon.call("GET", "/metrics")[1].decode()
    def value(name):
        found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0
    return value("vmfork_vm_exits_per_container_sum"), value("vmfork_vm_exits_per_container_count"), value("vmfork_machine_exit_microseconds")


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
            for count in sorted({0, workers}):
                daemons.append(((label, count), bench.Daemon(binary, count, rootfs)))
        for _, daemon in daemons:  # warm-up
            for _ in range(20):
                daemon.echo()
        before = {key: exits(daemon) for key, daemon in daemons}
        samples = {key: [] for key, _ in daemons}
        for _ in range(rounds):
            for key, daemon in daemons:
                samples[key].append(daemon.echo())
        after = {key: exits(daemon) for key, daemon in daemons}
    finally:
        for _, daemon in daemons:
            daemon.stop()
        shutil.rmtree(rootfs, ignore_errors=True)
    p50 = {key: statistics.median(values) for key, values in samples.items()}
    per_container = {key: (after[key][0] - before[key][0]) / max(after[key][1] - before[key][1], 1) for key in samples}
    print(f"fork -> busybox echo hi through the API, {rounds} rounds through {len(samples)} daemons in turn, p50 µs"
          f" (the daemons' measured VM exit: {after[('new', 0)][2]:.0f} µs)")
    for label in ("new", "old"):
        one = p50[(label, 0)]
        line = f"{label}: one process {one:.0f} ({per_container[(label, 0)]:.2f} VM exits a container)"
        if workers:
            many = p50[(label, workers)]
            line += f", {workers} workers {many:.0f} ({per_container[(label, workers)]:.2f}), workers - one {many - one:+.0f}"
        print(line)
    for count in sorted({0, workers}):
        print(f"{count or 'no'} workers, new / old: {p50[('new', count)] / p50[('old', count)]:.2f}")


if __name__ == "__main__":
    main()
