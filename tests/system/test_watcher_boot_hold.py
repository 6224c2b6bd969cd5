"""The boot-order window: between a boot and the watcher's start, a held drift-correction timer must not fire while
the event that holds it is still pending. On a booted Debian container per release (debian11, debian12, debian13)
with the watcher role applied from the host's controller and the IMDS simulator on the host's loopback:

- an enabled timer that is not wrapped by imds-drift-guard (OnBootSec=1s, OnActiveSec=1s, Persistent=true) records
  every run with the boot id; the watcher holds it for a pending Reboot;
- the container reboots with the watcher held back by a drop-in until the test lets it start, so the window stays
  open as long as the test looks: the timer never ran in that boot (imds-watcher-boot.service cancelled its start);
- the watcher starts, keeps it held, and once the event is cancelled releases it, and the timer runs again;
- the next boot, with nothing held, runs the timer as usual;
- no boot has an ordering cycle, and `systemd-analyze verify` accepts the unit.

Nothing is timed: each wait is a bounded poll for a condition. What the boot unit costs is printed (pytest -s): its
run on a boot with a held record and on one with an empty record, never asserted.
"""

import json
import os
import uuid

import pytest

from harness import polling, roles
from harness.pytest_container import start_container
from harness.pytest_sim import simulator_fixtures

BOOT_UNIT = "imds-watcher-boot.service"
SERVICE = "imds-watcher.service"
IMDS_HOLD = "/usr/local/sbin/imds-hold"
TIMER = "drift.timer"
RUNS = "/var/lib/boot-hold-test/runs"
GO = "/run/boot-hold-test/go"
DELAY_DROP_IN = "/etc/systemd/system/%s.d/boot-hold-test.conf" % SERVICE
WAIT = 120  # seconds: the bound of every wait (a loaded 2-core machine, an ssh round trip per check)

# OnBootSec= counts from the container's start, and systemd skips it when the timer's stamp says that it fired just
# before the reboot; OnActiveSec= fires 1 s after every start of the timer: at boot, and when the release starts it.
DRIFT_TIMER = """[Unit]
Description=Drift correction that starts with the boot (not wrapped by imds-drift-guard)

[Timer]
OnBootSec=1s
OnActiveSec=1s
OnCalendar=hourly
Persistent=true

[Install]
WantedBy=timers.target
"""
DRIFT_SERVICE = """[Unit]
Description=A drift-correction run: records the boot it ran in

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> %s'
""" % RUNS
# The window between the boot and the watcher, held open until the test has looked: the watcher's start waits for a
# file in /run (gone at every boot). Outside the sandbox (+), like an operator's drop-in would be.
DELAY = """[Service]
ExecStartPre=+/bin/sh -c 'until [ -e %s ]; do sleep 0.1; done'
TimeoutStartSec=infinity
""" % GO

SCENARIO = {"name": "boot-hold", "clock": "manual", "seed": 11, "vms": [{"name": "myvm"}]}
ROLE_VARS = {
    "watcher_vm_name": "myvm",
    "watcher_poll_interval": 0.5,
    "watcher_max_backoff": 2.0,
    "watcher_hold_systemd_units": [TIMER],
    "watcher_hold_systemd_wait_timeout": 60,
    "watcher_unit_restart_sec": 1,
}

sim, control = simulator_fixtures(SCENARIO)


def wait_for(predicate, what, vm):
    return polling.wait_for(predicate, WAIT, 0.2, what, diagnose=lambda: diagnose(vm))


def diagnose(vm):
    out = vm.ssh("systemctl list-jobs --no-pager; journalctl -b -u %s -u %s -u %s -u drift.service -n 80 --no-pager; "
                 "%s status; cat %s" % (BOOT_UNIT, SERVICE, TIMER, IMDS_HOLD, RUNS), check=False, timeout=60)
    return "\n--- on the VM ---\n%s%s" % (out.stdout[-12000:], out.stderr[-2000:])


def show(vm, unit, *properties):
    out = vm.ssh(["systemctl", "show", "--property=" + ",".join(properties), "--", unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def runs(vm):
    """The boot ids the drift-correction service ran in, one per run."""
    return vm.ssh("cat %s 2>/dev/null || true" % RUNS).stdout.split()


def ran_in(vm, boot):
    return boot in runs(vm)


def timer_settled(vm):
    """The timer cannot fire any more without being started: inactive, and no job of it or its service queued."""
    jobs = vm.ssh(["systemctl", "list-jobs", "--no-legend", "--no-pager"]).stdout
    return show(vm, TIMER, "ActiveState")["ActiveState"] == "inactive" and TIMER not in jobs \
        and "drift.service" not in jobs


def reasons(vm):
    return sorted(r["id"] for r in json.loads(vm.ssh([IMDS_HOLD, "status", "--json"]).stdout)["reasons"])


def boot_unit_cost(vm):
    """Milliseconds from the start of the boot unit's process to its exit, in this boot."""
    props = show(vm, BOOT_UNIT, "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic")
    return (int(props["ExecMainExitTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])) / 1000.0


def assert_no_ordering_cycle(vm):
    journal = vm.ssh("journalctl -b --no-pager | grep -i 'ordering cycle' || true").stdout
    assert journal == "", journal
    verify = vm.ssh(["systemd-analyze", "verify", BOOT_UNIT], check=False)
    assert verify.returncode == 0 and "cycle" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


@pytest.fixture(scope="module")
def vm(sim, tmp_path_factory, debian_release):
    """A container of its own with the drift-correction timer enabled and the role applied."""
    box = start_container(suite=debian_release.suite, name="imds-se-boot-%s-%d" % (debian_release.test_id, os.getpid()))
    try:
        box.ssh(["mkdir", "-p", os.path.dirname(RUNS)])
        box.put_file("/etc/systemd/system/" + TIMER, DRIFT_TIMER.encode())
        box.put_file("/etc/systemd/system/drift.service", DRIFT_SERVICE.encode())
        box.ssh(["systemctl", "daemon-reload"])
        box.ssh(["systemctl", "enable", "--now", TIMER])
        run = roles.apply_role(box, tmp_path_factory.mktemp("role"), dict(ROLE_VARS, watcher_endpoint=sim.endpoint("myvm")))
        assert run.returncode == 0, run.output[-20000:]
        yield box
    finally:
        box.cleanup()


def test_a_held_timer_does_not_fire_between_the_boot_and_the_watcher(vm, control):
    boot = vm.boot_id()
    wait_for(lambda: ran_in(vm, boot), "the timer to run once before the event", vm)

    event_id = str(uuid.uuid4()).upper()
    control.inject(id=event_id, type="Reboot", resources=["myvm"], notice=900, source="Platform")
    wait_for(lambda: reasons(vm) == [event_id] and show(vm, TIMER, "ActiveState")["ActiveState"] == "inactive",
             "the watcher to hold the timer for the event", vm)

    vm.ssh(["mkdir", "-p", os.path.dirname(DELAY_DROP_IN)])
    vm.put_file(DELAY_DROP_IN, DELAY.encode())
    vm.ssh(["systemctl", "daemon-reload"])
    vm.reboot(until_running=False)  # the watcher is held back: the boot does not finish until the test lets it
    boot = vm.boot_id()

    wait_for(lambda: ran_in(vm, boot) or timer_settled(vm), "the boot to start or settle the held timer", vm)
    assert not ran_in(vm, boot), "the held timer fired between the boot and the watcher, with the event pending"
    assert show(vm, SERVICE, "ActiveState")["ActiveState"] == "activating", "the watcher was not held back"
    assert show(vm, BOOT_UNIT, "UnitFileState")["UnitFileState"] == "enabled"
    told = vm.ssh(["journalctl", "-b", "-u", BOOT_UNIT, "-o", "cat", "--no-pager"]).stdout
    assert "systemd:%s (held by %s): stop %s (its start at boot is cancelled)" % (TIMER, event_id, TIMER) in told, told
    print("%s on a boot with %s held: %.1f ms" % (BOOT_UNIT, TIMER, boot_unit_cost(vm)))

    vm.ssh(["mkdir", "-p", os.path.dirname(GO)])
    vm.ssh(["touch", GO])
    wait_for(lambda: show(vm, SERVICE, "ActiveState")["ActiveState"] == "active", "the watcher to start", vm)
    vm.wait_running()
    assert_no_ordering_cycle(vm)
    assert reasons(vm) == [event_id] and not ran_in(vm, boot), "the watcher keeps it held: the event is pending"

    control.cancel(event_id)
    wait_for(lambda: reasons(vm) == [], "the watcher to release the timer once the event is gone", vm)
    wait_for(lambda: ran_in(vm, boot), "the released timer to run again", vm)
    assert show(vm, TIMER, "ActiveState", "UnitFileState") == {"ActiveState": "active", "UnitFileState": "enabled"}

    vm.ssh(["rm", "-f", DELAY_DROP_IN])
    vm.ssh(["systemctl", "daemon-reload"])
    vm.reboot()
    boot = vm.boot_id()
    wait_for(lambda: ran_in(vm, boot), "the timer to run in a boot with nothing held", vm)
    told = vm.ssh(["journalctl", "-b", "-u", BOOT_UNIT, "-o", "cat", "--no-pager"]).stdout
    assert "nothing is held" in told, told
    assert_no_ordering_cycle(vm)
    print("%s on a boot with an empty record: %.1f ms" % (BOOT_UNIT, boot_unit_cost(vm)))
