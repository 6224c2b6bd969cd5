# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: what imds-watcher-boot.service costs a boot, with an empty hold record and with one held timer.

On the bench VM (bench/benchvm.py: the watcher role applied, ansible-pull.timer enabled), N reboots with nothing
held, then N with ansible-pull.timer held by an operator's reason (`imds-hold hold`), released afterwards. For each
boot, from systemd's own timestamps of the unit: its process (ExecMainStart -> ExecMainExit: Python, reading the
record, systemctl stop --no-block) and its whole activation (InactiveExit -> ActiveEnter: the sandbox's setup
too). The unit runs before sysinit.target, so this is time the boot waits. Reported only: no goal is asserted.
Usage: python bench/boot_cost.py [--boots 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchvm  # noqa: E402  pylint: disable=wrong-import-position

UNIT = "imds-watcher-boot.service"
PROPERTIES = ("ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "InactiveExitTimestampMonotonic",
              "ActiveEnterTimestampMonotonic", "ExecMainStatus")


def one_boot(vm):
    """Reboot and read the unit's timestamps: (process ms, activation ms)."""
    vm.box.reboot()
    out = vm.box.ssh(["systemctl", "show", "--property=" + ",".join(PROPERTIES), "--", UNIT]).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("ExecMainStatus") != "0":
        raise RuntimeError("%s failed at boot:\n%s" % (UNIT, vm.box.ssh(["journalctl", "-b", "-u", UNIT], check=False).stdout))

    def span(start, end):
        return (int(props[end]) - int(props[start])) / 1000.0
    return (span("ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic"),
            span("InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic"))


def measure(vm, boots):
    results = {}
    for mode in ("empty", "held"):
        if mode == "held":
            vm.box.ssh(["/usr/local/sbin/imds-hold", "hold", "--reason", "boot cost benchmark", "--reason-id",
                        "bench-boot", "--unit", benchvm.TIMER], timeout=300)
        samples = []
        for index in range(boots):
            samples.append(one_boot(vm))
            sys.stderr.write("boot cost, %s record, boot %d/%d: process %.1f ms, activation %.1f ms\n"
                             % (mode, index + 1, boots, samples[-1][0], samples[-1][1]))
        if mode == "held":
            vm.box.ssh(["/usr/local/sbin/imds-hold", "release", "--reason-id", "bench-boot"], timeout=300)
            vm.wait_idle()
        results[mode] = {"process_ms": benchvm.summarize([s[0] for s in samples]),
                         "activation_ms": benchvm.summarize([s[1] for s in samples]),
                         "samples": [[round(a, 1), round(b, 1)] for a, b in samples]}
    return results


def main(argv=None, vm=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5, help="reboots per record (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 reboots per record")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "boot_cost.json"))
    args = parser.parse_args(argv)
    boots = 3 if args.quick else args.boots
    measured = benchvm.on_vm(vm, lambda box: measure(box, boots))
    result = dict(measured, benchmark="boot_cost", unit=UNIT, boots=boots, met=True,
                  goal="reported only (the boot waits for it: it runs before sysinit.target)")
    benchvm.write_result(args.out, result)
    for mode in ("empty", "held"):
        print("%s, %s record, over %d boots: process median %.1f ms (max %.1f), activation median %.1f ms (max %.1f)"
              % (UNIT, mode, boots, result[mode]["process_ms"]["p50"], result[mode]["process_ms"]["max"],
                 result[mode]["activation_ms"]["p50"], result[mode]["activation_ms"]["max"]))
    return result


if __name__ == "__main__":
    main()
