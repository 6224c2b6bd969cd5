# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import re

import pytest
from ansible.module_utils import basic

from ansible_collections.imds.scheduled_events.plugins.module_utils import ansible_support, imds
from ansible_collections.imds.scheduled_events.plugins.modules import event_info
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import (
    ScriptedServer, answer, outcome_of)

MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
SHARED = "A626E37F-793E-44E1-89B5-99AE0B96044C"
PEERS = "28512AF7-C957-4500-9BC4-842D6FB531E4"


def ev(event_id, resources, status="Scheduled", event_type="Reboot", not_before="Mon, 11 Apr 2050 22:26:58 GMT"):
    return {"EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine", "Resources": resources,
            "EventStatus": status, "NotBefore": "" if status == "Started" else not_before,
            "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}


DOC = {"DocumentIncarnation": 7, "Events": [
    ev(MINE, ["myvm"]), ev(SHARED, ["myvm", "peer"], event_type="Freeze", status="Started"), ev(PEERS, ["peer"])]}


@pytest.fixture
def server():
    srv = ScriptedServer()
    imds._WARMED.clear()
    yield srv
    srv.stop()


def run(server, **args):
    args.setdefault("endpoint", server.endpoint)
    args.setdefault("vm_name", "myvm")
    return run_module(event_info.main, args)


def test_returns_every_event_with_azure_keys_and_derived_keys(server):
    server.script(answer(200, DOC))
    failed, result = run(server)
    assert not failed and result["changed"] is False
    assert result["document_incarnation"] == 7 and result["this_vm"] == "myvm"
    by_id = dict((e["EventId"], e) for e in result["events"])
    assert set(by_id) == {MINE, SHARED, PEERS}
    assert by_id[MINE]["affects_this_vm"] and not by_id[MINE]["shared"]
    assert by_id[SHARED]["shared"] and by_id[SHARED]["NotBefore"] == ""
    assert not by_id[PEERS]["affects_this_vm"] and by_id[PEERS]["scope"] == "other_vms"
    assert by_id[MINE]["not_before"] == "2050-04-11T22:26:58Z" and by_id[MINE]["seconds_until_start"] > 0
    assert result["pending"] and result["in_progress"]
    assert result["pending_event_ids"] == [MINE] and result["started_event_ids"] == [SHARED]
    assert result["next_not_before"] == "2050-04-11T22:26:58Z"
    assert "waited" not in result


def test_reads_this_vm_name_from_imds_when_not_given(server):
    server.script(answer(200, "MyVM"), answer(200, DOC))
    failed, result = run_module(event_info.main, {"endpoint": server.endpoint})
    assert not failed and result["this_vm"] == "MyVM"
    assert [r["path"] for r in server.requests] == ["/metadata/instance/compute/name", "/metadata/scheduledevents"]


def test_without_a_vm_name_returns_the_events_with_what_depends_on_it_unknown(server, monkeypatch):
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    server.script(answer(404, "not found"), answer(200, DOC))  # Microsoft's mock server has no compute/name
    failed, result = run_module(event_info.main, {"endpoint": server.endpoint, "retries": 0})
    assert not failed, result
    assert result["this_vm"] is None and len(result["events"]) == 3
    assert all(e["affects_this_vm"] is None and e["shared"] is None and e["scope"] is None for e in result["events"])
    # any event may be this VM's: the summaries a `when:` drains on count them all
    assert result["pending"] and result["pending_event_ids"] == [MINE, PEERS]
    assert result["started_event_ids"] == [SHARED] and result["next_not_before"] == "2050-04-11T22:26:58Z"
    assert len(warnings) == 1 and "did not give this VM's resource name" in warnings[0] and "vm_name" in warnings[0]


def test_this_vm_only_without_a_vm_name_fails_saying_it_is_needed(server):
    server.script(answer(404, "not found"))
    failed, result = run_module(event_info.main, {"endpoint": server.endpoint, "retries": 0, "this_vm_only": True})
    assert failed and result["status"] == 404
    assert result["msg"].startswith("this VM's resource name is needed to pick this VM's events (this_vm_only), but "
                                    "IMDS did not give it: ")
    assert "compute/name" in result["msg"] and result["msg"].endswith("Set vm_name to the name the events' Resources "
                                                                      "list for this VM")
    assert [r["path"] for r in server.requests] == ["/metadata/instance/compute/name"]


@pytest.mark.parametrize("args, expected", [
    ({"this_vm_only": True}, {MINE, SHARED}),
    ({"event_types": ["freeze"]}, {SHARED}),
    ({"statuses": ["Scheduled"]}, {MINE, PEERS}),
    ({"event_ids": [PEERS.lower()]}, {PEERS}),
    ({"sources": ["User"]}, set()),
])
def test_filters(server, args, expected):
    server.script(answer(200, DOC))
    failed, result = run(server, **args)
    assert not failed
    assert set(e["EventId"] for e in result["events"]) == expected
    assert result["pending_event_ids"] == [MINE]  # the summary is about this VM, whatever the filters


def test_endpoint_falls_back_to_the_environment(server, monkeypatch):
    monkeypatch.setenv("IMDS_ENDPOINT", server.endpoint)
    server.script(answer(200, DOC))
    failed, result = run_module(event_info.main, {"vm_name": "myvm"})
    assert not failed and result["document_incarnation"] == 7


def test_imds_errors_fail_the_task_with_the_status(server):
    server.script(answer(400, {"error": "Bad request"}))
    failed, result = run(server)
    assert failed and result["status"] == 400
    assert "answered 400" in result["msg"] and "Bad request" in result["msg"]


def test_malformed_json_fails_cleanly(server):
    server.script(answer(200, '{"Events": ['))
    failed, result = run(server, retries=0)
    assert failed and "malformed JSON" in result["msg"]


@pytest.mark.parametrize("args, message", [
    ({"timeout": 0}, "timeout"),
    ({"retries": -1}, "retries"),
    ({"wait_interval": 0}, "wait_interval"),
    ({"endpoint": "169.254.169.254"}, "endpoint"),
    ({"api_version": "2099-01-01"}, "api_version"),
])
def test_bad_options_fail_before_any_request(server, args, message):
    failed, result = run(server, **args)
    assert failed and message in result["msg"]
    assert server.requests == []


def test_wait_for_absent_polls_until_the_event_is_gone(server, monkeypatch):
    monkeypatch.setattr(event_info.time, "sleep", lambda seconds: None)
    server.script(answer(200, DOC), answer(200, DOC), answer(200, {"DocumentIncarnation": 9, "Events": []}))
    failed, result = run(server, this_vm_only=True, wait_for="absent", wait_interval=1)
    assert not failed and result["events"] == [] and result["polls"] == 3
    assert result["pending"] is False and "waited" in result


def test_wait_for_started_counts_vanished_events(server, monkeypatch):
    monkeypatch.setattr(event_info.time, "sleep", lambda seconds: None)
    server.script(answer(200, DOC), answer(200, {"DocumentIncarnation": 9, "Events": []}))
    failed, result = run(server, event_ids=[MINE], wait_for="started", wait_interval=1)
    assert not failed and result["polls"] == 2


def test_wait_tolerates_retryable_errors(server, monkeypatch):
    monkeypatch.setattr(event_info.time, "sleep", lambda seconds: None)
    server.script(answer(503, ""), answer(200, DOC))
    failed, result = run(server, retries=0, wait_for="present", event_ids=[MINE], wait_interval=1)
    assert not failed and result["polls"] == 2


def test_wait_times_out_with_what_is_still_there(server):
    server.default = answer(200, DOC)
    failed, result = run(server, this_vm_only=True, wait_for="absent", wait_timeout=0, wait_interval=1)
    assert failed and "timed out after 0 s waiting for events to be absent" in result["msg"]
    assert MINE in result["msg"] and len(result["events"]) == 2


def test_blank_vm_name_fails_cleanly(server):
    failed, result = run(server, vm_name="  ")
    assert failed and "vm_name" in result["msg"] and server.requests == []


def test_missing_requests_fails_with_ansibles_message(server, monkeypatch):
    monkeypatch.setattr(ansible_support, "HAS_REQUESTS", False)
    failed, result = run(server)
    assert failed and "Failed to import the required Python library (requests)" in result["msg"]
    assert server.requests == []


def test_a_wait_ends_on_time_when_imds_accepts_and_never_answers(server):
    """Each read of the wait gets what is left of it, retries included, so the task ends when wait_timeout says."""
    server.default = answer(action="hang")
    failed, result = outcome_of(lambda: run(server, wait_for="absent", wait_timeout=2, wait_interval=1, timeout=0.5,
                                            first_timeout=0.5, retries=1000), bound=60)
    assert failed and result["polls"] >= 1
    assert re.match(r"timed out after \d s waiting for events to be absent; last error: IMDS GET "
                    r"/metadata/scheduledevents: no answer within the [\d.]+ s left: \d+ attempts? in \d+\.\d s; "
                    r"(.*; )?last: timed out after [\d.]+ s$", result["msg"]), result["msg"]


def test_a_read_that_never_gets_an_answer_ends_at_the_deadline(server):
    server.default = answer(action="hang")
    failed, result = outcome_of(lambda: run(server, deadline=1, timeout=0.3, first_timeout=0.3, retries=1000),
                                bound=60)
    assert failed and result["status"] is None
    assert re.match(r"IMDS GET /metadata/scheduledevents: no answer within the 1 s deadline: (\d+) attempts? in "
                    r"\d+\.\d s; (.*; )?last: timed out after [\d.]+ s$",
                    result["msg"]), result["msg"]


def test_a_pacing_record_it_cannot_use_is_a_warning_not_a_failure(server, monkeypatch, tmp_path):
    loose = tmp_path / "pace"
    loose.mkdir()
    loose.chmod(0o777)
    monkeypatch.setenv(imds.PACE_DIR_ENV, str(loose))
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    server.script(answer(200, DOC))
    failed, result = run(server)
    assert not failed and len(result["events"]) == 3
    assert len(warnings) == 1 and "paced for this process alone" in warnings[0] and str(loose) in warnings[0]
