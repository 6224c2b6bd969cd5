# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the fleet report for 5,000 VMs from Azure Resource Graph against the SSH-path report for 500 hosts.

Two fleets on the simulator, measured in one run:
  control_plane  45 scale sets of 100 instances and 500 single VMs (200 of them in 10 availability sets), every owner
                 opted in, 300 events of every type; the simulated clock is moved on so that Resource Graph holds
                 Scheduled, Started, Completed and Canceled rows. No IMDS listener: only the simulator's
                 control-plane face on 127.0.0.1. `ansible-playbook` applies the fleet_report role with
                 `fleet_report_sources: [control_plane]` on localhost: control_plane_event_info signs in with the real
                 azure-identity managed-identity credential (IDENTITY_ENDPOINT and IDENTITY_HEADER point at the
                 simulator's token endpoint), reads every page of Resource Graph, and the role renders and writes the
                 HTML, JSON and Markdown reports.
  ssh            the fleet report of bench/fleet_report.py (the same fleet, inventory and `playbooks/fleet_report.yml`,
                 one module run per host, forks 20) over 500 hosts.
Wall time of each `ansible-playbook` is measured from outside (start-up included); each run writes its reports to a
fresh directory, so every control-plane run announces every event as new. The figures of merit: the control-plane
report's median, goal under 10 s, and the SSH path's time per host over the control plane's time per VM, goal at
least 10. The control-plane report of the last run is checked: every event is in it, with each status.
Usage: python bench/control_plane_report.py [--runs 3] [--ssh-hosts 500] [--ssh-runs 1] [--forks 20] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fleet_report import BINDIR, Simulator, SshFleet, ansible_env, summarize, timed  # noqa: E402  pylint: disable=wrong-import-position

SCALE_SETS, SCALE_SET_SIZE, SINGLE_VMS, AVAILABILITY_SETS, AVAILABILITY_SET_SIZE = 45, 100, 500, 10, 20
EVENTS = 300
TYPES = ("Reboot", "Redeploy", "Freeze", "Terminate", "Preempt")
SPACING = 12        # simulated seconds between two events appearing
NOW = 2700          # simulated seconds the clock is moved on before the report: events after it have not appeared yet
RETENTION = 86400   # Completed and Canceled rows stay for the whole benchmark

PLAYBOOK = """
- name: Fleet report from Azure Resource Graph
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The fleet_report role, reading the control plane only
      ansible.builtin.import_role:
        name: imds.scheduled_events.fleet_report
      vars:
        fleet_report_sources: [control_plane]
        fleet_report_control_plane:
          subscriptions: "{{ bench_subscriptions }}"
          management_endpoint: "{{ bench_arm }}"
          auth_source: msi
"""


def vm_count():
    return SCALE_SETS * SCALE_SET_SIZE + SINGLE_VMS


def scenario():
    """The 5,000-VM fleet. Event i appears at i * SPACING; every 7th is cancelled 10 s later, before its NotBefore.
    Owners: a whole scale set, a few instances of one, an availability set, or a single VM, in turn."""
    scale_sets = [{"name": "ss%02d" % i, "instances": SCALE_SET_SIZE} for i in range(SCALE_SETS)]
    vms = [{"name": "vm-%03d" % i} for i in range(SINGLE_VMS)]
    for i in range(AVAILABILITY_SETS * AVAILABILITY_SET_SIZE):
        vms[i]["availability_set"] = "as-%02d" % (i // AVAILABILITY_SET_SIZE)
    events = []
    for i in range(EVENTS):
        event = {"type": TYPES[i % len(TYPES)], "at": i * SPACING}
        owner = i % 4
        if owner == 0:
            event["scale_set"] = "ss%02d" % (i % SCALE_SETS)
        elif owner == 1:
            event["resources"] = ["ss%02d_%d" % (i % SCALE_SETS, (i + j * 13) % SCALE_SET_SIZE) for j in range(1 + i % 5)]
        elif owner == 2 and event["type"] in ("Freeze", "Reboot"):
            event["availability_set"] = "as-%02d" % (i % AVAILABILITY_SETS)
        else:
            event["resources"] = ["vm-%03d" % (AVAILABILITY_SETS * AVAILABILITY_SET_SIZE + (i * 7) % (SINGLE_VMS - 200))]
        if i % 7 == 3:
            event["cancel_at"] = event["at"] + 10
        events.append(event)
    return {"name": "bench-control-plane", "clock": "manual", "seed": 14, "scale_sets": scale_sets, "vms": vms,
            "events": events, "control_plane": {"opted_in": "all", "retention": RETENTION}}


def check_report(path, rows):
    """What the report written by the last run holds, and whether it is every row Resource Graph had."""
    with open(path) as handle:
        report = json.load(handle)
    events = report.get("events", [])
    statuses = collections.Counter(e["status"] for e in events)
    expected = collections.Counter(r["properties"]["EventStatus"] for r in rows)
    vms = set()
    for event in events:
        vms.update(event["resources"])
    return {"events": len(events), "rows": len(rows), "statuses": dict(sorted(statuses.items())),
            "row_statuses": dict(sorted(expected.items())), "vms_named": len(vms),
            "complete": len(events) == len(rows) and statuses == expected}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="control-plane report runs (the median is used)")
    parser.add_argument("--ssh-hosts", type=int, default=500)
    parser.add_argument("--ssh-runs", type=int, default=1)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="one control-plane run, the SSH path over 50 hosts")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "control_plane_report.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.ssh_hosts, args.ssh_runs = 1, 50, 1
    results = {"benchmark": "control_plane_report", "vms": vm_count(), "ssh_hosts": args.ssh_hosts, "forks": args.forks,
               "goal": "control-plane report of %d VMs < 10 s, >= 10 x faster per VM than the SSH path" % vm_count()}
    times = {"control_plane": [], "ssh": []}
    cpu = {"control_plane": [], "ssh": []}
    with Simulator.from_scenario(scenario(), clock="manual", port=0, control_port=None, arm_port=0, imds=False) as sim, \
            SshFleet(args.ssh_hosts) as fleet, tempfile.TemporaryDirectory() as work:
        sim.world.advance(NOW)
        rows = sim.world.control_plane_rows()
        subscriptions = sorted({row["subscriptionId"] for row in rows})
        playbook = os.path.join(work, "control_plane_report.yml")
        with open(playbook, "w") as handle:
            handle.write(PLAYBOOK)
        inventory = os.path.join(work, "inventory.json")
        with open(inventory, "w") as handle:
            localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
            json.dump({"all": {"hosts": {"localhost": localhost}}}, handle)
        env = ansible_env(IDENTITY_ENDPOINT=sim.identity_endpoint, IDENTITY_HEADER=sim.identity_header)
        ssh = fleet.commands(args.ssh_hosts, args.forks)["report"]

        def control_plane(run):
            out = os.path.join(work, "out-%d" % run)
            return [os.path.join(BINDIR, "ansible-playbook"), "-i", inventory, playbook, "-e", "fleet_report_dest_dir=%s" % out,
                    "-e", json.dumps({"bench_arm": sim.arm_url, "bench_subscriptions": subscriptions})], out

        # One warm-up of the control-plane report (not counted), then the SSH path's runs between its measured runs.
        timed(control_plane(0)[0], env)
        runs = [("control_plane", r) for r in range(1, args.runs + 1)]
        for index in range(args.ssh_runs):
            runs.insert(min(len(runs), 1 + 2 * index), ("ssh", index))
        last = None
        for kind, run in runs:
            if kind == "ssh":
                seconds = timed(ssh, ansible_env(), cpu["ssh"])
            else:
                command, last = control_plane(run)
                seconds = timed(command, env, cpu["control_plane"])
            times[kind].append(seconds)
            number = run + 1 if kind == "ssh" else run
            sys.stderr.write("%s run %d: %.2f s (CPU %.2f s)\n" % (kind, number, seconds, cpu[kind][-1]))
        results["report"] = check_report(os.path.join(last, "fleet-report.json"), rows)
        results["holds"] = fleet.holds
    cp, ssh = summarize(times["control_plane"]), summarize(times["ssh"])
    cp["cpu"], ssh["cpu"] = summarize(cpu["control_plane"]), summarize(cpu["ssh"])
    for entry, vms in ((cp, vm_count()), (ssh, args.ssh_hosts)):
        entry["per_vm_ms"] = entry["median"] / vms * 1000
        entry["cpu_per_vm_ms"] = entry["cpu"]["median"] / vms * 1000
    results.update(control_plane=cp, ssh=ssh, ratio_per_vm=ssh["per_vm_ms"] / cp["per_vm_ms"],
                   ratio_cpu_per_vm=ssh["cpu_per_vm_ms"] / cp["cpu_per_vm_ms"])
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    results["met_total"] = cp["median"] < 10.0
    results["met_ratio"] = results["ratio_per_vm"] >= 10.0
    results["met"] = results["met_total"] and results["met_ratio"] and results["report"]["complete"]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print("| path | VMs | wall s (median) | per VM ms | CPU s | CPU per VM ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for what, vms, entry in (("Resource Graph (control_plane)", vm_count(), cp),
                             ("SSH path (ssh, forks %d)" % args.forks, args.ssh_hosts, ssh)):
        values = (what, vms, entry["median"], entry["per_vm_ms"], entry["cpu"]["median"], entry["cpu_per_vm_ms"])
        print("| %s | %d | %.2f | %.2f | %.2f | %.2f |" % values)
    print("per VM, the control plane is %.0f x faster (%.0f x less CPU); load average %s; report: %s" % (
        results["ratio_per_vm"], results["ratio_cpu_per_vm"], " / ".join("%.2f" % x for x in results["load_average"]),
        json.dumps(results["report"])))
    print("goal: %d VMs < 10 s: %s; >= 10 x per VM: %s" % (
        vm_count(), "met" if results["met_total"] else "MISSED", "met" if results["met_ratio"] else "MISSED"))
    return results


if __name__ == "__main__":
    main()
