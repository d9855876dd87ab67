#!/usr/bin/env python3
"""Engine workers against one process, side by side in one run (issue 16's benchmark).

Two daemons on temporary state folders, from the same vmfork binary: A holds its VMs itself
(--workers 0), B in three worker processes (--workers 3). Each has the busybox image and a
warm parent busybox.main.64m with 16 ready VMs. Rounds alternate between them (each sees the
same machine load); a sample is POST /v1/containers/run {echo hi} (create, start, wait,
output, remove) over one kept-alive connection to the daemon's Unix socket, timed from the
request's first byte to the response's last, with the parent's pool full before it (checked
on a second connection, so that the first carries runs only: with workers, the worker that
answered a run there holds it and serves the next ones itself).

Phase 1: nothing else runs. Phase 2: IDLE containers (default 1,000) sit blocked reading
their open standard input: in A in the same process as the echo's VM; in B in the other two
workers (their parents busybox.main.32m and busybox.main.48m are placed on shards 1 and 2,
the echo's on shard 0), which is what placement per parent policy gives.

With SAME (a fourth argument `same`), the idle containers are children of the echo's own
image and policy: in A beside it as before; in B the policy has three parents
("parents": 3), one in each worker, so the idle children spread over the three workers and
each echo goes to the worker holding the fewest (issue 16's spreading of one policy).

With APART (a fourth argument `apart`), the idle cost alone: one daemon at a time (A, then
B), each measured with none idle and then with IDLE idle containers of its own (after 5 s for
its background work to settle), so that the machine holds only that daemon's idle containers;
side by side it holds both daemons', 2 × IDLE, which costs either side's runs too.

Usage: python3 scripts/workers-bench.py .build/release/vmfork [ROUNDS] [IDLE] [same|apart]
Wrap it in `flock /work/bench.lock` on a shared machine.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, binary, workers, rootfs, same=False):
        self.folder = tempfile.mkdtemp(prefix=f"workers-bench-{workers}-")
        self.state = os.path.join(self.folder, "state")
        self.log = open(os.path.join(self.folder, "daemon.log"), "w")
        self.process = subprocess.Popen([binary, "serve", "--state", self.state, "--workers", str(workers), "--stop-grace", "0",
                                         "--log-level", "warning"], stdout=self.log, stderr=self.log)
        self.socket = os.path.join(self.state, "vmfork.sock")
        self.monitor = None
        self.workers = workers
        deadline = time.time() + 60
        while True:
            try:
                self.connection = UnixConnection(self.socket)
                if self.call("GET", "/v1/_ping")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"daemon --workers {workers} did not start; see {self.log.name}")
            time.sleep(0.05)
        status, body = self.call("POST", "/v1/images", {"name": "busybox", "rootfs": rootfs, "executable": "/bin/busybox"})
        assert status == 201, body
        self.same = same
        for memory in (64,) if same else (64, 32, 48):
            policy = {"image": "busybox", "memoryMiB": memory, "readyVMs": 16 if memory == 64 else 8}
            if same and workers:
                policy["parents"] = workers
            status, body = self.call("POST", "/v1/parents", policy)
            assert status == 201, body
        # The daemon measures the machine's costs at its start (seconds of VMs making calls
        # on a machine whose exits are dear): samples wait until that is over.
        deadline = time.time() + 120
        while time.time() < deadline and b"vmfork_machine_exit_microseconds" not in self.call("GET", "/metrics")[1]:
            time.sleep(0.2)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The daemon closes a kept-alive connection idle for 30 s (while the other daemon
            # made its idle containers): open a new one and send again.
            self.connection.close()
            self.connection = UnixConnection(self.socket)
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
        return response.status, response.read()

    def wait_for_pool(self):
        # On a connection of its own, as a monitor's: the runs' connection carries runs only
        # (a worker holds it after a run it answered there, and gives back anything else).
        if self.monitor is None:
            self.monitor = UnixConnection(self.socket)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.monitor.request("GET", "/v1/parents/busybox.main.64m?sharing=false")
                response = self.monitor.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # Closed after 30 s idle (while the other daemon made its idle containers).
                self.monitor.close()
                self.monitor = UnixConnection(self.socket)
                continue
            status, body = response.status, response.read()
            if status == 200 and json.loads(body)["readyVMsNow"] >= 16:
                return
            time.sleep(0.002)

    def echo(self):
        self.wait_for_pool()
        start = time.perf_counter_ns()
        status, body = self.call("POST", "/v1/containers/run", {"image": "busybox", "arguments": ["echo", "hi"]})
        elapsed = (time.perf_counter_ns() - start) / 1000
        assert status == 200 and b'"stdout":"hi\\n"' in body, body
        return elapsed

    def make_idle(self, count):
        for index in range(count):
            memory = 64 if self.same else 32 if index % 2 == 0 else 48
            status, body = self.call("POST", "/v1/containers", {"image": "busybox", "arguments": ["sh", "-c", "read x"],
                                                                "memoryMiB": memory, "openStdin": True})
            assert status == 201, body
            container = json.loads(body)["id"]
            status, body = self.call("POST", f"/v1/containers/{container}/start")
            assert status == 200, body

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def summary(samples):
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def main():
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ".build/release/vmfork"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    idle = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    same = len(sys.argv) > 4 and sys.argv[4] == "same"
    apart = len(sys.argv) > 4 and sys.argv[4] == "apart"
    rootfs = tempfile.mkdtemp(prefix="workers-bench-rootfs-")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    doctor = subprocess.run([binary, "doctor"], capture_output=True, text=True).stdout
    exit_lines = [line.strip() for line in doctor.splitlines() if "exit" in line.lower()]
    if apart:
        return idle_cost_apart(binary, rootfs, rounds, idle, exit_lines)
    one, workers = Daemon(binary, 0, rootfs, same), Daemon(binary, 3, rootfs, same)
    results = {}
    try:
        for phase, count in (("none idle", 0), (f"{idle} idle", idle)):
            if count:
                one.make_idle(count)
                workers.make_idle(count)
            for daemon in (one, workers):  # warm-up
                for _ in range(10):
                    daemon.echo()
            samples = {0: [], 3: []}
            for _ in range(rounds):
                for daemon in (one, workers):
                    samples[daemon.workers].append(daemon.echo())
            results[phase] = samples
        status, body = workers.call("GET", "/v1/workers")
        spread = [worker["liveContainers"] for worker in json.loads(body)]
    finally:
        one.stop()
        workers.stop()
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"fork -> busybox echo hi through the API (POST /v1/containers/run), {rounds} interleaved rounds, µs"
          + (", idle children of the echo's own policy" if same else ", idle children of two other policies"))
    print(f"live containers per worker at the end (B): {spread}")
    print(f"{'phase':<12} {'one process p50':>16} {'p90':>8} {'3 workers p50':>14} {'p90':>8} {'workers - one (p50)':>20}")
    for phase, samples in results.items():
        one_p50, one_p90 = summary(samples[0])
        w_p50, w_p90 = summary(samples[3])
        print(f"{phase:<12} {one_p50:>16.0f} {one_p90:>8.0f} {w_p50:>14.0f} {w_p90:>8.0f} {w_p50 - one_p50:>20.0f}")
    base_one, base_w = (summary(results["none idle"][n])[0] for n in (0, 3))
    idle_one, idle_w = (summary(results[f"{idle} idle"][n])[0] for n in (0, 3))
    print(f"idle cost (p50, {idle} idle vs none): one process {100 * (idle_one / base_one - 1):+.0f} %, workers {100 * (idle_w / base_w - 1):+.0f} %")
    print("vmfork doctor: " + ("; ".join(exit_lines) if exit_lines else "(no VM exit line)"))


def idle_cost_apart(binary, rootfs, rounds, idle, exit_lines):
    """The `apart` mode: each daemon alone, none idle then IDLE idle of its own."""
    results = {}
    try:
        for count in (0, 3):
            daemon = Daemon(binary, count, rootfs)
            try:
                for _ in range(20):
                    daemon.echo()
                before = [daemon.echo() for _ in range(rounds)]
                daemon.make_idle(idle)
                time.sleep(5)
                for _ in range(20):
                    daemon.echo()
                after = [daemon.echo() for _ in range(rounds)]
                results[count] = (summary(before), summary(after))
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"fork -> busybox echo hi through the API, {rounds} runs each, one daemon at a time, µs (p50 / p90)")
    for count, ((b50, b90), (a50, a90)) in results.items():
        label = "one process" if count == 0 else f"{count} workers"
        print(f"{label:<12} none idle {b50:.0f} / {b90:.0f}, {idle} idle {a50:.0f} / {a90:.0f}: idle cost {100 * (a50 / b50 - 1):+.0f} %")
    print("vmfork doctor: " + ("; ".join(exit_lines) if exit_lines else "(no VM exit line)"))


if __name__ == "__main__":
    main()
