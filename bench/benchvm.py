# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the watcher benchmarks that need a real VM: one simulator on the host's loopback and one booted
systemd container (tests/harness) with the operator's ansible-pull.timer, puppet-agent and the watcher role
applied, pointed at the simulator. bench/run.py shares one of these between detection_latency and
preempt_budget; each benchmark also starts its own when run alone.

On the VM, bench/vm_probe.py timestamps (host and container share one clock) the moment the hold is in place:
ansible-pull.timer inactive (`systemctl show`) and the guard target held in the hold record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FILES = os.path.join(ROOT, "tests", "system", "watcher")
for path in (os.path.join(ROOT, "simulator"), os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

from harness.ansible_env import ansible_env as harness_ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from imds_simulator import ControlClient as Control, Simulator  # noqa: E402  pylint: disable=wrong-import-position

TIMER = "ansible-pull.timer"
PROBE = "/usr/local/lib/imds-bench-probe.py"
NAME = "imds-se-bench"

SCENARIO = {
    "name": "bench-watcher",
    "clock": "manual",
    "seed": 7,
    "rate_limit": 0,  # the bench's own control traffic never crowds the VM's budget; the watcher paces itself
    "vms": [{"name": "myvm", "availability_set": "bench-as"}],
}

# The role's defaults (1 s polling), plus what the bench needs: the operator's ansible-pull.timer, puppet and the
# guard held; one rule approving Preempts; no hooks. confirm_polls 1 only shortens each cycle's release.
ROLE_VARS = {
    "watcher_hold_systemd_units": [TIMER],
    "watcher_hold_puppet": True,
    "watcher_hold_systemd_wait_timeout": 60,
    "watcher_ansible_pull_guard": "systemd",
    "watcher_confirm_polls": 1,
    "watcher_vm_name": "myvm",
    "watcher_approval_rules": [{"name": "spot", "when": "EventType=='Preempt'"}],
}


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    values = sorted(values)
    rank = max(1, int(-(-q * len(values) // 100)))
    return values[min(rank, len(values)) - 1]


def summarize(values):
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values)}


def approve_preempt(vm):
    """Inject a Preempt for the VM (30 s of notice) and wait for its approval; returns the wall seconds in between
    (the simulator's approvals log)."""
    event_id = str(uuid.uuid4()).upper()
    appeared = time.time()
    vm.control.inject(id=event_id, type="Preempt", resources=["myvm"], notice=30, started_for=5)
    deadline = time.monotonic() + 60
    approvals = []
    while not approvals:
        if time.monotonic() > deadline:
            raise RuntimeError("Preempt %s not approved within 60 s\n%s" % (event_id, vm.diagnose()))
        time.sleep(0.05)
        approvals = vm.control.approvals(event_id)
    return approvals[0]["wall_time"] - appeared


def event_benchmark_args(argv, doc, name):
    """The options every per-event benchmark takes; returns (args, number of events)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 events")
    parser.add_argument("--out", default=os.path.join(HERE, "results", name + ".json"))
    args = parser.parse_args(argv)
    return args, 10 if args.quick else args.events


def on_vm(vm, work):
    """work(vm) on the VM bench/run.py shares, or on one of its own, removed afterwards."""
    own = vm is None
    vm = vm or BenchVm()
    try:
        return work(vm)
    finally:
        if own:
            vm.close()


def write_result(path, result):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)


def ansible_env():
    return harness_ansible_env(ANSIBLE_PIPELINING="True")


class BenchVm(object):
    """The simulator and the container, started once; close() removes both."""

    def __init__(self, name=NAME, role_vars=None):
        from harness.container import SystemdContainer  # pylint: disable=import-outside-toplevel
        self.sim = Simulator.from_scenario(SCENARIO, clock="manual", port=0, control_port=0)
        self.sim.start()
        self.control = Control(self.sim.control_url)
        self.box = SystemdContainer(name=name)
        self.role_vars = dict(ROLE_VARS, **(role_vars or {}))
        self.role_seconds = None
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self):
        started = time.monotonic()
        self.box.start()
        sys.stderr.write("benchvm: container up in %.1f s\n" % (time.monotonic() - started))
        for name in ("ansible-pull.service", TIMER):
            with open(os.path.join(FILES, "vm", name), "rb") as handle:
                self.box.put_file("/etc/systemd/system/" + name, handle.read())
        with open(os.path.join(HERE, "vm_probe.py"), "rb") as handle:
            self.box.put_file(PROBE, handle.read(), mode=0o644)
        self.box.ssh("systemctl daemon-reload && systemctl enable --now %s" % TIMER)
        with tempfile.TemporaryDirectory() as tmp:
            inventory = os.path.join(tmp, "inventory.json")
            with open(inventory, "w") as handle:
                json.dump({"all": {"hosts": {"myvm": self.box.ansible_inventory_vars()}}}, handle)
            extra = os.path.join(tmp, "vars.json")
            with open(extra, "w") as handle:
                json.dump(dict(self.role_vars, watcher_endpoint=self.sim.endpoint("myvm")), handle)
            playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
            started = time.monotonic()
            proc = subprocess.run([playbook, "-i", inventory, os.path.join(FILES, "apply-role.yml"), "-e", "@" + extra],
                                  env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=900, check=False)
            self.role_seconds = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError("applying the watcher role failed:\n" + proc.stdout[-6000:])
        sys.stderr.write("benchvm: role applied in %.1f s\n" % self.role_seconds)
        self.wait_idle()

    def probe(self, mode, timeout):
        """Run the probe on the VM until the hold is in place (mode held) or gone (mode released); returns
        the VM-side wall time it saw that, or None on timeout."""
        out = self.box.ssh(["/usr/bin/python3", PROBE, mode, str(timeout)], timeout=timeout + 60).stdout
        data = json.loads(out.strip().splitlines()[-1])
        return data.get("at")

    def start_probe(self, mode, *args):
        """The probe in the background (over ssh): returns the Popen; its last stdout line is the JSON.
        `args`: the mode's arguments (vm_probe.py), the timeout last."""
        argv = self.box.ssh_argv() + ["/usr/bin/python3", PROBE, mode] + [str(arg) for arg in args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def wait_idle(self, timeout=120):
        """Nothing held and the timer active again (the state every cycle starts from)."""
        if self.probe("released", timeout) is None:
            raise RuntimeError("the VM did not return to idle:\n" + self.diagnose())

    def diagnose(self):
        out = self.box.ssh("journalctl -u imds-watcher.service -n 40 --no-pager; imds-hold status", check=False,
                           timeout=60)
        return out.stdout[-6000:] + out.stderr[-2000:]

    def watcher_journal(self):
        out = self.box.ssh("cat /var/lib/imds-scheduled-events/journal.jsonl", check=False, timeout=60).stdout
        entries = []
        for line in out.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
        return entries

    def watcher_memory(self):
        """The VM's watcher (Debian's python3 and python3-requests, no test guard): VmHWM and VmRSS in MB."""
        pid = self.box.main_pid("imds-watcher.service")
        out = self.box.ssh(["grep", "-E", "^(VmHWM|VmRSS):", "/proc/%d/status" % pid], check=False).stdout
        return dict((line.split(":")[0], int(line.split()[1]) / 1024.0) for line in out.splitlines() if ":" in line)

    def close(self):
        try:
            self.box.cleanup()
        finally:
            self.sim.stop()


_SHARED = {}


def shared(name=NAME):
    """One BenchVm per process (bench/run.py runs several benchmarks on it); closed at exit."""
    if name not in _SHARED:
        import atexit  # pylint: disable=import-outside-toplevel
        _SHARED[name] = BenchVm(name)
        atexit.register(_SHARED[name].close)
    return _SHARED[name]
