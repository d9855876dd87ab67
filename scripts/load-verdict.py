#!/usr/bin/env python3
"""One load step's verdict (scripts/load-sweep.sh, scripts/load-pass-rate.sh): reads a
`vmfork load --json` report and prints one line, starting "ok  " when the rate was sustained:
every launch finished, none left to drain half a second after the last was due, and p99
from due to exit under the bound (microseconds).
    load-verdict.py REPORT.json BOUND_US"""
import json
import sys

report = json.load(open(sys.argv[1]))
side = report["sides"][0]
bound = float(sys.argv[2])
rate = report["offeredPerSecond"]
ok = side["failed"] == 0 and side["finished"] == side["launched"] and side["exit"]["p99"] < bound \
    and side["elapsedSeconds"] <= report["durationSeconds"] + 0.5
engine = side.get("engine") or {}
mem = engine.get("privatePerChildBytes")
cpu = engine.get("cpuMicrosPerLaunch")
print("%s %-6s %6.0f/s offered  %7.1f/s achieved  exit p50 %6.0f µs  p99 %7.0f µs  failed %d%s%s  load %.2f" % (
    "ok  " if ok else "over", side["name"], rate, side["achievedPerSecond"], side["exit"]["p50"], side["exit"]["p99"],
    side["failed"], "  private %.0f KiB/container" % (mem / 1024) if mem else "",
    "  engine CPU %.0f µs/launch" % cpu if cpu else "", report.get("loadAverageBefore") or 0))
