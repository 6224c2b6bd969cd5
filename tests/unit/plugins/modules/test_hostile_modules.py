# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table (tests/unit/utils/hostile.py) in every field of the IMDS document, served by the
simulator, through event_info, event_approve and watcher_info; and in every option of drift_pause that carries a
user's value, through the real hold record and a real operator command.

Why: whoever writes an event's fields (IMDS, or anything on the path to it) must not get a value run, another VM's
event approved, or a value changed on its way to the playbook. Each value comes back verbatim, or the document or
option is refused with a clear error naming what is wrong."""

from __future__ import annotations

import functools
import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.plugins.modules import drift_pause, event_approve, event_info, watcher_info
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import (
    DOCUMENT_FIELDS, EVENT_FIELDS, MINE, HostileImds)
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module

CANARY = "/tmp/imds-modules-canary-%d" % os.getpid()
VALUES = hostile.strings(CANARY) + hostile.wrong_types()
FIELDS = EVENT_FIELDS + DOCUMENT_FIELDS
RECORDER = """#!/bin/sh
{ printf '%%s\\0' "$@"; printf '\\n--env--\\n'; env -0; } > %s/run-$(ls %s | wc -l)
"""


@pytest.fixture(autouse=True)
def no_canary():
    hostile.clear(CANARY)
    yield
    hostile.assert_no_trace(CANARY)


@pytest.fixture(scope="module")
def served():
    imds_ = HostileImds()
    yield imds_
    imds_.stop()


@pytest.fixture
def document(served):
    imds._WARMED.clear()
    yield served
    served.clear()


def imds_args(served, **more):
    return dict({"endpoint": served.endpoint, "vm_name": "myvm", "retries": 0, "timeout": 30, "first_timeout": 30},
                **more)


def refused_clearly(result):
    msg = result["msg"]
    return bool(msg.strip()) and "Traceback" not in msg and "\n" not in msg


def is_event_id_value(value):
    return isinstance(value, str) and bool(value.strip())


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("field", FIELDS)
def test_event_info_returns_every_field_verbatim(document, field, case):
    value = document.inject(field, case.value)
    failed, result = run_module(event_info.main, imds_args(document))
    hostile.assert_no_trace(CANARY, json.dumps(result))
    if field == "EventId" and not is_event_id_value(value):  # an event without an id: the document is refused
        assert failed and refused_clearly(result) and "no EventId" in result["msg"], result["msg"]
        return
    assert not failed, result["msg"]
    if field == "DocumentIncarnation":
        assert result["document_incarnation"] == (value if isinstance(value, int) and not isinstance(value, bool)
                                                  else None)
        return
    (event,) = result["events"]
    assert event[field] == value  # Azure's keys, verbatim
    if field == "EventId":  # and the id an approval must name, as IMDS gave it
        assert result["pending_event_ids"] == [value]
    if field == "Resources":  # named exactly: no value is this VM, whatever a host pattern would match
        assert event["affects_this_vm"] is False and result["pending"] is False
    if field in ("NotBefore", "DurationInSeconds", "EventType", "EventStatus") and case.kind != "type" and \
            case.name != "empty":
        assert event.get("problems")  # read as documented, or said not to be


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("field", FIELDS)
def test_event_approve_approves_nothing_beyond_this_vms_event(document, field, case):
    value = document.inject(field, case.value)
    failed, result = run_module(event_approve.main, imds_args(document))
    hostile.assert_no_trace(CANARY, json.dumps(result))
    approved = [a["event_id"] for a in document.world.approvals]
    if field == "Resources":
        assert approved == [] and result.get("approved", []) == []  # another "VM" is never this one
    elif field == "EventId":  # the only event is this VM's, whatever its id says: approve that id or fail
        assert approved == [] and result.get("approved", []) in ([], [value] if is_event_id_value(value)
                                                                 else [])
    else:
        assert approved in ([], [MINE]) and result.get("approved", []) == approved
    if failed:
        assert refused_clearly(result), result["msg"]


# Module options: ansible-core cannot pass a lone surrogate to a module at all (it refuses to decode the arguments,
# or fails logging them, before the module runs), so that value is the lookup's and the IMDS fields' only.
OPTION_VALUES = [v for v in VALUES if v.name != "lone-surrogate"]


@pytest.mark.parametrize("case", OPTION_VALUES, ids=hostile.ids(OPTION_VALUES))
@pytest.mark.parametrize("option", ["event_ids", "event_types", "vm_name"])
def test_event_approve_options_target_nothing_else(document, option, case):
    args = imds_args(document)
    args[option] = case.value if option == "vm_name" else [case.value]
    failed, result = run_module(event_approve.main, args)
    hostile.assert_no_trace(CANARY, json.dumps(result))
    named_nothing = option == "vm_name" and case.value is None  # not set: IMDS names this VM
    assert [a["event_id"] for a in document.world.approvals] == ([MINE] if named_nothing else [])
    assert result.get("approved", []) == ([MINE] if named_nothing else [])
    if failed:
        assert refused_clearly(result), result["msg"]
    if option == "event_ids" and isinstance(case.value, str) and 0 < len(case.value) < 100 and case.value.strip():
        assert failed and repr(case.value) in result["msg"]  # not a GUID: refused before any request, named


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("field", ["EventType", "Description", "Resources", "EventStatus"])
def test_watcher_info_reports_the_events_verbatim(document, tmp_path, field, case):
    value = document.inject(field, case.value)
    failed, result = run_module(watcher_info.main, imds_args(document, include_events=True, service="imds-none.service",
                                                             state_file=str(tmp_path / "holds.json"),
                                                             journal_file=str(tmp_path / "journal.jsonl")))
    hostile.assert_no_trace(CANARY, json.dumps(result))
    assert not failed, result["msg"]
    (event,) = result["event_info"]["events"]
    assert event[field] == value


# --- drift_pause: the operator's values, through the hold record and a real command -------------------------------


@pytest.fixture
def holds(tmp_path, monkeypatch):
    os.chmod(str(tmp_path), 0o755)
    recorder = tmp_path / "recorder"
    (tmp_path / "runs").mkdir()
    recorder.write_text(RECORDER % (tmp_path / "runs", tmp_path / "runs"))
    os.chmod(str(recorder), 0o755)
    monkeypatch.setattr(drift_pause, "HoldManager", functools.partial(HoldManager, owner_uid=os.getuid()))
    return tmp_path


def runs(tmp_path):
    """What the recorder saw, run by run: its arguments and its IMDS_ environment (bytes decoded as UTF-8)."""
    out = []
    for index in range(len(os.listdir(str(tmp_path / "runs")))):
        argv, env = (tmp_path / "runs" / ("run-%d" % index)).read_bytes().split(b"\n--env--\n")
        variables = dict(item.split(b"=", 1) for item in env.split(b"\0") if item.startswith(b"IMDS_"))
        out.append({"argv": [a.decode("utf-8") for a in argv.split(b"\0")[:-1]],
                    "env": dict((k.decode(), v.decode("utf-8", "surrogateescape")) for k, v in variables.items())})
    return out


@pytest.mark.parametrize("case", OPTION_VALUES, ids=hostile.ids(OPTION_VALUES))
@pytest.mark.parametrize("option", ["reason", "reason_id", "event_id", "holder", "command_name"])
def test_drift_pause_keeps_each_value_as_data_or_refuses_it(holds, option, case):
    command = {"name": "recorder", "hold": [str(holds / "recorder"), "hold"],
               "release": [str(holds / "recorder"), "release"]}
    args = {"state": "paused", "reason": "kernel patching", "reason_id": "CHG-1", "commands": [command],
            "state_file": str(holds / "var" / "holds.json")}
    if option == "command_name":
        command["name"] = case.value
    else:
        args[option] = case.value
    if option == "event_id":
        del args["reason_id"]
    failed, result = run_module(drift_pause.main, args)
    hostile.assert_no_trace(CANARY, json.dumps(result))
    if failed:
        assert refused_clearly(result), result["msg"]
        assert runs(holds) == []  # refused before anything was held
        return
    (run,) = runs(holds)
    assert run["argv"] == ["hold"]  # the value never became an argument
    (hold,) = result["holds"]["reasons"]
    kept = {"reason": ("text", run["env"]["IMDS_HOLD_REASON"]), "reason_id": ("id", run["env"]["IMDS_HOLD_REASON_ID"]),
            "event_id": ("event_id", None), "holder": ("holder", None), "command_name": (None, None)}[option]
    if case.kind == "type" or not case.value.strip():  # made a string by Ansible's argument spec, or unset
        kept = (None, None)
    if kept[0] is not None:
        assert hold[kept[0]] == case.value.strip()  # one stored value, verbatim but for the surrounding spaces
    if kept[1] is not None:
        assert kept[1] == case.value.strip()
    on_disk = json.loads((holds / "var" / "holds.json").read_text())
    assert hostile.RENDERED not in json.dumps(on_disk)
    reason_id = hold["id"]
    failed, result = run_module(drift_pause.main, dict(args, state="resumed", reason_id=reason_id))
    assert not failed, result["msg"]
    assert [r["argv"] for r in runs(holds)] == [["hold"], ["release"]] and result["holds"]["reasons"] == []
