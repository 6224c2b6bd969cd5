# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: event_info against ansible.builtin.uri doing the same GET on the simulator.

Both run in one ansible-playbook process, interleaved, each timed by a callback
from task start to result; the figure of merit is the ratio of the medians.
Usage: python bench/module_overhead.py [--runs 20] [--out bench/results/module_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "simulator"))

from imds_simulator.simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position


def summarize(values):
    values = sorted(values)
    return {"runs": len(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "p90": values[int(0.9 * (len(values) - 1))], "min": values[0], "max": values[-1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 pairs")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "module_overhead.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 5

    env = dict(os.environ)
    env.update(ANSIBLE_CALLBACKS_ENABLED="task_timer", ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               PYTHONPATH=os.path.join(ROOT, "tests", "guard"))
    with Simulator.from_scenario(os.path.join(ROOT, "simulator", "scenarios", "demo.yaml"), clock="manual") as sim, \
            tempfile.TemporaryDirectory() as tmp:
        env["TASK_TIMER_OUT"] = os.path.join(tmp, "timings.json")
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                   os.path.join(HERE, "module_overhead.yml"), "-e", "imds_endpoint=%s" % sim.endpoint("myvm"),
                   "-e", "bench_runs=%d" % args.runs, "-e", "ansible_python_interpreter=%s" % sys.executable]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(env["TASK_TIMER_OUT"]) as handle:
            timings = json.load(handle)
    measured = [t for t in timings if t["name"].endswith(" run") and t["ok"]]
    uri = summarize([t["seconds"] for t in measured if t["name"].startswith("Uri")])
    info = summarize([t["seconds"] for t in measured if t["name"].startswith("Event_info")])
    result = {"benchmark": "module_overhead", "goal": "event_info median <= 1.10 x uri median",
              "uri": uri, "event_info": info, "ratio": info["median"] / uri["median"],
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}}
    result["met"] = result["ratio"] <= 1.10
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print("| task | runs | median s | p90 s |\n| --- | --- | --- | --- |")
    for name, stats in (("ansible.builtin.uri", uri), ("imds.scheduled_events.event_info", info)):
        print("| %s | %d | %.3f | %.3f |" % (name, stats["runs"], stats["median"], stats["p90"]))
    print("ratio of medians: %.3f (goal <= 1.10: %s)" % (result["ratio"], "met" if result["met"] else "MISSED"))
    return result


if __name__ == "__main__":
    main()
