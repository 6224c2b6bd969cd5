"""Drift-correction holds on real parts: systemd, ansible-pull from git, puppet-agent and cron in a
booted Debian container, driven through the drift_pause module (ansible-playbook over ssh) and the
imds-hold / imds-drift-guard commands installed the way the watcher role lays them out.

Nothing is timed: runs in flight are held open by a gate file that the test opens, and every
wait is a bounded poll for a condition.
"""

import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from harness.ansible_env import ansible_env, ansible_program
from harness.polling import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ROOT / "tests" / "system" / "drift_hold"
STATE = "/var/lib/imds-scheduled-events/holds.json"
LIBDIR = "/usr/lib/imds-scheduled-events"
IMDS_HOLD = "/usr/local/sbin/imds-hold"
GUARD = "/usr/local/sbin/imds-drift-guard"
GATE = "/run/drift-test/gate"
RUNS = "/var/lib/drift-test/runs"
CRON_RUNS = "/var/lib/drift-test/cron-runs"
DROP_IN = "/etc/systemd/system/ansible-pull.service.d/imds-drift-guard.conf"
RESULT = "/root/drift-result.json"
TIMER = "ansible-pull.timer"
SERVICE = "ansible-pull.service"


# --- the machine -------------------------------------------------------------------


def library_tarball():
    """plugins/module_utils minus ansible_support.py, as imds_scheduled_events/ (the watcher role's layout)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        source = ROOT / "plugins" / "module_utils"
        for path in sorted(source.rglob("*.py")):
            if path.name == "ansible_support.py" or "__pycache__" in path.parts:
                continue
            info = tar.gettarinfo(str(path), arcname="imds_scheduled_events/%s" % path.relative_to(source))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buf.getvalue()


def unit_state(vm, unit):
    out = vm.ssh(["systemctl", "show", "--property=ActiveState,UnitFileState", "--", unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def puppet_lock(vm):
    path = vm.ssh(["puppet", "config", "print", "agent_disabled_lockfile"], timeout=120).stdout.strip()
    found = vm.ssh(["cat", "--", path], check=False)
    return json.loads(found.stdout)["disabled_message"] if found.returncode == 0 else None


def count(vm, directory, prefix):
    return len([n for n in vm.ssh(["ls", "-1", directory]).stdout.split() if n.startswith(prefix)])


def record(vm):
    found = vm.ssh(["cat", STATE], check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def imds_hold(vm, *args, check=True):
    return vm.ssh([IMDS_HOLD] + list(args), check=check, timeout=300)


@pytest.fixture(scope="module")
def vm(systemd_container):
    """The session container with the hold library, the launchers, a git repo, ansible-pull units and cron."""
    box = systemd_container
    box.ssh("mkdir -p %s && tar -x -C %s" % (LIBDIR, LIBDIR), input=library_tarball(), text=False)
    for name in ("imds-drift-guard", "imds-hold"):
        box.put_file("/usr/local/sbin/" + name, (ROOT / "roles/watcher/files/bin" / name).read_bytes(), mode=0o755)
    box.put_file("/srv/drift-config/local.yml", (FILES / "pull-repo" / "local.yml").read_bytes())
    box.ssh("cd /srv/drift-config && git init -q && git add local.yml && "
            "git -c user.name=test -c user.email=test@localhost commit -q -m 'test configuration'")
    for name in ("ansible-pull.service", "ansible-pull.timer"):
        box.put_file("/etc/systemd/system/" + name, (FILES / "vm" / name).read_bytes())
    for name in ("drift-agent.service", "drift-agent.timer"):
        box.put_file("/usr/local/lib/systemd/system/" + name, (FILES / "vm" / name).read_bytes())
    box.put_file("/usr/local/bin/drift-job", (FILES / "vm" / "drift-job").read_bytes(), mode=0o755)
    box.ssh(["mkdir", "-p", RUNS, CRON_RUNS, "/run/drift-test"])
    box.ssh(["systemctl", "daemon-reload"])
    return box


@pytest.fixture
def drift(vm):
    """Every test starts from: nothing held, timers enabled and active, puppet enabled, the gate open."""
    def reset():
        vm.ssh("%s release --all >/dev/null 2>&1; rm -f %s %s.*; rm -f %s /etc/cron.d/drift-guard; "
               "touch %s; systemctl reset-failed 2>/dev/null; true" % (IMDS_HOLD, STATE, STATE, DROP_IN, GATE))
        wait_for(lambda: unit_state(vm, SERVICE)["ActiveState"] in ("inactive", "failed"), 300,
                 what="the last ansible-pull run to end")
        vm.ssh(["systemctl", "daemon-reload"])
        vm.ssh(["systemctl", "enable", "--now", TIMER, "drift-agent.timer"])
        if puppet_lock(vm) is not None:
            vm.ssh(["puppet", "agent", "--enable"], timeout=120)
    reset()
    yield vm
    reset()


def start_run_in_flight(vm):
    """An ansible-pull run that stays in flight until the gate opens."""
    vm.ssh(["rm", "-f", GATE])
    started = count(vm, RUNS, "started.")
    vm.ssh(["systemctl", "start", "--no-block", SERVICE])
    wait_for(lambda: count(vm, RUNS, "started.") > started, 180, what="ansible-pull to start its run")
    assert unit_state(vm, SERVICE)["ActiveState"] == "activating"


# --- driving the module with ansible-playbook ------------------------------------------


class Playbook(object):
    """One ansible-playbook run of drift_pause.yml; start() it in the background or run() it.
    Its output goes to a file, so a test waiting on the VM can show what the playbook said so far."""

    def __init__(self, vm, tmp_path, args, check=False, diff=False):
        self.vm = vm
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": {"drift_vm": vm.ansible_inventory_vars()}}}))
        stamp = time.monotonic_ns()
        extra = tmp_path / ("vars-%d.json" % stamp)
        extra.write_text(json.dumps({"drift_args": args, "drift_result_file": RESULT}))
        self.log = tmp_path / ("playbook-%d.log" % stamp)
        self.argv = [ansible_program(), "-i", str(inventory), str(FILES / "drift_pause.yml"), "-e", "@%s" % extra]
        if check:
            self.argv.append("--check")
        if diff:
            self.argv.append("--diff")
        self.proc = None

    def start(self):
        self.vm.ssh(["rm", "-f", RESULT])
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.argv, env=ansible_env(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        return self

    def output(self):
        return self.log.read_text(errors="replace")

    def running(self):
        """True while the playbook runs; once it has ended, fail with what it printed and saved."""
        if self.proc.poll() is None:
            return True
        saved = self.vm.ssh(["cat", RESULT], check=False).stdout
        pytest.fail("the playbook ended (exit %s) while the test waited for it to be in flight:\n%s\nresult: %s"
                    % (self.proc.returncode, self.output(), saved or "(none saved)"))
        return False

    def finish(self, timeout=600):
        self.proc.wait(timeout=timeout)
        out = self.output()
        assert self.proc.returncode == 0, out
        return json.loads(self.vm.get_file(RESULT))

    def run(self):
        return self.start().finish()


def in_flight_diagnosis(vm, playbook):
    """What a timed-out wait shows: the hold record, the run's unit and marks, and the playbook's output."""
    found = vm.ssh(["cat", STATE], check=False).stdout or "(no hold record)"
    unit = vm.ssh(["systemctl", "status", "--no-pager", "--lines=20", SERVICE], check=False).stdout
    runs = vm.ssh(["ls", "-l", RUNS, "/run/drift-test"], check=False).stdout
    return "\nhold record: %s\n%s\nmarks:\n%s\nplaybook so far:\n%s" % (found, unit, runs, playbook.output())


def drift_pause(vm, tmp_path, check=False, diff=False, **args):
    return Playbook(vm, tmp_path, args, check=check, diff=diff).run()


# --- the cases -----------------------------------------------------------------------


def test_hold_waits_for_the_run_in_flight_disables_puppet_and_release_restores(drift, tmp_path):
    vm = drift
    timer_before = unit_state(vm, TIMER)
    assert timer_before == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert puppet_lock(vm) is None
    start_run_in_flight(vm)
    finished = count(vm, RUNS, "finished.")

    args = dict(reason="Reboot scheduled by Azure", event_id="C7061BAC-AFDC-4513-B24B-AA5F13A16123",
                holder="system test", systemd_units=[TIMER], puppet=True)
    hold = Playbook(vm, tmp_path, args).start()

    def timer_stopped_and_waiting():
        rec = record(vm)
        target = rec and rec["targets"].get("systemd:" + TIMER)
        return hold.running() and target and target["phase"] == "holding" and target["done"] == ["stop"]

    wait_for(timer_stopped_and_waiting, 300, what="the hold to stop the timer and wait for the run",
             diagnose=lambda: in_flight_diagnosis(vm, hold))
    assert unit_state(vm, TIMER)["ActiveState"] == "inactive"
    assert unit_state(vm, SERVICE)["ActiveState"] == "activating", "the run in flight is not killed"
    assert hold.proc.poll() is None, "the hold did not return while the run was in flight"
    assert count(vm, RUNS, "finished.") == finished

    vm.ssh(["touch", GATE])
    result = hold.finish()
    assert result["changed"] and not result.get("failed"), result
    assert count(vm, RUNS, "finished.") == finished + 1, "the run finished before the hold returned"
    steps = result["backends"]["systemd:" + TIMER]["steps"]
    assert steps == ["hold for reason 'C7061BAC-AFDC-4513-B24B-AA5F13A16123'", "stop " + TIMER,
                     "wait for %s to finish" % SERVICE]
    assert unit_state(vm, TIMER)["ActiveState"] == "inactive"
    assert unit_state(vm, SERVICE)["ActiveState"] == "inactive"
    message = puppet_lock(vm)
    assert message.startswith("imds-scheduled-events hold by system test: Reboot scheduled by Azure")
    assert "event C7061BAC-AFDC-4513-B24B-AA5F13A16123" in message
    assert result["holds"]["reasons"][0]["targets"] == ["puppet", "systemd:" + TIMER]

    status = imds_hold(vm, "status").stdout
    assert "C7061BAC-AFDC-4513-B24B-AA5F13A16123: Reboot scheduled by Azure" in status
    assert "by system test since" in status and "stopped by the hold (was active, enabled)" in status

    result = drift_pause(vm, tmp_path, state="resumed", event_id="C7061BAC-AFDC-4513-B24B-AA5F13A16123")
    assert result["changed"] and not result["holds"]["held"]
    assert unit_state(vm, TIMER) == timer_before
    assert puppet_lock(vm) is None
    assert record(vm)["targets"] == {}


@pytest.mark.parametrize("operator", [["stop"], ["disable", "--now"], ["disable"]], ids=["stopped", "disabled", "disabled-running"])
def test_what_the_operator_set_stays_so_after_hold_and_release(drift, tmp_path, operator):
    vm = drift
    vm.ssh(["systemctl"] + operator + [TIMER])
    before = unit_state(vm, TIMER)
    imds_hold(vm, "hold", "--reason", "operator check", "--reason-id", "ops", "--unit", TIMER)
    target = record(vm)["targets"]["systemd:" + TIMER]
    if before["ActiveState"] == "active":  # disabled but running: stopped, started again, still disabled
        assert target["actions"] == ["stop", "wait"] and unit_state(vm, TIMER)["ActiveState"] == "inactive"
    else:
        assert target["actions"] == ["wait"] and unit_state(vm, TIMER) == before
    imds_hold(vm, "release", "--reason-id", "ops")
    assert unit_state(vm, TIMER) == before

    result = drift_pause(vm, tmp_path, reason="again, by the module", systemd_units=[TIMER])
    assert result["backends"]["systemd:" + TIMER]["state"] == "held"
    drift_pause(vm, tmp_path, state="resumed", reason_id="manual")
    assert unit_state(vm, TIMER) == before


def test_two_reasons_hold_until_both_are_released(drift, tmp_path):
    vm = drift
    drift_pause(vm, tmp_path, reason="kernel patching", reason_id="CHG-1", holder="alice",
                systemd_units=[TIMER], puppet=True)
    imds_hold(vm, "hold", "--reason", "Freeze in 5 minutes", "--event-id", "E-2", "--holder", "imds-watcher",
              "--unit", TIMER)
    status = json.loads(imds_hold(vm, "status", "--json").stdout)
    assert [(r["id"], r["targets"]) for r in status["reasons"]] == [
        ("CHG-1", ["puppet", "systemd:" + TIMER]), ("E-2", ["systemd:" + TIMER])]

    result = drift_pause(vm, tmp_path, state="resumed", reason_id="CHG-1")
    assert result["backends"]["systemd:" + TIMER]["state"] == "held"
    assert result["backends"]["systemd:" + TIMER]["reasons"] == ["E-2"]
    assert result["backends"]["puppet"]["state"] == "released"
    assert unit_state(vm, TIMER)["ActiveState"] == "inactive", "still held by the other reason"
    assert puppet_lock(vm) is None, "puppet was held by CHG-1 alone"

    out = imds_hold(vm, "release", "--event-id", "E-2").stdout
    assert "systemd:%s: released" % TIMER in out and "Nothing is held" in out
    assert unit_state(vm, TIMER) == {"ActiveState": "active", "UnitFileState": "enabled"}


def test_second_hold_with_the_same_reason_changes_nothing(drift, tmp_path):
    vm = drift
    args = dict(reason="kernel patching", reason_id="CHG-1", systemd_units=[TIMER, "drift-agent.timer"], guard=True)
    checked = drift_pause(vm, tmp_path, check=True, diff=True, **args)
    assert checked["changed"] and record(vm) is None and unit_state(vm, TIMER)["ActiveState"] == "active"
    assert checked["diff"]["before"] == {} and sorted(checked["diff"]["after"]) == [
        "guard", "systemd:" + TIMER, "systemd:drift-agent.timer"]

    assert drift_pause(vm, tmp_path, **args)["changed"]
    saved = vm.get_file(STATE)
    again = drift_pause(vm, tmp_path, diff=True, **args)
    assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]
    assert all(not b["changed"] and b["steps"] == [] for b in again["backends"].values())
    assert vm.get_file(STATE) == saved, "the record is not even rewritten"
    out = imds_hold(vm, "hold", "--reason", "kernel patching", "--reason-id", "CHG-1", "--unit", TIMER).stdout
    assert "systemd:%s: held (no change)" % TIMER in out
    assert vm.get_file(STATE) == saved


def test_runtime_mask_and_its_limits(drift, tmp_path):
    vm = drift
    result = drift_pause(vm, tmp_path, reason="no starts at all", systemd_units=["drift-agent.timer", TIMER],
                         systemd_mask=True)
    assert unit_state(vm, "drift-agent.timer") == {"ActiveState": "inactive", "UnitFileState": "masked-runtime"}
    assert vm.ssh(["systemctl", "start", "drift-agent.timer"], check=False).returncode != 0
    notes = result["backends"]["systemd:" + TIMER]["notes"]
    assert any("could not be masked" in n for n in notes), "a unit file in /etc outranks a runtime mask"
    assert unit_state(vm, TIMER) == {"ActiveState": "inactive", "UnitFileState": "enabled"}
    drift_pause(vm, tmp_path, state="resumed", reason_id="manual")
    for unit in ("drift-agent.timer", TIMER):
        assert unit_state(vm, unit) == {"ActiveState": "active", "UnitFileState": "enabled"}


def run_hold_in_background(vm, name, *args):
    """imds-hold as a transient service, so the test can kill -9 its process."""
    vm.ssh(["systemd-run", "--unit", name, "--property=Type=exec", "--collect", IMDS_HOLD] + list(args))
    return wait_for(lambda: vm.main_pid(name + ".service"), 60, what="imds-hold to start")


def test_kill_9_between_steps_leaves_a_record_that_a_rerun_completes(drift):
    vm = drift
    vm.ssh(["rm", "-f", "/run/drift-test/cmd-gate", "/var/lib/drift-test/cmd.log"])
    slow = json.dumps({"name": "slow", "release": ["/bin/sh", "-c", "echo release >> /var/lib/drift-test/cmd.log"],
                       "hold": ["/bin/sh", "-c", "touch /run/drift-test/cmd-started; "
                                "while [ ! -e /run/drift-test/cmd-gate ]; do sleep 0.1; done; "
                                "echo hold >> /var/lib/drift-test/cmd.log"]})
    args = ["hold", "--reason", "crash test", "--reason-id", "crash", "--unit", TIMER, "--puppet", "--command", slow]
    start_run_in_flight(vm)

    # Crash 1: the timer is stopped and the hold waits for the run in flight.
    pid = run_hold_in_background(vm, "drift-crash-1", *args)
    wait_for(lambda: (record(vm) or {"targets": {}})["targets"].get("systemd:" + TIMER, {}).get("done") == ["stop"],
             120, what="the hold to stop the timer")
    vm.kill(pid, "KILL")
    rec = record(vm)
    assert [(k, t["phase"], t["done"]) for k, t in sorted(rec["targets"].items())] == [
        ("command:slow", "holding", []), ("puppet", "holding", []), ("systemd:" + TIMER, "holding", ["stop"])]
    assert unit_state(vm, TIMER)["ActiveState"] == "inactive" and puppet_lock(vm) is None
    assert "being held (incomplete: run hold again to finish)" in imds_hold(vm, "status").stdout

    # Crash 2: re-run; the run in flight ends, puppet is disabled, and the command is killed half-way.
    vm.ssh(["touch", GATE])
    pid = run_hold_in_background(vm, "drift-crash-2", *args)
    wait_for(lambda: vm.ssh(["test", "-e", "/run/drift-test/cmd-started"], check=False).returncode == 0, 300,
             what="the hold command to start")
    vm.kill(pid, "KILL")
    rec = record(vm)
    assert [(k, t["phase"]) for k, t in sorted(rec["targets"].items())] == [
        ("command:slow", "holding"), ("puppet", "held"), ("systemd:" + TIMER, "held")]
    assert puppet_lock(vm).startswith("imds-scheduled-events hold")

    # The re-run completes.
    vm.ssh(["touch", "/run/drift-test/cmd-gate"])
    imds_hold(vm, *args)
    rec = record(vm)
    assert all(t["phase"] == "held" and t["done"] == t["actions"] for t in rec["targets"].values()), rec
    assert "hold" in vm.get_file("/var/lib/drift-test/cmd.log").decode()

    imds_hold(vm, "release", "--reason-id", "crash")
    assert unit_state(vm, TIMER) == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert puppet_lock(vm) is None
    assert vm.get_file("/var/lib/drift-test/cmd.log").decode().splitlines()[-1] == "release"
    assert record(vm)["targets"] == {}


def test_guard_in_a_systemd_drop_in_waits_skips_and_runs_again(drift):
    vm = drift
    vm.put_file(DROP_IN, (FILES / "vm" / "imds-drift-guard.conf").read_bytes())
    vm.ssh(["systemctl", "daemon-reload"])
    start_run_in_flight(vm)  # a guarded run, holding the guard's run lock
    finished = count(vm, RUNS, "finished.")
    pid = run_hold_in_background(vm, "drift-guard-hold", "hold", "--reason", "guard test", "--reason-id", "g",
                                 "--guard")
    wait_for(lambda: ((record(vm) or {"targets": {}})["targets"].get("guard") or {}).get("phase") == "holding", 120,
             what="the guard hold to record its intent")
    assert vm.main_pid("drift-guard-hold.service") == pid, "still waiting for the guarded run"
    vm.ssh(["touch", GATE])
    wait_for(lambda: record(vm)["targets"]["guard"]["phase"] == "held", 300, what="the guard hold to complete")
    assert count(vm, RUNS, "finished.") == finished + 1

    started = count(vm, RUNS, "started.")
    vm.ssh(["systemctl", "start", SERVICE], timeout=300)  # held: the service succeeds without running the job
    assert count(vm, RUNS, "started.") == started
    assert unit_state(vm, SERVICE)["ActiveState"] == "inactive"
    journal = vm.ssh(["journalctl", "-b", "--no-pager", "-o", "cat", "-u", SERVICE, "-n", "50"]).stdout
    assert "drift correction is held, so not running /usr/bin/ansible-pull" in journal
    assert "guard test [reason g]" in journal

    imds_hold(vm, "release", "--reason-id", "g")
    vm.ssh(["systemctl", "start", SERVICE], timeout=300)
    assert count(vm, RUNS, "started.") == started + 1


def test_guard_in_a_crontab_line(drift, tmp_path):
    vm = drift
    cursor = vm.ssh(["journalctl", "--show-cursor", "-n", "0", "--no-pager"]).stdout.strip().split("cursor: ")[-1]

    def runs():
        return count(vm, CRON_RUNS, "ran.")

    def skips_logged():
        # No -t filter: journalctl ignores --after-cursor once a match is given.
        journal = vm.ssh(["journalctl", "--after-cursor", cursor, "--no-pager", "--output=json",
                          "--output-fields=SYSLOG_IDENTIFIER,MESSAGE"]).stdout
        entries = [json.loads(line) for line in journal.splitlines() if line.strip()]
        return len([e for e in entries if e.get("SYSLOG_IDENTIFIER") == "imds-drift-guard" and
                    "drift correction is held, so not running /usr/local/bin/drift-job" in str(e.get("MESSAGE"))])

    line = (FILES / "vm" / "drift-guard.cron").read_text().splitlines()[-1]

    def run_cron_line():
        """The crontab line's command as cron runs it: /bin/sh -c, with cron's PATH."""
        vm.ssh(["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "/bin/sh", "-c",
                line.split(None, 6)[6]])

    drift_pause(vm, tmp_path, reason="cron check", reason_id="cron", guard=True)
    before = runs()
    run_cron_line()
    assert runs() == before
    assert "[reason cron]" in vm.ssh(["tail", "-n", "1", "/var/log/drift-job.log"]).stdout
    wait_for(lambda: skips_logged() >= 1, 30, what="the guard's message in the journal")

    # And from cron itself, at its next minute.
    vm.put_file("/etc/cron.d/drift-guard", (FILES / "vm" / "drift-guard.cron").read_bytes())
    wait_for(lambda: skips_logged() >= 2, 150, interval=2, what="cron to run the guard while held")
    assert runs() == before

    vm.ssh(["rm", "-f", "/etc/cron.d/drift-guard"])

    # Released, the same line runs the job (cron's own scheduling was proven above; one minute wait is enough).
    drift_pause(vm, tmp_path, state="resumed", reason_id="cron")
    run_cron_line()
    assert runs() == before + 1
