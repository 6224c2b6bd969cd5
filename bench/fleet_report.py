# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the fleet_report role against `ansible -m ping` over the same simulated fleet.

One simulator (in this process) serves the largest fleet; for each size the first N VMs form the
inventory (`ansible_connection: local`, each host reading its own simulated IMDS, hold record and
journal). In one run, for each size and repetition, in rotating order:
  ping    `ansible all -m ansible.builtin.ping`
  info    `ansible all -m imds.scheduled_events.event_info` (each host reading its own simulated IMDS)
  report  `ansible-playbook playbooks/fleet_report.yml` (the role as shipped)
  before  the first design: event_info and watcher_info as two tasks per host, then the same
          publishing (kept here to record the before/after of the fix in the same conditions)
Wall time of each command is measured from outside; the figure of merit is median(report) /
median(ping) per size, goal <= 1.5 (event_info / ping is reported alongside).
Usage: python bench/fleet_report.py [--sizes 50,200,500] [--runs 3] [--forks 20] [--no-before] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "simulator"))
sys.path.insert(0, os.path.join(ROOT, "tests", "guard"))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import sitecustomize  # noqa: E402  pylint: disable=wrong-import-position
from imds_simulator.simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position

sitecustomize.install()  # this process, too, talks to loopback only

SET_SIZE = 20
BINDIR = os.path.dirname(sys.executable)

BEFORE_PLAYBOOK = """
- name: Fleet report, first design (two module runs per host)
  hosts: all
  gather_facts: false
  tasks:
    - name: Read events
      imds.scheduled_events.event_info:
        endpoint: "{{ imds_endpoint }}"
      register: before_events
      ignore_unreachable: true
      ignore_errors: true
    - name: Read holds and the watcher
      imds.scheduled_events.watcher_info:
        state_file: "{{ fleet_report_hold_state_file }}"
        journal_file: "{{ fleet_report_journal_file }}"
      register: before_watcher
      ignore_unreachable: true
      ignore_errors: true
    - name: Shape
      ansible.builtin.set_fact:
        __fleet_report_data: >-
          {{ hostvars | imds.scheduled_events.fleet_report_data(hosts=ansible_play_hosts_all,
             result_key='before_watcher', events_key='before_events') }}
      run_once: true
    - name: Publish
      imds.scheduled_events.fleet_publish:
        report: "{{ __fleet_report_data }}"
        html_path: "{{ out }}/fleet-report.html"
        html: "{{ lookup('ansible.builtin.template', templates ~ '/fleet-report.html.j2') }}"
        markdown_path: "{{ out }}/fleet-report.md"
        markdown: "{{ lookup('ansible.builtin.template', templates ~ '/fleet-report.md.j2') }}"
        json_path: "{{ out }}/fleet-report.json"
        alert_state_file: "{{ out }}/alert-state.json"
      run_once: true
      delegate_to: localhost
"""


def scenario(count):
    vms = [{"name": "node-%03d" % i, "availability_set": "as-%02d" % (i // SET_SIZE), "update_domain": i % 5}
           for i in range(count)]
    events = [{"type": "Freeze", "availability_set": "as-00", "notice": 900}]
    events += [{"type": "Reboot", "resources": ["node-%03d" % i], "notice": 1800 + i} for i in range(5, count, 37)]
    events += [{"type": "Redeploy", "resources": ["node-%03d" % i, "node-%03d" % (i + 1)], "notice": 1200}
               for i in range(22, count - 1, 97)]
    return {"name": "bench-fleet", "clock": "manual", "seed": 7, "vms": vms, "events": events}


def make_holds(work, names):
    """Every host gets its state directory, as the watcher role creates it, and every 25th a hold record written
    by the hold library (trusted only when root owns it)."""
    for name in names:
        os.makedirs(os.path.join(work, "hosts", name), mode=0o755, exist_ok=True)
    if os.geteuid() != 0:
        return 0
    from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (  # pylint: disable=import-outside-toplevel
        GuardBackend)
    from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import (  # pylint: disable=import-outside-toplevel
        HoldManager, Reason)
    made = 0
    for name in names[::25]:
        directory = os.path.join(work, "hosts", name)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        os.chmod(directory, 0o755)
        HoldManager(state_file=os.path.join(directory, "holds.json")).hold(
            Reason("CHG-%s" % name, "benchmark hold", holder="bench"), [GuardBackend.target(wait_timeout=0)])
        made += 1
    return made


def inventory(path, sim, names, work):
    hosts = {}
    for name in names:
        home = os.path.join(work, "hosts", name)
        hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                       "imds_endpoint": sim.endpoint(name), "fleet_report_hold_state_file": os.path.join(home, "holds.json"),
                       "fleet_report_journal_file": os.path.join(home, "journal.jsonl")}
    with open(path, "w") as handle:
        json.dump({"all": {"hosts": hosts}}, handle)


def ansible_env(**extra):
    """The environment every benchmark's ansible command runs with: this venv's tools, the collection from the
    checkout, the network guard on PYTHONPATH, no proxy."""
    env = dict(os.environ)
    for key in [k for k in env if k.lower().endswith("_proxy")]:
        del env[key]
    env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false",
               PYTHONPATH=os.path.join(ROOT, "tests", "guard"), PATH=BINDIR + os.pathsep + env.get("PATH", ""))
    env.update(extra)
    return env


class SshFleet:
    """The SSH path's fleet: one simulator serving `count` VMs, each with its state directory (and every 25th a hold
    record), and for any size up to `count` an inventory of the first VMs (`ansible_connection: local`, each host
    reading its own simulated IMDS) and the commands that read them. A context manager."""

    def __init__(self, count):
        self.names = ["node-%03d" % i for i in range(count)]
        self.holds = 0
        self.work = None
        self._stack = contextlib.ExitStack()
        self.sim = None

    def __enter__(self):
        self.sim = self._stack.enter_context(
            Simulator.from_scenario(scenario(len(self.names)), clock="manual", port=0, control_port=None))
        self.work = self._stack.enter_context(tempfile.TemporaryDirectory())
        os.chmod(self.work, 0o755)
        self.holds = make_holds(self.work, self.names)
        return self

    def __exit__(self, *exc_info):
        self._stack.close()

    def inventory(self, size):
        path = os.path.join(self.work, "inventory-%d.json" % size)
        inventory(path, self.sim, self.names[:size], self.work)
        return path

    def commands(self, size, forks):
        """ping, info and report: `ansible -m ping`, `ansible -m event_info` and the fleet report as shipped
        (playbooks/fleet_report.yml) over the first `size` hosts."""
        inv = self.inventory(size)
        return {
            "ping": [os.path.join(BINDIR, "ansible"), "all", "-i", inv, "-m", "ansible.builtin.ping", "-f", str(forks)],
            "info": [os.path.join(BINDIR, "ansible"), "all", "-i", inv, "-m", "imds.scheduled_events.event_info",
                     "-a", "endpoint={{ imds_endpoint }}", "-f", str(forks)],
            "report": [os.path.join(BINDIR, "ansible-playbook"), "-i", inv, os.path.join(ROOT, "playbooks", "fleet_report.yml"),
                       "-f", str(forks), "-e", "fleet_report_dest_dir=%s" % os.path.join(self.work, "out-%d" % size)],
        }


def timed(command, env, cpu=None):
    """Wall seconds of a command; with a list `cpu`, also appends the CPU seconds (user + system) of the command and
    every process under it that was waited for (not the simulator's, which runs in this process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if cpu is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout.decode("utf-8", "replace")[-4000:])
        raise SystemExit("%s failed with %s" % (" ".join(command[:3]), proc.returncode))
    return seconds


def summarize(values):
    values = sorted(values)
    return {"runs": len(values), "median": statistics.median(values), "min": values[0], "max": values[-1],
            "all": [round(v, 2) for v in values]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--no-before", action="store_true", help="skip the first design's playbook")
    parser.add_argument("--quick", action="store_true", help="50 hosts, one run, no first design")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "fleet_report.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.no_before = "50", 1, True
    sizes = [int(s) for s in args.sizes.split(",")]
    env = ansible_env()
    results = {"benchmark": "fleet_report", "goal": "fleet_report median <= 1.5 x ansible -m ping median, each size",
               "forks": args.forks, "sizes": {}}
    with SshFleet(max(sizes)) as fleet:
        results["holds"] = fleet.holds
        before = os.path.join(fleet.work, "before.yml")
        with open(before, "w") as handle:
            handle.write(BEFORE_PLAYBOOK)
        for size in sizes:
            commands = fleet.commands(size, args.forks)
            if not args.no_before:
                commands["before"] = [os.path.join(BINDIR, "ansible-playbook"), "-i", fleet.inventory(size), before,
                                      "-f", str(args.forks), "-e", "out=%s" % os.path.join(fleet.work, "before-%d" % size),
                                      "-e", "templates=%s" % os.path.join(ROOT, "roles", "fleet_report", "templates")]
            times = dict((k, []) for k in commands)
            order = list(commands)
            for run in range(args.runs):
                for kind in order[run % len(order):] + order[:run % len(order)]:
                    seconds = timed(commands[kind], env)
                    times[kind].append(seconds)
                    sys.stderr.write("size %d run %d %s: %.1f s\n" % (size, run + 1, kind, seconds))
            entry = dict((k, summarize(v)) for k, v in times.items())
            entry["ratio"] = entry["report"]["median"] / entry["ping"]["median"]
            entry["ratio_info"] = entry["info"]["median"] / entry["ping"]["median"]
            if "before" in entry:
                entry["ratio_before"] = entry["before"]["median"] / entry["ping"]["median"]
            entry["met"] = entry["ratio"] <= 1.5
            results["sizes"][str(size)] = entry
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    results["met"] = all(e["met"] for e in results["sizes"].values())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    before_cols = "" if args.no_before else " before s | before / ping |"
    print("| hosts | ping s | event_info s | event_info / ping | report s | report / ping |%s" % before_cols)
    print("| --- | --- | --- | --- | --- | --- |%s" % ("" if args.no_before else " --- | --- |"))
    for size, entry in results["sizes"].items():
        line = "| %s | %.1f | %.1f | %.2f | %.1f | **%.2f** |" % (
            size, entry["ping"]["median"], entry["info"]["median"], entry["ratio_info"], entry["report"]["median"],
            entry["ratio"])
        if "before" in entry:
            line += " %.1f | %.2f |" % (entry["before"]["median"], entry["ratio_before"])
        print(line)
    print("goal <= 1.5 x ping at every size: %s" % ("met" if results["met"] else "MISSED"))
    return results


if __name__ == "__main__":
    main()
