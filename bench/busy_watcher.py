# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: a busy watcher, Preempts while a Reboot's slow pre-hook (and a slow hold command) runs.

On the benchmark VM (bench/benchvm.py: the watcher role, 1 s polling, ansible-pull.timer, puppet and the guard held,
one rule approving Preempts), as an operator would set it up: a pre-hook for Reboots that drains the node for H
seconds of real time (`sleep H`), a post-hook that takes 3 s, and in one case an operator hold command that takes
C seconds. Each cycle injects a Reboot (30 minutes of notice, no rule approves it). Once its slow step runs (the hook,
or in the command case the hold command), 3 s in, a Preempt appears (30 s of notice); after its approval the
simulated clock moves 40 s (it is evicted and gone) and, 1 to 3 s later, the next Preempt appears, as long as 5 s of
the hook remain. When the hook has ended the Reboot is cancelled; the cycle ends once everything is released.

Measured per cycle: Preempt appears -> approved (the simulator's approvals log); how old the metrics file got (read
every 20 ms on the VM from the Reboot's injection to the end of the cycle); IMDS requests from the VM during the
hook (the simulator's request log) per second; that the pre- and post-hooks ran to their end; that the Reboot's
release came after its post-hook ended (its journal). Host and container share one clock.
Goals: approved p99 <= 1.5 s; metrics file never older than 2 poll intervals; >= 0.9 requests/s during the hook;
hooks complete; the release after the post-hook.
Usage: python bench/busy_watcher.py [--quick] [--cases hook30,hook120,command10] [--library DIR]
(--library: install that copy of plugins/module_utils on the VM for the run, to measure another version of the
watcher; the checkout's is put back afterwards.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tarfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchvm  # noqa: E402  pylint: disable=wrong-import-position

GOAL = 1.5
POLL_INTERVAL = 1.0
MIN_RATE = 0.9
CONFIG = "/etc/imds-scheduled-events/watcher.json"
HOOKS = "/etc/imds-scheduled-events/hooks"
STAMPS = "/var/lib/imds-scheduled-events/bench"  # the unit may write here (its state directory)
METRICS = "/var/lib/prometheus/node-exporter/imds_scheduled_events.prom"
JOURNAL = "/var/lib/imds-scheduled-events/journal.jsonl"
COMMAND = "/usr/local/lib/imds-bench-drain"
LIBRARY = "/usr/lib/imds-scheduled-events/imds_scheduled_events"
POST_HOOK_SECONDS = 3
# name -> (pre-hook seconds, hold command seconds or None, cycles, cycles with --quick)
CASES = {
    "hook30": (30, None, 3, 1),
    "hook120": (120, None, 1, 0),
    "command10": (30, 10, 2, 1),
}

STAMPED = """#!/bin/sh
# The benchmark's %(what)s: stamps its start and its end, and takes %(seconds)s s in between.
mkdir -p %(stamps)s
date +%%s.%%N > %(stamps)s/%(name)s-start
sleep %(seconds)s
date +%%s.%%N > %(stamps)s/%(name)s-end
"""
DRAIN = """#!/bin/sh
# The benchmark's operator hold command: `hold` takes %(seconds)s s, `release` is quick.
mkdir -p %(stamps)s
[ "$1" = hold ] || exit 0
date +%%s.%%N > %(stamps)s/command-start
sleep %(seconds)s
date +%%s.%%N > %(stamps)s/command-end
"""
EDIT_CONFIG = """
import json, sys
path, commands = sys.argv[1], json.loads(sys.argv[2])
with open(path) as handle:
    config = json.load(handle)
config["hold"]["commands"] = commands
with open(path + ".new", "w") as handle:
    json.dump(config, handle, indent=1)
"""


def configure(vm, hook_seconds, command_seconds, original):
    """The case's hooks (and hold command) on the VM; the watcher restarted with them."""
    box = vm.box
    box.ssh("rm -rf %s && rm -f %s/pre/Reboot/* %s/post/Reboot/*" % (STAMPS, HOOKS, HOOKS))
    for phase, name, what, seconds in (("pre", "10-drain", "pre-hook", hook_seconds),
                                       ("post", "10-undrain", "post-hook", POST_HOOK_SECONDS)):
        box.put_file("%s/%s/Reboot/%s" % (HOOKS, phase, name),
                     STAMPED % {"what": what, "seconds": seconds, "stamps": STAMPS, "name": phase}, mode=0o755)
    commands = []
    if command_seconds:
        box.put_file(COMMAND, DRAIN % {"seconds": command_seconds, "stamps": STAMPS}, mode=0o755)
        commands = [{"name": "drain", "hold": [COMMAND, "hold"], "release": [COMMAND, "release"], "timeout": 120}]
    box.put_file(CONFIG, original, mode=0o644)
    box.ssh(["python3", "-c", EDIT_CONFIG, CONFIG, json.dumps(commands)])
    box.ssh("mv -f %s.new %s && chmod 0644 %s && systemctl restart imds-watcher.service" % (CONFIG, CONFIG, CONFIG))
    vm.wait_idle()


def install_library(vm, source):
    """Replace the watcher's library on the VM with `source` (a plugins/module_utils tree) and restart it."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(source, arcname=".", filter=lambda info: None if info.name.endswith(
            ("ansible_support.py", "__pycache__")) else info)
    vm.box.ssh("rm -rf %s && mkdir -p %s && tar -x -C %s --no-same-owner && python3 -m compileall -q %s && "
               "systemctl restart imds-watcher.service" % (LIBRARY, LIBRARY, LIBRARY, LIBRARY),
               input=data.getvalue(), text=False)
    vm.wait_idle()


def restore(vm, original):
    box = vm.box
    box.ssh("rm -rf %s %s/pre/Reboot %s/post/Reboot %s" % (STAMPS, HOOKS, HOOKS, COMMAND))
    box.put_file(CONFIG, original, mode=0o644)
    box.ssh("systemctl restart imds-watcher.service")
    vm.wait_idle()


def stamp(vm, name, timeout):
    """The VM's wall time written by the hook or command `name` (-start or -end), once it is there."""
    probe = vm.start_probe("file", "%s/%s" % (STAMPS, name), timeout)
    out, err = probe.communicate(timeout=timeout + 60)
    data = json.loads(out.strip().splitlines()[-1])
    if data.get("at") is None:
        raise RuntimeError("%s never came within %s s: %s\n%s" % (name, timeout, err, vm.diagnose()))
    return float(data["content"])


def preempt(vm, log):
    """One Preempt: appeared -> approved in seconds; then the simulated clock moves past its eviction."""
    latency = benchvm.approve_preempt(vm)
    log.write("  Preempt approved after %.3f s\n" % latency)
    vm.control.advance(40)  # evicted and gone
    return latency


def cycle(vm, rng, hook_seconds, command_seconds, log):
    """One Reboot with its slow hook, the Preempts during it; returns the cycle's measurements."""
    stop = "%s/stop-age" % STAMPS
    vm.box.ssh("rm -rf %s && mkdir -p %s" % (STAMPS, STAMPS))  # the last cycle's stamps
    age = vm.start_probe("age", METRICS, stop, hook_seconds + 600)
    if age.stdout.readline().strip() != "ready":
        raise RuntimeError("the metrics probe did not start: %s" % age.stderr.read())
    reboot = str(uuid.uuid4()).upper()
    vm.control.inject(id=reboot, type="Reboot", resources=["myvm"], notice=1800)
    samples = []
    if command_seconds:  # a Preempt while the Reboot's hold command runs
        started = stamp(vm, "command-start", 120)
        time.sleep(max(0.0, started + 3 - time.time()))
        samples.append(preempt(vm, log))
    pre_start = stamp(vm, "pre-start", 120 + (command_seconds or 0))
    hook_end = pre_start + hook_seconds
    time.sleep(max(0.0, pre_start + 3 - time.time()))
    while True:
        samples.append(preempt(vm, log))
        pause = rng.uniform(1.0, 3.0)
        if time.time() + pause > hook_end - 5:
            break
        time.sleep(pause)
    pre_end = stamp(vm, "pre-end", hook_seconds + 60)
    deadline = time.monotonic() + 60
    while not [e for e in vm.watcher_journal() if e["event_id"] == reboot and e["transition"] == "ready"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the Reboot never became ready after its pre-hook\n%s" % vm.diagnose())
        time.sleep(0.2)
    vm.control.cancel(reboot)
    post_end = stamp(vm, "post-end", 60)
    vm.wait_idle()
    vm.box.ssh("touch %s" % stop)
    out, err = age.communicate(timeout=60)
    metrics_age = json.loads(out.strip().splitlines()[-1])
    requests = [r for r in vm.control.requests(vm="myvm", since=pre_start) if r["wall_time"] <= pre_end]
    journal = [e for e in vm.watcher_journal() if e["event_id"] == reboot]
    transitions = [e["transition"] for e in journal]
    released = [e["ts"] for e in journal if e["transition"] == "released"]
    releasing = [e["ts"] for e in journal if e["transition"] == "releasing"]
    result = {
        "preempt_seconds": [round(s, 4) for s in samples],
        "hook_seconds": round(pre_end - pre_start, 2),
        "requests_during_hook": len(requests),
        "requests_per_second": round(len(requests) / (pre_end - pre_start), 3),
        "metrics_max_age_seconds": round(metrics_age["max_age"], 3),
        "metrics_age_samples": metrics_age["samples"],
        "hooks_completed": "ready" in transitions and "post_hooks" in transitions,
        "release_after_post_hook": bool(released and releasing and min(releasing) >= post_end
                                        and min(released) >= post_end),
        "released_after_post_hook_seconds": round(min(released) - post_end, 3) if released else None,
        "reboot_transitions": transitions,
    }
    log.write("  cycle: %d Preempts, %.2f requests/s during the %.0f-s hook, metrics at most %.2f s old, hooks %s, "
              "released %.2f s after the post-hook\n"
              % (len(samples), result["requests_per_second"], result["hook_seconds"],
                 result["metrics_max_age_seconds"], "complete" if result["hooks_completed"] else "INCOMPLETE",
                 result["released_after_post_hook_seconds"] or -1))
    return result


def run_case(vm, name, quick, original, rng):
    hook_seconds, command_seconds, cycles, quick_cycles = CASES[name]
    cycles = quick_cycles if quick else cycles
    if not cycles:
        return None
    sys.stderr.write("busy_watcher %s: pre-hook %d s%s, %d cycle(s)\n" % (
        name, hook_seconds, ", hold command %d s" % command_seconds if command_seconds else "", cycles))
    configure(vm, hook_seconds, command_seconds, original)
    runs = [cycle(vm, rng, hook_seconds, command_seconds, sys.stderr) for dummy in range(cycles)]
    samples = [s for run in runs for s in run["preempt_seconds"]]
    stats = benchvm.summarize(samples)
    case = {"pre_hook_seconds": hook_seconds, "hold_command_seconds": command_seconds, "cycles": runs,
            "seconds": stats, "samples": samples,
            "metrics_max_age_seconds": max(run["metrics_max_age_seconds"] for run in runs),
            "min_requests_per_second": min(run["requests_per_second"] for run in runs),
            "hooks_completed": all(run["hooks_completed"] for run in runs),
            "release_after_post_hook": all(run["release_after_post_hook"] for run in runs)}
    case["met"] = (stats["p99"] <= GOAL and case["metrics_max_age_seconds"] <= 2 * POLL_INTERVAL
                   and case["min_requests_per_second"] >= MIN_RATE and case["hooks_completed"]
                   and case["release_after_post_hook"])
    return case


def main(argv=None, vm=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cycle of hook30 and of command10, no hook120")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--library", help="a plugins/module_utils tree to run on the VM instead of the checkout's")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "busy_watcher.json"))
    args = parser.parse_args(argv)
    names = [n for n in CASES if n in args.cases.split(",")]

    def work(box):
        original = box.box.get_file(CONFIG)
        rng = random.Random(13)
        if args.library:
            install_library(box, args.library)
        try:
            return dict((name, run_case(box, name, args.quick, original, rng)) for name in names)
        finally:
            if args.library:
                install_library(box, os.path.join(benchvm.ROOT, "plugins", "module_utils"))
            restore(box, original)

    cases = dict((k, v) for k, v in benchvm.on_vm(vm, work).items() if v is not None)
    samples = [s for case in cases.values() for s in case["samples"]]
    result = {"benchmark": "busy_watcher", "library": args.library or "the checkout's",
              "goal": "Preempt appears -> approved p99 <= %.1f s while a Reboot's hook (or hold command) runs; "
                      "metrics file <= %g s old; >= %.1f IMDS requests/s during the hook; hooks complete; release "
                      "after the post-hook" % (GOAL, 2 * POLL_INTERVAL, MIN_RATE),
              "poll_interval": POLL_INTERVAL, "holds": "ansible-pull.timer, puppet, guard (and the command)",
              "cases": cases, "seconds": benchvm.summarize(samples), "met": all(c["met"] for c in cases.values())}
    benchvm.write_result(args.out, result)
    for name, case in cases.items():
        st = case["seconds"]
        print("busy watcher %s: %d Preempts, approved p50 %.3f s, p99 %.3f s; metrics at most %.2f s old; "
              ">= %.2f requests/s during the hook; hooks %s; release %s the post-hook: %s"
              % (name, st["n"], st["p50"], st["p99"], case["metrics_max_age_seconds"],
                 case["min_requests_per_second"], "complete" if case["hooks_completed"] else "INCOMPLETE",
                 "after" if case["release_after_post_hook"] else "NOT after", "met" if case["met"] else "MISSED"))
    return result


if __name__ == "__main__":
    main()
