# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""drift_pause's main() end to end: options, the hold library, the result. The machine
is the fake one at the library's edge (systemctl and puppet are not the host's to touch);
operator commands run for real."""

from __future__ import annotations

import functools
import json
import os
import sys

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.plugins.modules import drift_pause
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.hold.fakes import FakeSystem, FakeTime
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module

UID = os.getuid()


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def system(fake_time, tmp_path):
    machine = FakeSystem(fake_time, puppet_lock=str(tmp_path / "agent_disabled.lock"))
    machine.ansible_pull()
    return machine


@pytest.fixture
def state_file(tmp_path):
    os.chmod(str(tmp_path), 0o755)
    return str(tmp_path / "var-lib" / "holds.json")


@pytest.fixture(autouse=True)
def machine_edge(monkeypatch, system, fake_time):
    """The module builds HoldManager(state_file=...); give it the fake machine and trust the test's uid."""
    monkeypatch.setattr(drift_pause, "HoldManager", functools.partial(
        HoldManager, run=system.run, clock=fake_time.clock, monotonic=fake_time.monotonic, sleep=fake_time.sleep,
        owner_uid=UID))


def pause(state_file, **kwargs):
    args = dict(state="paused", reason="kernel patching", reason_id="CHG-1", state_file=state_file)
    args.update(kwargs)
    return args


def test_pause_then_resume_restores(state_file, system):
    before = system.snapshot()
    failed, result = run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"], puppet=True,
                                                        guard=True, holder="alice"))
    assert not failed, result
    assert result["changed"] and result["state_file"] == state_file
    assert result["backends"]["systemd:ansible-pull.timer"]["steps"] == ["hold for reason 'CHG-1'",
                                                                         "stop ansible-pull.timer"]
    assert result["backends"]["puppet"]["state"] == "held" and result["backends"]["guard"]["reasons"] == ["CHG-1"]
    assert result["holds"]["held"] and result["holds"]["reasons"][0]["holder"] == "alice"
    assert system.units["ansible-pull.timer"].active == "inactive" and "kernel patching" in system.read_puppet()
    assert "diff" not in result

    failed, result = run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"], puppet=True,
                                                        guard=True, holder="alice"))
    assert not failed and not result["changed"], "idempotent"

    failed, result = run_module(drift_pause.main, dict(state="resumed", reason_id="CHG-1", state_file=state_file))
    assert not failed and result["changed"] and not result["holds"]["held"]
    assert sorted(result["backends"]) == ["guard", "puppet", "systemd:ansible-pull.timer"]
    assert all(b["state"] == "released" for b in result["backends"].values())
    assert system.snapshot() == before

    failed, result = run_module(drift_pause.main, dict(state="resumed", reason_id="CHG-1", state_file=state_file))
    assert not failed and not result["changed"]


def test_check_mode_changes_nothing(state_file, system):
    failed, result = run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"]),
                                check_mode=True)
    assert not failed and result["changed"]
    assert result["backends"]["systemd:ansible-pull.timer"]["steps"][:2] == ["hold for reason 'CHG-1'",
                                                                             "stop ansible-pull.timer"]
    assert not os.path.exists(state_file) and system.units["ansible-pull.timer"].active == "active"


def test_diff_shows_the_record_before_and_after(state_file):
    failed, result = run_module(drift_pause.main, pause(state_file, guard=True), diff=True)
    assert not failed
    diff = result["diff"]
    assert diff["before"] == {} and diff["after"]["guard"]["reasons"][0]["id"] == "CHG-1"
    assert diff["before_header"] == diff["after_header"] == state_file
    failed, result = run_module(drift_pause.main, dict(state="resumed", reason_id="CHG-1", state_file=state_file),
                                check_mode=True, diff=True)
    assert not failed and result["changed"] and result["diff"]["after"] == {}
    assert result["diff"]["before"]["guard"]["phase"] == "held"


def test_two_reasons_and_event_id_as_reason_id(state_file, system):
    run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"]))
    event = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
    failed, result = run_module(drift_pause.main, dict(reason="Reboot", event_id=event, state_file=state_file,
                                                       systemd_units=["ansible-pull.timer"]))
    assert not failed and result["backends"]["systemd:ansible-pull.timer"]["reasons"] == ["CHG-1", event]
    failed, result = run_module(drift_pause.main, dict(state="resumed", event_id=event, state_file=state_file))
    assert not failed and result["backends"]["systemd:ansible-pull.timer"]["state"] == "held"
    assert system.units["ansible-pull.timer"].active == "inactive"
    failed, result = run_module(drift_pause.main, dict(state="resumed", all_reasons=True, state_file=state_file))
    assert not failed and system.units["ansible-pull.timer"].active == "active"


def test_resume_limited_to_the_named_backends(state_file, system):
    run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"], puppet=True))
    failed, result = run_module(drift_pause.main, dict(state="resumed", reason_id="CHG-1", puppet=True,
                                                       state_file=state_file))
    assert not failed and list(result["backends"]) == ["puppet"]
    assert [t["key"] for t in result["holds"]["targets"]] == ["systemd:ansible-pull.timer"]


def test_real_commands_get_the_reason_in_env_and_stdin(state_file, tmp_path, monkeypatch):
    monkeypatch.setattr(drift_pause, "HoldManager", functools.partial(HoldManager, owner_uid=UID))
    out = str(tmp_path / "command.out")
    script = ("import json, os, sys; payload = json.load(sys.stdin); "
              "open(sys.argv[1], 'a').write(json.dumps([os.environ['IMDS_HOLD_ACTION'], os.environ['IMDS_HOLD_REASON'], "
              "os.environ['IMDS_EVENT_ID'], payload['reason']['id']]) + '\\n')")
    command = {"name": "recorder", "hold": [sys.executable, "-c", script, out],
               "release": [sys.executable, "-c", script, out], "timeout": 60}
    failed, result = run_module(drift_pause.main, pause(state_file, reason="it's $(maintenance)", event_id="E-1",
                                                        commands=[command]))
    assert not failed, result
    failed, result = run_module(drift_pause.main, dict(state="resumed", reason_id="CHG-1", state_file=state_file,
                                                       commands=[{"name": "recorder"}]))
    assert not failed, result
    with open(out, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines == [["hold", "it's $(maintenance)", "E-1", "CHG-1"], ["release", "it's $(maintenance)", "E-1", "CHG-1"]]


def test_a_failing_step_fails_the_task_with_the_status(state_file, system):
    system.start_run("ansible-pull.service", 1000)
    failed, result = run_module(drift_pause.main, pause(state_file, systemd_units=["ansible-pull.timer"],
                                                        systemd_wait_timeout=10))
    assert failed and "still running after 10 s" in result["msg"]
    assert result["backends"]["systemd:ansible-pull.timer"]["state"] == "holding"
    assert result["holds"]["targets"][0]["phase"] == "holding"


@pytest.mark.parametrize("args, message", [
    (dict(state="paused"), "state is paused but all of the following are missing: reason"),
    (dict(state="paused", reason="x", all_reasons=True), "all_reasons applies to state=resumed only"),
    (dict(state="resumed", reason_id="x", all_reasons=True), "all_reasons applies to state=resumed only"),
    (dict(reason="x"), "nothing to hold"),
    (dict(reason="x", systemd_units=["x.socket"]), "not the name of a systemd service or timer"),
    (dict(reason="x", systemd_units=["missing.timer"]), "missing.timer is not installed"),
    (dict(reason="x", commands=[{"name": "lb", "hold": ["a"]}]), "commands: lb needs 'release' to pause"),
    (dict(reason="x", guard=True, systemd_wait_timeout=-1, systemd_units=["ansible-pull.timer"]), "zero or more"),
    (dict(reason="x", guard=True, state_file="relative/holds.json"), "absolute path"),
])
def test_bad_options_fail_before_anything_changes(state_file, system, args, message):
    args.setdefault("state_file", state_file)
    failed, result = run_module(drift_pause.main, args)
    assert failed and message in result["msg"], result
    assert system.units["ansible-pull.timer"].active == "active"


def test_corrupt_record_fails_clearly(state_file):
    os.makedirs(os.path.dirname(state_file), mode=0o755)
    with open(state_file, "w", encoding="utf-8") as handle:
        handle.write("{oops")
    failed, result = run_module(drift_pause.main, pause(state_file, guard=True))
    assert failed and "is corrupt" in result["msg"] and "A copy is kept at" in result["msg"]
    with open(state_file, encoding="utf-8") as handle:
        assert handle.read() == "{oops"
