# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the watcher's footprint over 120 s of steady polling, side by side with a minimal loop.

The watcher daemon as installed (bench/hostwatcher.py, 1 s polling, guard hold configured, no event) and
bench/footprint_loop.py (requests GET with `Metadata: true` every second, as in Azure's docs) run at the same
time on this host against one simulator, each as its own VM. After a warm-up (start-up and imports are left
out), CPU time (utime + stime from /proc/<pid>/stat) is read at the start and end of the window, and peak RSS
(VmHWM from /proc/<pid>/status) at the end. Goal: watcher CPU <= 1.3 x the loop's, peak RSS <= 30 MB.
Usage: python bench/footprint.py [--seconds 120] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "simulator"))

import hostwatcher  # noqa: E402  pylint: disable=wrong-import-position
from imds_simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position

TICKS = os.sysconf("SC_CLK_TCK")
WARMUP = 5.0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(TICKS)  # utime, stime (fields 14 and 15)


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="a 20 s window")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "footprint.json"))
    args = parser.parse_args(argv)
    seconds = 20.0 if args.quick else args.seconds
    scenario = {"name": "bench-footprint", "clock": "manual", "vms": [{"name": "watcher"}, {"name": "loop"}]}
    with Simulator.from_scenario(scenario, clock="manual", port=0, control_port=0) as sim:
        watcher = hostwatcher.HostWatcher(sim.endpoint("watcher"), "watcher")
        loop = subprocess.Popen([sys.executable, os.path.join(HERE, "footprint_loop.py"), sim.endpoint("loop")],
                                env=hostwatcher.clean_env(), stdout=subprocess.DEVNULL)
        try:
            time.sleep(WARMUP)
            pids = {"watcher": watcher.pid, "loop": loop.pid}
            for name, pid in pids.items():
                if not os.path.exists("/proc/%d" % pid):
                    raise RuntimeError("%s exited early: %s" % (name, watcher.log_tail() if name == "watcher" else ""))
            start = dict((name, cpu_seconds(pid)) for name, pid in pids.items())
            startup = dict(start)
            began = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - began
            end = dict((name, cpu_seconds(pid)) for name, pid in pids.items())
            hwm = dict((name, status_kb(pid, "VmHWM")) for name, pid in pids.items())
            rss = dict((name, status_kb(pid, "VmRSS")) for name, pid in pids.items())
            requests_seen = dict((name, len(sim.request_log.query(vm=name)))
                                 for name in pids)
        finally:
            loop.terminate()
            loop.wait()
            watcher.stop()
    result = {"benchmark": "footprint", "goal": "watcher CPU <= 1.3 x loop CPU, watcher peak RSS <= 30 MB",
              "window_seconds": round(elapsed, 2), "warmup_seconds": WARMUP}
    for name in ("watcher", "loop"):
        result[name] = {"cpu_percent": 100.0 * (end[name] - start[name]) / elapsed,
                        "cpu_seconds": end[name] - start[name], "startup_cpu_seconds": startup[name],
                        "peak_rss_mb": hwm[name] / 1024.0, "rss_mb": rss[name] / 1024.0}
        if requests_seen:
            result[name]["requests"] = requests_seen[name]
    loop_cpu = max(result["loop"]["cpu_percent"], 1e-9)
    result["cpu_ratio"] = result["watcher"]["cpu_percent"] / loop_cpu
    result["met"] = result["cpu_ratio"] <= 1.3 and result["watcher"]["peak_rss_mb"] <= 30.0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    for name in ("watcher", "loop"):
        print("%-8s CPU %.2f %% of one core (%.2f s over %.0f s; start-up %.2f s), peak RSS %.1f MB"
              % (name, result[name]["cpu_percent"], result[name]["cpu_seconds"], elapsed,
                 result[name]["startup_cpu_seconds"], result[name]["peak_rss_mb"]))
    print("CPU ratio %.2f (goal <= 1.3), RSS goal <= 30 MB: %s" % (result["cpu_ratio"], "met" if result["met"] else "MISSED"))
    return result


if __name__ == "__main__":
    main()
