# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs on the benchmark VM: waits until drift correction is held (or released) and prints when, as the VM sees it.

  vm_probe.py held SECONDS      ansible-pull.timer inactive AND the guard target held in the hold record
                                (what imds-drift-guard checks: a reason recorded, phase holding or held)
  vm_probe.py released SECONDS  nothing in the hold record and ansible-pull.timer active again
  vm_probe.py file PATH SECONDS  until PATH exists: {"at", "content"} (a hook's or a command's time stamp)
  vm_probe.py age PATH STOP SECONDS  until STOP exists: how old PATH (the metrics file) got, read every 20 ms:
                                {"max_age", "max_at", "samples"}

Prints "ready" once it is watching, then one JSON line {"at": <wall time or null>, "guard_at", "timer_at"}.
The record is read every 5 ms (a stat, and a parse when it changed); systemctl is asked only when the record
already says held, so the probe costs the watcher next to nothing. Host and container share one clock.
"""

import json
import os
import subprocess
import sys
import time

RECORD = "/var/lib/imds-scheduled-events/holds.json"
TIMER = "ansible-pull.timer"
SLICE = 0.005


def record():
    try:
        with open(RECORD, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def guard_held(doc):
    rec = (doc or {}).get("targets", {}).get("guard")
    return bool(rec and rec.get("reasons") and rec.get("phase") in ("holding", "held"))


def timer_state():
    out = subprocess.run(["systemctl", "show", "--property=ActiveState", "--value", "--", TIMER],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, check=False)
    return out.stdout.strip()


def wait_file(path, timeout):
    deadline = time.monotonic() + timeout
    print("ready", flush=True)
    while time.monotonic() < deadline:
        try:
            with open(path, "r", encoding="utf-8") as handle:
                content = handle.read().strip()
        except OSError:
            content = ""
        if content:
            print(json.dumps({"at": time.time(), "content": content}), flush=True)
            return 0
        time.sleep(SLICE)
    print(json.dumps({"at": None}), flush=True)
    return 1


def watch_age(path, stop, timeout):
    """The age of a file rewritten regularly, from now until `stop` appears; the worst seen."""
    deadline = time.monotonic() + timeout
    print("ready", flush=True)
    worst, worst_at, samples = 0.0, None, 0
    while time.monotonic() < deadline and not os.path.exists(stop):
        now = time.time()
        try:
            age = now - os.stat(path).st_mtime
        except OSError:
            age = None
        if age is not None:
            samples += 1
            if age > worst:
                worst, worst_at = age, now
        time.sleep(0.02)
    print(json.dumps({"max_age": worst, "max_at": worst_at, "samples": samples}), flush=True)
    return 0


def main(argv):
    if argv[0] == "file":
        return wait_file(argv[1], float(argv[2]))
    if argv[0] == "age":
        return watch_age(argv[1], argv[2], float(argv[3]))
    mode, timeout = argv[0], float(argv[1])
    deadline = time.monotonic() + timeout
    print("ready", flush=True)
    last = None
    doc = None
    guard_at = None
    while time.monotonic() < deadline:
        now = time.time()
        try:
            stamp = os.stat(RECORD).st_mtime_ns
        except OSError:
            stamp = None
        if stamp != last:
            last = stamp
            doc = record() if stamp is not None else None
        if mode == "held":
            if guard_held(doc):
                guard_at = guard_at or now
                if timer_state() == "inactive":
                    print(json.dumps({"at": time.time(), "guard_at": guard_at}), flush=True)
                    return 0
        elif not (doc or {}).get("targets") and timer_state() == "active":
            print(json.dumps({"at": time.time()}), flush=True)
            return 0
        time.sleep(SLICE if mode == "held" else 0.1)
    print(json.dumps({"at": None}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
