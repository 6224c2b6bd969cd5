# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the watcher's IMDS request rate, steady and through 429 and 500 storms.

The watcher daemon as installed (bench/hostwatcher.py, 1 s polling, max_backoff 5 s) polls the simulator:
a steady phase, then a storm in which every request of the VM is answered 429 (a status fault), a calm, a storm
of 500s, a calm. Everything is read from the simulator's request log (wall times):
  steady rate      requests per second over the steady phase; goal <= 1.05
  storm peak       the most requests in any 1 s window during a storm; goal <= 5 (never above)
  backing off      the gaps between failed requests grow (1, 2, 4 ... up to max_backoff)
  recovery         requests after the storm ends up to and including the first success; goal <= 2 polls,
                   and the next gap back at the poll interval
Usage: python bench/request_rate.py [--steady 30] [--storm 15] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "simulator"))

import hostwatcher  # noqa: E402  pylint: disable=wrong-import-position
from benchvm import Control  # noqa: E402  pylint: disable=wrong-import-position
from imds_simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position

VM = "ratevm"
POLL_INTERVAL = 1.0
MAX_BACKOFF = 5.0


def peak_per_second(times):
    """The most requests inside any window of one second."""
    best = 0
    start = 0
    for end, when in enumerate(times):
        while when - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def storm(control, code, seconds, calm):
    """Every request of the VM answered `code` for `seconds`; returns (began, ended) wall times."""
    fault = control.add_fault(kind="status", code=code, vm=VM)
    began = time.time()
    time.sleep(seconds)
    control.call("DELETE", "/faults/%s" % fault["id"])
    ended = time.time()
    time.sleep(calm)
    return began, ended


def analyse_storm(log, began, ended, code):
    during = [r for r in log if began <= r["wall_time"] < ended]
    times = [r["wall_time"] for r in during]
    failed = [r["wall_time"] for r in during if r["status"] == code]
    gaps = [round(b - a, 2) for a, b in zip(failed, failed[1:])]
    after = [r for r in log if r["wall_time"] >= ended]
    first_ok = next((i for i, r in enumerate(after) if r["status"] == 200), None)
    recovered = after[first_ok]["wall_time"] if first_ok is not None else None
    next_gap = (after[first_ok + 1]["wall_time"] - recovered) if first_ok is not None and first_ok + 1 < len(after) \
        else None
    return {"code": code, "seconds": round(ended - began, 2), "requests": len(during), "failed": len(failed),
            "peak_per_second": peak_per_second(times), "gaps_between_failures": gaps,
            "backing_off": all(b >= a - 0.05 for a, b in zip(gaps, gaps[1:])) and bool(gaps) and max(gaps) > 1.5,
            "polls_to_recover": None if first_ok is None else first_ok + 1,
            "seconds_to_recover": None if recovered is None else round(recovered - ended, 2),
            "gap_after_recovery": None if next_gap is None else round(next_gap, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--storm", type=float, default=15.0)
    parser.add_argument("--calm", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="10 s steady, 8 s storms, 7 s calms")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "request_rate.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steady, args.storm, args.calm = 10.0, 8.0, 7.0
    scenario = {"name": "bench-rate", "clock": "manual", "vms": [{"name": VM}]}
    with Simulator.from_scenario(scenario, clock="manual", port=0, control_port=0) as sim:
        control = Control(sim.control_url)
        watcher = hostwatcher.HostWatcher(sim.endpoint(VM), VM, poll_interval=POLL_INTERVAL, max_backoff=MAX_BACKOFF)
        try:
            deadline = time.monotonic() + 60
            while not control.requests(vm=VM):
                if time.monotonic() > deadline:
                    raise RuntimeError("the watcher made no request:\n" + watcher.log_tail())
                time.sleep(0.1)
            time.sleep(2.0)  # past start-up
            steady_began = time.time()
            time.sleep(args.steady)
            steady_ended = time.time()
            storms = [storm(control, 429, args.storm, args.calm), storm(control, 500, args.storm, args.calm)]
            log = control.requests(vm=VM)
        finally:
            watcher.stop()
    steady = [r["wall_time"] for r in log if steady_began <= r["wall_time"] < steady_ended]
    result = {"benchmark": "request_rate", "poll_interval": POLL_INTERVAL, "max_backoff": MAX_BACKOFF,
              "goal": "steady <= 1.05 req/s; storms never above 5/s, backing off, recovered within 2 polls",
              "steady": {"seconds": round(steady_ended - steady_began, 2), "requests": len(steady),
                         "per_second": len(steady) / (steady_ended - steady_began),
                         "peak_per_second": peak_per_second(steady)},
              "storms": [analyse_storm(log, began, ended, code) for (began, ended), code in zip(storms, (429, 500))]}
    result["met"] = result["steady"]["per_second"] <= 1.05 and all(
        s["peak_per_second"] <= 5 and s["backing_off"] and s["polls_to_recover"] is not None
        and s["polls_to_recover"] <= 2 for s in result["storms"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print("steady: %.3f req/s over %.0f s (goal <= 1.05)" % (result["steady"]["per_second"], result["steady"]["seconds"]))
    for s in result["storms"]:
        print("%d storm %.0f s: %d requests, peak %d/s, gaps %s, recovered after %s poll(s) (%s s), next gap %s s"
              % (s["code"], s["seconds"], s["requests"], s["peak_per_second"], s["gaps_between_failures"],
                 s["polls_to_recover"], s["seconds_to_recover"], s["gap_after_recovery"]))
    print("goal: %s" % ("met" if result["met"] else "MISSED"))
    return result


if __name__ == "__main__":
    main()
