# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Each backend through the manager, against the fake machine: what hold does, and that
release puts back exactly what was there."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (
    PUPPET_MARKER, CommandBackend, GuardBackend, PuppetBackend, SystemdBackend, normalize_unit, puppet_message)
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import HoldError
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import Reason
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.hold.fakes import Unit

OPS = Reason("CHG-1", "kernel patching", holder="alice (imds-hold)")
EVENT = Reason("5DD55B64-8E0C-4E4B-9F5A-6E1B7E2F1A10", "Reboot at 10:00", event_id="5DD55B64-8E0C-4E4B-9F5A-6E1B7E2F1A10",
               holder="imds-watcher")


def timer(**kwargs):
    return SystemdBackend.target("ansible-pull.timer", **kwargs)


# --- systemd -------------------------------------------------------------------


@pytest.mark.parametrize("name, unit", [("ansible-pull.timer", "ansible-pull.timer"), ("chef-client", "chef-client.service"),
                                        ("getty@tty1.service", "getty@tty1.service")])
def test_unit_names(name, unit):
    assert normalize_unit(name) == unit


@pytest.mark.parametrize("name", ["", "-x.service", "a b.timer", "foo.socket", "x;rm -rf /.service", "getty@.service"])
def test_bad_unit_names(name):
    with pytest.raises(ValueError):
        normalize_unit(name)


def test_timer_hold_stops_waits_for_the_run_in_flight_and_release_restores(manager, system, fake_time):
    system.ansible_pull()
    system.start_run("ansible-pull.service", 7)
    before = system.snapshot()
    outcome = manager.hold(OPS, [timer()])
    assert not outcome.failed
    steps = outcome.results["systemd:ansible-pull.timer"].steps
    assert steps == ["hold for reason 'CHG-1'", "stop ansible-pull.timer", "wait for ansible-pull.service to finish"]
    assert system.units["ansible-pull.timer"].active == "inactive"
    assert system.units["ansible-pull.service"].active == "inactive", "the run finished, it was not killed"
    assert ["systemctl", "stop", "--", "ansible-pull.service"] not in system.calls
    assert 7 <= sum(fake_time.slept) < 8
    rec = manager.status()["targets"][0]
    assert rec["phase"] == "held" and rec["prior"]["ActiveState"] == "active" and rec["prior"]["UnitFileState"] == "enabled"
    assert rec["actions"] == rec["done"] == ["stop", "wait"]
    outcome = manager.release("CHG-1")
    assert outcome.results["systemd:ansible-pull.timer"].steps == ["drop reason 'CHG-1'", "start ansible-pull.timer",
                                                                   "release systemd:ansible-pull.timer"]
    assert system.snapshot() == dict(before, units=dict(before["units"], **{"ansible-pull.service": ("inactive", "static")}))
    assert manager.status()["held"] is False


def test_wait_is_bounded_and_the_hold_stays_half_done(make_manager, system):
    manager = make_manager()
    system.ansible_pull()
    system.start_run("ansible-pull.service", 100)
    outcome = manager.hold(OPS, [timer(wait_timeout=30)])
    result = outcome.results["systemd:ansible-pull.timer"]
    assert outcome.failed and "still running after 30 s" in result.error and "Hold again" in result.error
    assert result.state == "holding"
    assert system.units["ansible-pull.timer"].active == "inactive", "no new run can start"
    rec = manager.status()["targets"][0]
    assert rec["phase"] == "holding" and rec["done"] == ["stop"]
    outcome = manager.hold(OPS, [timer(wait_timeout=100)])
    assert not outcome.failed and outcome.results["systemd:ansible-pull.timer"].state == "held"
    assert outcome.changed


def test_zero_wait_timeout_does_not_wait(manager, system, fake_time):
    system.ansible_pull()
    system.start_run("ansible-pull.service", 100)
    outcome = manager.hold(OPS, [timer(wait_timeout=0)])
    assert not outcome.failed and fake_time.slept == []
    assert manager.status()["targets"][0]["actions"] == ["stop"]


def test_operator_stopped_or_disabled_timer_stays_so(manager, system):
    system.ansible_pull(timer_active=False, timer_enabled=False)
    before = system.snapshot()
    manager.hold(OPS, [timer()])
    assert manager.status()["targets"][0]["actions"] == ["wait"]
    assert "does not stop it and release will not start it" in manager.status()["targets"][0]["notes"][0]
    manager.release("CHG-1")
    assert system.snapshot() == before
    assert not [c for c in system.calls if c[1] in ("stop", "start", "mask", "unmask")]


def test_started_but_disabled_timer_is_started_again_and_stays_disabled(manager, system):
    system.ansible_pull(timer_active=True, timer_enabled=False)
    before = system.snapshot()
    manager.hold(OPS, [timer()])
    assert system.units["ansible-pull.timer"].active == "inactive"
    manager.release("CHG-1")
    assert system.snapshot() == before == dict(before, units=dict(before["units"], **{
        "ansible-pull.timer": ("active", "disabled")}))


def test_mask_and_unmask_only_what_the_hold_masked(manager, system):
    system.ansible_pull()
    system.add(Unit("chef-client.timer", active="active", triggers=["chef-client.service"]))
    system.add(Unit("chef-client.service", kind="oneshot", file_state="static"))
    system.persistent_masks.add("chef-client.timer")  # the operator masked it for good
    before = system.snapshot()
    manager.hold(OPS, [timer(mask=True), SystemdBackend.target("chef-client.timer", mask=True)])
    assert system.runtime_masks == {"ansible-pull.timer"}
    assert [t["actions"] for t in manager.status()["targets"]] == [["stop", "wait", "mask"], ["stop", "wait"]]
    outcome = manager.release("CHG-1")
    assert system.runtime_masks == set() and system.persistent_masks == {"chef-client.timer"}
    after = system.snapshot()
    assert after["units"]["ansible-pull.timer"] == before["units"]["ansible-pull.timer"] == ("active", "enabled")
    assert after["units"]["chef-client.timer"] == ("inactive", "masked"), "masked for good: cannot start again"
    assert "is masked, not by this hold: left stopped" in outcome.results["systemd:chef-client.timer"].notes[-1]


def test_runtime_mask_that_cannot_work_is_undone_and_noted(manager, system):
    system.ansible_pull(in_etc=True)
    outcome = manager.hold(OPS, [timer(mask=True)])
    assert not outcome.failed
    rec = manager.status()["targets"][0]
    assert rec["actions"] == ["stop", "wait"] and system.runtime_masks == set()
    assert "could not be masked" in rec["notes"][-1]
    manager.release("CHG-1")
    assert system.units["ansible-pull.timer"].active == "active"


def test_oneshot_service_is_waited_for_not_stopped_or_started(manager, system):
    system.ansible_pull()
    system.start_run("ansible-pull.service", 3)
    manager.hold(OPS, [SystemdBackend.target("ansible-pull.service")])
    assert ["systemctl", "stop", "--", "ansible-pull.service"] not in system.calls
    assert system.units["ansible-pull.service"].active == "inactive"
    manager.release("CHG-1")
    assert ["systemctl", "start", "--", "ansible-pull.service"] not in system.calls


def test_daemon_service_is_stopped_and_started_again(manager, system):
    system.add(Unit("chef-client.service", active="active"))
    manager.hold(OPS, [SystemdBackend.target("chef-client")])
    assert system.units["chef-client.service"].active == "inactive"
    manager.release("CHG-1")
    assert system.units["chef-client.service"].active == "active"


def test_missing_unit_fails_before_anything_changes(manager, system, state_file):
    system.ansible_pull()
    with pytest.raises(HoldError, match="chef-client.timer is not installed"):
        manager.hold(OPS, [timer(), SystemdBackend.target("chef-client.timer")])
    assert not os.path.exists(state_file)
    assert system.units["ansible-pull.timer"].active == "active"


def test_failed_systemctl_is_reported_and_the_next_run_finishes(manager, system):
    system.ansible_pull()
    system.fail[("stop", "ansible-pull.timer")] = 1
    outcome = manager.hold(OPS, [timer()])
    assert outcome.failed and "Failed to stop ansible-pull.timer: injected" in outcome.errors[0]
    del system.fail[("stop", "ansible-pull.timer")]
    outcome = manager.hold(OPS, [timer()])
    assert not outcome.failed and system.units["ansible-pull.timer"].active == "inactive"


# --- puppet -------------------------------------------------------------------


def test_puppet_disabled_with_our_message_and_enabled_again(manager, system):
    outcome = manager.hold(OPS, [PuppetBackend.target()])
    assert outcome.results["puppet"].steps == ["hold for reason 'CHG-1'", "puppet agent --disable"]
    message = system.read_puppet()
    assert message.startswith(PUPPET_MARKER) and "kernel patching" in message and "alice" in message
    assert manager.status()["targets"][0]["prior"] == {"command": "puppet", "lockfile": system.puppet_lock,
                                                       "disabled": False, "message": None}
    manager.release("CHG-1")
    assert system.read_puppet() is None


def test_puppet_disabled_by_someone_else_is_left_alone(manager, system):
    system.write_puppet("upgrading ruby -- bob")
    manager.hold(OPS, [PuppetBackend.target()])
    rec = manager.status()["targets"][0]
    assert rec["actions"] == [] and "already disabled" in rec["notes"][0] and "upgrading ruby" in rec["notes"][0]
    assert "already disabled by someone else" in rec["summary"]
    manager.release("CHG-1")
    assert system.read_puppet() == "upgrading ruby -- bob"
    assert ["puppet", "agent", "--enable"] not in system.calls


def test_puppet_message_replaced_during_the_hold_is_left(manager, system):
    manager.hold(OPS, [PuppetBackend.target()])
    system.write_puppet("someone else now")
    outcome = manager.release("CHG-1")
    assert system.read_puppet() == "someone else now"
    assert "someone else's message" in outcome.results["puppet"].notes[-1]


def test_puppet_enabled_by_someone_during_the_hold_is_not_touched(manager, system):
    manager.hold(OPS, [PuppetBackend.target()])
    system.write_puppet(None)
    outcome = manager.release("CHG-1")
    assert not outcome.failed and ["puppet", "agent", "--enable"] not in system.calls


def test_puppet_not_installed(manager, system):
    system.puppet_installed = False
    with pytest.raises(HoldError, match="puppet is not installed"):
        manager.hold(OPS, [PuppetBackend.target()])


def test_puppet_message_is_one_bounded_line():
    message = puppet_message({"id": "x", "text": "line one\nline two\t" + "y" * 1000, "holder": "h", "event_id": "E"})
    assert "\n" not in message and len(message) == 400 and message.endswith("...")
    assert message.startswith(PUPPET_MARKER + " by h: line one line two")


# --- guard --------------------------------------------------------------------


def test_guard_hold_waits_for_guarded_runs(make_manager, fake_time):
    manager = make_manager()
    fd = manager.store.open_guard_run_lock()
    try:
        outcome = manager.hold(OPS, [GuardBackend.target(wait_timeout=20)])
        assert outcome.failed and "still running after 20 s" in outcome.errors[0]
        assert manager.status()["targets"][0]["phase"] == "holding"
    finally:
        os.close(fd)
    outcome = manager.hold(OPS, [GuardBackend.target(wait_timeout=20)])
    assert not outcome.failed and manager.status()["targets"][0]["phase"] == "held"
    assert manager.release("CHG-1").results["guard"].steps == ["drop reason 'CHG-1'", "release guard"]


# --- commands -----------------------------------------------------------------


def test_commands_get_the_reason_only_through_environment_and_stdin(manager, system):
    nasty = Reason("r; rm -rf /", "$(reboot) `id` 'quoted' \"x\"", event_id="E-1", holder="h")
    lb = CommandBackend.target("lb", ["/usr/local/bin/lb", "drain", "--pool", "web"], ["/usr/local/bin/lb", "undrain"])
    manager.hold(nasty, [lb])
    argv, env, stdin = system.commands[-1]
    assert argv == ["/usr/local/bin/lb", "drain", "--pool", "web"]
    assert env["IMDS_HOLD_ACTION"] == "hold" and env["IMDS_HOLD_REASON"] == nasty.text
    assert env["IMDS_HOLD_REASON_ID"] == "r; rm -rf /" and env["IMDS_EVENT_ID"] == "E-1" and env["IMDS_HOLD_HOLDER"] == "h"
    assert env["IMDS_HOLD_TARGET"] == "command:lb" and env["IMDS_HOLD_STATE_FILE"] == manager.state_file
    assert env["PATH"] == "/usr/bin:/bin"
    payload = json.loads(stdin)
    assert payload["action"] == "hold" and payload["reason"]["text"] == nasty.text
    manager.release("r; rm -rf /")
    argv, env, stdin = system.commands[-1]
    assert argv == ["/usr/local/bin/lb", "undrain"] and env["IMDS_HOLD_ACTION"] == "release"
    assert json.loads(stdin)["reason"]["id"] == "r; rm -rf /"


def test_failing_command_fails_and_runs_again_next_time(manager, system):
    lb = CommandBackend.target("lb", ["/bin/lb-drain"], ["/bin/lb-undrain"], timeout=5)
    system.command_rc["/bin/lb-drain"] = 3
    outcome = manager.hold(OPS, [lb])
    assert outcome.failed and "the hold command of command:lb failed" in outcome.errors[0] and "exited with 3" in outcome.errors[0]
    system.command_rc["/bin/lb-drain"] = 0
    assert not manager.hold(OPS, [lb]).failed
    assert [c[0] for c in system.commands] == [["/bin/lb-drain"], ["/bin/lb-drain"]]


@pytest.mark.parametrize("name, hold, release, error", [
    ("lb", "lb drain", ["x"], "not a shell string"),
    ("lb", [], ["x"], "non-empty list"),
    ("bad name", ["x"], ["y"], "command name"),
    ("lb", ["x", None], ["y"], "must be text"),
    ("lb", [""], ["y"], "program must not be empty"),
])
def test_command_targets_are_validated(name, hold, release, error):
    with pytest.raises(ValueError, match=error):
        CommandBackend.target(name, hold, release)


def test_real_runner_takes_argument_lists_only():
    from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import run_command
    with pytest.raises(TypeError):
        run_command("echo hi")
    assert run_command(["/nonexistent/program"]).rc == 127
