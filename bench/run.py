# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs every benchmark of issue #7 on the simulator and writes bench/results.json and bench/results.md.

  footprint          the watcher vs a minimal requests loop, CPU and peak RSS (host)
  request_rate       steady polling and 429/500 storms (host)
  detection_latency  event appears -> ansible-pull.timer stopped and the guard held (systemd container)
  preempt_budget     Preempt appears -> approved (the same container)
  busy_watcher       the same while a Reboot's 30-s or 120-s pre-hook (or a 10-s hold command) runs: approvals, the
                     metrics file's age, IMDS requests during the hook, the Reboot's hooks and release (the same container)
  boot_cost          what imds-watcher-boot.service costs a boot, empty record and one held timer (the same container)
  module_overhead    event_info vs ansible.builtin.uri
  fleet_report       event_info and the fleet report vs `ansible -m ping`, 50/200/500 hosts
  control_plane_report  the fleet report of 5,000 VMs from Resource Graph vs the SSH path's for 500 hosts (issue #14)
  eda_latency        Event-Driven Ansible: an event appears -> the first task of the playbook the shipped rulebook runs,
                     for the imds and the event_grid sources (the real ansible-rulebook, one engine per source)
Each is also a script of its own (python bench/<name>.py --help). footprint and request_rate run at the same time
(each measures only its own processes, which use a fraction of a percent of a core); the rest one after another.
Under `make bench` (30 Preempts rather than 50, shorter storms, one fleet run per size) the whole takes about
25 minutes, busy_watcher's hooks (which really run 30 and 120 s) 8.5 of them. `make bench` puts tests/guard on
PYTHONPATH. No test suite asserts any of these timings.
With --only, the benchmarks not run keep their last results (results.md says from which run).
Usage: python bench/run.py [--quick] [--only name,name]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchvm  # noqa: E402  pylint: disable=wrong-import-position
import boot_cost  # noqa: E402  pylint: disable=wrong-import-position
import busy_watcher  # noqa: E402  pylint: disable=wrong-import-position
import control_plane_report  # noqa: E402  pylint: disable=wrong-import-position
import detection_latency  # noqa: E402  pylint: disable=wrong-import-position
import eda_latency  # noqa: E402  pylint: disable=wrong-import-position
import fleet_report  # noqa: E402  pylint: disable=wrong-import-position
import footprint  # noqa: E402  pylint: disable=wrong-import-position
import module_overhead  # noqa: E402  pylint: disable=wrong-import-position
import preempt_budget  # noqa: E402  pylint: disable=wrong-import-position
import request_rate  # noqa: E402  pylint: disable=wrong-import-position

ORDER = ["footprint", "request_rate", "detection_latency", "preempt_budget", "busy_watcher", "boot_cost",
         "module_overhead", "fleet_report", "control_plane_report", "eda_latency"]
VM_BENCHMARKS = ("detection_latency", "preempt_budget", "busy_watcher", "boot_cost")
BUSY_CASES = {"hook30": "a Reboot's 30-s pre-hook", "hook120": "a Reboot's 120-s pre-hook",
              "command10": "a 10-s hold command, then a 30-s pre-hook"}


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ansible = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "--version"],
                                 stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        ansible = "unknown"
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "ansible": ansible,
            "platform": platform.platform(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def rows(name, r):
    """(benchmark, measured, goal, met) lines for the Markdown table."""
    if name == "footprint":
        w, l = r["watcher"], r["loop"]
        cpu = (w["cpu_percent"], l["cpu_percent"], r["cpu_ratio"])
        return [("footprint: CPU over %.0f s" % r["window_seconds"],
                 "watcher %.2f %% vs loop %.2f %% of one core (**%.2f x**)" % cpu,
                 "<= 1.3 x the loop", r["cpu_ratio"] <= 1.3),
                ("footprint: peak RSS", "watcher **%.1f MB** (loop %.1f MB)" % (w["peak_rss_mb"], l["peak_rss_mb"]),
                 "<= 30 MB", w["peak_rss_mb"] <= 30.0)]
    if name == "request_rate":
        out = [("request rate: steady", "**%.3f req/s** over %.0f s" % (r["steady"]["per_second"],
                                                                        r["steady"]["seconds"]),
                "<= 1.05 req/s", r["steady"]["per_second"] <= 1.05)]
        for s in r["storms"]:
            ok = s["peak_per_second"] <= 5 and s["backing_off"] and (s["polls_to_recover"] or 99) <= 2
            out.append(("request rate: %d storm (%.0f s)" % (s["code"], s["seconds"]),
                        "peak **%d/s**; gaps %s s; recovered at poll %s after the storm (%s s), next gap %s s"
                        % (s["peak_per_second"], ", ".join("%g" % g for g in s["gaps_between_failures"]),
                           s["polls_to_recover"], s["seconds_to_recover"], s["gap_after_recovery"]),
                        "<= 5/s, backing off, recovered within 2 polls", ok))
        return out
    if name == "busy_watcher":
        out = []
        for case, what in BUSY_CASES.items():
            if case not in r["cases"]:
                continue
            c, st = r["cases"][case], r["cases"][case]["seconds"]
            out.append(("busy watcher: Preempts during %s (%d in %d cycles)" % (what, st["n"], len(c["cycles"])),
                        "approved p50 %.3f s, **p99 %.3f s**; metrics file at most %.2f s old; >= %.2f IMDS requests/s "
                        "during the hook; hooks %s; released %s the post-hook"
                        % (st["p50"], st["p99"], c["metrics_max_age_seconds"], c["min_requests_per_second"],
                           "complete" if c["hooks_completed"] else "**incomplete**",
                           "after" if c["release_after_post_hook"] else "**not after**"),
                        "p99 <= 1.5 s; <= 2 s old; >= 0.9 req/s; complete; after", c["met"]))
        return out
    if name == "boot_cost":
        return [("boot cost of %s, %s record (%d boots)" % (r["unit"], mode, r["boots"]),
                 "process median **%.0f ms** (max %.0f), activation median %.0f ms (max %.0f)"
                 % (r[mode]["process_ms"]["p50"], r[mode]["process_ms"]["max"], r[mode]["activation_ms"]["p50"],
                    r[mode]["activation_ms"]["max"]), "reported only", True) for mode in ("empty", "held")]
    if name in VM_BENCHMARKS:
        st = r["seconds"]
        what = "detection latency (%d events)" % st["n"] if name == "detection_latency" else \
            "Preempt budget (%d Preempts)" % st["n"]
        goal = "p99 <= 1.15 s (1 s polling + 150 ms)" if name == "detection_latency" else "p99 <= 1.5 s"
        return [(what, "p50 %.3f s, p95 %.3f s, **p99 %.3f s**" % (st["p50"], st["p95"], st["p99"]), goal, r["met"])]
    if name == "module_overhead":
        return [("module overhead (%d pairs)" % r["uri"]["runs"],
                 "event_info %.3f s vs uri %.3f s median (**%.3f**)" % (r["event_info"]["median"], r["uri"]["median"],
                                                                        r["ratio"]), "<= 1.10", r["met"])]
    if name == "fleet_report":
        out = []
        for size, e in r["sizes"].items():
            out.append(("fleet: %s hosts (forks %d)" % (size, r["forks"]),
                        "ping %.1f s; event_info %.1f s (%.2f x); report %.1f s (**%.2f x**)"
                        % (e["ping"]["median"], e["info"]["median"], e["ratio_info"], e["report"]["median"],
                           e["ratio"]), "report <= 1.5 x ping", e["met"]))
        return out
    if name == "control_plane_report":
        cp, ssh = r["control_plane"], r["ssh"]
        return [("fleet report: %d VMs from Resource Graph" % r["vms"],
                 "**%.2f s** (%.2f ms per VM), CPU %.1f s; %d events (%s) in the report"
                 % (cp["median"], cp["per_vm_ms"], cp["cpu"]["median"], r["report"]["events"],
                    ", ".join("%d %s" % (n, status) for status, n in r["report"]["statuses"].items())),
                 "< 10 s", r["met_total"] and r["report"]["complete"]),
                ("fleet report per VM: Resource Graph vs %d hosts over SSH (forks %d)" % (r["ssh_hosts"], r["forks"]),
                 "SSH path %.1f s (%.1f ms per host), CPU %.0f s; **%.0f x** faster per VM (%.0f x less CPU)"
                 % (ssh["median"], ssh["per_vm_ms"], ssh["cpu"]["median"], r["ratio_per_vm"], r["ratio_cpu_per_vm"]),
                 ">= 10 x", r["met_ratio"])]
    if name == "eda_latency":
        out = []
        for source, what, wait in (("imds", "EDA imds source: Reboot injected -> drain_and_approve's first task",
                                    ("poll", "the poll that saw it")),
                                   ("event_grid", "EDA event_grid source: Redeploy appears -> page_on_call posts the page",
                                    ("delivery", "delivered"))):
            if source not in r:
                continue
            e, st = r[source], r[source]["seconds"]
            values = (st["median"], st["min"], st["max"], ", ".join("%.2f" % v for v in st["values"]), wait[1],
                      e["phases"][wait[0]]["median"], e["engine_start_seconds"])
            out.append(("%s (%d in a row, one engine)" % (what, st["n"]),
                        "median **%.2f s**, min %.2f s, max %.2f s (runs %s); %s after %.2f s (median); "
                        "engine start %.1f s" % values, "<= 3 s median", e["met"]))
        return out
    return []


def run_line(results):
    """The first line of results.md: when a run was made, on what, and under which load."""
    m = results["machine"]
    values = (results["date"], m["nproc"], m["cpu"], m["python"], m["ansible"],
              " / ".join("%.2f" % x for x in m["load_average_start"]),
              " / ".join("%.2f" % x for x in m["load_average_end"]),
              results.get("command", "`make bench`"), results["seconds"], " (--quick)" if results["quick"] else "")
    return ("Run on %s: %d cores (%s), Python %s, %s; load average %s at the start, %s at the end; "
            "%s took %.0f s%s." % values)


def markdown(results):
    lines = [run_line(results)]
    kept = results.get("kept", {})
    for line in sorted(set(kept.values())):
        names = ", ".join(n for n in ORDER if kept.get(n) == line)
        lines += ["", "Kept from an earlier run (%s): %s" % (names, line)]
    lines += ["", "| benchmark | measured | goal | met |", "| --- | --- | --- | --- |"]
    for name in ORDER:
        if name in results["benchmarks"]:
            for what, measured, goal, met in rows(name, results["benchmarks"][name]):
                lines.append("| %s | %s | %s | %s |" % (what, measured, goal, "yes" if met else "**no**"))
    return "\n".join(lines) + "\n"


def keep_earlier(results, path, selected):
    """The results of the benchmarks this run leaves out, from the last run that made them (results.json)."""
    try:
        with open(path) as handle:
            earlier = json.load(handle)
    except (OSError, ValueError):
        return
    line = run_line(earlier)
    for name, result in earlier.get("benchmarks", {}).items():
        if name in ORDER and name not in selected:
            results["benchmarks"][name] = result
            results["kept"][name] = earlier.get("kept", {}).get(name, line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", default=",".join(ORDER))
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--md", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args(argv)
    selected = [n for n in ORDER if n in args.only.split(",")]
    started = time.monotonic()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "quick": args.quick, "machine": machine(), "benchmarks": {}, "errors": {}, "kept": {}}
    if selected != ORDER:
        results["command"] = "`python bench/run.py %s`" % " ".join(["--only", ",".join(selected)] + (["--quick"] if args.quick else []))
    quick = ["--quick"] if args.quick else []
    extra = {} if args.quick else {"preempt_budget": ["--events", "30"],
                                   "request_rate": ["--steady", "20", "--storm", "12", "--calm", "8"]}
    extra["fleet_report"] = ["--runs", "1", "--no-before"]
    modules = {"footprint": footprint, "request_rate": request_rate, "detection_latency": detection_latency,
               "preempt_budget": preempt_budget, "busy_watcher": busy_watcher, "boot_cost": boot_cost,
               "module_overhead": module_overhead, "fleet_report": fleet_report,
               "control_plane_report": control_plane_report, "eda_latency": eda_latency}
    vm = None
    background = {}
    if "footprint" in selected and "request_rate" in selected:
        def footprint_thread():
            began = time.monotonic()
            try:
                background["result"] = footprint.main(quick)
                background["result"]["bench_seconds"] = round(time.monotonic() - began, 1)
            except Exception as exc:  # pylint: disable=broad-except
                background["error"] = "%s: %s" % (type(exc).__name__, exc)
        selected.remove("footprint")
        background["thread"] = threading.Thread(target=footprint_thread)
        background["thread"].start()

    def join_background():
        if "thread" in background:
            background.pop("thread").join()
            if "error" in background:
                results["errors"]["footprint"] = background["error"]
            else:
                results["benchmarks"]["footprint"] = background["result"]

    try:
        for name in selected:
            if name != "request_rate":
                join_background()
            sys.stderr.write("== %s\n" % name)
            began = time.monotonic()
            kwargs = {}
            if name in VM_BENCHMARKS:
                if vm is None:
                    vm = benchvm.BenchVm()
                kwargs["vm"] = vm
            elif vm is not None:
                vm.close()
                vm = None
            try:
                result = modules[name].main(quick + extra.get(name, []), **kwargs)
            except Exception as exc:  # pylint: disable=broad-except
                results["errors"][name] = "%s: %s" % (type(exc).__name__, exc)
                sys.stderr.write("%s failed: %s\n" % (name, exc))
                continue
            result["bench_seconds"] = round(time.monotonic() - began, 1)
            results["benchmarks"][name] = result
        join_background()
    finally:
        if vm is not None:
            vm.close()
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    if selected != ORDER:
        keep_earlier(results, args.out, selected)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(args.md, "w") as handle:
        handle.write(table)
    print(table)
    for name, error in results["errors"].items():
        print("%s: FAILED: %s" % (name, error))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
