#!/usr/bin/env bash
# What naming the program costs a container's create: POST /v1/containers/run of `echo hi`
# with the agent's `arguments` (after the image's argv[0]) against Docker's `cmd` (argv[0]
# "echo", looked up on PATH in the image and checked to lead to its program), alternating,
# ROUNDS each (default 300) after 20 warm-ups each, on a daemon of its own (release build when
# built, else debug; VMFORK_BIN overrides) over a busybox rootfs with applet links.
# Usage: flock /work/bench.lock scripts/command-bench.sh [ROUNDS]
set -euo pipefail
rounds=${1:-300}
root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=${VMFORK_BIN:-$root_dir/.build/release/vmfork}
[ -x "$bin" ] || bin=$root_dir/.build/debug/vmfork
work=$(mktemp -d)
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/busybox"
for applet in sh ls echo; do ln -s busybox "$work/root/bin/$applet"; done
"$bin" serve --state "$work/state" > "$work/serve.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$work/state/vmfork.sock" ] && break; sleep 0.1; done
"$bin" image add bb --rootfs "$work/root" --executable /bin/busybox --env PATH=/bin --state "$work/state" > /dev/null
uptime
python3 - "$work/state/vmfork.sock" "$rounds" <<'PY'
import http.client, json, socket, statistics, sys, time
sock, rounds = sys.argv[1], int(sys.argv[2])
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
def run(body):
    c = Conn("localhost"); t = time.perf_counter()
    c.request("POST", "/v1/containers/run", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse(); data = json.loads(r.read()); took = time.perf_counter() - t
    assert r.status == 200 and data["stdout"] == "hi\n", data
    return took * 1e3
bodies = {"arguments": {"image": "bb", "arguments": ["echo", "hi"]},
          "cmd": {"image": "bb", "entrypoint": [""], "cmd": ["echo", "hi"]}}
for b in bodies.values():
    for _ in range(20): run(b)
times = {k: [] for k in bodies}
for _ in range(rounds):
    for k, b in bodies.items(): times[k].append(run(b))
for k, v in times.items():
    print(f"{k}: median {statistics.median(v):.3f} ms, p90 {sorted(v)[int(len(v) * 0.9)]:.3f} ms over {len(v)}")
print(f"ratio cmd/arguments (medians): {statistics.median(times['cmd']) / statistics.median(times['arguments']):.3f}")
PY
uptime
