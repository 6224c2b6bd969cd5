"""The watcher end to end, on real parts: the role applied with ansible-playbook to a booted Debian container
(one leg per release: debian11, debian12, debian13) with systemd, a real ansible-pull.timer (and its service
wrapped by imds-drift-guard) and a real puppet agent as the holds, against the IMDS simulator on the host's loopback (manual clock, short notices).

- Reboot: detected, held (timer stopped, puppet disabled with the event in its message), pre-hooks, approved by
  policy, started by the simulator, a real reboot of the container, and after it the release of exactly the prior
  state, with the whole lifecycle in the journal.
- Freeze (auto-approved), Preempt (held and approved), a cancelled event, a reboot before the event (the timer
  that the boot would bring back stays stopped), a deallocation while an event is Scheduled (it vanished), a watcher
  that cannot learn its VM's name (it holds a peer's event, approves nothing, says so), an event for another VM
  only (nothing held) and an event shared with another VM (held, never approved early).
- kill -9 of the daemon at random points of a lifecycle, repeated: systemd restarts it, nothing is released early,
  nothing stays held after the event.
- watcher_state=absent releases what the watcher holds, leaves an operator's hold alone, and is idempotent.

Nothing is timed: every wait is a bounded poll for a condition. Latencies are printed (pytest -s), never asserted.
WATCHER_E2E_SEED replays the kill points of a run (the seed is printed).
"""

import hashlib
import json
import os
import random
import time
import uuid
from pathlib import Path

import pytest

from harness import polling, roles
from harness.pytest_container import start_container
from harness.pytest_sim import ControlClient, simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ROOT / "tests" / "system" / "watcher"

IMDS_WATCHER = "/usr/local/sbin/imds-watcher"
IMDS_HOLD = "/usr/local/sbin/imds-hold"
SERVICE = "imds-watcher.service"
TIMER = "ansible-pull.timer"
PULL_SERVICE = "ansible-pull.service"
HOOKS_LOG = "/var/lib/watcher-e2e/hooks.log"
DROP_IN = "/etc/systemd/system/ansible-pull.service.d/imds-drift-guard.conf"
WAIT = 90  # seconds: the bound of every wait (a loaded 2-core machine, an ssh round trip per check)

LIFECYCLE = ["detected", "holding", "held", "pre_hooks", "ready", "approving", "approved", "started", "gone",
             "post_hooks", "releasing", "released"]

SCENARIO = {
    "name": "watcher-e2e",
    "description": "The test VM myvm and a peer in its availability set; events are injected by the tests.",
    "clock": "manual",
    "seed": 5,
    "vms": [{"name": "myvm", "availability_set": "e2e-as"}, {"name": "peervm", "availability_set": "e2e-as"}],
}

ROLE_VARS = {
    "watcher_poll_interval": 0.5,
    "watcher_max_backoff": 2.0,
    "watcher_hold_systemd_units": [TIMER],
    "watcher_hold_puppet": True,
    "watcher_hold_systemd_wait_timeout": 60,
    "watcher_ansible_pull_guard": "systemd",
    "watcher_approval_rules": [
        {"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"},
        {"name": "user-reboot", "when": "EventType=='Reboot' && EventSource=='User'"},
        {"name": "spot", "when": "EventType=='Preempt'"},
    ],
    "watcher_hooks": [
        {"name": "10-record", "phase": "pre", "src": str(FILES / "vm" / "pre-hook")},
        {"name": "10-record", "phase": "post", "src": str(FILES / "vm" / "post-hook")},
    ],
    "watcher_unit_read_write_paths": ["/var/lib/watcher-e2e"],
    "watcher_unit_restart_sec": 1,
}


def wait_for(predicate, timeout=WAIT, interval=0.2, what="the condition", vm=None):
    """Poll until truthy; fail naming `what` after `timeout` seconds (never asserts a duration). With `vm`, the
    failure shows the watcher's log and status."""
    return polling.wait_for(predicate, timeout, interval, what, diagnose=(lambda: diagnose(vm)) if vm else None)


def diagnose(vm):
    """The watcher's side of the story, for a failure message."""
    out = vm.ssh("journalctl -u %s -n 60 --no-pager; %s status; %s status" % (SERVICE, IMDS_WATCHER, IMDS_HOLD),
                 check=False, timeout=60)
    return "\n--- on the VM ---\n%s%s" % (out.stdout[-12000:], out.stderr[-2000:])


def new_event_id():
    return str(uuid.uuid4()).upper()


# --- the simulator's control API ---------------------------------------------------------------


class Control(ControlClient):
    """The simulator's control API, with what these cases ask of it."""

    def polls(self, vm="myvm"):
        """How many scheduled-events GETs this VM made (successful ones)."""
        return len([r for r in self.requests(vm=vm)
                    if r["method"] == "GET" and "scheduledevents" in r["path"] and r["status"] == 200])


# --- the VM ------------------------------------------------------------------------------------


def apply_role(vm, tmp_path, **role_vars):
    """ansible-playbook with the role; returns (changed count, output). Fails the test on a failed run."""
    run = roles.apply_role(vm, tmp_path, role_vars)
    print("ansible-playbook (watcher_state=%s): exit %d after %.1f s"
          % (role_vars.get("watcher_state", "present"), run.returncode, run.seconds))
    assert run.returncode == 0, run.output[-20000:]
    return run.changed, run.output


def unit_state(vm, unit):
    out = vm.ssh(["systemctl", "show", "--property=ActiveState,UnitFileState", "--", unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def service_facts(vm):
    out = vm.ssh(["systemctl", "show", "--property=ActiveState,MainPID,NRestarts", "--", SERVICE]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


PUPPET_LOCKFILES = {}  # container name -> its puppet agent's disabled lock file


def puppet_lockfile(vm):
    """Where this VM's puppet agent keeps its disabled lock (it differs between releases); asked once per VM."""
    if vm.name not in PUPPET_LOCKFILES:
        path = vm.ssh(["puppet", "config", "print", "agent_disabled_lockfile"], timeout=120).stdout.strip()
        assert path.startswith("/"), path
        PUPPET_LOCKFILES[vm.name] = path
    return PUPPET_LOCKFILES[vm.name]


def puppet_message(vm):
    found = vm.ssh(["cat", "--", puppet_lockfile(vm)], check=False)
    return json.loads(found.stdout)["disabled_message"] if found.returncode == 0 else None


def hooks_log(vm):
    return vm.ssh("cat %s 2>/dev/null || true" % HOOKS_LOG).stdout.splitlines()


def hold_status(vm):
    return json.loads(vm.ssh([IMDS_HOLD, "status", "--json"]).stdout)


def watcher_status(vm):
    return json.loads(vm.ssh([IMDS_WATCHER, "status", "--json", "--last", "50"]).stdout)


def recent(status, event_id):
    found = [r for r in status["recent"] if r["event_id"].upper() == event_id.upper()]
    return found[-1] if found else None


def transitions(status, event_id):
    record = recent(status, event_id)
    return [step["transition"] for step in record["timeline"]] if record else []


def pending(status, event_id):
    found = [r for r in status["pending"] if r["id"].upper() == event_id.upper()]
    return found[0] if found else None


def reason_ids(vm):
    return sorted(r["id"] for r in hold_status(vm)["reasons"])


def wait_state(vm, event_id, states, what=None):
    """The watcher's pending record for the event, once it is in one of `states`."""

    def reached():
        record = pending(watcher_status(vm), event_id)
        return record if record and record["state"] in states else None
    return wait_for(reached, what=what or "event %s to reach %s" % (event_id, "/".join(states)), vm=vm)


def wait_released(vm, event_id):
    def done():
        status = watcher_status(vm)
        record = recent(status, event_id)
        return status if record and record["state"] == "released" and not pending(status, event_id) else None
    return wait_for(done, what="the watcher to release %s" % event_id, vm=vm)


def wait_polls(control, count):
    """Until the watcher has made `count` more successful polls: time for it to have done anything it would."""
    target = control.polls() + count
    wait_for(lambda: control.polls() >= target, what="%d more polls" % count)


def assert_baseline(vm):
    """What every test starts and ends with: nothing held, the timer as the operator left it, puppet enabled."""
    status = hold_status(vm)
    assert status["reasons"] == [] and status["targets"] == [], status
    assert unit_state(vm, TIMER) == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert puppet_message(vm) is None
    assert service_facts(vm)["ActiveState"] == "active"


def assert_held(vm, event_id):
    """Drift correction held for this event: the timer stopped, puppet disabled naming it, the guard on."""
    reasons = [r for r in hold_status(vm)["reasons"] if r["id"] == event_id]
    assert reasons and reasons[0]["holder"] == "imds-watcher", hold_status(vm)
    assert reasons[0]["targets"] == ["guard", "puppet", "systemd:" + TIMER]
    assert unit_state(vm, TIMER)["ActiveState"] == "inactive"
    assert event_id in (puppet_message(vm) or "")


# --- fixtures ----------------------------------------------------------------------------------


sim, control = simulator_fixtures(SCENARIO, Control)


@pytest.fixture(scope="module")
def vm(sim, tmp_path_factory, debian_release):
    """A container of its own (the session container serves other suites) with the operator's ansible-pull units,
    and the role applied, with the simulator as its IMDS."""
    box = start_container(suite=debian_release.suite, name="imds-se-e2e-%s-%d" % (debian_release.test_id, os.getpid()))
    try:
        for name in ("ansible-pull.service", "ansible-pull.timer"):
            box.put_file("/etc/systemd/system/" + name, (FILES / "vm" / name).read_bytes())
        box.ssh(["mkdir", "-p", "/var/lib/watcher-e2e"])
        box.ssh(["systemctl", "daemon-reload"])
        box.ssh(["systemctl", "enable", "--now", TIMER])
        changed, dummy = apply_role(box, tmp_path_factory.mktemp("role"), watcher_endpoint=sim.endpoint("myvm"),
                                    **ROLE_VARS)
        assert changed > 0
        yield box
    finally:
        box.cleanup()


@pytest.fixture
def clean(vm, control):
    """Each test starts and ends with no live event, nothing pending in the watcher and nothing held."""
    def settle():
        for event in control.live_events():
            if event["status"] in ("pending", "Scheduled"):
                control.cancel(event["id"])
        control.advance(3600)  # whatever was Started runs out and leaves the document

        def idle():
            status = watcher_status(vm)
            return not status["pending"] and not status["holds"]["reasons"]
        wait_for(idle, what="the watcher to finish every event and hold nothing", vm=vm)
        assert_baseline(vm)
    settle()
    yield vm
    settle()


# --- the cases -----------------------------------------------------------------------------------


def test_the_role_wired_ansible_pull_through_the_guard(vm):
    unit = vm.ssh(["systemctl", "show", "--property=ExecStart", "--", PULL_SERVICE]).stdout
    assert "argv[]=/usr/local/sbin/imds-drift-guard -- /usr/bin/ansible-pull --url file:///srv/watcher-e2e-config" in unit
    assert "[Service]\nExecStart=\nExecStart=/usr/local/sbin/imds-drift-guard -- /usr/bin/ansible-pull" \
        in vm.get_file(DROP_IN).decode()
    check = json.loads(vm.ssh([IMDS_WATCHER, "check-config", "--json"]).stdout)
    assert check["problems"] == [] and check["config"]["hold"]["guard"] is True
    assert vm.ssh(["stat", "-c", "%a %U", "/etc/imds-scheduled-events/watcher.json"]).stdout.split() == ["644", "root"]


HAMMER = """
import sys
sys.path.insert(0, "/usr/lib/imds-scheduled-events")  # the library as the role installs it for the watcher
from imds_scheduled_events.imds import ImdsClient
client = ImdsClient(endpoint=sys.argv[1], retries=0, timeout=30, first_timeout=60, warn=sys.exit)
for dummy in range(int(sys.argv[2])):
    client.get_document()
"""


def test_a_root_process_and_the_sandboxed_watcher_share_one_budget(vm, sim, control):
    """While the watcher polls (every 0.5 s), a root process on the VM reads as fast as the client lets it: the
    simulator's record shows at most 5 requests of the VM in any second and no 429. The watcher's unit makes
    /run/imds-scheduled-events writable in its sandbox; without it, or with pacing per process, this fails."""
    vm.put_file("/root/hammer.py", HAMMER)
    since = time.time()  # the simulator logs on this host's clock
    vm.ssh(["python3", "/root/hammer.py", sim.endpoint("myvm"), "20"], timeout=300)
    log = control.requests(vm="myvm", since=since)
    stamps = sorted(entry["wall_time"] for entry in log)
    crowded = [stamps[i:i + 6] for i in range(len(stamps) - 5) if stamps[i + 5] - stamps[i] < 1.0]
    assert not crowded, "more than 5 requests within a second: %r" % crowded[:3]
    assert not [entry for entry in log if entry["status"] == 429], log
    assert len(log) > 20  # the watcher polled meanwhile: it shared the budget, it was not silenced
    pace = "/run/imds-scheduled-events/pace-%s" % hashlib.sha256(sim.endpoint("myvm").encode()).hexdigest()[:16]
    assert vm.ssh(["stat", "-c", "%a %U", pace]).stdout.split() == ["600", "root"]
    journal = vm.ssh(["journalctl", "-u", SERVICE, "--no-pager", "-o", "cat"]).stdout
    assert "paced for this process alone" not in journal


def test_reboot_held_approved_rebooted_for_real_and_released(clean, control):
    vm = clean
    event_id = new_event_id()
    timer_before = unit_state(vm, TIMER)
    boot_before = vm.boot_id()
    vm.ssh(["truncate", "-s", "0", HOOKS_LOG])

    started = time.monotonic()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, started_for=600, source="User",
                   description="Virtual machine is going to be restarted as requested by authorized user.")
    wait_for(lambda: unit_state(vm, TIMER)["ActiveState"] == "inactive" and event_id in (puppet_message(vm) or ""),
             what="the timer to stop and puppet to be disabled for the event", vm=vm)
    print("Reboot %s: timer stopped and puppet disabled %.2f s after the event appeared (incl. ssh round trips)"
          % (event_id, time.monotonic() - started))
    assert_held(vm, event_id)
    assert "Azure scheduled event Reboot %s" % event_id in puppet_message(vm)

    # Guarded ansible-pull runs skip while held (the service succeeds without running ansible-pull).
    vm.ssh(["systemctl", "start", PULL_SERVICE], timeout=120)
    journal = vm.ssh(["journalctl", "-u", PULL_SERVICE, "-n", "30", "--no-pager"]).stdout
    assert "drift correction is held" in journal

    wait_for(lambda: control.event(event_id)["status"] == "Started", what="the approval to start the event", vm=vm)
    assert [(a["vm"], a["result"]) for a in control.approvals(event_id)] == [("myvm", "started")]
    assert "pre Reboot %s Scheduled this_vm" % event_id in hooks_log(vm)
    status = watcher_status(vm)
    assert transitions(status, event_id)[:7] == LIFECYCLE[:7]
    assert "approved by rule user-reboot" in [s["detail"] for s in recent(status, event_id)["timeline"]]
    assert pending(status, event_id)["held"]
    assert_held(vm, event_id)

    # The platform reboots the VM: here for real. The watcher stops on SIGTERM without releasing anything.
    vm.reboot()
    assert vm.boot_id() != boot_before
    status = wait_released(vm, event_id)
    record = recent(status, event_id)
    assert [s["transition"] for s in record["timeline"]] == LIFECYCLE, record
    assert record["outcome"] == "completed"
    assert "Started after the VM rebooted" in [s for s in record["timeline"] if s["transition"] == "gone"][0]["detail"]
    assert "post Reboot %s completed" % event_id in hooks_log(vm)
    assert unit_state(vm, TIMER) == timer_before
    assert puppet_message(vm) is None
    assert not status["holds"]["held"]
    print("Reboot lifecycle from the journal:\n" + "\n".join(
        "  %s %-11s %s" % (s["time"], s["transition"], s["detail"]) for s in record["timeline"]))


def test_short_freeze_is_approved_at_once_and_released_after(clean, control):
    vm = clean
    event_id = new_event_id()
    control.inject(id=event_id, type="Freeze", resources=["myvm"], notice=600, started_for=5, duration=5)
    wait_for(lambda: control.event(event_id)["status"] == "Started", what="the Freeze to be approved", vm=vm)
    assert [a["vm"] for a in control.approvals(event_id)] == ["myvm"]
    wait_state(vm, event_id, ["started"])
    assert_held(vm, event_id)
    control.advance(10)  # the 5-second freeze is over: it leaves the document
    status = wait_released(vm, event_id)
    assert transitions(status, event_id) == LIFECYCLE
    assert "approved by rule short-freeze" in [s["detail"] for s in recent(status, event_id)["timeline"]]
    assert recent(status, event_id)["outcome"] == "completed"
    assert "post Freeze %s completed" % event_id in hooks_log(vm)


def test_preempt_is_held_and_approved_inside_its_notice(clean, control):
    vm = clean
    event_id = new_event_id()
    wall = time.time()
    event = control.inject(id=event_id, type="Preempt", resources=["myvm"], notice=30, started_for=60)
    wait_for(lambda: control.approvals(event_id), what="the Preempt to be approved", vm=vm)
    approval = control.approvals(event_id)[0]
    print("Preempt %s: approved %.2f s (wall) after it appeared, with 30 s of notice"
          % (event_id, approval["wall_time"] - wall))
    assert approval["vm"] == "myvm" and approval["result"] == "started"
    assert approval["sim_time"] < event["not_before"], "approved early, not started by the platform at NotBefore"
    status = watcher_status(vm)
    steps = transitions(status, event_id)
    assert steps.index("held") < steps.index("approved"), steps
    assert "approved by rule spot" in [s["detail"] for s in recent(status, event_id)["timeline"]]
    wait_state(vm, event_id, ["started"])
    # puppet (the slow target) is disabled beside the hooks and the approval, on the hold lane: not before them
    wait_for(lambda: [t for t in hold_status(vm)["targets"] if t["key"] == "puppet" and t["phase"] == "held"
                      and event_id in [r["id"] for r in t["reasons"]]], what="puppet to be held for the Preempt", vm=vm)
    assert_held(vm, event_id)
    control.advance(120)
    status = wait_released(vm, event_id)
    assert transitions(status, event_id) == LIFECYCLE


def test_cancelled_event_is_released_as_cancelled(clean, control):
    vm = clean
    event_id = new_event_id()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, source="Platform")
    wait_state(vm, event_id, ["ready"])  # held, pre-hooks passed; no rule approves a platform Reboot
    assert_held(vm, event_id)
    control.cancel(event_id)
    status = wait_released(vm, event_id)
    record = recent(status, event_id)
    assert record["outcome"] == "cancelled"
    assert [s["transition"] for s in record["timeline"]] == [
        "detected", "holding", "held", "pre_hooks", "ready", "gone", "post_hooks", "releasing", "released"]
    assert control.approvals(event_id) == []
    assert "post Reboot %s cancelled" % event_id in hooks_log(vm)


def test_a_reboot_before_the_event_keeps_drift_correction_held(clean, control):
    """An operator (or a kernel panic) reboots the VM while the event is still Scheduled: the enabled timer would
    come back at boot (imds-watcher-boot.service cancels that, and the watcher's settle would stop it again as it
    starts), and the hold lasts until the event is over."""
    vm = clean
    event_id = new_event_id()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, source="Platform")
    wait_state(vm, event_id, ["ready"])
    assert_held(vm, event_id)
    boot_before = vm.boot_id()
    vm.reboot()
    assert vm.boot_id() != boot_before
    wait_polls(control, 2)  # the watcher is back, and settled the hold record before its first poll
    assert_held(vm, event_id)
    assert pending(watcher_status(vm), event_id)["state"] == "ready", "not over: it is still Scheduled"
    assert control.approvals(event_id) == []
    control.cancel(event_id)
    status = wait_released(vm, event_id)
    assert recent(status, event_id)["outcome"] == "cancelled"
    assert unit_state(vm, TIMER) == {"ActiveState": "active", "UnitFileState": "enabled"}


def test_deallocated_while_scheduled_the_event_vanished(clean, control):
    """The owner stops and deallocates the VM while a Reboot is Scheduled: the platform clears its pending events, and
    after the restart the event is gone, never Started, with a new boot id. Post-hooks are told `vanished`."""
    vm = clean
    event_id = new_event_id()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, source="Platform")
    wait_state(vm, event_id, ["ready"])
    assert_held(vm, event_id)
    control.reboot_vm("myvm", 3600)  # stopped: IMDS no longer answers it (a failed poll teaches nothing)
    control.cancel(event_id)  # what the deallocation does to its pending events
    boot_before = vm.boot_id()
    vm.reboot()
    assert vm.boot_id() != boot_before
    control.advance(3601)  # started again an hour later, past NotBefore
    status = wait_released(vm, event_id)
    record = recent(status, event_id)
    assert record["outcome"] == "vanished", record
    assert "not seen to start" in [s for s in record["timeline"] if s["transition"] == "gone"][0]["detail"]
    assert "post Reboot %s vanished" % event_id in hooks_log(vm)
    assert control.approvals(event_id) == []


def test_without_its_name_the_watcher_holds_every_event_approves_none_and_says_so(clean, control):
    """IMDS without the compute endpoint (Microsoft's mock; images that block it) and no vm_name: the watcher polls,
    holds a peer's event it cannot tell from its own, approves nothing, and says so; once IMDS names the VM it goes
    back to normal, and the peer's event stays held until it is gone."""
    vm = clean
    event_id = new_event_id()
    control.add_fault(kind="status", code=404, path="/metadata/instance", vm="myvm")
    try:
        vm.ssh(["systemctl", "restart", SERVICE])
        wait_for(lambda: [d["reason"] for d in watcher_status(vm)["degraded"]] == ["vm_name_unknown"],
                 what="the watcher to say it does not know its name", vm=vm)
        # a peer's short Freeze: the short-freeze rule matches it, but nobody may approve a peer's event from here
        control.inject(id=event_id, type="Freeze", resources=["peervm"], notice=600, duration=5)
        record = wait_state(vm, event_id, ["ready"])
        assert record["scope"] == "unknown" and record["held"]
        assert_held(vm, event_id)
        wait_polls(control, 4)
        assert control.approvals(event_id) == []
        text = vm.ssh([IMDS_WATCHER, "status"]).stdout
        assert "THE WATCHER IS DEGRADED" in text and "vm_name_unknown since" in text, text
        metrics = vm.ssh(["cat", "/var/lib/prometheus/node-exporter/imds_scheduled_events.prom"]).stdout
        assert 'imds_scheduled_events_degraded{reason="vm_name_unknown"} 1' in metrics
    finally:
        control.clear_faults()
    wait_for(lambda: watcher_status(vm)["degraded"] == [], what="the watcher to learn its name", vm=vm)
    record = pending(watcher_status(vm), event_id)
    assert record["scope"] == "other_vms" and record["held"]  # a peer's after all: held until it is gone
    assert control.approvals(event_id) == []
    control.cancel(event_id)
    assert recent(wait_released(vm, event_id), event_id)["outcome"] == "cancelled"


def test_event_for_another_vm_only_holds_nothing(clean, control):
    vm = clean
    event_id = new_event_id()
    control.inject(id=event_id, type="Reboot", resources=["peervm"], notice=900)
    wait_for(lambda: "ignored" in transitions(watcher_status(vm), event_id), what="the watcher to ignore it", vm=vm)
    wait_polls(control, 4)
    assert reason_ids(vm) == []
    assert unit_state(vm, TIMER)["ActiveState"] == "active" and puppet_message(vm) is None
    assert control.approvals(event_id) == []
    assert not any(event_id in line for line in hooks_log(vm))
    control.cancel(event_id)


def test_event_shared_with_another_vm_is_held_but_never_approved_early(clean, control):
    vm = clean
    event_id = new_event_id()
    # short-freeze matches it, but the rule does not say allow_shared: approving would start peervm's freeze too.
    control.inject(id=event_id, type="Freeze", resources=["myvm", "peervm"], notice=600, duration=5)
    wait_state(vm, event_id, ["ready"])
    wait_polls(control, 4)
    assert pending(watcher_status(vm), event_id)["state"] == "ready"
    assert control.approvals(event_id) == []
    assert_held(vm, event_id)
    assert "pre Freeze %s Scheduled shared" % event_id in hooks_log(vm)
    control.cancel(event_id)
    status = wait_released(vm, event_id)
    assert recent(status, event_id)["outcome"] == "cancelled"


def _kill_daemon(vm, control):
    """kill -9 of the daemon's main process; returns once systemd has started a new one and it has polled twice
    (by then it has loaded its state, settled the hold record and adopted any hold its state lost)."""
    before = service_facts(vm)
    vm.kill(int(before["MainPID"]), "KILL")

    def restarted():
        now = service_facts(vm)
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and int(now["NRestarts"]) > int(before["NRestarts"]))
    wait_for(restarted, what="systemd to restart the killed watcher", vm=vm)
    wait_polls(control, 2)


def _assert_consistent(vm, event_id, held_before):
    """After a restart: status reads, the hold record and the watcher agree, nothing was released early."""
    status = watcher_status(vm)  # exits 0: the state file and the hold record are readable
    watcher_reasons = sorted(r["id"] for r in status["holds"]["reasons"] if r["holder"] == "imds-watcher")
    problems = []
    if not set(watcher_reasons) <= set(r["id"] for r in status["pending"]):
        problems.append("a hold the watcher does not track: %s" % watcher_reasons)
    if "released" in transitions(status, event_id):
        problems.append("released while the event is still in the document")
    if held_before and watcher_reasons != [event_id]:
        problems.append("the hold for %s is gone" % event_id)
    if held_before and unit_state(vm, TIMER)["ActiveState"] != "inactive":
        problems.append("the timer runs again")
    if held_before and event_id not in (puppet_message(vm) or ""):
        problems.append("puppet is no longer disabled for the event")
    assert not problems, "; ".join(problems) + diagnose(vm)


def test_kill_9_at_random_points_of_the_lifecycle(clean, control):
    vm = clean
    seed = int(os.environ.get("WATCHER_E2E_SEED") or time.time())
    rng = random.Random(seed)
    print("kill -9 test: WATCHER_E2E_SEED=%d" % seed)
    for round_number in range(3):
        event_id = new_event_id()
        points = sorted(rng.sample(["appeared", "held", "started", "vanished"], rng.randint(2, 4)),
                        key=["appeared", "held", "started", "vanished"].index)
        delays = dict((point, rng.uniform(0, 1.5)) for point in points)
        print("round %d, event %s: kill -9 at %s" % (round_number, event_id, ", ".join(
            "%s+%.2fs" % (p, delays[p]) for p in points)))
        restarts = int(service_facts(vm)["NRestarts"])

        # A platform Reboot that no rule approves: every step below is the test's to take.
        control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, started_for=60)
        if "appeared" in points:
            time.sleep(delays["appeared"])  # anywhere from before the first poll to mid-hold
            held_before = (pending(watcher_status(vm), event_id) or {}).get("held", False)
            _kill_daemon(vm, control)
            _assert_consistent(vm, event_id, held_before)
        wait_state(vm, event_id, ["ready"])
        assert_held(vm, event_id)
        if "held" in points:
            time.sleep(delays["held"])
            _kill_daemon(vm, control)
            _assert_consistent(vm, event_id, True)
            wait_state(vm, event_id, ["ready"])

        control.start(event_id)  # the platform starts it at NotBefore (no reboot in this test)
        if "started" in points:
            time.sleep(delays["started"])
            _kill_daemon(vm, control)
            _assert_consistent(vm, event_id, True)
        wait_state(vm, event_id, ["started"])
        assert_held(vm, event_id)

        control.advance(120)  # over: it leaves the document; confirmed by 3 polls, post-hooks, release
        if "vanished" in points:
            time.sleep(delays["vanished"])
            _kill_daemon(vm, control)
            status = watcher_status(vm)
            assert set(r["id"] for r in status["holds"]["reasons"]) <= {event_id}
        status = wait_released(vm, event_id)
        steps = transitions(status, event_id)
        assert steps.count("released") == 1 and steps[-1] == "released", steps
        assert steps.index("gone") < steps.index("releasing"), steps
        assert recent(status, event_id)["outcome"] == "completed"
        assert int(service_facts(vm)["NRestarts"]) == restarts + len(points)
        assert_baseline(vm)


def test_absent_releases_the_watchers_holds_keeps_an_operators_and_is_idempotent(vm, control, sim, tmp_path):
    event_id = new_event_id()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, source="Platform")
    wait_state(vm, event_id, ["ready"])
    assert_held(vm, event_id)
    vm.ssh([IMDS_HOLD, "hold", "--reason", "Operator: kernel patching", "--reason-id", "ops", "--holder", "alice",
            "--puppet"], timeout=300)

    changed, dummy = apply_role(vm, tmp_path, watcher_endpoint=sim.endpoint("myvm"), watcher_state="absent",
                                **ROLE_VARS)
    assert changed > 0
    assert vm.ssh(["systemctl", "show", "--property=LoadState", "--value", SERVICE]).stdout.strip() == "not-found"
    assert reason_ids(vm) == ["ops"], "the watcher's hold is released, the operator's is not"
    assert unit_state(vm, TIMER) == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert puppet_message(vm) is not None, "puppet stays disabled: alice's reason still holds it"
    assert [t["key"] for t in hold_status(vm)["targets"]] == ["puppet"]
    assert "imds-drift-guard" not in vm.ssh(["systemctl", "show", "--property=ExecStart", "--", PULL_SERVICE]).stdout
    assert vm.ssh(["test", "-e", "/etc/imds-scheduled-events"], check=False).returncode == 1
    assert vm.ssh(["test", "-e", IMDS_WATCHER], check=False).returncode == 1
    assert vm.ssh(["test", "-x", IMDS_HOLD], check=False).returncode == 0, "kept: it shows and releases alice's hold"

    vm.ssh([IMDS_HOLD, "release", "--reason-id", "ops"], timeout=300)
    assert puppet_message(vm) is None
    changed, dummy = apply_role(vm, tmp_path, watcher_state="absent", **ROLE_VARS)
    assert changed > 0
    for path in ("/usr/lib/imds-scheduled-events", "/var/lib/imds-scheduled-events", IMDS_HOLD,
                 "/usr/local/sbin/imds-drift-guard", DROP_IN, "/etc/systemd/system/imds-watcher.service"):
        assert vm.ssh(["test", "-e", path], check=False).returncode == 1, path
    changed, dummy = apply_role(vm, tmp_path, watcher_state="absent", **ROLE_VARS)
    assert changed == 0, "watcher_state=absent is idempotent"
    control.cancel(event_id)
