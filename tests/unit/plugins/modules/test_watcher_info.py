# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""watcher_info's main() end to end: a real hold record written by the hold library, a journal
file with damage in it, a stand-in systemctl on PATH and a scripted IMDS on loopback."""

from __future__ import annotations

import functools
import json
import os
import stat

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import CommandBackend, GuardBackend
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager, Reason
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.health import CONSEQUENCES, FIXES
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.machine import new_state
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.state import StateStore
from ansible_collections.imds.scheduled_events.plugins.modules import watcher_info
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

UID = os.getuid()
REBOOT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"


@pytest.fixture
def state_file(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    os.chmod(str(directory), 0o755)
    return str(directory / "holds.json")


@pytest.fixture(autouse=True)
def trusted_uid(monkeypatch):
    """The hold library trusts root's files only; trust the test's uid instead."""
    monkeypatch.setattr(watcher_info, "HoldManager", functools.partial(HoldManager, owner_uid=UID))


@pytest.fixture(autouse=True)
def no_systemd(monkeypatch, tmp_path):
    monkeypatch.setattr(watcher_info, "SYSTEMD_RUNTIME", str(tmp_path / "no-systemd"))


@pytest.fixture
def fake_systemctl(monkeypatch, tmp_path):
    """A systemctl on PATH that logs its arguments and answers from a file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    answer_file = tmp_path / "systemctl.answer"
    answer_file.write_text("active\n")
    script = bindir / "systemctl"
    script.write_text("#!/bin/sh\necho \"$@\" >> %s\ncat %s\nexit 3\n" % (log, answer_file))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    monkeypatch.setattr(watcher_info, "SYSTEMD_RUNTIME", str(runtime))
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ.get("PATH", "")))
    return {"log": log, "answer": answer_file}


def hold(state_file, reason_id, text, event_id=None, holder="alice"):
    manager = HoldManager(state_file=state_file, owner_uid=UID)
    targets = [GuardBackend.target(wait_timeout=0), CommandBackend.target("myjob", ["true"], ["true"])]
    outcome = manager.hold(Reason(reason_id, text, event_id=event_id, holder=holder), targets)
    assert not outcome.failed, outcome.errors


def run(state_file, journal=None, **args):
    args.setdefault("state_file", state_file)
    args.setdefault("journal_file", journal or os.path.join(os.path.dirname(state_file), "journal.jsonl"))
    args.setdefault("watcher_state_file", os.path.join(os.path.dirname(state_file), "watcher-state.json"))
    return run_module(watcher_info.main, args)


def entry(i, state="held"):
    return {"time": "2026-04-11T22:%02d:00Z" % i, "event_id": REBOOT, "event_type": "Reboot", "state": state,
            "detail": "step %d" % i}


def test_nothing_held_without_a_state_file(state_file):
    failed, result = run(state_file)
    assert not failed and result["changed"] is False
    assert result["held"] is False and result["holds"]["targets"] == [] and result["holds"]["reasons"] == []
    assert result["state_file"] == state_file
    assert result["journal"] == {"path": os.path.join(os.path.dirname(state_file), "journal.jsonl"), "present": False,
                                 "entries": [], "unparseable": 0, "truncated": False, "size": 0}
    assert result["service"] == {"name": "imds-watcher.service", "state": "unknown", "systemd": False}
    assert result["problems"] == [] and "event_info" not in result and result["degraded"] == []


def test_says_when_the_watcher_is_degraded(state_file):
    """The daemon saves what keeps it from its whole job with its state: a watcher that does not know this VM's name
    holds every event and approves none, which a fleet must see."""
    saved = os.path.join(os.path.dirname(state_file), "watcher-state.json")
    state = new_state()
    state["degraded"] = {"vm_name_unknown": {"since": 1775944801.0, "detail": "vm_name is not configured and IMDS "
                                             "does not name this VM: IMDS GET ... answered 404 Not Found"}}
    StateStore(saved).save(state)
    failed, result = run(state_file)
    assert not failed and result["problems"] == []
    assert result["degraded"] == [{
        "reason": "vm_name_unknown", "since": "2026-04-11T22:00:01Z", "detail": state["degraded"]["vm_name_unknown"][
            "detail"], "consequence": CONSEQUENCES["vm_name_unknown"], "fix": FIXES["vm_name_unknown"]}]
    with open(saved, "w") as handle:
        handle.write("{torn")
    failed, result = run(state_file)
    assert not failed and result["degraded"] == []
    assert len(result["problems"]) == 1 and result["problems"][0].startswith("watcher state %s: " % saved)


def test_missing_state_directory_is_nothing_held(tmp_path):
    failed, result = run(str(tmp_path / "nowhere" / "holds.json"))
    assert not failed and result["held"] is False and result["problems"] == []


def test_reports_what_is_held_and_why(state_file):
    hold(state_file, REBOOT, "Reboot pending", event_id=REBOOT, holder="imds-watcher")
    hold(state_file, "CHG-7", "kernel patching", holder="alice")
    failed, result = run(state_file)
    assert not failed and result["held"] is True
    targets = dict((t["key"], t) for t in result["holds"]["targets"])
    assert sorted(targets) == ["command:myjob", "guard"]
    assert [r["id"] for r in targets["guard"]["reasons"]] == [REBOOT, "CHG-7"]
    assert targets["guard"]["phase"] == "held" and targets["guard"]["summary"]
    reasons = dict((r["id"], r) for r in result["holds"]["reasons"])
    assert reasons[REBOOT]["holder"] == "imds-watcher" and reasons[REBOOT]["event_id"] == REBOOT
    assert reasons["CHG-7"]["text"] == "kernel patching"
    assert sorted(reasons["CHG-7"]["targets"]) == ["command:myjob", "guard"]


def test_read_only_in_check_mode(state_file):
    hold(state_file, "CHG-7", "kernel patching")
    before = open(state_file).read()
    failed, result = run_module(watcher_info.main, {"state_file": state_file, "journal_file": state_file + ".j"},
                                check_mode=True)
    assert not failed and result["held"] and not result["changed"]
    assert open(state_file).read() == before


def test_corrupt_record_is_a_problem_not_a_failure(state_file):
    with open(state_file, "w") as handle:
        handle.write("{not json")
    failed, result = run(state_file)
    assert not failed and result["held"] is None and result["holds"] == {}
    assert len(result["problems"]) == 1 and "corrupt" in result["problems"][0]
    assert not [n for n in os.listdir(os.path.dirname(state_file)) if ".corrupt-" in n], "a reader keeps no copy"


def test_untrusted_record_is_a_problem(state_file):
    hold(state_file, "CHG-7", "kernel patching")
    os.chmod(state_file, 0o666)
    failed, result = run(state_file)
    assert not failed and result["held"] is None and "group or others may write it" in result["problems"][0]


def test_journal_last_entries_skipping_damage(state_file, tmp_path):
    journal = tmp_path / "journal.jsonl"
    lines = [json.dumps(entry(i)) for i in range(30)]
    lines[25] = "{half a line"
    lines[26] = "[1, 2]"
    lines[27] = "\xff\xfe not utf-8"
    journal.write_bytes(("\n".join(lines) + "\n\n").encode("utf-8").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"))
    failed, result = run(state_file, str(journal), journal_entries=5)
    assert not failed and result["problems"] == []
    got = result["journal"]
    assert got["present"] and not got["truncated"] and got["unparseable"] == 3 and got["size"] == journal.stat().st_size
    assert [e["detail"] for e in got["entries"]] == ["step 22", "step 23", "step 24", "step 28", "step 29"]
    assert got["entries"][-1] == entry(29)


def test_journal_is_read_from_its_end_only(state_file, tmp_path):
    journal = tmp_path / "journal.jsonl"
    lines = [json.dumps(entry(i % 60, state="s%d" % i)) for i in range(2000)]
    journal.write_text("\n".join(lines) + "\n")
    window = sum(len(line) + 1 for line in lines[-10:]) + 7  # ten lines and a fragment of the eleventh
    failed, result = run(state_file, str(journal), journal_entries=50, journal_max_bytes=window)
    got = result["journal"]
    assert not failed and got["truncated"] and got["unparseable"] == 0, "the fragment is dropped, not counted"
    assert [e["state"] for e in got["entries"]] == ["s%d" % i for i in range(1990, 2000)]


def test_journal_window_on_a_line_boundary_keeps_the_first_line(state_file, tmp_path):
    journal = tmp_path / "journal.jsonl"
    lines = [json.dumps(entry(i)) for i in range(5)]
    journal.write_text("\n".join(lines) + "\n")
    window = sum(len(line) + 1 for line in lines[-3:])
    failed, result = run(state_file, str(journal), journal_max_bytes=window)
    assert not failed and [e["detail"] for e in result["journal"]["entries"]] == ["step 2", "step 3", "step 4"]


def test_journal_last_line_being_written(state_file, tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps(entry(1)) + "\n" + json.dumps(entry(2))[:20])
    failed, result = run(state_file, str(journal))
    assert not failed and result["journal"]["unparseable"] == 1 and len(result["journal"]["entries"]) == 1


def test_journal_zero_entries_does_not_read(state_file, tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps(entry(1)) + "\n")
    failed, result = run(state_file, str(journal), journal_entries=0)
    assert not failed and result["journal"]["present"] and result["journal"]["entries"] == []


def test_unreadable_journal_is_a_problem(state_file, tmp_path):
    failed, result = run(state_file, str(tmp_path))  # a directory
    assert not failed and result["problems"] and result["problems"][0].startswith("journal ")


@pytest.mark.parametrize("args", [{"journal_entries": -1}, {"journal_max_bytes": 0}])
def test_bad_numbers_fail(state_file, args):
    failed, result = run(state_file, **args)
    assert failed and "journal_entries" in result["msg"]


def test_service_state_from_systemctl(state_file, fake_systemctl):
    failed, result = run(state_file, service="imds-watcher.service")
    assert not failed and result["service"] == {"name": "imds-watcher.service", "state": "active", "systemd": True}
    assert fake_systemctl["log"].read_text().split() == ["is-active", "--", "imds-watcher.service"]
    fake_systemctl["answer"].write_text("inactive\n")
    assert run(state_file)[1]["service"]["state"] == "inactive"
    fake_systemctl["answer"].write_text("")
    failed, result = run(state_file)
    assert not failed and result["service"]["state"] == "unknown" and "exited with 3" in result["problems"][0]


@pytest.fixture
def server():
    srv = ScriptedServer()
    imds._WARMED.clear()
    yield srv
    srv.stop()


def test_include_events_is_event_info_s_result(state_file, server):
    doc = {"DocumentIncarnation": 3, "Events": [
        {"EventId": REBOOT, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["myvm"],
         "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT", "Description": "",
         "EventSource": "Platform", "DurationInSeconds": -1}]}
    server.script(answer(200, doc))
    failed, result = run(state_file, include_events=True, endpoint=server.endpoint, vm_name="myvm")
    assert not failed and result["problems"] == []
    info = result["event_info"]
    assert info["this_vm"] == "myvm" and info["document_incarnation"] == 3 and info["pending"]
    assert info["pending_event_ids"] == [REBOOT] and info["next_not_before"] == "2050-04-11T22:26:58Z"
    assert info["events"][0]["affects_this_vm"] and info["events"][0]["scope"] == "this_vm"
    assert "waited" not in info and info["polls"] == 1
    assert [r["path"] for r in server.requests] == ["/metadata/scheduledevents"]


def test_include_events_reports_imds_failure_without_failing(state_file, server):
    server.script(*[answer(400, {"error": "Bad request"})])
    hold(state_file, "CHG-7", "kernel patching")
    failed, result = run(state_file, include_events=True, endpoint=server.endpoint, vm_name="myvm", retries=0)
    assert not failed and result["held"] is True
    assert result["event_info"]["failed"] is True and result["event_info"]["status"] == 400
    assert result["problems"][0].startswith("IMDS: ")
