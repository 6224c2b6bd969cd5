# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The shipped rulebooks (extensions/eda/rulebooks/) with the real ansible-rulebook, against the simulator.

- vm_drain_and_approve, by its FQCN, with the imds source polling the simulator's IMDS for myvm: a Reboot of myvm
  runs drain_and_approve (the site's drain tasks, then event_approve: the simulator records the approval), the event
  starts, ends, and restore_after_maintenance runs once it is gone; a peer's event and a Freeze say nothing.
- fleet_page_on_redeploy and fleet_post_maintenance_check with the event_grid source, fed by the simulator's Event
  Grid face over https on loopback (the validation handshake, batches, every batch delivered twice): one page for the
  production Redeploy only; the post-maintenance check on the VMs of the event that Completed, not of the cancelled
  one; a wrong token refused.
The triggered playbooks run for real on localhost (aliases named like the VMs). Timings are printed (the closing note
of the issue quotes them), never asserted: each wait only bounds a hang.
"""

from __future__ import annotations

import json
import time

import pytest

from harness.ansible_env import ROOT
from harness.pytest_sim import Simulator, ControlClient
from harness.rulebook import Rulebook

REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"
PEER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
FREEZE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"

LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}

# Each run appends one JSON line: when (epoch seconds) and what triggered it. Nothing of the event reaches a shell.
RECORD_TASKS = """\
---
- name: Record that this ran, and for which event
  ansible.builtin.lineinfile:
    path: {path}
    create: true
    mode: "0600"
    line: "{{{{ {{'time': lookup('ansible.builtin.pipe', 'date +%s.%N') | float, 'host': inventory_hostname,
             'change': ansible_eda.event.change, 'outcome': ansible_eda.event.outcome,
             'event_id': ansible_eda.event.event_id}} | to_json }}}}"
"""


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def record_tasks(tmp_path, name):
    """A tasks file that records its runs in <name>.jsonl; returns (tasks file, records file)."""
    out = tmp_path / ("%s.jsonl" % name)
    return write(tmp_path / ("%s.yml" % name), RECORD_TASKS.format(path=out)), out


def inventory(path, groups):
    path.write_text(json.dumps({name: {"hosts": hosts} for name, hosts in groups.items()}), encoding="utf-8")
    return path


# --- on the VM: the imds source ------------------------------------------------------------------------------------

@pytest.fixture
def vm_sim():
    scenario = {"name": "eda-vm", "time_scale": 1, "vms": [{"name": "myvm", "availability_set": "as1"},
                                                           {"name": "myvm-peer", "availability_set": "as1"}]}
    with Simulator.from_scenario(scenario, port=0, control_port=0) as simulator:
        yield simulator


def test_vm_drain_and_approve(vm_sim, tmp_path):
    control = ControlClient(vm_sim.control_url)
    drain_tasks, drained = record_tasks(tmp_path, "drained")
    restore_tasks, restored = record_tasks(tmp_path, "restored")
    hosts = inventory(tmp_path / "inventory.json", {"web": {"localhost": dict(
        LOCAL, drain_tasks=str(drain_tasks), restore_tasks=str(restore_tasks))}})
    state_file = tmp_path / "state" / "eda-imds.json"
    state_file.parent.mkdir(mode=0o700)

    with Rulebook("imds.scheduled_events.vm_drain_and_approve", hosts, tmp_path,
                  env={"IMDS_ENDPOINT": vm_sim.endpoint("myvm")},
                  extra_vars={"imds_state_file": str(state_file)}) as engine:
        engine.wait_for_log("watching scheduled events of myvm", what="the imds source's first poll")
        # Not for this rulebook: an event of the peer only, and a Freeze (event_types are Reboot and Redeploy).
        control.inject(id=PEER, type="Reboot", resources=["myvm-peer"], notice=900)
        control.inject(id=FREEZE, type="Freeze", resources=["myvm"], notice=900)
        appeared_at = time.time()
        control.inject(id=REBOOT, type="Reboot", resources=["myvm"], notice=900, started_for=5)

        drain = engine.wait_for(lambda: records(drained), what="drain_and_approve's drain tasks")[0]
        assert (drain["change"], drain["event_id"], drain["host"]) == ("appeared", REBOOT, "localhost")
        approvals = engine.wait_for(lambda: control.approvals(event_id=REBOOT), what="the approval to reach IMDS")
        assert [a["vm"] for a in approvals] == ["myvm"], approvals
        restore = engine.wait_for(lambda: records(restored), what="restore_after_maintenance")[0]
        assert (restore["change"], restore["outcome"], restore["event_id"]) == ("gone", "completed", REBOOT)
        engine.wait_for_log(lambda log: log.count("PLAY RECAP") >= 2, what="both playbooks' recaps")
        code = engine.stop()

    log = engine.log()
    assert code == 130, engine.describe()
    assert [r["event_id"] for r in records(drained)] == [REBOOT]  # one drain: nothing for the peer or the Freeze
    assert [r["event_id"] for r in records(restored)] == [REBOOT]
    assert log.count("failed=0") == 2 and "Traceback" not in log, engine.describe()
    assert control.approvals(event_id=PEER) == [] and control.approvals(event_id=FREEZE) == []
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    print("\nimds source: event injected -> drain_and_approve's first task %.2f s; restore %.2f s after the drain"
          % (drain["time"] - appeared_at, restore["time"] - drain["time"]))
