"""The fleet from Azure's control plane, end to end on real parts.

One simulator holds a scale set of three instances, a VM with the watcher installed by the role in a booted
Debian 12 container (its IMDS is the simulator's), and an availability set; all opted in to the control plane.
Real ansible-playbook runs the control-plane modules and the fleet_report role with the real azure-identity
managed-identity credential (IDENTITY_ENDPOINT / IDENTITY_HEADER pointing at the simulator's token endpoint):

- control_plane_event_approve acknowledges the VM's Redeploy from outside; the VM's own watcher sees it Started
  (its journal says so) without having approved anything itself;
- the fleet report, read from Resource Graph only, shows the scale-set event with its two instances, the
  acknowledged event Started, a cancelled event Canceled and one that ran its course Completed, and announces the
  last two as finished; a second run announces nothing.

Nothing is timed: every wait is a bounded poll.
"""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from harness import polling, roles
from harness.ansible_env import ansible_env, ansible_program
from harness.pytest_container import start_container
from harness.pytest_sim import simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
SUB = "8b0d6c1e-3f2a-4c5b-9d7e-1a2b3c4d5e6f"
WATCHED = "cp-watched"
IMDS_WATCHER = "/usr/local/sbin/imds-watcher"
WAIT = 120

SCENARIO = {
    "name": "fleet-control-plane",
    "description": "A scale set, a VM with a real watcher, an availability set; all opted in to the control plane.",
    "clock": "manual",
    "seed": 14,
    "subscription_id": SUB,
    "resource_group": "rg-fleet",
    "vms": [{"name": WATCHED}, {"name": "db1", "availability_set": "dbas"}, {"name": "db2", "availability_set": "dbas"}],
    "scale_sets": [{"name": "web", "instances": 3}],
    "control_plane": {"opted_in": "all", "retention": 3600},
}
sim, control = simulator_fixtures(SCENARIO, arm_port=0)

REPORT_PLAYBOOK = """\
---
- name: The fleet report from Resource Graph only
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  roles:
    - role: imds.scheduled_events.fleet_report
"""

APPROVE_PLAYBOOK = """\
---
- name: Approve the watched VM's maintenance from the control plane
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Acknowledge what lists only that VM
      imds.scheduled_events.control_plane_event_approve:
        subscriptions: ["{{ sub }}"]
        vm_names: ["{{ vm }}"]
        management_endpoint: "{{ arm }}"
        auth_source: msi
      register: approval

    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ approval | to_nice_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
"""


def wait_for(predicate, what, vm=None):
    def diagnose():
        out = vm.ssh("journalctl -u imds-watcher -n 40 --no-pager; %s status" % IMDS_WATCHER, check=False, timeout=60)
        return "\n--- on the VM ---\n" + out.stdout[-8000:]
    return polling.wait_for(predicate, WAIT, what=what, diagnose=diagnose if vm else None)


def playbook(tmp_path, text, extra, sim_):
    path = tmp_path / ("playbook-%s.yml" % uuid.uuid4().hex[:8])
    path.write_text(text)
    extra_file = tmp_path / ("extra-%s.json" % uuid.uuid4().hex[:8])
    extra_file.write_text(json.dumps(extra))
    env = ansible_env(IDENTITY_ENDPOINT=sim_.arm_url + "/msi/token", IDENTITY_HEADER=sim_.identity_header)
    proc = subprocess.run([ansible_program(), "-i", "localhost,", str(path), "-e", "@%s" % extra_file],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-20000:]
    return proc.stdout


def watcher_record(vm, event_id):
    status = json.loads(vm.ssh([IMDS_WATCHER, "status", "--json", "--last", "20"]).stdout)
    found = [r for r in status["pending"] if r["id"].upper() == event_id]
    found += [r for r in status["recent"] if r["event_id"].upper() == event_id]
    return status, found


@pytest.fixture(scope="module")
def watched_vm(sim, tmp_path_factory):
    """A Debian 12 container running the watcher role's daemon against the simulator, with no approval rule."""
    box = start_container(suite="bookworm", name="imds-se-cp-%d" % os.getpid())
    try:
        run = roles.apply_role(box, tmp_path_factory.mktemp("role"), {
            "watcher_endpoint": sim.endpoint(WATCHED), "watcher_poll_interval": 0.5, "watcher_max_backoff": 2.0,
            "watcher_approval_rules": []}, host=WATCHED)
        assert run.returncode == 0, run.output[-20000:]
        yield box
    finally:
        box.cleanup()


def test_acknowledged_from_the_control_plane_started_on_the_vm_and_reported(sim, control, watched_vm, tmp_path):
    vm = watched_vm
    redeploy, scale_set_reboot, cancelled, completed = (str(uuid.uuid4()).upper() for dummy in range(4))
    control.inject(id=redeploy, type="Redeploy", resources=[WATCHED], notice=900, started_for=600)
    control.inject(id=scale_set_reboot, type="Reboot", resources=["web_0", "web_1"], notice=900, started_for=600)
    control.inject(id=cancelled, type="Freeze", resources=["db1", "db2"], notice=900, started_for=60, duration=5)
    control.inject(id=completed, type="Freeze", resources=["web_2"], notice=60, started_for=30, duration=5)

    wait_for(lambda: any(r.get("state") not in (None, "detected") for r in watcher_record(vm, redeploy)[1]),
             "the watcher to see the Redeploy", vm=vm)
    assert control.approvals(redeploy) == [], "the watcher has no rule that approves it"

    result_file = tmp_path / "approval.json"
    playbook(tmp_path, APPROVE_PLAYBOOK, {"sub": SUB, "vm": WATCHED, "arm": sim.arm_url,
                                          "result_file": str(result_file)}, sim)
    approval = json.loads(result_file.read_text())
    assert [a["EventId"] for a in approval["approved"]] == [redeploy]
    assert approval["approved"][0]["owner"].endswith("/virtualMachines/%s" % WATCHED)
    assert len(control.acknowledgements(redeploy)) == 1

    def started_on_the_vm():
        dummy, records = watcher_record(vm, redeploy)
        return any("started" in [s["transition"] for s in r.get("timeline", [])] or r.get("state") == "started"
                   for r in records)
    wait_for(started_on_the_vm, "the VM's watcher to see the acknowledged event Started", vm=vm)

    control.cancel(cancelled)
    control.advance(120)  # the short Freeze starts at its NotBefore and runs its course: Completed

    report_dir = tmp_path / "report"
    role_vars = {"fleet_report_sources": ["control_plane"], "fleet_report_dest_dir": str(report_dir),
                 "fleet_report_control_plane": {"subscriptions": [SUB], "management_endpoint": sim.arm_url,
                                                "auth_source": "msi"}}
    first = playbook(tmp_path, REPORT_PLAYBOOK, role_vars, sim)
    report = json.loads((report_dir / "fleet-report.json").read_text())
    events = dict((e["event_id"].upper(), e) for e in report["events"])
    assert events[scale_set_reboot]["resources"] == ["web_0", "web_1"]
    assert events[scale_set_reboot]["owner"]["kind"] == "virtualMachineScaleSets"
    assert events[redeploy]["status"] == "Started" and events[redeploy]["sources"] == ["resource_graph"]
    assert (events[cancelled]["status"], events[cancelled]["finished"]) == ("Canceled", True)
    assert (events[completed]["status"], events[completed]["finished"]) == ("Completed", True)
    assert report["summary"]["events_finished"] == 2 and report["summary"]["sources"] == ["resource_graph"]
    html = (report_dir / "fleet-report.html").read_text()
    assert "Canceled" in html and "Completed" in html and "via resource_graph" in html
    assert "'finished_events': 2" in first

    second = playbook(tmp_path, REPORT_PLAYBOOK, role_vars, sim)
    assert "changes: none" in second, second[-4000:]
